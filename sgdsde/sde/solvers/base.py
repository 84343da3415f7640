"""The solver interface: one object per integration scheme, with its orders given the
problem and its source of random increments.

A solver integrates the SDE of an ``SDEProblem`` with a constant step dt for T
trajectories at once. It is a ``Stepper`` of ``sgdsde.run.driver`` (explicit state:
``init`` / ``advance`` / ``params`` / ``elapsed``): the driver owns the loop over save
points. Its random numbers come from its ``increments`` object
(``sgdsde.sde.solvers.increments``).

Random numbers of ``NumpyIncrements`` (the layout of ``draw_increments``): step
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

With ``XoshiroIncrements`` (``sgdsde.xoshiro``: per-trajectory xoshiro256++ and
ziggurat normals drawn by numba in parallel, ~10x faster than numpy's generator) a
trajectory instead takes, step by step, z_k (if a_t > 0), u_k (if b_t > 0) and zeta_k
(if s_t > 0) from its one xoshiro stream, seeded from its ``"brownian"`` seed
sequence. The same reproducibility holds; only the coupling of the label channel to
exact label-noise GD (which draws from ``"label_noise"`` with numpy) is lost. All
solvers that take ``XoshiroIncrements`` (``euler_gemm`` draws them inside its kernels)
then see the same numbers.

The minus sign makes one Euler-Maruyama step of ``LabelNoise(delta, eta, n)`` at
dt = eta *literally* the label-noise GD step theta - eta/n sum_i (r_i + sqrt(delta) z_i)
grad f(x_i) driven by the same z (the package conventions, SGD). Since W and -W are both Brownian
motions, the law of the solution is unchanged.
"""

from __future__ import annotations

import abc
import dataclasses
import warnings
from typing import Any, ClassVar

import numpy as np

from sgdsde.data import RegressionData
from sgdsde.models.base import Model
from sgdsde.registry import to_config
from sgdsde.run.driver import Streams
from sgdsde.run.loop import chunk_segments
from sgdsde.sde.noise import NoiseCoefficients


@dataclasses.dataclass(frozen=True)
class SDEProblem:
    """d theta = -grad L dt + G(theta) dW for ``model`` on ``data`` (see sgdsde.sde.noise).

    dt: the time step, one for all trajectories (a float) or one per trajectory (T,)
        (a run whose step size follows a schedule: ``sgdsde.sde.scheduled``).
    """

    model: Model
    data: RegressionData
    coefficients: NoiseCoefficients
    dt: float | np.ndarray
    max_loss: float = 1e10
    n_steps: int | None = None  # length of the run if known (solvers then draw no further)

    @property
    def n_traj(self) -> int:
        return self.coefficients.label.shape[0]

    def dt_per_traj(self) -> np.ndarray:
        """dt of every trajectory, (T,) float64 (a shared dt repeated)."""
        dt = np.asarray(self.dt, dtype=np.float64)
        return np.array(np.broadcast_to(dt, (self.n_traj,)))  # a writable copy

    def widths(self) -> tuple[int, int, int]:
        """Normals per step of each channel (label, sgd, iso): n, n, p, or 0 when no
        trajectory uses the channel."""
        label, sgd, iso = self.coefficients.channels()
        n, p = self.data.n, self.model.n_params
        return (n if label else 0, n if sgd else 0, p if iso else 0)

    @property
    def additive_noise(self) -> bool:
        """G does not depend on theta: only the isotropic channel is used (or none)."""
        label, sgd, _ = self.coefficients.channels()
        return not (label or sgd)


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


def draw_increments(problem: SDEProblem, streams: Streams, k0: int, k1: int) -> Increments:
    """The standard normals of steps k0 .. k1-1 for every trajectory (layout: module doc)."""
    c = problem.coefficients
    T, S = problem.n_traj, k1 - k0
    wl, ws, wi = problem.widths()  # a channel that some trajectory uses has its full width
    label = np.zeros((T, S, wl))
    sgd = np.zeros((T, S, ws))
    iso = np.zeros((T, S, wi))
    for t in range(T):
        if c.label[t] > 0:
            label[t] = streams["label_noise"][t].standard_normal((S, wl))
        width = (ws if c.sgd[t] > 0 else 0) + (wi if c.iso[t] > 0 else 0)
        if width:
            row = streams["brownian"][t].standard_normal((S, width))
            if c.sgd[t] > 0:
                sgd[t] = row[:, :ws]
            if c.iso[t] > 0:
                iso[t] = row[:, width - wi :]
    return Increments(k0, label, sgd, iso)


