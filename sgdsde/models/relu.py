"""Two-layer ReLU networks f(x) = sum_j a_j relu(w_j . x + b_j).

Andriushchenko et al. (ICML 2023), Sec. 4 and ``fc_nets.py``: a hidden layer of
width m with optional biases b, and a linear second layer a without bias.

Flat layout of theta (p = m*d + m [+ m]): W (m rows of length d, row-major), then
b (m, only when ``bias=True``), then a (m).

Gradient (with z_j = w_j . x + b_j and 1[z_j > 0] the ReLU derivative, taken as 0 at
z_j = 0 like torch's ``relu`` backward):

    df/dW_jk = a_j 1[z_j > 0] x_k,   df/db_j = a_j 1[z_j > 0],   df/da_j = relu(z_j).

Initialisations (``init_scheme``, with ``scales = (s1, s2, s3)``):

* ``"gaussian"``    W ~ s1 N(0, 1), b ~ s2 N(0, 1), a ~ s3 N(0, 1);
* ``"zero_output"`` W ~ s1 N(0, 1), b ~ s2 N(0, 1), a = 0: the teacher-student
  student of ``fc_nets_two_layer.ipynb`` (no biases, W ~ 0.5 N(0, 1), a = 0);
* ``"one_d"``       W = +-s1 (random signs), b ~ s2 N(0, 1), a ~ s3 N(0, 1): the 1-D
  regression scheme of ``fc_nets_1d_regression.ipynb`` (``init_blanc_et_al``) with
  s = (2.5, 2.5, 4) and a first-layer bias.
"""

from __future__ import annotations

import dataclasses

import numba as nb
import numpy as np

from sgdsde.lazy import lazy_module
from sgdsde.models.base import Model, as_inputs, as_params
from sgdsde.models.kernels import FASTMATH, GemmKernels, grad_kernel, predict_kernel

torch = lazy_module("torch")  # imported on first use: not at `import sgdsde`

INIT_SCHEMES = ("gaussian", "zero_output", "one_d")


@nb.njit(inline="always", fastmath=FASTMATH)
def _preactivation(theta, x, j, has_bias, b_off):
    """w_j . x + b_j (W row-major at theta[0], biases at theta[b_off])."""
    d = x.shape[0]
    z = 0.0
    row = j * d
    for k in range(d):
        z += theta[row + k] * x[k]
    if has_bias:
        z += theta[b_off + j]
    return z


@predict_kernel
def _predict_two_layer_relu(theta, x, spec):
    d = x.shape[0]
    m = int(spec[1])
    has_bias = spec[2] > 0.5
    b_off = m * d
    a_off = b_off + m if has_bias else b_off
    acc = 0.0
    for j in range(m):
        z = _preactivation(theta, x, j, has_bias, b_off)
        if z > 0.0:
            acc += theta[a_off + j] * z
    return acc


@grad_kernel
def _grad_two_layer_relu(theta, x, spec, scale, out):
    d = x.shape[0]
    m = int(spec[1])
    has_bias = spec[2] > 0.5
    b_off = m * d
    a_off = b_off + m if has_bias else b_off
    for j in range(m):
        z = _preactivation(theta, x, j, has_bias, b_off)
        row = j * d
        # relu'(0) = 0, as in torch: an inactive unit contributes nothing at all.
        if z > 0.0:
            out[a_off + j] += scale * z
            g = scale * theta[a_off + j]
            for k in range(d):
                out[row + k] += g * x[k]
            if has_bias:
                out[b_off + j] += g


# The step as GEMMs (the euler_gemm solver, ``GemmKernels``): M stacks the hidden
# weights of all trajectories, (T m, d); Z = M X^T holds the pre-activations w_j . x_i
# without bias, (T m, n). Lazily compiled (per dtype, cached): nothing at import.
@nb.njit(cache=True, parallel=True, fastmath=FASTMATH)
def _relu_first_layer(theta, spec, M):
    d, m = int(spec[0]), int(spec[1])
    for t in nb.prange(theta.shape[0]):
        for j in range(m):
            for k in range(d):
                M[t * m + j, k] = theta[t, j * d + k]


@nb.njit(cache=True, parallel=True, fastmath=FASTMATH)
def _relu_head_forward(Z, theta, spec, P):
    d, m, bias = int(spec[0]), int(spec[1]), spec[2] > 0.5
    p, n = theta.shape[1], P.shape[1]
    for t in nb.prange(theta.shape[0]):
        f = P[t]
        f[:] = 0.0
        for j in range(m):
            a = theta[t, p - m + j]
            b = theta[t, m * d + j] if bias else theta[t, 0] * 0.0
            z = Z[t * m + j]
            for i in range(n):
                h = z[i] + b
                if h > 0.0:
                    f[i] += a * h


