"""Your own SDE terms (``sgdsde.sde.terms``) under the ``euler_terms`` solver, against
ground truth: geometric Brownian motion and Ornstein-Uhlenbeck moments and orders, the
quartic well's multiplicative noise equal to its bent label-noise form, the built-in
isotropic noise reproduced, numba and torch terms on the same numbers, validation, the
dataset layout, and the conformance of every solver that takes terms.

Tolerances. Identities driven by the same numbers are checked to round-off. Monte Carlo
checks compare with the Euler-Maruyama chain's exact moments within K_SE = 4 standard
errors estimated from the sample (fixed seeds, no retries). Order fits use common random
numbers (coarse increments are sums of fine ones, ``GivenIncrements``) against the exact
solution on the same path; the Monte Carlo error of each error estimate is checked to be
below a tenth of the estimate before the slope (within 0.2 of theory) is fitted.
"""

from __future__ import annotations

import itertools
import json
import math

import numba
import numpy as np
import pytest
import torch
from scipy.linalg import expm

from sgdsde import GD, load_dataset, save_dataset, simulate_sgd, sparse_regression
from sgdsde.data import RegressionData, quartic_well_data
from sgdsde.metrics.base import describe_fn
from sgdsde.models import DiagonalLinearNet, LinearRegression, QuarticWell
from sgdsde.random import trajectory_streams
from sgdsde.registry import to_config
from sgdsde.run.driver import Stepper
from sgdsde.sde import (
    INCREMENTS,
    SOLVERS,
    DiagonalDiffusion,
    Drift,
    EulerMaruyamaNumba,
    EulerMaruyamaTerms,
    GeneralDiffusion,
    GivenIncrements,
    GradientDrift,
    Isotropic,
    LabelNoise,
    NumpyIncrements,
    SDETerms,
    TermsProblem,
    TorchIncrements,
    XoshiroIncrements,
    product_kernel,
    sde_kernel,
    simulate_diagonal_sde,
    simulate_sde,
)

K_SE = 4.0  # Monte Carlo checks: |estimate - truth| <= K_SE standard errors
SLOPE_TOL = 0.2
PATHS = ("numba", "torch")


# ---------------------------------------------------------------- user kernels


@sde_kernel
def _gbm_drift(theta, t, params, out):
    for j in range(theta.shape[0]):
        out[j] = params[0] * theta[j]


@sde_kernel
def _gbm_diffusion(theta, t, params, out):
    for j in range(theta.shape[0]):
        out[j] = params[1] * theta[j]


@sde_kernel
def _scaled_state(theta, t, params, out):
    for j in range(theta.shape[0]):
        out[j] = params[0] * theta[j]


@sde_kernel
def _constant(theta, t, params, out):
    for j in range(theta.shape[0]):
        out[j] = params[0]


@sde_kernel
def _cosine_time(theta, t, params, out):
    for j in range(theta.shape[0]):
        out[j] = math.cos(t)


@sde_kernel
def _zero(theta, t, params, out):
    for j in range(theta.shape[0]):
        out[j] = 0.0


@product_kernel
def _matrix_product(theta, t, params, dw, out):
    """out = B dw with B (p, m) row-major in params."""
    m = dw.shape[0]
    for i in range(theta.shape[0]):
        acc = 0.0
        for j in range(m):
            acc += params[i * m + j] * dw[j]
        out[i] = acc


def _gbm_terms(path: str, mu: float, sigma: float) -> SDETerms:
    """dX = mu X dt + sigma X dW, as numba kernels or as torch functions."""
    if path == "numba":
        return SDETerms(
            drift=Drift(_gbm_drift),
            diffusion=DiagonalDiffusion(_gbm_diffusion),
            params=[mu, sigma],
        )
    return SDETerms(
        drift=Drift(lambda t, theta: mu * theta),
        diffusion=DiagonalDiffusion(lambda t, theta: sigma * theta),
    )


def _final(ds):
    return ds["params"].isel(step=-1).values


def _free(terms, theta0, *, dt, n_steps, **options):
    """A free SDE (no model, no data) recording its parameters at steps 0 and n_steps."""
    options.setdefault("save_steps", [0, n_steps])
    return simulate_sde(
        None, None, terms, dt=dt, n_steps=n_steps, theta0=theta0, save_params=True, **options
    )


# ------------------------------------------------------ geometric Brownian motion


