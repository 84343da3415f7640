"""Sweeps at scale (sgdsde.analysis.sweep): the store holds what phase_diagram gives,
the same bits in-process, in local processes, on a dask LocalCluster and after an
interrupted-then-resumed run (Ctrl-C, SIGKILL of the driver mid-write); failures are
recorded and the sweep goes on; dead workers are retried; a different configuration is
refused; the store exports to netCDF."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sgdsde.analysis import (
    ProcessExecutor,
    SDEDynamics,
    Sweep,
    as_executor,
    export_sweep,
    label_noise_sde,
    open_sweep,
    phase_diagram,
    run_sweep,
)
from sgdsde.analysis.sweep import Block, DaskExecutor, SerialExecutor, SweepStore
from sgdsde.data import sparse_regression
from sgdsde.models.diagonal import DiagonalLinearNet

ROOT = Path(__file__).resolve().parents[1]
DATA = sparse_regression(n=20, d=30, k=3, n_test=50, seed=1)
MODEL = DiagonalLinearNet(d=30, alpha=0.1)
# 3 step sizes (converged, stabilized, diverged at B = 1) x 2 batch sizes x 2 seeds
GRID = dict(
    lrs=[0.1, 0.3, 1.0],
    axis="batch_size",
    values=[1, 2],
    seeds=2,
    n_steps=300,
    save_steps=np.arange(0, 301, 25),
    l0_threshold=1e-3,
    sparsity_level=10,
)
# one block per (lr, batch size): 6 blocks
SWEEP = Sweep(MODEL, DATA, block_values=1, **GRID)
ALL_BLOCKS = SWEEP.blocks()
# phase_diagram's losses are one BLAS product over the call's trajectories: a block's
# rounding differs from the whole grid's by ~1e-14 relative (test_phase.LOSS_RTOL)
LOSS_RTOL = 1e-12


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> xr.Dataset:
    """The sweep run in-process, uninterrupted."""
    path = tmp_path_factory.mktemp("sweep") / "ref.zarr"
    report = run_sweep(SWEEP, path, progress=False)
    assert report.complete and report.ran == ALL_BLOCKS and not report.failed
    return open_sweep(path)


def assert_same_bits(ds: xr.Dataset, reference: xr.Dataset):
    xr.testing.assert_identical(ds, reference)


def test_store_holds_the_phase_diagram(reference):
    direct = phase_diagram(MODEL, DATA, **GRID)
    assert set(direct.data_vars) <= set(reference.data_vars)
    for name in direct.data_vars:
        if direct[name].dtype.kind == "f":
            np.testing.assert_allclose(reference[name], direct[name], rtol=LOSS_RTOL)
        else:
            np.testing.assert_array_equal(reference[name], direct[name])
    np.testing.assert_array_equal(reference["regime_name"], direct["regime_name"])
    np.testing.assert_array_equal(reference["gd_stability_edge"], direct["gd_stability_edge"])
    # the grid spans the three regimes, so the comparison is not vacuous
    assert set(np.unique(reference["regime"].values)) == {0, 1, 2}
    assert json.loads(reference.attrs["config"]) == json.loads(direct.attrs["config"])
    for key in ("regime_criteria", "seed_entropy", "gd_stability_edge", "dynamics"):
        assert reference.attrs[key] == direct.attrs[key]
    assert reference["done"].values.all() and not reference["failed"].values.any()
    assert reference["lr"].attrs == direct["lr"].attrs


def test_blocks_cover_the_grid_once():
    assert len(ALL_BLOCKS) == 6 and len(set(ALL_BLOCKS)) == 6
    whole = Sweep(MODEL, DATA, **GRID).blocks()
    assert whole == [Block(i, 0, 2) for i in range(3)]
    keys = {b.key(SWEEP.fingerprint) for b in ALL_BLOCKS}
    assert len(keys) == 6  # distinct dask keys


def test_local_processes_give_the_same_bits(reference, tmp_path):
    report = run_sweep(SWEEP, tmp_path / "p.zarr", executor=ProcessExecutor(2), progress=False)
    assert report.complete and sorted(report.ran, key=ALL_BLOCKS.index) == ALL_BLOCKS
    assert_same_bits(open_sweep(tmp_path / "p.zarr"), reference)


def test_dask_local_cluster_gives_the_same_bits(reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            host="127.0.0.1",
            protocol="tcp",
        ) as cluster,
        distributed.Client(cluster, timeout=30) as client,
    ):
        executor = DaskExecutor(client)
        report = run_sweep(SWEEP, tmp_path / "d.zarr", executor=executor, progress=False)
        assert report.complete and not report.failed
        # the address form connects its own client
        path = tmp_path / "d2.zarr"
        report = run_sweep(SWEEP, path, executor=DaskExecutor(cluster.scheduler_address))
        assert report.complete
    assert_same_bits(open_sweep(tmp_path / "d.zarr"), reference)
    assert_same_bits(open_sweep(path), reference)


def test_interrupted_sweep_resumes_only_the_missing_blocks(reference, tmp_path):
    path = tmp_path / "i.zarr"

    def stop_after_two(result):
        if len(written) == 1:
            raise KeyboardInterrupt
        written.append(result.block)

    written = []
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SWEEP, path, on_block=stop_after_two, progress=False)
    done = open_sweep(path)["done"].values
    assert done.sum() == 2 and done[0].all()  # blocks written before the interrupt
    with pytest.raises(ValueError, match="resume=True"):
        run_sweep(SWEEP, path, progress=False)
    report = run_sweep(SWEEP, path, resume=True, progress=False)
    assert report.ran == ALL_BLOCKS[2:] and report.complete
    assert_same_bits(open_sweep(path), reference)
    assert run_sweep(SWEEP, path, resume=True, progress=False).ran == []


KILLED_DRIVER = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_sweep import SWEEP
from sgdsde.analysis import run_sweep
from sgdsde.analysis.sweep import SweepStore

blocks = []
write_block, write_variable = SweepStore.write_block, SweepStore._write_variable

def counting_write_block(self, region, ds):
    blocks.append(region)
    return write_block(self, region, ds)

def dying_write_variable(self, name, region, var):
    write_variable(self, name, region, var)
    if len(blocks) == 3 and name == "final_l0_norm":  # the third block, half written
        os.kill(os.getpid(), signal.SIGKILL)

SweepStore.write_block = counting_write_block
SweepStore._write_variable = dying_write_variable
run_sweep(SWEEP, sys.argv[1], progress=False)
"""


