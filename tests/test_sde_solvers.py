"""SDE solvers: exact identities (label-noise GD and SVAG are Euler-Maruyama), convergence
orders on closed-form SDEs, numba/torch agreement, divergence isolation, reproducibility,
output format and validation.

Tolerances. Identities driven by the same numbers are checked to round-off. Monte Carlo
checks compare against closed forms within K_SE = 4 standard errors (estimated from the
sample, fixed seeds, no retries). Order fits use common random numbers (coarse
increments are sums of fine ones) against a reference driven by the same Brownian path,
so the Monte Carlo error of each error estimate is checked to be below a tenth of the
estimate itself before the slope (within 0.2 of theory) is fitted.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numba
import numpy as np
import pytest
from scipy.linalg import expm

from sgdsde import GD, load_dataset, save_dataset, simulate_sgd, sparse_regression
from sgdsde.data import RegressionData
from sgdsde.models import DiagonalLinearNet, LinearRegression
from sgdsde.random import trajectory_streams
from sgdsde.sde import (
    SOLVERS,
    EulerMaruyamaGEMM,
    EulerMaruyamaNumba,
    EulerMaruyamaTorch,
    GradientFlow,
    Isotropic,
    LabelNoise,
    NoiseCoefficients,
    NoiseModel,
    SGDCovariance,
    XoshiroIncrements,
    simulate_sde,
)
from sgdsde.sde.solvers.base import Increments, SDEProblem
from sgdsde.sde.solvers.euler_numba import em_steps_numba

K_SE = 4.0  # Monte Carlo checks: |estimate - truth| <= K_SE standard errors
SLOPE_TOL = 0.2
# The registered solvers of noise models (those of SDETerms: tests/test_sde_terms.py).
NOISE_SOLVERS = {n: cls for n, cls in SOLVERS.items() if not cls.takes_terms}
# Every such solver whose trajectories depend only on their own seeds.
PER_TRAJECTORY = sorted(n for n, cls in NOISE_SOLVERS.items() if cls().increments.per_trajectory)
# Every such solver whose default increments are the very normals of label-noise GD.
COUPLED_TO_GD = sorted(n for n, cls in NOISE_SOLVERS.items() if cls().increments.couples_to_gd)


@pytest.fixture(scope="module")
def dln():
    data = sparse_regression(n=20, d=30, k=3, n_test=50, seed=1)
    return DiagonalLinearNet(d=30, alpha=0.3), data


@dataclasses.dataclass(frozen=True)
class AllChannels(NoiseModel):
    """Test-only noise using the label, sgd and isotropic channels at once (per-trajectory
    coefficients that depend on the trajectory index only)."""

    scale: float = 1.0
    name = "all_channels"

    def coefficients(self, n, n_traj):
        base = np.arange(1, n_traj + 1, dtype=np.float64)
        return NoiseCoefficients(
            self.scale * 0.004 * base, self.scale * 0.02 / base, self.scale * 0.001 * base
        )


def _final(ds, name="params"):
    return ds[name].isel(step=-1).values


# ------------------------------------------------------------------ (i) identity


@pytest.mark.parametrize("solver", COUPLED_TO_GD)
def test_label_noise_gd_is_euler_maruyama_at_dt_eta(dln, solver):
    """GD with label noise delta at step eta == EM of LabelNoise(delta, eta, n) at dt = eta,
    driven by the same "label_noise" normals: equal to round-off."""
    assert COUPLED_TO_GD == ["euler_numba", "euler_torch"]
    model, data = dln
    eta, n_steps, delta = 0.1, 200, [0.05, 0.2, 0.0]
    save = np.arange(0, n_steps + 1, 20)
    sgd = simulate_sgd(
        model,
        data,
        eta,
        n_steps=n_steps,
        sgd=GD(delta),
        seed=7,
        n_traj=3,
        save_params=True,
        save_steps=save,
    )
    sde = simulate_sde(
        model,
        data,
        LabelNoise(delta, eta, data.n),
        dt=eta,
        n_steps=n_steps,
        seed=7,
        solver=solver,
        save_params=True,
        save_steps=save,
    )
    assert not sgd.diverged.any() and not sde.diverged.any()
    np.testing.assert_array_equal(sgd.step, sde.step)
    np.testing.assert_allclose(sde.time, sgd.time, rtol=1e-12)
    np.testing.assert_allclose(sde.train_loss, sgd.train_loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sde.params, sgd.params, rtol=1e-10, atol=1e-12)
    # the noise matters: the noisy trajectories end far from the noiseless one
    assert np.abs(_final(sde)[0] - _final(sde)[2]).max() > 1e-3


# --------------------------------------------------------------------- (ii) SVAG


def test_svag_is_euler_maruyama_at_dt_eta_over_l(dln):
    """SVAG(l): theta <- theta - (eta/l)(r1 g1 + r2 g2), r_{1,2} = (1 +- sqrt(2l-1))/2,
    g_k = (1/n) sum_i (r_i + sqrt(delta) z_{k,i}) grad f(x_i) two independent label-noise
    gradients, equals EM of LabelNoise(delta, eta, n) at dt = eta/l driven by
    z = (r1 z1 + r2 z2)/sqrt(l) (a standard normal since r1^2 + r2^2 = l)."""
    model, data = dln
    eta, delta, ell, n_steps, T = 0.1, 0.2, 4, 200, 2
    r1, r2 = (1 + math.sqrt(2 * ell - 1)) / 2, (1 - math.sqrt(2 * ell - 1)) / 2
    assert math.isclose(r1 + r2, 1.0) and math.isclose(r1**2 + r2**2, ell)
    n = data.n
    rng = np.random.default_rng(11)
    z1 = rng.standard_normal((T, n_steps, n))
    z2 = rng.standard_normal((T, n_steps, n))
    theta0 = model.init(trajectory_streams(0, T)["init"])

    def label_noise_gradient(theta, z):
        """(1/n) sum_i (r_i + sqrt(delta) z_i) grad f(x_i) for beta = u * v, in numpy."""
        u, v = theta[:, : data.d], theta[:, data.d :]
        res = (u * v) @ data.X.T - data.y
        back = ((res + math.sqrt(delta) * z) / n) @ data.X  # X^T w, per trajectory
        return np.concatenate([back * v, back * u], axis=1)

    theta = theta0.copy()
    for k in range(n_steps):
        g1 = label_noise_gradient(theta, z1[:, k])
        g2 = label_noise_gradient(theta, z2[:, k])
        theta = theta - eta / ell * (r1 * g1 + r2 * g2)

    z = (r1 * z1 + r2 * z2) / math.sqrt(ell)
    empty = np.zeros((T, n_steps, 0))
    problem = SDEProblem(model, data, LabelNoise(delta, eta, n).coefficients(n, T), eta / ell)
    em = em_steps_numba(problem, theta0.copy(), Increments(0, z, empty, empty))
    np.testing.assert_allclose(em, theta, rtol=1e-10, atol=1e-12)
    assert np.abs(theta - theta0).max() > 1e-3


# ------------------------------------------------------- (iii) orders: OU process


@pytest.fixture(scope="module")
def ou():
    """LinearRegression with label noise: d theta = -H (theta - theta*) dt + a X^T dW,
    an Ornstein-Uhlenbeck process with additive noise (H = X^T X / n)."""
    X = np.array([[1.0, 0.5], [0.3, -1.2], [-0.8, 0.9]])
    y = np.array([0.7, -0.4, 1.1])
    n = X.shape[0]
    data = RegressionData(X, y, X, y)
    model = LinearRegression(d=2)
    H = X.T @ X / n
    theta_star = np.linalg.solve(H, X.T @ y / n)
    theta0 = theta_star + np.array([2.0, -1.5])
    noise = LabelNoise(1.0, 0.5, n)
    return model, data, H, theta_star, theta0, noise


def _ou_exact_moments(H, theta_star, theta0, a, n, t):
    """Mean theta* + e^{-Ht}(theta0 - theta*) and covariance (a^2 n / 2)(I - e^{-2Ht})
    (from GG^T = a^2 X^T X = a^2 n H)."""
    mean = theta_star + expm(-H * t) @ (theta0 - theta_star)
    cov = a * a * n / 2 * (np.eye(len(theta0)) - expm(-2 * H * t))
    return mean, cov


def _ou_em_moments(H, theta_star, theta0, a, n, dt, k):
    """Exact moments of the EM chain: A = I - H dt, m_k = theta* + A^k (theta0 - theta*),
    C_{k+1} = A C_k A^T + a^2 n H dt."""
    A = np.eye(len(theta0)) - H * dt
    mean = theta_star + np.linalg.matrix_power(A, k) @ (theta0 - theta_star)
    cov = np.zeros_like(H)
    for _ in range(k):
        cov = A @ cov @ A.T + a * a * n * H * dt
    return mean, cov


def test_ou_orders_weak_1_strong_1(ou):
    """EM on the OU process of LinearRegression + label noise.

    Weak order 1 (test functions theta_0 and |theta|^2 at t = 1) and strong order 1:
    with additive noise Euler-Maruyama coincides with Milstein, so its strong order is
    1.0, not the general 0.5. Reference: Y = m(t) + sum_k e^{-H(t - t_k - h/2)} G dW_k
    on the fine grid h, driven by the same increments: E Y = m(t) exactly and its
    covariance is a closed-form Riemann sum, so weak errors are
    mean(phi(X_dt) - phi(Y)) + (E phi(Y) - E phi(X_t)), with a Monte Carlo error far
    below the error itself (checked), and the strong error is rms(X_dt - Y).
    """
    model, data, H, theta_star, theta0, noise = ou
    n, t_end, n_fine, M = data.n, 1.0, 512, 4000
    h = t_end / n_fine
    coef = noise.coefficients(n, M)
    a = coef.label[0]
    G = a * data.X.T
    zf = np.random.default_rng(0).standard_normal((M, n_fine, n))
    mean, cov = _ou_exact_moments(H, theta_star, theta0, a, n, t_end)
    weights = np.stack([expm(-H * (t_end - k * h - h / 2)) for k in range(n_fine)])
    Y = mean + np.einsum("kpq,qi,mki->mp", weights, G, -math.sqrt(h) * zf)
    cov_Y = sum(h * w @ G @ G.T @ w.T for w in weights)
    bias_Y2 = np.trace(cov_Y) - np.trace(cov)  # E|Y|^2 - E|X_t|^2 (tiny, exact)

    dts, weak1, weak2, strong = [], [], [], []
    for ell in (8, 16, 32, 64, 128):
        dt, k = ell * h, n_fine // ell
        z = zf.reshape(M, k, ell, n).sum(axis=2) / math.sqrt(ell)
        empty = np.zeros((M, k, 0))
        theta = np.repeat(theta0[None], M, axis=0)
        em_steps_numba(SDEProblem(model, data, coef, dt), theta, Increments(0, z, empty, empty))
        d1 = theta[:, 0] - Y[:, 0]
        d2 = (theta**2).sum(1) - (Y**2).sum(1)
        e1, e2 = d1.mean(), d2.mean() + bias_Y2
        se1, se2 = d1.std(ddof=1) / math.sqrt(M), d2.std(ddof=1) / math.sqrt(M)
        assert se1 < 0.1 * abs(e1) and se2 < 0.1 * abs(e2), (dt, e1, se1, e2, se2)
        # and the estimates match the EM chain's exact moments
        m_em, c_em = _ou_em_moments(H, theta_star, theta0, a, n, dt, k)
        assert abs(e1 - (m_em[0] - mean[0])) <= K_SE * se1
        exact_e2 = m_em @ m_em + np.trace(c_em) - mean @ mean - np.trace(cov)
        assert abs(e2 - exact_e2) <= K_SE * se2
        dts.append(dt)
        weak1.append(abs(e1))
        weak2.append(abs(e2))
        strong.append(math.sqrt(((theta - Y) ** 2).sum(1).mean()))
    log_dt = np.log(dts)
    for errors, order in ((weak1, 1.0), (weak2, 1.0), (strong, 1.0)):
        slope = np.polyfit(log_dt, np.log(errors), 1)[0]
        assert abs(slope - order) < SLOPE_TOL, (slope, order, errors)


def test_isotropic_ou_strong_order_is_the_solvers_value(ou):
    """Additive noise in the sense of ``Solver.strong_order``: LinearRegression with
    ``Isotropic(s)`` is d theta = -H (theta - theta*) dt + s dW, W in R^p. The fitted strong
    order of Euler-Maruyama (rms error against Y = m(t) + sum_k e^{-H(t - t_k - h/2)} s dW_k
    on the same fine path, as in the label-noise OU test) is the method's value, 1, while
    on label noise (a data channel) the method says 0.5."""
    model, data, H, theta_star, theta0, _ = ou
    p, t_end, n_fine, M, s_iso = 2, 1.0, 512, 2000, 0.7
    h = t_end / n_fine
    coef = Isotropic(s_iso).coefficients(data.n, M)
    solver = EulerMaruyamaNumba()
    order = solver.strong_order(SDEProblem(model, data, coef, h))
    label = LabelNoise(1.0, 0.5, data.n).coefficients(data.n, M)
    assert order == 1.0 and solver.strong_order(SDEProblem(model, data, label, h)) == 0.5
    zf = np.random.default_rng(3).standard_normal((M, n_fine, p))
    mean = theta_star + expm(-H * t_end) @ (theta0 - theta_star)
    weights = np.stack([expm(-H * (t_end - k * h - h / 2)) for k in range(n_fine)])
    Y = mean + s_iso * np.einsum("kpq,mkq->mp", weights, -math.sqrt(h) * zf)
    dts, strong = [], []
    for ell in (8, 16, 32, 64, 128):
        k = n_fine // ell
        zeta = zf.reshape(M, k, ell, p).sum(axis=2) / math.sqrt(ell)
        empty = np.zeros((M, k, 0))
        theta = np.repeat(theta0[None], M, axis=0)
        problem = SDEProblem(model, data, coef, ell * h)
        em_steps_numba(problem, theta, Increments(0, empty, empty.copy(), zeta))
        sq = ((theta - Y) ** 2).sum(axis=1)
        assert sq.std(ddof=1) / math.sqrt(M) < 0.1 * sq.mean()
        dts.append(ell * h)
        strong.append(math.sqrt(sq.mean()))
    slope = np.polyfit(np.log(dts), np.log(strong), 1)[0]
    assert abs(slope - order) < SLOPE_TOL, (slope, strong)


@pytest.mark.parametrize("solver", ["euler_numba", "euler_gemm"])
def test_ou_moments_through_simulate_sde(ou, solver):
    """The full pipeline (stream draws, chunking, recording) on the OU process: sample mean
    and E|theta - m_EM|^2 of the final parameters match the EM chain's exact moments
    within K_SE standard errors (euler_gemm: with its in-kernel xoshiro normals)."""
    model, data, H, theta_star, theta0, noise = ou
    M, dt, k = 3000, 1 / 32, 32
    ds = simulate_sde(
        model,
        data,
        noise,
        solver=solver,
        dt=dt,
        n_steps=k,
        n_traj=M,
        theta0=theta0,
        save_params=True,
        save_steps=[0, k],
        seed=2,
    )
    final = _final(ds)
    a = noise.coefficients(data.n, 1).label[0]
    m_em, c_em = _ou_em_moments(H, theta_star, theta0, a, data.n, dt, k)
    se_mean = final.std(axis=0, ddof=1) / math.sqrt(M)
    assert np.all(np.abs(final.mean(axis=0) - m_em) <= K_SE * se_mean)
    sq = ((final - m_em) ** 2).sum(axis=1)
    assert abs(sq.mean() - np.trace(c_em)) <= K_SE * sq.std(ddof=1) / math.sqrt(M)


# (iii) orders on GBM and other user SDEs (SDETerms): tests/test_sde_terms.py


# ---------------------------------------------------------- (iv) numba vs torch


NOISES = {
    "label": LabelNoise([0.1, 0.5, 1.0, 0.0], 0.1, 1),
    "sgd": SGDCovariance(0.1, [1, 2, 5, 20]),
    "iso": Isotropic([0.001, 0.01, 0.0, 0.005]),
    "all": AllChannels(),
}


@pytest.mark.parametrize("which", sorted(NOISES))
def test_numba_and_torch_agree(dln, which):
    model, data = dln
    kw = {"dt": 0.05, "n_steps": 150, "seed": 4, "save_params": True, "n_traj": 4}
    kw["save_steps"] = np.arange(0, 151, 15)
    a = simulate_sde(model, data, NOISES[which], solver="euler_numba", **kw)
    b = simulate_sde(model, data, NOISES[which], solver="euler_torch", **kw)
    assert not a.diverged.any()
    np.testing.assert_allclose(b.params, a.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.train_loss, a.train_loss, rtol=1e-10, atol=1e-14)
    for name in ("params", "train_loss"):
        fa, fb = _final(a, name), _final(b, name)
        np.testing.assert_allclose(fb.mean(axis=0), fa.mean(axis=0), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(fb.var(axis=0), fa.var(axis=0), rtol=1e-9, atol=1e-16)
    # float32: the same draws, rounded; agreement to single-precision accuracy
    for solver in (EulerMaruyamaTorch("float32"), EulerMaruyamaNumba("float32")):
        c = simulate_sde(model, data, NOISES[which], solver=solver, **kw)
        np.testing.assert_allclose(c.params, a.params, rtol=0, atol=2e-4)
        np.testing.assert_allclose(c.train_loss, a.train_loss, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("which", sorted(NOISES))
def test_xoshiro_increments_same_iterates_in_every_solver(dln, which):
    """euler_gemm draws its normals inside its kernels; euler_torch and euler_numba with
    increments="xoshiro" draw the same numbers in chunks: the three agree to round-off
    (per-trajectory coefficients, zeros included), and float32 to single precision."""
    model, data = dln
    kw = {"dt": 0.05, "n_steps": 150, "seed": 4, "save_params": True, "n_traj": 4}
    kw["save_steps"] = np.arange(0, 151, 15)
    ref = simulate_sde(model, data, NOISES[which], solver="euler_gemm", **kw)
    assert not ref.diverged.any()
    for solver in (
        EulerMaruyamaTorch(increments="xoshiro"),
        EulerMaruyamaNumba(increments="xoshiro"),
    ):
        other = simulate_sde(model, data, NOISES[which], solver=solver, **kw)
        np.testing.assert_allclose(other.params, ref.params, rtol=1e-10, atol=1e-12)
    numpy_draws = simulate_sde(model, data, NOISES[which], solver="euler_numba", **kw)
    assert not np.array_equal(_final(numpy_draws), _final(ref))  # other numbers, same law
    single = simulate_sde(model, data, NOISES[which], solver=EulerMaruyamaGEMM("float32"), **kw)
    np.testing.assert_allclose(single.params, ref.params, rtol=0, atol=2e-4)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("diagonal_linear", {"parametrization": "uu-vv", "alpha": 0.3}),
        ("diagonal_linear", {"parametrization": "ww", "alpha": 0.3}),
        ("linear_regression", {}),
        ("linear_teacher_student", {"depth": 3, "init_scale": 0.5}),
        ("two_layer_relu", {"m": 4}),
        ("two_layer_relu", {"m": 4, "bias": True}),
    ],
)
def test_euler_gemm_on_every_gemm_model(name, options):
    from sgdsde.models import make_model

    data = sparse_regression(n=12, d=8, k=2, n_test=10, seed=3)
    model = make_model(name, d=8, **options)
    assert model.gemm_kernels is not None
    kw = {"dt": 0.02, "n_steps": 80, "seed": 1, "save_params": True, "n_traj": 4}
    a = simulate_sde(model, data, AllChannels(), solver="euler_gemm", **kw)
    b = simulate_sde(
        model, data, AllChannels(), solver=EulerMaruyamaNumba(increments="xoshiro"), **kw
    )
    assert not a.diverged.any()
    np.testing.assert_allclose(a.params, b.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-10, atol=1e-14)


def test_xoshiro_increment_layout(dln):
    """Per trajectory and step: label (n, if a_t > 0), sgd (n, if b_t > 0), iso (p, if
    s_t > 0), consecutively from the trajectory's own stream."""
    from sgdsde.xoshiro import XoshiroNormals

    model, data = dln
    T, n, p, S = 3, data.n, model.n_params, 4
    coeffs = NoiseCoefficients(
        np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0])
    )
    pb = SDEProblem(model, data, coeffs, 0.01)
    streams = trajectory_streams(5, T)
    draw = XoshiroIncrements().sampler(pb, streams)
    inc = [draw(0, 2), draw(2, S)]
    label, sgd, iso = (
        np.concatenate([getattr(i, ch) for i in inc], axis=1) for ch in ("label", "sgd", "iso")
    )
    widths = [(n, 0, p), (0, n, 0), (n, n, 0)]
    seq = XoshiroNormals.from_seed(5, T)
    for t, w in enumerate(widths):
        one = np.empty((1, S * sum(w)))
        XoshiroNormals(seq.state[t : t + 1]).draw(one)
        per_step = one.reshape(S, sum(w))
        wl, ws, wi = w
        np.testing.assert_array_equal(label[t], per_step[:, :wl] if wl else np.zeros((S, n)))
        np.testing.assert_array_equal(sgd[t], per_step[:, wl : wl + ws] if ws else np.zeros((S, n)))
        np.testing.assert_array_equal(iso[t], per_step[:, wl + ws :] if wi else np.zeros((S, p)))


