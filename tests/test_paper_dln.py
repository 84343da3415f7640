"""The DLN gallery kinds (Andriushchenko et al. 2023, diag_nets notebooks): the notebook's
data draw, the exact runs and SDE runs against independent computations, the claims on
real output, config errors naming the field."""

from __future__ import annotations

import copy
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from sgdsde.analysis.phase import seed_child
from sgdsde.data import make_data, sparse_regression_notebook
from sgdsde.dynamics import SGD, simulate_sgd
from sgdsde.dynamics.schedules import Constant, StepDecay
from sgdsde.experiments import EXPERIMENTS, ConfigError, load_config
from sgdsde.experiments.gallery import gallery_table, seed_children
from sgdsde.experiments.paper_dln import (
    phases,
    sde_levels,
    second_half,
    step_weights,
    window_medians,
)
from sgdsde.experiments.paper_dln_slice import plane_basis, project
from sgdsde.sde import StabilizedLoss, simulate_sde
from sgdsde.theory import (
    gd_stability_edge,
    gradient_flow_limit,
    label_noise_lasso,
    min_l1_interpolator,
    min_l2_interpolator,
)

# ---------------------------------------------------------------- the notebook's data draw


def test_notebook_draw_follows_the_notebooks_order():
    n, d, k, n_test = 7, 5, 2, 4
    data = sparse_regression_notebook(n=n, d=d, k=k, n_test=n_test, seed=3)
    rs = np.random.RandomState(3)  # the notebook's legacy seeding, drawn here independently
    X = rs.multivariate_normal(np.zeros(d), np.eye(d), n)
    X_test = rs.multivariate_normal(np.zeros(d), np.eye(d), n_test)
    beta = rs.randn(d)
    beta[k:] = 0
    beta = np.abs(beta) / np.linalg.norm(beta)
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.X_test, X_test)
    np.testing.assert_array_equal(data.beta_star, beta)
    np.testing.assert_allclose(data.y, X @ beta, rtol=0, atol=1e-15)
    np.testing.assert_allclose(data.y_test, X_test @ beta, rtol=0, atol=1e-15)
    assert data.config["generator"] == "sparse_regression_notebook" and data.config["seed"] == 3
    assert (
        make_data("sparse_regression_notebook", n=n, d=d, k=k, n_test=n_test, seed=3).X[0, 0]
        == X[0, 0]
    )


def test_notebook_draw_from_a_seed_sequence_seeds_the_legacy_generator_with_its_first_word():
    seq = np.random.SeedSequence(3)
    word = int(np.random.SeedSequence(3).generate_state(1)[0])
    a = sparse_regression_notebook(n=4, d=3, k=1, n_test=2, seed=seq)
    b = sparse_regression_notebook(n=4, d=3, k=1, n_test=2, seed=word)
    np.testing.assert_array_equal(a.X, b.X)
    assert isinstance(a.config["seed"], str) and b.config["seed"] == word


def test_notebook_draw_leaves_the_global_rng_alone():
    np.random.seed(5)  # noqa: NPY002 - the test checks that the global state is untouched
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    sparse_regression_notebook(n=3, d=4, k=2, n_test=2)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_notebook_draw_with_the_notebooks_sgd_stream_gives_the_published_row():
    """The notebook's own SGD loop (one RandomState(1).randint index per step, u0 = 0.1,
    v0 = 0, eta = 0.25) on the draw: train 1.4216e-6, test 3.5286e-3 at step 99,599."""
    data = sparse_regression_notebook()
    X, y = data.X, data.y
    rs = np.random.RandomState(1)
    u, v = np.full(200, 0.1), np.zeros(200)
    for _ in range(99_599):
        i = rs.randint(80)
        g = (X[i] @ (u * v) - y[i]) * X[i]
        u, v = u - 0.25 * g * v, v - 0.25 * g * u
    beta = u * v
    train = np.sum((X @ beta - y) ** 2) / 160
    test = np.sum((data.X_test @ beta - data.y_test) ** 2) / 2000
    assert train == pytest.approx(1.42161628740057e-06, rel=1e-9)
    assert test == pytest.approx(3.528621943604529e-03, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed must be an integer in"),
        ({"seed": 1.5}, "seed must be an integer in"),
        ({"seed": True}, "seed must be an integer in"),
        ({"k": 6, "d": 5}, "cannot exceed d"),
        ({"n": 0}, "n"),
    ],
)
def test_notebook_draw_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sparse_regression_notebook(**{"n": 4, "d": 5, "k": 2, "n_test": 3, **kwargs})


