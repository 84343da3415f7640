"""Self-describing run outputs: an ``xarray.Dataset`` per run, saved atomically.

Layout shared by every simulator and experiment (docs/conventions.md, "Outputs"): dims
``traj`` and ``step``; coords ``step`` (updates done) and ``time`` (traj, step) = sum of
step sizes so far (the SDE time); per-trajectory settings as coords on ``traj``, among
them ``run`` (a name per trajectory, indexed: ``ds.sel(run="GD")`` picks a run's
trajectories); ``diverged`` and ``diverged_step`` per trajectory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.run.outputs import write_atomically

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
    return index_runs(ds)


def runs_of(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """run name -> the dataset of that run's trajectories, in order of first appearance
    (every trajectory its own run, ``"traj <t>"``, when ``ds`` has no ``run`` coordinate)."""
    if "run" not in ds.coords:
        return {f"traj {t}": ds.isel(traj=[i]) for i, t in enumerate(ds["traj"].values)}
    names = np.asarray(ds["run"].values).astype(str)
    return {
        name: ds.isel(traj=np.flatnonzero(names == name)) for name in dict.fromkeys(names.tolist())
    }


def index_runs(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with an index on its ``run`` coordinate (one name per trajectory), so that
    ``ds.sel(run=name)`` selects that run's trajectories; unchanged without one."""
    if "run" in ds.coords and ds["run"].dims == ("traj",) and "run" not in ds.xindexes:
        return ds.set_xindex("run")
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


#: First bytes of the files ``save_dataset`` may replace: HDF5 (netCDF4) and netCDF3.
_NETCDF_SIGNATURES = (b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02", b"CDF\x05")


def save_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` as netCDF4 (h5netcdf) to ``path`` atomically and group-readable
    (``sgdsde.run.outputs``: a temporary beside ``path``, renamed onto it, so an
    interrupted write never leaves a truncated file under the final name).

    ``path`` must end in ``.nc``; a file already there is replaced only if it is a
    netCDF/HDF5 file (anything else, e.g. notes saved under that name, is refused).
    Returns ``path``.
    """
    path = check_dataset_path(path)
    return write_atomically(path, lambda tmp: write_netcdf(ds, tmp))


def write_netcdf(ds: xr.Dataset, file: str | os.PathLike) -> None:
    """Write ``ds`` to ``file`` as netCDF4 (h5netcdf), not atomically: the writer that
    ``save_dataset`` and ``sgdsde.run.outputs.write_together`` call on a temporary."""
    ds.to_netcdf(file, engine="h5netcdf")


def check_dataset_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if ``save_dataset`` may write there, else a ValueError saying why."""
    path = Path(path)
    if path.suffix != ".nc":
        raise ValueError(
            f"a dataset is saved as netCDF: give a path ending in .nc (got {str(path)!r})"
        )
    if path.exists():
        if not path.is_file():
            raise ValueError(f"{path} exists and is not a file: choose another path")
        with open(path, "rb") as f:
            head = f.read(8)
        if not head.startswith(_NETCDF_SIGNATURES):
            raise ValueError(
                f"{path} exists and is not a netCDF file: refusing to replace it; "
                "move it away or choose another path"
            )
    return path


def load_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Open a saved run fully into memory (the file is closed on return), with the
    ``run`` coordinate indexed again (``ds.sel(run=...)``)."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return index_runs(ds.load())


def config_of(ds: xr.Dataset) -> dict[str, Any]:
    """The resolved configuration stored in a run's attrs."""
    return json.loads(ds.attrs["config"])