@pytest.mark.parametrize("name", ["two_layer_relu", "deep_relu", "gelu_pair"])
def test_numba_float32_kernels_track_float64(name):
    """Every model's kernels also compile for float32; one label-noise run agrees with
    float64 to single-precision accuracy (rounding ~6e-8 per op, amplified over 100 steps)."""
    from sgdsde.models import make_model

    if name == "gelu_pair":
        x = np.linspace(-2, 2, 12)
        data = RegressionData(x[:, None], np.sin(x), x[:, None], np.sin(x))
        model = make_model(name)
    else:
        data = sparse_regression(n=12, d=3, k=2, n_test=20, seed=1)
        model = make_model(name, d=3, **({"m": 6} if name == "two_layer_relu" else {}))
    kw = {"dt": 0.01, "n_steps": 100, "seed": 2, "save_params": True, "n_traj": 3}
    noise = LabelNoise(0.1, 0.01, data.n)
    a = simulate_sde(model, data, noise, solver=EulerMaruyamaNumba("float64"), **kw)
    b = simulate_sde(model, data, noise, solver=EulerMaruyamaNumba("float32"), **kw)
    assert not a.diverged.any() and not b.diverged.any()
    np.testing.assert_allclose(b.params, a.params, rtol=0, atol=1e-4 * np.abs(a.params).max())