# ---------------------------------------------------------------- the pieces


def test_phases_of_piecewise_constant_schedules():
    assert phases(Constant(0.25), 100) == [(0, 100, 0.25)]
    assert phases(StepDecay(0.272, (0.5,), (20.0,)), 100001) == [
        (0, 50000, 0.272),
        (50000, 100001, pytest.approx(0.0136)),
    ]
    two = phases(StepDecay(1.0, (0.1, 0.5), (2.0, 4.0)), 10)
    assert [(a, b) for a, b, _ in two] == [(0, 1), (1, 5), (5, 10)]
    assert [eta for *_, eta in two] == [1.0, 0.5, 0.125]


def test_window_medians_and_second_half():
    grid = np.arange(10)
    loss = np.array([[9, 9, 9, 9, 9, 1, 2, 3, 9, 9], [0, 0, 0, 0, 0] + [np.nan] * 5])
    assert second_half(0, 8) == (4, 8)
    np.testing.assert_array_equal(window_medians(loss, grid, 5, 8), [2, np.nan])


def test_step_weights_count_the_steps_each_saved_value_stands_for():
    grid = np.array([0, 1, 2, 5, 10])
    np.testing.assert_array_equal(step_weights(grid, 0, 10), [1, 1, 3, 5, 0])
    np.testing.assert_array_equal(step_weights(grid, 2, 7), [0, 0, 3, 2, 0])


