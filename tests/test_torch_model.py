"""The torch-model protocol (``TorchModel``) and the ``torch.nn.Module`` wrapper
(``ModuleModel``): a deep network without numba kernels runs the torch SDE solver.

Ground truths: the closed-form two-layer ReLU network (its own numba kernels and closed
form VJP), torch autograd through the unwrapped module, and central finite differences.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgdsde.data import RegressionData, sparse_regression, teacher_student_sphere
from sgdsde.dynamics import simulate_sgd
from sgdsde.models import (
    LinearRegression,
    Model,
    ModuleModel,
    TorchModel,
    TwoLayerReLU,
)
from sgdsde.sde import LabelNoise, simulate_sde

D, M, T = 3, 4, 3


def _mlp(seed: int = 0, bias: bool = True) -> torch.nn.Module:
    """d -> m -> 1 with one hidden ReLU layer: TwoLayerReLU(d, m, bias)'s network."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(D, M, bias=bias), torch.nn.ReLU(), torch.nn.Linear(M, 1, bias=False)
    )


def _tanh_mlp() -> torch.nn.Module:
    """A smooth two-hidden-layer net (for finite differences: no kinks)."""
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(D, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2), torch.nn.Tanh(),
        torch.nn.Linear(2, 1),
    )  # fmt: skip


@pytest.fixture(scope="module")
def sphere():
    return teacher_student_sphere(n=7, d=D, teacher_width=2, n_test=5, seed=1)


def _theta(model: TorchModel, seed: int = 0, scale: float = 0.7) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal((T, model.n_params))


def _module_predictions(module, wrapped: ModuleModel, theta, X) -> np.ndarray:
    """The unwrapped module run row by row with its weights set to theta (ground truth)."""
    out = []
    for row in theta:
        clone = _copy_with(module, wrapped, row)
        with torch.no_grad():
            out.append(clone(torch.as_tensor(X)).reshape(-1).numpy())
    return np.stack(out)


def _copy_with(module, wrapped: ModuleModel, row) -> torch.nn.Module:
    import copy

    clone = copy.deepcopy(module).double()
    blocks = wrapped.param_blocks()
    with torch.no_grad():
        for key, p in clone.named_parameters():
            p.copy_(torch.as_tensor(row[blocks[key]]).reshape(p.shape))
    return clone


# ------------------------------------------------------------------------ layout


def test_protocol_hierarchy():
    assert issubclass(Model, TorchModel)
    assert isinstance(TwoLayerReLU(d=D, m=M), TorchModel)
    wrapped = ModuleModel(_mlp())
    assert isinstance(wrapped, TorchModel) and not isinstance(wrapped, Model)


def test_flat_layout_is_two_layer_relu(sphere):
    module = _mlp()
    wrapped = ModuleModel(module)
    relu = TwoLayerReLU(d=D, m=M, bias=True)
    assert wrapped.n_params == relu.n_params == M * D + 2 * M
    assert wrapped.input_dim == D
    assert list(wrapped.param_blocks()) == ["0.weight", "0.bias", "2.weight"]
    flat = wrapped.flat_params()
    blocks = relu.unpack(flat)
    np.testing.assert_array_equal(blocks["W"][0], module[0].weight.detach().double().reshape(-1))
    np.testing.assert_array_equal(blocks["b"][0], module[0].bias.detach().double())
    np.testing.assert_array_equal(blocks["a"][0], module[2].weight.detach().double().reshape(-1))
    theta = _theta(relu)
    np.testing.assert_allclose(
        wrapped.predict(theta, sphere.X), relu.predict(theta, sphere.X), rtol=1e-13, atol=1e-14
    )


@pytest.mark.parametrize("vectorize", [True, False])
def test_predictions_equal_the_module_itself(sphere, vectorize):
    module = _tanh_mlp()
    wrapped = ModuleModel(module, vectorize=vectorize)
    theta = _theta(wrapped)
    expected = _module_predictions(module, wrapped, theta, sphere.X)
    np.testing.assert_allclose(wrapped.predict(theta, sphere.X), expected, rtol=1e-14, atol=1e-15)
    # per-trajectory inputs: trajectory t sees only its own
    X3 = np.random.default_rng(2).standard_normal((T, 4, D))
    f3 = wrapped.predict(theta, X3)
    for t in range(T):
        np.testing.assert_allclose(
            f3[t], _module_predictions(module, wrapped, theta[t : t + 1], X3[t])[0], rtol=1e-14
        )


# ----------------------------------------------------------------------------- VJP


