"""Exact SGD against its SDE model (``sgdsde.analysis.compare``) and the ``SGDNoise`` model.

* ``SGDNoise``: G G^T = eta x the exact covariance of the label-noise minibatch gradient
  (every subset enumerated; no Monte Carlo).
* Weak order 1 in eta of SGD against its SDE at a fixed time t_end:
  - linear regression: exact moments (no Monte Carlo) of label-noise GD, of minibatch
    SGD, of their SDEs (for label-noise GD the Ornstein-Uhlenbeck closed form) and of
    Euler-Maruyama; the Monte Carlo estimates of ``compare_sgd_sde`` /
    ``weak_error_order`` must match them within K_SE standard errors;
  - a small diagonal network: SGD against the SDE at dt = eta/8 with common random
    numbers, Monte Carlo error asserted well below the weak error.
* ``compare_sgd_sde`` output structure, values and validation (the
  ``dln_label_noise_sde`` experiment is tested in test_experiments.py).

Slope tolerances. An order-1 weak approximation has error C eta + O(eta^2); over
eta in [eta_0/8, eta_0] the fitted log-log slope is 1 - O(eta_0 lambda t) where the
correction is computed exactly below for linear regression (local slopes 0.91-0.98 for
eta <= 0.04). The Monte Carlo slope adds log(1 +- 3 SE/err) / log 8 ~ +-0.03 for
SE/err < 0.1. Hence |slope - 1| < 0.2 for Monte Carlo fits (0.1 for exact ones): a
scheme of order 1/2 or 2 fails by a wide margin.
"""

from __future__ import annotations

import itertools
import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.linalg import expm

import sgdsde as s
from sgdsde.analysis import compare_sgd_sde, weak_error_order
from sgdsde.data import RegressionData
from sgdsde.dynamics import GD, SGD, simulate_sgd
from sgdsde.metrics import Metric, Params, TimeAverage
from sgdsde.models import DiagonalLinearNet, LinearRegression
from sgdsde.random import trajectory_streams
from sgdsde.sde.noise import (
    NOISE_MODELS,
    LabelNoise,
    SGDCovariance,
    SGDNoise,
    make_noise,
    noise_for_sgd,
)
from sgdsde.sde.solvers import BridgedEulerMaruyama, EulerMaruyamaTorch
from sgdsde.sde.solvers.base import SDEProblem

K_SE = 4.0  # Monte Carlo agreement: within 4 standard errors
SLOPE_TOL_MC = 0.2
SLOPE_TOL_EXACT = 0.1


def sq_norm(theta):
    """A user observable: |theta|^2 per trajectory."""
    return (theta**2).sum(axis=1)


# ===================================================================== SGDNoise


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(5)
    n, d, T = 5, 3, 2
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    model = DiagonalLinearNet(d=d, parametrization="uv")
    theta = rng.standard_normal((T, model.n_params))
    return model, RegressionData(X, y, X[:2], y[:2]), theta


def _exact_gradient_covariance(phi, r, B, delta, with_replacement):
    """Covariance of g = (1/B) sum_{s=1..B} (r_{i_s} + xi_s) phi_{i_s} over all index draws
    (every B-subset, or every ordered B-tuple with replacement) and xi ~ N(0, delta I):
    Cov = Cov_S(mean of r_i phi_i over S) + E_S[(delta / B^2) sum_s phi_{i_s} phi_{i_s}^T]."""
    n = phi.shape[0]
    draws = (
        list(itertools.product(range(n), repeat=B))
        if with_replacement
        else list(itertools.combinations(range(n), B))
    )
    grads = np.array([(r[list(S), None] * phi[list(S)]).mean(axis=0) for S in draws])
    centred = grads - grads.mean(axis=0)
    sampling = centred.T @ centred / len(draws)
    label = sum(phi[list(S)].T @ phi[list(S)] for S in draws) * delta / (B * B * len(draws))
    return sampling + label


