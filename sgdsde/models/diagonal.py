"""Diagonal linear networks f(x) = beta(theta) . x.

Three parametrisations of the linear predictor beta (Woodworth et al. 2020;
Andriushchenko et al. 2023, Sec. 3):

* ``"uv"``     theta = (u, v),  beta = u * v.   grad f = (x * v, x * u).
  Anchor init u0 = alpha * 1, v0 = 0 (the paper's "alpha=0.1const").
* ``"uu-vv"``  theta = (u, v),  beta = u*u - v*v. grad f = (2 x * u, -2 x * v).
  Init u0 = v0 = alpha (beta0 = 0).
* ``"ww"``     theta = w,       beta = w * w.   grad f = 2 x * w.  Init w0 = alpha.

``init="gaussian"`` draws every parameter as alpha * N(0, 1) instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numba as nb
import numpy as np

from sgdsde.lazy import lazy_module
from sgdsde.models.base import Model, as_inputs, as_params, linear_predictions_torch
from sgdsde.models.kernels import (
    beta_batch_kernel,
    descend_batch_kernel,
    grad_kernel,
    predict_kernel,
)

torch = lazy_module("torch")  # imported on first use: not at `import sgdsde`


@predict_kernel
def _predict_uv(theta, x, spec):
    d = x.shape[0]
    acc = 0.0
    for j in range(d):
        acc += theta[j] * theta[d + j] * x[j]
    return acc


# Gradient kernels write the u block and the v block in separate loops: one
# interleaved loop does not vectorise and is ~1.7x slower (measured).
@grad_kernel
def _grad_uv(theta, x, spec, scale, out):
    d = x.shape[0]
    for j in range(d):
        out[j] += scale * x[j] * theta[d + j]
    for j in range(d):
        out[d + j] += scale * x[j] * theta[j]


@predict_kernel
def _predict_uu_vv(theta, x, spec):
    d = x.shape[0]
    acc = 0.0
    for j in range(d):
        acc += (theta[j] * theta[j] - theta[d + j] * theta[d + j]) * x[j]
    return acc


@grad_kernel
def _grad_uu_vv(theta, x, spec, scale, out):
    d = x.shape[0]
    s2 = 2.0 * scale
    for j in range(d):
        out[j] += s2 * x[j] * theta[j]
    for j in range(d):
        out[d + j] -= s2 * x[j] * theta[d + j]


@predict_kernel
def _predict_ww(theta, x, spec):
    acc = 0.0
    for j in range(x.shape[0]):
        acc += theta[j] * theta[j] * x[j]
    return acc


@grad_kernel
def _grad_ww(theta, x, spec, scale, out):
    for j in range(x.shape[0]):
        out[j] += 2.0 * scale * x[j] * theta[j]


# Linear-predictor kernels (the euler_gemm solver): B = beta(theta) and
# theta <- theta - J_beta(theta)^T G with J at the old theta, then B.
@beta_batch_kernel
def _beta_uv(theta, spec, B):
    d = B.shape[1]
    for t in nb.prange(theta.shape[0]):
        for j in range(d):
            B[t, j] = theta[t, j] * theta[t, d + j]


@descend_batch_kernel
def _descend_uv(theta, G, spec, B, frozen):
    d = G.shape[1]
    for t in nb.prange(theta.shape[0]):
        if frozen[t] >= 0:
            continue
        th, g, b = theta[t], G[t], B[t]
        for j in range(d):
            u = th[j]
            v = th[d + j]
            u_new = u - v * g[j]
            v_new = v - u * g[j]
            th[j] = u_new
            th[d + j] = v_new
            b[j] = u_new * v_new


@beta_batch_kernel
def _beta_uu_vv(theta, spec, B):
    d = B.shape[1]
    for t in nb.prange(theta.shape[0]):
        for j in range(d):
            B[t, j] = theta[t, j] * theta[t, j] - theta[t, d + j] * theta[t, d + j]


@descend_batch_kernel
def _descend_uu_vv(theta, G, spec, B, frozen):
    d = G.shape[1]
    for t in nb.prange(theta.shape[0]):
        if frozen[t] >= 0:
            continue
        th, g, b = theta[t], G[t], B[t]
        for j in range(d):
            two_g = g[j] + g[j]
            u = th[j] - two_g * th[j]
            v = th[d + j] + two_g * th[d + j]
            th[j] = u
            th[d + j] = v
            b[j] = u * u - v * v


@beta_batch_kernel
def _beta_ww(theta, spec, B):
    for t in nb.prange(theta.shape[0]):
        for j in range(B.shape[1]):
            B[t, j] = theta[t, j] * theta[t, j]


@descend_batch_kernel
def _descend_ww(theta, G, spec, B, frozen):
    for t in nb.prange(theta.shape[0]):
        if frozen[t] >= 0:
            continue
        th, g, b = theta[t], G[t], B[t]
        for j in range(G.shape[1]):
            w = th[j] - (g[j] + g[j]) * th[j]
            th[j] = w
            b[j] = w * w


def _cat_blocks(g_beta, first, second):
    """(g_beta * first, g_beta * second) side by side: the (T, 2d) VJP of a two-block net,
    written straight into one buffer (no concatenation copy)."""
    d = g_beta.shape[1]
    out = torch.empty((g_beta.shape[0], 2 * d), dtype=g_beta.dtype, device=g_beta.device)
    torch.mul(g_beta, first, out=out[:, :d])
    torch.mul(g_beta, second, out=out[:, d:])
    return out


class Parametrization:
    """beta as a coordinate-wise function of theta (one subclass per choice; the
    ``DiagonalLinearNet`` picks one at construction, its name stays the config value).

    Each gives its numba kernels, the number and names of its parameter blocks, the
    anchor (constant) initialisation, beta(theta) in numpy and torch (the same
    expression serves both), the closed-form (f, phi^T w) for shared inputs, and the
    curvature term of the Hessian (module doc and ``DiagonalLinearNet.hessian_closed_form``).
    """

    name: str
    kernels: tuple[Any, Any]
    linear_kernels: tuple[Any, Any]
    blocks: tuple[str, ...]

    def n_params(self, d: int) -> int:
        return len(self.blocks) * d

    def param_blocks(self, d: int) -> dict[str, slice]:
        return {key: slice(i * d, (i + 1) * d) for i, key in enumerate(self.blocks)}

    def anchor_init(self, theta: np.ndarray, d: int) -> None:
        """Turn the constant init (every entry alpha) into this parametrization's anchor."""

    def beta(self, theta, d: int):
        """beta(theta), (T, d), for a numpy array or a torch tensor (T, p)."""
        raise NotImplementedError

    def predict_with_vjp(self, theta, Xs, d: int):
        """(f, vjp) for shared inputs Xs (m, d): f = beta Xs^T, vjp(w) = phi^T w."""
        raise NotImplementedError

    def add_curvature(self, H: np.ndarray, c: np.ndarray, idx: np.ndarray, d: int) -> None:
        """H += sum_i (r_i / n) grad^2 f(x_i), given c = X^T r / n (T, d), in place."""
        raise NotImplementedError