def test_driver_killed_mid_write_leaves_no_block_done_without_its_data(reference, tmp_path):
    path = tmp_path / "k.zarr"
    script = tmp_path / "killed_driver.py"
    script.write_text(KILLED_DRIVER.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(script), str(path)], env=env, timeout=120, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    ds = open_sweep(path)
    done = ds["done"].values
    assert done.sum() == 2 and not done[1, 0]  # the third block's data is half there
    assert np.isfinite(ds["final_l0_norm"].values[1, 0]).all()
    assert (ds["regime"].values[1, 0] == -1).all()  # written after final_l0_norm
    for name in ("final_train_loss", "final_l0_norm", "regime"):
        np.testing.assert_array_equal(ds[name].values[done], reference[name].values[done])
    report = run_sweep(SWEEP, path, resume=True, progress=False)
    assert report.ran == ALL_BLOCKS[2:]
    assert_same_bits(open_sweep(path), reference)


def failing_noise(lr, batch_size, label_noise):
    """label_noise_sde, but the step size 0.3 raises (a block whose run fails)."""
    if np.any(lr == 0.3):
        raise FloatingPointError(f"made to fail at lr = {lr[0]}")
    return label_noise_sde(lr, batch_size, label_noise)


SDE_GRID = dict(GRID, lrs=[0.1, 0.3], n_steps=100, save_steps=np.arange(0, 101, 10))


def test_a_failing_block_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = Sweep(MODEL, DATA, dynamics=SDEDynamics(noise=failing_noise), **SDE_GRID)
    path = tmp_path / "f.zarr"
    report = run_sweep(sweep, path, progress=False)
    assert report.failed == [Block(1, 0, 2)] and report.n_done == 1 and not report.complete
    ds = open_sweep(path)
    np.testing.assert_array_equal(ds["failed"].values, [[False, False], [True, True]])
    np.testing.assert_array_equal(ds["done"].values, [[True, True], [False, False]])
    assert ds["message"].values[1, 0].startswith("FloatingPointError: made to fail at lr = 0.3")
    assert "failing_noise" in ds["message"].values[1, 0]  # the traceback
    assert np.isfinite(ds["final_train_loss"].values[0]).all()
    assert np.isnan(ds["final_train_loss"].values[1]).all()
    assert (ds["regime"].values[1] == -1).all()
    with pytest.raises(ValueError, match="not done"):
        export_sweep(path, tmp_path / "f.nc")
    assert export_sweep(path, tmp_path / "f.nc", incomplete=True).exists()
    # resuming retries the failed block (it fails again) unless told not to
    assert run_sweep(sweep, path, resume=True, progress=False).ran == [Block(1, 0, 2)]
    assert run_sweep(sweep, path, resume=True, retry_failed=False, progress=False).ran == []