def test_sde_levels_average_over_the_phase_and_fall_back():
    grid = np.array([0, 1, 2, 5, 10])
    loss = np.array(
        [
            [1.0, 1.0, 4.0, 2.0, 0.0],  # steps 0..9: (1 + 1 + 3 * 4 + 5 * 2) / 10 = 2.4
            [3.0, 3.0, 3.0, 3.0, 3.0],
            [1.0, np.nan, np.nan, np.nan, np.nan],  # diverged
        ]
    )
    diverged = np.array([False, False, True])
    np.testing.assert_allclose(sde_levels(loss, diverged, grid, 0, 10), [2.4, 3.0, 2.7])
    # every seed diverged: each its own step-weighted median before divergence
    early = np.array([[1.0, 1e9, 1.0, 1.0, np.nan], [2.0, 2.0, np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(sde_levels(early, np.ones(2, bool), grid, 0, 10), [1.0, 2.0])
    nothing = np.full((2, 5), np.nan)
    np.testing.assert_array_equal(sde_levels(nothing, np.ones(2, bool), grid, 0, 10), [0, 0])


def test_plane_projection_puts_the_three_points_where_they_belong():
    rng = np.random.default_rng(0)
    w0, target, w_gf = rng.standard_normal((3, 6))
    e1, e2 = plane_basis(w0, target, w_gf)
    assert abs(e1 @ e2) < 1e-12
    np.testing.assert_allclose(project(w0, w0, e1, e2), [0, 0], atol=1e-12)
    np.testing.assert_allclose(project(target, w0, e1, e2), [1, 0], atol=1e-12)
    assert project(w_gf, w0, e1, e2)[1] == pytest.approx(1.0)
    point = w0 + 0.3 * e1 - 0.7 * e2
    np.testing.assert_allclose(project(point, w0, e1, e2), [0.3, -0.7], atol=1e-12)
    with pytest.raises(ValueError, match="not defined"):
        plane_basis(w0, target, w0 + 2 * (target - w0))


# ---------------------------------------------------------------- the kinds, tiny runs


def _gd_vs_sgd(n_steps=2001, n_seeds=3):
    config = load_config("paper_dln_gd_vs_sgd")
    config["n_seeds"] = n_seeds
    experiment = EXPERIMENTS.make("paper_dln_gd_vs_sgd")
    plan = experiment.prepare(config, n_steps=n_steps)
    return experiment, plan


@pytest.fixture(scope="module")
def gd_vs_sgd_run():
    experiment, plan = _gd_vs_sgd()
    return experiment, plan, experiment.run(plan)


def test_gd_rows_equal_an_independent_gd_loop(gd_vs_sgd_run):
    """GD eta = 2.0 (below the edge of stability, so not chaotic: summation order does
    not matter) against a plain numpy GD loop."""
    _, plan, ds = gd_vs_sgd_run
    data = plan.datasets["paper"]
    X, y, n = data.X, data.y, data.n
    u, v = np.full(100, 0.1), np.zeros(100)
    for _ in range(plan.n_steps):
        g = X.T @ (X @ (u * v) - y) / n
        u, v = u - 2.0 * g * v, v - 2.0 * g * u
    test = np.sum((data.X_test @ (u * v) - data.y_test) ** 2) / (2 * data.X_test.shape[0])
    row = ds["test_loss"].sel(run="GD eta=2.0").values
    np.testing.assert_allclose(row, test, rtol=1e-8)
    assert np.all(row == row[0])  # deterministic: the same for every seed
    # the large-step GD runs are repeated over seeds too (one simulation each)
    assert np.unique(ds["test_loss"].sel(run="GD eta=3.53, decay at 50%").values).size == 1


def test_sgd_rows_use_seed_index_children(gd_vs_sgd_run):
    _, plan, ds = gd_vs_sgd_run
    run = next(r for r in plan.runs if r.name == "SGD eta=0.26, /20 at 50%")
    seeds = seed_children(plan.header.seed, plan.header.n_seeds)
    direct = simulate_sgd(
        plan.model,
        plan.datasets["paper"],
        run.schedule,
        n_steps=plan.n_steps,
        sgd=SGD(1),
        seed=[seeds[2]],
        save_steps=[plan.n_steps],
    )
    ours = ds["train_loss"].sel(run=run.name).values[2]
    assert ours == pytest.approx(float(direct["train_loss"].values[0, -1]), rel=1e-12)


def test_label_noise_sde_is_calibrated_on_its_sgd_run(gd_vs_sgd_run):
    """Phase 1 of the label-noise SDE equals a direct simulate_sde run of
    StabilizedLoss(L*) with L* the SGD run's plateau, from the same seeds."""
    _, plan, ds = gd_vs_sgd_run
    name, of = "label-noise SDE of SGD eta=0.26", "SGD eta=0.26, /20 at 50%"
    grid = plan.save_steps
    k1 = int(0.5 * plan.n_steps)
    sgd_curve = ds["train_loss_curve"].sel(run=of).values
    level = sde_levels(sgd_curve, ds["diverged"].sel(run=of).values, grid, 0, k1)
    stored = np.array(json.loads(ds.attrs["sde_levels"])[name])  # (seed, phase)
    np.testing.assert_allclose(stored[:, 0], level, rtol=1e-12)
    index = [s.name for s in plan.sdes].index(name)
    at = int(grid[grid <= k1].max())  # the last saved step of phase 1
    seeds = seed_children(plan.header.seed, plan.header.n_seeds)
    direct = simulate_sde(
        plan.model,
        plan.datasets["paper"],
        StabilizedLoss(level=level, lr=0.26, batch_size=1),
        dt=0.26,
        n_steps=k1,
        seed=[seed_child(seed_child(s, 1 + index), 0) for s in seeds],
        save_steps=[at],
    )
    ours = ds["train_loss_curve"].sel(run=name, step=at).values
    np.testing.assert_allclose(ours, direct["train_loss"].values[:, -1], rtol=1e-12)
    # SDE time matches SGD time
    np.testing.assert_allclose(ds["time"].sel(run=name), ds["time"].sel(run=of))
    assert ds["time"].sel(run=of, step=at).item() == pytest.approx(0.26 * at)


def test_gd_vs_sgd_dataset_and_table(gd_vs_sgd_run):
    experiment, _, ds = gd_vs_sgd_run
    assert (ds.sizes["run"], ds.sizes["seed"]) == (10, 3)
    assert list(ds["method"].values[:5]) == ["GD"] * 4 + ["SGD"]
    assert ds["method"].sel(run="label-noise SDE of SGD eta=0.26").item() == "SDE label_noise"
    # GD eta = 2.0 converges: its final train loss is far below its start
    curve = ds["train_loss_curve"].sel(run="GD eta=2.0").values[0]
    assert curve[-1] < 1e-3 * curve[0]
    table = gallery_table(ds)
    assert "| GD eta=2.0 | test_loss |" in table and "| 0.168 |" in table
    # the GD claim is checked on the real output: l0 of GD after 2,000 steps is 100 > 70
    assert "| large-step GD stabilizes but does not sparsify" in table
    fig = experiment.plot(ds)
    assert len(fig.axes) == 5  # train, test, l0, l1 and the GD edge panel


def test_theory_variables_equal_direct_calls_of_the_theory(gd_vs_sgd_run):
    _, plan, ds = gd_vs_sgd_run
    data, model = plan.datasets["paper"], plan.model
    X, y = data.X, data.y
    expected = {
        "gf_limit": gradient_flow_limit(X, y, 0.05),  # uv from u0 = alpha: alpha / 2
        "min_l1": min_l1_interpolator(X, y),
        "min_l2": min_l2_interpolator(X, y),
    }
    for key, beta in expected.items():
        sel = ds.sel(dataset="paper", theory=key)
        np.testing.assert_array_equal(sel["theory_beta"].values, beta)
        test = np.sum((data.X_test @ beta - data.y_test) ** 2) / (2 * data.X_test.shape[0])
        assert float(sel["theory_test_loss"]) == pytest.approx(test, rel=1e-12)
        assert float(sel["theory_l1_norm"]) == pytest.approx(np.abs(beta).sum(), rel=1e-12)
        floor = max(1e-50, 1e-9 * np.abs(beta).max())
        assert float(sel["theory_l0_norm"]) == np.count_nonzero(np.abs(beta) > floor)
    # the min-l1 interpolator of n = 40 equations is a vertex: 40 non-zeros, not d = 100
    assert float(ds["theory_l0_norm"].sel(dataset="paper", theory="min_l1")) == 40
    assert float(ds["theory_l0_norm"].sel(dataset="paper", theory="min_l2")) == 100
    theta0 = model.init([np.random.default_rng(0)])
    edge0 = gd_stability_edge(model, theta0, data)[0]
    assert float(ds["theory_gd_edge_init"].sel(dataset="paper")) == edge0
    for var in ("theory_beta", "theory_test_loss", "theory_l0_norm", "theory_gd_edge_init"):
        assert ds[var].attrs["long_name"] and ds[var].attrs["units"]
    # every GD run's edge curve starts at the edge of the init; SGD / SDE runs have none
    edges = ds["gd_edge_curve"]
    assert np.all(edges.sel(edge_step=0, run=ds["run"][ds["method"] == "GD"]).values == edge0)
    assert np.isnan(edges.sel(run=ds["run"][ds["method"] != "GD"]).values).all()


def test_gd_edge_curve_follows_an_independent_gd_loop(gd_vs_sgd_run):
    """GD eta = 2.0 (not chaotic) by a plain numpy loop: 2 / lambda_max of the closed-form
    Hessian at the saved edge steps, and its step size curve."""
    _, plan, ds = gd_vs_sgd_run
    data, model = plan.datasets["paper"], plan.model
    X, y, n = data.X, data.y, data.n
    steps = ds["edge_step"].values
    u, v = np.full(100, 0.1), np.zeros(100)
    thetas = []
    for k in range(plan.n_steps + 1):
        if k in steps:
            thetas.append(np.concatenate([u, v]))
        g = X.T @ (X @ (u * v) - y) / n
        u, v = u - 2.0 * g * v, v - 2.0 * g * u
    hess = model.hessian_closed_form(np.array(thetas), X, y)
    direct = 2.0 / np.linalg.eigvalsh(hess)[:, -1]
    ours = ds["gd_edge_curve"].sel(run="GD eta=2.0").values
    np.testing.assert_allclose(ours, np.broadcast_to(direct, ours.shape), rtol=1e-7)
    # GD at eta = 2.0 converges to the edge of stability: 2 / lambda_max ends just above eta
    assert 2.0 < direct[-1] < 2.1
    np.testing.assert_array_equal(ds["lr_curve"].sel(run="GD eta=2.0").values, 2.0)
    decayed = ds["lr_curve"].sel(run="GD eta=3.53, decay at 50%").values
    steps = ds["step"].values
    np.testing.assert_allclose(decayed[steps < 1000], 3.53)
    np.testing.assert_allclose(decayed[steps >= 1000], 3.53 / 1.5)


def _theory_lines(ax) -> dict[str, np.ndarray]:
    return {
        ln.get_label(): ln.get_ydata()
        for ln in ax.get_lines()
        if ln.get_label().startswith("theory")
    }


def test_theory_is_drawn_on_its_panels_and_listed_in_the_table(gd_vs_sgd_run):
    experiment, _, ds = gd_vs_sgd_run
    fig = experiment.plot(ds)
    panels = {ax.get_title().split(" (")[0]: ax for ax in fig.axes}
    theory = ds.sel(dataset="paper")
    for panel, var in (("test loss", "test_loss"), ("l0 norm", "l0_norm"), ("l1 norm", "l1_norm")):
        lines = _theory_lines(panels[panel])
        for key, name in (
            ("gf_limit", "theory: GF limit at alpha = 0.1"),
            ("min_l1", "theory: min-l1 interpolator"),
            ("min_l2", "theory: min-l2 interpolator"),
        ):
            value = float(theory[f"theory_{var}"].sel(theory=key))
            (label,) = [k for k in lines if k.startswith(name)]
            np.testing.assert_array_equal(lines[label], [value, value])
            assert panels[panel].get_ylim()[0] <= value <= panels[panel].get_ylim()[1]
    # interpolators have train loss 0: not drawn there, only the label-noise Lassos
    train = _theory_lines(panels["train loss"])
    assert train and all(k.startswith("theory: label-noise Lasso") for k in train)
    edge = _theory_lines(panels["GD: edge 2/lambda_max(theta_k)"])
    value = float(theory["theory_gd_edge_init"])
    ((label, ydata),) = edge.items()
    assert label.startswith("theory: GD edge 2/lambda_max at init")
    np.testing.assert_array_equal(ydata, [value, value])
    plt.close(fig)
    table = gallery_table(ds)
    for key, name in (("gf_limit", "GF limit at alpha = 0.1"), ("min_l1", "min-l1 interpolator")):
        for q in ("test_loss", "l0_norm"):
            value = float(theory[f"theory_{q}"].sel(theory=key))
            assert f"| theory: {name} | {q} | {value:.4g} | - | |" in table
    edge = float(theory["theory_gd_edge_init"])
    assert f"| theory: GD edge 2/lambda_max at init | step size | {edge:.4g} | - | |" in table


def test_label_noise_lasso_is_stored_and_drawn_for_label_noise_sde_runs(gd_vs_sgd_run):
    experiment, plan, ds = gd_vs_sgd_run
    data = plan.datasets["paper"]
    name = "label-noise SDE of SGD eta=0.26"
    levels = np.array(json.loads(ds.attrs["sde_levels"])[name])  # (seed, phase)
    delta = 2 * np.median(levels[:, 0])
    beta = label_noise_lasso(plan.model, data.X, data.y, 0.26, delta, 1)
    sel = ds.sel(run=name)
    np.testing.assert_array_equal(sel["theory_lasso_beta"].values, beta)
    assert float(sel["theory_lasso_delta"]) == delta and float(sel["theory_lasso_lr"]) == 0.26
    assert float(sel["theory_lasso_until"]) == int(0.5 * plan.n_steps)
    test = np.sum((data.X_test @ beta - data.y_test) ** 2) / (2 * data.X_test.shape[0])
    assert float(sel["theory_lasso_test_loss"]) == pytest.approx(test, rel=1e-12)
    # none for the other runs
    others = ds["theory_lasso_test_loss"].sel(run=ds["run"][ds["method"] != "SDE label_noise"])
    assert np.isnan(others.values).all()
    fig = experiment.plot(ds)
    panels = {ax.get_title().split(" (")[0]: ax for ax in fig.axes}
    for panel, var in (("test loss", "test_loss"), ("l0 norm", "l0_norm")):
        lines = _theory_lines(panels[panel])
        (label,) = [k for k in lines if k.startswith(f"theory: label-noise Lasso of {name}")]
        value = float(sel[f"theory_lasso_{var}"])
        np.testing.assert_array_equal(lines[label], [value, value])
    plt.close(fig)
    assert f"| theory: label-noise Lasso of {name} | l0_norm |" in gallery_table(ds)


def test_notebook_data_kind_runs_both_datasets():
    config = load_config("paper_dln_notebook_data")
    config["n_seeds"] = 2
    config["sde"] = config["sde"][:1]
    config["claims"] = [c for c in config["claims"] if "SGD-covariance" not in c["text"]]
    experiment = EXPERIMENTS.make("paper_dln_notebook_data")
    ds = experiment.run(experiment.prepare(config, n_steps=301))
    assert set(ds["data"].values) == {"paper", "demo"}
    # the constant-0.25 run on the paper's draw: our SGD, seed index 0, recomputed
    plan = experiment.prepare(config, n_steps=301)
    direct = simulate_sgd(
        plan.model,
        sparse_regression_notebook(),
        0.25,
        n_steps=301,
        seed=[seed_children(0, 2)[0]],
        save_steps=[301],
    )
    ours = ds["test_loss"].sel(run="paper: SGD eta=0.25").values[0]
    assert ours == pytest.approx(float(direct["test_loss"].values[0, -1]), rel=1e-12)
    fig = experiment.plot(ds)
    assert len(fig.axes) == 8  # one row of four panels per dataset (no GD: no edge panel)


def test_loss_slice_kind_reproduces_the_deterministic_rows_and_projects():
    config = load_config("paper_dln_loss_slice")
    config["n_seeds"] = 2
    config["slice"]["points"] = 7
    experiment = EXPERIMENTS.make("paper_dln_loss_slice")
    ds = experiment.run(experiment.prepare(config, n_steps=101))
    data = sparse_regression_notebook(n=20, d=30, k=3, seed=0)
    u, v = np.full(30, 0.1), np.zeros(30)
    for _ in range(101):
        g = data.X.T @ (data.X @ (u * v) - data.y) / 20
        u, v = u - 0.03 * g * v, v - 0.03 * g * u
    gf = ds["projection"].sel(run="GF (GD eta=0.03)").isel(seed=0, step=-1).values
    np.testing.assert_allclose(gf[1], 1.0, atol=1e-12)  # w_GF is at b = 1 by construction
    train_gf = np.sum((data.X @ (u * v) - data.y) ** 2) / 40
    assert ds["train_loss"].sel(run="GF (GD eta=0.03)").values[0] == pytest.approx(train_gf)
    # the grid's loss at the plane point (0, 0) is the loss at the initialization (beta = 0)
    coords = ds["plane_a"].values
    i0 = int(np.argmin(np.abs(coords)))
    if abs(coords[i0]) < 1e-12:
        assert ds["slice_train_loss"].values[i0, i0] == pytest.approx(np.mean(data.y**2) / 2)
    assert ds["projection"].sel(run="SGD eta=0.6, /3 at 50%").isel(step=0).values.tolist() == [
        [0.0, 0.0],
        [0.0, 0.0],
    ]
    assert "params" not in ds
    fig = experiment.plot(ds)
    assert len(fig.axes) >= 3


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["runs"][0].update(data="elsewhere"), r"runs\[0\].data: must name one of"),
        (lambda c: c["runs"][4].update(batch_size=0), r"runs\[4\].batch_size: must be an integer"),
        (lambda c: c["runs"][4].update(batch_size="half"), r"runs\[4\].batch_size"),
        (lambda c: c["sde"][0].update(of="nothing"), r"sde\[0\].of: must name a run"),
        (lambda c: c["sde"][0].update(noise="white"), r"sde\[0\]"),
        (lambda c: c["sde"][1].update(name=c["runs"][0]["name"]), "is used twice"),
        (
            lambda c: c["runs"][4].update(
                schedule={
                    "name": "linear_warmup",
                    "lr": 0.1,
                    "factor": 2.0,
                    "until": 0.5,
                    "decay": 2.0,
                }
            ),
            "constant or step_decay",
        ),
        (lambda c: c.update(datasets={}), "has no dataset"),
        (
            lambda c: c["model"].update(init_scheme="gaussian"),
            "model: an \\[\\[sde\\]\\] run starts",
        ),
        (lambda c: c.pop("n_steps"), "n_steps"),
    ],
)
def test_dln_config_errors_name_the_field(change, message):
    config = copy.deepcopy(load_config("paper_dln_gd_vs_sgd"))
    change(config)
    with pytest.raises(ConfigError, match=message):
        EXPERIMENTS.make("paper_dln_gd_vs_sgd").prepare(config)


def test_slice_config_errors_name_the_field():
    config = copy.deepcopy(load_config("paper_dln_loss_slice"))
    config["slice"]["gf_run"] = "nope"
    config["model"]["parametrization"] = "ww"
    with pytest.raises(ConfigError) as err:
        EXPERIMENTS.make("paper_dln_loss_slice").prepare(config)
    assert "slice.gf_run" in str(err.value) and "parametrization" in str(err.value)


def test_shipped_configs_keep_eight_or_more_seeds_and_the_paper_thresholds():
    for name in ("paper_dln_notebook_data", "paper_dln_gd_vs_sgd", "paper_dln_loss_slice"):
        config = load_config(name)
        assert config["n_seeds"] >= 8
        assert config["save"]["l0_threshold"] == 1e-50
