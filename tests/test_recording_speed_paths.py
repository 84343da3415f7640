"""The driver's fast recording path keeps every recorded value: it observes with the
BLAS on one thread (``sgdsde.run.driver``, Threads), which must give the same bits as
the multi-threaded products, and must leave the BLAS as it found it."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

import sgdsde as s
from sgdsde.dynamics import simulate_sgd
from sgdsde.metrics import Metric
from sgdsde.metrics.builtin import mean_squared_residual


def blas():
    return ThreadpoolController().select(user_api="blas")


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in blas().info()]


@pytest.fixture(scope="module")
def demo_problem():
    """The demo's problem: diagonal network on sparse regression n=80, d=200, k=20
    (1000 test examples)."""
    return s.make_model("diagonal_linear", d=200), s.sparse_regression(80, 200, 20, seed=1)


@pytest.mark.parametrize("n_traj", [1, 5, 64, 300])
@pytest.mark.parametrize("n_examples", [80, 1000])
def test_residual_products_have_the_same_bits_on_one_thread_and_on_two(n_traj, n_examples):
    """beta X^T (and the loss from it) on one BLAS thread equals it on two, bit for bit,
    at the demo's shapes and around them (T x 200 times 200 x n)."""
    rng = np.random.default_rng(0)
    beta = rng.standard_normal((n_traj, 200)) * np.exp(rng.uniform(-20, 5, size=(n_traj, 1)))
    X = rng.standard_normal((n_examples, 200))
    y = rng.standard_normal(n_examples)
    ctl = blas()
    results = []
    for threads in (1, 2):
        with ctl.limit(limits=threads):
            r = beta @ X.T - y
            results.append((r, 0.5 * np.mean(r * r, axis=-1)))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


def test_recorded_losses_equal_the_multithreaded_reference(demo_problem):
    """A run's recorded train and test losses (observed on one BLAS thread) equal the
    losses recomputed afterwards from its saved parameters on two threads."""
    model, data = demo_problem
    ds = simulate_sgd(
        model, data, 0.2, n_steps=2_000, n_traj=64, save_steps=[0, 7, 500, 2_000], seed=3,
        save_params=True,
    )  # fmt: skip
    params = ds["params"].values  # (T, S, p)
    with blas().limit(limits=2):
        for j in range(params.shape[1]):
            theta = np.ascontiguousarray(params[:, j])
            train = mean_squared_residual(theta, model, data.X, data.y)
            test = mean_squared_residual(theta, model, data.X_test, data.y_test)
            assert np.array_equal(ds["train_loss"].values[:, j], train)
            assert np.array_equal(ds["test_loss"].values[:, j], test)
    assert np.all(np.isfinite(ds["test_loss"].values))


def test_metrics_see_one_blas_thread_and_the_run_restores_the_setting(demo_problem):
    """Inside an observation every BLAS library runs on one thread; after the run the
    thread counts are what they were (also when they were set to 2 by hand)."""
    model, data = demo_problem
    seen: list[int] = []

    def threads_now(theta, model, data):
        seen.extend(blas_threads())
        return np.zeros(theta.shape[0])

    ctl = blas()
    with ctl.limit(limits=2):
        before = blas_threads()
        simulate_sgd(
            model, data, 0.1, n_steps=20, n_traj=2, save_steps=[0, 10, 20], seed=0,
            metrics=[Metric("blas_threads", threads_now)],
        )  # fmt: skip
        assert blas_threads() == before
    assert seen and set(seen) == {1}


def test_test_subsample_takes_a_fixed_subset_before_the_last_save_step_only():
    """test_subsample = m: the test loss before the last save step is the loss on m test
    examples drawn by default_rng(0).choice(n_test, m, replace=False); the last row (and
    every other variable) has the same bits as without it; m >= n_test is the whole set."""
    data = s.sparse_regression(20, 30, 3, n_test=200, seed=1)
    model = s.make_model("diagonal_linear", d=30)
    run = dict(n_steps=400, n_traj=3, save_steps=[0, 100, 250, 400], seed=2)
    full = simulate_sgd(model, data, 0.05, **run, save_params=True)
    sub = simulate_sgd(model, data, 0.05, **run, save_params=True, test_subsample=16)
    rows = np.sort(np.random.default_rng(0).choice(200, 16, replace=False))
    theta = full["params"].values  # (T, S, p)
    expected = np.stack(
        [
            mean_squared_residual(theta[:, j], model, data.X_test[rows], data.y_test[rows])
            for j in range(3)
        ],
        axis=1,
    )
    np.testing.assert_allclose(sub["test_loss"].values[:, :3], expected, rtol=1e-12)
    # the subset's loss differs from the whole set's (the check is not vacuous)
    assert not np.allclose(expected, full["test_loss"].values[:, :3], rtol=1e-3)
    np.testing.assert_array_equal(sub["test_loss"].values[:, 3], full["test_loss"].values[:, 3])
    for name in ("train_loss", "l0_norm", "l1_norm", "params"):
        np.testing.assert_array_equal(sub[name].values, full[name].values)
    assert sub["test_loss"].attrs["test_subsample"] == 16
    assert "test_subsample" not in full["test_loss"].attrs
    whole = simulate_sgd(model, data, 0.05, **run, save_params=True, test_subsample=200)
    np.testing.assert_array_equal(whole["test_loss"].values, full["test_loss"].values)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="test_subsample"):
            simulate_sgd(model, data, 0.05, **run, test_subsample=bad)