class KillingSweep:
    """Stands in for a Sweep in an executor: a block returns a tiny dataset, except that
    block ``kill`` kills its worker process, the first time only (``once``: a marker
    file records it) or every time."""

    def __init__(self, kill: Block, marker: Path, once: bool):
        self.kill, self.marker, self.once = kill, marker, once
        self.fingerprint = "0" * 64

    def run_block(self, block):
        if block == self.kill and not (self.once and self.marker.exists()):
            self.marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        return xr.Dataset({"lr_index": ("lr", [block.lr_index])})


def test_a_dead_worker_is_retried(tmp_path):
    blocks = [Block(i, 0, 1) for i in range(3)]
    sweep = KillingSweep(blocks[1], tmp_path / "killed", once=True)
    results = list(ProcessExecutor(1).run(sweep, blocks))
    assert (tmp_path / "killed").exists()  # a worker did die
    assert sorted(r.block.lr_index for r in results) == [0, 1, 2]
    assert all(
        r.error is None and int(r.dataset["lr_index"][0]) == r.block.lr_index for r in results
    )


@pytest.mark.slow  # three pools of spawned workers
def test_a_block_killing_every_worker_fails_after_the_retries(tmp_path):
    blocks = [Block(i, 0, 1) for i in range(2)]
    sweep = KillingSweep(blocks[1], tmp_path / "killed", once=False)
    results = {r.block: r for r in ProcessExecutor(1, max_retries=1).run(sweep, blocks)}
    assert set(results) == set(blocks)
    assert results[blocks[1]].error.startswith("WorkerDied: ")
    assert "died 2 times" in results[blocks[1]].error
    assert results[blocks[0]].error is None


def test_a_different_configuration_is_refused(reference, tmp_path):
    path = tmp_path / "c.zarr"
    run_sweep(Sweep(MODEL, DATA, **dict(GRID, lrs=[0.1])), path, progress=False)
    other = Sweep(MODEL, DATA, **dict(GRID, lrs=[0.1], n_steps=200, save_steps=[0, 200]))
    with pytest.raises(ValueError, match=r"different sweep configuration.*n_steps"):
        run_sweep(other, path, resume=True, progress=False)
    moved = DATA.__class__(DATA.X, DATA.y + 1.0, DATA.X_test, DATA.y_test, DATA.config)
    with pytest.raises(ValueError, match="data_sha256"):
        run_sweep(Sweep(MODEL, moved, **dict(GRID, lrs=[0.1])), path, resume=True)
    assert open_sweep(path)["done"].values.all()  # untouched


def test_a_folder_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a sgdsde sweep store"):
        run_sweep(SWEEP, tmp_path / "notes", resume=True, progress=False)
    assert os.listdir(tmp_path / "notes") == ["a.txt"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"block_values": 0}, "block_values"),
        ({"axis": "momentum"}, "unknown sweep axis"),
        ({"lrs": []}, "lrs"),
        ({"seeds": 0}, "seeds"),
    ],
)
def test_bad_input_is_refused_before_any_work(change, match):
    with pytest.raises(ValueError, match=match):
        Sweep(MODEL, DATA, **{**GRID, **change})


def test_bad_executor_arguments():
    with pytest.raises(ValueError, match="workers"):
        ProcessExecutor(0)
    with pytest.raises(ValueError, match="exclude each other"):
        as_executor(workers=2, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="scheduler"):
        DaskExecutor(8786)
    assert isinstance(as_executor(workers=1), SerialExecutor)
    assert isinstance(as_executor(workers=3), ProcessExecutor)
    assert isinstance(as_executor(scheduler="tcp://127.0.0.1:8786"), DaskExecutor)
    with pytest.raises(ValueError, match="executor"):
        run_sweep(SWEEP, "unused.zarr", executor="dask")
    assert not Path("unused.zarr").exists()


def test_export_to_netcdf(reference, tmp_path):
    path = tmp_path / "e.zarr"
    run_sweep(Sweep(MODEL, DATA, **dict(GRID, lrs=[0.1, 0.3])), path, progress=False)
    out = export_sweep(path, tmp_path / "e.nc")
    with xr.open_dataset(out, engine="h5netcdf") as saved:
        saved = saved.load()
    ds = open_sweep(path)
    for name in ("final_train_loss", "regime", "time_to_sparsity", "done"):
        np.testing.assert_array_equal(saved[name].values, ds[name].values)
        np.testing.assert_array_equal(saved[name].values, reference[name].values[:2])
    assert json.loads(saved.attrs["config"])["lrs"] == [0.1, 0.3]
    assert json.loads(saved.attrs["sweep_config"])["block_values"] == 2