def test_torch_generator_increments(ou):
    """increments="torch": reproducible per run (same seed, same T), statistically the
    same process: final mean within K_SE of the EM chain's exact mean."""
    model, data, H, theta_star, theta0, noise = ou
    M, dt, k = 2000, 1 / 16, 16
    solver = EulerMaruyamaTorch(increments="torch")
    kw = {"dt": dt, "n_steps": k, "n_traj": M, "theta0": theta0, "save_params": True}
    a = simulate_sde(model, data, noise, solver=solver, seed=5, **kw)
    b = simulate_sde(model, data, noise, solver=solver, seed=5, **kw)
    c = simulate_sde(model, data, noise, solver=solver, seed=6, **kw)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(_final(a), _final(c))
    final = _final(a)
    m_em, _ = _ou_em_moments(H, theta_star, theta0, noise.coefficients(3, 1).label[0], 3, dt, k)
    se = final.std(axis=0, ddof=1) / math.sqrt(M)
    assert np.all(np.abs(final.mean(axis=0) - m_em) <= K_SE * se)
    assert json.loads(a.attrs["config"])["solver"]["increments"] == {"name": "torch"}
    assert a.attrs["increments"] == "torch"


# ---------------------------------------------------------------- (v) divergence


@pytest.mark.parametrize("solver", PER_TRAJECTORY)
def test_divergence_is_isolated(dln, solver):
    """A trajectory whose noise is enormous diverges and is frozen; the others are
    bit-for-bit those of a run without it."""
    model, data = dln
    kw = {"dt": 0.05, "n_steps": 120, "seed": 8, "solver": solver, "save_params": True}
    kw["save_steps"] = np.arange(0, 121, 10)
    lrs = [0.1, 0.2, 1e12]
    full = simulate_sde(model, data, LabelNoise(0.1, lrs, 1), **kw)
    part = simulate_sde(model, data, LabelNoise(0.1, lrs[:2], 1), **kw)
    assert full.diverged.values.tolist() == [False, False, True]
    k_bad = int(full.diverged_step[2])
    assert 0 < k_bad <= 120
    after = full.step.values >= k_bad
    assert np.all(np.isnan(full.train_loss[2].values[after]))
    assert np.all(np.isfinite(full.train_loss[2].values[~after]))
    np.testing.assert_array_equal(full.params[:2].values, part.params.values)
    np.testing.assert_array_equal(full.train_loss[:2].values, part.train_loss.values)


