"""Euler-Maruyama in numba: the production CPU solver, parallel over trajectories.

One step of size dt for trajectory t, with standard normals z, u, zeta drawn as in
``sgdsde.sde.solvers.base`` (dW = -sqrt(dt) (z, u, zeta)):

    r_i   = f_theta(x_i) - y_i                                   (all i; divergence check)
    w_i   = r_i dt / n + sqrt(dt) (a z_i + b r_i (u_i - mean u))
    theta <- theta - phi^T w - s sqrt(dt) zeta                   (phi^T w: one pass of grad_one)

i.e. theta - grad L dt + G dW. A trajectory whose training loss at the start of a step
is non-finite or above ``max_loss`` is frozen there and ``diverged_step`` set to that
step. The model's maths enters as the first-class ``predict_one`` / ``grad_one``
kernels (``sgdsde.models.kernels``), so one compiled kernel, cached on disk, serves
all models; nothing is allocated inside the step loop.

Orders (``Solver.strong_order(problem)`` / ``weak_order``): weak 1; strong 0.5, and 1
when the problem's noise is additive for any model (``Isotropic`` only, or no noise).
``LabelNoise`` on a model whose Jacobian phi does not depend on theta (e.g.
``LinearRegression``: an Ornstein-Uhlenbeck process) is additive too and reaches strong
order 1 (tested), though the method, which sees only the channels, says 0.5 there.

Identity (tested): ``simulate_sgd(model, data, eta, n_steps=N, sgd=GD(delta), seed=s)``
and ``simulate_sde(model, data, LabelNoise(delta, eta, n), dt=eta, n_steps=N, seed=s,
solver="euler_numba")`` compute the same iterates up to round-off: label-noise GD *is*
this scheme at dt = eta driven by ``NumpyIncrements``.

User SDEs (the user's own drift and diffusion, as numba kernels or torch functions) are
``SDETerms`` integrated by the ``euler_terms`` solver (``sgdsde.sde.terms``); the kernel
decorator ``diagonal_sde_kernel`` is importable from here as before.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import numba as nb
import numpy as np
from numba import types

from sgdsde.models.kernels import (
    FASTMATH,
    MAT,
    MAT32,
    VEC,
    VEC32,
    GradKernel,
    GradKernel32,
    PredictKernel,
    PredictKernel32,
)
from sgdsde.run.checks import check_device
from sgdsde.run.loop import chunk_segments
from sgdsde.sde.solvers.base import Increments, SDEProblem, Solver, check_option
from sgdsde.sde.solvers.increments import (
    BrownianBridge,
    ChunkedDraws,
    IncrementSource,
    NumpyIncrements,
    XoshiroIncrements,
    as_increments,
)
from sgdsde.sde.terms import diagonal_sde_kernel  # noqa: F401 (its home was here)

_F3 = types.float64[:, :, ::1]
_I64V = types.int64[::1]

_EM_SIG = types.void(
    PredictKernel,
    GradKernel,
    MAT,  # theta (T, p), updated in place
    MAT,  # X (n, d)
    VEC,  # y (n,)
    VEC,  # spec
    _F3,  # label normals z (T, S, n or 0)
    _F3,  # sgd normals u (T, S, n or 0)
    _F3,  # iso normals zeta (T, S, p or 0)
    VEC,  # a (label coefficient) per trajectory
    VEC,  # b (sgd coefficient) per trajectory
    VEC,  # s (isotropic coefficient) per trajectory
    VEC,  # dt per trajectory
    _I64V,  # diverged_step (T,), -1 alive; updated in place
    types.int64,  # absolute step of row 0 of the increments
    types.int64,  # first row to run
    types.int64,  # one past the last row to run
    types.float64,  # max_loss
    MAT,  # residual scratch (T, n)
    MAT,  # gradient scratch (T, p)
)

# The float32 kernel: parameters, data, normals and scratch in float32; coefficients,
# dt and the loss bound stay float64 scalars/vectors.
_F3_32 = types.float32[:, :, ::1]
_EM_SIG32 = types.void(
    PredictKernel32,
    GradKernel32,
    MAT32,
    MAT32,
    VEC32,
    VEC32,
    _F3_32,
    _F3_32,
    _F3_32,
    VEC,
    VEC,
    VEC,
    VEC,
    _I64V,
    types.int64,
    types.int64,
    types.int64,
    types.float64,
    MAT32,
    MAT32,
)


def _cast_like(arr, value):
    """value converted to arr's dtype (numba only: see the overload below)."""
    raise NotImplementedError


