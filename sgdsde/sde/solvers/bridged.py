"""Deprecated: ``BridgedEulerMaruyama(refine)`` is
``EulerMaruyamaNumba(increments=BrownianBridge(refine))`` (``sgdsde.sde.solvers.increments``):
Euler-Maruyama at dt = eta / l coupled to label-noise GD at step eta by a Brownian bridge
on GD's normals. Any solver whose increments ``couples_to_gd`` can be bridged the same way
with ``solver.with_increments(BrownianBridge(refine))``."""

from __future__ import annotations

import dataclasses

from sgdsde.sde.solvers.base import Increments
from sgdsde.sde.solvers.euler_numba import EulerMaruyamaNumba
from sgdsde.sde.solvers.increments import BrownianBridge


@dataclasses.dataclass(frozen=True, init=False)
class BridgedEulerMaruyama(EulerMaruyamaNumba):
    """``EulerMaruyamaNumba(increments=BrownianBridge(refine))`` (kept for old callers)."""

    def __init__(self, refine: int):
        super().__init__(increments=BrownianBridge(refine))

    def _draw(self, state, c0: int) -> Increments:
        """The increments of the chunk starting at step c0."""
        return state.draws.at(c0)
