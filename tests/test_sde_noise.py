"""Noise models of the SDE: diffusion matrices against hand-written formulas and against
the exact minibatch-gradient covariance (all subsets enumerated), and the VJP-based
diffusion product the solvers use against ``diffusion_matrix @ dW``.

All comparisons are deterministic (no Monte Carlo): tolerances are round-off.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest

from sgdsde.data import RegressionData
from sgdsde.models import DiagonalLinearNet
from sgdsde.registry import Registry, to_config
from sgdsde.sde import (
    NOISE_MODELS,
    GradientFlow,
    Isotropic,
    LabelNoise,
    NoiseCoefficients,
    NoiseModel,
    SGDCovariance,
    SGDNoise,
    StabilizedLoss,
    make_noise,
)
from sgdsde.sde.solvers.base import Increments, SDEProblem, diffusion_product
from sgdsde.sde.solvers.euler_numba import em_steps_numba
from sgdsde.sde.solvers.euler_torch import em_steps_torch

N, D, T = 5, 3, 3
RTOL = 1e-12


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(123)
    X = rng.standard_normal((N, D))
    y = rng.standard_normal(N)
    data = RegressionData(X, y, X[:2], y[:2])
    model = DiagonalLinearNet(d=D, parametrization="uv")
    theta = rng.standard_normal((T, model.n_params))
    phi = model.jacobian(theta, X)  # (T, n, p)
    r = model.residuals(theta, X, y)  # (T, n)
    return model, data, theta, phi, r


def gram(G):
    return np.einsum("tpk,tqk->tpq", G, G)


# ------------------------------------------------------------------ G G^T formulas


def test_label_noise_formula(setup):
    model, data, theta, phi, _ = setup
    eta, delta, B = np.array([0.1, 0.2, 0.3]), np.array([0.5, 1.0, 0.0]), 2
    noise = LabelNoise(delta, eta, B)
    G = noise.diffusion_matrix(model, theta, data.X, data.y)
    assert G.shape == (T, model.n_params, 2 * N + model.n_params)
    expected = (eta * delta / (N * B))[:, None, None] * np.einsum("tip,tiq->tpq", phi, phi)
    np.testing.assert_allclose(gram(G), expected, rtol=RTOL, atol=1e-15)


def test_stabilized_loss_is_label_noise_with_twice_the_level(setup):
    model, data, theta, _, _ = setup
    level, eta, B = [0.01, 0.2, 0.05], 0.1, 3
    a = StabilizedLoss(level, eta, B)
    b = LabelNoise(2.0 * np.array(level), eta, B)
    ca, cb = a.coefficients(N, T), b.coefficients(N, T)
    for name in ("label", "sgd", "iso"):
        np.testing.assert_array_equal(getattr(ca, name), getattr(cb, name))
    np.testing.assert_array_equal(
        a.diffusion_matrix(model, theta, data.X, data.y),
        b.diffusion_matrix(model, theta, data.X, data.y),
    )


def test_sgd_covariance_formula(setup):
    model, data, theta, phi, r = setup
    eta, B = 0.3, 2
    P = np.eye(N) - np.ones((N, N)) / N
    for with_replacement, c in ((False, (N - B) / (N - 1)), (True, 1.0)):
        G = SGDCovariance(eta, B, with_replacement).diffusion_matrix(model, theta, data.X, data.y)
        Rphi = r[:, :, None] * phi  # diag(r) phi
        expected = eta * c / (B * N) * np.einsum("tip,ij,tjq->tpq", Rphi, P, Rphi)
        np.testing.assert_allclose(gram(G), expected, rtol=RTOL, atol=1e-15)


def _minibatch_covariance(phi_t, r_t, B, with_replacement):
    """Exact covariance of (1/B) sum_{i in S} r_i grad f(x_i), S enumerated uniformly."""
    n = phi_t.shape[0]
    per_example = r_t[:, None] * phi_t  # (n, p)
    if with_replacement:
        batches = list(itertools.product(range(n), repeat=B))
    else:
        batches = list(itertools.combinations(range(n), B))
    grads = np.array([per_example[list(S)].mean(axis=0) for S in batches])
    mean = grads.mean(axis=0)
    assert np.allclose(mean, per_example.mean(axis=0))  # unbiased
    dev = grads - mean
    return dev.T @ dev / len(batches)


@pytest.mark.parametrize("with_replacement", [False, True])
@pytest.mark.parametrize("B", [1, 2, 3, N])
def test_sgd_covariance_is_eta_times_minibatch_covariance(setup, B, with_replacement):
    model, data, theta, phi, r = setup
    eta = 0.7
    noise = SGDCovariance(eta, B, with_replacement)
    GGt = gram(noise.diffusion_matrix(model, theta, data.X, data.y))
    for t in range(T):
        exact = _minibatch_covariance(phi[t], r[t], B, with_replacement)
        np.testing.assert_allclose(GGt[t], eta * exact, rtol=1e-11, atol=1e-14)


def test_isotropic_and_gradient_flow(setup):
    model, data, theta, _, _ = setup
    p = model.n_params
    scale = np.array([0.1, 0.0, 2.0])
    G = Isotropic(scale).diffusion_matrix(model, theta, data.X, data.y)
    expected = (scale**2)[:, None, None] * np.eye(p)
    np.testing.assert_allclose(gram(G), expected, rtol=RTOL, atol=0)
    G0 = GradientFlow().diffusion_matrix(model, theta, data.X, data.y)
    assert np.all(G0 == 0)


# ------------------------------------------------- the product the solvers compute


@dataclasses.dataclass(frozen=True)
class _AllChannels(NoiseModel):
    """Test-only noise model using the three channels at once, distinct per trajectory."""

    name = "all_channels"

    def coefficients(self, n, n_traj):
        base = np.arange(1, n_traj + 1, dtype=np.float64)
        return NoiseCoefficients(0.3 * base, 0.7 / base, 0.2 * base)


def _random_dW(rng, p):
    return rng.standard_normal((T, N)), rng.standard_normal((T, N)), rng.standard_normal((T, p))


def test_diffusion_product_equals_matrix(setup):
    model, data, theta, _, _ = setup
    noise = _AllChannels()
    rng = np.random.default_rng(5)
    dWl, dWs, dWi = _random_dW(rng, model.n_params)
    G = noise.diffusion_matrix(model, theta, data.X, data.y)
    expected = np.einsum("tpk,tk->tp", G, np.concatenate([dWl, dWs, dWi], axis=1))
    got = diffusion_product(model, theta, data.X, data.y, noise.coefficients(N, T), dWl, dWs, dWi)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("solver", ["numba", "torch"])
def test_solver_step_is_drift_plus_diffusion_matrix_times_dW(setup, solver):
    """One EM step of the solvers: theta_1 = theta_0 - grad L dt + G dW, dW = -sqrt(dt) N."""
    model, data, theta, _, _ = setup
    noise = _AllChannels()
    dt = 0.01
    rng = np.random.default_rng(6)
    z, u, zeta = _random_dW(rng, model.n_params)
    inc = Increments(0, z[:, None].copy(), u[:, None].copy(), zeta[:, None].copy())
    problem = SDEProblem(model, data, noise.coefficients(N, T), dt)
    if solver == "numba":
        theta1 = em_steps_numba(problem, theta.copy(), inc)
    else:
        theta1 = em_steps_torch(problem, theta, inc)
    G = noise.diffusion_matrix(model, theta, data.X, data.y)
    dW = -math.sqrt(dt) * np.concatenate([z, u, zeta], axis=1)
    expected = theta - model.grad(theta, data.X, data.y) * dt + np.einsum("tpk,tk->tp", G, dW)
    np.testing.assert_allclose(theta1, expected, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------- registry, errors


def test_registry_and_config_round_trip():
    assert {
        "gradient_flow",
        "label_noise",
        "stabilized_loss",
        "sgd_covariance",
        "isotropic",
    } <= set(NOISE_MODELS)
    for noise in (
        GradientFlow(),
        LabelNoise([0.1, 0.2], 0.05, 4),
        StabilizedLoss(0.01, [0.1, 0.2]),
        SGDCovariance(0.1, 2, True),
        Isotropic(0.3),
    ):
        cfg = noise.to_config()
        rebuilt = make_noise(cfg.pop("name"), **cfg)
        assert rebuilt == noise or rebuilt.to_config() == noise.to_config()
        got, want = rebuilt.coefficients(N, 2), noise.coefficients(N, 2)
        for field in ("label", "sgd", "iso"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


@pytest.mark.parametrize(
    ("noise", "match"),
    [
        (lambda: LabelNoise(0.1, 0.0), "lr must be > 0"),
        (lambda: LabelNoise(-0.1, 0.1), "delta must be finite and >= 0"),
        (lambda: LabelNoise(np.nan, 0.1), "delta must be finite"),
        (lambda: LabelNoise(0.1, 0.1, N + 1), "batch_size must be in"),
        (lambda: LabelNoise(0.1, 0.1, 0), "batch_size must be in"),
        (lambda: SGDCovariance(0.1, N + 1), "batch_size must be in"),
        (lambda: SGDCovariance(-1.0), "lr must be"),
        (lambda: Isotropic(-1.0), "scale must be finite and >= 0"),
        (lambda: StabilizedLoss(-0.1, 0.1), "level must be finite and >= 0"),
        (lambda: LabelNoise([0.1, 0.2, 0.3, 0.4], 0.1), "trajectories"),
    ],
)
def test_invalid_parameters(noise, match):
    # built inside the check: a noise model refuses a bad field at construction (and
    # what depends on the data, B <= n, and on T, in coefficients)
    with pytest.raises(ValueError, match=match):
        noise().coefficients(N, T)


#: A valid value and invalid ones for every field name of the noise models.
_GOOD = {
    "lr": 0.1,
    "batch_size": 2,
    "delta": 0.5,
    "label_noise": 0.5,
    "level": 0.01,
    "scale": 0.3,
    "with_replacement": False,
}
_BAD = {
    "lr": [0.0, -1.0, np.inf, "0.1", [0.1, -0.1], True],
    "batch_size": [2.5, 0, -1, "4", [2, 2.5], True],
    "delta": [-0.1, np.nan, "1"],
    "label_noise": [-0.1, np.inf, [0.1, -1.0]],
    "level": [-0.01, np.nan],
    "scale": [-1.0, np.inf],
    "with_replacement": ["yes", 1, None],
}


@pytest.mark.parametrize("name", sorted(NOISE_MODELS))
def test_every_field_is_checked_at_construction(name):
    """Every registered noise model refuses every bad value of every field when it is
    built (no data or trajectory count needed), naming the field."""
    cls = NOISE_MODELS[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    good = {f: _GOOD[f] for f in fields}
    cls(**good)  # valid
    for field in fields:
        for bad in _BAD[field]:
            with pytest.raises(ValueError, match=field):
                cls(**{**good, field: bad})


def test_sgd_noise_refuses_a_fractional_batch_size():
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, n\], integers \(got 2.5\)"):
        SGDNoise(lr=0.1, batch_size=2.5)
    with pytest.raises(ValueError, match="disagree in length"):
        SGDNoise(lr=[0.1, 0.2], batch_size=[1, 2, 3])
    assert SGDNoise(lr=np.array([0.1, 0.2]), batch_size=np.array([1, 2])).n_traj == 2


def test_noise_registry_round_trips_through_json_configs():
    assert isinstance(NOISE_MODELS, Registry)
    for noise in (
        GradientFlow(),
        LabelNoise([0.1, 0.2], 0.05, 4),
        SGDNoise(0.1, np.array([1, 2]), 0.5, True),
        Isotropic(0.3),
    ):
        cfg = json.loads(json.dumps(to_config(noise)))
        rebuilt = NOISE_MODELS.from_config(cfg)
        assert rebuilt.to_config() == noise.to_config()
        assert make_noise(**cfg).to_config() == noise.to_config()


def test_make_noise_errors():
    with pytest.raises(ValueError, match="unknown noise model 'nope'"):
        make_noise("nope")
    with pytest.raises(ValueError, match="bad arguments for noise 'label_noise'"):
        make_noise("label_noise", delta=0.1, lr=0.1, wrong=1)
    with pytest.raises(ValueError, match="disagree in length"):
        _ = LabelNoise([0.1, 0.2], [0.1, 0.2, 0.3]).n_traj
