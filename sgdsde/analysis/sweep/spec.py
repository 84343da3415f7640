"""What a sweep computes: the arguments of ``phase_diagram`` over the whole grid, cut into
blocks that run independently.

**The unit of work is a block**: one step size eta_i x a run of ``block_values``
consecutive values of the second axis (default: all of them) x all seeds, run as one
``phase_diagram`` call (one batched engine call for SGD; one ``simulate_sde`` call for
the SDE, which shares dt = eta / m within a call anyway). Batching still pays (the
headline grid, 9 decay fractions x 4 seeds, gives 48 blocks of 36 trajectories), and a
block is small enough that a lost one costs little.

**Same seed, same bits.** A cell's iterates do not depend on the grid it runs in
(``seed_child``: seed index s has its own streams), and a block is always the same set
of trajectories whatever runs it and in whatever order, so the stored arrays are the
same bits in-process, in local processes, on a dask cluster and after a resume. (A
block's recorded losses are one BLAS product over its trajectories, so they can differ
from a single ``phase_diagram`` call over the whole grid in the last bits, ~1e-14.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.analysis.phase import (
    SDEDynamics,
    SGDDynamics,
    SweepAxis,
    as_axis,
    phase_config,
    phase_diagram,
)
from sgdsde.analysis.regimes import RegimeCriteria
from sgdsde.data import RegressionData
from sgdsde.models.base import Model
from sgdsde.random import as_seed_sequence, seed_attrs
from sgdsde.version import __version__

#: Default settings (module-level: defaults are never built per call).
DEFAULT_DYNAMICS = SGDDynamics()
DEFAULT_CRITERIA = RegimeCriteria()

#: Messages of failed blocks are cut to their last this many characters.
MAX_MESSAGE = 4000


@dataclasses.dataclass(frozen=True)
class Block:
    """One unit of work: step size index ``lr_index`` and the axis values
    ``values[value_start:value_stop]`` (0:1 without an axis), all seeds."""

    lr_index: int
    value_start: int
    value_stop: int

    def key(self, fingerprint: str) -> str:
        """A name unique to this block of this sweep (dask task key: without it dask
        would run identical calls once)."""
        return f"sgdsde-block-{fingerprint[:16]}-{self.lr_index}-{self.value_start}"


@dataclasses.dataclass(frozen=True)
class BlockResult:
    """What running a block gave: its dataset, or the message of the error it raised."""

    block: Block
    dataset: xr.Dataset | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Sweep:
    """A phase diagram to run block by block (``run_sweep``); the arguments are those of
    ``phase_diagram`` (same names, meanings and checks), plus

    block_values: the axis values per block (None: all values of one step size per
        block; the module docstring says why).

    Construction checks every argument (a ValueError before any work) and resolves the
    configuration (``config``) that the store records.
    """

    model: Model
    data: RegressionData
    lrs: Sequence[float]
    seeds: int | Sequence[int]
    n_steps: int
    axis: SweepAxis | str | None = None
    values: Sequence[float] | None = None
    dynamics: SGDDynamics | SDEDynamics = DEFAULT_DYNAMICS
    seed: Any = 0
    save_steps: Any = None
    criteria: RegimeCriteria = DEFAULT_CRITERIA
    l0_threshold: float = 1e-50
    sparsity_level: float | None = None
    sparsity_every: int | None = None
    features: bool | None = None
    max_loss: float = 1e10
    sharpness: bool = True
    block_values: int | None = None
    config: dict[str, Any] = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self):
        phase = phase_config(
            self.model,
            self.data,
            lrs=self.lrs,
            axis=self.axis,
            values=self.values,
            seeds=self.seeds,
            n_steps=self.n_steps,
            dynamics=self.dynamics,
            seed=self.seed,
            save_steps=self.save_steps,
            l0_threshold=self.l0_threshold,
            sparsity_level=self.sparsity_level,
            sparsity_every=self.sparsity_every,
            max_loss=self.max_loss,
            sharpness=self.sharpness,
        )
        if not isinstance(self.criteria, RegimeCriteria):
            raise ValueError(f"criteria must be a RegimeCriteria (got {self.criteria!r})")
        n_values = 1 if phase["values"] is None else len(phase["values"])
        per = self.block_values
        if per is not None and (
            isinstance(per, bool) or not isinstance(per, numbers.Integral) or per < 1
        ):
            raise ValueError(
                f"block_values must be an integer >= 1 or None (got {per!r}): the axis "
                "values per block, None for all of them"
            )
        config = {
            "phase_diagram": phase,
            "criteria": self.criteria.to_config(),
            "features": self.features,
            "block_values": min(int(per), n_values) if per is not None else n_values,
            "seed": seed_attrs(as_seed_sequence(self.seed)),
            "data_sha256": _data_hash(self.data),
            "sgdsde_version": __version__,
        }
        object.__setattr__(self, "config", json.loads(json.dumps(config)))
        # the resolved grids, as phase_diagram checked them
        object.__setattr__(self, "axis", as_axis(self.axis))
        object.__setattr__(self, "lrs", tuple(phase["lrs"]))
        object.__setattr__(self, "seeds", tuple(phase["seeds"]))
        if phase["values"] is not None:
            object.__setattr__(self, "values", tuple(phase["values"]))

    @property
    def fingerprint(self) -> str:
        """sha256 of the resolved configuration (JSON, sorted keys)."""
        text = json.dumps(self.config, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def dims(self) -> tuple[str, ...]:
        """The dims of the diagram: (lr, <axis>, seed)."""
        return ("lr", "seed") if self.axis is None else ("lr", self.axis.name, "seed")

    @property
    def block_dims(self) -> tuple[str, ...]:
        """The dims a block is cut along (those of the done mask): (lr, <axis>)."""
        return self.dims[:-1]

    @property
    def coords(self) -> dict[str, list]:
        """The grid of every dim."""
        grids = {"lr": self.lrs, "seed": self.seeds}
        if self.axis is not None:
            grids[self.axis.name] = self.values
        return {dim: list(grids[dim]) for dim in self.dims}

    def blocks(self) -> list[Block]:
        """Every block, in (lr, value) order."""
        n_values = 1 if self.axis is None else len(self.values)
        per = self.config["block_values"]
        return [
            Block(i, j, min(j + per, n_values))
            for i in range(len(self.lrs))
            for j in range(0, n_values, per)
        ]

    def region(self, block: Block) -> dict[str, slice]:
        """Where a block's cells lie, along the block dims."""
        region = {"lr": slice(block.lr_index, block.lr_index + 1)}
        if self.axis is not None:
            region[self.axis.name] = slice(block.value_start, block.value_stop)
        return region

    def run_block(self, block: Block) -> xr.Dataset:
        """The phase diagram of one block (dims (lr, <axis>, seed), lr of length 1)."""
        values = None if self.axis is None else self.values[block.value_start : block.value_stop]
        return phase_diagram(
            self.model,
            self.data,
            lrs=[self.lrs[block.lr_index]],
            axis=self.axis,
            values=values,
            seeds=list(self.seeds),
            n_steps=self.n_steps,
            dynamics=self.dynamics,
            seed=self.seed,
            save_steps=self.save_steps,
            criteria=self.criteria,
            l0_threshold=self.l0_threshold,
            sparsity_level=self.sparsity_level,
            sparsity_every=self.sparsity_every,
            features=self.features,
            max_loss=self.max_loss,
            sharpness=self.sharpness,
        )


def run_block(sweep: Sweep, block: Block) -> BlockResult:
    """Run one block where it is sent (a worker); an error it raises comes back as a
    message (``BlockResult.error``: the exception and its traceback) so the sweep goes
    on. Only ``Exception``s are caught: an interrupt still stops the worker."""
    try:
        return BlockResult(block, dataset=sweep.run_block(block))
    except Exception as err:
        text = "".join(traceback.format_exception(err))
        return BlockResult(block, error=f"{type(err).__name__}: {err}\n\n{text}"[-MAX_MESSAGE:])


def _data_hash(data: RegressionData) -> str:
    """sha256 of the data arrays (a sweep resumes only on the very same data)."""
    digest = hashlib.sha256()
    for name in ("X", "y", "X_test", "y_test"):
        arr = np.ascontiguousarray(getattr(data, name))
        digest.update(f"{name}{arr.shape}{arr.dtype}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()