@nb.extending.overload(_cast_like)
def _cast_like_overload(arr, value):
    to = arr.dtype

    def impl(arr, value):
        return to(value)

    return impl


def em_block(
    predict_one,
    grad_one,
    theta,
    X,
    y,
    spec,
    z,
    u,
    zeta,
    a,
    b,
    s,
    dt,
    diverged_step,
    k0,
    s0,
    s1,
    max_loss,
    resid,
    grad,
):
    """Rows s0 .. s1-1 of the increments for every alive trajectory (module doc), at
    trajectory t's step dt[t]; compiled for float64 and float32 by ``em_kernel``."""
    T, p = theta.shape
    n = X.shape[0]
    inv_n = 1.0 / n
    for t in nb.prange(T):
        if diverged_step[t] >= 0:
            continue
        sdt = np.sqrt(dt[t])
        dt_n = dt[t] / n
        th = theta[t]
        g = grad[t]
        r = resid[t]
        at = a[t] * sdt
        bt = b[t] * sdt
        st = s[t] * sdt
        for j in range(p):
            g[j] = 0.0
        for k in range(s0, s1):
            acc = 0.0
            for i in range(n):
                ri = predict_one(th, X[i], spec) - y[i]
                r[i] = ri
                acc += ri * ri
            if not (0.5 * acc * inv_n <= max_loss):
                diverged_step[t] = k0 + k
                break
            ubar = 0.0
            if bt != 0.0:
                for i in range(n):
                    ubar += u[t, k, i]
                ubar *= inv_n
            for i in range(n):
                w = r[i] * dt_n
                if at != 0.0:
                    w += at * z[t, k, i]
                if bt != 0.0:
                    w += bt * r[i] * (u[t, k, i] - ubar)
                grad_one(th, X[i], spec, _cast_like(th, w), g)
            # g is cleared in the update pass (it starts the kernel cleared): one pass
            # over p fewer per step.
            for j in range(p):
                th[j] -= g[j]
                g[j] = 0.0
            if st != 0.0:
                for j in range(p):
                    th[j] -= st * zeta[t, k, j]


_EM_SIGS = {np.dtype(np.float64): _EM_SIG, np.dtype(np.float32): _EM_SIG32}


@functools.cache
def em_kernel(dtype: np.dtype):
    """``em_block`` compiled for ``dtype`` on first use in a process (then loaded from
    numba's disk cache)."""
    return nb.njit(_EM_SIGS[np.dtype(dtype)], cache=True, parallel=True, fastmath=FASTMATH)(
        em_block
    )


@dataclasses.dataclass
class _NumbaState:
    problem: SDEProblem
    theta: np.ndarray
    X: np.ndarray
    y: np.ndarray
    spec: np.ndarray
    resid: np.ndarray
    grad: np.ndarray
    draws: ChunkedDraws
    dt: np.ndarray  # (T,) float64, the problem's dt per trajectory