def check_option(name: str, value: str, allowed) -> str:
    """``value`` if it is one of ``allowed`` (a solver's dtype, ...), else a ValueError
    listing the choices."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)} (got {value!r})")
    return value


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
    r"""Fixed-step SDE solver for T trajectories (a ``Stepper`` of ``sgdsde.run.driver``).

    Subclasses are frozen dataclasses with a ``name`` and an ``increments`` field (an
    ``IncrementSource``, or its name, converted at construction) and give ``init``,
    ``advance`` and ``params``. ``split_invariant``: the results do not depend on how
    ``advance`` calls split the run (the save grid). ``needs_kernels``: the solver calls
    the model's numba kernels, so it runs closed-form ``Model``\ s only, not a plain
    ``TorchModel``. ``takes_terms``: it integrates ``SDETerms`` (and only those).
    """

    name: ClassVar[str]
    split_invariant: ClassVar[bool] = True
    needs_kernels: ClassVar[bool] = True
    #: The solver integrates ``SDETerms`` (a ``TermsProblem``: the user's own drift and
    #: diffusion, ``sgdsde.sde.terms``) instead of a noise model's ``SDEProblem``.
    takes_terms: ClassVar[bool] = False
    #: The solver can switch a running state to new dt and coefficients (``retime``):
    #: it integrates runs whose step size follows a schedule (``ScheduledNoise``).
    retimes: ClassVar[bool] = False

    @abc.abstractmethod
    def init(
        self, problem: SDEProblem, theta0: np.ndarray, streams: Streams, device: str = "cpu"
    ) -> Any:
        """Return the solver state at step 0 (theta0 is (T, p) float64, not modified)."""

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

    def elapsed(self, state: Any, k: int) -> np.ndarray:
        """SDE time k dt of every trajectory (the state's ``problem`` gives dt)."""
        dt = np.asarray(state.problem.dt, dtype=np.float64)  # shared, or one per trajectory
        return np.array(np.broadcast_to(k * dt, (state.problem.n_traj,)))

    def retime(self, state: Any, problem: SDEProblem) -> None:
        """Continue the run of ``state`` under ``problem``: the same model, data,
        trajectories, length and used channels (every coefficient zero where it was),
        new dt and coefficients; the parameters, the divergence flags and the random
        streams go on where they were. For the solvers with ``retimes``."""
        raise NotImplementedError(f"solver {self.name!r} does not retime its state")

    def strong_order(self, problem: SDEProblem) -> float:
        """Euler-Maruyama: 1 for additive noise (G independent of theta, where it
        coincides with Milstein), else 0.5 (Kloeden and Platen 1992, Thm 10.2.2)."""
        return 1.0 if problem.additive_noise else 0.5

    def weak_order(self, problem: SDEProblem) -> float:
        """Euler-Maruyama: 1 (Kloeden and Platen 1992, Thm 14.5.2)."""
        return 1.0

    def with_increments(self, increments: Any) -> Solver:
        """The same solver driven by another increment source (checked as at construction)."""
        return dataclasses.replace(self, increments=increments)

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., <options>}``; ``SOLVERS.from_config`` rebuilds an equal solver."""
        return to_config(self)

    def start(self, problem, theta0, streams, device="cpu"):
        """Deprecated name of ``init``."""
        warnings.warn("Solver.start is deprecated: use init", DeprecationWarning, stacklevel=2)
        return self.init(problem, theta0, streams, device)


__all__ = [
    "Increments",
    "SDEProblem",
    "Solver",
    "Streams",
    "check_option",
    "chunk_segments",
    "diffusion_product",
    "draw_increments",
]