@pytest.mark.parametrize("with_replacement", [False, True])
@pytest.mark.parametrize("B", [1, 2, 3, 5])
@pytest.mark.parametrize("delta", [0.0, 0.7])
def test_sgd_noise_is_eta_times_exact_minibatch_covariance(small, B, delta, with_replacement):
    model, data, theta = small
    eta = 0.3
    noise = SGDNoise(eta, B, delta, with_replacement)
    G = noise.diffusion_matrix(model, theta, data.X, data.y)
    GGt = np.einsum("tpk,tqk->tpq", G, G)
    phi = model.jacobian(theta, data.X)
    r = model.residuals(theta, data.X, data.y)
    for t in range(theta.shape[0]):
        exact = _exact_gradient_covariance(phi[t], r[t], B, delta, with_replacement)
        np.testing.assert_allclose(GGt[t], eta * exact, rtol=1e-10, atol=1e-14)
    # the label-noise part alone is delta/(B n) phi^T phi
    label_only = SGDNoise(eta, B, delta, with_replacement).coefficients(data.n, 1).label[0]
    assert math.isclose(label_only**2, eta * delta / (B * data.n), rel_tol=1e-12)


def test_sgd_noise_channels_and_registry(small):
    _, data, _ = small
    n = data.n
    assert NOISE_MODELS["sgd"] is SGDNoise
    noise = SGDNoise([0.1, 0.2], 2, 0.5)
    c = noise.coefficients(n, 2)
    np.testing.assert_allclose(c.label, LabelNoise(0.5, [0.1, 0.2], 2).coefficients(n, 2).label)
    np.testing.assert_allclose(c.sgd, SGDCovariance([0.1, 0.2], 2).coefficients(n, 2).sgd)
    assert not c.iso.any() and noise.n_traj == 2
    # GD: only the label channel, equal to LabelNoise(delta, eta, n)
    gd = SGDNoise(0.1, n, 0.5).coefficients(n, 1)
    assert gd.sgd[0] == 0 and gd.label[0] == LabelNoise(0.5, 0.1, n).coefficients(n, 1).label[0]
    cfg = noise.to_config()
    assert make_noise(cfg.pop("name"), **cfg).to_config() == noise.to_config()
    with pytest.raises(ValueError, match="label_noise must be finite and >= 0"):
        SGDNoise(0.1, 2, -1.0).coefficients(n, 1)
    with pytest.raises(ValueError, match="batch_size must be in"):
        SGDNoise(0.1, n + 1).coefficients(n, 1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        SGDNoise(0.0).coefficients(n, 1)


def test_noise_for_sgd():
    assert noise_for_sgd(GD(0.3), 0.1, 7) == SGDNoise(0.1, 7, 0.3, False)
    assert noise_for_sgd(SGD(2, 0.1, True), 0.05, 7) == SGDNoise(0.05, 2, 0.1, True)
    assert noise_for_sgd(SGD(batch_size=[1, None]), 0.1, 7).batch_size == [1, 7]


# ============================================ exact moments for linear regression
#
# f = theta . x: the gradient is affine in theta and its minibatch covariance quadratic,
# so the first two moments (m, S = E theta theta^T) of SGD, of Euler-Maruyama and of the
# SDE obey closed affine recursions / a linear ODE, solved exactly here.


def _moment_terms(X, y, m, S, B, delta, with_replacement):
    n = X.shape[0]
    H, b = X.T @ X / n, X.T @ y / n
    cross = S @ H - np.outer(m, b)  # E[theta grad L^T]
    EggT = H @ S @ H - np.outer(H @ m, b) - np.outer(b, H @ m) + np.outer(b, b)
    q = np.einsum("ij,jk,ik->i", X, S, X) - 2 * y * (X @ m) + y**2  # E r_i^2
    c = 1.0 if with_replacement else (n - B) / max(n - 1, 1)
    cov = c / (B * n) * (np.einsum("i,ij,ik->jk", q, X, X) - n * EggT)
    cov += delta / (B * n) * X.T @ X  # E Cov[g | theta], minibatch + label noise
    return H, b, cross, EggT, cov


def _chain_moments(X, y, theta0, eta, h, k, B, delta, with_replacement=False):
    """k steps of theta <- theta - h grad L + noise of covariance h eta Cov: SGD itself
    when h = eta (E[g g^T] = grad grad^T + Cov), Euler-Maruyama at dt = h otherwise."""
    m, S = theta0.copy(), np.outer(theta0, theta0)
    for _ in range(k):
        H, b, cross, EggT, cov = _moment_terms(X, y, m, S, B, delta, with_replacement)
        S = S - h * (cross + cross.T) + h * h * EggT + h * eta * cov
        m = m - h * (H @ m - b)
    return m, S


def _sde_moments(X, y, theta0, eta, t, B, delta, with_replacement=False):
    """Exact moments at time t of d theta = -grad L dt + (eta Cov)^{1/2} dW (linear ODE)."""
    d = X.shape[1]
    N = d + d * d

    def rhs(z):
        m, S = z[:d], z[d:].reshape(d, d)
        H, b, cross, _, cov = _moment_terms(X, y, m, S, B, delta, with_replacement)
        return np.concatenate([b - H @ m, (-(cross + cross.T) + eta * cov).ravel()])

    c0 = rhs(np.zeros(N))
    A = np.zeros((N + 1, N + 1))
    A[:N, :N] = np.stack([rhs(e) - c0 for e in np.eye(N)], axis=1)
    A[:N, N] = c0
    z = expm(A * t) @ np.concatenate([theta0, np.outer(theta0, theta0).ravel(), [1.0]])
    return z[:d], z[d:N].reshape(d, d)


def _loss(X, y, m, S):
    n = X.shape[0]
    return 0.5 * np.trace(X.T @ X / n @ S) - m @ (X.T @ y / n) + y @ y / (2 * n)


@pytest.fixture(scope="module")
def linreg():
    rng = np.random.default_rng(0)
    n, d = 6, 3
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    return LinearRegression(d=d), RegressionData(X, y, X, y), 2.0 * np.ones(d)


def test_label_noise_sde_moments_are_the_ou_closed_form(linreg):
    """The moment ODE used below reproduces the Ornstein-Uhlenbeck closed form of the
    label-noise SDE: mean theta* + e^{-Ht}(theta0 - theta*), covariance
    (eta delta / (2n)) (I - e^{-2Ht}) (from G G^T = eta delta / n^2 X^T X = (eta delta/n) H)."""
    _, data, theta0 = linreg
    X, y, n = data.X, data.y, data.n
    H = X.T @ X / n
    star = np.linalg.solve(H, X.T @ y / n)
    eta, delta, t = 0.03, 0.5, 2.0
    m, S = _sde_moments(X, y, theta0, eta, t, n, delta)
    mean = star + expm(-H * t) @ (theta0 - star)
    cov = eta * delta / (2 * n) * (np.eye(3) - expm(-2 * H * t))
    np.testing.assert_allclose(m, mean, atol=1e-12)
    np.testing.assert_allclose(S - np.outer(m, m), cov, atol=1e-12)


def _slope(x, y):
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def test_linear_regression_label_noise_weak_order_one(linreg):
    """Label-noise GD vs its (OU) SDE at t_end = 2, eta = 0.04 .. 0.005.

    Exact: |E L(GD_k) - E L(OU_{k eta})| has slope 0.95 (no Monte Carlo). Monte Carlo:
    ``weak_error_order`` (SDE at dt = eta/8, common random numbers, 256 trajectories)
    has slope within 0.2 of 1, its standard errors are below 10 % of the weak errors
    (asserted), and every estimate agrees with the exact |E_GD - E_EM(eta/8)|."""
    model, data, theta0 = linreg
    X, y, n = data.X, data.y, data.n
    delta, t_end, ell = 0.5, 2.0, 8
    lrs = [0.04, 0.02, 0.01, 0.005]

    exact_vs_ou, exact_vs_em = [], []
    for lr in lrs:
        k = round(t_end / lr)
        gd = _loss(X, y, *_chain_moments(X, y, theta0, lr, lr, k, n, delta))
        ou = _loss(X, y, *_sde_moments(X, y, theta0, lr, t_end, n, delta))
        em = _loss(X, y, *_chain_moments(X, y, theta0, lr, lr / ell, k * ell, n, delta))
        exact_vs_ou.append(abs(gd - ou))
        exact_vs_em.append(gd - em)
    assert abs(_slope(lrs, exact_vs_ou) - 1) < SLOPE_TOL_EXACT, exact_vs_ou

    slope, _, table = weak_error_order(
        model, data, lrs, t_end, sgd=GD(delta), refine=ell, n_traj=256, theta0=theta0, seed=3
    )
    assert table.common_random_numbers.all()
    err, se = table.weak_error.values, table.weak_error_se.values
    assert np.all(se < 0.1 * err), (err, se)
    assert abs(slope - 1) < SLOPE_TOL_MC, (slope, err)
    np.testing.assert_array_less(np.abs(err - np.abs(exact_vs_em)), K_SE * se)
    # and the SDE at dt = eta/8 is close to the OU limit: most of the error is SGD's
    assert np.all(np.abs(exact_vs_em) > 0.8 * np.array(exact_vs_ou))


def test_linear_regression_minibatch_sgd_weak_order_one_exact(linreg):
    """Minibatch SGD with label noise (B = 2, with and without replacement) against the
    ``SGDNoise`` SDE, exact moments: slope within 0.1 of 1 for eta = 0.02 .. 0.0025."""
    _, data, theta0 = linreg
    X, y = data.X, data.y
    lrs, t_end = [0.02, 0.01, 0.005, 0.0025], 1.0
    for with_replacement in (False, True):
        errors = []
        for lr in lrs:
            k = round(t_end / lr)
            sgd = _chain_moments(X, y, theta0, lr, lr, k, 2, 0.3, with_replacement)
            sde = _sde_moments(X, y, theta0, lr, t_end, 2, 0.3, with_replacement)
            errors.append(abs(_loss(X, y, *sgd) - _loss(X, y, *sde)))
        assert abs(_slope(lrs, errors) - 1) < SLOPE_TOL_EXACT, (with_replacement, errors)


def test_minibatch_comparison_matches_exact_moments(linreg):
    """``compare_sgd_sde`` with minibatch label-noise SGD (independent runs, SDE with both
    noise channels): the SGD and SDE means of the train loss and of |theta|^2 agree with
    the exact moments of SGD and of Euler-Maruyama at dt = eta/4 within K_SE errors."""
    model, data, theta0 = linreg
    X, y = data.X, data.y
    lr, k, ell, B, delta = 0.1, 10, 4, 2, 0.3
    ds = compare_sgd_sde(
        model,
        data,
        lr,
        k,
        sgd=SGD(B, delta),
        refine=ell,
        n_traj=3000,
        theta0=theta0,
        observables=("train_loss", ("sq_norm", sq_norm)),
        save_steps=[0, k],
        seed=1,
    )
    assert ds.attrs["common_random_numbers"] == 0
    cfg = json.loads(ds.attrs["config"])
    assert cfg["noise"] == {
        "name": "sgd",
        "lr": lr,
        "batch_size": B,
        "label_noise": delta,
        "with_replacement": False,
    }
    exact = {
        "sgd": _chain_moments(X, y, theta0, lr, lr, k, B, delta),
        "sde": _chain_moments(X, y, theta0, lr, lr / ell, k * ell, B, delta),
    }
    for method, (m, S) in exact.items():
        last = ds.isel(step=-1).sel(dynamics=method)
        for name, value in (("train_loss", _loss(X, y, m, S)), ("sq_norm", np.trace(S))):
            got, se = float(last[f"{name}_mean"]), float(last[f"{name}_se"])
            assert abs(got - value) < K_SE * se, (method, name, got, value, se)
    # independent runs: the standard error of the difference is that of two means
    last = ds.isel(step=-1)
    np.testing.assert_allclose(
        last.weak_error_train_loss_se, np.hypot(*last.train_loss_se.values), rtol=1e-12
    )


# ======================================================== diagonal network order


def test_diagonal_network_weak_order_one():
    """Label-noise GD on a diagonal network (beta = u*v, u0 = 0.5, v0 = 0) against its
    SDE at dt = eta/8 (common random numbers) at t_end = 1, two test functions: slopes
    within 0.2 of 1, Monte Carlo standard errors below 20 % of the weak errors."""
    data = s.sparse_regression(n=10, d=6, k=2, n_test=50, seed=0)
    model = s.make_model("diagonal_linear", d=6, alpha=0.5)
    lrs = [0.04, 0.02, 0.01, 0.005]
    for observable in ("l1_norm", "train_loss"):
        slope, _, table = weak_error_order(
            model, data, lrs, 1.0, observable=observable, sgd=GD(1.0), refine=8, n_traj=256
        )
        err, se = table.weak_error.values, table.weak_error_se.values
        assert np.all(se < 0.2 * err), (observable, err, se)
        assert abs(slope - 1) < SLOPE_TOL_MC, (observable, slope, err)


# ================================================= compare_sgd_sde: format, values


@pytest.fixture(scope="module")
def dln():
    data = s.sparse_regression(n=8, d=5, k=2, n_test=40, seed=2)
    return s.make_model("diagonal_linear", d=5, alpha=0.6), data


def test_compare_structure_and_values(dln):
    model, data = dln
    lr, k, ell, M, conf = 0.05, 40, 4, 32, 0.9
    obs = ("train_loss", "l1_norm", ("u_sq", lambda th: (th[:, :5] ** 2).sum(axis=1)))
    ds = compare_sgd_sde(
        model,
        data,
        lr,
        k,
        sgd=GD(0.5),
        refine=ell,
        n_traj=M,
        observables=obs,
        confidence=conf,
        seed=4,
    )
    assert list(ds["dynamics"].values) == ["sgd", "sde"]
    assert ds.sizes == {"dynamics": 2, "step": 41}
    np.testing.assert_array_equal(ds.step, np.arange(k + 1))
    np.testing.assert_allclose(ds.time, ds.step * lr)
    np.testing.assert_array_equal(ds.sde_step, ds.step * ell)
    for name in ("train_loss", "l1_norm", "u_sq"):
        for suffix in ("mean", "se", "lower", "upper"):
            assert ds[f"{name}_{suffix}"].dims == ("dynamics", "step")
        assert ds[f"weak_error_{name}"].dims == ("step",)
        mean = ds[f"{name}_mean"].values
        # same initialization: identical means at time 0
        assert mean[0, 0] == mean[1, 0] and ds[f"weak_error_{name}"].values[0] == 0
        z = NormalDist().inv_cdf(0.5 + conf / 2)
        lo, hi, se = (ds[f"{name}_{x}"].values for x in ("lower", "upper", "se"))
        assert np.all(lo <= mean) and np.all(mean <= hi)
        np.testing.assert_allclose(hi - lo, 2 * z * se, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(
            ds[f"weak_error_{name}"], np.abs(mean[0] - mean[1]), rtol=1e-12, atol=0
        )
    assert (ds.n_valid == M).all() and (ds.diverged_fraction == 0).all()
    cfg = json.loads(ds.attrs["config"])
    assert cfg["kind"] == "sgd_vs_sde" and cfg["refine"] == ell and cfg["dt"] == lr / ell
    assert cfg["common_random_numbers"] and ds.attrs["common_random_numbers"] == 1
    assert cfg["observables"]["train_loss"] == "recorded" and "u_sq" in cfg["observables"]
    assert ds.attrs["sgd_seed_entropy"] == ds.attrs["sde_seed_entropy"] == "4"
    assert "normal approximation" in ds.attrs["confidence_interval"]

    # the user observable and the SGD side equal a direct simulate_sgd with the same seed
    direct = simulate_sgd(
        model,
        data,
        lr,
        n_steps=k,
        sgd=GD(0.5),
        n_traj=M,
        seed=4,
        save_params=True,
        save_steps=np.arange(k + 1),
    )
    u_sq = (direct.params.values[:, :, :5] ** 2).sum(axis=2).mean(axis=0)
    np.testing.assert_allclose(ds.u_sq_mean.sel(dynamics="sgd"), u_sq, rtol=1e-12)
    np.testing.assert_allclose(
        ds.train_loss_mean.sel(dynamics="sgd"), direct.train_loss.mean("traj"), rtol=1e-12
    )
    # common random numbers: the paired standard error is far below the unpaired one
    last = ds.isel(step=-1)
    assert float(last.weak_error_l1_norm_se) < 0.5 * float(np.hypot(*last.l1_norm_se.values))


def test_metric_observables_are_recorded_during_the_runs(dln, monkeypatch):
    """Observables given as metric objects (a function of theta, the model and the data;
    a time average) or as f(theta) are recorded by both simulators while they run: no
    parameters are saved, and the SGD means equal those from a direct run's parameters."""
    import sgdsde.analysis.compare as compare_module

    model, data = dln
    lr, k, M = 0.05, 12, 6
    calls = []

    def spy(simulate):
        def wrapped(*args, **kwargs):
            calls.append(kwargs)
            return simulate(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(compare_module, "simulate_sgd", spy(simulate_sgd))
    monkeypatch.setattr(compare_module, "simulate_sde", spy(compare_module.simulate_sde))

    def beta_error(theta, model, data):
        return ((model.linear_predictor(theta) - data.beta_star) ** 2).sum(axis=1)

    obs = [
        Metric("beta_error", beta_error),
        TimeAverage("l1_norm", window=4, save_as="l1_avg"),
        ("u_sq", lambda th: (th[:, :5] ** 2).sum(axis=1)),
        "l0_norm",
    ]
    ds = compare_sgd_sde(model, data, lr, k, sgd=GD(0.5), n_traj=M, observables=obs, seed=3)
    assert len(calls) == 2 and not any(c.get("save_params") for c in calls)
    assert [m.name for m in calls[0]["metrics"]] == ["beta_error", "l1_avg", "u_sq"]
    cfg = json.loads(ds.attrs["config"])
    assert cfg["observables"]["l1_avg"]["name"] == "time_average"
    assert cfg["observables"]["l0_norm"] == "recorded"
    direct = simulate_sgd(
        model,
        data,
        lr,
        n_steps=k,
        sgd=GD(0.5),
        n_traj=M,
        seed=3,
        save_params=True,
        save_steps=np.arange(k + 1),
    )
    theta = direct.params.values
    beta = theta[..., :5] * theta[..., 5:]
    want = ((beta - data.beta_star) ** 2).sum(axis=2).mean(axis=0)
    sgd = ds.sel(dynamics="sgd")
    np.testing.assert_allclose(sgd.beta_error_mean, want, rtol=1e-12)
    l1 = np.abs(beta).sum(axis=2)
    l1_avg = [l1[:, max(0, j - 3) : j + 1].mean(axis=1).mean() for j in range(k + 1)]
    np.testing.assert_allclose(sgd.l1_avg_mean, l1_avg, rtol=1e-12)
    np.testing.assert_allclose(sgd.l0_norm_mean, direct.l0_norm.mean("traj"), rtol=0)
    # weak_error_order takes a metric object as its observable too
    _, _, table = weak_error_order(
        model, data, [0.1, 0.05], 0.2, observable=obs[0], sgd=GD(0.5), refine=2, n_traj=4
    )
    assert table.attrs["observable"] == "beta_error" and np.all(table.weak_error > 0)
    with pytest.raises(ValueError, match="one value per trajectory"):
        compare_sgd_sde(
            model, data, lr, k, sgd=GD(0.5), n_traj=M, observables=["l0_norm", Params()]
        )


def test_refine_one_reproduces_label_noise_gd(dln):
    """At dt = eta with common random numbers the SDE *is* label-noise GD."""
    model, data = dln
    ds = compare_sgd_sde(model, data, 0.05, 60, sgd=GD(0.5), refine=1, n_traj=8)
    for name in ("train_loss", "test_loss", "l1_norm", "param_norm"):
        assert float(ds[f"weak_error_{name}"].max()) < 1e-12


def test_bridge_increments_sum_to_the_gd_normals(dln):
    """The fine normals of BridgedEulerMaruyama over each coarse step sum to sqrt(l) times
    the normals label-noise GD draws from the same "label_noise" stream, and have unit
    variance and no correlation across fine steps."""
    model, data = dln
    T, ell, n_coarse, n = 400, 4, 3, data.n
    solver = BridgedEulerMaruyama(ell)
    problem = SDEProblem(
        model, data, LabelNoise(0.5, 0.1, n).coefficients(n, T), 0.1 / ell, 1e10, n_coarse * ell
    )
    state = solver.init(
        problem, model.init(trajectory_streams(0, T)["init"]), trajectory_streams(9, T)
    )
    fine = solver._draw(state, 0).label.reshape(T, n_coarse, ell, n)
    coarse = np.stack(
        [g.standard_normal((n_coarse, n)) for g in trajectory_streams(9, T)["label_noise"]]
    )
    np.testing.assert_allclose(fine.sum(axis=2) / math.sqrt(ell), coarse, atol=1e-12)
    flat = fine.reshape(T * n_coarse, ell * n)
    cov = np.cov(flat, rowvar=False)
    assert np.abs(np.diag(cov) - 1).max() < 0.15
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.15
    with pytest.raises(ValueError, match="label channel only"):
        solver.init(
            SDEProblem(model, data, SGDNoise(0.1, 2).coefficients(n, T), 0.1), np.zeros((T, 10)), {}
        )


def test_crn_result_does_not_depend_on_the_save_grid(dln):
    model, data = dln
    a = compare_sgd_sde(model, data, 0.05, 30, sgd=GD(0.5), n_traj=4, save_steps=[30])
    b = compare_sgd_sde(model, data, 0.05, 30, sgd=GD(0.5), n_traj=4, save_steps=[0, 7, 30])
    np.testing.assert_array_equal(
        a.train_loss_mean.isel(step=-1).values, b.train_loss_mean.isel(step=-1).values
    )


def test_common_random_numbers_switch(dln):
    model, data = dln
    off = compare_sgd_sde(model, data, 0.05, 5, sgd=GD(0.5), n_traj=4, common_random_numbers=False)
    assert off.attrs["common_random_numbers"] == 0
    assert off.attrs["sde_seed_entropy"] != off.attrs["sgd_seed_entropy"]
    with pytest.raises(ValueError, match="minibatch SGD has no Brownian path"):
        compare_sgd_sde(model, data, 0.05, 5, sgd=SGD(2), n_traj=4, common_random_numbers=True)
    # common random numbers need increments that are GD's normals (not xoshiro's)
    with pytest.raises(ValueError, match="not the normals label-noise GD draws"):
        compare_sgd_sde(
            model,
            data,
            0.05,
            5,
            sgd=GD(0.5),
            n_traj=4,
            solver=EulerMaruyamaTorch(increments="xoshiro"),
            common_random_numbers=True,
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"lr": [0.1, 0.2]}, "lr must be a finite number > 0"),
        ({"n_steps": 0}, "n_steps must be a positive integer"),
        ({"refine": 0}, "refine must be an integer >= 1"),
        ({"n_traj": 1}, "n_traj must be an integer >= 2"),
        ({"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
        ({"observables": ("train_loss", "nope")}, "unknown observable 'nope'"),
        ({"observables": ()}, "observables is empty"),
        ({"observables": [("f", 3)]}, "must map to a callable"),
        ({"observables": ["train_loss", "train_loss"]}, "given twice"),
        ({"observables": [("f", lambda th: th)]}, r"returned shape"),
        ({"sgd": SGD(batch_size=[1, 2])}, "must be a single value"),
        ({"sgd": "gd"}, "sgd must be a sgdsde.dynamics.SGD"),
        ({"noise": "label_noise"}, "noise must be a sgdsde.sde noise model"),
        ({"noise": LabelNoise([0.1, 0.2], 0.1)}, "one setting"),
        ({"solver": "rk4"}, "unknown solver 'rk4'"),
        ({"seed": [1, 2]}, "seed must be one int"),
        ({"save_steps": [11]}, r"steps must lie in \[0, 10\]"),
        ({"common_random_numbers": "yes"}, "common_random_numbers must be"),
    ],
)
def test_validation(dln, kwargs, match):
    model, data = dln
    kw = {"lr": 0.05, "n_steps": 10, "n_traj": 4, "sgd": GD(0.1)}
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compare_sgd_sde(model, data, kw.pop("lr"), kw.pop("n_steps"), **kw)


def test_weak_error_order_validation(dln):
    model, data = dln
    with pytest.raises(ValueError, match="not a multiple of lr"):
        weak_error_order(model, data, [0.3, 0.1], 1.0, sgd=GD(0.1), n_traj=4)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        weak_error_order(model, data, [0.1, 0.1], 1.0, sgd=GD(0.1), n_traj=4)
    with pytest.raises(ValueError, match="cannot fit"):
        weak_error_order(model, data, [0.1, 0.05], 1.0, sgd=GD(0.1), refine=1, n_traj=4)
    with pytest.raises(ValueError, match="t_end must be a finite number > 0"):
        weak_error_order(model, data, [0.1, 0.05], -1.0, n_traj=4)