# ---------------------------------------------------------- (vi) reproducibility


def _run(model, data, **kw):
    base = {"dt": 0.05, "n_steps": 120, "seed": 9, "save_params": True}
    base["save_steps"] = np.arange(0, 121, 20)
    base.update(kw)
    noise = base.pop("noise", AllChannels())
    return simulate_sde(model, data, noise, **base)


def test_same_seed_same_bits_and_seed_matters(dln):
    model, data = dln
    a, b = _run(*dln, n_traj=3), _run(*dln, n_traj=3)
    np.testing.assert_array_equal(a.params.values, b.params.values)
    c = _run(model, data, n_traj=3, seed=10)
    assert not np.array_equal(_final(a), _final(c))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_independent_of_thread_count(dln):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(*dln, n_traj=5)
        one_gemm = _run(*dln, n_traj=5, solver="euler_gemm")
        numba.set_num_threads(2)
        two = _run(*dln, n_traj=5)
        two_gemm = _run(*dln, n_traj=5, solver="euler_gemm")
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.params.values, two.params.values)
    np.testing.assert_array_equal(one_gemm.params.values, two_gemm.params.values)


@pytest.mark.parametrize("solver", PER_TRAJECTORY)
def test_independent_of_n_traj_and_save_grid(dln, solver):
    model, data = dln
    three = _run(model, data, n_traj=3, solver=solver)
    five = _run(model, data, n_traj=5, solver=solver)
    if solver == "euler_numba":
        np.testing.assert_array_equal(three.params.values, five.params.values[:3])
    else:
        # torch batches trajectories into one GEMM whose blocking (hence rounding)
        # depends on T: same numbers, same bits only for the same T.
        np.testing.assert_allclose(three.params.values, five.params.values[:3], rtol=1e-12)
    coarse = _run(model, data, n_traj=3, solver=solver, save_steps=[120])
    odd = _run(model, data, n_traj=3, solver=solver, save_steps=[0, 7, 8, 100, 119, 120])
    other = _run(model, data, n_traj=3, solver=solver, save_steps=[3, 8, 100])
    np.testing.assert_array_equal(_final(coarse), _final(three))
    common = [0, 100, 120]
    np.testing.assert_array_equal(
        odd.params.sel(step=common).values, three.params.sel(step=common).values
    )
    np.testing.assert_array_equal(
        odd.params.sel(step=[8, 100]).values, other.params.sel(step=[8, 100]).values
    )


