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
    ds = simulate_sgd(model, data, 0.1, 1, sgd=GD(), save_steps=[0, 1], save_params=True)
    theta0, theta1 = ds.params.values[0, 0], ds.params.values[0, 1]
    expected = theta0 - 0.1 * model.grad(theta0, data.X, data.y)[0]
    np.testing.assert_allclose(theta1, expected, rtol=1e-13, atol=1e-15)


def test_one_sgd_step_uses_one_example(problem):
    model, data = problem
    ds = simulate_sgd(model, data, 0.1, 1, n_traj=20, save_steps=[0, 1], save_params=True)
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
        e: simulate_sgd(model, data, schedules, 300, engine=e, **kwargs)
        for e in s.dynamics.sgd.ENGINES
    }
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
        model, data, lr, 1, sgd=GD(delta), n_traj=T, seed=11, save_steps=[0, 1], save_params=True
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
            1,
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
    ds = simulate_sgd(model, data, [0.05, 50.0, 0.05], 200, seed=seeds, save_steps=[0, 100, 200])
    assert list(ds.diverged.values) == [False, True, False]
    assert ds.diverged_step.values[1] >= 0 and ds.diverged_step.values[0] == -1
    assert np.isnan(ds.train_loss.values[1, -1])
    alone = simulate_sgd(model, data, [0.05, 0.05], 200, seed=[1, 3], save_steps=[0, 100, 200])
    np.testing.assert_array_equal(_final(ds)[[0, 2]], _final(alone))


def test_reproducible_whatever_threads_traj_count_grid_and_block(problem, monkeypatch):
    model, data = problem
    kw = dict(sgd=SGD(batch_size=3, label_noise=0.01), seed=42)
    base = simulate_sgd(model, data, [0.05] * 3, 500, save_steps=[0, 500], **kw)
    again = simulate_sgd(model, data, [0.05] * 3, 500, save_steps=[0, 500], **kw)
    np.testing.assert_array_equal(_final(base), _final(again))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = simulate_sgd(model, data, [0.05] * 3, 500, save_steps=[0, 500], **kw)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(_final(base), _final(single))
    more = simulate_sgd(model, data, [0.05] * 5, 500, save_steps=[0, 500], **kw)
    np.testing.assert_array_equal(_final(base), _final(more)[:3])
    dense_grid = simulate_sgd(
        model, data, [0.05] * 3, 500, save_steps=[*np.arange(0, 501, 7).tolist(), 500], **kw
    )
    np.testing.assert_array_equal(_final(base), _final(dense_grid))
    monkeypatch.setattr(runloop, "BLOCK_ENTRIES", 17)
    small_blocks = simulate_sgd(model, data, [0.05] * 3, 500, save_steps=[0, 500], **kw)
    np.testing.assert_array_equal(_final(base), _final(small_blocks))


def test_time_coordinate_is_cumulative_step_size(problem):
    model, data = problem
    sched = StepDecay(0.1, (0.3,), (4.0,))
    ds = simulate_sgd(model, data, sched, 100, save_steps=[0, 10, 30, 31, 100])
    expected = np.concatenate([[0.0], np.cumsum(sched.values(100))])[[0, 10, 30, 31, 100]]
    np.testing.assert_allclose(ds.time.values[0], expected, rtol=1e-14)
    assert ds.time.attrs["long_name"].startswith("SDE time")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(schedule=-0.1), "lr must be > 0"),
        (dict(schedule=0.1, sgd=SGD(batch_size=0)), "batch_size must be an integer in"),
        (dict(schedule=0.1, sgd=SGD(batch_size=13)), "batch_size must be an integer in"),
        (dict(schedule=0.1, sgd=SGD(label_noise=-1.0)), "label_noise"),
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
        simulate_sgd(model, data, schedule, n_steps, **kwargs)


def test_bad_models_and_data_are_refused(problem):
    _model, data = problem
    with pytest.raises(ValueError, match="unknown model"):
        s.make_model("resnet", d=3)
    with pytest.raises(ValueError, match="input dimension"):
        simulate_sgd(s.make_model("diagonal_linear", d=7), data, 0.1, 10)
    X = data.X.copy()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.RegressionData(X, data.y, data.X_test, data.y_test)
    with pytest.raises(ValueError, match="k = 9"):
        s.sparse_regression(n=5, d=8, k=9)


def test_dataset_roundtrip_and_attrs(problem, tmp_path):
    import json

    model, data = problem
    ds = simulate_sgd(model, data, [0.05, 0.1], 50, run_names=["a", "b"], seed=3)
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
    ds = simulate_sgd(model, data, 0.05, 5, theta0=theta0, save_steps=[0], save_params=True)
    assert ds.sizes["traj"] == 1
    np.testing.assert_array_equal(ds.params.values[0, 0], theta0)
    two = simulate_sgd(model, data, [0.05, 0.1], 5, theta0=theta0, save_steps=[0], save_params=True)
    np.testing.assert_array_equal(two.params.values[:, 0], [theta0, theta0])
