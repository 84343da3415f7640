"""Euler-Maruyama at dt = eta / l coupled to label-noise GD at step eta.

Label-noise GD at step eta *is* Euler-Maruyama at dt = eta driven by the normals z_k of
the "label_noise" stream (``sgdsde.sde.solvers.base``). This solver drives the fine
scheme by a Brownian bridge built on those same z_k,

    z_{k,j} = z_k / sqrt(l) + e_{k,j} - mean_j e_{k,j},    j = 1..l,  e iid N(0, 1),

so that both see the same Brownian increment over every coarse step (common random
numbers): ``sgdsde.analysis.compare`` uses it to resolve weak errors with few trajectories.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from sgdsde.run.loop import block_steps
from sgdsde.sde.solvers.base import Increments, SDEProblem, Solver, chunk_segments
from sgdsde.sde.solvers.euler_numba import EulerMaruyamaNumba, em_steps_numba


class BridgedEulerMaruyama(Solver):
    """Euler-Maruyama (numba) at dt = eta / l coupled to label-noise GD at step eta.

    Coarse step k of trajectory t draws the n normals z_k of its "label_noise" stream,
    exactly as label-noise GD does, and l x n normals e_k of its "brownian" stream; the
    l fine steps use z_k / sqrt(l) + e_{k,j} - mean_j e_{k,j} (iid N(0, 1), summing to
    sqrt(l) z_k). Only the label channel is supported (no minibatch or isotropic
    noise). Draws are split-invariant, so results do not depend on the save grid.
    """

    name = "euler_numba_bridged"
    strong_order = EulerMaruyamaNumba.strong_order
    weak_order = EulerMaruyamaNumba.weak_order

    def __init__(self, refine: int):
        if isinstance(refine, bool) or not isinstance(refine, numbers.Integral) or refine < 1:
            raise ValueError(f"refine must be a positive integer (got {refine!r})")
        self.refine = int(refine)

    def start(self, problem, theta0, streams, device="cpu"):
        if str(device) != "cpu":
            raise ValueError(f"{self.name} runs on the CPU only (got device={device!r})")
        c = problem.coefficients
        if np.any(c.sgd) or np.any(c.iso):
            raise ValueError(
                "common random numbers with GD need a noise model with the label channel "
                "only (LabelNoise, or SGDNoise with batch_size = n)"
            )
        theta = np.array(theta0, dtype=np.float64, order="C", copy=True)
        T = theta.shape[0]
        ell, n = self.refine, problem.data.n
        coarse = block_steps(T, n * (ell + 1))  # coarse steps per chunk of draws
        return {
            "problem": problem,
            "theta": theta,
            "streams": streams,
            "chunk": coarse * ell,
            "inc": None,
        }

    def _draw(self, state, c0: int) -> Increments:
        pb: SDEProblem = state["problem"]
        ell, n = self.refine, pb.data.n
        T = pb.n_traj
        k1 = c0 + state["chunk"]
        if pb.n_steps is not None:
            k1 = min(k1, -(-int(pb.n_steps) // ell) * ell)
        n_coarse = (k1 - c0) // ell
        z = np.zeros((T, n_coarse, ell, n))
        noisy = np.flatnonzero(pb.coefficients.label > 0)
        if noisy.size:
            zc = np.stack(
                [state["streams"]["label_noise"][t].standard_normal((n_coarse, n)) for t in noisy]
            )
            z[noisy] = zc[:, :, None, :] / math.sqrt(ell)
            if ell > 1:
                e = np.stack(
                    [
                        state["streams"]["brownian"][t].standard_normal((n_coarse, ell, n))
                        for t in noisy
                    ]
                )
                z[noisy] += e - e.mean(axis=2, keepdims=True)
        z = z.reshape(T, n_coarse * ell, n)
        empty = np.zeros((T, n_coarse * ell, 0))
        return Increments(c0, z, empty, empty.copy())

    def advance(self, state, k0, k1, diverged_step):
        for c0, ka, kb in chunk_segments(k0, k1, state["chunk"]):
            inc = state["inc"]
            if inc is None or inc.k0 != c0:
                inc = state["inc"] = self._draw(state, c0)
            em_steps_numba(
                state["problem"], state["theta"], inc, diverged_step, rows=(ka - c0, kb - c0)
            )

    def params(self, state):
        return state["theta"]