def test_independent_of_chunk_size(dln, monkeypatch):
    """Chunks of a few steps (as with many trajectories) give the same numbers."""
    import sgdsde.run.loop as runloop

    model, data = dln
    ref = _run(model, data, n_traj=3)
    # 3 trajectories x (20 label + 20 sgd + 60 iso) normals per step: 7-step chunks
    monkeypatch.setattr(runloop, "BLOCK_ENTRIES", 3 * 100 * 7)
    small = _run(model, data, n_traj=3)
    np.testing.assert_array_equal(small.params.values, ref.params.values)


# ------------------------------------------------------------- format, validation


def test_dataset_format_matches_simulate_sgd(dln, tmp_path):
    model, data = dln
    sgd = simulate_sgd(model, data, 0.1, n_steps=50, sgd=GD(0.1), n_traj=2, run_names=["a", "b"])
    sde = simulate_sde(
        model,
        data,
        LabelNoise(0.1, 0.1, data.n),
        dt=0.1,
        n_steps=50,
        n_traj=2,
        run_names=["a", "b"],
        solver="euler_numba",
    )
    assert sde.sizes == sgd.sizes
    assert set(sde.data_vars) == set(sgd.data_vars)
    assert set(sgd.coords) <= set(sde.coords)
    for name in sgd.data_vars:
        assert sde[name].dims == sgd[name].dims
        assert sde[name].attrs.get("long_name") == sgd[name].attrs.get("long_name")
    assert sde.time.dims == ("traj", "step")
    np.testing.assert_allclose(sde.time.values[0], sde.step.values * 0.1)
    assert sde.attrs["integrator"] == "euler_numba"
    for key in ("sgdsde_version", "seed_entropy", "seed_spawn_key", "title"):
        assert key in sde.attrs
    cfg = json.loads(sde.attrs["config"])
    assert cfg["kind"] == "sde" and cfg["dt"] == 0.1 and cfg["n_steps"] == 50
    assert cfg["noise"] == {"name": "label_noise", "delta": 0.1, "lr": 0.1, "batch_size": 20}
    assert cfg["solver"] == {
        "name": "euler_numba",
        "dtype": "float64",
        "increments": {"name": "numpy"},
    }
    assert cfg["orders"] == {"strong": 0.5, "weak": 1.0}
    assert sde.attrs["increments"] == "numpy"
    assert cfg["model"]["name"] == "diagonal_linear"
    torch_solver = EulerMaruyamaTorch("float32")
    torch_cfg = torch_solver.to_config()
    problem = SDEProblem(model, data, LabelNoise(0.1, 0.1).coefficients(data.n, 1), 0.1)
    assert torch_cfg["dtype"] == "float32" and torch_solver.weak_order(problem) == 1.0
    loaded = load_dataset(save_dataset(sde, tmp_path / "sde.nc"))
    np.testing.assert_array_equal(loaded.train_loss.values, sde.train_loss.values)
    assert json.loads(loaded.attrs["config"]) == cfg


