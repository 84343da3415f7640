"""The SGD problem and what every engine shares: random blocks on a fixed chunk grid,
SDE time, and the stepping protocol of ``sgdsde.run.driver``.

Every engine runs the same minibatch / label-noise SGD update

    theta_{k+1} = theta_k - eta_k (1/B) sum_{i in S_k} (r_i + sqrt(delta) z_i) grad f(x_i)

with S_k, z_i and eta_k drawn by ``SGDProblem.draw_block`` (``Block``) for one chunk of
steps at a time, on the fixed grid of multiples of ``block_steps(T, width)``: every
engine sees the same random numbers, and they do not depend on the save grid, the chunk
size, the number of trajectories or threads (draws are split-invariant per trajectory).

Divergence: a trajectory whose sampled residual is non-finite or has r^2/2 above
``max_loss`` is frozen before that update and its ``diverged_step`` set to k.
"""

from __future__ import annotations

import abc
import dataclasses
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
    idx: np.ndarray  # (T, S, B_sampled) int64
    normals: np.ndarray  # (T, S, B_noise) float64
    lrs: np.ndarray  # (T, S) float64

    def dense(self, batch, full, n):
        """(T, S, B_max) example indices with a validity mask, for the batched engines."""
        T, S = self.lrs.shape
        b_max = int(batch.max())
        index = np.zeros((T, S, b_max), dtype=np.int64)
        noise = np.zeros((T, S, b_max))
        for t in range(T):
            B = batch[t]
            index[t, :, :B] = np.arange(n) if full[t] else self.idx[t, :, :B]
            noise[t, :, : min(B, self.normals.shape[2])] = self.normals[t, :, :B]
        mask = np.arange(b_max)[None, :] < batch[:, None]  # (T, B_max)
        return index, noise, mask


@dataclasses.dataclass(frozen=True, eq=False)
class SGDProblem:
    """(Label-noise) minibatch SGD of ``model`` on ``data`` for T trajectories.

    schedules: one step-size schedule per trajectory.
    batch_size: (T,) int64, B per trajectory (B = n without replacement is GD).
    label_noise: (T,) delta, the variance of the noise added to each sampled label (its
        peak over the run where it follows a schedule).
    label_noise_schedules: None, or per trajectory None or a ``Schedule`` of delta_k: the
        noise at step k then has variance delta_k (the normals are scaled by
        sqrt(delta_k / delta)), so a run can add label noise and then fine-tune without it.
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

    @property
    def n_traj(self) -> int:
        return len(self.schedules)

    @property
    def full(self) -> np.ndarray:
        """(T,) bool: the batch is the whole data set in order (GD, nothing sampled)."""
        return (self.batch_size == self.data.n) & (not self.with_replacement)

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
        """Indices, label-noise normals and step sizes of steps k0..k1-1 of every trajectory:
        trajectory t samples from its ``"batch"`` stream (``uniform_indices`` for B = 1 or
        with replacement, else ``without_replacement``) and draws (S, B) normals from its
        ``"label_noise"`` stream when delta_t > 0."""
        T, S, n = self.n_traj, k1 - k0, self.data.n
        sampled, noisy = self.widths()
        idx = np.zeros((T, S, sampled), dtype=np.int64)
        normals = np.zeros((T, S, noisy))
        steps = np.arange(k0, k1)
        lrs = np.empty((T, S))
        full = self.full
        for t in range(T):
            B = int(self.batch_size[t])
            if not full[t]:
                rng = streams["batch"][t]
                if self.with_replacement or B == 1:
                    idx[t, :, :B] = uniform_indices(rng, n, (S, B))
                else:
                    idx[t, :, :B] = without_replacement(rng, n, B, S)
            if self.label_noise[t] > 0:
                normals[t, :, :B] = streams["label_noise"][t].standard_normal((S, B))
                schedule = (self.label_noise_schedules or (None,) * T)[t]
                if schedule is not None:
                    scale = np.sqrt(schedule(steps, self.n_steps) / self.label_noise[t])
                    normals[t, :, :B] *= scale[:, None]
            lrs[t] = self.schedules[t](steps, self.n_steps)
        return Block(k0, idx, normals, lrs)


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