class UV(Parametrization):
    """theta = (u, v), beta = u * v; anchor u0 = alpha, v0 = 0."""

    name = "uv"
    kernels = (_predict_uv, _grad_uv)
    linear_kernels = (_beta_uv, _descend_uv)
    blocks = ("u", "v")

    def anchor_init(self, theta, d):
        theta[:, d:] = 0.0

    def beta(self, theta, d):
        return theta[:, :d] * theta[:, d:]

    def predict_with_vjp(self, theta, Xs, d):
        u, v = theta[:, :d], theta[:, d:]
        f = (u * v) @ Xs.transpose(0, 1)
        return f, lambda w: _cat_blocks(w @ Xs, v, u)

    def add_curvature(self, H, c, idx, d):
        H[:, idx, d + idx] += c
        H[:, d + idx, idx] += c


class UUminusVV(Parametrization):
    """theta = (u, v), beta = u * u - v * v; anchor u0 = v0 = alpha (beta0 = 0)."""

    name = "uu-vv"
    kernels = (_predict_uu_vv, _grad_uu_vv)
    linear_kernels = (_beta_uu_vv, _descend_uu_vv)
    blocks = ("u", "v")

    def beta(self, theta, d):
        return theta[:, :d] ** 2 - theta[:, d:] ** 2

    def predict_with_vjp(self, theta, Xs, d):
        u, v = theta[:, :d], theta[:, d:]
        f = (u * u - v * v) @ Xs.transpose(0, 1)
        return f, lambda w: _cat_blocks(2.0 * (w @ Xs), u, -v)

    def add_curvature(self, H, c, idx, d):
        H[:, idx, idx] += 2 * c
        H[:, d + idx, d + idx] -= 2 * c


