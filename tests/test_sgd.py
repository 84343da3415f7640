"""Exact SGD engines: the update rule, engine agreement, divergence, seeds, validation."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import sgdsde as s
from sgdsde.dynamics import GD, SGD, StepDecay, simulate_sgd
from sgdsde.random import without_replacement
from sgdsde.run import loop as runloop


@pytest.fixture(scope="module")
def problem():
    data = s.sparse_regression(n=12, d=6, k=2, n_test=30, seed=3)
    model = s.make_model("diagonal_linear", d=6, alpha=0.5)
    return model, data


def _final(ds, var="train_loss"):
    return ds[var].values[:, -1]


def test_one_gd_step_is_minus_lr_times_gradient(problem):
    model, data = problem
    ds = simulate_sgd(model, data, 0.1, n_steps=1, sgd=GD(), save_steps=[0, 1], save_params=True)
    theta0, theta1 = ds.params.values[0, 0], ds.params.values[0, 1]
    expected = theta0 - 0.1 * model.grad(theta0, data.X, data.y)[0]
    np.testing.assert_allclose(theta1, expected, rtol=1e-13, atol=1e-15)


def test_one_sgd_step_uses_one_example(problem):
    model, data = problem
    ds = simulate_sgd(model, data, 0.1, n_steps=1, n_traj=20, save_steps=[0, 1], save_params=True)
    theta0 = ds.params.values[0, 0]
    J = model.per_example_grads(theta0, data.X)[0]
    r = model.residuals(theta0, data.X, data.y)[0]
    candidates = theta0 - 0.1 * r[:, None] * J  # the n possible single-example updates
    for theta1 in ds.params.values[:, 1]:
        assert np.min(np.abs(candidates - theta1).max(axis=1)) < 1e-14


@pytest.mark.parametrize("replace", [False, True])
def test_engines_agree(problem, replace):
    model, data = problem
    kwargs = dict(
        sgd=SGD(
            batch_size=[1, 4, 12, 3], label_noise=[0.0, 0.01, 0.02, 0.0], with_replacement=replace
        ),
        seed=7,
        save_steps=[0, 5, 50, 300],
        save_params=True,
    )
    schedules = [0.05, StepDecay(0.1, (0.5,), (2.0,)), 0.08, 0.02]
    runs = {
        e: simulate_sgd(model, data, schedules, n_steps=300, engine=e, **kwargs)
        for e in s.dynamics.sgd.ENGINES
    }
    assert {ds.attrs["engine"] for ds in runs.values()} == set(s.dynamics.sgd.ENGINES)
    ref = runs["numpy"]
    for name in ("numba", "torch"):
        np.testing.assert_allclose(
            runs[name].params.values, ref.params.values, rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(runs[name].train_loss.values, ref.train_loss.values, rtol=1e-9)


def test_label_noise_gd_step_moments(problem):
    """One label-noise GD step: mean -lr grad L, covariance lr^2 delta/n^2 phi^T phi."""
    model, data = problem
    T, lr, delta, n = 4000, 0.1, 0.5, data.n
    ds = simulate_sgd(
        model,
        data,
        lr,
        n_steps=1,
        sgd=GD(delta),
        n_traj=T,
        seed=11,
        save_steps=[0, 1],
        save_params=True,
    )
    theta0 = ds.params.values[0, 0]
    steps = ds.params.values[:, 1] - theta0
    mean = -lr * model.grad(theta0, data.X, data.y)[0]
    phi = model.jacobian(theta0, data.X)[0]
    cov = lr**2 * delta / n**2 * phi.T @ phi
    sd = np.sqrt(np.diag(cov) / T)
    # 4.5 standard errors per coordinate: p < 1e-4 of a false alarm over 12 coordinates.
    assert np.all(np.abs(steps.mean(0) - mean) <= 4.5 * sd + 1e-15)
    emp_var = steps.var(0)
    # Var of a sample variance of Gaussians: 2 sigma^4 / (T - 1).
    assert np.all(
        np.abs(emp_var - np.diag(cov)) <= 4.5 * np.sqrt(2 / (T - 1)) * np.diag(cov) + 1e-18
    )


def test_minibatch_mean_update_is_gradient(problem):
    """Averaged over trajectories, one SGD step is -lr grad L (unbiased sampling)."""
    model, data = problem
    T, lr = 6000, 0.1
    for B in (1, 5):
        ds = simulate_sgd(
            model,
            data,
            lr,
            n_steps=1,
            sgd=SGD(batch_size=B),
            n_traj=T,
            seed=5,
            save_steps=[0, 1],
            save_params=True,
        )
        theta0 = ds.params.values[0, 0]
        steps = ds.params.values[:, 1] - theta0
        se = steps.std(0) / np.sqrt(T)
        assert np.all(
            np.abs(steps.mean(0) + lr * model.grad(theta0, data.X, data.y)[0]) <= 4.5 * se + 1e-15
        )


def test_without_replacement_batches_are_distinct_and_uniform():
    rng = np.random.default_rng(0)
    idx = without_replacement(rng, 10, 4, 20000)
    assert all(len(set(row)) == 4 for row in idx[:2000])
    counts = np.bincount(idx.ravel(), minlength=10) / idx.size
    # Each index has probability 1/10; multinomial standard error on the frequency.
    assert np.all(np.abs(counts - 0.1) < 4.5 * np.sqrt(0.1 * 0.9 / idx.size))


def test_divergence_is_isolated(problem):
    model, data = problem
    seeds = [1, 2, 3]
    ds = simulate_sgd(
        model, data, [0.05, 50.0, 0.05], n_steps=200, seed=seeds, save_steps=[0, 100, 200]
    )
    assert list(ds.diverged.values) == [False, True, False]
    assert ds.diverged_step.values[1] >= 0 and ds.diverged_step.values[0] == -1
    assert np.isnan(ds.train_loss.values[1, -1])
    alone = simulate_sgd(
        model, data, [0.05, 0.05], n_steps=200, seed=[1, 3], save_steps=[0, 100, 200]
    )
    np.testing.assert_array_equal(_final(ds)[[0, 2]], _final(alone))


def test_reproducible_whatever_threads_traj_count_grid_and_block(problem, monkeypatch):
    model, data = problem
    kw = dict(sgd=SGD(batch_size=3, label_noise=0.01), seed=42)
    base = simulate_sgd(model, data, [0.05] * 3, n_steps=500, save_steps=[0, 500], **kw)
    again = simulate_sgd(model, data, [0.05] * 3, n_steps=500, save_steps=[0, 500], **kw)
    np.testing.assert_array_equal(_final(base), _final(again))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = simulate_sgd(model, data, [0.05] * 3, n_steps=500, save_steps=[0, 500], **kw)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(_final(base), _final(single))
    more = simulate_sgd(model, data, [0.05] * 5, n_steps=500, save_steps=[0, 500], **kw)
    np.testing.assert_array_equal(_final(base), _final(more)[:3])
    dense_grid = simulate_sgd(
        model, data, [0.05] * 3, n_steps=500, save_steps=[*np.arange(0, 501, 7).tolist(), 500], **kw
    )
    np.testing.assert_array_equal(_final(base), _final(dense_grid))
    monkeypatch.setattr(runloop, "BLOCK_ENTRIES", 17)
    small_blocks = simulate_sgd(model, data, [0.05] * 3, n_steps=500, save_steps=[0, 500], **kw)
    np.testing.assert_array_equal(_final(base), _final(small_blocks))


def test_time_coordinate_is_cumulative_step_size(problem):
    model, data = problem
    sched = StepDecay(0.1, (0.3,), (4.0,))
    ds = simulate_sgd(model, data, sched, n_steps=100, save_steps=[0, 10, 30, 31, 100])
    expected = np.concatenate([[0.0], np.cumsum(sched.values(100))])[[0, 10, 30, 31, 100]]
    np.testing.assert_allclose(ds.time.values[0], expected, rtol=1e-14)
    assert ds.time.attrs["long_name"].startswith("SDE time")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(schedule=-0.1), "lr must be > 0"),
        (dict(schedule=0.1, sgd=dict(batch_size=0)), "batch_size must be an integer in"),
        (dict(schedule=0.1, sgd=dict(batch_size=13)), "batch_size must be an integer in"),
        (dict(schedule=0.1, sgd=dict(label_noise=-1.0)), "label_noise"),
        (dict(schedule=0.1, theta0=np.zeros(5)), "parameters must have shape"),
        (dict(schedule=0.1, engine="jax"), "unknown engine"),
        (dict(schedule=0.1, n_steps=0), "n_steps must be a positive integer"),
        (dict(schedule=[0.1, 0.2], n_traj=3), "disagree"),
        (dict(schedule={"name": "cosine", "lr": 0.1}), "unknown schedule|cosine"),
        (dict(schedule=[0.1, 0.2, 0.3], seed=[1, 2]), "disagree"),
    ],
)
def test_bad_input_is_refused_before_work(problem, kwargs, match):
    model, data = problem
    kwargs = {"n_steps": 10, **kwargs}
    schedule = kwargs.pop("schedule")
    n_steps = kwargs.pop("n_steps")
    with pytest.raises(ValueError, match=match):
        if isinstance(kwargs.get("sgd"), dict):  # refused when the SGD is built, or later
            kwargs["sgd"] = SGD(**kwargs["sgd"])
        simulate_sgd(model, data, schedule, n_steps=n_steps, **kwargs)


def test_bad_models_and_data_are_refused(problem):
    _model, data = problem
    with pytest.raises(ValueError, match="unknown model"):
        s.make_model("resnet", d=3)
    with pytest.raises(ValueError, match="input dimension"):
        simulate_sgd(s.make_model("diagonal_linear", d=7), data, 0.1, n_steps=10)
    X = data.X.copy()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.RegressionData(X, data.y, data.X_test, data.y_test)
    with pytest.raises(ValueError, match="k = 9"):
        s.sparse_regression(n=5, d=8, k=9)


def test_dataset_roundtrip_and_attrs(problem, tmp_path):
    import json

    model, data = problem
    ds = simulate_sgd(model, data, [0.05, 0.1], n_steps=50, run_names=["a", "b"], seed=3)
    path = s.save_dataset(ds, tmp_path / "run.nc")
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temporary left behind
    back = s.load_dataset(path)
    np.testing.assert_array_equal(back.train_loss.values, ds.train_loss.values)
    assert list(back.run.values) == ["a", "b"]
    cfg = json.loads(back.attrs["config"])
    assert cfg["model"]["name"] == "diagonal_linear" and cfg["n_steps"] == 50
    assert back.attrs["seed_entropy"] == "3" and back.attrs["sgdsde_version"]
    assert back.train_loss.attrs["long_name"] and back.time.dims == ("traj", "step")


def test_one_shared_theta0_row_is_not_a_trajectory_count(problem):
    model, data = problem
    theta0 = np.full(model.n_params, 0.3)
    ds = simulate_sgd(model, data, 0.05, n_steps=5, theta0=theta0, save_steps=[0], save_params=True)
    assert ds.sizes["traj"] == 1
    np.testing.assert_array_equal(ds.params.values[0, 0], theta0)
    two = simulate_sgd(
        model, data, [0.05, 0.1], n_steps=5, theta0=theta0, save_steps=[0], save_params=True
    )
    np.testing.assert_array_equal(two.params.values[:, 0], [theta0, theta0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(batch_size=2.5), r"batch_size must be an integer in \[1, n\] \(got 2.5\).*None"),
        (dict(batch_size=True), r"batch_size must be an integer.*\(got True\)"),
        (dict(batch_size=[1, 2.0]), r"batch_size must be an integer.*\(got 2.0\)"),
        (dict(batch_size=-3), r"batch_size must be an integer.*\(got -3\)"),
        (dict(label_noise=float("nan")), r"label_noise .* finite number >= 0 \(got nan\)"),
        (dict(label_noise=[0.1, -1.0]), r"label_noise .* \(got -1.0\)"),
        (dict(with_replacement="yes"), r"with_replacement must be True or False \(got 'yes'\)"),
        (dict(with_replacement=1), r"with_replacement must be True or False \(got 1\)"),
    ],
)
def test_sgd_is_checked_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD(**kwargs)


def test_n_steps_is_a_keyword_positional_is_deprecated(problem):
    model, data = problem
    kw = dict(seed=2, save_steps=[0, 7], save_params=True)
    with pytest.warns(DeprecationWarning, match="n_steps=..."):
        old = simulate_sgd(model, data, 0.1, 7, **kw)
    new = simulate_sgd(model, data, 0.1, n_steps=7, **kw)
    np.testing.assert_array_equal(old.params.values, new.params.values)
    with pytest.raises(TypeError, match="by keyword"):
        simulate_sgd(model, data, 0.1, 7, n_steps=7)
    with pytest.raises(TypeError, match="missing the keyword argument n_steps"):
        simulate_sgd(model, data, 0.1)


def test_generator_seed_is_refused_with_the_reason(problem):
    model, data = problem
    for seed in (np.random.default_rng(0), [np.random.default_rng(0)]):
        with pytest.raises(ValueError, match="bit-for-bit reproducibility needs the seed itself"):
            simulate_sgd(model, data, 0.1, n_steps=3, seed=seed)


def test_integer_seed_is_the_documented_spawn(problem):
    """seed=5 with T trajectories: trajectory t uses SeedSequence(5).spawn(T)[t]."""
    model, data = problem
    kw = dict(n_steps=40, sgd=SGD(batch_size=3, label_noise=0.1), save_params=True)
    by_int = simulate_sgd(model, data, [0.05] * 3, seed=5, **kw)
    children = np.random.SeedSequence(5).spawn(3)
    by_children = simulate_sgd(model, data, [0.05] * 3, seed=children, **kw)
    np.testing.assert_array_equal(by_int.params.values, by_children.params.values)
    swapped = simulate_sgd(model, data, [0.05] * 3, seed=children[::-1], **kw)
    assert not np.array_equal(swapped.params.values[0], by_int.params.values[0])


def test_engine_objects_names_and_configs(problem):
    from sgdsde.dynamics import ENGINES, NumbaEngine, NumpyEngine, engine_to_config

    model, data = problem
    kw = dict(n_steps=20, sgd=SGD(batch_size=2), seed=1, save_params=True)
    by_object = simulate_sgd(model, data, 0.05, engine=NumpyEngine(), **kw)
    by_name = simulate_sgd(model, data, 0.05, engine="numpy", **kw)
    np.testing.assert_array_equal(by_object.params.values, by_name.params.values)
    assert by_object.attrs["engine"] == "numpy"
    assert ENGINES["numba"] is NumbaEngine and engine_to_config(NumbaEngine()) == {"name": "numba"}
    with pytest.raises(ValueError, match="engine must be an Engine"):
        simulate_sgd(model, data, 0.05, engine=3, **kw)


def test_cpu_engines_refuse_other_devices_and_cuda_needs_a_gpu(problem):
    import torch

    model, data = problem
    for engine in ("numba", "numpy"):
        with pytest.raises(ValueError, match=f"engine '{engine}' runs on the CPU only.*torch"):
            simulate_sgd(model, data, 0.05, n_steps=2, engine=engine, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"no CUDA device.*device='cpu'"):
            simulate_sgd(model, data, 0.05, n_steps=2, engine="torch", device="cuda")
    with pytest.raises(ValueError, match="device must be 'cpu' or a torch device"):
        simulate_sgd(model, data, 0.05, n_steps=2, engine="torch", device="gpu0")


def test_diverged_step_is_the_true_step_for_every_engine_and_grid(problem):
    """The numba engine once stepped diverged trajectories on and reported the next save
    point: the step must be the same whatever the engine and the save grid."""
    model, data = problem
    lrs = [0.05, 3.0, 0.05, 8.0]
    steps = {}
    for engine in s.dynamics.sgd.ENGINES:
        for grid in ([0, 100], [0, 3, 17, 50, 100], np.arange(101)):
            ds = simulate_sgd(model, data, lrs, n_steps=100, seed=4, engine=engine, save_steps=grid)
            steps[engine, len(grid)] = ds.diverged_step.values
    first = next(iter(steps.values()))
    assert first[0] == first[2] == -1 and first[1] > 0 and first[3] > 0
    for got in steps.values():
        np.testing.assert_array_equal(got, first)


def test_divergence_on_a_save_point_reads_nan(problem):
    """The value recorded at the diverged step itself is NaN, the one before it finite."""
    model, data = problem
    ds = simulate_sgd(model, data, [0.05, 8.0], n_steps=60, seed=4, save_steps=np.arange(61))
    k = int(ds.diverged_step.values[1])
    assert 0 < k <= 60
    loss = ds.train_loss.values[1]
    assert np.isnan(loss[k]) and np.all(np.isfinite(loss[:k]))
    assert np.all(np.isfinite(ds.train_loss.values[0]))


def test_with_replacement_full_batches_are_sampled(problem):
    """B = n with replacement is not GD: it depends on the seed (and is not GD's step)."""
    model, data = problem
    n = data.n
    kw = dict(n_steps=1, save_steps=[0, 1], save_params=True, sgd=SGD(n, with_replacement=True))
    a = simulate_sgd(model, data, 0.1, seed=1, **kw).params.values[0, 1]
    b = simulate_sgd(model, data, 0.1, seed=2, **kw).params.values[0, 1]
    gd = simulate_sgd(model, data, 0.1, n_steps=1, sgd=GD(), save_steps=[0, 1], save_params=True)
    assert np.abs(a - b).max() > 1e-6 and np.abs(a - gd.params.values[0, 1]).max() > 1e-6


@pytest.mark.parametrize("engine", ["numba", "numpy", "torch"])
def test_overflow_of_diverged_trajectories_does_not_warn(problem, engine):
    """Divergence is flagged, and no RuntimeWarning (overflow, invalid) reaches the user."""
    import warnings

    model, data = problem
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = simulate_sgd(
            model,
            data,
            [0.05, 1e3, 1e8],
            n_steps=50,
            seed=3,
            engine=engine,
            sgd=SGD(batch_size=4, label_noise=0.1),
            max_loss=1e300,
            save_steps=np.arange(51),
        )
    assert ds.diverged.values.tolist() == [False, True, True]


def test_sgd_config_round_trip():
    """``SGD.to_config`` gives plain JSON values that rebuild the same options."""
    import json

    sgd = SGD(batch_size=(np.int64(2), 3), label_noise=np.array([0.1, 0.0]), with_replacement=True)
    cfg = json.loads(json.dumps(sgd.to_config()))
    assert cfg == {"batch_size": [2, 3], "label_noise": [0.1, 0.0], "with_replacement": True}
    again = SGD(**cfg)
    assert again.to_config() == cfg
    assert SGD(**GD(0.5).to_config()) == GD(0.5)
