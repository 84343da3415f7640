"""Toy models of stochastic collapse (Chen, Kunin, Yamamura, Ganguli, NeurIPS 2023).

Each toy has an invariant set that SGD noise can make attractive: theta = 0 for the
quartic well, w1 = w2 = 0 for the tanh neuron (and any unit with zero in- and out-weights
for the GELU pair), the "identical neurons" set w1 = w2, a1 = a2 for the GELU pair, and
the dead modes W[:, k] = 0 for the linear teacher-student network.

All of them are written as square-loss regression models, L = 1/(2n) sum_i (f(x_i) - y_i)^2
(the package convention), so that every engine, SDE and metric applies to them unchanged:

* ``QuarticWell``          f(x) = x theta^2 / sqrt(2), one example x = 1, y = mu / sqrt(2):
                           L = (theta^2 - mu)^2 / 4 = theta^4/4 - mu theta^2/2 + mu^2/4;
* ``TanhNeuron``           f(x) = w2 tanh(w1 x);
* ``GeluPair``             f(x) = a1 gelu(w1 x) + a2 gelu(w2 x), gelu(z) = z Phi(z) (exact);
* ``LinearTeacherStudent`` f(x) = beta . x with beta_k = prod_l W[l, k] (diagonal modes of
                           a deep linear network written in the teacher's eigenbasis).

Their data sets are in ``sgdsde.data`` (``make_data("quartic_well")``,
``make_data("tanh_neuron")``, ``make_data("linear_teacher_student")``); the names
``quartic_well_data`` and ``linear_teacher_student_data`` stay importable from here.
"""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np

from sgdsde.arguments import check_finite, check_nonnegative
from sgdsde.data import linear_teacher_student_data, quartic_well_data  # noqa: F401 (moved)
from sgdsde.lazy import lazy_module
from sgdsde.models.base import Model, as_inputs, as_params, linear_predictions_torch
from sgdsde.models.kernels import (
    beta_batch_kernel,
    descend_batch_kernel,
    grad_kernel,
    predict_kernel,
)

torch = lazy_module("torch")  # imported on first use: not at `import sgdsde`

_SQRT2 = math.sqrt(2.0)
_INV_SQRT2 = 1.0 / _SQRT2
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _inputs_per_traj(X, d, T):
    """Inputs as a (T, n, d) array (a view when shared by all trajectories)."""
    X3 = as_inputs(X, d, T)
    return np.broadcast_to(X3, (T, *X3.shape[1:]))


def _gauss_newton(model, theta, X3):
    """phi^T phi / n, shape (T, p, p): the part of the Hessian that ignores curvature of f."""
    phi = model.jacobian(theta, X3)
    return np.einsum("tip,tiq->tpq", phi, phi) / X3.shape[1]


# --------------------------------------------------------------------------- quartic well


@predict_kernel
def _predict_quartic(theta, x, spec):
    return x[0] * theta[0] * theta[0] * _INV_SQRT2


@grad_kernel
def _grad_quartic(theta, x, spec, scale, out):
    out[0] += scale * _SQRT2 * x[0] * theta[0]


