"""Single-sample SGD on the demo problem: sgdsde engines vs the notebooks' plain loop.

Problem: diagonal linear network beta = u*v on sparse regression n=80, d=200, k=20
(the demo). Baseline: a plain numpy loop over one trajectory, one example per step,
as the paper's notebooks run it, timed in the same process. Reports
trajectory-steps/s and the ratio to the baseline (goal: >= 30x at T = 64, 2 cores).

Each T is timed with two save grids, the ends only ([0, N]) and the demo's 350-point
grid, in alternation (so both see the same load on a shared machine); the demo row's
"recording" column is the share of its run spent recording, 1 - (its rate) / (the
ends-only rate) (goal, issue 8: under 25 % at T = 64).

    python benchmarks/bench_sgd.py            # full (about a minute)
    python benchmarks/bench_sgd.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import sgdsde as s


def plain_numpy_loop(data, lr, n_steps, seed):
    """One trajectory, one example per step, numpy on length-d vectors (notebook style)."""
    rng = np.random.default_rng(seed)
    d = data.d
    u, v = np.full(d, 0.1), np.zeros(d)
    X, y = data.X, data.y
    for _ in range(n_steps):
        i = rng.integers(data.n)
        x = X[i]
        r = x @ (u * v) - y[i]
        gu, gv = r * x * v, r * x * u
        u -= lr * gu
        v -= lr * gv
    return u * v


def timed(fn, repeats):
    return timed_together([fn], repeats)[0]


def timed_together(fns, repeats):
    """Median wall time of each function, the functions run in turn in every repeat."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--steps", type=int, default=None, help="SGD steps per trajectory")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_steps = args.steps or (5_000 if args.quick else 100_001)
    base_steps = min(n_steps, 3_000 if args.quick else 30_000)
    data = s.sparse_regression(80, 200, 20, seed=1)
    model = s.make_model("diagonal_linear", d=200)
    lr = 0.2

    # JIT warm-up (compilation, or loading numba's on-disk cache), untimed.
    s.simulate_sgd(model, data, lr, n_steps=10, n_traj=2, save_steps=[0, 10])

    rows = []
    t_base = timed(lambda: plain_numpy_loop(data, lr, base_steps, 0), args.repeats)
    base_rate = base_steps / t_base
    rows.append(("plain numpy loop (1 trajectory)", 1, base_steps, base_rate, None))
    for T in (1, 64):
        # (save grid, test_subsample): the ends only, the demo's grid, and the demo's grid
        # with the curve's test losses on 64 fixed test points (the last on all of them)
        grids = {
            "numba engine, save [0, N]": ([0, n_steps], None),
            "numba engine, demo save grid": (None, None),
            "  same, curve test loss on 64 pts": (None, 64),
        }
        runs = [
            lambda T=T, grid=grid, sub=sub: s.simulate_sgd(
                model,
                data,
                lr,
                n_steps=n_steps,
                n_traj=T,
                save_steps=grid,
                seed=0,
                test_subsample=sub,
            )
            for grid, sub in grids.values()
        ]
        t_ends, t_demo, t_sub = timed_together(runs, args.repeats)
        labels = list(grids)
        rows.append((labels[0], T, n_steps, T * n_steps / t_ends, None))
        rows.append((labels[1], T, n_steps, T * n_steps / t_demo, 1 - t_ends / t_demo))
        rows.append((labels[2], T, n_steps, T * n_steps / t_sub, 1 - t_ends / t_sub))

    print(
        f"single-sample SGD, DLN u*v, n=80 d=200; {os.cpu_count()} cores; median of {args.repeats}"
    )
    head = ("implementation", "T", "steps", "traj-steps/s", "vs plain loop", "recording")
    print(f"{head[0]:34s} {head[1]:>4s} {head[2]:>8s} {head[3]:>14s} {head[4]:>14s} {head[5]:>10s}")
    for label, T, steps, rate, share in rows:
        recording = "" if share is None else f"{100 * share:9.0f}%"
        print(
            f"{label:34s} {T:4d} {steps:8d} {rate:14.3e} {rate / base_rate:13.1f}x {recording:>10s}"
        )


if __name__ == "__main__":
    main()