@pytest.mark.parametrize("vectorize", [True, False])
def test_vjp_equals_autograd_through_the_module(sphere, vectorize):
    module = _tanh_mlp()
    wrapped = ModuleModel(module, vectorize=vectorize)
    theta = _theta(wrapped, seed=3)
    W = np.random.default_rng(4).standard_normal((T, sphere.n))
    f, vjp = wrapped.predict_with_vjp_torch(torch.as_tensor(theta), torch.as_tensor(sphere.X)[None])
    got = vjp(torch.as_tensor(W)).numpy()
    np.testing.assert_allclose(vjp(torch.as_tensor(2 * W)).numpy(), 2 * got, rtol=1e-14)
    for t in range(T):
        clone = _copy_with(module, wrapped, theta[t])
        out = clone(torch.as_tensor(sphere.X)).reshape(-1)
        np.testing.assert_allclose(f[t].numpy(), out.detach().numpy(), rtol=1e-14)
        grads = torch.autograd.grad((out * torch.as_tensor(W[t])).sum(), list(clone.parameters()))
        expected = torch.cat([g.reshape(-1) for g in grads]).numpy()
        np.testing.assert_allclose(got[t], expected, rtol=1e-12, atol=1e-14)


def test_gradient_matches_finite_differences(sphere):
    wrapped = ModuleModel(_tanh_mlp())
    theta = _theta(wrapped, seed=5)
    grad = wrapped.grad(theta, sphere.X, sphere.y)
    # Central differences: truncation eps^2 |L'''| / 6 ~ 1e-13, round-off ~ 1e-16 |L| / eps.
    eps = 1e-6
    fd = np.empty_like(theta)
    for j in range(wrapped.n_params):
        step = np.zeros(wrapped.n_params)
        step[j] = eps
        up = wrapped.loss(theta + step, sphere.X, sphere.y)
        down = wrapped.loss(theta - step, sphere.X, sphere.y)
        fd[:, j] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_numpy_interface_matches_the_closed_form_model(sphere):
    """Jacobian, VJP, loss, gradient and Hessian of the wrapped MLP equal TwoLayerReLU's
    (numba kernels and closed-form Hessian)."""
    wrapped, relu = ModuleModel(_mlp()), TwoLayerReLU(d=D, m=M, bias=True)
    theta, X, y = _theta(relu, seed=6), sphere.X, sphere.y
    V = np.random.default_rng(7).standard_normal((T, sphere.n))
    close = dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(wrapped.jacobian(theta, X), relu.jacobian(theta, X), **close)
    np.testing.assert_allclose(wrapped.vjp(theta, X, V), relu.vjp(theta, X, V), **close)
    np.testing.assert_allclose(wrapped.loss(theta, X, y), relu.loss(theta, X, y), **close)
    np.testing.assert_allclose(wrapped.grad(theta, X, y), relu.grad(theta, X, y), **close)
    np.testing.assert_allclose(wrapped.hessian(theta, X, y), relu.hessian(theta, X, y), **close)
    assert wrapped.linear_predictor(theta) is None


# ------------------------------------------------------------- the acceptance test


@pytest.mark.parametrize("solver", ["euler_torch", "torchsde"])
def test_label_noise_sde_of_the_module_equals_two_layer_relu(sphere, solver):
    """The issue's acceptance test: the wrapped nn.Module MLP and the closed-form
    two-layer ReLU, same weights and seed, give the same label-noise SDE under
    euler_torch (float64; the two VJPs may differ only in rounding); and under the
    torchsde adapter, the other torch path."""
    module = _mlp(seed=3)
    wrapped, relu = ModuleModel(module), TwoLayerReLU(d=D, m=M, bias=True)
    theta0 = np.stack([wrapped.flat_params(), 0.5 * wrapped.flat_params()])
    runs = [
        simulate_sde(
            model,
            sphere,
            LabelNoise(delta=0.5, lr=0.05, batch_size=2),
            dt=0.05,
            n_steps=60,
            solver=solver,
            theta0=theta0,
            seed=11,
            save_steps=[0, 10, 30, 60],
            save_params=True,
        )
        for model in (wrapped, relu)
    ]
    ours, reference = runs
    params = reference["params"].values
    assert np.all(np.isfinite(params)) and not np.allclose(params[:, -1], params[:, 0])
    np.testing.assert_allclose(ours["params"].values, params, rtol=1e-11, atol=1e-13)
    for name in ("train_loss", "test_loss", "param_norm"):
        np.testing.assert_allclose(ours[name].values, reference[name].values, rtol=1e-11)
    assert ours.attrs["integrator"] == solver
    config = json.loads(ours.attrs["config"])  # written as JSON
    assert config["model"]["name"] == "torch_module"
    assert config["model"]["n_params"] == relu.n_params


class LinearTorch(TorchModel):
    """The smallest TorchModel: f(x) = theta . x, torch maths only (no kernels)."""

    name = "linear_torch"

    def __init__(self, d: int):
        self.d = d

    @property
    def n_params(self) -> int:
        return self.d

    @property
    def input_dim(self) -> int:
        return self.d

    def predict_torch(self, theta, X):
        return torch.matmul(X, theta[:, :, None])[..., 0]

    def init(self, rngs):
        return np.zeros((len(rngs), self.d))

    def to_config(self):
        return {"name": self.name, "d": self.d}