def test_registry(dln):
    model, data = dln
    assert SOLVERS["euler_numba"] is EulerMaruyamaNumba
    assert SOLVERS["euler_torch"] is EulerMaruyamaTorch
    assert SOLVERS["euler_gemm"] is EulerMaruyamaGEMM
    label = SDEProblem(model, data, LabelNoise(0.1, 0.1).coefficients(data.n, 2), 0.1)
    iso = SDEProblem(model, data, Isotropic(0.1).coefficients(data.n, 2), 0.1)
    for cls in SOLVERS.values():
        solver = cls()
        assert solver.weak_order(label) == 1.0 and solver.strong_order(label) == 0.5
        # additive noise: Euler-Maruyama's strong order is 1
        assert solver.strong_order(iso) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dt": 0.0}, "dt must be a finite number > 0"),
        ({"dt": -0.1}, "dt must be a finite number > 0"),
        ({"dt": float("nan")}, "dt must be a finite number > 0"),
        ({"dt": float("inf")}, "dt must be a finite number > 0"),
        ({"dt": True}, "dt must be a finite number > 0"),
        ({"n_steps": 0}, "n_steps must be a positive integer"),
        ({"n_steps": 2.5}, "n_steps must be a positive integer"),
        ({"solver": "rk4"}, r"unknown solver 'rk4': choose one of \['euler_gemm', 'euler_numba'"),
        ({"solver": 3}, "solver must be a name in"),
        ({"n_traj": 3, "noise": LabelNoise([0.1, 0.2], 0.1)}, "disagree"),
        ({"theta0": np.zeros(7)}, r"parameters must have shape \(n_traj, 60\)"),
        ({"theta0": np.zeros((3, 60)), "n_traj": 2}, "disagree"),
        ({"theta0": np.full(60, np.nan)}, "theta0 contains NaN"),
        ({"device": "cuda", "solver": "euler_numba"}, "runs on the CPU only"),
        ({"noise": "label_noise"}, "noise must be a sgdsde.sde noise model"),
        ({"save_steps": [11]}, r"steps must lie in \[0, 10\]"),
        ({"max_loss": 0.0}, "max_loss must be > 0"),
    ],
)
def test_validation(dln, kwargs, match):
    model, data = dln
    kw = {"dt": 0.1, "n_steps": 10, "noise": LabelNoise(0.1, 0.1)}
    kw.update(kwargs)
    noise = kw.pop("noise")
    with pytest.raises(ValueError, match=match):
        simulate_sde(model, data, noise, **kw)


