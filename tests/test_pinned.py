"""Behaviour pinned before the refactor of issue 7 ("What must not change").

Each test here was written against a deliberate bug that passed the rest of the suite:

* seeding: trajectory t must use ``SeedSequence(seed).spawn(T)[t]``, spawned into the
  streams (init, batch, label_noise, brownian), as ``sgdsde.random`` documents;
* l0 counts |beta_i| strictly above the threshold (values exactly at it do not count);
* ``diverged_step`` is the true first bad step, the same for every engine and save grid;
* ``SGD(batch_size=n, with_replacement=True)`` samples n indices with replacement (not GD);
* a divergence that falls on a save point reads NaN there (and the point before is finite).

Ground truth is computed here, independently of the package: the documented seed
layout drawn by hand, and plain numpy gradient descent on linear regression.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sgdsde
from sgdsde.data import RegressionData
from sgdsde.metrics import l0_norm
from sgdsde.models import DiagonalLinearNet, LinearRegression
from sgdsde.random import trajectory_streams
from sgdsde.run.recording import masked
from sgdsde.sde import SOLVERS, GradientFlow, SGDNoise, simulate_sde

STREAM_ORDER = ("init", "batch", "label_noise", "brownian")  # documented in sgdsde.random
ENGINES = ("numba", "numpy", "torch")


def _generator(seq: np.random.SeedSequence) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seq))


def _children(seed: int, n_traj: int) -> list[np.random.SeedSequence]:
    """Fresh ``SeedSequence(seed).spawn(n_traj)`` (spawning is stateful: never reuse one)."""
    return np.random.SeedSequence(seed).spawn(n_traj)


def _documented_streams(seed: int, n_traj: int, t: int) -> dict[str, np.random.Generator]:
    """Trajectory t's generators exactly as documented, built without the package."""
    grandchildren = _children(seed, n_traj)[t].spawn(len(STREAM_ORDER))
    return {name: _generator(g) for name, g in zip(STREAM_ORDER, grandchildren, strict=True)}


@pytest.fixture(scope="module")
def linear_problem():
    """Linear regression f(x) = theta . x, n = 5 > d = 3, random init (uses "init")."""
    rng = np.random.default_rng(20240607)
    X = rng.standard_normal((5, 3))
    y = rng.standard_normal(5)
    return LinearRegression(d=3, init_scale=1.0), RegressionData(X, y, X[:2], y[:2])


# ------------------------------------------------------------------------------ a. seeds


def test_trajectory_streams_are_the_documented_children():
    seed, T = 11, 4
    streams = trajectory_streams(seed, T)
    assert tuple(streams) == STREAM_ORDER
    for t in range(T):
        want = _documented_streams(seed, T, t)
        for name in STREAM_ORDER:
            np.testing.assert_array_equal(streams[name][t].random(5), want[name].random(5))


def test_sgd_integer_seed_uses_the_documented_children(linear_problem):
    """Every step drawn by hand from the documented streams: theta_0 from "init"
    (init_scale * N(0, I)), the example i_k = floor(u_k n) from "batch", the label noise
    z_k from "label_noise"; theta_{k+1} = theta_k - eta (r_i + sqrt(delta) z_k) x_i."""
    model, data = linear_problem
    seed, T, eta, delta, K = 11, 3, 0.1, 0.04, 3
    ds = sgdsde.simulate_sgd(
        model,
        data,
        eta,
        n_steps=K,
        sgd=sgdsde.SGD(batch_size=1, label_noise=delta),
        n_traj=T,
        seed=seed,
        save_steps=np.arange(K + 1),
        save_params=True,
    )
    got = ds.params.values
    for t in range(T):
        rng = _documented_streams(seed, T, t)
        theta = rng["init"].standard_normal(model.d)
        np.testing.assert_array_equal(got[t, 0], theta)
        idx = np.minimum((rng["batch"].random(K) * data.n).astype(np.int64), data.n - 1)
        z = rng["label_noise"].standard_normal(K)
        for k in range(K):
            x = data.X[idx[k]]
            theta = theta - eta * (x @ theta - data.y[idx[k]] + math.sqrt(delta) * z[k]) * x
            np.testing.assert_allclose(got[t, k + 1], theta, rtol=1e-13, atol=1e-15)


