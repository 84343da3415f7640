"""The headline phase diagram (issue 8, section 8): its sweep against a notebook's loops.

Problem: ``sgdsde/configs/phase_dln_sgd.toml``, the demo's diagonal network u*v on sparse
regression n=80, d=200, k=20 (1000 test points), single-sample SGD, 48 step sizes x 9
decay fractions x 4 seeds = 1,728 cells of 100,000 steps, loss curves on 200 save points.

Rows, all measured in this run:

1. ``sgdsde sweep``'s path: ``execute_phase`` into a zarr store on every core
   (``ProcessExecutor``), then the store read back; wall time and peak memory
   (the driver's peak RSS + workers x the largest worker's, an upper bound);
2. the notebook user's loop through the package: one ``simulate_sgd`` call per cell
   (same schedule, seed, save grid), on a sample of cells, extrapolated to the grid;
3. the papers' notebooks: a plain numpy loop over the steps of one trajectory (u, v
   length-d vectors, the losses at the save points), on a sample of cells, timed on
   at most 20,000 steps and extrapolated to the grid;
4. the same sweep on a 2-worker dask ``LocalCluster`` (processes, loopback; the
   cluster's start not counted), against row 1;

and the SDE diagram (``phase_dln_sde.toml``) through row 1's path. CPU time (user +
system, the row's processes and their children, e.g. the cluster's workers once
reaped) is printed beside the wall time: on a shared machine it shows the work done,
wall / CPU the share of the cores the row got. Rows 1, 4 and the SDE
run each in a fresh Python process (their own peak memory, numba's disk cache warm
from a short untimed run first).

Goals (issue 8): SGD diagram < 60 s and < 2 GiB on 2 cores, >= 30x the plain loop;
SDE diagram < 5 min; LocalCluster within 1.3x of the local run.

    python benchmarks/bench_phase.py                      # full size (minutes)
    python benchmarks/bench_phase.py --n-steps 10000 --lrs 12
    python benchmarks/bench_phase.py --quick              # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sgdsde.dynamics.schedules import StepDecay
from sgdsde.experiments.config import load_config
from sgdsde.experiments.phase import PhaseExperiment, execute_phase

GIB = 2**30
GOALS = {"sgd_s": 60.0, "sgd_gib": 2.0, "vs_loop": 30.0, "sde_s": 300.0, "dask_ratio": 1.3}


def plan_of(config: str, n_steps: int | None, n_lrs: int | None):
    """The phase plan of a built-in config, scaled down to n_steps steps / n_lrs step
    sizes (same start and stop) where given."""
    cfg = load_config(config)
    if n_steps is not None:
        cfg["n_steps"] = n_steps
    if n_lrs is not None:
        cfg["lrs"] = {**cfg["lrs"], "num": n_lrs}
    return PhaseExperiment().prepare(cfg)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --------------------------------------------------------------- rows in a subprocess
def run_sweep_row(kind: str, config: str, n_steps: int | None, n_lrs: int | None, workers: int):
    """One timed sweep (this process only: its peak memory is the row's)."""
    plan = plan_of(config, n_steps, n_lrs)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store.zarr"
        start = time.perf_counter()
        if kind == "dask":
            ds, setup = dask_sweep(plan, store, workers)
        else:
            ds, setup = execute_phase(plan, store=store, workers=workers), 0.0
        wall = time.perf_counter() - start - setup
    own, child = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return {
        "wall_s": wall,
        "cpu_s": own.ru_utime + own.ru_stime + child.ru_utime + child.ru_stime,
        "driver_bytes": own.ru_maxrss * 1024,
        "worker_bytes": child.ru_maxrss * 1024,
        "cells": int(ds["done"].sum()) * len(ds["seed"]),
        "failed": int(ds["failed"].sum()),
    }


def dask_sweep(plan, store: Path, workers: int):
    """The sweep on a LocalCluster of ``workers`` single-threaded worker processes;
    (dataset, seconds spent starting the cluster)."""
    import distributed

    start = time.perf_counter()
    with distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        setup = time.perf_counter() - start
        ds = execute_phase(plan, store=store, scheduler=cluster.scheduler_address)
    return ds, setup


def in_subprocess(kind: str, config: str, args) -> dict:
    """Run ``run_sweep_row`` in a fresh interpreter and return its measurements."""
    cmd = [sys.executable, __file__, "--row", kind, "--config", config]
    cmd += ["--workers", str(args.workers)]
    if args.n_steps is not None:
        cmd += ["--n-steps", str(args.n_steps)]
    if args.lrs is not None:
        cmd += ["--lrs", str(args.lrs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------- per-cell loops
def sample_cells(plan, n_sample: int, seed: int = 0):
    """(lr, decay fraction, seed index) of ``n_sample`` cells drawn from the grid."""
    opts = plan.options
    cells = [(lr, v, s) for lr in opts["lrs"] for v in opts["values"] for s in opts["seeds"]]
    picks = np.random.default_rng(seed).choice(len(cells), n_sample, replace=False)
    return [cells[i] for i in sorted(picks)], len(cells)


def simulate_cell(plan, lr, fraction, seed_index):
    """One cell the way a notebook user calls the package: one simulate_sgd per cell."""
    from sgdsde.analysis.phase import seed_child
    from sgdsde.dynamics.sgd import simulate_sgd

    opts = plan.options
    schedule = StepDecay(
        lr=float(lr), at=(float(fraction),), factors=(plan.config["axis"]["factor"],)
    )
    return simulate_sgd(
        plan.model,
        plan.data,
        schedule,
        n_steps=opts["n_steps"],
        sgd=plan.dynamics.sgd,
        seed=seed_child(opts["seed"], int(seed_index)),
        save_steps=opts["save_steps"],
        l0_threshold=opts.get("l0_threshold", 1e-50),
    )


def plain_loop_cell(data, lr, fraction, factor, n_steps, save_steps, seed, alpha=0.1):
    """The papers' notebooks: u, v vectors, one example per step, numpy; the train and
    test losses and l0 at the save points; the step size divided by ``factor`` from
    step int(fraction N) on."""
    with np.errstate(over="ignore", invalid="ignore"):  # diverging cells run on as NaN
        return _plain_loop(data, lr, fraction, factor, n_steps, save_steps, seed, alpha)


def _plain_loop(data, lr, fraction, factor, n_steps, save_steps, seed, alpha):
    rng = np.random.default_rng(seed)
    u, v = np.full(data.d, alpha), np.zeros(data.d)
    X, y, X_test, y_test = data.X, data.y, data.X_test, data.y_test
    save = set(int(k) for k in save_steps)
    decay_at = int(fraction * n_steps)
    curve = []
    for k in range(n_steps):
        if k in save:
            beta = u * v
            curve.append(
                (
                    0.5 * np.mean((X @ beta - y) ** 2),
                    0.5 * np.mean((X_test @ beta - y_test) ** 2),
                    np.count_nonzero(np.abs(beta) > 1e-10),
                )
            )
        i = rng.integers(data.n)
        x = X[i]
        r = x @ (u * v) - y[i]
        eta = lr if k < decay_at else lr / factor
        gu, gv = r * x * v, r * x * u
        u -= eta * gu
        v -= eta * gv
    return curve


def time_cells(fn, cells) -> tuple[float, float]:
    """Mean wall and CPU seconds of ``fn(*cell)`` over the cells."""
    start, cpu = time.perf_counter(), time.process_time()
    for cell in cells:
        fn(*cell)
    return (time.perf_counter() - start) / len(cells), (time.process_time() - cpu) / len(cells)


# ------------------------------------------------------------------------ the table
def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def peak(row: dict, workers: int) -> float:
    """Upper bound of the peak memory: the driver's + workers x the largest worker's."""
    return row["driver_bytes"] + workers * row["worker_bytes"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n-steps", type=int, default=None, help="steps per cell (default: config)"
    )
    parser.add_argument(
        "--lrs", type=int, default=None, help="number of step sizes (default: config)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 steps, 4 step sizes")
    parser.add_argument("--workers", type=int, default=cpu_count(), help="local worker processes")
    parser.add_argument("--sample", type=int, default=4, help="cells timed for rows 2 and 3")
    parser.add_argument("--no-dask", action="store_true", help="skip the LocalCluster row")
    parser.add_argument("--no-sde", action="store_true", help="skip the SDE diagram")
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--config", default="phase_dln_sgd", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n_steps = args.n_steps or 2_000
        args.lrs = args.lrs or 4
        args.sample = min(args.sample, 2)
    if args.row is not None:
        print(
            json.dumps(run_sweep_row(args.row, args.config, args.n_steps, args.lrs, args.workers))
        )
        return

    plan = plan_of("phase_dln_sgd", args.n_steps, args.lrs)
    n_steps = plan.options["n_steps"]
    # numba's disk cache warm (compiled once by a short untimed run), untimed
    warm = argparse.Namespace(**{**vars(args), "n_steps": 200, "lrs": 2})
    in_subprocess("local", "phase_dln_sgd", warm)

    local = in_subprocess("local", "phase_dln_sgd", args)
    cells, n_cells = sample_cells(plan, args.sample)
    simulate_cell(plan, *cells[0])  # warm-up
    t_simulate, c_simulate = (
        t * n_cells for t in time_cells(lambda *c: simulate_cell(plan, *c), cells)
    )
    loop_steps = min(n_steps, 20_000)
    factor = plan.config["axis"]["factor"]
    save = plan.options["save_steps"]

    def loop(lr, fraction, seed_index):
        return plain_loop_cell(plan.data, lr, fraction, factor, loop_steps, save, seed_index)

    t_loop, c_loop = (t * n_cells * n_steps / loop_steps for t in time_cells(loop, cells))
    dask = None if args.no_dask else in_subprocess("dask", "phase_dln_sgd", args)
    sde = None if args.no_sde else in_subprocess("local", "phase_dln_sde", args)

    w = args.workers
    print(
        f"phase diagram phase_dln_sgd: {len(plan.options['lrs'])} lrs x "
        f"{len(plan.options['values'])} decay fractions x {len(plan.options['seeds'])} seeds "
        f"= {n_cells} cells x {n_steps} steps, {len(save)} save points; {cpu_count()} cores, "
        f"{w} workers; plain loop and simulate_sgd on {len(cells)} sampled cells, extrapolated"
    )
    print()
    print("| run | wall time | CPU time | peak memory | vs plain loop | goal |")
    print("|---|---|---|---|---|---|")
    t_local = local["wall_s"]
    rows = [
        (
            f"sweep, {w} local workers (`sgdsde sweep`)",
            t_local,
            local["cpu_s"],
            gib(peak(local, w)),
            f"< {GOALS['sgd_s']:.0f} s, < {GOALS['sgd_gib']:.0f} GiB, >= {GOALS['vs_loop']:.0f}x",
        ),
        ("one `simulate_sgd` per cell (extrapolated)", t_simulate, c_simulate, "", ""),
        ("plain numpy loop per cell (extrapolated)", t_loop, c_loop, "", ""),
    ]
    if dask is not None:
        ratio = dask["wall_s"] / t_local
        rows.append(
            (
                f"sweep, dask LocalCluster {w} workers ({ratio:.2f}x the local sweep)",
                dask["wall_s"],
                dask["cpu_s"],
                f"{gib(dask['driver_bytes'])} (driver only)",
                f"within {GOALS['dask_ratio']}x of the local sweep",
            )
        )
    if sde is not None:
        rows.append(
            (
                "SDE diagram phase_dln_sde, local workers",
                sde["wall_s"],
                sde["cpu_s"],
                gib(peak(sde, w)),
                f"< {GOALS['sde_s'] / 60:.0f} min",
            )
        )
    for label, seconds, cpu, memory, goal in rows:
        print(
            f"| {label} | {seconds:.1f} s | {cpu:.1f} s | {memory} | "
            f"{t_loop / seconds:.1f}x | {goal} |"
        )
    failed = local["failed"] + (dask or {}).get("failed", 0) + (sde or {}).get("failed", 0)
    if failed:
        print(f"\nWARNING: {failed} blocks failed")


if __name__ == "__main__":
    main()