def test_euler_gemm_validation(dln):
    from sgdsde.models import make_model

    model, data = dln
    deep = make_model("deep_relu", d=30, widths=(4, 3))
    with pytest.raises(ValueError, match=r"gemm_kernels.*euler_torch"):
        simulate_sde(deep, data, LabelNoise(0.1, 0.1, 1), dt=0.1, n_steps=2, solver="euler_gemm")
    with pytest.raises(ValueError, match=r"CPU only.*euler_torch"):
        simulate_sde(
            model,
            data,
            LabelNoise(0.1, 0.1, 1),
            dt=0.1,
            n_steps=2,
            solver="euler_gemm",
            device="cuda",
        )
    with pytest.raises(ValueError, match="increments must be one of"):
        EulerMaruyamaNumba(increments="torch")
    with pytest.raises(ValueError, match="dtype must be one of"):
        EulerMaruyamaGEMM("float16")


def test_validation_model_and_data(dln):
    _, data = dln
    with pytest.raises(ValueError, match="model expects 7"):
        simulate_sde(DiagonalLinearNet(d=7), data, LabelNoise(0.1, 0.1), dt=0.1, n_steps=5)
    with pytest.raises(ValueError, match="model must be a sgdsde Model"):
        simulate_sde("dln", data, LabelNoise(0.1, 0.1), dt=0.1, n_steps=5)
    with pytest.raises(ValueError, match="dtype must be one of"):
        EulerMaruyamaTorch(dtype="float16")
    with pytest.raises(ValueError, match="increments must be one of"):
        EulerMaruyamaTorch(increments="cupy")


