"""The torchsde adapter: diffusion products, Ornstein-Uhlenbeck moments, seeds, methods,
divergence, and agreement in law with the hand-written Euler-Maruyama solvers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdsde.data import RegressionData, sparse_regression
from sgdsde.models import DiagonalLinearNet, make_model
from sgdsde.random import trajectory_streams
from sgdsde.sde.noise import GradientFlow, Isotropic, LabelNoise, SGDCovariance
from sgdsde.sde.solvers.base import SDEProblem
from sgdsde.sde.solvers.torchsde_adapter import ModelSDE, TorchsdeSolver

# Monte Carlo tolerance in standard errors. Each test makes at most ~20 comparisons of
# (near-)Gaussian estimators with a fixed seed; 5 SE keeps the false-alarm rate of any
# seed below ~1e-5 while still catching a wrong constant (sqrt 2, a factor n, ...).
K_SE = 5.0


def _small_problem(n=6, d=4, seed=1):
    return sparse_regression(n=n, d=d, k=2, n_test=5, seed=seed)


def _run(solver, problem, theta0, seed, save=(None,)):
    T = theta0.shape[0]
    state = solver.init(problem, theta0, trajectory_streams(seed, T))
    div = np.full(T, -1, dtype=np.int64)
    k = 0
    for k1 in save:
        k1 = problem.n_steps if k1 is None else k1
        solver.advance(state, k, k1, div)
        k = k1
    return solver.params(state).copy(), div


# ------------------------------------------------------------------ diffusion products
@pytest.mark.parametrize(
    "noise",
    [LabelNoise(0.1, 0.05, 2), SGDCovariance(0.05, 2), Isotropic(0.3)],
    ids=["label", "sgd_covariance", "isotropic"],
)
def test_g_prod_matches_full_matrix_and_noise_model(noise):
    data = _small_problem()
    model = DiagonalLinearNet(d=4)
    T = 3
    rng = np.random.default_rng(0)
    theta = rng.standard_normal((T, model.n_params))
    coeffs = noise.coefficients(data.n, T)
    sde = ModelSDE(model, data.X, data.y, coeffs)  # all m = 2n + p columns
    assert sde.brownian_size == 2 * data.n + model.n_params
    y = torch.as_tensor(theta)
    v = torch.as_tensor(rng.standard_normal((T, sde.brownian_size)))
    G = sde.g(0.0, y).numpy()
    G_ref = noise.diffusion_matrix(model, theta, data.X, data.y)
    np.testing.assert_allclose(G, G_ref, rtol=1e-12, atol=1e-14)
    gv = sde.g_prod(0.0, y, v).numpy()
    np.testing.assert_allclose(gv, np.einsum("tpm,tm->tp", G, v.numpy()), atol=1e-13)
    np.testing.assert_allclose(gv, np.einsum("tpm,tm->tp", G_ref, v.numpy()), atol=1e-13)
    drift, gv2 = sde.f_and_g_prod(0.0, y, v)
    np.testing.assert_allclose(gv2.numpy(), gv, atol=1e-15)
    np.testing.assert_allclose(drift.numpy(), -model.grad(theta, data.X, data.y), atol=1e-13)
    np.testing.assert_allclose(sde.f(0.0, y).numpy(), drift.numpy(), atol=1e-15)

    # The solver's module keeps only the used channels, in the same column order.
    pb = SDEProblem(model, data, coeffs, dt=0.01, n_steps=1)
    active = TorchsdeSolver().make_sde(pb)
    wl, ws, wi = pb.widths()
    n = data.n
    cols = np.r_[np.arange(wl), n + np.arange(ws), 2 * n + np.arange(wi)]
    np.testing.assert_allclose(active.g(0.0, y).numpy(), G_ref[:, :, cols], atol=1e-14)
    np.testing.assert_allclose(active.g_prod(0.0, y, v[:, cols]).numpy(), gv, atol=1e-13)


# ------------------------------------------------------------- Ornstein-Uhlenbeck law
def _ou_setup():
    rng = np.random.default_rng(7)
    n, d = 8, 3
    X = rng.standard_normal((n, d))
    y = X @ np.array([1.0, -0.5, 0.25]) + 0.3 * rng.standard_normal(n)
    data = RegressionData(X, y, X[:2], y[:2])
    model = make_model("linear_regression", d=d)
    return model, data


def _ou_moments(H, theta_star, theta0, a2XtX, t=None, dt=None, steps=None):
    """Mean and covariance at time t of d theta = -H (theta - theta*) dt + sqrt(Q) dW
    (continuous, if t is given) or after ``steps`` Euler-Maruyama steps of size dt."""
    lam, Q = np.linalg.eigh(H)
    q = Q.T @ a2XtX @ Q  # noise covariance in the eigenbasis
    e0 = Q.T @ (theta0 - theta_star)
    if t is not None:
        decay = np.exp(-lam * t)
        li, lj = lam[:, None], lam[None, :]
        cov_e = q * (1 - np.exp(-(li + lj) * t)) / (li + lj)
    else:
        decay = (1 - dt * lam) ** steps
        m = 1 - dt * lam
        ratio = m[:, None] * m[None, :]
        cov_e = q * dt * (1 - ratio**steps) / (1 - ratio)
    return theta_star + Q @ (decay * e0), Q @ cov_e @ Q.T


@pytest.mark.parametrize("method,noise_name", [("euler", "label"), ("srk", "iso")])
def test_ornstein_uhlenbeck_moments(method, noise_name):
    model, data = _ou_setup()
    n, d = data.X.shape
    H = data.X.T @ data.X / n
    theta_star = np.linalg.solve(data.X.T @ data.X, data.X.T @ data.y)
    theta0 = np.array([0.5, 0.5, -0.5])
    T, dt, steps = 4000, 0.02, 50
    if noise_name == "label":
        noise = LabelNoise(delta=0.5, lr=0.2, batch_size=n)
        a = noise.coefficients(n, 1).label[0]
        Q = a**2 * data.X.T @ data.X
    else:
        noise = Isotropic(0.2)
        Q = 0.2**2 * np.eye(d)
    pb = SDEProblem(model, data, noise.coefficients(n, T), dt=dt, n_steps=steps)
    theta, div = _run(TorchsdeSolver(method=method), pb, np.tile(theta0, (T, 1)), seed=3)
    assert np.all(div == -1)
    mean, cov = _ou_moments(H, theta_star, theta0, Q, t=dt * steps)
    mean_em, cov_em = _ou_moments(H, theta_star, theta0, Q, dt=dt, steps=steps)
    # The exact O(dt) bias of Euler-Maruyama (for srk, whose bias is smaller, a bound).
    bias_mean = np.abs(mean_em - mean)
    bias_var = np.abs(np.diag(cov_em) - np.diag(cov))
    var = np.diag(cov)
    se_mean = np.sqrt(np.maximum(var, np.diag(cov_em)) / T)
    se_var = np.maximum(var, np.diag(cov_em)) * np.sqrt(2.0 / (T - 1))
    assert np.all(np.abs(theta.mean(0) - mean) <= K_SE * se_mean + bias_mean)
    assert np.all(np.abs(theta.var(0, ddof=1) - var) <= K_SE * se_var + bias_var)
    # Sanity of the test itself: the bias allowance is small against the quantities.
    assert np.all(bias_var < 0.1 * var)


# ------------------------------------------------------------------ reproducibility
def test_same_seed_same_result_and_seed_matters():
    data = _small_problem()
    model = DiagonalLinearNet(d=4)
    T = 16
    pb = SDEProblem(model, data, LabelNoise(0.1, 0.05, 2).coefficients(data.n, T), 0.01, n_steps=40)
    theta0 = model.init([None] * T)
    a, _ = _run(TorchsdeSolver(), pb, theta0, seed=11, save=(10, 25, None))
    b, _ = _run(TorchsdeSolver(), pb, theta0, seed=11, save=(10, 25, None))
    c, _ = _run(TorchsdeSolver(), pb, theta0, seed=12, save=(10, 25, None))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    f32, _ = _run(TorchsdeSolver(dtype="float32"), pb, theta0, seed=11, save=(10, 25, None))
    f32b, _ = _run(TorchsdeSolver(dtype="float32"), pb, theta0, seed=11, save=(10, 25, None))
    np.testing.assert_array_equal(f32, f32b)
    assert np.all(np.isfinite(f32))


# ---------------------------------------------------------------------- validation
def test_bad_method_raises():
    with pytest.raises(ValueError, match="choose one of"):
        TorchsdeSolver(method="rk4")
    with pytest.raises(ValueError, match="dtype"):
        TorchsdeSolver(dtype="float16")
    data = _small_problem()
    model = DiagonalLinearNet(d=4)
    for noise in (LabelNoise(0.1, 0.05, 2), SGDCovariance(0.05, 2)):
        pb = SDEProblem(model, data, noise.coefficients(data.n, 2), 0.01, n_steps=5)
        for method in ("milstein", "srk"):
            with pytest.raises(ValueError, match=r"allowed methods are \['euler'\]"):
                TorchsdeSolver(method=method).init(
                    pb, model.init([None] * 2), trajectory_streams(0, 2)
                )
    # Additive noise (isotropic only) and no noise admit all three.
    for noise in (Isotropic(0.1), GradientFlow()):
        pb = SDEProblem(model, data, noise.coefficients(data.n, 2), 0.01, n_steps=5)
        for method in ("euler", "milstein", "srk"):
            theta, div = _run(TorchsdeSolver(method=method), pb, model.init([None] * 2), 0)
            assert np.all(np.isfinite(theta)) and np.all(div == -1)


def test_gradient_flow_has_no_noise():
    data = _small_problem()
    model = DiagonalLinearNet(d=4)
    pb = SDEProblem(model, data, GradientFlow().coefficients(data.n, 3), 0.01, n_steps=20)
    theta0 = np.tile(model.init([None])[0], (3, 1))
    theta, _ = _run(TorchsdeSolver(), pb, theta0, seed=0)
    np.testing.assert_allclose(theta, np.tile(theta[0], (3, 1)), atol=0)
    # ... and is plain gradient descent at step dt.
    ref = theta0.copy()
    for _ in range(20):
        ref = ref - 0.01 * model.grad(ref, data.X, data.y)
    np.testing.assert_allclose(theta, ref, atol=1e-13)


def test_divergence_frozen_at_save_points():
    model, data = _ou_setup()
    n = data.n
    lam_max = np.linalg.eigvalsh(data.X.T @ data.X / n)[-1]
    dt = 3.0 / lam_max  # EM unstable: |1 - dt lam_max| = 2
    T = 3
    pb = SDEProblem(model, data, Isotropic(0.01).coefficients(n, T), dt, max_loss=1e6, n_steps=60)
    theta0 = np.zeros((T, 3))
    theta0[2] = 1e6  # bad from the start
    state = TorchsdeSolver().init(pb, theta0, trajectory_streams(0, T))
    div = np.full(T, -1, dtype=np.int64)
    solver = TorchsdeSolver()
    solver.advance(state, 0, 5, div)
    assert div[2] == 0 and div[0] == -1
    last_good = solver.params(state).copy()
    for k0, k1 in ((5, 10), (10, 60)):
        before = solver.params(state).copy()
        solver.advance(state, k0, k1, div)
        if div[0] == k1:
            last_good = before
    assert div[0] > 0 and div[1] > 0
    theta = solver.params(state)
    assert np.all(np.isfinite(theta))
    np.testing.assert_array_equal(theta[2], theta0[2])  # never moved
    np.testing.assert_array_equal(theta[0], last_good[0])  # restored to last save point
    assert np.all(model.loss(theta[:2], data.X, data.y) <= pb.max_loss)


# --------------------------------------------- agreement with the Euler-Maruyama solvers
def test_solvers_agree_in_law_with_numba_and_torch_em():
    from sgdsde.sde import simulate_sde

    data = sparse_regression(n=10, d=8, k=2, n_test=5, seed=2)
    model = DiagonalLinearNet(d=8, alpha=0.3)
    noise = LabelNoise(delta=0.5, lr=0.05, batch_size=2)
    T, dt, steps = 1500, 0.05, 60
    runs = {}
    for name, solver in (
        ("euler_numba", "euler_numba"),
        ("euler_torch", "euler_torch"),
        ("torchsde", TorchsdeSolver()),
    ):
        ds = simulate_sde(
            model,
            data,
            noise,
            dt=dt,
            n_steps=steps,
            solver=solver,
            n_traj=T,
            seed=5,
            save_steps=[0, steps],
            save_params=True,
        )
        assert int((ds["diverged_step"] >= 0).sum()) == 0
        final = ds.isel(step=-1)
        runs[name] = np.column_stack([final["train_loss"].values, final["params"].values])
    # numba and torch EM use the same numbers: equal to round-off.
    np.testing.assert_allclose(runs["euler_torch"], runs["euler_numba"], rtol=1e-9, atol=1e-12)
    # torchsde uses its own Brownian path: equal in law (independent samples).
    a, b = runs["torchsde"], runs["euler_numba"]
    se_mean = np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / T)
    assert np.all(np.abs(a.mean(0) - b.mean(0)) <= K_SE * se_mean + 1e-12)
    # Variance: SE of a sample variance ~ sigma^2 sqrt(2 / (T - 1)) (+ kurtosis slack 1.5x).
    va, vb = a.var(0, ddof=1), b.var(0, ddof=1)
    se_var = 1.5 * np.sqrt(2.0 / (T - 1)) * np.sqrt(va**2 + vb**2)
    assert np.all(np.abs(va - vb) <= K_SE * se_var + 1e-15)