@dataclasses.dataclass(frozen=True)
class QuarticWell(Model):
    """The quartic double well L(theta) = theta^4/4 - mu theta^2/2 (+ mu^2/4), p = d = 1.

    Written as a square loss on one example (``quartic_well_data``): x = 1,
    f_theta(x) = x theta^2 / sqrt(2), y = mu / sqrt(2), so that
    1/2 (f - y)^2 = (theta^2 - mu)^2 / 4 = theta^4/4 - mu theta^2/2 + mu^2/4: the
    potential plus the constant mu^2/4 (``potential`` subtracts it). For mu > 0 the
    minima are theta = +-sqrt(mu) with curvature 2 mu, and theta = 0 is the invariant
    point that strong enough noise makes attractive. Every trajectory starts at
    ``init_value``.
    """

    mu: float = 1.0
    init_value: float = 1.0

    name = "quartic_well"

    def __post_init__(self):
        check_finite(mu=self.mu, init_value=self.init_value)
        object.__setattr__(self, "mu", float(self.mu))
        object.__setattr__(self, "init_value", float(self.init_value))

    @property
    def n_params(self) -> int:
        return 1

    @property
    def input_dim(self) -> int:
        return 1

    @property
    def kernels(self):
        return _predict_quartic.dispatcher, _grad_quartic.dispatcher

    def init(self, rngs):
        return np.full((len(rngs), 1), self.init_value)

    def predict_torch(self, theta, X):
        return X[..., 0] * theta[:, :1] ** 2 / _SQRT2

    def potential(self, theta) -> np.ndarray:
        """theta^4/4 - mu theta^2/2, shape (T,): the loss on ``quartic_well_data`` - mu^2/4."""
        th = as_params(theta, 1)[:, 0]
        return th**4 / 4 - self.mu * th**2 / 2

    def hessian_closed_form(self, theta, X, y):
        """H = (1/n) sum_i [2 x_i^2 theta^2 + sqrt(2) r_i x_i]; = 3 theta^2 - mu on the
        one-example data (x = 1, r = (theta^2 - mu) / sqrt(2))."""
        theta = as_params(theta, 1)
        x = _inputs_per_traj(X, 1, theta.shape[0])[..., 0]  # (T, n)
        r = self.residuals(theta, x[..., None], y)
        H = np.mean(2.0 * x**2 * theta**2 + _SQRT2 * r * x, axis=-1)
        return H[:, None, None]


# --------------------------------------------------------------------------- tanh neuron


@predict_kernel
def _predict_tanh(theta, x, spec):
    return theta[1] * math.tanh(theta[0] * x[0])


@grad_kernel
def _grad_tanh(theta, x, spec, scale, out):
    t = math.tanh(theta[0] * x[0])
    out[0] += scale * theta[1] * x[0] * (1.0 - t * t)
    out[1] += scale * t


@dataclasses.dataclass(frozen=True)
class TanhNeuron(Model):
    """A single tanh neuron f(x) = w2 tanh(w1 x), theta = (w1, w2), d = 1.

    theta = 0 is invariant under (stochastic) gradient flow: both partial derivatives,
    w2 x sech^2(w1 x) and tanh(w1 x), vanish there. Init: ``init_scale * N(0, I_2)``.
    """

    init_scale: float = 1.0

    name = "tanh_neuron"

    def __post_init__(self):
        check_nonnegative(init_scale=self.init_scale)
        object.__setattr__(self, "init_scale", float(self.init_scale))

    @property
    def n_params(self) -> int:
        return 2

    @property
    def input_dim(self) -> int:
        return 1

    @property
    def kernels(self):
        return _predict_tanh.dispatcher, _grad_tanh.dispatcher

    def param_blocks(self):
        return {"w1": slice(0, 1), "w2": slice(1, 2)}

    def init(self, rngs):
        return np.stack([self.init_scale * rng.standard_normal(2) for rng in rngs])

    def predict_torch(self, theta, X):
        return theta[:, 1:2] * torch.tanh(theta[:, 0:1] * X[..., 0])

    def hessian_closed_form(self, theta, X, y):
        """H = phi^T phi / n + (1/n) sum_i r_i grad^2 f(x_i) with
        f_{w1 w1} = -2 w2 x^2 t (1 - t^2), f_{w1 w2} = x (1 - t^2), f_{w2 w2} = 0,
        t = tanh(w1 x)."""
        theta = as_params(theta, 2)
        X3 = _inputs_per_traj(X, 1, theta.shape[0])
        H = _gauss_newton(self, theta, X3)
        x = X3[..., 0]
        w1, w2 = theta[:, :1], theta[:, 1:]
        r = self.residuals(theta, X3, y) / x.shape[1]
        t = np.tanh(w1 * x)
        sech2 = 1.0 - t * t
        H[:, 0, 0] += np.sum(r * (-2.0 * w2 * x**2 * t * sech2), axis=-1)
        cross = np.sum(r * x * sech2, axis=-1)
        H[:, 0, 1] += cross
        H[:, 1, 0] += cross
        return H


