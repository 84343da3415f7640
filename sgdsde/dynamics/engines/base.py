"""The SGD problem and what every engine shares: random blocks on a fixed chunk grid,
SDE time, and the stepping protocol of ``sgdsde.run.driver``.

Every engine runs the same minibatch / label-noise SGD update

    theta_{k+1} = theta_k - eta_k (1/B_k) sum_{i in S_k} (r_i + sqrt(delta_k) z_i) grad f(x_i)

with S_k (|S_k| = B_k), z_i, eta_k and B_k drawn by ``SGDProblem.draw_block``
(``Block``) for one chunk of steps at a time, on the fixed grid of multiples of
``block_steps(T, width)``: every engine sees the same random numbers, and they do not
depend on the save grid, the chunk size, the number of trajectories or threads (draws
are split-invariant per trajectory).

Divergence: a trajectory whose sampled residual is non-finite or has r^2/2 above
``max_loss`` is frozen before that update and its ``diverged_step`` set to k.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import itertools
from typing import Any, ClassVar

import numpy as np

from sgdsde.data import RegressionData
from sgdsde.dynamics.schedules import Schedule
from sgdsde.models.base import Model
from sgdsde.random import uniform_indices, without_replacement
from sgdsde.run.driver import Streams
from sgdsde.run.loop import block_steps, chunk_segments


@dataclasses.dataclass
class Block:
    """Everything random or scheduled about steps k0 .. k0 + S - 1 of every trajectory."""

    k0: int
    idx: np.ndarray  # (T, S, B_sampled) int64; row s holds B_k entries, then zeros
    normals: np.ndarray  # (T, S, B_noise) float64; row s holds B_k entries, then zeros
    lrs: np.ndarray  # (T, S) float64
    batch: np.ndarray  # (T, S) int64, the batch size B_k of each step

    def dense(self, full, n):
        """(T, S, B_max) example indices, label-noise normals and validity mask (entry b
        of step k is used when b < B_k), for the batched engines."""
        T, S = self.lrs.shape
        b_max = int(self.batch.max())
        index = np.zeros((T, S, b_max), dtype=np.int64)
        noise = np.zeros((T, S, b_max))
        for t in range(T):
            if full[t]:
                index[t, :, :n] = np.arange(n)
            else:
                width = min(b_max, self.idx.shape[2])
                index[t, :, :width] = self.idx[t, :, :width]
            width = min(b_max, self.normals.shape[2])
            noise[t, :, :width] = self.normals[t, :, :width]
        mask = np.arange(b_max) < self.batch[:, :, None]  # (T, S, B_max)
        return index, noise, mask


def constant_runs(values: np.ndarray):
    """Yield (a, b, v): the maximal runs values[a:b] == v of a 1-D array, in order."""
    if len(values) == 0:
        return
    edges = [0, *(np.flatnonzero(np.diff(values)) + 1).tolist(), len(values)]
    for a, b in itertools.pairwise(edges):
        yield a, b, int(values[a])


@dataclasses.dataclass(frozen=True, eq=False)
class SGDProblem:
    """(Label-noise) minibatch SGD of ``model`` on ``data`` for T trajectories.

    schedules: one step-size schedule per trajectory.
    batch_size: (T,) int64, B per trajectory (B = n without replacement is GD); its peak
        max_k B_k where it follows a schedule (it sizes the arrays).
    label_noise: (T,) delta, the variance of the noise added to each sampled label (its
        peak over the run where it follows a schedule).
    label_noise_schedules: None, or per trajectory None or a ``Schedule`` of delta_k: the
        noise at step k then has variance delta_k (the normals are scaled by
        sqrt(delta_k / delta)), so a run can add label noise and then fine-tune without it.
    batch_size_schedules: None, or per trajectory None or a ``Schedule`` of integer batch
        sizes B_k in [1, n] (checked by the caller): step k then samples B_k examples and
        weighs each by 1 / B_k (small batches, then larger ones, in one run).
    with_replacement: draw S_k with replacement (else without).
    n_steps: length of the run (the schedules' horizon; no draws beyond it).
    max_loss: divergence bound on r_i^2 / 2 (and the recorded training loss).
    """

    model: Model
    data: RegressionData
    schedules: tuple[Schedule, ...]
    batch_size: np.ndarray
    label_noise: np.ndarray
    with_replacement: bool
    n_steps: int
    max_loss: float = 1e10
    label_noise_schedules: tuple[Schedule | None, ...] | None = None
    batch_size_schedules: tuple[Schedule | None, ...] | None = None

    @property
    def n_traj(self) -> int:
        return len(self.schedules)

    @functools.cached_property
    def full(self) -> np.ndarray:
        """(T,) bool: every batch is the whole data set in order (GD, nothing sampled).
        A trajectory whose batch-size schedule reaches n only part of the run is not
        ``full``: at its B_k = n steps it samples a random permutation of the data, whose
        update equals GD's up to the order of the summation (rounding)."""
        least = self.batch_size.copy()
        for t, schedule in enumerate(self.batch_size_schedules or ()):
            if schedule is not None:
                least[t] = int(schedule.values(self.n_steps).min())
        return (least == self.data.n) & (not self.with_replacement)

    @functools.cached_property
    def _constant_batches(self) -> dict[int, np.ndarray]:
        return {}

    def batch_steps(self, steps: np.ndarray) -> np.ndarray:
        """(T, S) int64: the batch size B_k of every trajectory at the given steps (read
        only: without schedules, blocks of one length share one array)."""
        if self.batch_size_schedules is None:
            # Filling a fresh (T, S) array every block costs ~3% of a B = 1 run.
            shared = self._constant_batches
            if len(steps) not in shared:
                shared[len(steps)] = np.repeat(self.batch_size[:, None], len(steps), axis=1)
            return shared[len(steps)]
        batch = np.repeat(self.batch_size[:, None], len(steps), axis=1)
        values: dict[Schedule, np.ndarray] = {}  # a shared schedule is evaluated once
        for t, schedule in enumerate(self.batch_size_schedules):
            if schedule is not None:
                if schedule not in values:
                    values[schedule] = np.rint(schedule(steps, self.n_steps))
                batch[t] = values[schedule]
        return batch

    def widths(self) -> tuple[int, int]:
        """Entries per step of the sampled indices and of the label-noise normals: the
        largest B among trajectories that sample (resp. add label noise), else 0."""
        batch, full = self.batch_size, self.full
        sampled = int(max([b for b, f in zip(batch, full, strict=True) if not f], default=0))
        noisy = int(
            max([b for b, d in zip(batch, self.label_noise, strict=True) if d > 0], default=0)
        )
        return sampled, noisy

    def chunk_steps(self) -> int:
        """Steps per chunk of draws (``block_steps`` of the widest per-step draw)."""
        return block_steps(self.n_traj, max(*self.widths(), 1))

    def draw_block(self, streams: Streams, k0: int, k1: int) -> Block:
        """Indices, label-noise normals, step sizes and batch sizes of steps k0..k1-1.

        Random stream consumption (what makes runs reproducible and split-invariant):
        step k of trajectory t with batch size B_k takes, from its ``"batch"`` stream,
        B_k doubles (``uniform_indices``) when sampling with replacement or B_k = 1, else
        n doubles (``without_replacement``: the B_k smallest of n uniform keys), and
        nothing when the trajectory is ``full``; and from its ``"label_noise"`` stream
        B_k standard normals when delta_t > 0 (scaled by sqrt(delta_k / delta_t) under a
        label-noise schedule). Steps are drawn in order, a run of equal B_k in one call,
        so a constant batch-size schedule draws exactly what the integer B draws.
        """
        T, S, n = self.n_traj, k1 - k0, self.data.n
        sampled, noisy = self.widths()
        idx = np.zeros((T, S, sampled), dtype=np.int64)
        normals = np.zeros((T, S, noisy))
        steps = np.arange(k0, k1)
        lrs = np.empty((T, S))
        batch = self.batch_steps(steps)
        full = self.full
        batch_schedules = self.batch_size_schedules or (None,) * T
        schedule_runs: dict[Schedule, list] = {}
        for t in range(T):
            schedule = batch_schedules[t]
            if schedule is None:
                runs = [(0, S, int(self.batch_size[t]))]
            else:
                if schedule not in schedule_runs:
                    schedule_runs[schedule] = list(constant_runs(batch[t]))
                runs = schedule_runs[schedule]
            if not full[t]:
                rng = streams["batch"][t]
                for a, b, B in runs:
                    if self.with_replacement or B == 1:
                        idx[t, a:b, :B] = uniform_indices(rng, n, (b - a, B))
                    else:
                        idx[t, a:b, :B] = without_replacement(rng, n, B, b - a)
            if self.label_noise[t] > 0:
                rng = streams["label_noise"][t]
                for a, b, B in runs:
                    normals[t, a:b, :B] = rng.standard_normal((b - a, B))
                schedule = (self.label_noise_schedules or (None,) * T)[t]
                if schedule is not None:
                    scale = np.sqrt(schedule(steps, self.n_steps) / self.label_noise[t])
                    normals[t] *= scale[:, None]
            lrs[t] = self.schedules[t](steps, self.n_steps)
        return Block(k0, idx, normals, lrs, batch)


@dataclasses.dataclass
class SGDState:
    """An engine's state: the parameters and work arrays (engine-specific types), the
    current block of draws and the SDE time before it."""

    problem: SGDProblem
    streams: Streams
    chunk_steps: int
    theta: Any
    work: Any
    time_before: np.ndarray  # (T,) t at the current block's first step
    block: Block | None = None
    block_time: np.ndarray | None = None  # (T, S + 1) sum of the block's step sizes so far

    def block_at(self, c0: int) -> Block:
        """The block of the chunk starting at step c0, drawn when the run reaches it."""
        if self.block is not None and self.block.k0 == c0:
            return self.block
        if self.block is not None:
            if c0 != self.block.k0 + self.block.lrs.shape[1]:
                raise RuntimeError("SGD engines advance through consecutive chunks only")
            self.time_before = self.time_before + self.block_time[:, -1]
        c1 = min(c0 + self.chunk_steps, self.problem.n_steps)
        self.block = self.problem.draw_block(self.streams, c0, c1)
        T = self.problem.n_traj
        self.block_time = np.concatenate(
            [np.zeros((T, 1)), np.cumsum(self.block.lrs, axis=1)], axis=1
        )
        return self.block


class Engine(abc.ABC):
    """An SGD engine: a ``Stepper`` (``sgdsde.run.driver``) for an ``SGDProblem``. It keeps
    no run state on itself; subclasses give ``setup``, ``run_block`` and ``params``."""

    name: ClassVar[str]

    def init(
        self, problem: SGDProblem, theta0: np.ndarray, streams: Streams, device: str = "cpu"
    ) -> SGDState:
        theta, work = self.setup(problem, theta0, device)
        return SGDState(
            problem, streams, problem.chunk_steps(), theta, work, np.zeros(problem.n_traj)
        )

    def advance(self, state: SGDState, k0: int, k1: int, diverged_step: np.ndarray) -> None:
        for c0, a, b in chunk_segments(k0, k1, state.chunk_steps):
            self.run_block(state, state.block_at(c0), a - c0, b - c0, diverged_step)

    def elapsed(self, state: SGDState, k: int) -> np.ndarray:
        """t_k = sum_{j<k} eta_j per trajectory (k within or at the end of the last block)."""
        if state.block is None:
            return state.time_before.copy()
        return state.time_before + state.block_time[:, k - state.block.k0]

    @abc.abstractmethod
    def setup(self, problem: SGDProblem, theta0: np.ndarray, device: str) -> tuple[Any, Any]:
        """(parameters, work arrays) at step 0, on ``device`` (checked here)."""

    @abc.abstractmethod
    def run_block(
        self, state: SGDState, block: Block, s0: int, s1: int, diverged_step: np.ndarray
    ) -> None:
        """Rows s0 .. s1-1 of ``block`` (steps block.k0 + s0 ..) in place on ``state``."""

    @abc.abstractmethod
    def params(self, state: SGDState) -> np.ndarray:
        """The current parameters, (T, p) float64 numpy."""
