"""What a finished phase diagram says beyond its cells: the edges of the stabilization
band found by the sweep, and the measured catapult window against the theory's.

The inputs are the datasets of ``sgdsde.analysis.phase_diagram`` (dims ``lr``, an
optional sweep axis and ``seed``), whole: these are reductions over ``lr``, so they are
computed on the assembled diagram (``with_phase_edges``; ``sgdsde sweep`` stores them
in its result), never per block of a sweep.

* ``majority_regime``: the regime of each cell by majority over its seeds (a tie goes to
  the higher code, i.e. towards divergence).
* ``stabilization_edges``: per value of the sweep axis, ``stable_lr_max``, the largest
  step size at which no seed diverged (every step size up to it included), and
  ``stabilized_lr_min``, the smallest step size whose majority regime is stabilized (the
  regime of the large-step phase where the step size decays during the run): the band of
  loss stabilization of Andriushchenko et al. (ICML 2023) lies between them.
* ``catapult_window``: where gradient descent catapulted (the ``catapult`` flag of a GD
  diagram: a loss spike, then convergence at a lower sharpness), per axis value and
  seed: the smallest and largest step size with the flag, beside the window
  2 / lambda_0 < eta < 4 / lambda_0 of Lewkowycz et al. (2020) for two-layer linear
  networks (lambda_0: the NTK's top eigenvalue at initialization, the coordinates
  ``catapult_theory_low`` / ``catapult_theory_high``), and whether the two overlap.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from sgdsde.analysis.regimes import Regime

#: The variables ``stabilization_edges`` returns, with their attrs.
EDGE_ATTRS = {
    "stable_lr_max": {
        "long_name": "largest step size at which no seed diverged (edge of the stabilization "
        "band found by the sweep)",
        "units": "1",
    },
    "stabilized_lr_min": {
        "long_name": "smallest step size whose regime (majority over seeds) is stabilized",
        "units": "1",
    },
}


def majority_regime(da: xr.DataArray) -> xr.DataArray:
    """A regime variable (codes with CF ``flag_values``) reduced over ``seed`` by
    majority, a tie going to the higher code (towards divergence)."""
    codes = np.atleast_1d(da.attrs["flag_values"]).astype(int)
    counts = xr.concat([(da == c).sum("seed") for c in codes], dim="code")
    # argmax takes the first maximum: reverse so a tie goes to the higher code
    best = counts.isel(code=slice(None, None, -1)).argmax("code")
    out = xr.DataArray(codes[::-1][best.values], dims=best.dims, coords=best.coords)
    out.attrs = dict(da.attrs)
    return out


def regime_variable(ds: xr.Dataset) -> str:
    """The regime that describes a cell's step size: where the step size decays during
    the run, that of the large-step phase (``regime_large_step``), else ``regime``."""
    return "regime_large_step" if "regime_large_step" in ds else "regime"


def _check_phase(ds: xr.Dataset, needs: tuple[str, ...]) -> None:
    if not isinstance(ds, xr.Dataset) or "lr" not in ds.dims or "seed" not in ds.dims:
        raise ValueError(
            "expected a phase diagram (a Dataset with dims lr, <axis>, seed from "
            f"phase_diagram), got {type(ds).__name__} {getattr(ds, 'dims', '')}"
        )
    missing = [name for name in needs if name not in ds.variables]
    if missing:
        raise ValueError(
            f"the phase diagram has no {missing}: "
            + (
                "the catapult flag is recorded for gradient descent only (SGDDynamics with "
                "batch_size None and no label noise, sharpness=True)"
                if "catapult" in missing
                else "pass a dataset of phase_diagram"
            )
        )


def _first_lr(mask: xr.DataArray, lrs: np.ndarray, last: bool) -> xr.DataArray:
    """The smallest (or largest) lr where ``mask`` holds, over the other dims (NaN: none)."""
    values = xr.where(mask, xr.DataArray(lrs, dims="lr", coords={"lr": lrs}), np.nan)
    return values.max("lr") if last else values.min("lr")


def stabilization_edges(ds: xr.Dataset) -> xr.Dataset:
    """``stable_lr_max`` and ``stabilized_lr_min`` per value of the sweep axis (module
    docstring), NaN where there is none.

    ds: a phase diagram (``phase_diagram``'s dataset, whole over lr).
    """
    name = regime_variable(ds)
    _check_phase(ds, ("diverged", name))
    lrs = np.asarray(ds["lr"].values, dtype=float)
    order = np.argsort(lrs)
    none_diverged = (ds["diverged"] == 0).all("seed").isel(lr=order)
    # the largest lr such that no seed diverged at it nor at any smaller lr
    stable_so_far = none_diverged.cumprod("lr").astype(bool)
    out = xr.Dataset(
        {
            "stable_lr_max": _first_lr(stable_so_far, lrs[order], last=True),
            "stabilized_lr_min": _first_lr(
                majority_regime(ds[name]) == int(Regime.STABILIZED), lrs, last=False
            ),
        }
    )
    for var, attrs in EDGE_ATTRS.items():
        out[var].attrs.update(attrs)
    out.attrs["regime_variable"] = name
    return out


def catapult_window(ds: xr.Dataset) -> xr.Dataset:
    """The measured catapult window of a GD phase diagram against Lewkowycz et al.'s.

    ds: a phase diagram of gradient descent (with the ``catapult`` flag and the
        ``catapult_theory_low`` / ``catapult_theory_high`` coordinates).

    Returns a Dataset over the dims after lr (axis, seed): ``measured_low`` and
    ``measured_high``, the smallest and largest lr whose run catapulted (NaN: none);
    ``theory_low`` = 2 / lambda_0 and ``theory_high`` = 4 / lambda_0; ``overlaps``, the
    two intervals intersect; ``inside``, the measured window lies within the theory's
    grown by one grid step of lr on each side (the grid's resolution).
    """
    _check_phase(ds, ("catapult", "catapult_theory_low", "catapult_theory_high"))
    lrs = np.sort(np.asarray(ds["lr"].values, dtype=float))
    flag = ds["catapult"].astype(bool)
    low, high = _first_lr(flag, ds["lr"].values, False), _first_lr(flag, ds["lr"].values, True)
    theory_low = ds["catapult_theory_low"].reset_coords(drop=True)
    theory_high = ds["catapult_theory_high"].reset_coords(drop=True)
    ratio = float(np.max(lrs[1:] / lrs[:-1])) if lrs.size > 1 else 1.0
    out = xr.Dataset(
        {
            "measured_low": low,
            "measured_high": high,
            "theory_low": theory_low,
            "theory_high": theory_high,
            "overlaps": (low <= theory_high) & (high >= theory_low),
            "inside": (low >= theory_low / ratio) & (high <= theory_high * ratio),
        }
    )
    out.attrs["reference"] = (
        "Lewkowycz et al. (2020), The large learning rate phase of deep learning: the "
        "catapult mechanism: catapult for 2/lambda_0 < eta < 4/lambda_0 (NTK lambda_0)"
    )
    return out


def with_phase_edges(ds: xr.Dataset) -> xr.Dataset:
    """ds with the edges of its stabilization band (``stabilization_edges``) as
    variables (and attributes where the diagram has no sweep axis) and, for a GD
    diagram, its measured catapult window (``catapult_lr_low`` / ``catapult_lr_high``
    over the axis: the extremes over seeds)."""
    edges = stabilization_edges(ds)
    out = ds.assign({name: edges[name] for name in EDGE_ATTRS})
    if "catapult" in ds:
        window = catapult_window(ds)
        out["catapult_lr_low"] = window["measured_low"].min("seed")
        out["catapult_lr_high"] = window["measured_high"].max("seed")
        out["catapult_lr_low"].attrs.update(
            long_name="smallest step size at which GD catapulted (any seed)", units="1"
        )
        out["catapult_lr_high"].attrs.update(
            long_name="largest step size at which GD catapulted (any seed)", units="1"
        )
    for name in [*EDGE_ATTRS, "catapult_lr_low", "catapult_lr_high"]:
        if name in out and out[name].ndim == 0:
            out.attrs[name] = float(out[name])
    return out