# --------------------------------------------------------------------------- GELU pair


@predict_kernel
def _predict_gelu_pair(theta, x, spec):
    acc = 0.0
    for k in range(2):
        z = theta[k] * x[0]
        acc += theta[2 + k] * 0.5 * z * (1.0 + math.erf(z * _INV_SQRT2))
    return acc


@grad_kernel
def _grad_gelu_pair(theta, x, spec, scale, out):
    for k in range(2):
        z = theta[k] * x[0]
        cdf = 0.5 * (1.0 + math.erf(z * _INV_SQRT2))
        pdf = _INV_SQRT_2PI * math.exp(-0.5 * z * z)
        out[k] += scale * theta[2 + k] * x[0] * (cdf + z * pdf)  # gelu'(z) = Phi + z phi
        out[2 + k] += scale * z * cdf


def _gelu_derivatives(z):
    """gelu(z) = z Phi(z), gelu' = Phi + z phi, gelu'' = phi (2 - z^2) (numpy)."""
    from scipy.special import ndtr  # scipy.special costs ~0.2 s to import: on first use

    cdf = ndtr(z)
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * z * z)
    return z * cdf, cdf + z * pdf, pdf * (2.0 - z * z)


@dataclasses.dataclass(frozen=True)
class GeluPair(Model):
    """Two GELU neurons 1 -> 2 -> 1 without biases: f(x) = a1 gelu(w1 x) + a2 gelu(w2 x).

    gelu(z) = z Phi(z) is the exact (erf) GELU, torch's default. theta = (w1, w2, a1, a2).
    Invariant sets: a vanishing neuron (w_k = a_k = 0) and identical neurons
    (w1 = w2, a1 = a2), which the paper shows SGD noise can make attractive.
    Init: ``init_scale * N(0, I_4)``.
    """

    init_scale: float = 1.0

    name = "gelu_pair"

    def __post_init__(self):
        check_nonnegative(init_scale=self.init_scale)
        object.__setattr__(self, "init_scale", float(self.init_scale))

    @property
    def n_params(self) -> int:
        return 4

    @property
    def input_dim(self) -> int:
        return 1

    @property
    def kernels(self):
        return _predict_gelu_pair.dispatcher, _grad_gelu_pair.dispatcher

    def param_blocks(self):
        return {"w": slice(0, 2), "a": slice(2, 4)}

    def init(self, rngs):
        return np.stack([self.init_scale * rng.standard_normal(4) for rng in rngs])

    def predict_torch(self, theta, X):
        # (T or 1, n, 1) * (T, 1, 2) -> (T, n, 2) pre-activations, then weight by a.
        Z = X * theta[:, None, 0:2]
        return torch.matmul(torch.nn.functional.gelu(Z), theta[:, 2:4, None])[..., 0]

    def hessian_closed_form(self, theta, X, y):
        """H = phi^T phi / n + (1/n) sum_i r_i grad^2 f(x_i) with, per neuron k,
        f_{w_k w_k} = a_k x^2 gelu''(w_k x), f_{w_k a_k} = x gelu'(w_k x), f_{a_k a_k} = 0;
        the two neurons do not couple in grad^2 f."""
        theta = as_params(theta, 4)
        X3 = _inputs_per_traj(X, 1, theta.shape[0])
        H = _gauss_newton(self, theta, X3)
        x = X3[..., 0]
        r = self.residuals(theta, X3, y) / x.shape[1]
        for k in range(2):
            z = theta[:, k : k + 1] * x
            _, d1, d2 = _gelu_derivatives(z)
            H[:, k, k] += np.sum(r * theta[:, 2 + k : 3 + k] * x**2 * d2, axis=-1)
            cross = np.sum(r * x * d1, axis=-1)
            H[:, k, 2 + k] += cross
            H[:, 2 + k, k] += cross
        return H


