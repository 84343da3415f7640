"""The SDE of SGD whose step size follows a schedule eta_k.

SGD with step sizes eta_0, eta_1, ... runs in the time t_k = sum_{j<k} eta_j
(docs/conventions.md). Its SDE model in that time is

    d theta = -grad L(theta) dt + G_{eta(t)}(theta) dW,

where G_eta is the diffusion of the noise model at step size eta (e.g. ``LabelNoise``:
a = sqrt(eta delta / (n B)), so G G^T = eta(t) delta/(n B) phi^T phi) and eta(t) the
step size in force at time t. ``ScheduledNoise(noise, schedule, steps_per_lr=m)``
integrates it with m Euler-Maruyama steps per SGD step: SDE step j stands for SGD step
k = j // m and has dt_j = eta_k / m and the coefficients of ``noise`` at lr = eta_k, so
that the SDE covers SGD's time t_N in m N steps, and step j of the SDE is at the time of
SGD step j / m. At m = 1 and B = n the scheme *is* label-noise GD with that schedule
(same numbers, same seed, under ``solver="euler_numba"``); a constant schedule gives the
very numbers of ``noise`` at dt = eta / m.

The run is split into phases at the steps where some trajectory's step size changes
(the union over trajectories: trajectories may follow different schedules, so dt is
per trajectory); at each phase start the solver switches its coefficients and dt in
place (``Solver.retime``) and goes on with the same state and the same random streams.
A schedule that changes at every step (a warm-up ramp) is a phase per step: correct but
slower. Which solvers: those with ``retimes`` (euler_gemm, euler_numba, euler_torch).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from sgdsde.models.base import Model
from sgdsde.sde.noise import NoiseCoefficients, NoiseModel
from sgdsde.sde.solvers.base import SDEProblem, Solver


def _is_schedule(value: Any) -> bool:
    return callable(value) and hasattr(value, "values")


def _schedule_config(schedule: Any) -> Any:
    return schedule.to_config() if hasattr(schedule, "to_config") else repr(schedule)


@dataclasses.dataclass(frozen=True)
class ScheduledNoise:
    """A noise model whose SGD step size follows a schedule (module doc).

    noise: a noise model with an ``lr`` field (``LabelNoise``, ``StabilizedLoss``,
        ``SGDCovariance``, ``SGDNoise``); its lr is replaced by eta_k at every step (give
        any valid value, e.g. the peak step size).
    schedule: the step sizes eta_k of SGD steps k = 0 .. N-1, a schedule object of
        ``sgdsde.dynamics.schedules`` (anything with ``schedule(steps, N)`` and
        ``schedule.values(N)``), or one per trajectory.
    steps_per_lr: m >= 1, SDE steps per SGD step (dt_j = eta_{j // m} / m); the run's
        ``n_steps`` is m N.
    """

    noise: NoiseModel
    schedule: Any
    steps_per_lr: int = 1

    name: ClassVar[str] = "scheduled"

    def __post_init__(self):
        noise = self.noise
        if not isinstance(noise, NoiseModel) or "lr" not in {
            f.name for f in dataclasses.fields(noise)
        }:
            raise ValueError(
                f"ScheduledNoise.noise must be a noise model with a step size lr (got "
                f"{noise!r}): pass e.g. LabelNoise(delta, lr, batch_size)"
            )
        schedules = self.schedules
        if not schedules or not all(_is_schedule(s) for s in schedules):
            raise ValueError(
                f"ScheduledNoise.schedule must be a step-size schedule or one per trajectory "
                f"(got {self.schedule!r}): pass e.g. StepDecay(lr, at=(0.5,), factors=(4.8,))"
            )
        m = self.steps_per_lr
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(
                f"ScheduledNoise.steps_per_lr must be an integer >= 1 (got {m!r}): the "
                "number of SDE steps per SGD step"
            )
        _ = self.n_traj  # per-trajectory lengths agree

    @property
    def schedules(self) -> tuple:
        """The schedule(s) as a tuple (one entry: shared by every trajectory)."""
        if _is_schedule(self.schedule):
            return (self.schedule,)
        if isinstance(self.schedule, Sequence | np.ndarray):
            return tuple(self.schedule)
        return ()

    @property
    def n_traj(self) -> int | None:
        """Trajectories implied by the per-trajectory schedules and noise parameters."""
        sizes = {"noise": self.noise.n_traj}
        if not _is_schedule(self.schedule):
            sizes["schedule"] = len(self.schedules)
        given = {name: size for name, size in sizes.items() if size is not None}
        if len(set(given.values())) > 1:
            raise ValueError(
                f"ScheduledNoise: the noise model has {given['noise']} trajectories and "
                f"schedule {given['schedule']}: give one schedule per trajectory, or one for all"
            )
        return next(iter(given.values()), None)

    def sgd_steps(self, n_steps: int) -> int:
        """N, the SGD steps that ``n_steps`` SDE steps stand for (n_steps = m N)."""
        m = int(self.steps_per_lr)
        if n_steps % m:
            raise ValueError(
                f"n_steps = {n_steps} is not a multiple of steps_per_lr = {m}: pass m N SDE "
                "steps for N SGD steps"
            )
        return n_steps // m

    def to_config(self) -> dict[str, Any]:
        schedules = [_schedule_config(s) for s in self.schedules]
        return {
            "name": self.name,
            "noise": self.noise.to_config(),
            "schedule": schedules[0] if _is_schedule(self.schedule) else schedules,
            "steps_per_lr": int(self.steps_per_lr),
        }


@dataclasses.dataclass(frozen=True)
class ScheduledProblem:
    """The run of a ``ScheduledNoise``: phases of constant per-trajectory dt and
    coefficients starting at the SDE steps ``starts`` (``starts[0] = 0``).

    Built by ``scheduled_problem``; ``phase(i)`` is the ``SDEProblem`` of phase i.
    """

    model: Model
    data: Any
    noise: ScheduledNoise
    n_traj: int
    max_loss: float
    n_steps: int
    starts: np.ndarray
    groups: tuple  # ((schedule, trajectory indices), ...)

    def step_sizes(self, sde_step: int) -> np.ndarray:
        """eta_k of every trajectory, k = sde_step // m, (T,)."""
        k = np.int64(sde_step // self.noise.steps_per_lr)
        n_sgd = self.n_steps // self.noise.steps_per_lr
        eta = np.empty(self.n_traj)
        for schedule, rows in self.groups:
            eta[rows] = float(schedule(k, n_sgd))
        return eta

    def phase(self, i: int) -> SDEProblem:
        """The SDE problem of phase i: dt = eta_k / m, coefficients at lr = eta_k."""
        eta = self.step_sizes(int(self.starts[i]))
        noise = dataclasses.replace(self.noise.noise, lr=eta)
        coefficients: NoiseCoefficients = noise.coefficients(self.data.n, self.n_traj)
        dt = eta / self.noise.steps_per_lr
        return SDEProblem(self.model, self.data, coefficients, dt, self.max_loss, self.n_steps)


def scheduled_problem(model, data, noise: ScheduledNoise, T: int, max_loss, n_steps: int):
    """The ``ScheduledProblem`` of T trajectories over ``n_steps`` SDE steps: phases
    start where any trajectory's eta_k changes (k = j // m)."""
    n_sgd = noise.sgd_steps(n_steps)
    schedules = noise.schedules
    rows_of: dict[int, list[int]] = {}
    distinct: list = []
    for t in range(T):
        schedule = schedules[0] if len(schedules) == 1 else schedules[t]
        for i, known in enumerate(distinct):
            if known is schedule or known == schedule:
                rows_of[i].append(t)
                break
        else:
            rows_of[len(distinct)] = [t]
            distinct.append(schedule)
    changes = [np.zeros(1, dtype=np.int64)]
    for schedule in distinct:
        eta = np.asarray(schedule.values(n_sgd), dtype=np.float64)
        if not np.all(np.isfinite(eta) & (eta > 0)):
            raise ValueError(f"schedule {schedule!r} gives step sizes that are not all > 0")
        changes.append(np.flatnonzero(eta[1:] != eta[:-1]) + 1)
    starts = np.unique(np.concatenate(changes)) * noise.steps_per_lr
    groups = tuple((s, np.array(rows_of[i])) for i, s in enumerate(distinct))
    return ScheduledProblem(model, data, noise, T, float(max_loss), n_steps, starts, groups)


@dataclasses.dataclass
class _PhasedState:
    problem: ScheduledProblem
    inner: Any  # the solver's state
    phase: int
    phase_time: np.ndarray  # SDE time at the start of the current phase, (T,)
    dt: np.ndarray  # dt of the current phase, (T,)


@dataclasses.dataclass(frozen=True)
class PhasedSolver:
    """A solver run phase by phase over a ``ScheduledProblem`` (a ``Stepper`` of
    ``sgdsde.run.driver``): at each phase start it retimes the solver's state."""

    solver: Solver

    def __post_init__(self):
        if not self.solver.retimes:
            raise ValueError(
                f"solver {self.solver.name!r} integrates with one dt and one set of "
                "coefficients per run: a step size that follows a schedule (ScheduledNoise) "
                "needs euler_gemm, euler_numba or euler_torch"
            )

    @property
    def name(self) -> str:
        return self.solver.name

    def init(self, problem: ScheduledProblem, theta0, streams, device="cpu") -> _PhasedState:
        first = problem.phase(0)
        inner = self.solver.init(first, theta0, streams, device)
        return _PhasedState(problem, inner, 0, np.zeros(problem.n_traj), first.dt_per_traj())

    def advance(self, state: _PhasedState, k0: int, k1: int, diverged_step) -> None:
        starts = state.problem.starts
        k = k0
        while k < k1:
            i = int(np.searchsorted(starts, k, side="right")) - 1
            if i != state.phase:
                self._enter(state, i)
            end = k1 if i + 1 >= len(starts) else min(k1, int(starts[i + 1]))
            self.solver.advance(state.inner, k, end, diverged_step)
            k = end

    def _enter(self, state: _PhasedState, i: int) -> None:
        """Switch to phase i (phases are entered in order: the time accumulates)."""
        starts = state.problem.starts
        steps = int(starts[i]) - int(starts[state.phase])
        state.phase_time = state.phase_time + steps * state.dt
        problem = state.problem.phase(i)
        self.solver.retime(state.inner, problem)
        state.phase, state.dt = i, problem.dt_per_traj()

    def params(self, state: _PhasedState) -> np.ndarray:
        return self.solver.params(state.inner)

    def elapsed(self, state: _PhasedState, k: int) -> np.ndarray:
        """t_k: the time at the current phase's start plus (k - start) dt."""
        start = int(state.problem.starts[state.phase])
        return state.phase_time + (k - start) * state.dt
