"""The solver interface: one object per integration scheme, declaring its orders.

A solver integrates the SDE of an ``SDEProblem`` with a constant step dt for T
trajectories at once. ``simulate_sde`` owns the loop over save points; a solver
only starts (``start``) and advances (``advance``) its own state.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import numpy as np

from sgdsde.data import RegressionData
from sgdsde.models.base import Model
from sgdsde.sde.noise import NoiseCoefficients


@dataclasses.dataclass(frozen=True)
class SDEProblem:
    """d theta = -grad L dt + G(theta) dW for ``model`` on ``data`` (see sgdsde.sde.noise)."""

    model: Model
    data: RegressionData
    coefficients: NoiseCoefficients
    dt: float
    max_loss: float = 1e10

    @property
    def n_traj(self) -> int:
        return self.coefficients.label.shape[0]


class Solver(abc.ABC):
    """Fixed-step SDE solver for T trajectories.

    ``strong_order`` / ``weak_order`` are the orders for general (multiplicative,
    non-commutative) noise; with additive noise Euler-Maruyama's strong order is 1.
    """

    name: ClassVar[str]
    strong_order: ClassVar[float]
    weak_order: ClassVar[float]

    @abc.abstractmethod
    def start(
        self,
        problem: SDEProblem,
        theta0: np.ndarray,
        streams: dict[str, list[np.random.Generator]],
        device: str = "cpu",
    ) -> Any:
        """Return the solver state at step 0 (theta0 is (T, p) float64)."""

    @abc.abstractmethod
    def advance(self, state: Any, k0: int, k1: int, diverged_step: np.ndarray) -> None:
        """Integrate steps k0 .. k1-1 (times k dt -> (k+1) dt) in place.

        A trajectory whose residuals become non-finite or whose loss exceeds
        problem.max_loss is frozen and ``diverged_step[t]`` set to the step whose
        state was bad (-1 means alive).
        """

    @abc.abstractmethod
    def params(self, state: Any) -> np.ndarray:
        """Current parameters as a float64 (T, p) numpy array."""

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strong_order": self.strong_order,
            "weak_order": self.weak_order,
            **{k: v for k, v in vars(self).items() if not k.startswith("_")},
        }
