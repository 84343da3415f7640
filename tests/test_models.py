"""Conformance tests shared by every registered closed-form model.

Each model states its maths twice (numba kernels and a batched torch function); these
tests check the two against each other, against torch autograd, and against central
finite differences, on small problems. A new model gets them by adding one entry to
``CASES``; ``test_every_registered_model_has_a_case`` fails until it does.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from sgdsde.data import (
    RegressionData,
    linear_teacher_student_data,
    quartic_well_data,
    regression_1d,
    sparse_regression,
    teacher_student_sphere,
)
from sgdsde.models import (
    MODELS,
    DeepReLU,
    DiagonalLinearNet,
    GeluPair,
    LinearRegression,
    LinearTeacherStudent,
    QuarticWell,
    TanhNeuron,
    TwoLayerReLU,
    make_model,
    model_from_config,
)

N_TRAJ = 3


def _random_1d_data(n=6, seed=0):
    """y = sin(2x) on n uniform points of [-2, 2]: 1-D data for the scalar-input toys."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, (n, 1))
    y = np.sin(2.0 * x[:, 0])
    return RegressionData(x, y, x.copy(), y.copy(), {"generator": "test_sine"})


_SPARSE = sparse_regression(n=8, d=5, k=2, n_test=4, seed=0)
_SPHERE = teacher_student_sphere(n=7, d=3, teacher_width=2, n_test=4, seed=1)
_SINE = _random_1d_data()
_TEACHER = linear_teacher_student_data(n=9, d=4, n_test=4, seed=2)


@dataclasses.dataclass(frozen=True)
class Case:
    """A model, data to evaluate it on, whether its init is random, and the scale of the
    random parameters used by the derivative checks."""

    model: object
    data: object
    random_init: bool
    theta_scale: float = 0.7


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for par in ("uv", "uu-vv", "ww"):
        for scheme in ("constant", "gaussian"):
            model = DiagonalLinearNet(d=5, parametrization=par, alpha=0.3, init_scheme=scheme)
            cases[f"diagonal-{par}-{scheme}"] = Case(model, _SPARSE, scheme == "gaussian")
    for bias in (False, True):
        for scheme in ("gaussian", "zero_output", "one_d"):
            model = TwoLayerReLU(d=3, m=4, bias=bias, init_scheme=scheme, scales=(0.5, 0.3, 1.0))
            cases[f"relu-bias{int(bias)}-{scheme}"] = Case(model, _SPHERE, True)
    cases["relu-1d-paper"] = Case(
        TwoLayerReLU(d=1, m=6, bias=True, init_scheme="one_d", scales=(2.5, 2.5, 4.0)),
        regression_1d(),
        True,
    )
    cases["deep-relu-3layer"] = Case(DeepReLU(d=3, widths=(4, 3)), _SPHERE, True)
    cases["deep-relu-nobias"] = Case(DeepReLU(d=3, widths=(5,), bias=False), _SPHERE, True)
    cases["deep-relu-4layer-torchbias"] = Case(
        DeepReLU(d=3, widths=(3, 4, 2), bias_init="torch_default"), _SPHERE, True
    )
    cases["linear-zero"] = Case(LinearRegression(d=5), _SPARSE, False)
    cases["linear-gaussian"] = Case(LinearRegression(d=5, init_scale=0.5), _SPARSE, True)
    cases["quartic"] = Case(QuarticWell(mu=1.5, init_value=0.3), quartic_well_data(1.5), False)
    cases["tanh"] = Case(TanhNeuron(init_scale=0.8), _SINE, True)
    cases["gelu"] = Case(GeluPair(init_scale=0.8), _SINE, True)
    cases["teacher-depth2"] = Case(LinearTeacherStudent(d=4), _TEACHER, False)
    cases["teacher-depth3-gaussian"] = Case(
        LinearTeacherStudent(d=4, depth=3, init_scale=0.5, init_scheme="gaussian"),
        _TEACHER,
        True,
        theta_scale=1.0,
    )
    return cases


CASES = _cases()
CASE_IDS = list(CASES)


@pytest.fixture(params=CASE_IDS)
def case(request) -> Case:
    return CASES[request.param]