def test_sgd_integer_seed_equals_explicit_per_trajectory_seeds(linear_problem):
    model, data = linear_problem
    seed, T = 5, 3
    kwargs = dict(n_steps=20, sgd=sgdsde.SGD(batch_size=2, label_noise=0.01), save_params=True)
    whole = sgdsde.simulate_sgd(model, data, 0.05, n_traj=T, seed=seed, **kwargs)
    listed = sgdsde.simulate_sgd(model, data, 0.05, seed=_children(seed, T), **kwargs)
    np.testing.assert_array_equal(whole.params.values, listed.params.values)
    for t in range(T):
        alone = sgdsde.simulate_sgd(model, data, 0.05, seed=[_children(seed, T)[t]], **kwargs)
        np.testing.assert_array_equal(whole.params.values[t], alone.params.values[0])
    # The trajectories are distinct (a constant child would pass the equalities above).
    final = whole.params.values[:, -1]
    assert not np.array_equal(final[0], final[1]) and not np.array_equal(final[1], final[2])


def _euler_solver():
    """The numpy-increments Euler-Maruyama solver (documented layout of the normals)."""
    return SOLVERS["euler_numba"]()


def test_sde_integer_seed_uses_the_documented_children(linear_problem):
    """One Euler-Maruyama step per save point drawn by hand: z_k (n normals) from
    "label_noise", u_k (n normals) from "brownian", dW_k = -sqrt(dt) (z_k, u_k, 0) and
    theta_{k+1} = theta_k - dt X^T r / n + G(theta_k) dW_k."""
    model, data = linear_problem
    seed, T, dt, K, n = 13, 3, 0.1, 2, data.n
    noise = SGDNoise(lr=dt, batch_size=2, label_noise=0.05)
    ds = simulate_sde(
        model,
        data,
        noise,
        dt=dt,
        n_steps=K,
        solver=_euler_solver(),
        n_traj=T,
        seed=seed,
        save_steps=np.arange(K + 1),
        save_params=True,
    )
    got = ds.params.values
    for t in range(T):
        rng = _documented_streams(seed, T, t)
        theta = rng["init"].standard_normal(model.d)
        np.testing.assert_array_equal(got[t, 0], theta)
        z = rng["label_noise"].standard_normal((K, n))
        u = rng["brownian"].standard_normal((K, n))
        for k in range(K):
            G = noise.diffusion_matrix(model, theta[None], data.X, data.y)[0]
            dW = -math.sqrt(dt) * np.concatenate([z[k], u[k], np.zeros(model.d)])
            drift = data.X.T @ (data.X @ theta - data.y) / n
            theta = theta - dt * drift + G @ dW
            np.testing.assert_allclose(got[t, k + 1], theta, rtol=1e-12, atol=1e-14)


def test_sde_integer_seed_equals_explicit_per_trajectory_seeds(linear_problem):
    model, data = linear_problem
    seed, T = 8, 3
    noise = SGDNoise(lr=0.05, batch_size=2, label_noise=0.02)

    def run(**kw):
        return simulate_sde(
            model, data, noise, dt=0.05, n_steps=15, solver=_euler_solver(), save_params=True, **kw
        ).params.values

    whole = run(n_traj=T, seed=seed)
    np.testing.assert_array_equal(whole, run(seed=_children(seed, T)))
    for t in range(T):
        np.testing.assert_array_equal(whole[t], run(seed=[_children(seed, T)[t]])[0])
    assert not np.array_equal(whole[0, -1], whole[1, -1])


def test_a_seed_sequence_passed_twice_gives_the_same_run(linear_problem):
    model, data = linear_problem
    root = np.random.SeedSequence(4)
    kwargs = dict(n_steps=3, n_traj=2, seed=root, save_params=True)
    first = sgdsde.simulate_sgd(model, data, 0.1, **kwargs).params.values
    second = sgdsde.simulate_sgd(model, data, 0.1, **kwargs).params.values
    np.testing.assert_array_equal(first, second)


# --------------------------------------------------------------------------- b. l0 count