# --------------------------------------------------------------- linear teacher-student


@predict_kernel
def _predict_diag_deep_linear(theta, x, spec):
    d = x.shape[0]
    depth = int(spec[1])
    acc = 0.0
    for k in range(d):
        beta = 1.0
        for l in range(depth):
            beta *= theta[l * d + k]
        acc += beta * x[k]
    return acc


@grad_kernel
def _grad_diag_deep_linear(theta, x, spec, scale, out):
    d = x.shape[0]
    depth = int(spec[1])
    for k in range(d):
        sx = scale * x[k]
        # d beta_k / d W[l, k] = prod_{l' != l} W[l', k], by explicit products rather
        # than beta_k / W[l, k], which is undefined on the invariant set W[l, k] = 0.
        for l in range(depth):
            partial = 1.0
            for m in range(depth):
                if m != l:
                    partial *= theta[m * d + k]
            out[l * d + k] += sx * partial


@beta_batch_kernel
def _beta_diag_deep_linear(theta, spec, B):
    d = B.shape[1]
    depth = int(spec[1])
    for t in nb.prange(theta.shape[0]):
        for k in range(d):
            B[t, k] = theta[t, k]
        for l in range(1, depth):
            for k in range(d):
                B[t, k] *= theta[t, l * d + k]


@descend_batch_kernel
def _descend_diag_deep_linear(theta, G, spec, B, frozen):
    d = G.shape[1]
    depth = int(spec[1])
    for t in nb.prange(theta.shape[0]):
        if frozen[t] >= 0:
            continue
        th = theta[t]
        for k in range(d):
            # W[l, k] -= G_k prod_{m != l} W_old[m, k]: layers below l are already
            # updated, so their old values enter through the running product ``below``.
            below = 1.0
            for l in range(depth):
                above = 1.0
                for m in range(l + 1, depth):
                    above *= th[m * d + k]
                old = th[l * d + k]
                th[l * d + k] = old - G[t, k] * below * above
                below *= old
            # the same arithmetic as _beta_diag_deep_linear: B stays exactly beta(theta)
            B[t, k] = th[k]
            for l in range(1, depth):
                B[t, k] *= th[l * d + k]


