"""Self-describing run outputs: an ``xarray.Dataset`` per run, saved atomically.

Layout shared by exact dynamics and SDE integrators: dims ``traj`` and ``step``;
coords ``step`` (updates done) and ``time`` (traj, step) = sum of step sizes so far
(the SDE time of DESIGN.md); per-trajectory settings as coords on ``traj``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "train_loss": {"long_name": "training loss 1/(2n) sum_i r_i^2", "units": "1"},
    "test_loss": {"long_name": "test loss 1/(2 n_test) sum_i r_i^2", "units": "1"},
    "l0_norm": {"long_name": "number of coordinates with |beta_i| > threshold", "units": "count"},
    "l1_norm": {"long_name": "l1 norm of beta", "units": "1"},
    "param_norm": {"long_name": "l2 norm of the parameters theta", "units": "1"},
    "params": {"long_name": "parameters theta", "units": "1"},
    "diverged": {"long_name": "trajectory diverged (then frozen)", "units": "1"},
    "diverged_step": {
        "long_name": "first step whose state was non-finite or over the loss bound (-1: never)",
        "units": "step",
    },
    "time": {"long_name": "SDE time t_k = sum_{j<k} eta_j", "units": "1"},
    "step": {"long_name": "number of updates done", "units": "step"},
    "lr": {"long_name": "step size eta", "units": "1"},
    "batch_size": {"long_name": "minibatch size B", "units": "examples"},
    "label_noise": {"long_name": "label-noise variance delta", "units": "1"},
}


def make_dataset(
    steps: np.ndarray,
    times: np.ndarray,
    variables: dict[str, tuple[tuple[str, ...], np.ndarray]],
    traj_coords: dict[str, np.ndarray],
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Assemble a run dataset; attrs values that are not str/number are JSON-encoded."""
    coords: dict[str, Any] = {
        "traj": np.arange(times.shape[0]),
        "step": np.asarray(steps, dtype=np.int64),
        "time": (("traj", "step"), times),
    }
    for key, values in traj_coords.items():
        coords[key] = ("traj", np.asarray(values))
    ds = xr.Dataset({k: v for k, v in variables.items()}, coords=coords)
    for name in list(ds.variables):
        if name in VARIABLE_ATTRS:
            ds[name].attrs.update(VARIABLE_ATTRS[name])
    ds.attrs.update(encode_attrs(attrs))
    return ds


def encode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """netCDF attributes hold str and numbers only: JSON-encode the rest."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, str | int | float | np.integer | np.floating):
            out[key] = value
        else:
            out[key] = json.dumps(value, default=_json_default)
    return out


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in dataset attrs")


def save_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write netCDF4 (h5netcdf) atomically: a temporary file in the same folder, then rename,
    so an interrupted write never leaves a truncated file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Open a saved run fully into memory (the file is closed on return)."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def config_of(ds: xr.Dataset) -> dict[str, Any]:
    """The resolved configuration stored in a run's attrs."""
    return json.loads(ds.attrs["config"])
