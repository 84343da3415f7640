"""Cost of the validation simulators against SGD on a deep network (issue 9, Sec. 6).

For each device (the CPU always; CUDA when ``torch.cuda.is_available()``) one network
and data set (CPU: an MLP on digits-sized teacher images; CUDA: the plain ResNet-18 on
CIFAR-shaped teacher images) is run, without evaluations between the first and last
step, by ``train_sgd`` (the baseline, timed in the same run), the label-noise SDE (a),
the SGD-covariance SDE (b) and SVAG(l) for l = 1, 2, 4, all at dt = eta (substeps 1)
so that one SGD step and one simulator step cover the same time, and SVAG(l) takes l
steps per unit eta. A full-batch GD step on the same network (forward, one backward
over the training set, chunked as the SDEs) is timed too: simulator (a)'s goal is at
most one full-batch gradient plus one VJP per step, i.e. about one GD step (its drift
and noise share the VJP).

Columns: steps/s of the method's own steps; the cost of one unit of SDE time relative
to SGD's (= (SGD steps/s) / (method steps/s) x (method steps per SGD step)); for the
SDEs, the cost of one step relative to a full-batch GD step; the goal beside it. On
CUDA the step loops copy nothing to the host between evaluations (generators on the
device; the divergence check reads the step losses at evaluations only), and every
timing ends with ``torch.cuda.synchronize()``.

Each method is timed at 1 and at N + 1 steps; its rate is N over the time difference, so
the setup and the evaluations at the first and last step cancel.

    python benchmarks/bench_validation.py            # default sizes (a few minutes)
    python benchmarks/bench_validation.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from sgdsde.validation import (
    MLP,
    EvaluationOptions,
    ResNet18,
    simulate_label_noise_sde,
    simulate_sgd_covariance_sde,
    simulate_svag,
    teacher_images,
    train_sgd,
)

ETA = 0.02
SVAG_LS = (1, 2, 4)


def problem(device: str, quick: bool):
    """(network, data, batch size, chunk size, label) of the device's benchmark."""
    if device == "cpu":
        n = 256 if quick else 1024
        data = teacher_images(n=n, n_test=64, input_shape=(1, 8, 8), n_classes=10, seed=0)
        network = MLP((1, 8, 8), (256, 256), n_outputs=10, seed=1)
        return network, data, 32, n, f"MLP 64-256-256-10, n={n}"
    n = 512 if quick else 2048
    data = teacher_images(n=n, n_test=128, input_shape=(3, 32, 32), n_classes=10, seed=0)
    network = ResNet18((3, 32, 32), width=16 if quick else 64, n_outputs=10, seed=1)
    return network, data, 128, 512, f"ResNet-18 (plain, width {network_width(network)}), n={n}"


def network_width(network) -> int:
    """The channels of a ResNet-18's first convolution."""
    return next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d)).out_channels


def timed(fn, device: str, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (CUDA: synchronized)."""
    times = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gd_steps(network, data, n_steps: int, chunk: int, device: str) -> None:
    """Full-batch GD on the square loss, chunked: the drift of the SDEs alone."""
    net = copy.deepcopy(network).to(device)
    X = torch.from_numpy(data.X).to(device)
    Y = torch.nn.functional.one_hot(torch.from_numpy(data.y), data.n_classes).to(device)
    for _ in range(n_steps):
        net.zero_grad(set_to_none=True)
        for start in range(0, data.n, chunk):
            part = slice(start, start + chunk)
            (0.5 * ((net(X[part]) - Y[part]) ** 2).sum() / data.n).backward()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(p.grad, alpha=-ETA)


def method_runs(network, data, batch: int, chunk: int, device: str) -> dict:
    """{name: (method steps per SGD step, run(n_sgd_steps))} of every timed method."""
    # no evaluation between the first and the last step; no feature or collapse metrics
    quiet = EvaluationOptions(eval_every=10**9, features=False, collapse=False)
    common = dict(schedule=ETA, batch_size=batch, device=device, evaluation=quiet)
    runs = {
        "SGD (train_sgd)": (
            1,
            lambda n: train_sgd(network, data, n_steps=n, loss="square", **common),
        ),
        "full-batch GD step (torch loop)": (1, lambda n: gd_steps(network, data, n, chunk, device)),
        "(a) label-noise SDE": (
            1,
            lambda n: simulate_label_noise_sde(
                network, data, n_steps=n, delta=0.01, chunk_size=chunk, **common
            ),
        ),
        "(b) SGD-covariance SDE": (
            1,
            lambda n: simulate_sgd_covariance_sde(
                network, data, n_steps=n, loss="square", chunk_size=chunk, **common
            ),
        ),
    }
    for l in SVAG_LS:
        runs[f"(c) SVAG l={l}"] = (
            l,
            lambda n, l=l: simulate_svag(network, data, n_steps=n, l=l, loss="square", **common),
        )
    return runs


def rows_for(device: str, args) -> tuple[str, list[tuple]]:
    """The table rows of one device: each method timed at two run lengths, its rate the
    extra steps over the extra time (setup and the two evaluations cancel)."""
    network, data, batch, chunk, label = problem(device, args.quick)
    n_sgd = args.steps or (200 if args.quick else 800)
    n_full = max(2, n_sgd // 40)  # full-batch methods: a step costs ~n / B SGD steps
    rates = {}
    for name, (per_sgd_step, run) in method_runs(network, data, batch, chunk, device).items():
        n = n_full if name.startswith(("(a)", "(b)", "full")) else max(2, n_sgd // per_sgd_step)
        run(1)  # warm-up, untimed
        short = timed(lambda run=run: run(1), device, args.repeats)
        long = timed(lambda run=run, n=n: run(n + 1), device, args.repeats)
        rates[name] = (n * per_sgd_step, n * per_sgd_step / max(long - short, 1e-9))
    sgd_rate = rates["SGD (train_sgd)"][1]
    gd_rate = rates["full-batch GD step (torch loop)"][1]
    goals = {
        "(a) label-noise SDE": "<= ~1 GD step (1 gradient + 1 VJP)",
        "(b) SGD-covariance SDE": "~1 GD step",
        **{f"(c) SVAG l={l}": f"~{2 * l if l > 1 else 1}x SGD per unit time" for l in SVAG_LS},
    }
    rows = []
    for name, (steps, rate) in rates.items():
        per_sgd_step = 1 if not name.startswith("(c)") else int(name.rsplit("=", 1)[1])
        per_time = sgd_rate / rate * per_sgd_step
        per_gd = gd_rate / rate if name.startswith(("(a)", "(b)", "full")) else None
        rows.append((name, steps, rate, per_time, per_gd, goals.get(name, "")))
    return label, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--steps", type=int, default=None, help="SGD steps timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"validation simulators vs SGD, eta={ETA}, dt = eta; {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads; median of {args.repeats}"
    )
    if "cuda" not in devices:
        print("no CUDA device: CPU rows only")
    head = ("method", "steps", "steps/s", "time cost vs SGD", "step vs GD", "goal")
    for device in devices:
        label, rows = rows_for(device, args)
        print(f"\n[{device}] {label}")
        print(
            f"{head[0]:34s} {head[1]:>6s} {head[2]:>10s} {head[3]:>17s} {head[4]:>11s}  {head[5]}"
        )
        for name, steps, rate, per_time, per_gd, goal in rows:
            gd = "" if per_gd is None else f"{per_gd:10.2f}x"
            print(f"{name:34s} {steps:6d} {rate:10.1f} {per_time:16.2f}x {gd:>11s}  {goal}")


if __name__ == "__main__":
    main()
