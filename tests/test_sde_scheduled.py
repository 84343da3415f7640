"""The SDE of SGD with a step-size schedule (``ScheduledNoise``): label-noise GD with a
schedule *is* its Euler-Maruyama scheme at m = 1 (same numbers), a constant schedule
gives the very bits of the unscheduled path, and on linear regression (an OU process
whose diffusion follows eta(t)) the moments at the end of a two-phase schedule match the
EM chain exactly (Monte Carlo, K_SE standard errors) and the continuous OU closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.linalg import expm

from sgdsde import GD, simulate_sgd, sparse_regression
from sgdsde.data import RegressionData
from sgdsde.dynamics.schedules import Constant, StepDecay
from sgdsde.models import DiagonalLinearNet, LinearRegression
from sgdsde.sde import Isotropic, LabelNoise, ScheduledNoise, SGDNoise, simulate_sde

K_SE = 4.0


@pytest.fixture(scope="module")
def dln():
    data = sparse_regression(n=20, d=30, k=3, n_test=50, seed=1)
    return DiagonalLinearNet(d=30, alpha=0.3), data


SCHEDULES = [
    StepDecay(0.1, at=(0.3,), factors=(4.0,)),
    StepDecay(0.1, at=(0.7,), factors=(2.0,)),
    Constant(0.1),
]


@pytest.mark.parametrize("solver", ["euler_numba", "euler_torch"])
def test_label_noise_gd_with_a_schedule_is_euler_maruyama(dln, solver):
    """GD with label noise and per-trajectory step decays == the scheduled SDE at m = 1
    (dt_k = eta_k, a = sqrt(eta_k delta / n^2)) driven by the same normals, in one call;
    the time coordinate is t_k = sum_{j<k} eta_j."""
    model, data = dln
    n_steps, delta = 200, [0.05, 0.2, 0.1]
    save = np.arange(0, n_steps + 1, 20)
    kw = {"n_steps": n_steps, "seed": 7, "save_params": True, "save_steps": save}
    sgd = simulate_sgd(model, data, SCHEDULES, sgd=GD(delta), **kw)
    noise = ScheduledNoise(LabelNoise(delta, 0.1, data.n), SCHEDULES)
    sde = simulate_sde(model, data, noise, solver=solver, **kw)
    assert not sgd.diverged.any() and not sde.diverged.any()
    np.testing.assert_allclose(sde.params, sgd.params, rtol=1e-10, atol=1e-12)
    times = np.stack([np.concatenate([[0], np.cumsum(s.values(n_steps))])[save] for s in SCHEDULES])
    np.testing.assert_allclose(sde.time, times, rtol=1e-12)
    np.testing.assert_allclose(sgd.time, times, rtol=1e-12)
    # the schedule matters: a constant step size ends elsewhere
    const = simulate_sde(model, data, LabelNoise(delta, 0.1, data.n), dt=0.1, solver=solver, **kw)
    assert np.abs(const.params.values[0, -1] - sde.params.values[0, -1]).max() > 1e-3
    np.testing.assert_array_equal(const.params.values[2], sde.params.values[2])
    np.testing.assert_allclose(sde.dt, 0.1)
    np.testing.assert_allclose(sde.lr, 0.1)


@pytest.mark.parametrize("solver", ["euler_numba", "euler_torch", "euler_gemm"])
@pytest.mark.parametrize("m", [1, 3])
def test_constant_schedule_gives_the_same_bits(dln, solver, m):
    """ScheduledNoise(noise, Constant(eta), m) is noise at dt = eta / m, bit for bit."""
    model, data = dln
    n_steps, delta = 60, [0.05, 0.2, 0.0]
    kw = {"seed": 3, "solver": solver, "save_params": True, "save_steps": np.arange(0, 61, 6) * m}
    noise = SGDNoise(0.1, batch_size=2, label_noise=delta)
    scheduled = ScheduledNoise(noise, Constant(0.1), steps_per_lr=m)
    a = simulate_sde(model, data, scheduled, n_steps=n_steps * m, **kw)
    b = simulate_sde(model, data, noise, dt=0.1 / m, n_steps=n_steps * m, **kw)
    for name in ("params", "train_loss", "test_loss", "time", "l0_norm", "noise_label", "dt"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@pytest.fixture(scope="module")
def ou():
    """LinearRegression with label noise: d theta = -H (theta - theta*) dt + G dW with
    G G^T = eta(t) delta / (n B) X^T X = eta(t) (delta / B) H, H = X^T X / n."""
    X = np.array([[1.0, 0.5], [0.3, -1.2], [-0.8, 0.9]])
    y = np.array([0.7, -0.4, 1.1])
    data = RegressionData(X, y, X, y)
    H = X.T @ X / 3
    theta_star = np.linalg.solve(H, X.T @ y / 3)
    return LinearRegression(d=2), data, H, theta_star, theta_star + np.array([2.0, -1.5])


def _em_chain_moments(H, theta_star, theta0, etas, m, c):
    """Exact moments of EM with dt_j = eta_{j // m} / m and G G^T = eta c H:
    m_{j+1} - theta* = A_j (m_j - theta*), C_{j+1} = A_j C_j A_j^T + eta c H dt_j."""
    mean, cov = theta0 - theta_star, np.zeros_like(H)
    for eta in np.repeat(etas, m):
        dt = eta / m
        A = np.eye(len(theta0)) - H * dt
        mean, cov = A @ mean, A @ cov @ A.T + eta * c * H * dt
    return theta_star + mean, cov


def _ou_moments(H, theta_star, theta0, phases, c):
    """Continuous OU with piecewise-constant eta: phases [(eta, duration)]; H commutes
    with G G^T = eta c H, so C(t) = e^{-Ht} C(0) e^{-Ht} + (eta c / 2)(I - e^{-2Ht})."""
    mean, cov = theta0 - theta_star, np.zeros_like(H)
    for eta, duration in phases:
        E = expm(-H * duration)
        mean = E @ mean
        cov = E @ cov @ E + eta * c / 2 * (np.eye(len(theta0)) - E @ E)
    return theta_star + mean, cov


@pytest.mark.parametrize("solver", ["euler_gemm", "euler_numba"])
def test_ou_moments_after_a_two_phase_schedule(ou, solver):
    """Two phases (eta, then eta / 4 from half the run on), m = 4 SDE steps per SGD step:
    the final mean and E|theta - m|^2 match the EM chain's exact moments within K_SE
    standard errors, and the chain is within 3 % of the continuous OU closed form (the
    SDE of label-noise GD with the schedule); the variance is the second phase's, not
    the first's (a constant-eta run ends with ~4x the trace)."""
    model, data, H, theta_star, theta0 = ou
    M, N, m, eta, delta = 4000, 40, 4, 0.5, 1.0
    schedule = StepDecay(eta, at=(0.5,), factors=(4.0,))
    noise = ScheduledNoise(LabelNoise(delta, eta, data.n), schedule, steps_per_lr=m)
    ds = simulate_sde(
        model, data, noise, solver=solver, n_steps=N * m, n_traj=M, theta0=theta0,
        save_params=True, save_steps=[0, N * m], seed=2,
    )  # fmt: skip
    final = ds["params"].isel(step=-1).values
    c = delta / data.n  # G G^T = eta (delta / B) H at B = n
    m_em, c_em = _em_chain_moments(H, theta_star, theta0, schedule.values(N), m, c)
    se_mean = final.std(axis=0, ddof=1) / math.sqrt(M)
    assert np.all(np.abs(final.mean(axis=0) - m_em) <= K_SE * se_mean)
    sq = ((final - m_em) ** 2).sum(axis=1)
    assert abs(sq.mean() - np.trace(c_em)) <= K_SE * sq.std(ddof=1) / math.sqrt(M)
    t_half = eta * N / 2
    m_ou, c_ou = _ou_moments(H, theta_star, theta0, [(eta, t_half), (eta / 4, t_half / 4)], c)
    np.testing.assert_allclose(m_em, m_ou, rtol=0.03, atol=0.03 * np.abs(m_ou).max())
    assert abs(np.trace(c_em) / np.trace(c_ou) - 1) < 0.03
    np.testing.assert_allclose(ds["time"].values[:, -1], t_half + t_half / 4)
    _, c_const = _ou_moments(H, theta_star, theta0, [(eta, t_half + t_half / 4)], c)
    assert np.trace(c_const) > 2.5 * np.trace(c_ou)


def test_scheduled_noise_validation(dln):
    model, data = dln
    noise = LabelNoise(0.1, 0.1, 1)
    scheduled = ScheduledNoise(noise, Constant(0.1), steps_per_lr=2)
    with pytest.raises(ValueError, match="dt must be None"):
        simulate_sde(model, data, scheduled, dt=0.1, n_steps=10)
    with pytest.raises(ValueError, match="dt is required"):
        simulate_sde(model, data, noise, n_steps=10)
    with pytest.raises(ValueError, match="not a multiple of steps_per_lr"):
        simulate_sde(model, data, scheduled, n_steps=11)
    with pytest.raises(ValueError, match="needs euler_gemm, euler_numba or euler_torch"):
        simulate_sde(model, data, scheduled, n_steps=10, solver="torchsde")
    with pytest.raises(ValueError, match="steps_per_lr must be an integer"):
        ScheduledNoise(noise, Constant(0.1), steps_per_lr=0)
    with pytest.raises(ValueError, match="schedule must be a step-size schedule"):
        ScheduledNoise(noise, 0.1)
    with pytest.raises(ValueError, match="one schedule per trajectory"):
        ScheduledNoise(LabelNoise([0.1, 0.2, 0.3], 0.1, 1), [Constant(0.1)] * 2)
    with pytest.raises(ValueError, match="noise model with a step size lr"):
        ScheduledNoise(Isotropic(0.1), Constant(0.1))
    cfg = ScheduledNoise(noise, [Constant(0.1), StepDecay(0.1, (0.5,), (2.0,))]).to_config()
    assert cfg["name"] == "scheduled" and cfg["schedule"][1]["name"] == "step_decay"
