"""Phase-diagram sweeps at scale: the blocks of a ``phase_diagram`` run on all local
cores or a dask.distributed cluster, written by one driver into a preallocated zarr
store, resumable after any interruption, exported to one netCDF file.

* ``spec``: ``Sweep`` (the phase diagram's arguments, checked and resolved) and its
  ``Block``s (the unit of work: one step size x axis values x all seeds);
* ``store``: ``SweepStore`` (the zarr layout, the write order, the done mask);
* ``executors``: ``SerialExecutor``, ``ProcessExecutor``, ``DaskExecutor``,
  ``as_executor``;
* ``run``: ``run_sweep`` (the driver), ``open_sweep``, ``export_sweep``.
"""

from sgdsde.analysis.sweep.executors import (
    DaskExecutor,
    Executor,
    ProcessExecutor,
    SerialExecutor,
    as_executor,
)
from sgdsde.analysis.sweep.run import SweepRun, export_sweep, open_sweep, run_sweep
from sgdsde.analysis.sweep.spec import Block, BlockResult, Sweep, run_block
from sgdsde.analysis.sweep.store import SweepStore

__all__ = [
    "Block",
    "BlockResult",
    "DaskExecutor",
    "Executor",
    "ProcessExecutor",
    "SerialExecutor",
    "Sweep",
    "SweepRun",
    "SweepStore",
    "as_executor",
    "export_sweep",
    "open_sweep",
    "run_block",
    "run_sweep",
]
