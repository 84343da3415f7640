"""The ReLU gallery experiments (Andriushchenko et al., ICML 2023, Sec. 4 / appendix):
the matched SDE along a schedule, the shared run layout, the three kinds at tiny
sizes (values against independent computations), and config errors naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from sgdsde.data import deep_relu_teacher, regression_1d, teacher_student_sphere
from sgdsde.dynamics import SGD, simulate_sgd
from sgdsde.dynamics.schedules import Constant, LinearWarmup, PowerWarmup, StepDecay
from sgdsde.experiments import experiment_for, load_config
from sgdsde.experiments.config import ConfigError
from sgdsde.experiments.gallery import check_claim, seed_children
from sgdsde.experiments.paper_relu import (
    ScheduledRun,
    by_run_and_seed,
    initial_params,
    simulate_sde_on_schedule,
    simulate_sgd_runs,
)
from sgdsde.experiments.paper_relu_teacher_student import flip_fraction
from sgdsde.experiments.paper_relu_three_layer import rank_entropy
from sgdsde.metrics.features import active_fraction, feature_sparsity
from sgdsde.metrics.jacobian import jacobian_rank
from sgdsde.models import make_model
from sgdsde.sde import LabelNoise

# ------------------------------------------------------------------ the SDE along a schedule


def _small_relu():
    data = teacher_student_sphere(n=6, d=2, teacher_width=2, n_test=5, seed=1)
    model = make_model("two_layer_relu", d=2, m=4, bias=False, scales=(0.8, 0.0, 0.8))
    return data, model


def test_noise_free_sde_along_a_step_decay_is_gd_with_that_schedule():
    # Euler at dt = eta of the gradient flow is GD at eta: so the scheduled SDE with no
    # noise reproduces GD along the schedule, across the decays.
    data, model = _small_relu()
    schedule = StepDecay(0.3, at=(0.3, 0.6), factors=(2.0, 4.0))
    seeds = seed_children(4, 3)
    theta0 = initial_params(model, seeds)
    save = np.array([0, 5, 29, 30, 31, 59, 60, 99, 100])
    sde = simulate_sde_on_schedule(
        model,
        data,
        schedule,
        seeds,
        n_steps=100,
        theta0=theta0,
        save_steps=save,
        noise=lambda lr: LabelNoise(delta=0.0, lr=lr, batch_size=data.n),
        save_params=True,
    )
    gd = simulate_sgd(
        model,
        data,
        schedule,
        n_steps=100,
        sgd=SGD(batch_size=None),
        theta0=theta0,
        save_steps=save,
        save_params=True,
    )
    np.testing.assert_array_equal(sde["step"].values, save)
    np.testing.assert_allclose(sde["params"].values, gd["params"].values, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sde["time"].values, gd["time"].values, rtol=1e-12)
    assert not sde["diverged"].any()


def test_sde_time_matches_sgd_time_at_every_step_through_a_warm_up():
    data, model = _small_relu()
    schedule = LinearWarmup(0.05, factor=4.0, until=0.5, decay=3.0)
    seeds = seed_children(0, 2)
    save = np.arange(81)
    sde = simulate_sde_on_schedule(
        model,
        data,
        schedule,
        seeds,
        n_steps=80,
        theta0=initial_params(model, seeds),
        save_steps=save,
    )
    sgd_time = np.concatenate([[0.0], np.cumsum(schedule.values(80))])
    np.testing.assert_allclose(sde["time"].values, np.tile(sgd_time, (2, 1)), rtol=1e-12)
    # the noise is on: the two seeds' paths differ
    assert np.all(np.isfinite(sde["train_loss"].values))
    assert not np.allclose(sde["train_loss"].values[0], sde["train_loss"].values[1])


def test_sgd_runs_share_seeds_across_runs_and_start_where_initial_params_says():
    data, model = _small_relu()
    seeds = seed_children(2, 3)
    runs = [ScheduledRun("a", Constant(0.1)), ScheduledRun("b", Constant(0.2))]
    ds = simulate_sgd_runs(
        model, data, runs, seeds, n_steps=20, save_steps=np.array([0, 20]), save_params=True
    )
    assert list(ds["run"].values) == ["SGD a", "SGD b"] and ds.sizes["seed"] == 3
    start = ds["params"].isel(step=0).values
    np.testing.assert_array_equal(start[0], initial_params(model, seeds))
    np.testing.assert_array_equal(start[0], start[1])  # common random numbers
    # run b, seed 2 is trajectory 1 * 3 + 2 of the batched call
    alone = simulate_sgd(
        model, data, 0.2, n_steps=20, seed=[seeds[2]], save_steps=[0, 20], save_params=True
    )
    np.testing.assert_allclose(ds["params"].values[1, 2, -1], alone["params"].values[0, -1])


def test_by_run_and_seed_is_run_major():
    import xarray as xr

    values = np.arange(6 * 2, dtype=float).reshape(6, 2)
    ds = xr.Dataset(
        {"v": (("traj", "step"), values), "time": (("traj", "step"), values)},
        coords={"step": [0, 1]},
    )
    out = by_run_and_seed(ds, ["x", "y"], 3)
    assert out["v"].dims == ("run", "seed", "step")
    np.testing.assert_array_equal(out["v"].sel(run="y", seed=1).values, values[4])


# ------------------------------------------------------------------ lower-level pieces


def test_deep_relu_teacher_labels_are_the_deep_relu_model_with_its_weights():
    data = deep_relu_teacher(n=7, d=3, widths=(2, 3), n_test=5, seed=2)
    np.testing.assert_allclose(np.linalg.norm(data.X, axis=1), 1.0)
    teacher = make_model("deep_relu", d=3, widths=[2, 3], bias=True)
    theta = np.concatenate([np.ravel(a) for a in data.config["teacher"]])
    np.testing.assert_allclose(teacher.predict(theta, data.X)[0], data.y, rtol=1e-12)
    np.testing.assert_allclose(teacher.predict(theta, data.X_test)[0], data.y_test, rtol=1e-12)
    biases = data.config["teacher"][1::2]
    for b, fan_in in zip(biases, [3, 2, 3], strict=True):
        assert np.all(np.abs(b) <= 1 / np.sqrt(fan_in))  # torch's default bias range
    with pytest.raises(ValueError, match="widths must be positive"):
        deep_relu_teacher(widths=(2, 0))


def test_rank_entropy_is_log_of_the_number_of_equal_singular_values():
    # orthogonal unit rows: k equal singular values -> entropy log k; rows are normalized
    eye = np.eye(4)[:3] * np.array([[2.0], [5.0], [0.5]])
    np.testing.assert_allclose(rank_entropy(eye[None]), [np.log(3)], rtol=1e-12)
    rank_one = np.ones((1, 5, 3))
    np.testing.assert_allclose(rank_entropy(rank_one), [0.0], atol=1e-12)


def test_flip_fraction_counts_changed_relu_states():
    model = make_model("two_layer_relu", d=1, m=2, bias=False)
    X = np.array([[1.0], [-1.0]])
    theta0 = np.array([[1.0, 1.0, 1.0, 1.0]])  # W = (1, 1): active on x = 1 only
    theta1 = np.array([[1.0, -1.0, 1.0, 1.0]])  # unit 2 flips on both inputs
    np.testing.assert_allclose(flip_fraction(model, theta0, theta1, X), [0.5])


# ------------------------------------------------------------------ the kinds, tiny


def _small_config(name, runs, **overrides):
    """The shipped config ``name`` with only its runs ``runs`` (indices) and the published
    numbers and claims about them, and ``overrides``."""
    cfg = load_config(name)
    cfg.update(n_seeds=2, **overrides)
    cfg["runs"] = [cfg["runs"][i] for i in runs]
    prefixes = ("SGD", "SDE") if cfg.get("sde", True) else ("SGD",)
    kept = {f"{p} {r['name']}" for p in prefixes for r in cfg["runs"]}
    cfg["published"] = [p for p in cfg["published"] if p["run"] in kept]
    cfg["claims"] = [c for c in cfg["claims"] if set(c["runs"]) <= kept]
    return cfg


def _tiny(name, runs, **overrides):
    cfg = _small_config(name, runs, **overrides)
    exp = experiment_for(cfg)
    return exp, exp.prepare(cfg)


def test_relu_1d_reports_what_the_metrics_give_on_the_final_parameters(tmp_path):
    exp, plan = _tiny(
        "paper_relu_1d", [0, 1], n_steps=600, save_points=4, grid_points=60, plot_points=40
    )
    runs = exp.simulate(plan)
    quantities, curves = exp.report(plan, runs)
    params = runs["params"].isel(step=-1).values  # (run, seed, p)
    model, data = plan.model, regression_1d()
    grid = np.linspace(data.X.min(), data.X.max(), 60)[:, None]
    ok = ~runs["diverged"].values  # a diverged seed reports NaN
    assert ok[:2].all()  # SGD does not diverge here
    for r in range(params.shape[0]):
        theta = params[r][ok[r]]
        phi = model.hidden_features(theta, data.X)
        np.testing.assert_allclose(
            quantities["feature_sparsity"][r][ok[r]], feature_sparsity(phi, 0.999), rtol=1e-12
        )
        np.testing.assert_allclose(quantities["active_fraction"][r][ok[r]], active_fraction(phi))
        np.testing.assert_array_equal(
            quantities["jacobian_rank"][r][ok[r]],
            jacobian_rank(model.jacobian(theta, grid), 1e-4),
        )
        assert np.all(np.isnan(quantities["jacobian_rank"][r][~ok[r]]))
    assert curves["prediction"].dims == ("run", "seed", "snapshot", "x")
    np.testing.assert_allclose(
        curves["prediction"].isel(snapshot=-1).values[0],
        model.predict(params[0], curves["x"].values[:, None]),
    )
    ds = exp.run(plan)
    assert list(ds["run"].values) == [
        f"{kind} decay at {s}%" for kind in ("SGD", "SDE") for s in (2, 50)
    ]
    table = exp.table(ds)
    assert "| SGD decay at 2% | feature_sparsity |" in table and "0.225" in table
    exp.plot(ds, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_relu_1d_sparsity_claim_holds_at_reduced_length():
    # 3000 of 31,623 steps, 4 seeds, no SDE: the 50 % run (warm-up to 0.5 N) already has
    # sparser features, a lower-rank Jacobian and fewer active units than the 2 % run in
    # every seed (full-length values in docs/gallery/paper_relu_1d.md)
    cfg = _small_config("paper_relu_1d", [0, 1], n_steps=3000, sde=False, save_points=2)
    cfg["n_seeds"] = 4
    exp = experiment_for(cfg)
    ds = exp.run(exp.prepare(cfg))
    claims = {c.quantity: c for c in exp.prepare(cfg).header.claims}
    for quantity in ("feature_sparsity", "jacobian_rank", "active_fraction"):
        check = check_claim(claims[quantity], ds)
        assert check.holds_for_median and check.n_hold == 4, quantity
    # the fit needs the full length: at 3000 steps neither run is below 1e-3 yet
    assert not check_claim(claims["train_loss"], ds).holds_for_median


def test_teacher_student_neurons_and_flips(tmp_path):
    exp, plan = _tiny("paper_relu_teacher_student", [0, 3], n_steps=300, save_points=3)
    runs = exp.simulate(plan)
    quantities, curves = exp.report(plan, runs)
    params = runs["params"].transpose("run", "seed", "step", ...).values
    m = plan.model.m
    np.testing.assert_array_equal(
        curves["w_init"].values.reshape(4, 2, -1), params[:, :, 0, : 2 * m]
    )
    # the student's output layer starts at 0 and SGD and SDE share theta_0
    assert np.all(params[:, :, 0, 2 * m :] == 0)
    np.testing.assert_array_equal(params[0, :, 0], params[2, :, 0])
    X = plan.data.X
    expected = flip_fraction(plan.model, params[1, :, 0], params[1, :, -1], X)
    np.testing.assert_allclose(quantities["relu_flips"][1], expected)
    np.testing.assert_allclose(
        quantities["param_norm"], np.linalg.norm(params[:, :, -1], axis=-1), rtol=1e-12
    )
    np.testing.assert_allclose(curves["teacher_w"].values, plan.data.config["teacher"]["W"])
    ds = exp.run(plan)
    exp.plot(ds, tmp_path / "ts.png")
    assert (tmp_path / "ts.png").stat().st_size > 10_000


def test_three_layer_reports_per_layer_activity(tmp_path):
    exp, plan = _tiny("paper_relu_three_layer", [0, 3], n_steps=200, save_points=2, sde=False)
    runs = exp.simulate(plan)
    quantities, _ = exp.report(plan, runs)
    theta = runs["params"].isel(step=-1).values[1]
    layers = plan.model.layer_features(theta, plan.data.X)
    np.testing.assert_allclose(quantities["active_layer1"][1], active_fraction(layers[0]))
    np.testing.assert_allclose(quantities["active_layer2"][1], active_fraction(layers[1]))
    test_layer2 = plan.model.layer_features(theta, plan.data.X_test[:181])[1]
    np.testing.assert_allclose(quantities["layer2_rank_entropy"][1], rank_entropy(test_layer2))
    ds = exp.run(plan)
    assert "layer2_rank_entropy" in exp.table(ds)
    exp.plot(ds, tmp_path / "tl.png")


# ------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    ("name", "key", "value", "match"),
    [
        ("paper_relu_1d", "snapshot_fractions", [0.5, 2.0], "snapshot_fractions: must be"),
        ("paper_relu_1d", "feature_threshold", 1.5, r"feature_threshold: must be a \|corr"),
        ("paper_relu_1d", "rank_threshold", 1.0, "rank_threshold: must be < 1"),
        ("paper_relu_teacher_student", "model", {"name": "deep_relu"}, "model.name: must be"),
        ("paper_relu_three_layer", "model", {"name": "deep_relu", "widths": [3]}, "model: must"),
        ("paper_relu_1d", "runs", [{"name": "x", "schedule": {"name": "nope"}}], r"runs\[0\]"),
    ],
)
def test_config_errors_name_the_field(name, key, value, match):
    cfg = load_config(name)
    cfg[key] = value
    with pytest.raises(ConfigError, match=match):
        experiment_for(cfg).prepare(cfg)


def test_published_numbers_must_name_runs_of_the_config():
    cfg = load_config("paper_relu_1d")
    cfg["sde"] = False  # the SDE runs disappear; a claim names one
    with pytest.raises(ConfigError, match="unknown run 'SDE decay at 2%'"):
        experiment_for(cfg).prepare(cfg)


def test_power_warmup_schedules_of_the_three_layer_config_peak_as_the_notebook():
    # the notebook's peaks 0.103 / 0.150 / 0.181 at gamma = 0.04: ours are twice them
    cfg = load_config("paper_relu_three_layer")
    peaks = [
        PowerWarmup(**{k: v for k, v in r["schedule"].items() if k != "name"}).peak(10001)
        for r in cfg["runs"][1:]
    ]
    np.testing.assert_allclose(peaks, [0.206, 0.300, 0.363], atol=2e-3)


def test_notebook_procedure_reproduces_the_notebooks_printed_labels():
    # fc_nets_two_layer.ipynb prints y of its data seed 1; fc_nets_multi_layer.ipynb of 6
    two = teacher_student_sphere(n=15, d=2, teacher_width=3, seed=1, procedure="notebook")
    printed = [0.9664, -0.5862, 0.4440, 0.9520, 0.8456, 0.6576, -1.0138, 0.7839]
    np.testing.assert_allclose(two.y[:8], printed, atol=6e-5)
    np.testing.assert_allclose(np.linalg.norm(two.config["teacher"]["W"], axis=1), 1.0)
    deep = deep_relu_teacher(n=50, d=5, widths=(2, 2), seed=6, procedure="notebook")
    printed = [-0.6163, 0.9799, 0.3886, 0.1911, 0.3208, -0.6920, -0.3344, -0.1105, 1.2851]
    np.testing.assert_allclose(deep.y[:9], printed, atol=6e-5)
    assert deep.X_test.shape == (1000, 5) and deep.config["procedure"] == "notebook"
    with pytest.raises(ValueError, match="procedure must be one of"):
        deep_relu_teacher(procedure="torch")
    with pytest.raises(ValueError, match="int seed"):
        teacher_student_sphere(seed=np.random.SeedSequence(1), procedure="notebook")


def _reduced_run(name, n_steps, n_seeds):
    """The constant and the decay-at-50 % SGD runs of ``name`` at reduced length."""
    cfg = _small_config(name, [0, 3], n_steps=n_steps, sde=False, save_points=2)
    cfg["n_seeds"] = n_seeds
    exp = experiment_for(cfg)
    plan = exp.prepare(cfg)
    return plan, exp.run(plan)


def test_three_layer_claims_at_reduced_length():
    # 2500 of 10,001 steps, 6 seeds, notebook data: a long large-step phase gives a lower
    # test loss and a lower layer-2 rank entropy, for the median and in 5 of 6 seeds
    plan, ds = _reduced_run("paper_relu_three_layer", 2500, 6)
    assert not ds["diverged"].any()
    claims = {c.quantity: c for c in plan.header.claims}
    for quantity in ("test_loss", "layer2_rank_entropy"):
        check = check_claim(claims[quantity], ds)
        assert check.holds_for_median and check.n_hold >= 5, quantity


def test_teacher_student_claims_hold_in_every_seed_that_survives_the_large_steps():
    # the notebook's eta (0.455 there, 0.91 here) sits at the edge: on the notebook's own
    # data some sampling seeds diverge; every other seed ends with a lower test loss and a
    # smaller parameter norm than the constant small-step run
    plan, ds = _reduced_run("paper_relu_teacher_student", 3000, 6)
    diverged = ds["diverged"].values
    assert not diverged[0].any() and 0 < diverged[1].sum() < 6
    claims = {c.quantity: c for c in plan.header.claims}
    for quantity in ("test_loss", "param_norm"):
        check = check_claim(claims[quantity], ds)
        assert check.holds_for_median and check.n_hold == 6 - diverged[1].sum(), quantity
