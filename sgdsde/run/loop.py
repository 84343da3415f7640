"""Pieces of a run shared by every simulator around the driver (``sgdsde.run.driver``):
the checks of the arguments every simulator takes, the save grid, the initial
parameters, the chunk size of the random draws, the resolved config and the assembly of
the one ``xarray.Dataset`` layout (``sgdsde.run.dataset``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from sgdsde.models.base import Model, as_params
from sgdsde.run.checks import check_bounds, check_model_data, check_n_steps, check_seed
from sgdsde.run.dataset import make_dataset
from sgdsde.run.grids import as_grid, eval_grid
from sgdsde.run.provenance import data_config
from sgdsde.run.recording import Recorder

# Per-block random draws are kept below this many entries per array (~32 MB in float64).
BLOCK_ENTRIES = 1 << 22
MAX_BLOCK_STEPS = 4096


def check_run_arguments(
    model: Any,
    data: Any,
    *,
    n_steps: Any,
    seed: Any,
    max_loss: Any,
    l0_threshold: Any,
    torch_model_ok: bool = False,
    free_ok: bool = False,
) -> int:
    """The checks every simulator makes before any work; returns n_steps as an int.
    ``torch_model_ok``: the simulator can run a ``TorchModel`` without numba kernels.
    ``free_ok``: model and data may both be None (a free SDE, ``sgdsde.sde.terms``)."""
    if free_ok and (model is None or data is None):
        if (model is None) != (data is None):
            raise ValueError(
                "model and data go together: give both, or neither for a free SDE "
                f"(got model={type(model).__name__}, data={type(data).__name__})"
            )
    else:
        check_model_data(model, data, torch_model_ok=torch_model_ok)
    check_seed(seed)
    check_bounds(max_loss, l0_threshold)
    return check_n_steps(n_steps)


def save_grid(save_steps: Any, n_steps: int) -> np.ndarray:
    """The steps to save: ``eval_grid(n_steps)`` by default (steps 0-99, then 250 evenly
    spaced points, as the paper's notebooks), else the validated ``save_steps``."""
    return eval_grid(n_steps) if save_steps is None else as_grid(save_steps, n_steps)


def run_names_coord(run_names: Any) -> dict[str, np.ndarray]:
    """The ``run`` coordinate (one name per trajectory), when the trajectories are named."""
    return {} if run_names is None else {"run": np.array([str(r) for r in run_names], dtype=object)}


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
    """The resolved-config entries every run records (the simulator adds its own);
    model and data are None for a free SDE."""
    return {
        "kind": kind,
        "model": None if model is None else model.to_config(),
        "data": None if data is None else data_config(data),
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
    given parameters (one row broadcast to every trajectory, or one row each). Without a
    model (a free SDE) theta0 is required and gives p."""
    if theta0 is None:
        if model is None:
            raise ValueError(
                "theta0 is required for a free SDE (model None): pass the initial state, "
                "(p,) shared by every trajectory or (T, p)"
            )
        return np.ascontiguousarray(model.init(init_streams), dtype=np.float64)
    theta = as_params(theta0, np.shape(theta0)[-1] if model is None else model.n_params)
    if theta.shape[0] not in (1, n_traj):
        raise ValueError(f"theta0 has {theta.shape[0]} rows but there are {n_traj} trajectories")
    theta = np.repeat(theta, n_traj, axis=0) if theta.shape[0] == 1 else theta.copy()
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta0 contains NaN or inf")
    return theta


def block_steps(n_traj: int, width: int) -> int:
    """Steps per chunk of random draws so that a chunk's (T, S, width) arrays stay below
    ``BLOCK_ENTRIES`` entries. Steppers draw on the fixed grid of multiples of it."""
    return int(np.clip(BLOCK_ENTRIES // (n_traj * max(width, 1)), 1, MAX_BLOCK_STEPS))


def chunk_segments(k0: int, k1: int, chunk_steps: int):
    """Split the steps k0 .. k1-1 at multiples of ``chunk_steps``.

    Yields (c0, a, b): the chunk starting at step c0 and the part a .. b-1 of it to run.
    Steppers draw their random numbers one whole chunk at a time on this fixed grid, so
    the numbers do not depend on how ``advance`` calls split the run (the save grid).
    """
    k = k0
    while k < k1:
        c0 = (k // chunk_steps) * chunk_steps
        b = min(c0 + chunk_steps, k1)
        yield c0, k, b
        k = b


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
