"""The production SGD engine: one numba kernel, parallel over trajectories, for every
model (its maths enters as the first-class ``predict_one`` / ``grad_one`` kernels of
``sgdsde.models.kernels``). The kernel compiles on first use and is cached on disk."""

from __future__ import annotations

import dataclasses
import functools

import numba as nb
import numpy as np
from numba import types

from sgdsde.dynamics.engines.base import Block, Engine, SGDProblem, SGDState
from sgdsde.models.kernels import FASTMATH, MAT, VEC, GradKernel, PredictKernel
from sgdsde.run.checks import check_device

_I64V = types.int64[::1]
_SIG = types.void(
    PredictKernel,
    GradKernel,
    MAT,  # theta (T, p), updated in place
    MAT,  # X (n, d)
    VEC,  # y (n,)
    VEC,  # spec
    types.int64[:, :, ::1],  # sampled indices (T, S, B_sampled)
    types.float64[:, :, ::1],  # standard normals (T, S, B_noise)
    MAT,  # step sizes (T, S)
    types.int64[:, ::1],  # batch sizes B_k (T, S)
    _I64V,  # 1 where the batch is the full data set in order (GD)
    VEC,  # sqrt(delta) per trajectory
    _I64V,  # diverged_step per trajectory (-1: alive), updated in place
    types.int64,  # absolute step of the block's first row
    types.int64,  # first row to run
    types.int64,  # one past the last row to run
    types.float64,  # max_loss
    MAT,  # gradient scratch (T, p)
)


def sgd_block(
    predict_one,
    grad_one,
    theta,
    X,
    y,
    spec,
    idx,
    normals,
    lrs,
    batch,
    full,
    sqrt_delta,
    diverged_step,
    k0,
    s0,
    s1,
    max_loss,
    scratch,
):
    """Rows s0 .. s1-1 of a block for every alive trajectory (compiled by ``sgd_kernel``)."""
    T, p = theta.shape
    for t in nb.prange(T):
        if diverged_step[t] >= 0:
            continue
        th = theta[t]
        g = scratch[t]
        sd = sqrt_delta[t]
        for j in range(p):
            g[j] = 0.0
        for s in range(s0, s1):
            B = batch[t, s]
            inv_b = 1.0 / B
            bad = False
            for b in range(B):
                i = b if full[t] else idx[t, s, b]
                r = predict_one(th, X[i], spec) - y[i]
                if not (0.5 * r * r <= max_loss):
                    bad = True
                    break
                if sd != 0.0:
                    r += sd * normals[t, s, b]
                grad_one(th, X[i], spec, r * inv_b, g)
            if bad:
                diverged_step[t] = k0 + s
                break
            lr = lrs[t, s]
            # Clearing g in the update loop saves one pass over p per step.
            for j in range(p):
                th[j] -= lr * g[j]
                g[j] = 0.0


@functools.cache
def sgd_kernel():
    """``sgd_block`` compiled (first call in a process; then from numba's disk cache)."""
    return nb.njit(_SIG, cache=True, parallel=True, fastmath=FASTMATH)(sgd_block)


@dataclasses.dataclass
class _NumbaWork:
    X: np.ndarray
    y: np.ndarray
    spec: np.ndarray
    full: np.ndarray  # (T,) int64
    sqrt_delta: np.ndarray  # (T,)
    scratch: np.ndarray  # (T, p) gradient


@dataclasses.dataclass(frozen=True)
class NumbaEngine(Engine):
    """The numba kernel above, parallel over trajectories (CPU only)."""

    name = "numba"

    def setup(self, problem: SGDProblem, theta0: np.ndarray, device: str):
        check_device(device, "engine 'numba'", cpu_only="use engine='torch' for a GPU")
        theta = np.array(theta0, dtype=np.float64, order="C")
        work = _NumbaWork(
            X=np.ascontiguousarray(problem.data.X, dtype=np.float64),
            y=np.ascontiguousarray(problem.data.y, dtype=np.float64),
            spec=np.ascontiguousarray(problem.model.spec, dtype=np.float64),
            full=problem.full.astype(np.int64),
            sqrt_delta=np.sqrt(problem.label_noise),
            scratch=np.empty_like(theta),
        )
        return theta, work

    def run_block(self, state: SGDState, block: Block, s0, s1, diverged_step):
        w: _NumbaWork = state.work
        predict_one, grad_one = state.problem.model.kernels
        sgd_kernel()(
            predict_one,
            grad_one,
            state.theta,
            w.X,
            w.y,
            w.spec,
            block.idx,
            block.normals,
            block.lrs,
            block.batch,
            w.full,
            w.sqrt_delta,
            diverged_step,
            block.k0,
            s0,
            s1,
            float(state.problem.max_loss),
            w.scratch,
        )

    def params(self, state: SGDState) -> np.ndarray:
        return state.theta
