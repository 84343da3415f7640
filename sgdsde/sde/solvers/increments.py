"""Sources of the standard normals that drive an SDE solver, as objects.

A solver's ``increments`` field says where its Brownian increments come from:

* ``NumpyIncrements()``: numpy's generators of the trajectory streams, in the layout of
  ``sgdsde.sde.solvers.base.draw_increments``; the label channel takes the very normals
  that exact label-noise GD draws (same ``"label_noise"`` stream, same layout).
* ``XoshiroIncrements()``: per-trajectory xoshiro256++ streams with ziggurat normals drawn
  by numba in parallel (``sgdsde.xoshiro``), ~10x faster; same per-trajectory
  reproducibility, no coupling to GD.
* ``TorchIncrements()``: one ``torch.Generator`` on the device, seeded from the run's
  seed; reproducible per run only (a trajectory's numbers depend on T).
* ``BrownianBridge(refine)``: the label channel at dt = eta / refine built from GD's
  normals z_k by a Brownian bridge (``z_k / sqrt(l) + e_{k,j} - mean_j e_{k,j}``): the
  fine path has GD's Brownian increment over every coarse step (common random numbers).
* ``BrownianInterval()``: torchsde's own ``BrownianInterval`` (the ``torchsde`` solver).
* ``GivenIncrements(dW)``: Brownian increments given by the caller, (T, n_steps, m) (the
  ``euler_terms`` solver: common random numbers across step sizes, a path from elsewhere).

Two properties answer the questions a caller asks of a source:

* ``couples_to_gd``: the label channel is driven by the very normals of exact
  label-noise GD, so a run at dt = eta reproduces label-noise GD and the source can be
  used for common random numbers with GD (``sgdsde.analysis.compare``);
* ``per_trajectory``: trajectory t's numbers depend only on its own seed, not on the
  number of trajectories.

Sources that solvers draw from in chunks give ``draws(problem, streams)``: a
``ChunkedDraws`` that draws the chunk of steps starting at c0 when the run reaches it,
on the fixed grid of multiples of ``chunk_steps(problem)`` (so results do not depend on
the save grid).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from sgdsde import xoshiro
from sgdsde.lazy import lazy_module
from sgdsde.random import brownian_seeds, run_seed
from sgdsde.registry import Registry, to_config
from sgdsde.run.loop import block_steps
from sgdsde.sde.solvers.base import Increments, SDEProblem, Streams, draw_increments

torch = lazy_module("torch")

Sampler = Callable[[int, int], Increments]


@dataclasses.dataclass
class ChunkedDraws:
    """The increments of the chunk being run: ``at(c0)`` draws steps c0 .. c0 + chunk - 1
    (capped at ``last_step``) when the run reaches c0, converted once by ``convert``."""

    sample: Sampler
    chunk_steps: int
    last_step: int | None
    convert: Callable[[Increments], Increments] = lambda inc: inc
    current: Increments | None = None

    def at(self, c0: int) -> Increments:
        if self.current is None or self.current.k0 != c0:
            c1 = c0 + self.chunk_steps
            if self.last_step is not None:
                c1 = min(c1, self.last_step)
            self.current = self.convert(self.sample(c0, c1))
        return self.current


class IncrementSource(abc.ABC):
    """Where a solver's standard normals come from (module doc)."""

    name: ClassVar[str]
    couples_to_gd: ClassVar[bool] = False
    per_trajectory: ClassVar[bool] = True
    #: The source gives standard normals z (the solver forms dW = -sqrt(dt) z); False: it
    #: gives the Brownian increments dW themselves (``GivenIncrements``).
    standard_normals: ClassVar[bool] = True

    @property
    def n_traj(self) -> int | None:
        """The number of trajectories the source fixes (given increments), None: any."""
        return None

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., <options>}``; ``INCREMENTS.from_config`` rebuilds an equal source."""
        return to_config(self)

    def sampler(self, problem: SDEProblem, streams: Streams, **where: Any) -> Sampler:
        """``draw(k0, k1) -> Increments`` for consecutive chunks of a run; ``where`` is the
        device and dtype of a torch solver's state (ignored by numpy sources)."""
        raise ValueError(
            f"increments {self.name!r} are drawn inside their solver, not in chunks: "
            "use NumpyIncrements() or XoshiroIncrements() with this solver"
        )

    def chunk_steps(self, problem: SDEProblem) -> int:
        """Steps per chunk of draws."""
        return block_steps(problem.n_traj, sum(problem.widths()))

    def last_step(self, problem: SDEProblem) -> int | None:
        """Draws stop here (the run's length when known)."""
        return problem.n_steps

    def draws(
        self,
        problem: SDEProblem,
        streams: Streams,
        convert: Callable[[Increments], Increments] | None = None,
        **where: Any,
    ) -> ChunkedDraws:
        """The run's draws, chunk by chunk on the fixed grid (module doc)."""
        draws = ChunkedDraws(
            self.sampler(problem, streams, **where),
            self.chunk_steps(problem),
            self.last_step(problem),
        )
        if convert is not None:
            draws.convert = convert
        return draws