@dataclasses.dataclass(frozen=True)
class LinearTeacherStudent(Model):
    """Diagonal modes of a depth-L linear network: beta_k = prod_{l=1..L} W[l, k], f = beta . x.

    Inputs are expressed in the eigenbasis of the input covariance (and of the teacher,
    ``linear_teacher_student_data``); theta is W (depth, d) row-major (block ``W{l}`` is
    layer l). A mode with W[l, k] = 0 in two or more layers is invariant: the
    stochastic-collapse set. The modes decouple exactly only when X^T X / n =
    diag(lambda) (``design="orthogonal"``, the paper's setting); a Gaussian design
    couples them through the off-diagonal of X^T X / n.

    Which modes collapse (depth 2, orthogonal design, Chen et al. 2023 Sec. 6 in our
    conventions, docs/conventions.md). With c = X^T y / n, mode k has loss gradient
    lambda_k beta_k - c_k in beta_k, and label-noise GD (step eta, label variance delta,
    batch n) adds to it a noise of variance delta lambda_k / n, independent across modes.
    For a = W[0, k], b = W[1, k] its SDE is da = -b (g dt + sqrt(eta delta lambda_k / n)
    dB), db = -a (...), g = lambda_k ab - c_k; balanced modes (a = b, preserved by GD
    too) have s = ab with

        d log s = 2 lambda_k (hat beta_k - tau - s) dt - 2 sqrt(eta delta lambda_k / n) dB,
        hat beta_k = c_k / lambda_k,   tau = eta delta / (2 n).

    So s -> 0 (collapse) iff hat beta_k < tau, whatever lambda_k: the input variance
    only scales the rate 2 lambda_k |hat beta_k - tau| (weakly excited modes collapse
    *slower*, not first). Above the threshold s has the stationary law
    Gamma(hat beta_k / (2 tau) - 1/2, scale 2 tau), of mean hat beta_k - tau: label
    noise soft-thresholds the least-squares solution by tau (the paper's eta sigma^2 / 2
    with sigma^2 = delta / n per mode).

    Init (``init_scheme``): ``"constant"`` W[l, k] = init_scale (small and balanced, the
    incremental-learning regime; beta_k > 0 then, and balanced modes stay positive, so
    give a positive teacher), or ``"gaussian"`` W ~ init_scale N(0, 1).
    """

    d: int
    depth: int = 2
    init_scale: float = 0.1
    init_scheme: str = "constant"

    name = "linear_teacher_student"

    def __post_init__(self):
        for key in ("d", "depth"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{key} must be a positive integer (got {value!r})")
        check_nonnegative(init_scale=self.init_scale)
        if self.init_scheme not in ("constant", "gaussian"):
            raise ValueError(
                f"unknown init_scheme {self.init_scheme!r}: choose 'constant' or 'gaussian'"
            )
        object.__setattr__(self, "d", int(self.d))
        object.__setattr__(self, "depth", int(self.depth))
        object.__setattr__(self, "init_scale", float(self.init_scale))

    @property
    def n_params(self) -> int:
        return self.depth * self.d

    @property
    def input_dim(self) -> int:
        return self.d

    @property
    def kernels(self):
        return _predict_diag_deep_linear.dispatcher, _grad_diag_deep_linear.dispatcher

    @property
    def spec(self) -> np.ndarray:
        return np.array([self.d, self.depth], dtype=np.float64)

    def param_blocks(self):
        return {f"W{l + 1}": slice(l * self.d, (l + 1) * self.d) for l in range(self.depth)}

    def init(self, rngs):
        if self.init_scheme == "constant":
            return np.full((len(rngs), self.n_params), self.init_scale)
        return np.stack([self.init_scale * rng.standard_normal(self.n_params) for rng in rngs])

    @property
    def linear_predictor_kernels(self):
        return _beta_diag_deep_linear, _descend_diag_deep_linear

    def linear_predictor(self, theta):
        theta = as_params(theta, self.n_params)
        return theta.reshape(-1, self.depth, self.d).prod(axis=1)

    def predict_torch(self, theta, X):
        beta = theta.reshape(theta.shape[0], self.depth, self.d).prod(dim=1)
        return linear_predictions_torch(X, beta)

    def hessian_closed_form(self, theta, X, y):
        """H = phi^T phi / n + sum_k c_k grad^2 beta_k with c = X^T r / n, where
        d^2 beta_k / dW[l, k] dW[l', k] = prod_{l'' != l, l'} W[l'', k] for l != l'."""
        theta = as_params(theta, self.n_params)
        T, d, depth = theta.shape[0], self.d, self.depth
        X3 = _inputs_per_traj(X, d, T)
        H = _gauss_newton(self, theta, X3)
        r = self.residuals(theta, X3, y)
        c = np.einsum("ti,tik->tk", r, X3) / X3.shape[1]  # (T, d)
        W = theta.reshape(T, depth, d)
        idx = np.arange(d)
        for l in range(depth):
            for m in range(depth):
                if l == m:
                    continue
                others = [q for q in range(depth) if q not in (l, m)]
                partial = W[:, others, :].prod(axis=1)  # empty product = 1 at depth 2
                H[:, l * d + idx, m * d + idx] += c * partial
        return H
