"""The sweep's store: a zarr group preallocated over the whole grid, written by one
writer (the driver), that is the only record of what is done.

Layout (zarr v3, a folder):

* attributes: ``sgdsde_sweep`` (the layout version), ``config`` (the sweep's resolved
  configuration, JSON) and its ``fingerprint``, the dims and their grids; once the first
  block has come back, ``variables`` (the result arrays) and ``dataset_attrs``;
* ``done``, ``failed`` (bool) and ``message`` (str) over the block dims (lr, <axis>),
  chunk size 1: a cell is done once its block's data is all written; a failed block
  holds the message of the error its run raised;
* one array per result variable, over its dims, chunk size 1 along lr and the axis and
  whole along seed and the variables' own dims (a block always holds all seeds, so no
  chunk is ever shared by two blocks: the condition for region writes to be safe,
  phase-validation.md §3.2).

**Write order.** A finished block's arrays are written into its region first, and only
then is it marked done; a failure writes its message, then sets ``failed``. zarr's
local store writes every chunk to a temporary file renamed onto its name, so a chunk
is never half written; a driver killed anywhere leaves at worst a block with data but
not done, which a resume recomputes (and leftover ``*.partial`` temporaries, which
zarr ignores). No cell is ever marked done without its data.

**Allocation.** The result arrays' names, dtypes and extra dims are those of a block's
dataset, so they are allocated (over the whole grid, fill values: NaN for floats, -1
for signed integers) when the first block comes back, before it is written;
``variables`` is set only once every array exists, so an allocation cut short is
redone.

**One writer.** Nothing here locks the store: run one driver per store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

#: The layout version written into the store.
LAYOUT = 1

#: Masks over the block dims.
MASKS = ("done", "failed", "message")


class SweepStore:
    """A sweep store on disk (``create`` a new one, ``open`` an existing one)."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self.group = group

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        config: dict[str, Any],
        fingerprint: str,
        coords: dict[str, list],
        dims: Sequence[str],
        block_dims: Sequence[str],
    ) -> SweepStore:
        """A new store at ``path`` (which must not exist) with the masks allocated and
        nothing done. The attributes are written with the group, in one metadata file."""
        path = Path(path)
        attrs = {
            "sgdsde_sweep": LAYOUT,
            "config": json.dumps(config),
            "fingerprint": fingerprint,
            "dims": list(dims),
            "block_dims": list(block_dims),
            "coords": coords,
        }
        group = zarr.create_group(str(path), attributes=attrs)
        shape = tuple(len(coords[d]) for d in block_dims)
        chunks = (1,) * len(shape)
        for name, dtype, fill in (("done", bool, False), ("failed", bool, False)):
            group.create_array(
                name,
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                fill_value=fill,
                dimension_names=list(block_dims),
            )
        group.create_array(
            "message",
            shape=shape,
            chunks=chunks,
            dtype=str,
            fill_value="",
            dimension_names=list(block_dims),
        )
        return cls(path, group)

    @classmethod
    def open(cls, path: str | os.PathLike) -> SweepStore:
        """The store at ``path``, or a ValueError if it is not a sweep store."""
        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode="r+")
            layout = group.attrs.get("sgdsde_sweep")
        except Exception as err:  # zarr raises several kinds for a non-store
            raise ValueError(
                f"{path} is not a sgdsde sweep store ({type(err).__name__}: {err}): "
                "choose another path"
            ) from err
        if layout != LAYOUT or not all(name in group for name in MASKS):
            raise ValueError(
                f"{path} is not a sgdsde sweep store (layout {layout!r}, expected "
                f"{LAYOUT}): choose another path"
            )
        return cls(path, group)

    # ------------------------------------------------------------------ reading

    @property
    def attrs(self) -> dict[str, Any]:
        return self.group.attrs.asdict()

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration of the sweep that wrote the store."""
        return json.loads(self.attrs["config"])

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    def mask(self, name: str) -> np.ndarray:
        """``done``, ``failed`` or ``message`` over the block dims."""
        return _read(self.group[name])

    # ------------------------------------------------------------------ writing

    def write_block(self, region: dict[str, slice], ds: xr.Dataset) -> None:
        """Write a block's dataset into its region, then mark it done (module docstring:
        the write order). ``region`` maps the block dims to slices."""
        if "variables" not in self.group.attrs:
            self._allocate(ds)
        for name in self.group.attrs["variables"]:
            self._write_variable(name, region, ds[name])
        index = self._index(self.attrs["block_dims"], region)
        self.group["failed"][index] = False
        self.group["message"][index] = ""
        self.group["done"][index] = True

    def write_failure(self, region: dict[str, slice], message: str) -> None:
        """Record a block whose run raised: its message, then ``failed``."""
        index = self._index(self.attrs["block_dims"], region)
        self.group["message"][index] = message
        self.group["failed"][index] = True

    def _write_variable(self, name: str, region: dict[str, slice], var: xr.DataArray) -> None:
        array = self.group[f"data/{name}"]
        values = var.values.astype(str) if var.dtype.kind in "UO" else var.values
        array[self._index(array.metadata.dimension_names, region)] = values

    @staticmethod
    def _index(dims: Sequence[str], region: dict[str, slice]) -> tuple[slice, ...]:
        return tuple(region.get(dim, slice(None)) for dim in dims)

    def _allocate(self, ds: xr.Dataset) -> None:
        """Create one array per variable of a block's dataset over the whole grid."""
        coords = self.attrs["coords"]
        block_dims = set(self.attrs["block_dims"])
        names = [name for name in ds.variables if name not in coords]
        for name in names:
            var = ds[name]
            shape = tuple(len(coords[d]) if d in coords else var.sizes[d] for d in var.dims)
            sizes = zip(var.dims, shape, strict=True)
            chunks = tuple(1 if d in block_dims else max(n, 1) for d, n in sizes)
            dtype, fill = _dtype_and_fill(var.dtype)
            self.group.create_array(
                f"data/{name}",
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                fill_value=fill,
                dimension_names=list(var.dims),
                attributes={
                    "attrs": _json_attrs(var.attrs),
                    "coordinate": name in ds.coords,
                },
                overwrite=True,
            )
        coord_attrs = {d: _json_attrs(ds[d].attrs) for d in coords if d in ds}
        dataset_attrs = {k: v for k, v in ds.attrs.items() if k not in ("config",)}
        self.group.attrs.update(
            {"coord_attrs": coord_attrs, "dataset_attrs": _json_attrs(dataset_attrs)}
        )
        self.group.attrs["variables"] = names  # last: the allocation is complete

    # ------------------------------------------------------------------ export

    def to_dataset(self) -> xr.Dataset:
        """The store as one Dataset (dims (lr, <axis>, seed)): every result variable
        (fill values where a block is not done), the ``done``, ``failed`` and
        ``message`` masks, and the attributes of a phase diagram (``config``: the
        phase diagram's, ``sweep_config``: the sweep's)."""
        attrs = self.attrs
        coords = attrs["coords"]
        block_dims = attrs["block_dims"]
        ds = xr.Dataset(coords={d: np.asarray(v) for d, v in coords.items()})
        for d, d_attrs in attrs.get("coord_attrs", {}).items():
            ds[d].attrs.update(_restore_attrs(d_attrs))
        coordinates = {}
        for name in attrs.get("variables", []):
            array = self.group[f"data/{name}"]
            var = xr.Variable(
                tuple(array.metadata.dimension_names),
                _read(array),
                _restore_attrs(array.attrs["attrs"]),
            )
            if array.attrs["coordinate"]:
                coordinates[name] = var
            else:
                ds[name] = var
        ds = ds.assign_coords(coordinates)
        ds["done"] = (block_dims, self.mask("done"), {"long_name": "the block's cells are done"})
        ds["failed"] = (block_dims, self.mask("failed"), {"long_name": "the block's run raised"})
        ds["message"] = (block_dims, self.mask("message"), {"long_name": "error of a failed run"})
        config = json.loads(attrs["config"])
        ds.attrs.update(_restore_attrs(attrs.get("dataset_attrs", {})))
        ds.attrs.pop("gd_stability_edge", None)
        if "gd_stability_edge" in ds.coords:
            edge = ds["gd_stability_edge"].values
            if edge.size and np.all(edge == edge.flat[0]):
                ds.attrs["gd_stability_edge"] = float(edge.flat[0])
        ds.attrs["config"] = json.dumps(config["phase_diagram"])
        ds.attrs["sweep_config"] = attrs["config"]
        ds.attrs["sweep_fingerprint"] = attrs["fingerprint"]
        return ds


def _read(array: zarr.Array) -> np.ndarray:
    """An array's values; strings as fixed-width unicode (what netCDF writers take)."""
    values = np.asarray(array[...])
    return values if values.dtype.kind in "biuf" else np.array(values.tolist(), dtype=str)


def _dtype_and_fill(dtype: np.dtype) -> tuple[Any, Any]:
    """The zarr dtype and the fill value of cells not done."""
    if dtype.kind in "UO":
        return str, ""
    if dtype.kind == "f":
        return dtype, np.nan
    if dtype.kind == "i":
        return dtype, -1
    return dtype, 0 if dtype.kind != "b" else False


def _json_attrs(attrs: dict) -> dict:
    """Attributes with numpy values as lists/Python scalars (zarr stores JSON);
    arrays are tagged so that ``_restore_attrs`` gives them back as arrays."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            out[key] = {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = value
    return out


def _restore_attrs(attrs: dict) -> dict:
    return {
        key: np.asarray(value["__ndarray__"], dtype=value["dtype"])
        if isinstance(value, dict) and "__ndarray__" in value
        else value
        for key, value in attrs.items()
    }