@pytest.mark.parametrize("path", PATHS)
def test_gbm_moments(path):
    """E X_t and E X_t^2 of dX = mu X dt + sigma X dW from x0 (two coordinates, seeded
    xoshiro increments): within K_SE of the EM chain's exact moments x0 (1 + mu dt)^k and
    x0^2 ((1 + mu dt)^2 + sigma^2 dt)^k, which at dt = 1/256 lie within half a standard
    error of the SDE's closed forms x0 e^{mu t} and x0^2 e^{(2 mu + sigma^2) t}."""
    mu, sigma, dt, k, M = 1.0, 0.5, 1 / 256, 256, 4000
    x0 = np.array([1.0, 0.5])
    t = k * dt
    ds = _free(_gbm_terms(path, mu, sigma), x0, dt=dt, n_steps=k, n_traj=M, seed=11)
    x = _final(ds)
    em1 = x0 * (1 + mu * dt) ** k
    em2 = x0**2 * ((1 + mu * dt) ** 2 + sigma**2 * dt) ** k
    sde1, sde2 = x0 * math.exp(mu * t), x0**2 * math.exp((2 * mu + sigma**2) * t)
    for values, em, sde in ((x, em1, sde1), (x**2, em2, sde2)):
        se = values.std(axis=0, ddof=1) / math.sqrt(M)
        assert np.all(np.abs(values.mean(axis=0) - em) <= K_SE * se), (values.mean(0), em, se)
        assert np.all(np.abs(em - sde) <= 0.5 * se)
    assert not ds.diverged.any()
    assert ds.attrs["integrator"] == "euler_terms" and ds.attrs["increments"] == "xoshiro"


def test_gbm_numba_and_torch_agree_on_the_same_numbers():
    """Same seed and increments (numpy and xoshiro): numba kernels and torch functions give
    the same path to round-off, from the documented draws."""
    for increments in (NumpyIncrements(), XoshiroIncrements()):
        solver = EulerMaruyamaTerms(increments=increments)
        runs = [
            _free(
                _gbm_terms(path, 0.3, 0.9),
                [1.0, -2.0, 0.5],
                dt=0.02,
                n_steps=50,
                n_traj=7,
                seed=4,
                solver=solver,
                save_steps=[0, 10, 50],
            )
            for path in PATHS
        ]
        np.testing.assert_allclose(runs[0].params.values, runs[1].params.values, rtol=1e-12)
        assert np.abs(runs[0].params.values[:, -1] - runs[0].params.values[:, 0]).min() > 1e-3


def _gbm_errors(path, mu, sigma, n_samples, n_fine, ells, seed, width=10):
    """EM errors at t = 1 against the exact x0 exp((mu - sigma^2/2) t + sigma W_t) on the
    same Brownian path (W_t = sum of the fine increments; coarse = sums of fine), for
    n_samples independent paths: n_samples / width trajectories of ``width`` independent
    coordinates (fewer trajectories: each costs the driver its seed streams)."""
    h, M = 1.0 / n_fine, n_samples // width
    dWf = math.sqrt(h) * np.random.default_rng(seed).standard_normal((M, n_fine, width))
    exact = np.exp((mu - sigma**2 / 2) + sigma * dWf.sum(axis=1))
    out = []
    for ell in ells:
        k = n_fine // ell
        dW = dWf.reshape(M, k, ell, width).sum(axis=2)
        solver = EulerMaruyamaTerms(increments=GivenIncrements(dW))
        terms = _gbm_terms(path, mu, sigma)
        x = _final(_free(terms, np.ones(width), dt=ell * h, n_steps=k, solver=solver))
        out.append((ell * h, k, (x - exact).ravel()))
    return out


@pytest.mark.parametrize("path", PATHS)
def test_gbm_weak_order_1(path):
    """E X_t = x0 e^{mu t}; EM's mean is (1 + mu dt)^k exactly: weak order 1."""
    mu, sigma, M = 1.0, 0.5, 20000
    dts, errors = [], []
    for dt, k, diff in _gbm_errors(path, mu, sigma, M, 256, (2, 4, 8, 16, 32), seed=1):
        e, se = diff.mean(), diff.std(ddof=1) / math.sqrt(M)
        assert se < 0.1 * abs(e)
        assert abs(e - ((1 + mu * dt) ** k - math.exp(mu))) <= K_SE * se
        dts.append(dt)
        errors.append(abs(e))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - 1.0) < SLOPE_TOL, slope


@pytest.mark.parametrize("path", PATHS)
def test_gbm_strong_order_half(path):
    """Multiplicative noise: EM's strong order is 0.5 (rms error against the exact
    solution on the same path), the solver's value for a non-additive diffusion. Small
    drift so the dt^(1/2) term dominates."""
    M = 20000
    dts, errors = [], []
    for dt, _, diff in _gbm_errors(path, 0.05, 0.8, M, 256, (2, 4, 8, 16, 32), seed=2):
        sq = diff**2
        assert sq.std(ddof=1) / math.sqrt(M) < 0.1 * sq.mean()
        dts.append(dt)
        errors.append(math.sqrt(sq.mean()))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    problem = TermsProblem(_gbm_terms(path, 0.05, 0.8), None, None, 1, 1, 0.1)
    assert EulerMaruyamaTerms().strong_order(problem) == 0.5
    assert abs(slope - 0.5) < SLOPE_TOL, slope