def em_steps_numba(
    problem: SDEProblem,
    theta: np.ndarray,
    increments: Increments,
    diverged_step: np.ndarray | None = None,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Run the numba EM kernel in place on ``theta`` (T, p) with *given* standard normals.

    The low-level entry point behind ``EulerMaruyamaNumba``; tests use it to drive the
    scheme with hand-made increments (SVAG, common random numbers across dt).
    ``rows`` selects rows a .. b-1 of the increments (default: all). Returns theta.
    """
    model, data, c = problem.model, problem.data, problem.coefficients
    T, p = theta.shape
    if not (theta.dtype == np.float64 and theta.flags.c_contiguous and theta.flags.writeable):
        raise ValueError("theta must be a writable C-contiguous float64 (T, p) array")
    if diverged_step is None:
        diverged_step = np.full(T, -1, dtype=np.int64)
    a, b = (0, increments.n_steps) if rows is None else rows
    predict_one, grad_one = model.kernels
    em_kernel(np.dtype(np.float64))(
        predict_one,
        grad_one,
        theta,
        data.X,
        data.y,
        np.ascontiguousarray(model.spec, dtype=np.float64),
        _as3(increments.label),
        _as3(increments.sgd),
        _as3(increments.iso),
        np.ascontiguousarray(c.label, dtype=np.float64),
        np.ascontiguousarray(c.sgd, dtype=np.float64),
        np.ascontiguousarray(c.iso, dtype=np.float64),
        problem.dt_per_traj(),
        diverged_step,
        int(increments.k0),
        int(a),
        int(b),
        float(problem.max_loss),
        np.empty((T, data.n)),
        np.empty((T, p)),
    )
    return theta


def _as3(arr: np.ndarray) -> np.ndarray:
    return np.require(arr, dtype=np.float64, requirements=("C", "W"))


_DTYPES = {"float64": np.float64, "float32": np.float32}


@dataclasses.dataclass(frozen=True)
class EulerMaruyamaNumba(Solver):
    """Euler-Maruyama, numba kernel parallel over trajectories (CPU).

    dtype: "float64" (default) or "float32" (parameters, data, normals and the
    model's kernels in single precision; the loss check accumulates in float64).
    Increments are drawn in float64 from the same streams in both cases.
    increments: ``NumpyIncrements()`` (default, "numpy": the label channel shares exact
    label-noise GD's normals), ``XoshiroIncrements()`` ("xoshiro": faster) or
    ``BrownianBridge(refine)`` (common random numbers with GD at dt = eta / refine).
    """

    dtype: str = "float64"
    increments: IncrementSource | str = dataclasses.field(default_factory=NumpyIncrements)
    name = "euler_numba"
    retimes: ClassVar[bool] = True
    accepted_increments: ClassVar[tuple] = (NumpyIncrements, XoshiroIncrements, BrownianBridge)

    def __post_init__(self):
        check_option("dtype", self.dtype, _DTYPES)
        increments = as_increments(self.increments, self.accepted_increments)
        object.__setattr__(self, "increments", increments)

    def init(self, problem, theta0, streams, device="cpu"):
        check_device(device, f"solver {self.name!r}", cpu_only="use solver='euler_torch' for a GPU")
        dtype = _DTYPES[self.dtype]
        draws = self.increments.draws(problem, streams, convert=_cast(dtype))
        theta = np.array(theta0, dtype=dtype, order="C", copy=True)
        T, p = theta.shape
        return _NumbaState(
            problem=problem,
            theta=theta,
            X=np.ascontiguousarray(problem.data.X, dtype=dtype),
            y=np.ascontiguousarray(problem.data.y, dtype=dtype),
            spec=np.ascontiguousarray(problem.model.spec, dtype=dtype),
            resid=np.empty((T, problem.data.n), dtype=dtype),
            grad=np.empty((T, p), dtype=dtype),
            draws=draws,
            dt=problem.dt_per_traj(),
        )

    def retime(self, state, problem):
        # the kernel reads the coefficients from the problem at every advance; the draws
        # keep their streams (the channels in use are the same)
        state.problem = problem
        state.dt = problem.dt_per_traj()

    def advance(self, state, k0, k1, diverged_step):
        pb = state.problem
        predict_one, grad_one = pb.model.kernels
        c = pb.coefficients
        kernel = em_kernel(state.theta.dtype)
        for c0, ka, kb in chunk_segments(k0, k1, state.draws.chunk_steps):
            inc = state.draws.at(c0)
            kernel(
                predict_one,
                grad_one,
                state.theta,
                state.X,
                state.y,
                state.spec,
                inc.label,
                inc.sgd,
                inc.iso,
                c.label,
                c.sgd,
                c.iso,
                state.dt,
                diverged_step,
                c0,
                ka - c0,
                kb - c0,
                float(pb.max_loss),
                state.resid,
                state.grad,
            )

    def params(self, state):
        return np.ascontiguousarray(state.theta, dtype=np.float64)


def _cast(dtype):
    """Increments converted once per chunk to the solver's dtype (drawn in float64)."""
    if dtype == np.float64:
        return lambda inc: inc
    return lambda inc: dataclasses.replace(
        inc, label=inc.label.astype(dtype), sgd=inc.sgd.astype(dtype), iso=inc.iso.astype(dtype)
    )