class WW(Parametrization):
    """theta = w, beta = w * w; anchor w0 = alpha."""

    name = "ww"
    kernels = (_predict_ww, _grad_ww)
    linear_kernels = (_beta_ww, _descend_ww)
    blocks = ("w",)

    def beta(self, theta, d):
        return theta**2

    def predict_with_vjp(self, theta, Xs, d):
        f = (theta * theta) @ Xs.transpose(0, 1)
        return f, lambda w: 2.0 * (w @ Xs) * theta

    def add_curvature(self, H, c, idx, d):
        H[:, idx, idx] += 2 * c


PARAMETRIZATIONS: dict[str, Parametrization] = {p.name: p for p in (UV(), UUminusVV(), WW())}


@dataclasses.dataclass(frozen=True)
class DiagonalLinearNet(Model):
    """Diagonal linear network on R^d (see module docstring for the maths)."""

    d: int
    parametrization: str = "uv"
    alpha: float = 0.1
    init_scheme: str = "constant"
    # The Parametrization named by ``parametrization``, chosen once in __post_init__.
    _beta_map: Parametrization = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    name = "diagonal_linear"

    def __post_init__(self):
        if not isinstance(self.d, int | np.integer) or self.d < 1:
            raise ValueError(f"d must be a positive integer (got {self.d!r})")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"unknown parametrization {self.parametrization!r}: "
                f"choose one of {sorted(PARAMETRIZATIONS)}"
            )
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be finite and >= 0 (got {self.alpha})")
        if self.init_scheme not in ("constant", "gaussian"):
            raise ValueError(
                f"unknown init_scheme {self.init_scheme!r}: choose 'constant' or 'gaussian'"
            )
        object.__setattr__(self, "_beta_map", PARAMETRIZATIONS[self.parametrization])

    @property
    def n_params(self) -> int:
        return self._beta_map.n_params(self.d)

    @property
    def input_dim(self) -> int:
        return self.d

    @property
    def kernels(self):
        predict_one, grad_one = self._beta_map.kernels
        return predict_one.dispatcher, grad_one.dispatcher

    def param_blocks(self):
        return self._beta_map.param_blocks(self.d)

    def init(self, rngs):
        T = len(rngs)
        if self.init_scheme == "gaussian":
            return np.stack([self.alpha * rng.standard_normal(self.n_params) for rng in rngs])
        theta = np.full((T, self.n_params), self.alpha)
        self._beta_map.anchor_init(theta, self.d)
        return theta

    @property
    def linear_predictor_kernels(self):
        return self._beta_map.linear_kernels

    def linear_predictor(self, theta):
        return self._beta_map.beta(as_params(theta, self.n_params), self.d)

    def predict_torch(self, theta, X):
        return linear_predictions_torch(X, self._beta_map.beta(theta, self.d))

    def predict_with_vjp_torch(self, theta, X):
        """Closed form for shared inputs: f = beta X^T and phi^T w = (dbeta/dtheta)^T (X^T w)
        without an autograd graph (one GEMM each way)."""
        if X.shape[0] != 1:
            return super().predict_with_vjp_torch(theta, X)
        return self._beta_map.predict_with_vjp(theta.detach(), X[0], self.d)

    def hessian_closed_form(self, theta, X, y):
        """H = phi^T phi / n + sum_i (r_i / n) grad^2 f(x_i); the second term is diagonal
        in (u_j, v_j) pairs: x . r / n couples u_j with v_j for "uv", and gives
        diag(2 X^T r / n, -2 X^T r / n) for "uu-vv" and diag(2 X^T r / n) for "ww"."""
        theta = as_params(theta, self.n_params)
        X2 = as_inputs(X, self.d, theta.shape[0])
        phi = self.jacobian(theta, X2)
        n = phi.shape[1]
        H = np.swapaxes(phi, 1, 2) @ phi / n  # batched GEMM (einsum here is ~20x slower)
        r = self.residuals(theta, X2, y)
        c = np.einsum("ti,tij->tj", r, np.broadcast_to(X2, (theta.shape[0], *X2.shape[1:]))) / n
        self._beta_map.add_curvature(H, c, np.arange(self.d), self.d)
        return H
