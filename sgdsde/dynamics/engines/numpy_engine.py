"""The reference SGD engine: one vectorised numpy update per step over all trajectories
(plain and slow; the tests check the other engines against it)."""

from __future__ import annotations

import dataclasses

import numpy as np

from sgdsde.dynamics.engines.base import Block, Engine, SGDProblem, SGDState
from sgdsde.run.checks import check_device


@dataclasses.dataclass(frozen=True)
class NumpyEngine(Engine):
    """The update rule of ``sgdsde.dynamics.engines.base`` written out in numpy (CPU)."""

    name = "numpy"

    def setup(self, problem: SGDProblem, theta0: np.ndarray, device: str):
        check_device(device, "engine 'numpy'", cpu_only="use engine='torch' for a GPU")
        return np.array(theta0, dtype=np.float64, order="C"), None

    def run_block(self, state: SGDState, block: Block, s0, s1, diverged_step):
        pb = state.problem
        model, X, y, theta = pb.model, pb.data.X, pb.data.y, state.theta
        index, noise, mask = block.dense(pb.full, pb.data.n)
        weight = mask / block.batch[:, :, None]  # (T, S, B_max): 1 / B_k on used entries
        sqrt_delta = np.sqrt(pb.label_noise)[:, None]
        for s in range(s0, s1):
            alive = diverged_step < 0
            Xb = X[index[:, s]]  # (T, B_max, d)
            # Frozen trajectories may hold huge values: their arithmetic overflows
            # harmlessly (they are masked out below).
            with np.errstate(over="ignore", invalid="ignore"):
                r = model.predict(theta, Xb) - y[index[:, s]]
                bad = alive & np.any(mask[:, s] & ~(0.5 * r * r <= pb.max_loss), axis=1)
                diverged_step[bad] = block.k0 + s
                alive &= ~bad
                coef = (r + sqrt_delta * noise[:, s]) * weight[:, s]
                g = np.einsum("tb,tbp->tp", coef, model.per_example_grads(theta, Xb))
            theta[alive] -= block.lrs[alive, s, None] * g[alive]

    def params(self, state: SGDState) -> np.ndarray:
        return state.theta
