"""Kernel signatures shared by every model and every engine.

A model's maths enters the numba engines as two *first-class functions* with
fixed signatures, so that one compiled engine serves all models and numba's
on-disk cache stays valid across processes (a function passed with its own
dispatcher type would force a recompilation of the engine in each process):

    predict_one(theta, x, spec) -> f_theta(x)
    grad_one(theta, x, spec, scale, out)      # out += scale * grad_theta f_theta(x)

``theta`` is one trajectory's flat parameter vector (p,), ``x`` one input (d,),
``spec`` a float64 vector of the model's structural constants (widths, flags).

Nothing compiles at import: a model's kernels are ``Kernel`` objects that apply
``nb.njit(signature, cache=True)`` on first use (``model.kernels`` returns the compiled
dispatchers), so a process pays only for the kernels it runs, and from the second
process on loads them from numba's on-disk cache.

Models that are linear in the input, f_theta(x) = beta(theta) . x with beta a
coordinate-wise map (diagonal networks, linear regression, deep diagonal modes), may
also give two *linear-predictor kernels* over all trajectories, used by the GEMM-based
SDE solver (``euler_gemm``):

    beta_batch(theta, spec, B)                  # B[t] <- beta(theta[t])
    descend_batch(theta, G, spec, B, frozen)    # for t with frozen[t] < 0:
                                                #   theta[t] <- theta[t] - J_beta(theta[t])^T G[t]
                                                #   B[t] <- beta(theta[t])

``descend_batch`` evaluates the Jacobian at the *old* theta (one Euler step), so
phi_theta(X)^T w = J_beta^T (X^T w) needs only the GEMM G = W X. They are batch
kernels (parallel over t, called from Python) rather than per-row first-class
functions because an indirect call per trajectory costs more than the row's maths.

More generally (``GemmKernels``), a model whose first layer is a matrix of k rows per
trajectory applied to the shared inputs (k = 1, beta, for linear predictors; k = m
hidden units for the two-layer ReLU) runs a step as two GEMMs over all trajectories,
Z = M X^T (T k, n) and G_M = G_Z X (T k, d), and a few passes that are elementwise per
trajectory: ``head_forward`` (Z -> predictions), ``head_backward`` (w -> G_Z = dP/dZ^T w,
and the Euler step of the head's own parameters) and ``descend`` (the first layer's
step from G_M, then M refreshed).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numba as nb
import numpy as np
from numba import types

VEC = types.float64[::1]
MAT = types.float64[:, ::1]
PREDICT_SIG = types.float64(VEC, VEC, VEC)
GRAD_SIG = types.void(VEC, VEC, VEC, types.float64, VEC)
PredictKernel = types.FunctionType(PREDICT_SIG)
GradKernel = types.FunctionType(GRAD_SIG)

# The same kernels compiled for float32 (the float32 numba SDE solver); a dispatcher
# passed where a FunctionType is expected supplies the overload of matching signature.
VEC32 = types.float32[::1]
MAT32 = types.float32[:, ::1]
PREDICT_SIG32 = types.float32(VEC32, VEC32, VEC32)
GRAD_SIG32 = types.void(VEC32, VEC32, VEC32, types.float32, VEC32)
PredictKernel32 = types.FunctionType(PREDICT_SIG32)
GradKernel32 = types.FunctionType(GRAD_SIG32)


# Reassociation lets LLVM vectorise the reductions; 'nnan'/'ninf' are left out on
# purpose because divergence detection relies on NaN and inf comparing correctly.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


class Kernel:
    """A numba function compiled on first use, not at import.

    ``nb.njit(signatures, cache=True, **options)`` is applied to the module-level Python
    function ``py_func`` the first time ``dispatcher`` is read (or the Kernel called), so
    importing a model costs nothing and a process compiles (or, from the second process
    on, loads from numba's on-disk cache) only the kernels it runs. ``dispatcher`` is the
    compiled function: what a jitted caller takes as a first-class function argument.
    With explicit ``signatures`` every listed overload (float64 and float32) is ready at
    once; ``None`` compiles per argument types on the first call.
    """

    def __init__(self, py_func: Callable, signatures: Any = None, **options: Any):
        functools.update_wrapper(self, py_func)
        self.py_func = py_func
        self.signatures = signatures
        self.options = options

    @functools.cached_property
    def dispatcher(self) -> Any:
        return nb.njit(self.signatures, cache=True, **self.options)(self.py_func)

    def __call__(self, *args: Any) -> Any:
        return self.dispatcher(*args)

    def __repr__(self) -> str:
        return f"Kernel({self.py_func.__module__}.{self.py_func.__qualname__})"


def predict_kernel(fn) -> Kernel:
    """``fn(theta, x, spec) -> float`` as a model's prediction kernel (float64 and float32
    overloads, compiled on first use)."""
    return Kernel(fn, [PREDICT_SIG, PREDICT_SIG32], fastmath=FASTMATH)


def grad_kernel(fn) -> Kernel:
    """``fn(theta, x, spec, scale, out)`` (out += scale * grad f) as a model's gradient
    kernel (float64 and float32 overloads, compiled on first use)."""
    return Kernel(fn, [GRAD_SIG, GRAD_SIG32], fastmath=FASTMATH)


# The linear-predictor kernels are called from Python, never passed as first-class
# functions, so they compile per dtype on their first call (cached on disk).
def beta_batch_kernel(fn):
    """Compile ``fn(theta, spec, B)`` as a model's parallel beta kernel (the body loops
    ``nb.prange`` over trajectories)."""
    return nb.njit(cache=True, parallel=True, fastmath=FASTMATH)(fn)


def descend_batch_kernel(fn):
    """Compile ``fn(theta, G, spec, B, frozen)`` as a model's parallel descend kernel."""
    return nb.njit(cache=True, parallel=True, fastmath=FASTMATH)(fn)


