"""Curvature of the training loss L(theta) = 1/(2n) sum_i r_i^2: the top eigenvalue of
its Hessian (the sharpness; GD on a quadratic is stable iff eta < 2 / lambda_max, the
edge of stability of Cohen et al. 2021) and its trace.

* ``top_hessian_eigenvalue``: "exact" takes the largest eigenvalue of the full Hessian
  (``model.hessian``: the model's closed form where it has one, else torch autograd);
  "lanczos" runs ARPACK's Lanczos (scipy ``eigsh``, largest algebraic eigenvalue) on
  Hessian-vector products from torch autograd of ``predict_torch``, never forming the
  Hessian, started from a vector drawn from ``seed``.
* ``hessian_trace``: "exact" sums the diagonal of the full Hessian; "hutchinson"
  averages v^T H v over ``n_samples`` Rademacher vectors v drawn from ``seed``
  (unbiased, variance 2 (||H||_F^2 - sum_j H_jj^2) / n_samples).
* "auto" is exact when the model has a closed-form Hessian or at most
  ``DENSE_MAX_PARAMS`` parameters, else the matrix-free method.

The recorded metrics draw their random vectors from the same ``seed`` at every save
step (common random numbers: the curve over time carries no extra probe noise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from sgdsde.arguments import check_positive_int
from sgdsde.lazy import lazy_module
from sgdsde.metrics.base import METRICS
from sgdsde.metrics.builtin import BuiltinMetric
from sgdsde.models import TorchModel
from sgdsde.models.torch_model import as_inputs, as_params

torch = lazy_module("torch")  # imported on first use: not at `import sgdsde`

#: Up to this many parameters "auto" forms the full Hessian (p autograd passes at most).
DENSE_MAX_PARAMS = 64

METHODS = {
    "top_hessian_eigenvalue": ("auto", "exact", "lanczos"),
    "hessian_trace": ("auto", "exact", "hutchinson"),
}


def has_closed_form_hessian(model: Any) -> bool:
    """True when the model overrides ``hessian_closed_form``."""
    return type(model).hessian_closed_form is not TorchModel.hessian_closed_form


def _dense(model: Any, method: str) -> bool:
    if method == "auto":
        return has_closed_form_hessian(model) or model.n_params <= DENSE_MAX_PARAMS
    return method == "exact"


def hessian_vector_product(
    model: Any, theta: np.ndarray, X: np.ndarray, y: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """V (T, p) -> H(theta_t) v_t per trajectory, (T, p), by double backward through
    ``model.loss_torch`` (one graph, reused for every product)."""
    theta = as_params(theta, model.n_params)
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    Xt = torch.from_numpy(as_inputs(X, model.input_dim, theta.shape[0]))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64))
    # trajectories do not interact: the Hessian of the summed loss is block diagonal
    (grad,) = torch.autograd.grad(model.loss_torch(th, Xt, yt).sum(), th, create_graph=True)

    def product(V: np.ndarray) -> np.ndarray:
        V = torch.as_tensor(np.asarray(V, dtype=np.float64).reshape(theta.shape))
        (hv,) = torch.autograd.grad(grad, th, grad_outputs=V, retain_graph=True)
        return hv.detach().numpy().copy()

    return product


def top_hessian_eigenvalue(
    model: Any,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    *,
    method: str = "auto",
    seed: int = 0,
) -> np.ndarray:
    """lambda_max of the Hessian of L per trajectory, (T,) (module docstring).

    model, theta (T, p), X, y: the model, its parameters and the data of the loss.
    method: "auto", "exact" or "lanczos".
    seed: seeds the Lanczos start vectors (np.random.default_rng(seed)).
    """
    _check_method("top_hessian_eigenvalue", method)
    theta = as_params(theta, model.n_params)
    if _dense(model, method) or model.n_params < 3:  # ARPACK needs p >= 3
        return np.linalg.eigvalsh(model.hessian(theta, X, y))[:, -1]
    from scipy.sparse.linalg import LinearOperator, eigsh

    rng = np.random.default_rng(seed)
    p, out = model.n_params, np.empty(theta.shape[0])
    X3 = as_inputs(X, model.input_dim, theta.shape[0])
    for t in range(theta.shape[0]):
        Xt = X3 if X3.shape[0] == 1 else X3[t : t + 1]
        product = hessian_vector_product(model, theta[t : t + 1], Xt, y)
        H = LinearOperator((p, p), matvec=lambda v, f=product: f(v[None])[0], dtype=np.float64)
        out[t] = eigsh(H, k=1, which="LA", v0=rng.standard_normal(p), return_eigenvectors=False)[0]
    return out


def hessian_trace(
    model: Any,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    *,
    method: str = "auto",
    n_samples: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """tr H of the loss per trajectory, (T,) (module docstring).

    model, theta (T, p), X, y: the model, its parameters and the data of the loss.
    method: "auto", "exact" or "hutchinson".
    n_samples: Hutchinson's number of Rademacher vectors.
    seed: seeds them (np.random.default_rng(seed)).
    """
    _check_method("hessian_trace", method)
    check_positive_int(n_samples=n_samples)
    theta = as_params(theta, model.n_params)
    if _dense(model, method):
        return np.trace(model.hessian(theta, X, y), axis1=-2, axis2=-1)
    rng = np.random.default_rng(seed)
    product = hessian_vector_product(model, theta, X, y)
    total = np.zeros(theta.shape[0])
    for _ in range(n_samples):
        V = rng.choice(np.array([-1.0, 1.0]), size=theta.shape)
        total += np.einsum("tp,tp->t", V, product(V))
    return total / n_samples


def _check_method(owner: str, method: Any) -> None:
    if method not in METHODS[owner]:
        raise ValueError(f"{owner}: method must be one of {list(METHODS[owner])}, got {method!r}")


def _check_seed(owner: str, seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"metric {owner!r}: seed must be an integer >= 0, got {seed!r}")


@METRICS.register
@dataclasses.dataclass(frozen=True)
class TopHessianEigenvalue(BuiltinMetric):
    """lambda_max of the Hessian of the training loss (``top_hessian_eigenvalue``)."""

    method: str = "auto"
    seed: int = 0

    name = "top_hessian_eigenvalue"
    long_name = "largest eigenvalue of the Hessian of the training loss"

    def __post_init__(self):
        _check_method(self.name, self.method)
        _check_seed(self.name, self.seed)

    def __call__(self, theta, model, data):
        return top_hessian_eigenvalue(
            model, theta, data.X, data.y, method=self.method, seed=self.seed
        )


@METRICS.register
@dataclasses.dataclass(frozen=True)
class HessianTrace(BuiltinMetric):
    """tr of the Hessian of the training loss (``hessian_trace``)."""

    method: str = "auto"
    n_samples: int = 100
    seed: int = 0

    name = "hessian_trace"
    long_name = "trace of the Hessian of the training loss"

    def __post_init__(self):
        _check_method(self.name, self.method)
        check_positive_int(n_samples=self.n_samples)
        _check_seed(self.name, self.seed)

    def __call__(self, theta, model, data):
        return hessian_trace(
            model,
            theta,
            data.X,
            data.y,
            method=self.method,
            n_samples=self.n_samples,
            seed=self.seed,
        )