def test_progress_bar_counts_blocks(tmp_path, capsys):
    run_sweep(Sweep(MODEL, DATA, **dict(GRID, lrs=[0.1])), tmp_path / "b.zarr")
    err = capsys.readouterr().err
    assert "1/1" in err and "block" in err


def test_store_open_reads_what_was_written(reference, tmp_path):
    path = tmp_path / "o.zarr"
    run_sweep(Sweep(MODEL, DATA, **dict(GRID, lrs=[0.1])), path, progress=False)
    store = SweepStore.open(path)
    assert store.config["phase_diagram"]["lrs"] == [0.1]
    assert store.mask("done").shape == (1, 2)


class HangingSweep:
    """Stands in for a Sweep on dask: block ``hang`` hangs (until ``release`` exists,
    at most 20 s) the first time (``once``: a marker file records it) or every time."""

    def __init__(self, hang: Block, marker: Path, release: Path, once: bool):
        self.hang, self.marker, self.release, self.once = hang, marker, release, once
        self.fingerprint = "1" * 64

    def run_block(self, block):
        if block == self.hang and not (self.once and self.marker.exists()):
            self.marker.write_text("hung")
            for _ in range(400):
                if self.release.exists():
                    break
                time.sleep(0.05)
        return xr.Dataset({"lr_index": ("lr", [block.lr_index])})


def test_dask_watchdog_resubmits_a_hung_block_then_records_it_failed(tmp_path):
    distributed = pytest.importorskip("distributed")
    blocks = [Block(i, 0, 1) for i in range(3)]
    release = tmp_path / "release"
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            host="127.0.0.1",
            protocol="tcp",
        ) as cluster,
        distributed.Client(cluster, timeout=30) as client,
    ):
        # hangs once: resubmitted under a new key, it runs on the free worker
        sweep = HangingSweep(blocks[1], tmp_path / "once", release, once=True)
        executor = DaskExecutor(client, block_timeout=0.5, poll=0.05)
        results = {r.block: r for r in executor.run(sweep, blocks)}
        assert (tmp_path / "once").exists()  # it did hang
        assert all(r.error is None for r in results.values()) and set(results) == set(blocks)
        release.write_text("go")  # let the abandoned run end
        release.unlink()
        # hangs every time: failed after max_retries resubmissions, the others done
        sweep = HangingSweep(blocks[1], tmp_path / "always", release, once=False)
        executor = DaskExecutor(client, block_timeout=0.5, max_retries=0, poll=0.05)
        results = {r.block: r for r in executor.run(sweep, blocks)}
        release.write_text("go")
    assert results[blocks[1]].error.startswith("BlockTimeout: ")
    assert "on a worker 1 times" in results[blocks[1]].error
    assert results[blocks[0]].error is None and results[blocks[2]].error is None
    with pytest.raises(ValueError, match="block_timeout"):
        DaskExecutor("tcp://127.0.0.1:8786", block_timeout=0)


class ThreadsSweep:
    """Stands in for a Sweep: a block returns the numba and BLAS thread counts it ran
    with."""

    fingerprint = "2" * 64

    def run_block(self, block):
        import numba
        from threadpoolctl import threadpool_info

        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        return xr.Dataset({"numba": numba.get_num_threads(), "blas": max(blas, default=1)})


def test_local_workers_run_on_their_share_of_the_threads():
    """Two workers on two cores each run on one numba and one BLAS thread (no
    oversubscription); the share is cores // workers by default, or ``threads``."""
    blocks = [Block(i, 0, 1) for i in range(2)]
    assert ProcessExecutor(2).threads == max(1, len(os.sched_getaffinity(0)) // 2)
    for threads in (1, 2):
        results = list(ProcessExecutor(2, threads=threads).run(ThreadsSweep(), blocks))
        assert all(r.error is None for r in results)
        for r in results:
            assert int(r.dataset["numba"]) == min(threads, numba_pool_size())
            # one thread exactly; more only up to what the BLAS was built for
            blas = int(r.dataset["blas"])
            assert blas == 1 if threads == 1 else 1 <= blas <= threads
    with pytest.raises(ValueError, match="threads"):
        ProcessExecutor(2, threads=0)


def numba_pool_size() -> int:
    import numba

    return numba.config.NUMBA_NUM_THREADS
