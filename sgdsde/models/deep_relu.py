"""Deep fully connected ReLU networks with a scalar linear output.

Andriushchenko et al. (ICML 2023), Sec. 4 / ``fc_nets.py`` ``FCNet`` and
``fc_nets_multi_layer.ipynb`` (student: hidden widths [10, 10], biases, 0.8 N(0, 1)).

With h_0 = x and hidden widths w_1..w_H:

    h_l = relu(W_l h_{l-1} + b_l)   (l = 1..H),      f(x) = W_{H+1} h_H + b_{H+1},

W_l of shape (w_l, w_{l-1}), the output layer W_{H+1} of shape (1, w_H); biases on
every layer when ``bias=True``. relu'(0) is taken as 0, as in torch.

Flat layout of theta: for l = 1..H+1 in order, W_l (row-major) then b_l (if bias).
Blocks are named ``W1, b1, W2, b2, ...`` (``W{H+1}`` is the output layer).

Initialisation: every weight ``scale * N(0, 1)`` (``FCNet.init_gaussian``). Biases
are 0 with ``bias_init="zero"`` (the default, so that the init is a function of
``scale`` alone); the notebook leaves them at torch's ``nn.Linear`` default,
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which ``bias_init="torch_default"`` reproduces.
"""

from __future__ import annotations

import dataclasses

import numba as nb
import numpy as np

from sgdsde.lazy import lazy_module
from sgdsde.models.base import Model, as_inputs, as_params
from sgdsde.models.kernels import FASTMATH, grad_kernel, predict_kernel

torch = lazy_module("torch")  # imported on first use: not at `import sgdsde`

BIAS_INITS = ("zero", "torch_default")

# spec = [d, H, has_bias, w_1, ..., w_H]
_SPEC_WIDTHS = 3


@nb.njit(inline="always", fastmath=FASTMATH)
def _relu_layer(theta, p, src, src_off, in_w, w, has_bias, dst, dst_off):
    """dst[dst_off + j] = relu(W_j . src[src_off:src_off + in_w] + b_j) for the layer whose
    weights start at theta[p] (W row-major, then b if has_bias); returns the next
    layer's offset. Shared by the prediction and gradient kernels."""
    b_off = p + w * in_w
    for j in range(w):
        z = 0.0
        row = p + j * in_w
        for k in range(in_w):
            z += theta[row + k] * src[src_off + k]
        if has_bias:
            z += theta[b_off + j]
        dst[dst_off + j] = z if z > 0.0 else 0.0
    return b_off + w if has_bias else b_off


@predict_kernel
def _predict_deep_relu(theta, x, spec):
    d = x.shape[0]
    H = int(spec[1])
    has_bias = spec[2] > 0.5
    max_w = d
    for l in range(H):
        max_w = max(max_w, int(spec[_SPEC_WIDTHS + l]))
    # Two ping-pong activation buffers: the forward pass needs only the last layer.
    buf = np.empty(2 * max_w)
    for k in range(d):
        buf[k] = x[k]
    cur, nxt = 0, max_w
    in_w = d
    p = 0
    for l in range(H):
        w = int(spec[_SPEC_WIDTHS + l])
        p = _relu_layer(theta, p, buf, cur, in_w, w, has_bias, buf, nxt)
        cur, nxt = nxt, cur
        in_w = w
    acc = 0.0
    for k in range(in_w):
        acc += theta[p + k] * buf[cur + k]
    if has_bias:
        acc += theta[p + in_w]
    return acc


@grad_kernel
def _grad_deep_relu(theta, x, spec, scale, out):
    d = x.shape[0]
    H = int(spec[1])
    has_bias = spec[2] > 0.5
    total_w = d
    max_w = 1
    for l in range(H):
        w = int(spec[_SPEC_WIDTHS + l])
        total_w += w
        max_w = max(max_w, w)
    # Backprop needs every layer's activation: act = [x, h_1, ..., h_H] stored flat,
    # then two ping-pong buffers for the deltas dF/dz_l. relu(z) > 0 iff z > 0, so the
    # activations double as the ReLU masks.
    scratch = np.empty(total_w + 2 * max_w)
    for k in range(d):
        scratch[k] = x[k]
    in_off, in_w, out_off = 0, d, d
    p = 0
    for l in range(H):
        w = int(spec[_SPEC_WIDTHS + l])
        p = _relu_layer(theta, p, scratch, in_off, in_w, w, has_bias, scratch, out_off)
        in_off, in_w = out_off, w
        out_off += w
    # Output layer f = W_{H+1} h_H + b_{H+1}; p is its offset, in_off/in_w locate h_H.
    for k in range(in_w):
        out[p + k] += scale * scratch[in_off + k]
    if has_bias:
        out[p + in_w] += scale
    if H == 0:
        return
    delta, new_delta = total_w, total_w + max_w
    for k in range(in_w):
        delta_k = scale * theta[p + k]
        scratch[delta + k] = delta_k if scratch[in_off + k] > 0.0 else 0.0
    w_next_p = p  # offset of W_{l+1}
    for l in range(H - 1, -1, -1):
        w = int(spec[_SPEC_WIDTHS + l])
        prev_w = d if l == 0 else int(spec[_SPEC_WIDTHS + l - 1])
        prev_off = in_off - prev_w  # h_{l-1} sits right before h_l in scratch
        layer_p = w_next_p - (w * prev_w + (w if has_bias else 0))
        b_off = layer_p + w * prev_w
        for j in range(w):
            g = scratch[delta + j]
            if g != 0.0:
                row = layer_p + j * prev_w
                for k in range(prev_w):
                    out[row + k] += g * scratch[prev_off + k]
                if has_bias:
                    out[b_off + j] += g
        if l > 0:
            for k in range(prev_w):
                if scratch[prev_off + k] > 0.0:
                    acc = 0.0
                    for j in range(w):
                        acc += theta[layer_p + j * prev_w + k] * scratch[delta + j]
                    scratch[new_delta + k] = acc
                else:
                    scratch[new_delta + k] = 0.0
            delta, new_delta = new_delta, delta
        w_next_p = layer_p
        in_off = prev_off