@dataclasses.dataclass(frozen=True)
class NumpyIncrements(IncrementSource):
    """numpy's generators of the trajectory streams (``draw_increments``): the label
    channel shares exact label-noise GD's normals."""

    name = "numpy"
    couples_to_gd = True

    def sampler(self, problem, streams, **where):
        return lambda k0, k1: draw_increments(problem, streams, k0, k1)


@dataclasses.dataclass(frozen=True)
class XoshiroIncrements(IncrementSource):
    """Per-trajectory xoshiro256++ streams seeded from each ``"brownian"`` seed sequence;
    step by step z (if a_t > 0), u (if b_t > 0), zeta (if s_t > 0)."""

    name = "xoshiro"

    def seed_state(self, streams: Streams) -> np.ndarray:
        """(T, 4) uint64 stream states (also what ``euler_gemm`` draws from in-kernel)."""
        return xoshiro.seed_state(brownian_seeds(streams))

    def sampler(self, problem, streams, **where):
        state = self.seed_state(streams)
        c = problem.coefficients
        use = [np.ascontiguousarray(coef > 0) for coef in (c.label, c.sgd, c.iso)]

        def draw(k0: int, k1: int) -> Increments:
            T, S = problem.n_traj, k1 - k0
            label, sgd, iso = (np.zeros((T, S, w)) for w in problem.widths())
            xoshiro.fill_channels(state, *use, label, sgd, iso, *xoshiro.TABLES)
            return Increments(k0, label, sgd, iso)

        return draw


@dataclasses.dataclass(frozen=True)
class TorchIncrements(IncrementSource):
    """One ``torch.Generator`` on the solver's device, seeded with ``run_seed(streams)``;
    per chunk, normals of shape (T, S, width) for the label, sgd and iso channels in
    turn. Faster on a GPU (no host-to-device copies); reproducible per run only."""

    name = "torch"
    per_trajectory = False

    def sampler(self, problem, streams, *, device="cpu", dtype=None, **where):
        kw = {"device": torch.device(device), "dtype": dtype or torch.float64}
        generator = torch.Generator(device=kw["device"])
        generator.manual_seed(run_seed(streams))

        def draw(k0: int, k1: int) -> Increments:
            T, S = problem.n_traj, k1 - k0
            label, sgd, iso = (
                torch.randn((T, S, w), generator=generator, **kw) for w in problem.widths()
            )
            return Increments(k0, label, sgd, iso)

        return draw


