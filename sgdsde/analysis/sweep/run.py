"""Running a sweep into its store, resuming it, and exporting the result.

``run_sweep`` is the driver: it checks the sweep (before any work), creates the store
or opens it to resume (refusing one written by a different configuration), submits
the blocks not yet done to an executor, and writes each block as it comes back (data,
then ``done``; a failure's message, then ``failed``), with a progress bar of blocks
done and time left. Stopped anywhere (Ctrl-C, SIGKILL of the driver or of a worker),
a sweep loses no block that was marked done, and ``run_sweep(..., resume=True)`` runs
only the others.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from sgdsde.analysis.sweep.executors import Executor, SerialExecutor
from sgdsde.analysis.sweep.spec import Block, BlockResult, Sweep
from sgdsde.analysis.sweep.store import SweepStore
from sgdsde.run.dataset import save_dataset
from sgdsde.run.outputs import check_output_folder


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """What one ``run_sweep`` call did.

    path: the store.
    ran: the blocks run by this call, in the order they finished.
    failed: those of them whose run raised (their messages are in the store).
    n_blocks, n_done: the sweep's blocks, and how many are done now.
    """

    path: Path
    ran: list[Block]
    failed: list[Block]
    n_blocks: int
    n_done: int

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_blocks


def run_sweep(
    sweep: Sweep,
    path: str | os.PathLike,
    *,
    executor: Executor | None = None,
    resume: bool = False,
    retry_failed: bool = True,
    progress: bool = True,
    on_block: Callable[[BlockResult], None] | None = None,
) -> SweepRun:
    """Run the blocks of ``sweep`` not yet done and write them into the store at
    ``path``.

    sweep: the ``Sweep`` (the phase diagram's arguments, checked when it was made).
    path: the store (a zarr folder, e.g. "sweep.zarr"), created if it does not exist.
    executor: where blocks run (``SerialExecutor()``, ``ProcessExecutor(workers)``,
        ``DaskExecutor(scheduler)``, or ``as_executor``); default: in this process.
    resume: continue the sweep in an existing store (without it, an existing store is
        refused); a store written by a different configuration is always refused.
    retry_failed: on resume, run again the blocks whose run raised before.
    progress: show a progress bar of blocks done and time left.
    on_block: called with each ``BlockResult`` once it is written.
    """
    if not isinstance(sweep, Sweep):
        raise ValueError(f"sweep must be a Sweep(...) (got {sweep!r})")
    executor = SerialExecutor() if executor is None else executor
    if not isinstance(executor, Executor):
        raise ValueError(
            f"executor must be an Executor (SerialExecutor, ProcessExecutor, DaskExecutor) "
            f"(got {executor!r})"
        )
    store = _open_or_create(sweep, Path(path), resume)
    blocks = sweep.blocks()
    done_mask, failed_mask = store.mask("done"), store.mask("failed")  # read once
    done = [_all(done_mask, sweep.region(b)) for b in blocks]
    failed = [_all(failed_mask, sweep.region(b)) for b in blocks]
    pairs = zip(blocks, done, failed, strict=True)
    todo = [b for b, d, f in pairs if not d and (retry_failed or not f)]
    n_done = sum(done)
    ran, failures = [], []
    with tqdm(
        total=len(blocks), initial=n_done, desc="sweep", unit="block", disable=not progress
    ) as bar:
        results = executor.run(sweep, todo)
        try:
            for result in results:
                region = sweep.region(result.block)
                ran.append(result.block)
                if result.error is None:
                    store.write_block(region, result.dataset)
                    n_done += 1
                else:
                    store.write_failure(region, result.error)
                    failures.append(result.block)
                bar.update(1)
                bar.set_postfix(failed=len(failures), refresh=False)
                if on_block is not None:
                    on_block(result)
        finally:
            results.close()
    return SweepRun(Path(path), ran, failures, len(blocks), n_done)


def _all(mask: np.ndarray, region: dict[str, slice]) -> bool:
    return bool(np.all(mask[tuple(region.values())]))


def _open_or_create(sweep: Sweep, path: Path, resume: bool) -> SweepStore:
    """The store to write into: a new one, or (resume) the existing one if it was
    written by the same configuration; ValueError otherwise, before any work."""
    if not path.exists():
        check_output_folder(path.parent, "store folder")
        return SweepStore.create(
            path,
            sweep.config,
            sweep.fingerprint,
            sweep.coords,
            sweep.dims,
            sweep.block_dims,
        )
    if not resume:
        raise ValueError(
            f"{path} already exists: pass resume=True (--resume) to continue that sweep, "
            "or choose another path"
        )
    store = SweepStore.open(path)
    if store.fingerprint != sweep.fingerprint:
        raise ValueError(
            f"refusing to resume: {path} was written by a different sweep configuration "
            f"(differs in {_differences(store.config, sweep.config)}); resume with the "
            "configuration that wrote it, or choose another path"
        )
    return store


def _differences(old: dict, new: dict, prefix: str = "") -> str:
    """The keys (dotted) whose values differ between two configurations."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{prefix}{key}.")
            keys.extend(inner.split(", ") if inner else [])
        elif a != b:
            keys.append(f"{prefix}{key}")
    return ", ".join(keys)


def open_sweep(path: str | os.PathLike) -> xr.Dataset:
    """The sweep store at ``path`` as one in-memory Dataset (dims (lr, <axis>, seed)):
    the phase diagram's variables (fill values where not done: NaN, -1), the ``done``,
    ``failed`` and ``message`` masks over (lr, <axis>), and the phase diagram's attrs
    (``config``) plus ``sweep_config``."""
    return SweepStore.open(path).to_dataset()


def export_sweep(
    path: str | os.PathLike, out: str | os.PathLike, *, incomplete: bool = False
) -> Path:
    """Write the sweep store at ``path`` to one netCDF file ``out`` (``save_dataset``:
    atomic, ``.nc``). A store with blocks not done is refused unless ``incomplete``.
    Returns ``out``."""
    ds = open_sweep(path)
    missing = int(np.count_nonzero(~ds["done"].values))
    if missing and not incomplete:
        raise ValueError(
            f"{path} has {missing} cells of (lr, axis) not done "
            f"({int(ds['failed'].values.sum())} failed): resume the sweep first, or pass "
            "incomplete=True to export it as it is"
        )
    return save_dataset(ds, out)