def test_seeded_path_layout():
    """Seeded numpy increments: EM mean (1 + mu dt)^k within K_SE; reproducible; the
    documented stream layout (trajectory t's "brownian" stream, (n_steps, p) normals,
    dW = -sqrt(dt) z) given as GivenIncrements reproduces the result."""
    mu, sigma, dt, k, M = 1.0, 0.5, 1 / 16, 16, 4000
    terms = _gbm_terms("numba", mu, sigma)
    solver = EulerMaruyamaTerms()  # numpy increments
    run = _free(terms, [1.0], dt=dt, n_steps=k, n_traj=M, seed=3, solver=solver)
    x = _final(run)[:, 0]
    assert abs(x.mean() - (1 + mu * dt) ** k) <= K_SE * x.std(ddof=1) / math.sqrt(M)
    again = _free(terms, [1.0], dt=dt, n_steps=k, n_traj=M, seed=3, solver=solver)
    np.testing.assert_array_equal(x, _final(again)[:, 0])
    streams = trajectory_streams(3, 5)["brownian"]
    dW = -math.sqrt(dt) * np.stack([s.standard_normal((k, 1)) for s in streams])
    given = EulerMaruyamaTerms(increments=GivenIncrements(dW))
    explicit = _final(_free(terms, [1.0], dt=dt, n_steps=k, solver=given))[:, 0]
    np.testing.assert_array_equal(explicit, x[:5])
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        _free(terms, [1.0], dt=0.0, n_steps=k)
    with pytest.raises(ValueError, match="dW has shape"):
        _free(terms, [1.0], dt=dt, n_steps=k + 1, solver=given)


def test_simulate_diagonal_sde_is_a_deprecated_front():
    """The old entry point warns, and returns what it returned before: the final state of
    theta_{k+1} = theta_k + f dt + g dW_k with dW = +sqrt(dt) N from the "brownian" streams
    (a plain numpy recursion here), and given dW are used as they are."""
    mu, sigma, dt, k, T = 0.7, 0.4, 1 / 16, 24, 6
    x0 = np.array([1.0, 0.3])
    with pytest.warns(DeprecationWarning, match="use simulate_sde"):
        x = simulate_diagonal_sde(
            _gbm_drift, _gbm_diffusion, [mu, sigma], x0, dt=dt, n_steps=k, n_traj=T, seed=9
        )
    streams = trajectory_streams(9, T)["brownian"]
    dW = math.sqrt(dt) * np.stack([s.standard_normal((k, 2)) for s in streams])
    ref = np.repeat(x0[None], T, axis=0)
    for step in range(k):
        ref = ref + mu * ref * dt + sigma * ref * dW[:, step]
    assert x.shape == (T, 2)
    np.testing.assert_allclose(x, ref, rtol=1e-13)
    with pytest.warns(DeprecationWarning):
        explicit = simulate_diagonal_sde(
            _gbm_drift, _gbm_diffusion, [mu, sigma], x0, dt=dt, n_steps=k, dW=dW
        )
    np.testing.assert_array_equal(explicit, x)


# ------------------------------------------------ Ornstein-Uhlenbeck, general noise

# p = 2 parameters driven by m = 3 Brownian motions through a constant matrix B
B_OU = np.array([[0.3, -0.2, 0.1], [0.05, 0.4, -0.25]])


@pytest.fixture(scope="module")
def ou():
    """LinearRegression under its loss drift plus B dW: d theta = -H (theta - theta*) dt
    + B dW, W in R^3 (H = X^T X / n)."""
    X = np.array([[1.0, 0.5], [0.3, -1.2], [-0.8, 0.9]])
    y = np.array([0.7, -0.4, 1.1])
    data = RegressionData(X, y, X, y)
    H = X.T @ X / 3
    theta_star = np.linalg.solve(H, X.T @ y / 3)
    return LinearRegression(d=2), data, H, theta_star, theta_star + np.array([2.0, -1.5])


def _ou_terms(path: str, additive: bool = True) -> SDETerms:
    if path == "numba":
        diffusion = GeneralDiffusion(_matrix_product, noise_dim=3, additive=additive)
        return SDETerms(diffusion=diffusion, params=B_OU.ravel())
    B = torch.as_tensor(B_OU)
    fn = lambda t, theta, dW: dW @ B.T.to(dW.dtype)  # noqa: E731
    return SDETerms(diffusion=GeneralDiffusion(fn, noise_dim=3, additive=additive))