@nb.njit(cache=True, parallel=True, fastmath=FASTMATH)
def _relu_head_backward(Z, W, theta, spec, frozen, GZ):
    """GZ = (w a^T) 1[z + b > 0] per trajectory; a -= relu(Z + b)^T w, b -= sum_i GZ."""
    d, m, bias = int(spec[0]), int(spec[1]), spec[2] > 0.5
    p, n = theta.shape[1], W.shape[1]
    for t in nb.prange(theta.shape[0]):
        if frozen[t] >= 0:
            for j in range(m):
                GZ[t * m + j, :] = 0.0
            continue
        w = W[t]
        for j in range(m):
            a = theta[t, p - m + j]
            b = theta[t, m * d + j] if bias else theta[t, 0] * 0.0
            z = Z[t * m + j]
            g = GZ[t * m + j]
            grad_a = 0.0
            grad_b = 0.0
            for i in range(n):
                h = z[i] + b
                if h > 0.0:
                    grad_a += w[i] * h
                    g[i] = w[i] * a
                else:
                    g[i] = 0.0
                grad_b += g[i]
            theta[t, p - m + j] = a - grad_a
            if bias:
                theta[t, m * d + j] = b - grad_b


@nb.njit(cache=True, parallel=True, fastmath=FASTMATH)
def _relu_descend(theta, GM, spec, M, frozen):
    d, m = int(spec[0]), int(spec[1])
    for t in nb.prange(theta.shape[0]):
        if frozen[t] >= 0:
            continue
        for j in range(m):
            for k in range(d):
                v = theta[t, j * d + k] - GM[t * m + j, k]
                theta[t, j * d + k] = v
                M[t * m + j, k] = v


