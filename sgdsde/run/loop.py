"""The run loop shared by exact SGD (``simulate_sgd``) and SDE integration (``simulate_sde``).

Both walk the steps ``0 .. save[-1]`` in blocks (bounded memory for the random numbers
a block needs), advance the state to every save point inside a block, record the
metrics there, and finally assemble one ``xarray.Dataset`` of the shared layout
(``sgdsde.run.dataset``). What differs (what a block draws, how the state
advances, how time is counted) is passed in as callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.models.base import Model, as_params
from sgdsde.run.dataset import make_dataset
from sgdsde.run.recording import Recorder

# Per-block random draws are kept below this many entries per array (~32 MB in float64).
BLOCK_ENTRIES = 1 << 22
MAX_BLOCK_STEPS = 4096


def start_recording(
    model: Model,
    data: Any,
    save: np.ndarray,
    n_traj: int,
    *,
    metrics: Any = (),
    l0_threshold: float,
    max_loss: float,
    save_params: bool,
) -> tuple[Recorder, np.ndarray, np.ndarray]:
    """(recorder, diverged_step (T,) all -1, times (T, n_save) zeros) for a new run."""
    recorder = Recorder(
        model,
        data,
        save,
        n_traj,
        metrics=metrics,
        l0_threshold=l0_threshold,
        max_loss=max_loss,
        save_params=save_params,
    )
    return recorder, np.full(n_traj, -1, dtype=np.int64), np.zeros((n_traj, len(save)))


def base_config(
    kind: str,
    model: Model,
    data: Any,
    *,
    n_steps: int,
    n_traj: int,
    device: str,
    l0_threshold: float,
    max_loss: float,
    theta0: Any,
) -> dict[str, Any]:
    """The resolved-config entries every run records (the simulator adds its own)."""
    return {
        "kind": kind,
        "model": model.to_config(),
        "data": data.config,
        "n_steps": int(n_steps),
        "n_traj": int(n_traj),
        "device": str(device),
        "l0_threshold": float(l0_threshold),
        "max_loss": float(max_loss),
        "theta0": "model.init" if theta0 is None else "given",
    }


def initial_params(
    model: Model, theta0: Any, n_traj: int, init_streams: list[np.random.Generator]
) -> np.ndarray:
    """theta0 as a fresh (T, p) array: the model's init from the "init" streams, or the
    given parameters (one row broadcast to every trajectory, or one row each)."""
    if theta0 is None:
        return np.ascontiguousarray(model.init(init_streams), dtype=np.float64)
    theta = as_params(theta0, model.n_params)
    if theta.shape[0] not in (1, n_traj):
        raise ValueError(f"theta0 has {theta.shape[0]} rows but there are {n_traj} trajectories")
    theta = np.repeat(theta, n_traj, axis=0) if theta.shape[0] == 1 else theta.copy()
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta0 contains NaN or inf")
    return theta


def block_steps(n_traj: int, width: int) -> int:
    """Steps per block so that a block's (T, S, width) draws stay below ``BLOCK_ENTRIES``."""
    return int(np.clip(BLOCK_ENTRIES // (n_traj * max(width, 1)), 1, MAX_BLOCK_STEPS))


def walk_save_points(
    save: np.ndarray,
    steps_per_block: int,
    advance: Callable[[int, int], None],
    record: Callable[[int, int], None],
    *,
    begin_block: Callable[[int, int], None] | None = None,
    progress: bool = False,
    desc: str = "",
) -> None:
    """Run steps 0 .. save[-1] block by block, recording at every save point.

    ``begin_block(k0, k1)`` prepares the block of steps k0 .. k1-1 (draws its random
    numbers); ``advance(ka, kb)`` runs steps ka .. kb-1 (absolute indices, always inside
    the current block, possibly empty); ``record(j, k)`` records save point j, which is
    step k = save[j], once the state holds theta_k.
    """
    last = int(save[-1])
    j = 0
    if save[0] == 0:
        record(0, 0)
        j = 1
    blocks = range(0, last, steps_per_block)
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc=desc, unit="block")
    for k0 in blocks:
        k1 = min(k0 + steps_per_block, last)
        if begin_block is not None:
            begin_block(k0, k1)
        k = k0
        while j < len(save) and save[j] <= k1:
            stop = int(save[j])
            advance(k, stop)
            record(j, stop)
            k, j = stop, j + 1
        advance(k, k1)


def finish_dataset(
    recorder: Recorder,
    save: np.ndarray,
    times: np.ndarray,
    diverged_step: np.ndarray,
    traj_coords: dict[str, np.ndarray],
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Recorded metrics + divergence flags -> the run's Dataset (shared layout)."""
    variables = recorder.variables()
    variables["diverged"] = (("traj",), diverged_step >= 0)
    variables["diverged_step"] = (("traj",), diverged_step)
    ds = make_dataset(save, times, variables, traj_coords, attrs)
    for name, extra in recorder.variable_attrs().items():
        ds[name].attrs.update(extra)
    return ds