def test_noise_config_dict_and_per_trajectory_seeds(dln):
    model, data = dln
    kw = {"dt": 0.1, "n_steps": 20, "save_params": True, "save_steps": [0, 10, 20]}
    a = simulate_sde(model, data, {"name": "label_noise", "delta": 0.1, "lr": 0.1}, seed=3, **kw)
    b = simulate_sde(model, data, LabelNoise(0.1, 0.1), seed=3, **kw)
    np.testing.assert_array_equal(a.params.values, b.params.values)
    kw["solver"] = "euler_numba"
    c = simulate_sde(model, data, LabelNoise(0.1, 0.1), seed=[4, 4, 5], **kw)
    assert c.sizes["traj"] == 3
    np.testing.assert_array_equal(c.params.values[0], c.params.values[1])
    assert not np.array_equal(_final(c)[0], _final(c)[2])


def test_gradient_flow_is_plain_gd(dln):
    """No noise: EM of gradient flow at dt = eta is GD at step eta (to round-off)."""
    model, data = dln
    kw = {"n_traj": 2, "save_params": True, "save_steps": [0, 50, 100]}
    gd = simulate_sgd(model, data, 0.1, n_steps=100, sgd=GD(), **kw)
    gf = simulate_sde(
        model, data, GradientFlow(), dt=0.1, n_steps=100, progress=True, solver="euler_numba", **kw
    )
    np.testing.assert_allclose(gf.params, gd.params, rtol=1e-11, atol=1e-13)
    assert "lr" not in gf.coords and np.all(gf.noise_label.values == 0)


def test_default_solver_is_the_fastest_the_model_supports(dln):
    """GEMM kernels on the CPU: euler_gemm; else euler_numba below 32 examples and
    euler_torch from 32 on, on a GPU euler_torch; all with xoshiro increments, which do not
    couple to label-noise GD: that path is solver="euler_numba" (numpy increments)."""
    from sgdsde.models import make_model
    from sgdsde.sde import default_solver

    model, data = dln
    ds = simulate_sde(model, data, LabelNoise(0.1, 0.1), dt=0.1, n_steps=5, save_steps=[0, 5])
    assert ds.attrs["integrator"] == "euler_gemm" and ds.attrs["increments"] == "xoshiro"
    assert json.loads(ds.attrs["config"])["solver"] == EulerMaruyamaGEMM().to_config()
    quartic = make_model("quartic_well")
    one = RegressionData(np.ones((1, 1)), np.array([0.5]), np.ones((1, 1)), np.array([0.5]))
    xoshiro = XoshiroIncrements()
    assert default_solver(quartic, one) == EulerMaruyamaNumba(increments=xoshiro)
    deep = make_model("deep_relu", d=30, widths=(4,))
    assert default_solver(deep, data) == EulerMaruyamaNumba(increments=xoshiro)  # n = 20
    many = sparse_regression(n=32, d=30, k=3, n_test=5, seed=0)
    assert default_solver(deep, many) == EulerMaruyamaTorch(increments=xoshiro)
    assert default_solver(model, data, "cuda") == EulerMaruyamaTorch(increments=xoshiro)
    assert not default_solver(model, data).increments.couples_to_gd
    assert EulerMaruyamaNumba().increments.couples_to_gd