@dataclasses.dataclass(frozen=True)
class TwoLayerReLU(Model):
    """f(x) = sum_j a_j relu(w_j . x + b_j) on R^d with m hidden units (module docstring)."""

    d: int
    m: int
    bias: bool = False
    init_scheme: str = "gaussian"
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)

    name = "two_layer_relu"

    def __post_init__(self):
        for key in ("d", "m"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{key} must be a positive integer (got {value!r})")
        if not isinstance(self.bias, bool | np.bool_):
            raise ValueError(f"bias must be True or False (got {self.bias!r})")
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(
                f"unknown init_scheme {self.init_scheme!r}: choose one of {list(INIT_SCHEMES)}"
            )
        scales = tuple(float(s) for s in np.atleast_1d(np.asarray(self.scales, dtype=float)))
        if len(scales) != 3 or not all(np.isfinite(s) and s >= 0 for s in scales):
            raise ValueError(
                f"scales must be three finite numbers >= 0 (first layer, bias, second layer), "
                f"got {self.scales!r}"
            )
        object.__setattr__(self, "d", int(self.d))
        object.__setattr__(self, "m", int(self.m))
        object.__setattr__(self, "bias", bool(self.bias))
        object.__setattr__(self, "scales", scales)

    @property
    def n_params(self) -> int:
        return self.m * self.d + (2 * self.m if self.bias else self.m)

    @property
    def input_dim(self) -> int:
        return self.d

    @property
    def kernels(self):
        return _predict_two_layer_relu.dispatcher, _grad_two_layer_relu.dispatcher

    @property
    def spec(self) -> np.ndarray:
        return np.array([self.d, self.m, float(self.bias)], dtype=np.float64)

    def param_blocks(self):
        md, m = self.m * self.d, self.m
        blocks = {"W": slice(0, md)}
        if self.bias:
            blocks["b"] = slice(md, md + m)
        blocks["a"] = slice(self.n_params - m, self.n_params)
        return blocks

    def init(self, rngs):
        s_w, s_b, s_a = self.scales
        md, m = self.m * self.d, self.m
        out = np.zeros((len(rngs), self.n_params))
        blocks = self.param_blocks()
        for t, rng in enumerate(rngs):
            # Fixed draw order (W, b, a) so a seed gives the same W with or without bias.
            if self.init_scheme == "one_d":
                W = s_w * rng.choice(np.array([-1.0, 1.0]), size=md)
            else:
                W = s_w * rng.standard_normal(md)
            out[t, blocks["W"]] = W
            if self.bias:
                out[t, blocks["b"]] = s_b * rng.standard_normal(m)
            if self.init_scheme != "zero_output":
                out[t, blocks["a"]] = s_a * rng.standard_normal(m)
        return out

    def _unpack_torch(self, theta):
        T, m, d = theta.shape[0], self.m, self.d
        blocks = self.param_blocks()
        W = theta[:, blocks["W"]].reshape(T, m, d)
        b = theta[:, blocks["b"]] if self.bias else None
        return W, b, theta[:, blocks["a"]]

    def predict_torch(self, theta, X):
        W, b, a = self._unpack_torch(theta)
        Z = torch.matmul(X, W.transpose(-1, -2))  # (T, n, m)
        if b is not None:
            Z = Z + b[:, None, :]
        return torch.matmul(torch.relu(Z), a[:, :, None])[..., 0]

    @property
    def gemm_kernels(self):
        return GemmKernels(
            rows=self.m,
            first_layer=_relu_first_layer,
            descend=_relu_descend,
            head_forward=_relu_head_forward,
            head_backward=_relu_head_backward,
        )

    def predict_with_vjp_torch(self, theta, X):
        """Closed form without an autograd graph: with Z = X W^T + b and
        G = (w a^T) * 1[Z > 0] (T, n, m), phi^T w = (G^T X, sum_i G_i, relu(Z)^T w)
        for the blocks (W, b, a); relu'(0) = 0 as in the numba kernels and autograd."""
        theta = theta.detach()
        W, b, a = self._unpack_torch(theta)
        Z = torch.matmul(X, W.transpose(-1, -2))
        if b is not None:
            Z = Z + b[:, None, :]
        H = torch.relu(Z)
        active = Z > 0
        f = torch.matmul(H, a[:, :, None])[..., 0]

        def vjp(w):
            G = (w[:, :, None] * a[:, None, :]).mul_(active)  # (T, n, m)
            out = torch.empty_like(theta)
            blocks = self.param_blocks()
            out[:, blocks["W"]] = torch.matmul(G.transpose(-1, -2), X).reshape(theta.shape[0], -1)
            if b is not None:
                out[:, blocks["b"]] = G.sum(dim=1)
            out[:, blocks["a"]] = torch.matmul(w[:, None, :], H)[:, 0]
            return out

        return f, vjp

    def hidden_features(self, theta, X) -> np.ndarray:
        """Post-ReLU features relu(W x_i + b), shape (T, n, m) (for feature sparsity)."""
        theta = as_params(theta, self.n_params)
        X3 = as_inputs(X, self.d, theta.shape[0])
        blocks = self.param_blocks()
        W = theta[:, blocks["W"]].reshape(-1, self.m, self.d)
        Z = np.matmul(X3, W.transpose(0, 2, 1))
        if self.bias:
            Z = Z + theta[:, None, blocks["b"]]
        return np.maximum(Z, 0.0)

    def layer_features(self, theta, X) -> list[np.ndarray]:
        """Post-ReLU features per hidden layer: ``[hidden_features(theta, X)]``, one
        (T, n, m) array (the interface ``sgdsde.metrics.features`` reads)."""
        return [self.hidden_features(theta, X)]

    def hessian_closed_form(self, theta, X, y):
        """H = phi^T phi / n + (1/n) sum_i r_i grad^2 f(x_i).

        relu'' = 0 almost everywhere, so grad^2 f only couples a_j with (w_j, b_j):
        d^2 f / da_j dW_jk = 1[z_j > 0] x_k and d^2 f / da_j db_j = 1[z_j > 0].
        """
        theta = as_params(theta, self.n_params)
        T, m, d = theta.shape[0], self.m, self.d
        X3 = as_inputs(X, d, T)
        X3 = np.broadcast_to(X3, (T, *X3.shape[1:]))
        n = X3.shape[1]
        phi = self.jacobian(theta, X3)
        H = np.einsum("tip,tiq->tpq", phi, phi) / n
        r = self.residuals(theta, X3, y)  # (T, n)
        blocks = self.param_blocks()
        W = theta[:, blocks["W"]].reshape(T, m, d)
        Z = np.matmul(X3, W.transpose(0, 2, 1))  # (T, n, m)
        if self.bias:
            Z = Z + theta[:, None, blocks["b"]]
        active_r = (Z > 0.0) * r[:, :, None] / n  # (T, n, m): r_i 1[z_ij > 0] / n
        cross_w = np.einsum("tij,tik->tjk", active_r, X3)  # (T, m, d)
        a_idx = np.arange(blocks["a"].start, blocks["a"].stop)
        w_idx = np.arange(m * d).reshape(m, d)
        H[:, w_idx, a_idx[:, None]] += cross_w
        H[:, a_idx[:, None], w_idx] += cross_w
        if self.bias:
            b_idx = np.arange(blocks["b"].start, blocks["b"].stop)
            cross_b = active_r.sum(axis=1)  # (T, m)
            H[:, b_idx, a_idx] += cross_b
            H[:, a_idx, b_idx] += cross_b
        return H
