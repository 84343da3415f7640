"""The solver interface: one object per integration scheme, declaring its orders.

A solver integrates the SDE of an ``SDEProblem`` with a constant step dt for T
trajectories at once. ``simulate_sde`` owns the loop over save points; a solver
only starts (``start``) and advances (``advance``) its own state.

Random numbers (shared by the Euler-Maruyama solvers, see ``draw_increments``): step
k of trajectory t consumes

* n standard normals z_k from the trajectory's ``"label_noise"`` stream, if its label
  coefficient a_t > 0 (the same stream and the same (steps, n) layout that exact
  label-noise GD draws, so that the two are driven by the same numbers);
* one row of ``"brownian"``: n normals u_k (sgd channel, if b_t > 0) followed by p
  normals zeta_k (isotropic channel, if s_t > 0).

Rows are drawn step by step (split-invariant ``standard_normal``), so a trajectory's
numbers do not depend on other trajectories, on how the steps are chunked, on the save
grid or on the thread count. The Brownian increments of step k are

    dW_k = -sqrt(dt) (z_k, u_k, zeta_k)                           (note the sign)

With ``increments="xoshiro"`` (``sgdsde.xoshiro``: per-trajectory xoshiro256++ and
ziggurat normals drawn by numba in parallel, ~10x faster than numpy's generator) a
trajectory instead takes, step by step, z_k (if a_t > 0), u_k (if b_t > 0) and zeta_k
(if s_t > 0) from its one xoshiro stream, seeded from its ``"brownian"`` seed
sequence. The same reproducibility holds; only the coupling of the label channel to
exact label-noise GD (which draws from ``"label_noise"`` with numpy) is lost. All
solvers that take ``increments="xoshiro"`` (and ``euler_gemm``, which draws inside its
kernels) then see the same numbers.

The minus sign makes one Euler-Maruyama step of ``LabelNoise(delta, eta, n)`` at
dt = eta *literally* the label-noise GD step theta - eta/n sum_i (r_i + sqrt(delta) z_i)
grad f(x_i) driven by the same z (DESIGN.md, SGD). Since W and -W are both Brownian
motions, the law of the solution is unchanged.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from sgdsde import xoshiro
from sgdsde.data import RegressionData
from sgdsde.models.base import Model
from sgdsde.random import brownian_seeds
from sgdsde.sde.noise import NoiseCoefficients


@dataclasses.dataclass(frozen=True)
class SDEProblem:
    """d theta = -grad L dt + G(theta) dW for ``model`` on ``data`` (see sgdsde.sde.noise)."""

    model: Model
    data: RegressionData
    coefficients: NoiseCoefficients
    dt: float
    max_loss: float = 1e10
    n_steps: int | None = None  # length of the run if known (solvers then draw no further)

    @property
    def n_traj(self) -> int:
        return self.coefficients.label.shape[0]

    def widths(self) -> tuple[int, int, int]:
        """Normals per step of each channel (label, sgd, iso): n, n, p, or 0 when no
        trajectory uses the channel."""
        label, sgd, iso = self.coefficients.channels()
        n, p = self.data.n, self.model.n_params
        return (n if label else 0, n if sgd else 0, p if iso else 0)


@dataclasses.dataclass
class Increments:
    """Standard normals for steps k0 .. k0 + S - 1: label (T, S, n|0), sgd (T, S, n|0),
    iso (T, S, p|0). Rows of trajectories that do not use a channel are zero."""

    k0: int
    label: np.ndarray
    sgd: np.ndarray
    iso: np.ndarray

    @property
    def n_steps(self) -> int:
        return self.label.shape[1]


def draw_increments(
    problem: SDEProblem, streams: dict[str, list[np.random.Generator]], k0: int, k1: int
) -> Increments:
    """The standard normals of steps k0 .. k1-1 for every trajectory (layout: module doc)."""
    c = problem.coefficients
    T, S = problem.n_traj, k1 - k0
    wl, ws, wi = problem.widths()
    label = np.zeros((T, S, wl))
    sgd = np.zeros((T, S, ws))
    iso = np.zeros((T, S, wi))
    n, p = problem.data.n, problem.model.n_params
    for t in range(T):
        if c.label[t] > 0:
            label[t] = streams["label_noise"][t].standard_normal((S, n))
        width = (n if c.sgd[t] > 0 else 0) + (p if c.iso[t] > 0 else 0)
        if width:
            row = streams["brownian"][t].standard_normal((S, width))
            if c.sgd[t] > 0:
                sgd[t] = row[:, :n]
            if c.iso[t] > 0:
                iso[t] = row[:, width - p :]
    return Increments(k0, label, sgd, iso)


INCREMENT_SOURCES = ("numpy", "xoshiro")


def check_option(name: str, value: str, allowed) -> str:
    """``value`` if it is one of ``allowed`` (a solver's dtype, increments, ...), else a
    ValueError listing the choices."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)} (got {value!r})")
    return value


def increment_drawer(
    source: str, problem: SDEProblem, streams: dict[str, list[np.random.Generator]]
) -> Callable[[int, int], Increments]:
    """``draw(k0, k1) -> Increments`` for consecutive chunks of a run, from numpy's
    streams (``draw_increments``) or from per-trajectory xoshiro streams (module doc)."""
    check_option("increments", source, INCREMENT_SOURCES)
    if source == "numpy":
        return lambda k0, k1: draw_increments(problem, streams, k0, k1)
    state = xoshiro.seed_state(brownian_seeds(streams))
    c = problem.coefficients
    use = [np.ascontiguousarray(coef > 0) for coef in (c.label, c.sgd, c.iso)]

    def draw(k0: int, k1: int) -> Increments:
        T, S = problem.n_traj, k1 - k0
        label, sgd, iso = (np.zeros((T, S, w)) for w in problem.widths())
        xoshiro.fill_channels(state, *use, label, sgd, iso, *xoshiro.TABLES)
        return Increments(k0, label, sgd, iso)

    return draw


def diffusion_product(
    model: Model,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    coefficients: NoiseCoefficients,
    dW_label: np.ndarray,
    dW_sgd: np.ndarray,
    dW_iso: np.ndarray,
) -> np.ndarray:
    """G(theta) dW = phi^T (a dW_label + b r (dW_sgd - mean dW_sgd)) + s dW_iso, (T, p),
    by one vector-Jacobian product (never forming phi): the reference for the solvers."""
    r = model.residuals(theta, X, y)
    c = coefficients
    v = c.label[:, None] * dW_label + c.sgd[:, None] * r * (
        dW_sgd - dW_sgd.mean(axis=1, keepdims=True)
    )
    return model.vjp(theta, X, v) + c.iso[:, None] * dW_iso


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


def chunk_segments(k0: int, k1: int, chunk_steps: int):
    """Split the steps k0 .. k1-1 at multiples of ``chunk_steps``.

    Yields (c0, a, b): the chunk starting at step c0 and the part a .. b-1 of it to run.
    Solvers draw their increments one whole chunk at a time on this fixed grid, so the
    numbers do not depend on how ``advance`` calls split the run (the save grid).
    """
    k = k0
    while k < k1:
        c0 = (k // chunk_steps) * chunk_steps
        b = min(c0 + chunk_steps, k1)
        yield c0, k, b
        k = b
