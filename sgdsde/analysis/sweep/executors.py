"""Where a sweep's blocks run: in the driver process, in local worker processes (all
cores), or on a dask.distributed cluster. Every executor only runs blocks and hands
back their ``BlockResult``s as they finish; the driver alone writes the store.

An executor's ``run(sweep, blocks)`` is a generator of ``BlockResult``s in completion
order. Closing it (the driver stopped, e.g. by Ctrl-C) cancels the blocks not started.
An error raised by a block's run comes back as ``BlockResult.error`` (``run_block``);
a worker that dies is the executor's business:

* ``ProcessExecutor``: a dead worker breaks the whole pool (``BrokenProcessPool`` on
  every pending future), so the pool is restarted and every block that was pending is
  submitted again; a block pending at ``max_retries`` + 1 breakages comes back failed
  ("worker died").
* ``DaskExecutor``: the scheduler reschedules a dead worker's tasks itself (up to
  ``distributed.scheduler.allowed-failures`` times, then ``KilledWorker``, which comes
  back as the block's failure). Futures are released once their result is handed on
  (phase-validation.md §3.1).

**Threads.** A block's engine runs on numba's thread pool, whose size defaults to every
core of the machine, and its few BLAS calls (the stability edge) on the BLAS pool of the
same size. Blocks run side by side in several processes would then put workers x cores
spinning threads on the cores: on this project's shared 2-core machine (measured under
load, ``phase_dln_sgd`` blocks) a block ran ~3x longer with 2 numba threads than with
one, and its eigenproblems took ~18x the CPU time with 2 BLAS threads. So each local
worker process runs its blocks on ``threads`` = cores / workers threads (numba, BLAS,
OpenMP), and a dask block on ``threads`` numba threads (default 1: one task per dask
worker thread; dask's nanny already starts workers with one BLAS / OpenMP thread). The
values keep their bits: the engine is parallel over trajectories, and the BLAS splits
products by blocks of the output.
"""

from __future__ import annotations

import abc
import functools
import multiprocessing
import numbers
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numba
from threadpoolctl import threadpool_limits

from sgdsde.analysis.sweep.spec import Block, BlockResult, Sweep, run_block

#: Worker processes start as fresh interpreters (fork beside threads is unsafe).
SPAWN = multiprocessing.get_context("spawn")


class Executor(abc.ABC):
    """Runs a sweep's blocks and yields their results as they finish."""

    @abc.abstractmethod
    def run(self, sweep: Sweep, blocks: Sequence[Block]) -> Iterator[BlockResult]:
        """Run ``blocks`` of ``sweep``; yield each ``BlockResult`` as it finishes."""