def test_l0_norm_counts_strictly_above_the_threshold():
    beta = np.array([[0.25, -0.25, np.nextafter(0.25, 1.0), 0.0, -1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(l0_norm(beta, 0.25), [2, 0])
    np.testing.assert_array_equal(l0_norm(np.array([1e-50, -1e-50, 2e-50]), 1e-50), 1)
    np.testing.assert_array_equal(l0_norm(np.array([0.0, -0.0, 5e-324]), 0.0), 1)


def _no_data_needed(d):
    X = np.eye(d)
    return RegressionData(X, np.zeros(d), X, np.zeros(d))


@pytest.mark.parametrize("threshold", [0.25, 1e-50])
def test_recorded_l0_norm_excludes_entries_at_the_threshold(threshold):
    d = 5
    data = _no_data_needed(d)
    at = threshold
    theta0 = np.array([at, -at, 2 * at, 0.0, np.nextafter(at, 0.0)])  # beta = theta
    sgd_run = sgdsde.simulate_sgd(
        LinearRegression(d=d),
        data,
        0.1,
        n_steps=1,
        sgd=sgdsde.GD(),
        theta0=theta0,
        l0_threshold=threshold,
        save_steps=[0],
    )
    assert sgd_run.l0_norm.values[0, 0] == 1
    sde_run = simulate_sde(
        LinearRegression(d=d),
        data,
        GradientFlow(),
        dt=0.1,
        n_steps=1,
        theta0=theta0,
        l0_threshold=threshold,
        save_steps=[0],
    )
    assert sde_run.l0_norm.values[0, 0] == 1


def test_recorded_l0_norm_of_a_diagonal_net_at_the_threshold():
    """beta = u * v: 0.5 * 0.5 = 0.25 exactly, on the threshold (not counted)."""
    d = 3
    theta0 = np.array([0.5, 0.5, 1.0, 0.5, -0.5, 1.0])  # u, then v: beta = (.25, -.25, 1)
    ds = sgdsde.simulate_sgd(
        DiagonalLinearNet(d=d),
        _no_data_needed(d),
        0.1,
        n_steps=1,
        sgd=sgdsde.GD(),
        theta0=theta0,
        l0_threshold=0.25,
        save_steps=[0],
    )
    assert ds.l0_norm.values[0, 0] == 1


# ----------------------------------------------------------- c, e. divergence, recording


@pytest.fixture(scope="module")
def diverging():
    """GD on linear regression at eta = 3 / lambda_max: the top mode grows 2x per step.

    Returns the problem, eta, the step K at which divergence happens, and the bounds on
    the loss that make K the first bad step: ``max_loss_sgd`` for exact SGD (which
    checks each sampled r_i^2 / 2) and ``max_loss_sde`` for the SDE solvers (which check
    the training loss), each the geometric mean of the quantity at K - 1 and at K so that
    round-off cannot move the crossing. ``train_loss[k]`` is the reference loss at step k.
    """
    rng = np.random.default_rng(7)
    n, d = 4, 2
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    data = RegressionData(X, y, X, y)
    eta = 3.0 / np.linalg.eigvalsh(X.T @ X / n).max()
    K, n_steps = 12, 30
    theta = np.zeros(d)
    worst, train = [], []
    for _ in range(n_steps + 1):
        r = X @ theta - y
        worst.append(0.5 * np.max(r * r))
        train.append(0.5 * np.mean(r * r))
        theta = theta - eta * X.T @ r / n
    worst, train = np.array(worst), np.array(train)
    bounds = {}
    for key, values in (("max_loss_sgd", worst), ("max_loss_sde", train)):
        bound = math.sqrt(values[K - 1] * values[K])
        assert values[:K].max() < bound / 1.5 and values[K] > 1.5 * bound  # K is the crossing
        bounds[key] = bound
    return dict(
        model=LinearRegression(d=d),
        data=data,
        eta=float(eta),
        K=K,
        n_steps=n_steps,
        train_loss=train,
        **bounds,
    )


def _grids(K, n_steps):
    return {
        "dense": np.arange(n_steps + 1),
        "sparse": np.array([0, n_steps]),
        "around": np.array([0, K - 1, K, n_steps]),
        "after": np.array([0, K + 3, n_steps]),
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_diverged_step_is_the_true_step_for_every_engine_and_grid(diverging, engine):
    v = diverging
    for name, grid in _grids(v["K"], v["n_steps"]).items():
        ds = sgdsde.simulate_sgd(
            v["model"],
            v["data"],
            v["eta"],
            n_steps=v["n_steps"],
            sgd=sgdsde.GD(),
            max_loss=v["max_loss_sgd"],
            save_steps=grid,
            engine=engine,
        )
        assert ds.diverged_step.values.tolist() == [v["K"]], f"{engine}, {name} grid"
        assert ds.diverged.values.tolist() == [True]


def test_sampled_sgd_diverged_steps_agree_across_engines_and_grids(diverging):
    """Minibatch SGD with label noise: several trajectories diverge at different steps;
    every engine and save grid reports the same steps."""
    v = diverging
    n_steps = v["n_steps"]
    kwargs = dict(
        n_steps=n_steps,
        sgd=sgdsde.SGD(batch_size=2, label_noise=0.01),
        seed=3,
        max_loss=v["max_loss_sgd"],
    )
    lrs = [v["eta"] * f for f in (1.0, 1.3, 1.6, 0.2)]
    reference = None
    for engine in ENGINES:
        for grid in (np.arange(n_steps + 1), np.array([0, n_steps]), np.array([0, 5, n_steps])):
            ds = sgdsde.simulate_sgd(
                v["model"], v["data"], lrs, save_steps=grid, engine=engine, **kwargs
            )
            steps = ds.diverged_step.values
            if reference is None:
                reference = steps
                assert np.sum(reference >= 0) >= 2 and reference[3] == -1
                assert not set(reference.tolist()) & {0, 5, n_steps}  # not on a sparse point
            np.testing.assert_array_equal(steps, reference, err_msg=f"{engine}, grid {grid}")


def test_sde_diverged_step_is_the_true_step_for_every_grid(diverging):
    """Gradient flow at dt = eta is GD: the solvers flag the step whose training loss
    first exceeds max_loss."""
    v = diverging
    for solver in ("euler_numba", "euler_torch"):
        for name, grid in _grids(v["K"], v["n_steps"]).items():
            ds = simulate_sde(
                v["model"],
                v["data"],
                GradientFlow(),
                dt=v["eta"],
                n_steps=v["n_steps"],
                solver=SOLVERS[solver](),
                max_loss=v["max_loss_sde"],
                save_steps=grid,
            )
            assert ds.diverged_step.values.tolist() == [v["K"]], f"{solver}, {name} grid"


@pytest.mark.parametrize("engine", ENGINES)
def test_divergence_on_a_save_point_reads_nan_there(diverging, engine):
    v = diverging
    K = v["K"]
    ds = sgdsde.simulate_sgd(
        v["model"],
        v["data"],
        v["eta"],
        n_steps=v["n_steps"],
        sgd=sgdsde.GD(),
        max_loss=v["max_loss_sgd"],
        save_steps=[0, K - 1, K, v["n_steps"]],
        save_params=True,
        engine=engine,
    )
    assert ds.diverged_step.values.tolist() == [K]
    train = ds.train_loss.values[0]
    np.testing.assert_allclose(train[:2], v["train_loss"][[0, K - 1]], rtol=1e-12)
    assert np.all(np.isnan(train[2:]))
    for name in ("test_loss", "l0_norm", "l1_norm", "param_norm"):
        # counts are int64 holding NOT_RECORDED (-1) where a float reads NaN
        values = masked(ds[name]).values[0]
        assert np.all(np.isfinite(values[:2])) and np.all(np.isnan(values[2:])), name
    params = ds.params.values[0]
    assert np.all(np.isfinite(params[:2])) and np.all(np.isnan(params[2:]))


def test_sde_divergence_on_a_save_point_reads_nan_there(diverging):
    v = diverging
    K = v["K"]
    ds = simulate_sde(
        v["model"],
        v["data"],
        GradientFlow(),
        dt=v["eta"],
        n_steps=v["n_steps"],
        solver=_euler_solver(),
        max_loss=v["max_loss_sde"],
        save_steps=[0, K - 1, K, v["n_steps"]],
        save_params=True,
    )
    assert ds.diverged_step.values.tolist() == [K]
    train = ds.train_loss.values[0]
    np.testing.assert_allclose(train[:2], v["train_loss"][[0, K - 1]], rtol=1e-12)
    assert np.all(np.isnan(train[2:]))
    assert np.all(np.isfinite(ds.params.values[0, :2])) and np.all(
        np.isnan(ds.params.values[0, 2:])
    )


def test_divergence_at_step_zero_reads_nan_at_step_zero(diverging):
    """theta_0 already above max_loss: flagged at step 0, and step 0 reads NaN."""
    v = diverging
    ds = sgdsde.simulate_sgd(
        v["model"],
        v["data"],
        0.01,
        n_steps=5,
        sgd=sgdsde.GD(),
        theta0=np.full(2, 1e3),
        max_loss=1.0,
        save_steps=[0, 5],
    )
    assert ds.diverged_step.values.tolist() == [0]
    assert np.all(np.isnan(ds.train_loss.values))


# ------------------------------------------------- d. full batches with replacement


@pytest.fixture(scope="module")
def independent_rows():
    """n = 4 <= d = 6 examples with linearly independent x_i and theta_0 = 0, so that one
    SGD step determines how many times each example was drawn."""
    rng = np.random.default_rng(11)
    n, d = 4, 6
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n) + 2.0  # residuals r = -y far from 0
    return LinearRegression(d=d), RegressionData(X, y, X, y)


def _draw_counts(data, theta0, theta1, eta):
    """c_i = times example i was drawn, from theta_1 = theta_0 - eta/B X^T (c * r), B = n."""
    n = data.n
    r = data.X @ theta0 - data.y
    weighted, *_ = np.linalg.lstsq(data.X.T, (theta0 - theta1) * n / eta, rcond=None)
    return weighted / r


@pytest.mark.parametrize("engine", ENGINES)
def test_full_batch_with_replacement_samples_with_replacement(independent_rows, engine):
    model, data = independent_rows
    n, eta, T, seed = data.n, 0.1, 400, 3
    ds = sgdsde.simulate_sgd(
        model,
        data,
        eta,
        n_steps=1,
        sgd=sgdsde.SGD(batch_size=n, with_replacement=True),
        n_traj=T,
        seed=seed,
        save_steps=[0, 1],
        save_params=True,
        engine=engine,
    )
    theta0, theta1 = ds.params.values[:, 0], ds.params.values[:, 1]
    counts = np.array([_draw_counts(data, theta0[t], theta1[t], eta) for t in range(T)])
    rounded = np.rint(counts)
    np.testing.assert_allclose(counts, rounded, atol=1e-9)
    assert np.all(rounded.sum(axis=1) == n) and np.all(rounded >= 0)
    # Exactly the documented draws: i = floor(u n) for n doubles u of the "batch" stream.
    for t in range(5):
        u = _documented_streams(seed, T, t)["batch"].random(n)
        drawn = np.minimum((u * n).astype(np.int64), n - 1)
        np.testing.assert_array_equal(rounded[t], np.bincount(drawn, minlength=n))
    # Frequencies: P(all distinct) = n!/n^n, P(example 0 not drawn) = (1 - 1/n)^n;
    # T independent trajectories, tolerance 4.5 binomial standard errors.
    for observed, p in (
        (np.mean(np.all(rounded == 1, axis=1)), math.factorial(n) / n**n),
        (np.mean(rounded[:, 0] == 0), (1 - 1 / n) ** n),
    ):
        assert abs(observed - p) < 4.5 * math.sqrt(p * (1 - p) / T)


def test_full_batch_with_replacement_differs_between_seeds_and_from_gd(independent_rows):
    model, data = independent_rows
    n = data.n

    def first_step(sgd, seed):
        ds = sgdsde.simulate_sgd(
            model, data, 0.1, n_steps=1, sgd=sgd, seed=seed, save_steps=[1], save_params=True
        )
        return ds.params.values[0, 0]

    with_replacement = sgdsde.SGD(batch_size=n, with_replacement=True)
    gd = first_step(sgdsde.GD(), 1)
    np.testing.assert_array_equal(gd, first_step(sgdsde.GD(), 2))  # GD ignores the seed
    draws = [first_step(with_replacement, seed) for seed in (1, 2, 4)]
    # With 4 examples, 3 seeds all equal to GD by chance has probability (24/256)^3.
    assert not all(np.allclose(d, gd) for d in draws)
    assert not (np.array_equal(draws[0], draws[1]) and np.array_equal(draws[1], draws[2]))