@pytest.mark.parametrize("path", PATHS)
def test_ou_general_noise_moments(ou, path):
    """Mean and covariance of theta_k match the EM chain's exact moments
    m_k = theta* + A^k (theta0 - theta*), C_{k+1} = A C_k A^T + B B^T dt, A = I - H dt,
    entry by entry within K_SE standard errors."""
    model, data, H, theta_star, theta0 = ou
    M, dt, k = 3000, 1 / 32, 32
    ds = simulate_sde(
        model,
        data,
        _ou_terms(path),
        dt=dt,
        n_steps=k,
        n_traj=M,
        theta0=theta0,
        save_params=True,
        save_steps=[0, k],
        seed=2,
    )
    final = _final(ds)
    A = np.eye(2) - H * dt
    mean = theta_star + np.linalg.matrix_power(A, k) @ (theta0 - theta_star)
    cov = np.zeros((2, 2))
    for _ in range(k):
        cov = A @ cov @ A.T + B_OU @ B_OU.T * dt
    se = final.std(axis=0, ddof=1) / math.sqrt(M)
    assert np.all(np.abs(final.mean(axis=0) - mean) <= K_SE * se)
    centred = final - mean
    for i, j in itertools.product(range(2), repeat=2):
        v = centred[:, i] * centred[:, j]
        assert abs(v.mean() - cov[i, j]) <= K_SE * v.std(ddof=1) / math.sqrt(M), (i, j)
    assert json.loads(ds.attrs["config"])["orders"] == {"strong": 1.0, "weak": 1.0}


def test_ou_general_noise_strong_order_is_the_solvers_value(ou):
    """Additive noise declared (``additive=True``): the fitted strong order of EM (rms
    error against Y = m(t) + sum_k e^{-H(t - t_k - h/2)} B dW_k on the same fine path) is
    the order the solver states and the dataset records, 1; undeclared, it states 0.5."""
    model, data, H, theta_star, theta0 = ou
    t_end, n_fine, M = 1.0, 512, 2000
    h = t_end / n_fine
    dWf = math.sqrt(h) * np.random.default_rng(3).standard_normal((M, n_fine, 3))
    mean = theta_star + expm(-H * t_end) @ (theta0 - theta_star)
    weights = np.stack([expm(-H * (t_end - k * h - h / 2)) for k in range(n_fine)])
    Y = mean + np.einsum("kpq,qj,mkj->mp", weights, B_OU, dWf)
    dts, strong, stated = [], [], set()
    for ell in (8, 16, 32, 64, 128):
        k = n_fine // ell
        solver = EulerMaruyamaTerms(increments=GivenIncrements(dWf.reshape(M, k, ell, 3).sum(2)))
        ds = simulate_sde(
            model,
            data,
            _ou_terms("numba"),
            dt=ell * h,
            n_steps=k,
            theta0=theta0,
            solver=solver,
            save_params=True,
            save_steps=[0, k],
        )
        stated.add(json.loads(ds.attrs["config"])["orders"]["strong"])
        sq = ((_final(ds) - Y) ** 2).sum(axis=1)
        assert sq.std(ddof=1) / math.sqrt(M) < 0.1 * sq.mean()
        dts.append(ell * h)
        strong.append(math.sqrt(sq.mean()))
    slope = np.polyfit(np.log(dts), np.log(strong), 1)[0]
    assert stated == {1.0}
    assert abs(slope - 1.0) < SLOPE_TOL, (slope, strong)
    undeclared = TermsProblem(_ou_terms("numba", additive=False), model, data, 1, 2, h)
    assert EulerMaruyamaTerms().strong_order(undeclared) == 0.5


# ------------------------------------------------ the built-in noises, reproduced


@sde_kernel
def _quartic_noise(theta, t, params, out):
    out[0] = params[0] * theta[0]