class SerialExecutor(Executor):
    """Every block in the driver process, one after the other."""

    def run(self, sweep, blocks):
        for block in blocks:
            yield run_block(sweep, block)


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def limit_threads(threads: int) -> None:
    """Run what follows in this thread on ``threads`` numba threads (numba's count is
    per thread; at most its pool size) and the process's BLAS and OpenMP pools on
    ``threads`` threads: those loaded now (threadpoolctl), torch's once it loads (the
    SDE's GEMMs; it reads OMP_NUM_THREADS on import)."""
    _numba_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    threadpool_limits(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _numba_threads(threads: int) -> None:
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def run_block_on_threads(sweep: Sweep, block: Block, threads: int) -> BlockResult:
    """``run_block`` with the block's engine on ``threads`` numba threads (a dask task:
    the count is set in the worker thread that runs it)."""
    _numba_threads(threads)
    return run_block(sweep, block)


class ProcessExecutor(Executor):
    """Blocks in local worker processes (``concurrent.futures.ProcessPoolExecutor``,
    started by "spawn": a fresh interpreter, safe beside numba's and BLAS's threads).

    workers: the number of processes (default: the CPUs this process may use).
    max_retries: how many times a block is resubmitted after its worker died.
    threads: numba and BLAS threads per worker (default: the CPUs / ``workers``, at
        least 1; module docstring, "Threads").
    """

    def __init__(
        self, workers: int | None = None, max_retries: int = 2, threads: int | None = None
    ):
        self.workers = _cpu_count() if workers is None else _check_count("workers", workers, 1)
        self.max_retries = _check_count("max_retries", max_retries, 0)
        self.threads = (
            max(1, _cpu_count() // self.workers)
            if threads is None
            else _check_count("threads", threads, 1)
        )

    def run(self, sweep, blocks):
        attempts = dict.fromkeys(blocks, 0)
        pending = list(blocks)
        task = functools.partial(run_block, sweep)
        while pending:
            pool = ProcessPoolExecutor(
                self.workers,
                mp_context=SPAWN,
                initializer=limit_threads,
                initargs=(self.threads,),
            )
            stopped = True
            try:
                futures = {pool.submit(task, block): block for block in pending}
                pending = []
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        block = futures.pop(future)
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            attempts[block] += 1
                            if attempts[block] > self.max_retries:
                                yield BlockResult(block, error=_died(attempts[block]))
                            else:
                                pending.append(block)
                            continue
                        yield result
                stopped = False
            finally:
                # stopped early (Ctrl-C, the driver closed us): do not wait for the
                # running blocks; the workers exit once theirs is done
                pool.shutdown(wait=not stopped, cancel_futures=True)


def _died(times: int) -> str:
    return (
        f"WorkerDied: the worker process running this block died {times} times "
        "(killed, out of memory, or a crash in compiled code)"
    )


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class DaskExecutor(Executor):
    """Blocks as tasks on a dask.distributed cluster, each with an explicit key
    (``Block.key``: dask would otherwise run identical calls once). The sweep is sent
    to the workers once (``Client.scatter``).

    Results are collected by polling the futures (``Future.done``), not by
    ``as_completed``, which can hang after a worker
    restart (dask/dask #8882, phase-validation.md §3.1). A watchdog (``block_timeout``)
    cancels a block that has run longer than that on a worker and submits it again
    under a new key; after ``max_retries`` resubmissions it comes back failed
    ("BlockTimeout"). (A cancelled block that is already running finishes on its worker
    and is ignored: dask does not stop running code.)

    scheduler: the scheduler's address ("tcp://host:8786") or a ``distributed.Client``
        (left open; a client made from an address is closed at the end).
    timeout: seconds to wait for the scheduler when connecting.
    threads: numba threads per block (default 1: a dask worker runs one block per
        thread; module docstring, "Threads").
    block_timeout: seconds a block may run on a worker (from when the scheduler shows
        it processing) before the watchdog resubmits it; None: no limit.
    max_retries: resubmissions of a block after a timeout before it is recorded failed.
    poll: seconds between checks of the futures and of the watchdog.
    """

    def __init__(
        self,
        scheduler: Any,
        timeout: float = 30,
        threads: int = 1,
        block_timeout: float | None = None,
        max_retries: int = 1,
        poll: float = 0.5,
    ):
        if not isinstance(scheduler, str) and not hasattr(scheduler, "submit"):
            raise ValueError(
                f"scheduler must be an address such as 'tcp://host:8786' or a "
                f"distributed.Client (got {scheduler!r})"
            )
        for name, value in (("block_timeout", block_timeout), ("poll", poll)):
            ok = (value is None and name == "block_timeout") or _positive(value)
            if not ok:
                raise ValueError(f"{name} must be a number of seconds > 0 (got {value!r})")
        self.scheduler = scheduler
        self.timeout = timeout
        self.threads = _check_count("threads", threads, 1)
        self.block_timeout = block_timeout
        self.max_retries = _check_count("max_retries", max_retries, 0)
        self.poll = poll

    def run(self, sweep, blocks):
        from distributed import Client

        own = isinstance(self.scheduler, str)
        client = Client(self.scheduler, timeout=self.timeout) if own else self.scheduler
        futures: dict[Any, Block] = {}
        try:
            shared = client.scatter(sweep, broadcast=True, hash=False)
            attempts = dict.fromkeys(blocks, 0)

            def submit(block: Block) -> None:
                key = block.key(sweep.fingerprint)
                key += f"-retry{attempts[block]}" if attempts[block] else ""
                future = client.submit(run_block_on_threads, shared, block, self.threads, key=key)
                futures[future] = block

            for block in blocks:
                submit(block)
            watchdog = _Watchdog(self.block_timeout)
            while futures:
                _wait_any(list(futures), self.poll)
                for future in [f for f in futures if f.done()]:
                    yield _collect(future, futures.pop(future))
                for future in watchdog.overdue(client, futures):
                    block = futures.pop(future)
                    future.cancel()
                    attempts[block] += 1
                    if attempts[block] > self.max_retries:
                        yield BlockResult(
                            block, error=_timed_out(self.block_timeout, attempts[block])
                        )
                    else:
                        submit(block)
        finally:
            if futures:
                client.cancel(list(futures))
            if own:
                client.close()


def _positive(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0


def _wait_any(futures: list, timeout: float, tick: float = 0.02) -> None:
    """Return once one of ``futures`` is done, or after ``timeout`` seconds (polling
    ``Future.done``: nothing here waits on dask's own completion queues)."""
    deadline = time.monotonic() + timeout
    while not any(f.done() for f in futures) and time.monotonic() < deadline:
        time.sleep(tick)


def _collect(future: Any, block: Block) -> BlockResult:
    """A finished future's result (its error, e.g. KilledWorker: the worker died too
    often); the future is released (its result no longer held by the cluster)."""
    try:
        result = future.result()
    except Exception as err:
        result = BlockResult(block, error=f"{type(err).__name__}: {err}")
    future.release()
    return result


def _timed_out(seconds: float, times: int) -> str:
    return (
        f"BlockTimeout: the block ran longer than block_timeout = {seconds} s on a worker "
        f"{times} times (a hung worker, or set a longer block_timeout)"
    )


class _Watchdog:
    """When each pending block started running (first seen processing on a worker)."""

    def __init__(self, limit: float | None):
        self.limit = limit
        self.started: dict[Any, float] = {}

    def overdue(self, client: Any, futures: dict) -> list:
        """The futures that have been processing longer than the limit."""
        if self.limit is None:
            return []
        processing = {key for keys in client.processing().values() for key in keys}
        now = time.monotonic()
        late = []
        for future in futures:
            if future.key in processing:
                start = self.started.setdefault(future.key, now)
                if now - start > self.limit:
                    late.append(future)
        return late


def as_executor(workers: int | None = None, scheduler: Any = None) -> Executor:
    """The executor of the command line's ``--workers`` / ``--scheduler``: a dask
    cluster if ``scheduler`` is given, else ``workers`` local processes (default: all
    CPUs), in the driver process itself for one worker."""
    if scheduler is not None:
        if workers is not None:
            raise ValueError(
                "workers and scheduler exclude each other: the cluster has its own workers"
            )
        return DaskExecutor(scheduler)
    workers = _cpu_count() if workers is None else _check_count("workers", workers, 1)
    return SerialExecutor() if workers == 1 else ProcessExecutor(workers)