def test_a_protocol_subclass_runs_euler_torch():
    """Four members make a model euler_torch runs: the same SDE as LinearRegression."""
    data = sparse_regression(n=10, d=4, k=2, n_test=5, seed=2)
    noise = LabelNoise(delta=0.3, lr=0.1)
    runs = [
        simulate_sde(
            model,
            data,
            noise,
            dt=0.1,
            n_steps=40,
            solver="euler_torch",
            n_traj=3,
            seed=4,
            save_steps=[0, 20, 40],
            save_params=True,
        )
        for model in (LinearTorch(4), LinearRegression(d=4))
    ]
    assert not np.allclose(runs[1]["params"].values[:, -1], 0.0)
    np.testing.assert_allclose(
        runs[0]["params"].values, runs[1]["params"].values, rtol=1e-12, atol=1e-14
    )


# --------------------------------------------------------- numba-only paths refuse


def test_numba_solvers_and_engines_name_euler_torch(sphere):
    wrapped = ModuleModel(_mlp())
    for solver in ("euler_numba", "euler_gemm"):
        with pytest.raises(ValueError, match=r"TorchModel without numba kernels.*euler_torch"):
            simulate_sde(
                wrapped, sphere, LabelNoise(delta=0.1, lr=0.1), dt=0.1, n_steps=3, solver=solver
            )
    with pytest.raises(ValueError, match=r"TorchModel without numba kernels.*euler_torch"):
        simulate_sgd(wrapped, sphere, 0.1, n_steps=3)
    for attribute in ("kernels", "gemm_kernels", "linear_predictor_kernels"):
        with pytest.raises(ValueError, match="euler_torch"):
            getattr(wrapped, attribute)


# -------------------------------------------------------------------------- init


def test_init_copy_and_reset():
    module = _mlp()
    wrapped = ModuleModel(module)
    rngs = [np.random.default_rng(s) for s in range(T)]
    copied = wrapped.init(rngs)
    np.testing.assert_array_equal(copied, np.repeat(wrapped.flat_params()[None], T, axis=0))

    reset = ModuleModel(module, init_scheme="reset")
    state = torch.random.get_rng_state()
    first = reset.init([np.random.default_rng(s) for s in np.random.SeedSequence(5).spawn(T)])
    again = reset.init([np.random.default_rng(s) for s in np.random.SeedSequence(5).spawn(T)])
    other = reset.init([np.random.default_rng(s) for s in np.random.SeedSequence(6).spawn(T)])
    assert torch.equal(torch.random.get_rng_state(), state), "the global torch RNG moved"
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[0], first[1]), "trajectories must get their own draws"
    # nn.Linear's default init: |W| <= 1/sqrt(fan_in) for the first layer
    W = first[:, wrapped.param_blocks()["0.weight"]]
    assert np.all(np.abs(W) <= 1 / np.sqrt(D)) and W.std() > 0.1 / np.sqrt(D)
    np.testing.assert_array_equal(wrapped.flat_params(), ModuleModel(module).flat_params())


# ---------------------------------------------------------------- config, errors


def test_config_is_json_and_describes_the_module():
    wrapped = ModuleModel(_mlp())
    cfg = json.loads(json.dumps(wrapped.to_config()))
    assert cfg["name"] == "torch_module" and cfg["n_params"] == wrapped.n_params
    assert cfg["parameters"] == {"0.weight": [M, D], "0.bias": [M], "2.weight": [1, M]}
    assert "Linear(in_features=3" in cfg["module"]


def test_bad_modules_raise():
    with pytest.raises(ValueError, match=r"torch\.nn\.Module"):
        ModuleModel(lambda x: x)
    with pytest.raises(ValueError, match="init_scheme"):
        ModuleModel(_mlp(), init_scheme="xavier")
    with pytest.raises(ValueError, match="one scalar output"):
        ModuleModel(torch.nn.Linear(D, 2))
    with pytest.raises(ValueError, match="give input_dim"):
        ModuleModel(torch.nn.Sequential(torch.nn.Conv1d(1, 1, 1)))
    with pytest.raises(ValueError, match="input_dim"):
        ModuleModel(_mlp(), input_dim=0)
    with pytest.raises(ValueError, match="no parameters"):
        ModuleModel(torch.nn.ReLU(), input_dim=2)
    wrapped = ModuleModel(_mlp())
    with pytest.raises(ValueError, match="n_params"):
        wrapped.predict(np.zeros((2, wrapped.n_params + 1)), np.zeros((3, D)))
    with pytest.raises(ValueError, match="input dimension"):
        wrapped.predict(np.zeros((2, wrapped.n_params)), np.zeros((3, D + 1)))


def test_empty_inputs_give_empty_outputs():
    wrapped = ModuleModel(_mlp())
    theta = _theta(wrapped)
    assert wrapped.jacobian(theta, np.zeros((0, D))).shape == (T, 0, wrapped.n_params)
    data = RegressionData(np.ones((2, D)), np.ones(2), np.ones((1, D)), np.ones(1))
    assert wrapped.loss(theta, data.X, data.y).shape == (T,)