@dataclasses.dataclass(frozen=True)
class GemmKernels:
    """A model's step as GEMMs plus per-trajectory passes (see the module doc).

    rows: k, rows of the first-layer matrix M per trajectory.
    first_layer(theta, spec, M): M (T k, d) <- the first layer of theta.
    descend(theta, G_M, spec, M, frozen): for t with frozen[t] < 0, the first layer
        of theta[t] <- itself - (dM/dtheta)^T G_M (at the old theta), M refreshed.
    head_forward(Z, theta, spec, P): P (T, n) <- predictions from Z (T k, n); None
        when k = 1 and P = Z.
    head_backward(Z, W, theta, spec, frozen, G_Z): G_Z (T k, n) <- dP/dZ^T W, and the
        head's parameters (not in M) take their Euler step; None when G_Z = W.
    """

    rows: int
    first_layer: Any
    descend: Any
    head_forward: Any = None
    head_backward: Any = None


_X3 = types.float64[:, :, ::1]


def _predict_batch(predict_one, theta, X, spec):
    """f_theta_t(x_{t,i}) for every trajectory t; X is (T or 1, m, d)."""
    T = theta.shape[0]
    m = X.shape[1]
    out = np.empty((T, m))
    shared = X.shape[0] == 1
    for t in nb.prange(T):
        Xt = X[0] if shared else X[t]
        for i in range(m):
            out[t, i] = predict_one(theta[t], Xt[i], spec)
    return out


def _vjp_batch(grad_one, theta, X, spec, V):
    """phi_theta_t(X_t)^T v_t for every trajectory, without forming phi."""
    T, p = theta.shape
    m = X.shape[1]
    out = np.zeros((T, p))
    shared = X.shape[0] == 1
    for t in nb.prange(T):
        Xt = X[0] if shared else X[t]
        for i in range(m):
            grad_one(theta[t], Xt[i], spec, V[t, i], out[t])
    return out


def _jacobian_batch(grad_one, theta, X, spec):
    """Rows grad_theta f(x_i): the full (T, m, p) Jacobian phi, for metrics and tests."""
    T, p = theta.shape
    m = X.shape[1]
    out = np.zeros((T, m, p))
    shared = X.shape[0] == 1
    for t in nb.prange(T):
        Xt = X[0] if shared else X[t]
        for i in range(m):
            grad_one(theta[t], Xt[i], spec, 1.0, out[t, i])
    return out


predict_batch = Kernel(
    _predict_batch, MAT(PredictKernel, MAT, _X3, VEC), parallel=True, fastmath=FASTMATH
)
vjp_batch = Kernel(
    _vjp_batch, MAT(GradKernel, MAT, _X3, VEC, MAT), parallel=True, fastmath=FASTMATH
)
jacobian_batch = Kernel(
    _jacobian_batch,
    types.float64[:, :, ::1](GradKernel, MAT, _X3, VEC),
    parallel=True,
    fastmath=FASTMATH,
)
