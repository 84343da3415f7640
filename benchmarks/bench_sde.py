"""Benchmark the SDE integrators (Euler-Maruyama) against the machine's ceilings.

Problems (label-noise SDE, dt = eta = 0.01, delta = 0.1, B = n, i.e. label-noise GD):

* ``dln``  diagonal linear network beta = u * v, n = 50, d = 100 (p = 200),
  X ~ N(0, 1), y = X w*, w* = five ones, u0 = v0 = 0.1 (sde-tooling.md, Sec. 2.2);
* ``relu`` two-layer ReLU network, n = 50, d = 10, m = 10 hidden units, no bias
  (p = 110): 4 n d m = 20,000 flops per trajectory-step, the same as the DLN's 4 n d.

Implementations: the package's solvers (``euler_gemm``: two torch GEMMs and fused
numba passes drawing xoshiro normals; ``euler_numba``; ``euler_torch`` on the
CPU with numpy increments, bit-compatible with numba, with xoshiro increments and with
torch increments; ``torchsde`` euler through the adapter) and a plain vectorised numpy
EM loop written here, the baseline: two GEMMs per step with the noise fused into the
residual, z = (h r + s xi) / n, g = z X (DLN), or the same on the flattened (T m, .)
hidden layer (ReLU).

Ceilings, measured in the same run: GEMM rate (square GEMM, the faster of numpy and
torch, f64 and f32) and normal-draw rate, the fastest of numpy's
``Generator.standard_normal(out=)``, torch's ``randn(out=)`` and the package's xoshiro
streams (``sgdsde.xoshiro``, parallel). The ceiling per batch-step is
flops / GEMM rate + n T / draw rate. Warm-up (JIT compilation) is untimed; each number
is the median of 3 timed runs, taken round robin over the implementations.

    python benchmarks/bench_sde.py --quick          # smoke run, seconds
    python benchmarks/bench_sde.py                  # T = 1000, 10,000 steps (minutes)
    python benchmarks/bench_sde.py --steps 2000 --traj 500 --only dln
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_sgd import timed  # the scripts' directory is on sys.path

DT, DELTA, LR = 0.01, 0.1, 0.01
N, D_DLN, D_RELU, M_RELU = 50, 100, 10, 10


# ------------------------------------------------------------------------- ceilings
def _median_seconds(fn, repeats: int) -> float:
    """Median of ``repeats`` timed calls after one untimed warm-up call."""
    fn()
    return timed(fn, repeats)


def gemm_rates(dtype, size: int = 2000, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of a square GEMM in numpy and in torch (median of ``repeats``)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((size, size)).astype(dtype)
    B = rng.standard_normal((size, size)).astype(dtype)
    C = np.empty_like(A)
    tA, tB, tC = (torch.from_numpy(x) for x in (A, B, C))
    flops = 2.0 * size**3 / 1e9
    return {
        "numpy": flops / _median_seconds(lambda: np.matmul(A, B, out=C), repeats),
        "torch": flops / _median_seconds(lambda: torch.mm(tA, tB, out=tC), repeats),
    }


def normal_rates(dtype, size: int = 10_000_000, repeats: int = 3) -> dict[str, float]:
    """Standard normals per second: numpy's Generator (PCG64, ziggurat, one thread),
    torch's ``randn`` and the package's xoshiro streams (1000 streams, parallel)."""
    from sgdsde.xoshiro import XoshiroNormals

    rng = np.random.default_rng(0)
    out = np.empty(size, dtype=dtype)
    tout = torch.from_numpy(out)
    gen = torch.Generator().manual_seed(0)
    streams = XoshiroNormals.from_seed(0, 1000)
    block = out.reshape(1000, -1)
    return {
        "numpy": size / _median_seconds(lambda: rng.standard_normal(out=out, dtype=dtype), repeats),
        "torch": size
        / _median_seconds(lambda: torch.randn(size, generator=gen, out=tout), repeats),
        "xoshiro": size / _median_seconds(lambda: streams.draw(block), repeats),
    }


# -------------------------------------------------------------------------- problems
@dataclasses.dataclass
class Bench:
    name: str
    model: object
    data: object
    theta0: np.ndarray  # (T, p)
    flops: float  # per trajectory-step (the two GEMMs)


def make_bench(kind: str, T: int) -> Bench:
    from sgdsde.data import RegressionData
    from sgdsde.models import DiagonalLinearNet, TwoLayerReLU

    rng = np.random.default_rng(2023)
    if kind == "dln":
        X = rng.standard_normal((N, D_DLN))
        w_star = np.zeros(D_DLN)
        w_star[:5] = 1.0
        data = RegressionData(X, X @ w_star, X[:5], X[:5] @ w_star)
        model = DiagonalLinearNet(d=D_DLN, parametrization="uv", alpha=0.1)
        theta0 = np.full((T, 2 * D_DLN), 0.1)
        return Bench("DLN", model, data, theta0, 4.0 * N * D_DLN)
    X = rng.standard_normal((N, D_RELU))
    w_star = np.zeros(D_RELU)
    w_star[:3] = 1.0
    y = np.maximum(X @ w_star, 0.0)
    data = RegressionData(X, y, X[:5], y[:5])
    model = TwoLayerReLU(d=D_RELU, m=M_RELU, scales=(1 / np.sqrt(D_RELU), 1.0, 1 / np.sqrt(M_RELU)))
    theta0 = np.tile(model.init([np.random.default_rng(1)])[0], (T, 1))
    return Bench("ReLU", model, data, theta0, 4.0 * N * D_RELU * M_RELU)


# ---------------------------------------------------------------- numpy baseline EM
def numpy_em(bench: Bench, dtype, steps: int, seed: int = 0) -> np.ndarray:
    """Vectorised numpy EM of the label-noise SDE: 2 GEMMs + n normals per step."""
    X = bench.data.X.astype(dtype)
    y = bench.data.y.astype(dtype)
    rng = np.random.default_rng(seed)
    h = dtype(DT)
    s = dtype(np.sqrt(DT) * np.sqrt(LR * DELTA))  # a sqrt(dt) n, a = sqrt(eta delta / n^2)
    inv_n = dtype(1.0 / N)
    theta = bench.theta0.astype(dtype).copy()
    T = theta.shape[0]
    xi = np.empty((T, N), dtype=dtype)
    if bench.name == "DLN":
        d = X.shape[1]
        U, V = theta[:, :d], theta[:, d:]
        beta = np.empty_like(U)
        r = np.empty((T, N), dtype=dtype)
        g = np.empty_like(U)
        tmp = np.empty_like(U)
        XT = np.ascontiguousarray(X.T)
        for _ in range(steps):
            np.multiply(U, V, out=beta)
            np.matmul(beta, XT, out=r)
            r -= y
            rng.standard_normal(out=xi, dtype=dtype)
            r *= h
            xi *= s
            r += xi
            r *= inv_n  # z
            np.matmul(r, X, out=g)
            np.multiply(V, g, out=tmp)
            np.multiply(U, g, out=g)
            U -= tmp
            V -= g
        return theta
    m, d = M_RELU, X.shape[1]
    W = theta[:, : m * d].reshape(T * m, d)  # a copy: theta's rows are not contiguous
    a = theta[:, m * d :].copy()
    XT = np.ascontiguousarray(X.T)
    for _ in range(steps):
        Z = (W @ XT).reshape(T, m, N)  # GEMM 1: (T m, d) (d, n)
        Hid = np.maximum(Z, 0)
        f = np.einsum("tmn,tm->tn", Hid, a)
        rng.standard_normal(out=xi, dtype=dtype)
        z = (h * (f - y) + s * xi) * inv_n
        grad_a = np.einsum("tmn,tn->tm", Hid, z)
        Gz = (Z > 0) * a[:, :, None] * z[:, None, :]
        W -= Gz.reshape(T * m, N) @ X  # GEMM 2: (T m, n) (n, d)
        a -= grad_a
    theta[:, : m * d] = W.reshape(T, m * d)
    theta[:, m * d :] = a
    return theta


# ------------------------------------------------------------------ package solvers
def solver_runner(bench: Bench, solver, device: str = "cpu") -> Callable[[int], np.ndarray]:
    from sgdsde.random import trajectory_streams
    from sgdsde.sde.noise import LabelNoise
    from sgdsde.sde.solvers.base import SDEProblem

    T = bench.theta0.shape[0]
    coeffs = LabelNoise(DELTA, LR, N).coefficients(N, T)

    def run(steps: int) -> np.ndarray:
        pb = SDEProblem(bench.model, bench.data, coeffs, DT, n_steps=steps)
        state = solver.init(pb, bench.theta0, trajectory_streams(0, T), device)
        div = np.full(T, -1, dtype=np.int64)
        solver.advance(state, 0, steps, div)
        if device != "cpu":
            torch.cuda.synchronize()
        return solver.params(state)

    return run


def implementations(bench: Bench, dtypes: list[str]):
    """(label, dtype, run(steps) -> params) for everything available."""
    out = []
    for dt in dtypes:
        npdt = np.float64 if dt == "float64" else np.float32
        out.append(("numpy EM (baseline)", dt, lambda s, npdt=npdt: numpy_em(bench, npdt, s)))
    try:
        from sgdsde.sde import solvers as S
    except ImportError as err:  # solvers not there yet
        print(f"# package solvers unavailable: {err}", file=sys.stderr)
        S = None
    if S is not None and bench.model.gemm_kernels is not None:
        for dt in dtypes:
            out.append(("euler_gemm", dt, solver_runner(bench, S.EulerMaruyamaGEMM(dtype=dt))))
    if S is not None and hasattr(S, "EulerMaruyamaNumba"):
        for dt in dtypes:
            out.append(("euler_numba", dt, solver_runner(bench, S.EulerMaruyamaNumba(dtype=dt))))
    if S is not None and hasattr(S, "EulerMaruyamaTorch"):
        for dt in dtypes:
            for inc in ("numpy", "xoshiro", "torch"):
                solver = S.EulerMaruyamaTorch(dtype=dt, increments=inc)
                out.append((f"euler_torch cpu ({inc} incr.)", dt, solver_runner(bench, solver)))
    from sgdsde.sde.solvers.torchsde_adapter import TorchsdeSolver

    for dt in dtypes:
        out.append(("torchsde euler", dt, solver_runner(bench, TorchsdeSolver("euler", dt))))
    return out


def time_round_robin(impls, steps: int, warmup_steps: int, repeats: int):
    """Median seconds per implementation, timing them in turn ``repeats`` times.

    Round robin rather than back to back: on a shared VM the machine's speed drifts
    (2x within minutes here), and interleaving spreads the drift over every
    implementation instead of favouring whichever ran in a quiet spell."""
    for _, _, run in impls:
        run(warmup_steps)  # JIT compilation, caches, thread pools: untimed
    times = [[] for _ in impls]
    results = [None] * len(impls)
    for rep in range(repeats):
        for i, (label, dt, run) in enumerate(impls):
            # Let the previous implementation's OpenMP workers (numba, torch, BLAS)
            # stop spin-waiting first: on few cores they would steal this one's CPU.
            time.sleep(0.5)
            t0 = time.perf_counter()
            results[i] = run(steps)
            times[i].append(time.perf_counter() - t0)
            print(f"#   {rep + 1}/{repeats} {label} {dt}: {times[i][-1]:.2f} s", file=sys.stderr)
    return [statistics.median(t) for t in times], results


# --------------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 200 trajectories, 200 steps")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 10,000)")
    p.add_argument("--traj", type=int, default=None, help="trajectories T (default 1000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=["dln", "relu"], default=None)
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--no-gpu", action="store_true")
    args = p.parse_args(argv)
    steps = args.steps or (200 if args.quick else 10_000)
    T = args.traj or (200 if args.quick else 1000)
    dtypes = args.dtypes.split(",")
    warmup = min(steps, 20)

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
    )
    gemm_all = {dt: gemm_rates(np.dtype(dt).type, 1000 if args.quick else 2000) for dt in dtypes}
    draws_all = {dt: normal_rates(np.dtype(dt).type) for dt in dtypes}
    gemm = {dt: max(rates.values()) for dt, rates in gemm_all.items()}
    draws = {dt: max(rates.values()) for dt, rates in draws_all.items()}
    for dt in dtypes:
        g = ", ".join(f"{k} {v:.1f}" for k, v in gemm_all[dt].items())
        r = ", ".join(f"{k} {v:.3g}" for k, v in draws_all[dt].items())
        print(f"# ceiling inputs {dt}: GEMM GFLOP/s {g}; normals/s {r} (the ceiling uses the best)")
    print(f"# T = {T} trajectories, {steps} steps, dt = {DT}, median of {args.repeats}")

    kinds = [args.only] if args.only else ["dln", "relu"]
    header = (
        f"{'problem':8} {'implementation':32} {'dtype':8} {'batch-st/s':>11} "
        f"{'traj-st/s':>10} {'GFLOP/s':>8} {'%ceil':>6} {'vs torchsde':>11} {'mean loss':>10}"
    )
    for kind in kinds:
        bench = make_bench(kind, T)
        ceiling = {
            dt: 1.0 / (bench.flops * T / (gemm[dt] * 1e9) + N * T / draws[dt]) for dt in dtypes
        }
        impls = implementations(bench, dtypes)
        seconds, thetas = time_round_robin(impls, steps, warmup, args.repeats)
        rows = []
        for (label, dt, _), sec, theta in zip(impls, seconds, thetas, strict=True):
            theta = np.asarray(theta, np.float64)
            loss = float(np.mean(bench.model.loss(theta, bench.data.X, bench.data.y)))
            rows.append((label, dt, steps / sec, loss))
        ref = {dt: r[2] for r in rows for dt in [r[1]] if r[0] == "torchsde euler"}
        print(
            f"\n## {bench.name}: n = {N}, p = {bench.model.n_params}, "
            f"{bench.flops:.0f} flops/traj-step; ceiling (batch-steps/s) "
            + ", ".join(f"{dt} {ceiling[dt]:.0f}" for dt in dtypes)
        )
        print(header)
        for label, dt, bps, loss in rows:
            gf = bps * T * bench.flops / 1e9
            ratio = bps / ref[dt] if dt in ref else float("nan")
            print(
                f"{bench.name:8} {label:32} {dt:8} {bps:11.1f} {bps * T:10.3g} {gf:8.2f} "
                f"{100 * bps / ceiling[dt]:5.0f}% {ratio:10.2f}x {loss:10.3e}"
            )

    if torch.cuda.is_available() and not args.no_gpu:
        from sgdsde.sde.solvers import EulerMaruyamaTorch

        Tg = 10_000
        bench = make_bench("dln", Tg)
        run = solver_runner(bench, EulerMaruyamaTorch("float32", increments="torch"), "cuda")
        (sec,), _ = time_round_robin([("euler_torch cuda", "float32", run)], steps, warmup, 3)
        print(
            f"\n## GPU ({torch.cuda.get_device_name()}): DLN, euler_torch float32 torch incr., "
            f"T = {Tg}: {steps / sec:.0f} batch-steps/s ({steps / sec * Tg:.3g} traj-steps/s)"
        )


if __name__ == "__main__":
    main()