@dataclasses.dataclass(frozen=True)
class BrownianBridge(IncrementSource):
    """Euler-Maruyama at dt = eta / refine coupled to label-noise GD at step eta.

    Coarse step k of trajectory t draws the n normals z_k of its "label_noise" stream,
    exactly as label-noise GD does, and refine x n normals e_k of its "brownian" stream;
    the refine fine steps use z_k / sqrt(l) + e_{k,j} - mean_j e_{k,j} (iid N(0, 1),
    summing to sqrt(l) z_k). Only the label channel is supported (no minibatch or
    isotropic noise). refine = 1 gives exactly ``NumpyIncrements``' label normals.
    """

    refine: int = 1
    name = "brownian_bridge"
    couples_to_gd = True

    def __post_init__(self):
        r = self.refine
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
            raise ValueError(f"refine must be a positive integer (got {r!r})")

    def chunk_steps(self, problem):
        coarse = block_steps(problem.n_traj, problem.data.n * (self.refine + 1))
        return coarse * self.refine

    def last_step(self, problem):
        ell = self.refine
        return None if problem.n_steps is None else -(-int(problem.n_steps) // ell) * ell

    def sampler(self, problem, streams, **where):
        c = problem.coefficients
        if np.any(c.sgd) or np.any(c.iso):
            raise ValueError(
                "common random numbers with GD need a noise model with the label channel "
                "only (LabelNoise, or SGDNoise with batch_size = n)"
            )
        ell, n, T = self.refine, problem.data.n, problem.n_traj
        noisy = np.flatnonzero(c.label > 0)

        def draw(k0: int, k1: int) -> Increments:
            n_coarse = (k1 - k0) // ell
            z = np.zeros((T, n_coarse, ell, n))
            if noisy.size:
                zc = np.stack(
                    [streams["label_noise"][t].standard_normal((n_coarse, n)) for t in noisy]
                )
                z[noisy] = zc[:, :, None, :] / math.sqrt(ell)
                if ell > 1:
                    e = np.stack(
                        [streams["brownian"][t].standard_normal((n_coarse, ell, n)) for t in noisy]
                    )
                    z[noisy] += e - e.mean(axis=2, keepdims=True)
            z = z.reshape(T, n_coarse * ell, n)
            empty = np.zeros((T, n_coarse * ell, 0))
            return Increments(k0, z, empty, empty.copy())

        return draw


@dataclasses.dataclass(frozen=True)
class BrownianInterval(IncrementSource):
    """torchsde's ``BrownianInterval``, seeded with ``entropy(streams)`` (reproducible per
    run; the ``torchsde`` solver only)."""

    name = "brownian_interval"
    per_trajectory = False

    def entropy(self, streams: Streams) -> int:
        """A 63-bit entropy derived, without drawing, from every trajectory's
        ``"brownian"`` seed sequence (so from the run's seed)."""
        return run_seed(streams, tag=0x7D5DE)  # the tag: differs from TorchIncrements' seed


@dataclasses.dataclass(frozen=True, eq=False)
class GivenIncrements(IncrementSource):
    """Brownian increments given by the caller: ``dW[t, k]`` is W(t_{k+1}) - W(t_k) of
    trajectory t (variance dt per entry), used as given (no sign flip), shape
    (T, n_steps, m) with m the noise dimension of the problem.

    For common random numbers across step sizes (coarse increments as sums of fine ones)
    or a path computed elsewhere. Not in ``INCREMENTS``: an array is data, not a setting;
    the config records its shape and a sha256 of its values. Only the ``euler_terms``
    solver takes it (``sgdsde.sde.terms``).
    """

    dW: np.ndarray
    name = "given"
    standard_normals = False

    def __post_init__(self):
        try:
            arr = np.array(self.dW, dtype=np.float64, order="C")
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.ndim != 3 or not np.all(np.isfinite(arr)):
            shape = None if arr is None else arr.shape
            raise ValueError(
                f"dW must be a finite (n_traj, n_steps, noise dim) array of Brownian "
                f"increments (got shape {shape})"
            )
        object.__setattr__(self, "dW", arr)

    @property
    def n_traj(self) -> int:
        return self.dW.shape[0]

    def to_config(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.dW.tobytes()).hexdigest()
        return {"name": self.name, "shape": list(self.dW.shape), "sha256": digest}

    def chunk_steps(self, problem):
        return max(self.dW.shape[1], 1)  # one chunk: the array itself, no copy

    def sampler(self, problem, streams, **where):
        expected = (problem.n_traj, problem.n_steps, sum(problem.widths()))
        if self.dW.shape != expected:
            raise ValueError(
                f"dW has shape {self.dW.shape}, expected {expected} "
                "(n_traj, n_steps, noise dimension m)"
            )
        T = problem.n_traj

        def draw(k0: int, k1: int) -> Increments:
            empty = np.zeros((T, k1 - k0, 0))
            return Increments(k0, empty, empty, self.dW[:, k0:k1])

        return draw


INCREMENTS: Registry[IncrementSource] = Registry(
    "increments",
    {
        cls.name: cls
        for cls in (
            NumpyIncrements,
            XoshiroIncrements,
            TorchIncrements,
            BrownianBridge,
            BrownianInterval,
        )
    },
)


def as_increments(value: Any, accepted: tuple[type[IncrementSource], ...]) -> IncrementSource:
    """An increment source from an object, a registered name or a config dict (the config
    boundary), checked to be one of the ``accepted`` classes."""
    names = [cls.name for cls in accepted]
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"increments must be one of {names} (got {value!r})")
        value = INCREMENTS.make(value)
    elif isinstance(value, Mapping):
        value = INCREMENTS.from_config(value)
    if not isinstance(value, accepted):
        raise ValueError(
            f"increments must be one of {names} or their objects (got {value!r}) for this solver"
        )
    return value


__all__ = [
    "INCREMENTS",
    "BrownianBridge",
    "BrownianInterval",
    "ChunkedDraws",
    "GivenIncrements",
    "IncrementSource",
    "NumpyIncrements",
    "TorchIncrements",
    "XoshiroIncrements",
    "as_increments",
]