@dataclasses.dataclass(frozen=True)
class DeepReLU(Model):
    """Fully connected ReLU net d -> widths[0] -> ... -> widths[-1] -> 1 (module docstring)."""

    d: int
    widths: tuple[int, ...] = (10, 10)
    bias: bool = True
    scale: float = 0.8
    bias_init: str = "zero"

    name = "deep_relu"

    def __post_init__(self):
        if isinstance(self.d, bool) or not isinstance(self.d, int | np.integer) or self.d < 1:
            raise ValueError(f"d must be a positive integer (got {self.d!r})")
        widths = self.widths
        if isinstance(widths, int | np.integer):
            widths = (widths,)
        try:
            widths = tuple(widths)
        except TypeError:
            raise ValueError(
                f"widths must be a list of positive integers, e.g. [10, 10] (got {self.widths!r})"
            ) from None
        if not all(
            isinstance(w, int | np.integer) and not isinstance(w, bool) and w >= 1 for w in widths
        ):
            raise ValueError(
                f"widths must be a list of positive integers, e.g. [10, 10] (got {self.widths!r})"
            )
        if not isinstance(self.bias, bool | np.bool_):
            raise ValueError(f"bias must be True or False (got {self.bias!r})")
        if (
            isinstance(self.scale, bool)
            or not isinstance(self.scale, int | float | np.integer | np.floating)
            or not np.isfinite(self.scale)
            or self.scale < 0
        ):
            raise ValueError(f"scale must be a finite number >= 0 (got {self.scale!r})")
        if self.bias_init not in BIAS_INITS:
            raise ValueError(
                f"unknown bias_init {self.bias_init!r}: choose one of {list(BIAS_INITS)}"
            )
        object.__setattr__(self, "d", int(self.d))
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        object.__setattr__(self, "bias", bool(self.bias))
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(fan_out, fan_in) of W_1, ..., W_{H+1}."""
        sizes = [self.d, *self.widths, 1]
        return [(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]

    @property
    def n_params(self) -> int:
        return sum(o * i + (o if self.bias else 0) for o, i in self.layer_shapes)

    @property
    def input_dim(self) -> int:
        return self.d

    @property
    def kernels(self):
        return _predict_deep_relu.dispatcher, _grad_deep_relu.dispatcher

    @property
    def spec(self) -> np.ndarray:
        return np.array(
            [self.d, len(self.widths), float(self.bias), *self.widths], dtype=np.float64
        )

    def param_blocks(self):
        blocks, p = {}, 0
        for l, (fan_out, fan_in) in enumerate(self.layer_shapes, start=1):
            blocks[f"W{l}"] = slice(p, p + fan_out * fan_in)
            p += fan_out * fan_in
            if self.bias:
                blocks[f"b{l}"] = slice(p, p + fan_out)
                p += fan_out
        return blocks

    def init(self, rngs):
        out = np.zeros((len(rngs), self.n_params))
        blocks = self.param_blocks()
        for t, rng in enumerate(rngs):
            for l, (fan_out, fan_in) in enumerate(self.layer_shapes, start=1):
                out[t, blocks[f"W{l}"]] = self.scale * rng.standard_normal(fan_out * fan_in)
                if self.bias and self.bias_init == "torch_default":
                    bound = 1.0 / np.sqrt(fan_in)
                    out[t, blocks[f"b{l}"]] = rng.uniform(-bound, bound, fan_out)
        return out

    def predict_torch(self, theta, X):
        T = theta.shape[0]
        blocks = self.param_blocks()
        h = X  # (T or 1, n, d)
        shapes = self.layer_shapes
        for l, (fan_out, fan_in) in enumerate(shapes, start=1):
            W = theta[:, blocks[f"W{l}"]].reshape(T, fan_out, fan_in)
            h = torch.matmul(h, W.transpose(-1, -2))  # (T, n, fan_out)
            if self.bias:
                h = h + theta[:, None, blocks[f"b{l}"]]
            if l < len(shapes):
                h = torch.relu(h)
        return h[..., 0]

    def layer_features(self, theta, X) -> list[np.ndarray]:
        """Post-ReLU features h_l(x_i) of every hidden layer l = 1..H, numpy: a list of H
        arrays (T, n, w_l) (the interface ``sgdsde.metrics.features`` reads)."""
        theta = as_params(theta, self.n_params)
        T = theta.shape[0]
        h = as_inputs(X, self.d, T)  # (T or 1, n, d)
        blocks = self.param_blocks()
        out = []
        for l, (fan_out, fan_in) in enumerate(self.layer_shapes[:-1], start=1):
            W = theta[:, blocks[f"W{l}"]].reshape(T, fan_out, fan_in)
            z = np.matmul(h, W.transpose(0, 2, 1))
            if self.bias:
                z = z + theta[:, None, blocks[f"b{l}"]]
            h = np.maximum(z, 0.0)
            out.append(h)
        return out
