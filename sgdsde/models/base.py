"""The closed-form models: a ``TorchModel`` plus numba kernels.

A closed-form model supplies its maths twice, independently: numba kernels for one
input (``kernels``) and a batched torch function (``predict_torch``), so each checks the
other (tests/test_models.py). The numpy interface (predictions, VJP phi^T v, Jacobian)
runs on the kernels; loss, gradient, per-example gradients and Hessian derive from it.
Everything numba-derived lives here; what needs torch alone lives in
``sgdsde.models.torch_model`` (conventions: see there).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from sgdsde.models.kernels import GemmKernels, jacobian_batch, predict_batch, vjp_batch
from sgdsde.models.torch_model import (
    TorchModel,
    as_inputs,
    as_params,
    linear_predictions_torch,
)

__all__ = ["Model", "TorchModel", "as_inputs", "as_params", "linear_predictions_torch"]


@dataclasses.dataclass(frozen=True)
class Model(TorchModel):
    """A closed-form model f_theta: R^d -> R with flat parameters theta in R^p and numba
    kernels (a frozen dataclass whose fields are its configuration)."""

    # ----------------------------------------------------------------- to implement
    @property
    @abc.abstractmethod
    def kernels(self) -> tuple[Any, Any]:
        """(predict_one, grad_one) compiled numba kernels (``Kernel.dispatcher``), see
        ``sgdsde.models.kernels``."""

    @property
    def spec(self) -> np.ndarray:
        """Structural constants handed to the kernels (float64 vector)."""
        return np.zeros(1)

    @property
    def linear_predictor_kernels(self) -> tuple[Any, Any] | None:
        """(beta_batch, descend_batch) numba kernels when f_theta(x) = beta(theta) . x
        with a coordinate-wise beta (see ``sgdsde.models.kernels``), else None. They let
        the ``euler_gemm`` SDE solver run a step as two GEMMs and two fused passes."""
        return None

    @property
    def gemm_kernels(self) -> GemmKernels | None:
        """The model's step as two GEMMs plus per-trajectory passes (``GemmKernels``),
        what the ``euler_gemm`` solver runs; from ``linear_predictor_kernels`` (k = 1,
        M = beta) by default, None when the model has neither."""
        kernels = self.linear_predictor_kernels
        if kernels is None:
            return None
        return GemmKernels(rows=1, first_layer=kernels[0], descend=kernels[1])

    # ------------------------------------------------------------ numba, derived
    def predict(self, theta, X) -> np.ndarray:
        """f_theta(x_i): (T, m) for X of shape (m, d) or (T, m, d)."""
        theta = as_params(theta, self.n_params)
        X = as_inputs(X, self.input_dim, theta.shape[0])
        return predict_batch(self.kernels[0], theta, X, self.spec)

    def vjp(self, theta, X, V) -> np.ndarray:
        """phi_theta(X)^T v for each trajectory (T, p), never forming phi."""
        theta = as_params(theta, self.n_params)
        X = as_inputs(X, self.input_dim, theta.shape[0])
        V = np.broadcast_to(np.asarray(V, np.float64), (theta.shape[0], X.shape[1]))
        V = np.require(V, dtype=np.float64, requirements=("C", "W"))
        return vjp_batch(self.kernels[1], theta, X, self.spec, V)

    def jacobian(self, theta, X) -> np.ndarray:
        """phi_theta(X), shape (T, m, p): row i is grad_theta f(x_i)."""
        theta = as_params(theta, self.n_params)
        X = as_inputs(X, self.input_dim, theta.shape[0])
        return jacobian_batch(self.kernels[1], theta, X, self.spec)
