"""Exact minibatch SGD, GD and label-noise SGD for many trajectories in one call.

    theta_{k+1} = theta_k - eta_k (1/B) sum_{i in S_k} (r_i + xi_i) grad_theta f(x_i),

r_i = f_theta(x_i) - y_i, S_k uniform without replacement (option: with), xi_i ~
N(0, delta) label noise of *variance* delta (DESIGN.md). B = n without replacement
is GD. Each trajectory may have its own schedule eta_k, batch size B, delta and
seed stream; SDE time t_k = sum_{j<k} eta_j is saved beside every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.data import RegressionData
from sgdsde.dynamics.engines import ENGINES, Block
from sgdsde.dynamics.schedules import Schedule, as_schedule
from sgdsde.models.base import Model
from sgdsde.random import trajectory_streams, uniform_indices, without_replacement
from sgdsde.run.checks import (
    agree_n_traj,
    check_bounds,
    check_model_data,
    check_n_steps,
    shared_traj_sizes,
)
from sgdsde.run.grids import as_grid, eval_grid
from sgdsde.run.loop import (
    base_config,
    block_steps,
    finish_dataset,
    initial_params,
    start_recording,
    walk_save_points,
)
from sgdsde.run.provenance import run_attrs


@dataclasses.dataclass(frozen=True)
class SGD:
    """Minibatch SGD with optional Gaussian label noise.

    batch_size: B per trajectory (int or sequence); None means the full batch (GD).
    label_noise: delta, the *variance* of the noise added to each sampled label.
    with_replacement: draw S_k with replacement (default: without).
    """

    batch_size: int | Sequence[int] | None = 1
    label_noise: float | Sequence[float] = 0.0
    with_replacement: bool = False

    def to_config(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self)
        for key, value in cfg.items():
            if isinstance(value, tuple | np.ndarray):
                cfg[key] = list(np.asarray(value).tolist())
        return cfg


def GD(label_noise: float | Sequence[float] = 0.0) -> SGD:
    """Full-batch gradient descent (with optional label noise): SGD with B = n."""
    return SGD(batch_size=None, label_noise=label_noise)


def _per_traj(name: str, value: Any, n_traj: int | None) -> list | None:
    """A per-trajectory list from a scalar or a sequence; None when scalar and T unknown."""
    if isinstance(value, str | dict | Schedule) or np.isscalar(value) or value is None:
        return None if n_traj is None else [value] * n_traj
    values = list(value)
    if n_traj is not None and len(values) != n_traj:
        raise ValueError(f"{name} has {len(values)} entries but there are {n_traj} trajectories")
    return values


def simulate_sgd(
    model: Model,
    data: RegressionData,
    schedule: Any,
    n_steps: int,
    *,
    sgd: SGD = SGD(),
    n_traj: int | None = None,
    seed: Any = 0,
    theta0: np.ndarray | None = None,
    save_steps: Any = None,
    save_params: bool = False,
    metrics: Sequence[Any] = (),
    l0_threshold: float = 1e-50,
    max_loss: float = 1e10,
    engine: str = "numba",
    device: str = "cpu",
    run_names: Sequence[str] | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Run T trajectories of (label-noise) SGD and return their metrics as a Dataset.

    schedule: a step size, a ``Schedule`` or its config dict, or a sequence of them
        (one per trajectory).
    save_steps: steps at which metrics are recorded (default ``eval_grid(n_steps)``:
        steps 0-99, then 250 evenly spaced points, as the paper's notebooks).
    save_params: also record the parameters theta at every save step (T x S x p).
    metrics: extra metric objects recorded during the run (``sgdsde.metrics``:
        ``Metric(name, fn)``, ``TimeAverage``, ``FirstPassage``, a registered name or
        config dict, or a ``(name, fn)`` pair with fn(theta, model, data)).
    l0_threshold: |beta_i| counted in l0_norm above it (paper: 1e-50).
    max_loss: a trajectory with a sampled r_i^2/2 or training loss above it (or
        non-finite) is frozen and marked diverged; the others go on.
    engine: "numba" (default), "numpy" (reference) or "torch" (``device`` cpu/cuda).
    """
    # ---------------------------------------------------------------- validation
    check_model_data(model, data)
    check_n_steps(n_steps)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {sorted(ENGINES)}")
    check_bounds(max_loss, l0_threshold)
    sizes = shared_traj_sizes(theta0, run_names, seed)
    for name, value in (
        ("schedule", schedule),
        ("batch_size", sgd.batch_size),
        ("label_noise", sgd.label_noise),
    ):
        per_traj = _per_traj(name, value, None)
        if per_traj is not None:
            sizes[name] = len(per_traj)
    T = agree_n_traj(n_traj, sizes)
    schedules = [as_schedule(s) for s in _per_traj("schedule", schedule, T)]
    n = data.n
    batch = np.array(
        [n if b is None else b for b in _per_traj("batch_size", sgd.batch_size, T)], dtype=object
    )
    for b in batch:
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or not 1 <= b <= n:
            raise ValueError(
                f"batch_size must be an integer in [1, n = {n}] (got {b!r}); "
                "use batch_size=None for full-batch GD"
            )
    batch = batch.astype(np.int64)
    delta = np.array(_per_traj("label_noise", sgd.label_noise, T), dtype=np.float64)
    if not np.all(np.isfinite(delta)) or np.any(delta < 0):
        raise ValueError(f"label_noise (a variance delta) must be finite and >= 0 (got {delta})")
    full = (batch == n) & (not sgd.with_replacement)
    if run_names is not None:
        run_names = [str(r) for r in run_names]
    save = eval_grid(n_steps) if save_steps is None else as_grid(save_steps, n_steps)

    # ------------------------------------------------------------ randomness, init
    streams = trajectory_streams(seed, T)
    theta = initial_params(model, theta0, T, streams["init"])

    eng = ENGINES[engine](model, data, theta, batch, full, np.sqrt(delta), max_loss, device)
    recorder, diverged_step, times = start_recording(
        model,
        data,
        save,
        T,
        metrics=metrics,
        l0_threshold=l0_threshold,
        max_loss=max_loss,
        save_params=save_params,
    )
    elapsed = np.zeros(T)

    # ------------------------------------------------------------------- the loop
    sampled_width = int(max([b for b, f in zip(batch, full, strict=True) if not f], default=0))
    noise_width = int(max([b for b, d in zip(batch, delta, strict=True) if d > 0], default=0))
    width = max(sampled_width, noise_width, 1)
    current: dict[str, Any] = {}

    def begin_block(k0: int, k1: int) -> None:
        block = _draw_block(k0, k1, n_steps, schedules, batch, full, delta, sgd, streams, n)
        current["block"] = block
        current["time"] = np.concatenate([np.zeros((T, 1)), np.cumsum(block.lrs, axis=1)], axis=1)
        current["elapsed"] = elapsed.copy()

    def advance(ka: int, kb: int) -> None:
        block = current["block"]
        eng.run(block, ka - block.k0, kb - block.k0, diverged_step)
        if kb == block.k0 + block.lrs.shape[1]:
            elapsed[:] = current["elapsed"] + current["time"][:, -1]

    def record(i: int, k: int) -> None:
        j = int(np.searchsorted(save, k))
        if k > 0 and j < len(save) and save[j] == k:
            block = current["block"]
            times[:, j] = current["elapsed"] + current["time"][:, k - block.k0]
        recorder.observe(k, eng.params(), diverged_step)

    walk_save_points(
        recorder.steps,
        block_steps(T, width),
        advance,
        record,
        begin_block=begin_block,
        progress=progress,
        desc=f"SGD ({engine})",
    )

    # ------------------------------------------------------------------ output
    config = base_config(
        "sgd",
        model,
        data,
        n_steps=n_steps,
        n_traj=T,
        device=device,
        l0_threshold=l0_threshold,
        max_loss=max_loss,
        theta0=theta0,
    )
    config |= {
        "sgd": {
            "batch_size": batch.tolist(),
            "label_noise": delta.tolist(),
            "with_replacement": bool(sgd.with_replacement),
        },
        "schedules": [s.to_config() for s in schedules],
        "engine": engine,
    }
    if recorder.config():
        config["metrics"] = recorder.config()
    attrs = run_attrs(f"{model.name} trained by SGD", config, seed, engine=engine)
    traj_coords = {
        "lr": np.array([s.peak(n_steps) for s in schedules]),
        "batch_size": batch,
        "label_noise": delta,
    }
    if run_names is not None:
        traj_coords["run"] = np.array(run_names, dtype=object)
    ds = finish_dataset(recorder, save, times, diverged_step, traj_coords, attrs)
    ds["lr"].attrs["long_name"] = "peak step size max_k eta_k"
    return ds


def _draw_block(k0, k1, n_steps, schedules, batch, full, delta, sgd, streams, n) -> Block:
    """Indices, label-noise normals and step sizes for steps k0..k1-1 of every trajectory."""
    T, S = len(schedules), k1 - k0
    sampled = [b for b, f in zip(batch, full, strict=True) if not f]
    noisy = [b for b, d in zip(batch, delta, strict=True) if d > 0]
    idx = np.zeros((T, S, max(sampled, default=0)), dtype=np.int64)
    normals = np.zeros((T, S, max(noisy, default=0)))
    steps = np.arange(k0, k1)
    lrs = np.empty((T, S))
    for t in range(T):
        B = int(batch[t])
        if not full[t]:
            rng = streams["batch"][t]
            if sgd.with_replacement or B == 1:
                idx[t, :, :B] = uniform_indices(rng, n, (S, B))
            else:
                idx[t, :, :B] = without_replacement(rng, n, B, S)
        if delta[t] > 0:
            normals[t, :, :B] = streams["label_noise"][t].standard_normal((S, B))
        lrs[t] = schedules[t](steps, n_steps)
    return Block(k0, idx, normals, lrs)