@pytest.mark.parametrize("path", PATHS)
def test_quartic_well_multiplicative_noise_is_the_bent_label_noise(path):
    """Chen et al. (2023): d theta = -L'(theta) dt + zeta theta dB on the quartic well.
    The bent form LabelNoise(delta = zeta^2/2, lr = 1, batch_size = 1) has
    G = phi^T a = sqrt(2) theta zeta / sqrt(2) on a one-dimensional W; under xoshiro
    increments both draw one normal per step from the same stream and use
    dW = -sqrt(dt) z, so the two runs are equal to round-off. (Under numpy increments the
    layouts differ: label noise draws from the "label_noise" stream, the terms from
    "brownian".)"""
    mu, zeta, dt, k, T = 1.0, 1.5, 0.01, 300, 6
    model, data = QuarticWell(mu=mu, init_value=0.8), quartic_well_data(mu)
    options = {"dt": dt, "n_steps": k, "n_traj": T, "seed": 5, "save_params": True}
    bent = simulate_sde(
        model,
        data,
        LabelNoise(zeta**2 / 2, 1.0, 1),
        solver=EulerMaruyamaNumba(increments=XoshiroIncrements()),
        **options,
    )
    if path == "numba":
        terms = SDETerms(diffusion=DiagonalDiffusion(_quartic_noise), params=[zeta])
    else:
        terms = SDETerms(diffusion=DiagonalDiffusion(lambda t, theta: zeta * theta))
    own = simulate_sde(model, data, terms, **options)  # default: euler_terms, xoshiro
    assert own.attrs["integrator"] == "euler_terms" and own.attrs["increments"] == "xoshiro"
    np.testing.assert_allclose(own.params.values, bent.params.values, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(own.train_loss.values, bent.train_loss.values, rtol=1e-9, atol=1e-14)
    quiet = simulate_sde(model, data, LabelNoise(0.0, 1.0, 1), **options)
    assert np.abs(own.params.values - quiet.params.values).max() > 0.05  # the noise acts


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("increments", [NumpyIncrements(), XoshiroIncrements()])
def test_constant_diagonal_noise_is_isotropic(path, increments):
    """The loss drift plus the constant diagonal s_t (one s per trajectory: (T, 1) params)
    is Isotropic(s) to round-off for the same seed and increments (W is the isotropic
    channel)."""
    data = sparse_regression(n=10, d=6, k=2, n_test=5, seed=3)
    model = DiagonalLinearNet(d=6, alpha=0.5)
    scales = [0.01, 0.05, 0.002]
    options = {"dt": 0.05, "n_steps": 40, "seed": 8, "save_params": True}
    iso = simulate_sde(
        model,
        data,
        Isotropic(scales),
        solver=EulerMaruyamaNumba(increments=increments),
        **options,
    )
    if path == "numba":
        diffusion = DiagonalDiffusion(_constant, additive=True)
        terms = SDETerms(diffusion=diffusion, params=np.array(scales)[:, None])
    else:
        s = torch.tensor(scales, dtype=torch.float64)[:, None]
        terms = SDETerms(diffusion=DiagonalDiffusion(lambda t, th: s.expand_as(th), True))
        options["n_traj"] = 3
    own = simulate_sde(
        model, data, terms, solver=EulerMaruyamaTerms(increments=increments), **options
    )
    np.testing.assert_allclose(own.params.values, iso.params.values, rtol=1e-10, atol=1e-13)
    assert json.loads(own.attrs["config"])["orders"]["strong"] == 1.0


@pytest.mark.parametrize("path", PATHS)
def test_time_reaches_the_functions(path):
    """f = cos(t), no noise: theta_k = theta_0 + dt sum_{j<k} cos(j dt) exactly: the
    functions see t_k = k dt at the start of step k."""
    dt, k = 0.1, 30
    if path == "numba":
        terms = SDETerms(drift=_cosine_time, diffusion=DiagonalDiffusion(_zero))
    else:
        terms = SDETerms(
            drift=lambda t, th: torch.full_like(th, math.cos(t)),
            diffusion=DiagonalDiffusion(lambda t, th: torch.zeros_like(th)),
        )
    ds = _free(terms, [0.5], dt=dt, n_steps=k, save_steps=[0, 7, k])
    expected = 0.5 + dt * np.cumsum([math.cos(j * dt) for j in range(k)])
    np.testing.assert_allclose(ds.params.values[0, 1:, 0], expected[[6, k - 1]], rtol=1e-12)
    np.testing.assert_allclose(ds.time.values[0], [0.0, 7 * dt, k * dt])


# ------------------------------------------------------------ divergence


@pytest.mark.parametrize("path", PATHS)
def test_free_sde_divergence_at_the_true_step(path):
    """dX = a_t X dt without noise, x0 = 1, max_norm = 2: x_k = (1 + a_t dt)^k first
    exceeds 2 at k = 8 for a = 1 (1.1^8 = 2.14); a = 0.1 and a = 0 stay below over 60
    steps. The diverged trajectory is frozen and reads NaN from step 8 on, whatever the
    save grid; the others are untouched."""
    rates = np.array([0.1, 1.0, 0.0])
    if path == "numba":
        terms = SDETerms(
            drift=_scaled_state, diffusion=DiagonalDiffusion(_zero), params=rates[:, None]
        )
    else:
        a = torch.tensor(rates)[:, None]
        terms = SDETerms(
            drift=lambda t, th: a * th,
            diffusion=DiagonalDiffusion(lambda t, th: torch.zeros_like(th)),
        )
    for grid in ([0, 5, 7, 8, 60], [0, 60]):
        ds = _free(terms, [1.0], dt=0.1, n_steps=60, n_traj=3, max_norm=2.0, save_steps=grid)
        assert ds.diverged_step.values.tolist() == [-1, 8, -1]
        steps = ds.step.values
        norms = ds.param_norm.values
        np.testing.assert_allclose(norms[[0, 2], -1], [1.01**60, 1.0], rtol=1e-12)
        assert np.all(np.isnan(norms[1, steps >= 8]))
        np.testing.assert_allclose(norms[1, steps < 8], 1.1 ** steps[steps < 8], rtol=1e-12)


# ------------------------------------------------------------ bad input


def test_terms_validation():
    with pytest.raises(ValueError, match="both as numba kernels"):
        SDETerms(drift=_gbm_drift, diffusion=DiagonalDiffusion(lambda t, th: th))
    with pytest.raises(ValueError, match="both as numba kernels"):
        SDETerms(drift=lambda t, th: th, diffusion=DiagonalDiffusion(_gbm_diffusion))
    plain = numba.njit(lambda theta, t, params, out: None)
    with pytest.raises(ValueError, match=r"decorate it with sgdsde\.sde\.sde_kernel"):
        DiagonalDiffusion(plain)
    with pytest.raises(ValueError, match=r"decorate it with sgdsde\.sde\.product_kernel"):
        GeneralDiffusion(_gbm_diffusion, noise_dim=2)  # a drift kernel, not a product
    with pytest.raises(ValueError, match="noise_dim must be a positive integer"):
        GeneralDiffusion(lambda t, th, dW: th, noise_dim=0)
    with pytest.raises(ValueError, match="must be a numba kernel"):
        DiagonalDiffusion(3.0)
    with pytest.raises(ValueError, match="diffusion must be DiagonalDiffusion"):
        SDETerms(diffusion=_gbm_diffusion)
    with pytest.raises(ValueError, match="by closure"):
        SDETerms(diffusion=DiagonalDiffusion(lambda t, th: th), params=[1.0])
    with pytest.raises(ValueError, match="params must be finite"):
        SDETerms(diffusion=DiagonalDiffusion(_gbm_diffusion), params=[1.0, np.nan])
    with pytest.raises(ValueError, match="dW must be a finite"):
        GivenIncrements(np.zeros((2, 3)))


def test_simulate_refuses_bad_terms_runs_before_any_work():
    calls = []

    def wrong_shape(t, theta):
        calls.append(t)
        return theta[:, 0]

    terms = _gbm_terms("torch", 0.1, 0.2)
    drift = terms.drift
    cases = [
        (
            {"noise": SDETerms(drift=drift, diffusion=DiagonalDiffusion(wrong_shape))},
            r"diffusion function .*wrong_shape\(t, theta\) returned \(3,\)",
        ),
        (
            {"noise": SDETerms(drift=drift, diffusion=DiagonalDiffusion(lambda t, th: th.numpy()))},
            "must return a torch tensor",
        ),
        ({"solver": "euler_numba"}, "use solver='euler_terms'"),
        ({"solver": EulerMaruyamaNumba()}, "use solver='euler_terms'"),
        ({"theta0": None}, "theta0 is required for a free SDE"),
        (
            {"noise": SDETerms(diffusion=DiagonalDiffusion(lambda t, th: th))},
            "the default drift GradientDrift",
        ),
        ({"max_norm": 0.0}, "max_norm must be > 0"),
        (
            {"solver": EulerMaruyamaTerms(increments=GivenIncrements(np.zeros((3, 5, 1))))},
            r"dW has shape \(3, 5, 1\), expected \(3, 4, 2\)",
        ),
        (
            {
                "n_traj": 2,
                "solver": EulerMaruyamaTerms(increments=GivenIncrements(np.zeros((3, 4, 2)))),
            },
            "disagree",
        ),
    ]
    base = {"noise": terms, "model": None, "theta0": np.ones((3, 2))}
    for case, match in cases:
        kwargs = base | case
        model, noise = kwargs.pop("model"), kwargs.pop("noise")
        with pytest.raises(ValueError, match=match):
            simulate_sde(model, None, noise, dt=0.1, n_steps=4, **kwargs)
    assert calls == [0.0]  # the probe, no step
    data = sparse_regression(n=5, d=3, k=1, n_test=2, seed=0)
    with pytest.raises(ValueError, match="model and data go together"):
        simulate_sde(None, data, terms, dt=0.1, n_steps=4, theta0=[1.0])
    model = LinearRegression(d=3)
    with pytest.raises(ValueError, match="integrates SDETerms"):
        simulate_sde(model, data, LabelNoise(0.1, 0.1), dt=0.1, n_steps=4, solver="euler_terms")
    kernels = _gbm_terms("numba", 0.1, 0.2)
    for solver, device, match in (
        (EulerMaruyamaTerms(dtype="float32"), "cpu", "runs in float64"),
        (EulerMaruyamaTerms(increments=TorchIncrements()), "cpu", "TorchIncrements draw"),
        (EulerMaruyamaTerms(), "cuda", "CPU only|no CUDA device"),
    ):
        with pytest.raises(ValueError, match=match):
            _free(kernels, [1.0], dt=0.1, n_steps=4, solver=solver, device=device)


# ------------------------------------------------------------ dataset layout


def test_dataset_layout_equals_simulate_sgd(tmp_path):
    data = sparse_regression(n=10, d=6, k=2, n_test=5, seed=3)
    model = DiagonalLinearNet(d=6, alpha=0.5)
    names = ["a", "b"]
    sgd = simulate_sgd(model, data, 0.1, n_steps=20, sgd=GD(0.1), n_traj=2, run_names=names)
    terms = SDETerms(diffusion=DiagonalDiffusion(_constant), params=[0.01])
    sde = simulate_sde(model, data, terms, dt=0.1, n_steps=20, n_traj=2, run_names=names)
    assert sde.sizes == sgd.sizes
    assert set(sde.data_vars) == set(sgd.data_vars)
    for name in sgd.data_vars:
        assert sde[name].dims == sgd[name].dims
        assert sde[name].attrs.get("long_name") == sgd[name].attrs.get("long_name")
    assert {"traj", "step", "time", "run", "dt"} <= set(sde.coords) and "run" in sde.xindexes
    np.testing.assert_allclose(sde.time.values[0], sde.step.values * 0.1)
    cfg = json.loads(sde.attrs["config"])
    assert cfg["kind"] == "sde" and cfg["dt"] == 0.1 and cfg["model"]["name"] == "diagonal_linear"
    assert cfg["terms"] == {
        "drift": {"name": "gradient"},
        "diffusion": {
            "name": "diagonal",
            "additive": False,
            "function": describe_fn(_constant, "theta, t, params, out"),
            "kernel": True,
        },
        "params": [0.01],
    }
    assert cfg["terms"]["diffusion"]["function"] == "_constant(theta, t, params, out)"
    assert cfg["solver"] == {
        "name": "euler_terms",
        "dtype": "float64",
        "increments": {"name": "xoshiro"},
    }
    assert cfg["orders"] == {"strong": 0.5, "weak": 1.0}
    assert sde.attrs["integrator"] == "euler_terms" and sde.attrs["increments"] == "xoshiro"
    loaded = load_dataset(save_dataset(sde, tmp_path / "terms.nc"))
    np.testing.assert_array_equal(loaded.train_loss.values, sde.train_loss.values)
    assert json.loads(loaded.attrs["config"]) == cfg


def test_free_sde_dataset():
    """No model, no data: param_norm (and params) recorded, divergence by the norm; the
    config says so and describes torch functions and given increments."""
    dW = np.full((2, 5, 1), 0.1)
    solver = EulerMaruyamaTerms(increments=GivenIncrements(dW))
    ds = _free(_gbm_terms("torch", 0.0, 1.0), [1.0], dt=0.01, n_steps=5, solver=solver)
    assert set(ds.data_vars) == {"param_norm", "params", "diverged", "diverged_step"}
    np.testing.assert_allclose(ds.params.values[:, -1, 0], 1.1**5, rtol=1e-14)
    np.testing.assert_allclose(ds.param_norm.values[:, -1], 1.1**5, rtol=1e-14)
    cfg = json.loads(ds.attrs["config"])
    assert cfg["model"] is None and cfg["data"] is None and cfg["max_norm"] == 1e10
    assert cfg["terms"]["drift"]["kernel"] is False
    assert cfg["terms"]["drift"]["function"].endswith("<lambda>(t, theta)")
    assert cfg["solver"]["increments"]["shape"] == [2, 5, 1]
    assert len(cfg["solver"]["increments"]["sha256"]) == 64
    assert (
        ds.attrs["increments"] == "given" and ds.attrs["title"] == "free SDE under user SDE terms"
    )


# -------------------------------------------- conformance of solvers of terms

TERMS_SOLVERS = sorted(name for name, cls in SOLVERS.items() if cls.takes_terms)
# (solver, registered increments, path) for every registered source a terms solver takes
TERMS_CASES = [
    (name, source.name, path)
    for name in TERMS_SOLVERS
    for source in SOLVERS[name].accepted_increments
    if source.name in INCREMENTS
    for path in PATHS
    if not (path == "numba" and source is TorchIncrements)  # torch tensors: torch only
]


@pytest.fixture(scope="module")
def small():
    data = sparse_regression(n=8, d=5, k=2, n_test=10, seed=2)
    return DiagonalLinearNet(d=5, alpha=0.5), data


def _multiplicative(path: str, scales) -> SDETerms:
    """The loss drift and g = s_t theta (one s per trajectory)."""
    if path == "numba":
        return SDETerms(
            diffusion=DiagonalDiffusion(_scaled_state), params=np.asarray(scales)[:, None]
        )
    s = torch.as_tensor(np.asarray(scales, dtype=np.float64))[:, None]
    return SDETerms(diffusion=DiagonalDiffusion(lambda t, th: s.to(th.dtype) * th))


def _drive(solver, problem, theta0, seed, splits):
    T = theta0.shape[0]
    state = solver.init(problem, theta0, trajectory_streams(seed, T), "cpu")
    diverged = np.full(T, -1, dtype=np.int64)
    for k0, k1 in itertools.pairwise(splits):
        solver.advance(state, k0, k1, diverged)
    return solver.params(state).copy(), diverged, solver.elapsed(state, splits[-1])


def test_terms_solvers_are_registered_and_listed():
    assert TERMS_SOLVERS == ["euler_terms"]
    assert SOLVERS["euler_terms"] is EulerMaruyamaTerms
    assert {case[:2] for case in TERMS_CASES} == {
        ("euler_terms", "numpy"),
        ("euler_terms", "xoshiro"),
        ("euler_terms", "torch"),
    }


@pytest.mark.parametrize(("name", "increments", "path"), TERMS_CASES)
def test_terms_solver_conformance(small, name, increments, path, monkeypatch):
    """A stepper whose config round-trips; agrees with a numpy reference of
    theta <- theta - grad L dt + s_t theta (.) dW, dW = -sqrt(dt) z from its source's
    documented draws; the same bits whatever the advance splits and (per-trajectory
    sources) the chunk size; a trajectory with a huge s diverges alone."""
    import sgdsde.run.loop as loop

    solver = SOLVERS[name](increments=INCREMENTS.make(increments))
    assert isinstance(solver, Stepper)
    cfg = json.loads(json.dumps(to_config(solver)))
    assert SOLVERS.from_config(cfg) == solver and cfg["increments"]["name"] == increments
    model, data = small
    T, S, dt = 3, 30, 0.05
    scales = [0.1, 0.3, 0.05]
    problem = TermsProblem(
        _multiplicative(path, scales), model, data, T, model.n_params, dt, 1e10, 1e10, S
    )
    theta0 = model.init(trajectory_streams(1, T)["init"])
    got, diverged, time = _drive(solver, problem, theta0, 7, [0, 11, S])
    z = solver.increments.sampler(
        problem, trajectory_streams(7, T), device="cpu", dtype=torch.float64
    )(0, S).iso
    z = np.asarray(z.cpu()) if torch.is_tensor(z) else z
    ref = theta0.copy()
    for k in range(S):
        dW = -math.sqrt(dt) * z[:, k]
        ref = ref - dt * model.grad(ref, data.X, data.y) + np.array(scales)[:, None] * ref * dW
    assert np.all(diverged == -1)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(time, S * dt, rtol=1e-15)
    assert np.abs(got - theta0).max() > 1e-3
    pieces, _, _ = _drive(solver, problem, theta0, 7, [0, 1, 7, 8, 23, 29, S])
    np.testing.assert_array_equal(pieces, got)
    if solver.increments.per_trajectory:
        monkeypatch.setattr(loop, "BLOCK_ENTRIES", 7 * T * problem.noise_dim)
        chunked, _, _ = _drive(solver, problem, theta0, 7, [0, 13, S])
        np.testing.assert_array_equal(chunked, got)
    wild = TermsProblem(
        _multiplicative(path, [0.1, 0.3, 1e8]), model, data, T, model.n_params, dt, 1e10, 1e10, S
    )
    full, div, _ = _drive(solver, wild, theta0, 7, [0, S])
    assert div.tolist()[:2] == [-1, -1] and 0 <= div[2] <= S
    if solver.increments.per_trajectory:
        np.testing.assert_allclose(full[:2], got[:2], rtol=1e-12, atol=1e-15)


def test_terms_solver_refuses_a_noise_models_problem(small):
    from sgdsde.sde import NoiseCoefficients, SDEProblem

    model, data = small
    zeros = np.zeros(2)
    problem = SDEProblem(model, data, NoiseCoefficients(zeros, zeros, zeros), 0.1, 1e10, 4)
    theta0 = model.init(trajectory_streams(0, 2)["init"])
    with pytest.raises(ValueError, match="integrates SDETerms"):
        EulerMaruyamaTerms().init(problem, theta0, trajectory_streams(0, 2), "cpu")
    assert isinstance(SDETerms(diffusion=DiagonalDiffusion(_zero)).drift, GradientDrift)


def test_torch_model_under_torch_terms_equals_the_closed_form_under_kernels():
    """A torch.nn.Module MLP (``ModuleModel``, no numba kernels) under torch terms equals
    the closed-form two-layer ReLU with the same weights under numba kernels (its own
    predict/grad kernels for the loss drift): same seed, same xoshiro numbers, to
    round-off. Kernel terms refuse a model without kernels."""
    from sgdsde.data import teacher_student_sphere
    from sgdsde.models import ModuleModel, TwoLayerReLU

    data = teacher_student_sphere(n=7, d=3, teacher_width=2, n_test=5, seed=1)
    torch.manual_seed(3)
    module = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1, bias=False)
    )
    wrapped, relu = ModuleModel(module), TwoLayerReLU(d=3, m=4, bias=True)
    theta0 = np.stack([wrapped.flat_params(), 0.5 * wrapped.flat_params()])
    options = {"dt": 0.05, "n_steps": 60, "theta0": theta0, "seed": 11, "save_params": True}
    kernels = SDETerms(diffusion=DiagonalDiffusion(_scaled_state), params=[0.2])
    closed = simulate_sde(relu, data, kernels, **options)
    terms = SDETerms(diffusion=DiagonalDiffusion(lambda t, th: 0.2 * th))
    module_run = simulate_sde(wrapped, data, terms, **options)
    params = closed.params.values
    assert np.all(np.isfinite(params)) and not np.allclose(params[:, -1], params[:, 0])
    np.testing.assert_allclose(module_run.params.values, params, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(module_run.train_loss.values, closed.train_loss.values, rtol=1e-10)
    with pytest.raises(ValueError, match="numba kernels"):
        simulate_sde(wrapped, data, kernels, **options)