def _random_theta(case: Case, seed: int = 0) -> np.ndarray:
    """Gaussian parameters (T, p): generic, so no ReLU pre-activation sits at a kink."""
    rng = np.random.default_rng(seed)
    return case.theta_scale * rng.standard_normal((N_TRAJ, case.model.n_params))


def _scaled_atol(*arrays, rel=1e-12) -> float:
    """An absolute floor proportional to the magnitude of the compared values, so that a
    relative check survives entries that cancel to ~0."""
    return rel * max(1.0, *(float(np.max(np.abs(a))) for a in arrays))


def _torch(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# ----------------------------------------------------------------------------- registry


def test_every_registered_model_has_a_case():
    expected = {
        "diagonal_linear",
        "two_layer_relu",
        "deep_relu",
        "linear_regression",
        "quartic_well",
        "tanh_neuron",
        "gelu_pair",
        "linear_teacher_student",
    }
    assert expected <= set(MODELS)
    covered = {c.model.name for c in CASES.values()}
    assert set(MODELS) <= covered, f"add a test case for {set(MODELS) - covered}"
    for name, cls in MODELS.items():
        assert cls.name == name


# ------------------------------------------------------------------ (a) numba vs torch


def test_predict_matches_torch(case):
    model, X = case.model, case.data.X
    theta = _random_theta(case)
    f_numba = model.predict(theta, X)
    f_torch = model.predict_torch(_torch(theta), _torch(X)[None]).numpy()
    assert f_numba.shape == (N_TRAJ, X.shape[0])
    np.testing.assert_allclose(f_numba, f_torch, rtol=1e-12, atol=_scaled_atol(f_torch))


def test_predict_per_trajectory_inputs(case):
    model = case.model
    theta = _random_theta(case)
    X = np.random.default_rng(5).standard_normal((N_TRAJ, 4, model.input_dim))
    f_numba = model.predict(theta, X)
    f_torch = model.predict_torch(_torch(theta), _torch(X)).numpy()
    np.testing.assert_allclose(f_numba, f_torch, rtol=1e-12, atol=_scaled_atol(f_torch))
    # Trajectory t must see only its own inputs.
    for t in range(N_TRAJ):
        np.testing.assert_array_equal(f_numba[t], model.predict(theta[t], X[t])[0])


def test_linear_predictor_consistent(case):
    model, X = case.model, case.data.X
    theta = _random_theta(case)
    beta = model.linear_predictor(theta)
    if beta is None:
        return
    assert beta.shape == (N_TRAJ, model.input_dim)
    expected = beta @ X.T
    np.testing.assert_allclose(model.predict(theta, X), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_predictor_kernels(case, dtype):
    """beta_batch is linear_predictor; descend_batch is theta - J_beta(theta)^T g, with
    J_beta^T g = phi^T g for the identity inputs (the tested VJP), skipping frozen rows.
    Every model that is linear in its input has them (euler_gemm depends on it)."""
    model = case.model
    kernels = model.linear_predictor_kernels
    theta = _random_theta(case)
    if model.linear_predictor(theta) is None:
        assert kernels is None
        return
    assert kernels is not None
    beta_batch, descend_batch = kernels
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    th = theta.astype(dtype)
    spec = np.ascontiguousarray(model.spec, dtype=dtype)
    B = np.empty((N_TRAJ, model.input_dim), dtype=dtype)
    beta_batch(th, spec, B)
    np.testing.assert_allclose(B, model.linear_predictor(theta), rtol=rtol, atol=rtol)

    g = np.random.default_rng(1).standard_normal((N_TRAJ, model.input_dim))
    expected = theta - model.vjp(theta, np.eye(model.input_dim), g)
    frozen = np.array([-1, 4, -1])
    new = theta.astype(dtype)
    descend_batch(new, g.astype(dtype), spec, B, frozen)
    alive = frozen < 0
    np.testing.assert_allclose(new[alive], expected[alive], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(
        B[alive], model.linear_predictor(new[alive].astype(np.float64)), rtol=rtol, atol=rtol
    )
    np.testing.assert_array_equal(new[~alive], theta[~alive].astype(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm_kernels_make_one_euler_step(case, dtype):
    """The euler_gemm pieces (M, Z = M X^T, head_forward, head_backward, G_M = G_Z X,
    descend) compose to predictions f_theta(X) and to theta - phi_theta(X)^T w (the
    tested VJP), skipping frozen rows."""
    model = case.model
    kern = model.gemm_kernels
    if kern is None:
        assert model.linear_predictor(_random_theta(case)) is None
        return
    X, n, d = case.data.X, case.data.X.shape[0], model.input_dim
    theta = _random_theta(case)
    rtol = 1e-11 if dtype == np.float64 else 5e-5
    th = theta.astype(dtype)
    spec = np.ascontiguousarray(model.spec, dtype=dtype)
    Xd = np.ascontiguousarray(X, dtype=dtype)
    M = np.empty((N_TRAJ * kern.rows, d), dtype=dtype)
    kern.first_layer(th, spec, M)
    Z = M @ Xd.T
    P = Z
    if kern.head_forward is not None:
        P = np.empty((N_TRAJ, n), dtype=dtype)
        kern.head_forward(Z, th, spec, P)
    f = model.predict(theta, X)
    np.testing.assert_allclose(P, f, rtol=rtol, atol=_scaled_atol(f, rel=rtol))

    w = np.random.default_rng(2).standard_normal((N_TRAJ, n)).astype(dtype)
    frozen = np.array([-1, 0, -1])
    GZ = w
    if kern.head_backward is not None:
        GZ = np.empty((N_TRAJ * kern.rows, n), dtype=dtype)
        kern.head_backward(Z, w, th, spec, frozen, GZ)
    kern.descend(th, np.ascontiguousarray(GZ @ Xd), spec, M, frozen)
    expected = theta - model.vjp(theta, X, w.astype(np.float64))
    alive = frozen < 0
    atol = _scaled_atol(expected, rel=rtol)
    np.testing.assert_allclose(th[alive], expected[alive], rtol=rtol, atol=atol)
    np.testing.assert_array_equal(th[~alive], theta[~alive].astype(dtype))
    M_new = np.empty_like(M)
    kern.first_layer(th, spec, M_new)
    rows = np.repeat(alive, kern.rows)
    np.testing.assert_array_equal(M[rows], M_new[rows])  # descend keeps M = first layer


# ------------------------------------------------------------------- (b) loss gradient


def test_grad_matches_autograd(case):
    model, data = case.model, case.data
    theta = _random_theta(case)
    theta_t = _torch(theta).requires_grad_(True)
    loss_t = model.loss_torch(theta_t, _torch(data.X)[None], _torch(data.y))
    np.testing.assert_allclose(model.loss(theta, data.X, data.y), loss_t.detach().numpy(), 1e-12)
    (grad_t,) = torch.autograd.grad(loss_t.sum(), theta_t)
    grad = model.grad(theta, data.X, data.y)
    assert grad.shape == theta.shape
    np.testing.assert_allclose(grad, grad_t.numpy(), rtol=1e-10, atol=_scaled_atol(grad, rel=1e-11))


def test_grad_matches_finite_differences(case):
    model, data = case.model, case.data
    theta = _random_theta(case)
    # Central differences: truncation error eps^2/6 |L'''| ~ 1e-13 and round-off
    # ~ 1e-16 |L| / eps ~ 1e-10 |L| for eps = 1e-6, so a 1e-6 relative / 1e-7 (1 + |L|)
    # absolute tolerance leaves three orders of margin without hiding an O(1) error.
    eps = 1e-6
    loss = model.loss(theta, data.X, data.y)
    fd = np.empty_like(theta)
    for j in range(model.n_params):
        step = np.zeros(model.n_params)
        step[j] = eps
        fd[:, j] = (
            model.loss(theta + step, data.X, data.y) - model.loss(theta - step, data.X, data.y)
        ) / (2 * eps)
    grad = model.grad(theta, data.X, data.y)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * (1.0 + float(np.max(loss))))


# -------------------------------------------------------------------------- (c) VJP


def test_vjp_matches_jacobian_and_torch(case):
    model, X = case.model, case.data.X
    theta = _random_theta(case)
    V = np.random.default_rng(3).standard_normal((N_TRAJ, X.shape[0]))
    vjp = model.vjp(theta, X, V)
    jac = model.jacobian(theta, X)
    assert jac.shape == (N_TRAJ, X.shape[0], model.n_params)
    from_jac = np.einsum("tip,ti->tp", jac, V)
    theta_t = _torch(theta).requires_grad_(True)
    f_t = model.predict_torch(theta_t, _torch(X)[None])
    (vjp_t,) = torch.autograd.grad((_torch(V) * f_t).sum(), theta_t)
    atol = _scaled_atol(vjp, from_jac, rel=1e-11)
    np.testing.assert_allclose(vjp, from_jac, rtol=1e-11, atol=atol)
    np.testing.assert_allclose(vjp, vjp_t.numpy(), rtol=1e-10, atol=atol)
    # A vector shared by all trajectories broadcasts.
    np.testing.assert_allclose(
        model.vjp(theta, X, V[0]), np.einsum("tip,i->tp", jac, V[0]), atol=atol
    )


def test_predict_with_vjp_torch_matches_numba(case):
    """The torch solvers' (f, phi^T w): closed forms (diagonal, linear, ReLU) or autograd."""
    model, X = case.model, case.data.X
    theta = _random_theta(case)
    W = np.random.default_rng(4).standard_normal((N_TRAJ, X.shape[0]))
    for X3 in (_torch(X)[None], _torch(np.broadcast_to(X, (N_TRAJ, *X.shape)).copy())):
        f, vjp = model.predict_with_vjp_torch(_torch(theta), X3)
        expected = model.vjp(theta, X, W)
        atol = _scaled_atol(expected, rel=1e-11)
        np.testing.assert_allclose(f.numpy(), model.predict(theta, X), rtol=1e-12, atol=atol)
        np.testing.assert_allclose(vjp(_torch(W)).numpy(), expected, rtol=1e-10, atol=atol)
        # Callable twice (torchsde takes the drift and the diffusion product from one pass).
        np.testing.assert_allclose(
            vjp(_torch(2 * W)).numpy(), 2 * expected, rtol=1e-10, atol=2 * atol
        )


# ------------------------------------------------------------ (d) per-example gradients


def test_per_example_grads_match_torch(case):
    model = case.model
    theta = _random_theta(case)
    batches = np.random.default_rng(4).standard_normal((N_TRAJ, 3, model.input_dim))
    per_example = model.per_example_grads(theta, batches)
    assert per_example.shape == (N_TRAJ, 3, model.n_params)
    for t in range(N_TRAJ):
        Xt = _torch(batches[t : t + 1])

        def f(th, Xt=Xt):
            return model.predict_torch(th[None], Xt)[0]

        expected = torch.autograd.functional.jacobian(f, _torch(theta[t])).numpy()
        np.testing.assert_allclose(
            per_example[t], expected, rtol=1e-10, atol=_scaled_atol(expected, rel=1e-11)
        )


# ----------------------------------------------------------------------- (e) Hessian


def test_hessian_closed_form_matches_autograd(case):
    model, data = case.model, case.data
    theta = _random_theta(case)
    auto = model.hessian_autograd(theta, data.X, data.y)
    assert auto.shape == (N_TRAJ, model.n_params, model.n_params)
    closed = model.hessian_closed_form(theta, data.X, data.y)
    if closed is None:
        np.testing.assert_array_equal(model.hessian(theta, data.X, data.y), auto)
        return
    assert closed.shape == auto.shape
    np.testing.assert_allclose(closed, np.swapaxes(closed, 1, 2), atol=_scaled_atol(closed))
    np.testing.assert_allclose(closed, auto, rtol=1e-9, atol=_scaled_atol(auto, rel=1e-10))
    # Per-trajectory inputs take the same path.
    X3 = np.broadcast_to(data.X, (N_TRAJ, *data.X.shape))
    np.testing.assert_allclose(model.hessian_closed_form(theta, X3, data.y), closed, atol=1e-12)


def test_linear_regression_hessian_is_covariance():
    model, data = LinearRegression(d=5), _SPARSE
    theta = np.random.default_rng(0).standard_normal((2, 5))
    H = model.hessian(theta, data.X, data.y)
    np.testing.assert_allclose(H[0], data.X.T @ data.X / data.n, rtol=1e-12)
    np.testing.assert_array_equal(H[0], H[1])
    top = np.linalg.eigvalsh(data.X.T @ data.X / data.n)[-1]
    np.testing.assert_allclose(model.top_hessian_eigenvalue(theta, data.X, data.y), top)
    assert top > 0


def test_quartic_well_hessian_and_loss():
    mu = 1.5
    model, data = QuarticWell(mu=mu), quartic_well_data(mu)
    theta = np.array([[-1.3], [0.0], [0.4], [np.sqrt(mu)]])
    th = theta[:, 0]
    np.testing.assert_allclose(model.hessian(theta, data.X, data.y)[:, 0, 0], 3 * th**2 - mu)
    # Curvature 2 mu > 0 at the minima +-sqrt(mu); -mu < 0 at the invariant point 0.
    np.testing.assert_allclose(model.top_hessian_eigenvalue(theta[3:], data.X, data.y), 2 * mu)
    loss = model.loss(theta, data.X, data.y)
    np.testing.assert_allclose(loss, th**4 / 4 - mu * th**2 / 2 + mu**2 / 4, atol=1e-15)
    np.testing.assert_allclose(loss - mu**2 / 4, model.potential(theta), atol=1e-15)
    np.testing.assert_allclose(model.grad(theta, data.X, data.y)[:, 0], th**3 - mu * th, atol=1e-15)


def test_teacher_student_hessian_psd_at_teacher():
    model, data = LinearTeacherStudent(d=4, depth=2), _TEACHER
    # W1 = W2 = sqrt(beta*) interpolates: zero residuals leave H = phi^T phi / n >= 0.
    w = np.sqrt(data.beta_star)
    theta = np.concatenate([w, w])[None]
    np.testing.assert_allclose(model.loss(theta, data.X, data.y), 0.0, atol=1e-28)
    eig = np.linalg.eigvalsh(model.hessian(theta, data.X, data.y)[0])
    assert eig[-1] > 0 and eig[0] > -1e-12


# -------------------------------------------------------------------------- (f) init


def test_init_reproducible_and_seeded(case):
    model = case.model
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(11).spawn(N_TRAJ)]
    again = [np.random.default_rng(s) for s in np.random.SeedSequence(11).spawn(N_TRAJ)]
    other = [np.random.default_rng(s) for s in np.random.SeedSequence(12).spawn(N_TRAJ)]
    theta = model.init(rngs)
    assert theta.shape == (N_TRAJ, model.n_params) and theta.dtype == np.float64
    assert np.all(np.isfinite(theta))
    np.testing.assert_array_equal(theta, model.init(again))
    if case.random_init:
        assert not np.array_equal(theta, model.init(other))
        assert not np.array_equal(theta[0], theta[1]), "trajectories must get their own draws"
    else:
        np.testing.assert_array_equal(theta, model.init(other))


def test_param_blocks_partition_theta(case):
    model = case.model
    covered = np.zeros(model.n_params, dtype=int)
    for sl in model.param_blocks().values():
        covered[sl] += 1
    np.testing.assert_array_equal(covered, 1)
    spec = model.spec
    assert spec.dtype == np.float64 and spec.ndim == 1 and spec.flags.c_contiguous


def test_relu_init_schemes():
    rngs = [np.random.default_rng(0), np.random.default_rng(1)]
    zero_out = TwoLayerReLU(d=2, m=5, bias=True, init_scheme="zero_output", scales=(0.5, 1, 1))
    theta = zero_out.init(rngs)
    np.testing.assert_array_equal(zero_out.unpack(theta)["a"], 0.0)
    np.testing.assert_array_equal(zero_out.predict(theta, np.ones((3, 2))), 0.0)
    one_d = TwoLayerReLU(d=1, m=50, bias=True, init_scheme="one_d", scales=(2.5, 2.5, 4.0))
    blocks = one_d.unpack(one_d.init(rngs))
    np.testing.assert_array_equal(np.abs(blocks["W"]), 2.5)
    assert (blocks["W"] > 0).any() and (blocks["W"] < 0).any()
    assert 2.0 < blocks["a"].std() < 6.0


def test_relu_kink_convention_matches_torch():
    # Every pre-activation exactly 0: relu'(0) = 0 in both the kernel and torch.
    model = TwoLayerReLU(d=2, m=3, bias=True)
    theta = np.zeros((1, model.n_params))
    theta[0, model.param_blocks()["a"]] = 1.0
    X = np.ones((2, 2))
    theta_t = _torch(theta).requires_grad_(True)
    (expected,) = torch.autograd.grad(model.predict_torch(theta_t, _torch(X)[None]).sum(), theta_t)
    np.testing.assert_array_equal(model.vjp(theta, X, np.ones(2)), expected.numpy())
    np.testing.assert_array_equal(expected.numpy(), 0.0)


def test_relu_hidden_features():
    model = TwoLayerReLU(d=3, m=4, bias=True)
    theta = _random_theta(Case(model, _SPHERE, True))
    feats = model.hidden_features(theta, _SPHERE.X)
    assert feats.shape == (N_TRAJ, _SPHERE.n, 4) and feats.min() >= 0
    a = model.unpack(theta)["a"]
    np.testing.assert_allclose(
        np.einsum("tij,tj->ti", feats, a), model.predict(theta, _SPHERE.X), rtol=1e-12, atol=1e-12
    )


def test_deep_relu_bias_inits():
    rngs = [np.random.default_rng(0)]
    zero = DeepReLU(d=3, widths=[10, 10])
    blocks = zero.unpack(zero.init(rngs))
    assert list(blocks) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert all(np.all(blocks[f"b{l}"] == 0) for l in (1, 2, 3))
    assert zero.n_params == 3 * 10 + 10 + 10 * 10 + 10 + 10 + 1
    torch_like = DeepReLU(d=3, widths=[10, 10], bias_init="torch_default")
    blocks = torch_like.unpack(torch_like.init(rngs))
    assert np.all(np.abs(blocks["b1"]) <= 1 / np.sqrt(3)) and np.any(blocks["b1"] != 0)
    assert np.all(np.abs(blocks["b2"]) <= 1 / np.sqrt(10))


# ---------------------------------------------------------------- (g) config round trip


def test_config_round_trip(case):
    model = case.model
    cfg = model.to_config()
    assert model_from_config(cfg) == model
    # Configs are written into datasets' attrs: they must survive JSON.
    assert model_from_config(json.loads(json.dumps(cfg))) == model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_round_trips_through_its_config(name):
    """For every MODELS entry (not a hard-coded list), each test case's model rebuilds
    from its config through the registry: make_model, model_from_config and
    MODELS.from_config, also after a JSON round trip (configs go into dataset attrs)."""
    models = [c.model for c in CASES.values() if c.model.name == name]
    assert models, f"add a test case for model {name!r}"
    for model in models:
        cfg = model.to_config()
        assert cfg["name"] == name and type(model) is MODELS[name]
        options = {key: value for key, value in cfg.items() if key != "name"}
        assert make_model(name, **options) == model
        assert MODELS.from_config(json.loads(json.dumps(cfg))) == model
        assert not any(key.startswith("_") for key in cfg), "private fields stay out"


def test_diagonal_parametrizations_are_objects_named_by_the_config_value():
    from sgdsde.models.diagonal import PARAMETRIZATIONS

    assert sorted(PARAMETRIZATIONS) == ["uu-vv", "uv", "ww"]
    for name, par in PARAMETRIZATIONS.items():
        model = DiagonalLinearNet(d=3, parametrization=name)
        assert par.name == name and model.to_config()["parametrization"] == name
        assert model.n_params == par.n_params(3) == 3 * len(par.blocks)
        assert model.param_blocks() == par.param_blocks(3)
        kernels = model.kernels
        assert kernels == (par.kernels[0].dispatcher, par.kernels[1].dispatcher)


def test_list_fields_become_tuples():
    assert DeepReLU(d=2, widths=[3, 4]) == DeepReLU(d=2, widths=(3, 4))
    assert TwoLayerReLU(d=2, m=3, scales=[1, 2, 3]).scales == (1.0, 2.0, 3.0)
    hash(DeepReLU(d=2, widths=[3, 4]))


# ---------------------------------------------------------------------- (h) bad inputs


def test_bad_theta_and_input_shapes_raise(case):
    model, X = case.model, case.data.X
    p, d = model.n_params, model.input_dim
    with pytest.raises(ValueError, match="n_params"):
        model.predict(np.zeros((2, p + 1)), X)
    with pytest.raises(ValueError, match="n_params"):
        model.grad(np.zeros((2, 1, p)), X, case.data.y)
    with pytest.raises(ValueError, match="input dimension"):
        model.predict(np.zeros((2, p)), np.zeros((4, d + 1)))
    with pytest.raises(ValueError, match="trajectories"):
        model.predict(np.zeros((2, p)), np.zeros((3, 4, d)))


def test_make_model_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        make_model("no_such_model")
    # the message (the shared registry's) names the unknown option and the accepted ones
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['width'\].*accepts \['d', 'm'"):
        make_model("two_layer_relu", d=2, m=3, width=4)
    assert make_model("deep_relu", d=2, widths=[3]) == DeepReLU(d=2, widths=(3,))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("two_layer_relu", dict(d=0, m=3)),
        ("two_layer_relu", dict(d=2, m=2.5)),
        ("two_layer_relu", dict(d=2, m=3, init_scheme="xavier")),
        ("two_layer_relu", dict(d=2, m=3, scales=(1.0, 1.0))),
        ("two_layer_relu", dict(d=2, m=3, scales=(1.0, -1.0, 1.0))),
        ("two_layer_relu", dict(d=2, m=3, bias="yes")),
        ("deep_relu", dict(d=2, widths=[3, 0])),
        ("deep_relu", dict(d=2, widths=[3.5])),
        ("deep_relu", dict(d=2, widths="ten")),
        ("deep_relu", dict(d=2, scale=float("nan"))),
        ("deep_relu", dict(d=2, scale="0.8")),
        ("linear_regression", dict(d=3, init_scale=None)),
        ("quartic_well", dict(mu="1")),
        ("deep_relu", dict(d=2, bias_init="kaiming")),
        ("linear_regression", dict(d=-1)),
        ("linear_regression", dict(d=3, init_scale=-0.1)),
        ("quartic_well", dict(mu=float("inf"))),
        ("quartic_well", dict(init_value=float("nan"))),
        ("tanh_neuron", dict(init_scale=-1.0)),
        ("gelu_pair", dict(init_scale=float("nan"))),
        ("linear_teacher_student", dict(d=3, depth=0)),
        ("linear_teacher_student", dict(d=3, init_scheme="orthogonal")),
        ("linear_teacher_student", dict(d=3, init_scale=-1.0)),
        ("diagonal_linear", dict(d=3, parametrization="uvw")),
    ],
)
def test_bad_constructor_arguments_raise(name, kwargs):
    with pytest.raises(ValueError):
        make_model(name, **kwargs)


# ------------------------------------------------------------------------ data helpers


def test_quartic_well_data():
    data = quartic_well_data(2.0)
    np.testing.assert_array_equal(data.X, [[1.0]])
    np.testing.assert_allclose(data.y, [2.0 / np.sqrt(2.0)])
    np.testing.assert_array_equal(data.X_test, data.X)
    with pytest.raises(ValueError):
        quartic_well_data(float("nan"))


def test_linear_teacher_student_data():
    spectrum = np.array([4.0, 1.0, 0.25])
    data = linear_teacher_student_data(n=20000, d=3, spectrum=spectrum, teacher=[1, -1, 0.5])
    np.testing.assert_allclose(data.X.var(axis=0), spectrum, rtol=0.05)
    np.testing.assert_allclose(data.y, data.X @ data.beta_star, atol=1e-12)
    np.testing.assert_allclose(data.y_test, data.X_test @ data.beta_star, atol=1e-12)
    default = linear_teacher_student_data(n=5, d=4, seed=1)
    np.testing.assert_allclose(default.beta_star, 1.0 / np.arange(1, 5))
    assert default.config["spectrum"] == pytest.approx(list(1.0 / np.arange(1, 5)))
    again = linear_teacher_student_data(n=5, d=4, seed=1)
    np.testing.assert_array_equal(default.X, again.X)
    with pytest.raises(ValueError, match="spectrum"):
        linear_teacher_student_data(d=3, spectrum=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="teacher"):
        linear_teacher_student_data(d=3, teacher=[1.0, 2.0])
    with pytest.raises(ValueError, match="positive integer"):
        linear_teacher_student_data(n=0)
