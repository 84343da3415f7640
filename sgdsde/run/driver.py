"""One driver for every simulator: exact SGD engines and SDE solvers are ``Stepper``\\ s.

A stepper integrates T trajectories at once with explicit state (no run state on the
stepper itself, as optax's ``init`` / ``update``):

    state = stepper.init(problem, theta0, streams, device)   # theta0: (T, p) float64
    stepper.advance(state, k0, k1, diverged_step)            # steps k0 .. k1-1, in place
    stepper.params(state)                                    # theta_k1, (T, p) float64
    stepper.elapsed(state, k1)                               # t_k1 per trajectory, (T,)

``elapsed`` is the SDE time of the docs: t_k = sum_{j<k} eta_j for SGD, k dt for an SDE.
A stepper freezes a trajectory whose state turns bad (non-finite, or a loss above the
problem's ``max_loss``; without data, a free SDE, a norm above its ``max_norm``) and
writes that step into ``diverged_step`` (-1: alive).

``drive`` runs one simulation: per-trajectory streams from the seed, the initial
parameters, then the steps 0 .. last, showing the state to the recorder at every step it
asks for (``recorder.steps``, through ``recorder.observe``) and writing the time at
every save step. ``simulate_sgd`` and ``simulate_sde`` only validate, build their
problem and stepper, call ``drive`` and label the dataset.

A stepper must give the same numbers whatever the split of ``advance`` calls (the save
grid) and whatever the order in which it is asked for them: steppers draw their random
numbers themselves, one chunk at a time on a fixed grid of steps.

Threads: the recorder observes with the BLAS (whatever numpy and torch loaded, through
threadpoolctl) on one thread; the steppers keep theirs. Between observations an
engine's own pool (numba's OpenMP threads) owns the cores, and a multi-threaded BLAS call
in between has to wake its workers, which then spin for a while after the call against
the engine's next block. On 2 cores that made the demo's 350-point save grid cost
~2.3 s of a 5 s single-sample SGD run at T = 64 (100,001 steps), and runs took up to
15 s when the machine was busy; on one thread the same products take ~0.5 s (measured;
``benchmarks/bench_sgd.py`` reports the share). The values keep their bits: OpenBLAS
splits a product among threads by blocks of the output, not along the summed axis
(``tests/test_recording_speed_paths.py`` checks it on the installed BLAS). The BLAS
thread count is process-wide: runs in concurrent threads of one process may leave it at
one thread (run them in processes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import xarray as xr
from threadpoolctl import ThreadpoolController

from sgdsde.random import trajectory_streams
from sgdsde.run.loop import base_config, finish_dataset, initial_params
from sgdsde.run.provenance import run_attrs
from sgdsde.run.recording import Recorder

Streams = dict[str, list[np.random.Generator]]


@runtime_checkable
class Problem(Protocol):
    """What the driver needs to know of a problem (``SGDProblem``, ``SDEProblem``,
    ``TermsProblem``). A problem without data (a free SDE: model and data None) also has
    ``max_norm``, the bound on ||theta|| that replaces ``max_loss``."""

    model: Any
    data: Any
    max_loss: float
    n_steps: int

    @property
    def n_traj(self) -> int: ...


@runtime_checkable
class Stepper(Protocol):
    """Explicit-state stepping protocol shared by SGD engines and SDE solvers (module doc)."""

    name: ClassVar[str]

    def init(self, problem: Any, theta0: np.ndarray, streams: Streams, device: str) -> Any:
        """The state at step 0 (``theta0`` (T, p) float64 is not modified)."""

    def advance(self, state: Any, k0: int, k1: int, diverged_step: np.ndarray) -> None:
        """Steps k0 .. k1-1 of every alive trajectory, in place on ``state``."""

    def params(self, state: Any) -> np.ndarray:
        """The current parameters, (T, p) float64 numpy."""

    def elapsed(self, state: Any, k: int) -> np.ndarray:
        """The SDE time t_k per trajectory, (T,) float64, once the state holds step k."""


@dataclasses.dataclass
class Run:
    """What a driven simulation produced: the recorder's values, ``times`` (T, n_save) at
    the save steps and each trajectory's ``diverged_step`` (-1: never), with the
    settings every dataset records."""

    problem: Problem
    recorder: Recorder
    save_steps: np.ndarray
    times: np.ndarray
    diverged_step: np.ndarray
    seed: Any
    theta0: Any
    device: str
    l0_threshold: float

    def to_dataset(
        self,
        kind: str,
        title: str,
        config: dict[str, Any],
        traj_coords: dict[str, np.ndarray],
        **attrs: Any,
    ) -> xr.Dataset:
        """The run's Dataset in the layout shared by every simulator (``sgdsde.run.dataset``).

        kind, title: the simulator ("sgd", "sde") and the dataset's title.
        config: the simulator's own resolved settings, after those every run records.
        traj_coords: per-trajectory coordinates; attrs: extra dataset attributes.
        """
        pb = self.problem
        resolved = base_config(
            kind,
            pb.model,
            pb.data,
            n_steps=pb.n_steps,
            n_traj=pb.n_traj,
            device=self.device,
            l0_threshold=self.l0_threshold,
            max_loss=pb.max_loss,
            theta0=self.theta0,
        )
        resolved |= config
        if self.recorder.config():
            resolved["metrics"] = self.recorder.config()
        return finish_dataset(
            self.recorder,
            self.save_steps,
            self.times,
            self.diverged_step,
            traj_coords,
            run_attrs(title, resolved, self.seed, **attrs),
        )


def drive(
    stepper: Stepper,
    problem: Problem,
    *,
    seed: Any,
    theta0: Any,
    save_steps: np.ndarray,
    save_params: bool,
    l0_threshold: float,
    metrics: Sequence = (),
    device: str = "cpu",
    progress: bool = False,
    test_subsample: int | None = None,
) -> Run:
    """Simulate ``problem`` with ``stepper`` and record it (module doc).

    seed: int, SeedSequence or one per trajectory; trajectory t draws from
        ``trajectory_streams(seed, T)``, the stepper from its streams, the default initial
        parameters from its ``"init"`` stream.
    theta0: None (the model's init), (p,) or (T, p) initial parameters.
    save_steps: sorted unique steps at which the recorder keeps values and the time is
        written (the last one ends the run).
    save_params, l0_threshold, metrics, test_subsample: handed to the ``Recorder``.
    device: where the stepper runs ("cpu", "cuda", ...).
    progress: show a progress bar over the steps.
    """
    T = problem.n_traj
    streams = trajectory_streams(seed, T)
    theta = initial_params(problem.model, theta0, T, streams["init"])
    save = np.asarray(save_steps, dtype=np.int64)
    recorder = Recorder(
        problem.model,
        problem.data,
        save,
        T,
        l0_threshold=l0_threshold,
        max_loss=problem.max_loss,
        max_norm=getattr(problem, "max_norm", math.inf),
        save_params=save_params,
        metrics=metrics,
        test_subsample=test_subsample,
    )
    state = stepper.init(problem, theta, streams, device)
    run = Run(
        problem,
        recorder,
        save,
        np.zeros((T, len(save))),
        np.full(T, -1, dtype=np.int64),
        seed,
        theta0,
        str(device),
        float(l0_threshold),
    )
    _walk(stepper, state, run, progress)
    return run


def _walk(stepper: Stepper, state: Any, run: Run, progress: bool) -> None:
    """Advance from one step the recorder or the save grid needs to the next."""
    observed = np.asarray(run.recorder.steps, dtype=np.int64)
    stops = np.union1d(observed, run.save_steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(stops[-1]), desc=stepper.name, unit="step")
    # the BLAS libraries loaded now (module doc, Threads); ~0.3 ms to find them
    blas = ThreadpoolController().select(user_api="blas")
    k = i = j = 0
    for stop in stops.tolist():
        if stop > k:
            stepper.advance(state, k, stop, run.diverged_step)
            if bar is not None:
                bar.update(stop - k)
            k = stop
        if j < len(run.save_steps) and run.save_steps[j] == stop:
            run.times[:, j] = stepper.elapsed(state, stop)
            j += 1
        if i < len(observed) and observed[i] == stop:
            # A diverged trajectory is frozen where its values blew up: metrics of it
            # overflow harmlessly (the recorder flags it and records NaN), so numpy's
            # overflow warnings would only alarm the user about what is already flagged.
            with np.errstate(over="ignore", invalid="ignore"), blas.limit(limits=1):
                run.recorder.observe(stop, stepper.params(state), run.diverged_step)
            i += 1
    if bar is not None:
        bar.close()
