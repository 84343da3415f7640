"""Linear regression f(x) = theta . x: the quadratic-loss ground truth.

L(theta) = 1/(2n) ||X theta - y||^2 has the constant Hessian H = X^T X / n and
phi_theta(X) = X for every theta. The label-noise SDE (``sgdsde.sde.noise``),

    d theta = -H (theta - theta*) dt + sqrt(eta delta / (n B)) X^T dW_t,

is then an Ornstein-Uhlenbeck process with additive noise (covariance
eta delta / (n B) X^T X) and Gaussian transition law in closed form, which makes this
model the reference for SDE-solver tests.
"""

from __future__ import annotations

import dataclasses

import numba as nb
import numpy as np

from sgdsde.models.base import Model, as_inputs, as_params, linear_predictions_torch
from sgdsde.models.kernels import (
    beta_batch_kernel,
    descend_batch_kernel,
    grad_kernel,
    predict_kernel,
)


@predict_kernel
def _predict_linear(theta, x, spec):
    acc = 0.0
    for k in range(x.shape[0]):
        acc += theta[k] * x[k]
    return acc


@grad_kernel
def _grad_linear(theta, x, spec, scale, out):
    for k in range(x.shape[0]):
        out[k] += scale * x[k]


@beta_batch_kernel
def _beta_linear(theta, spec, B):
    for t in nb.prange(theta.shape[0]):
        for k in range(B.shape[1]):
            B[t, k] = theta[t, k]


@descend_batch_kernel
def _descend_linear(theta, G, spec, B, frozen):
    for t in nb.prange(theta.shape[0]):
        if frozen[t] >= 0:
            continue
        for k in range(G.shape[1]):
            theta[t, k] -= G[t, k]
            B[t, k] = theta[t, k]


@dataclasses.dataclass(frozen=True)
class LinearRegression(Model):
    """f(x) = theta . x on R^d. Init theta = 0, or ``init_scale * N(0, I)`` when > 0."""

    d: int
    init_scale: float = 0.0

    name = "linear_regression"

    def __post_init__(self):
        if isinstance(self.d, bool) or not isinstance(self.d, int | np.integer) or self.d < 1:
            raise ValueError(f"d must be a positive integer (got {self.d!r})")
        if (
            isinstance(self.init_scale, bool)
            or not isinstance(self.init_scale, int | float | np.integer | np.floating)
            or not np.isfinite(self.init_scale)
            or self.init_scale < 0
        ):
            raise ValueError(f"init_scale must be a finite number >= 0 (got {self.init_scale!r})")
        object.__setattr__(self, "d", int(self.d))
        object.__setattr__(self, "init_scale", float(self.init_scale))

    @property
    def n_params(self) -> int:
        return self.d

    @property
    def input_dim(self) -> int:
        return self.d

    @property
    def kernels(self):
        return _predict_linear.dispatcher, _grad_linear.dispatcher

    def param_blocks(self):
        return {"beta": slice(0, self.d)}

    def init(self, rngs):
        if self.init_scale == 0.0:
            return np.zeros((len(rngs), self.d))
        return np.stack([self.init_scale * rng.standard_normal(self.d) for rng in rngs])

    @property
    def linear_predictor_kernels(self):
        return _beta_linear, _descend_linear

    def linear_predictor(self, theta):
        return as_params(theta, self.n_params).copy()

    def predict_torch(self, theta, X):
        return linear_predictions_torch(X, theta)

    def predict_with_vjp_torch(self, theta, X):
        """Closed form for shared inputs: f = theta X^T, phi^T w = w X."""
        if X.shape[0] != 1:
            return super().predict_with_vjp_torch(theta, X)
        Xs = X[0]
        return theta.detach() @ Xs.transpose(0, 1), lambda w: w @ Xs

    def hessian_closed_form(self, theta, X, y):
        """H = X^T X / n, independent of theta and y (per trajectory if X is)."""
        theta = as_params(theta, self.n_params)
        X3 = as_inputs(X, self.d, theta.shape[0])
        H = np.einsum("tik,til->tkl", X3, X3) / X3.shape[1]
        return np.ascontiguousarray(np.broadcast_to(H, (theta.shape[0], self.d, self.d)))
