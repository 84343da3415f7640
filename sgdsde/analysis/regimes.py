"""Regimes of a run: every trajectory converged, loss-stabilized or diverged, from its
loss curve; for gradient descent also the catapult and edge-of-stability flags.

The classifier reads the training loss L_k over the save grid of a run dataset
(docs/conventions.md, "Outputs") and summarizes the *window*, the last ``window``
fraction of the run in steps, in log space, where SGD's noise is a spread of a few
decades around a level rather than a drift:

* level: the median of log10 L over the window's last third; band: the
  ``band`` quantiles of log10 L over the whole window; decline: the median of the
  window's first third over that of its last third (> 1: the loss is still falling).
* **diverged**: the run flagged the trajectory (``diverged``), a loss is non-finite, or
  L_k > ``diverged_factor`` L_0 at some save point (L_0: the first recorded loss).
* **converged**: the level is below ``converged_loss``, or the loss keeps falling
  (decline > ``max_decline``): gradient descent at a stable step size converges
  linearly, so its loss falls by a constant factor per step, far more than the
  window-to-window spread of a plateau.
* **stabilized** otherwise: the loss stays in a band above ``converged_loss`` without
  falling by more than ``max_decline`` over the window. This is the loss stabilization
  of Andriushchenko et al., "SGD with Large Step Sizes Learns Sparse Features"
  (ICML 2023): at step sizes just below divergence SGD bounces between the walls of
  the valley and its loss plateaus at a level L* (then r_i^2 ~ 2 L*, the label-noise
  variance delta = 2 L* of its effective SDE, docs/conventions.md, "Label-noise SDE").
  ``plateau_level`` = 10^level and ``plateau_band`` = 10^band for these trajectories.
  A loss that rises without crossing the divergence bound also counts as stabilized.

Measured with the defaults on the demo's diagonal network (n = 80, d = 200, data seed
1, 5,000-10,000 steps): SGD at eta = 0.1 ends below 1e-6, at eta = 0.235-0.25 it
plateaus at 1e-2 to 1e-1 (band about a decade wide; the median of a third of the window
moves by up to x3, hence ``max_decline`` = 10 over a window of half the run), and at
0.3 it diverges. The label-noise SDE plateaus where its residuals are stationary:
near a minimum they are an Ornstein-Uhlenbeck process with covariance
(eta delta / (2B)) phi phi^T, so L* = eta delta tr(phi phi^T) / (4 n B), which is
delta / 2 only where eta tr(phi phi^T) / (2 n B) ~ 1 (tests/test_regimes.py).

Flags, from the loss and (where given) a sharpness curve lambda_k, the top eigenvalue
of the Hessian of L:

* **catapult** (Lewkowycz et al., "The large learning rate phase of deep learning: the
  catapult mechanism", 2020): the loss rises above ``catapult_factor`` L_0 at some save
  point, and the trajectory then converges; with a sharpness curve, also at a lower
  sharpness than it started from (median lambda over the window's last third below
  lambda_0): the spike throws the iterate out of the sharp region into a flatter one.
* **edge_of_stability** (Cohen et al., "Gradient Descent on Neural Networks Typically
  Occurs at the Edge of Stability", ICLR 2021): lambda_k eta_k / 2 is within
  ``eos_tolerance`` of 1 at a fraction ``eos_fraction`` or more of the window's save
  points: GD's sharpness rises to 2/eta (progressive sharpening) and hovers there while
  the loss keeps falling non-monotonically. Only with a sharpness curve.

Both flags are defined for gradient descent; on SGD they are computed all the same,
and a catapult then also counts a noisy excursion above L_0 that converges.

The thresholds are a ``RegimeCriteria`` (an argument), recorded in the returned
dataset's ``regime_criteria`` attribute (JSON), so a stored classification says how it
was made.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from sgdsde.registry import to_config

#: The name of the sharpness variable a run records (issue 8, "Metrics"); used when no
#: ``sharpness`` is passed and the dataset has one.
SHARPNESS_VARIABLE = "top_hessian_eigenvalue"


class Regime(enum.IntEnum):
    """The regime of a trajectory; its value is the code stored in ``regime``."""

    CONVERGED = 0
    STABILIZED = 1
    DIVERGED = 2


@dataclasses.dataclass(frozen=True)
class RegimeCriteria:
    """The thresholds of ``classify_regimes`` (see the module docstring for their use).

    window: the last fraction of the run (in steps, 0 < window <= 1) that is summarized.
    converged_loss: a window level below it is converged (absolute, in the units of the
        loss: L_0 = ||beta*||^2 / 2 = 0.5 on the sparse-regression data).
    max_decline: a loss whose window median falls by more than this factor (first third
        over last third) keeps falling: converged. Must be > 1.
    band: the (low, high) quantiles of the plateau band, 0 <= low < high <= 1.
    diverged_factor: a loss above this multiple of the initial loss is diverged (> 1).
    catapult_factor: a loss spike above this multiple of the initial loss counts for
        the catapult flag (>= 1; Kalra and Barkeshli 2023 use 1).
    eos_tolerance: |eta lambda / 2 - 1| at most this is "at the edge of stability"
        (0.05: eta lambda in [1.9, 2.1]).
    eos_fraction: the fraction of the window's points that must be at the edge.
    min_points: the fewest save points the window may hold (>= 3: a third of it is
        then at least one point); fewer is a ValueError naming the fix.
    """

    window: float = 0.5
    converged_loss: float = 1e-4
    max_decline: float = 10.0
    band: tuple[float, float] = (0.1, 0.9)
    diverged_factor: float = 1e4
    catapult_factor: float = 1.0
    eos_tolerance: float = 0.1
    eos_fraction: float = 0.8
    min_points: int = 6

    name: ClassVar[str] = "regime_criteria"

    def __post_init__(self) -> None:
        object.__setattr__(self, "band", tuple(self.band))
        checks = {
            "window": (0 < self.window <= 1, "a fraction of the run in (0, 1]"),
            "converged_loss": (self.converged_loss > 0, "a loss level > 0"),
            "max_decline": (self.max_decline > 1, "a factor > 1"),
            "diverged_factor": (self.diverged_factor > 1, "a factor > 1"),
            "catapult_factor": (self.catapult_factor >= 1, "a factor >= 1"),
            "eos_tolerance": (0 < self.eos_tolerance < 1, "a relative tolerance in (0, 1)"),
            "eos_fraction": (0 < self.eos_fraction <= 1, "a fraction in (0, 1]"),
        }
        for field, (ok, what) in checks.items():
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or not ok:
                raise ValueError(f"RegimeCriteria.{field} must be {what} (got {value!r})")
        low_high = self.band
        if len(low_high) != 2 or not (0 <= low_high[0] < low_high[1] <= 1):
            raise ValueError(
                f"RegimeCriteria.band must be two quantiles 0 <= low < high <= 1 "
                f"(got {self.band!r}), e.g. (0.1, 0.9)"
            )
        points = self.min_points
        if isinstance(points, bool) or not isinstance(points, int) or points < 3:
            raise ValueError(f"RegimeCriteria.min_points must be an integer >= 3 (got {points!r})")

    def to_config(self) -> dict[str, Any]:
        """The criteria as a JSON-able dict (``RegimeCriteria.from_config`` inverts it)."""
        return to_config(self)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RegimeCriteria:
        """The criteria of a ``to_config`` dict (its ``name`` optional)."""
        options = dict(cfg)
        if options.pop("name", cls.name) != cls.name:
            raise ValueError(f"not a {cls.name} config: {cfg!r}")
        accepted = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"RegimeCriteria got unknown option(s) {unknown}: it accepts {accepted}"
            )
        return cls(**options)


def classify_regimes(
    ds: xr.Dataset,
    criteria: RegimeCriteria = RegimeCriteria(),
    *,
    loss: str = "train_loss",
    sharpness: xr.DataArray | str | None = None,
    lr: Any = None,
) -> xr.Dataset:
    """Classify every trajectory of a run dataset as converged, stabilized or diverged.

    ds: a run dataset (dims ``traj`` and ``step``) as ``simulate_sgd`` and
        ``simulate_sde`` return, with the loss curve ``loss`` and, where the run
        recorded it, the ``diverged`` flag per trajectory.
    criteria: the thresholds (``RegimeCriteria``; module docstring for their meaning).
    loss: the name of the (traj, step) loss curve to classify.
    sharpness: the top Hessian eigenvalue over time, a (traj, step) DataArray (on its
        own ``step`` coordinate, else on ds's) or the name of a variable of ``ds``.
        Default: ds's ``top_hessian_eigenvalue`` where it has one, else none (then
        ``catapult`` uses the loss alone and ``edge_of_stability`` is not computed).
    lr: the step size eta of each trajectory in the window (a number or one per
        trajectory) for the edge of stability; default ds's ``lr`` coordinate (the
        peak step size: pass the window's step size for a run whose schedule decays).

    Returns a Dataset over ``traj`` (with ds's per-trajectory coordinates and its
    attributes) holding
    ``regime`` (int8 codes of ``Regime``, CF ``flag_values`` / ``flag_meanings``, and
    the names in the coordinate ``regime_name``), ``plateau_level`` and
    ``plateau_band`` (dim ``bound`` = low, high; NaN unless stabilized),
    ``window_decline``, ``catapult`` and, with a sharpness curve,
    ``edge_of_stability``; the attribute ``regime_criteria`` holds ``criteria`` (JSON)
    and ``regime_window_steps`` the first and last step of the window. Merge it into
    the run with ``xarray.merge([ds, classify_regimes(ds)])``.
    """
    losses, steps = _loss_curves(ds, loss)
    if not isinstance(criteria, RegimeCriteria):
        raise ValueError(f"criteria must be a RegimeCriteria (got {type(criteria).__name__})")
    window = _window(steps, criteria, loss)
    curve = _sharpness_curve(ds, sharpness, steps)
    if curve is not None:
        curve = (curve[0], _window(curve[1], criteria, "sharpness"))
        eta = _step_sizes(ds, lr, losses.shape[0])

    diverged = _diverged(ds, losses, criteria)
    summary = _window_summary(np.where(diverged[:, None], 1.0, losses)[:, window], criteria)
    converged = (summary["level"] < math.log10(criteria.converged_loss)) | (
        summary["decline"] > criteria.max_decline
    )
    regime = np.where(
        diverged, Regime.DIVERGED, np.where(converged, Regime.CONVERGED, Regime.STABILIZED)
    ).astype(np.int8)
    out = _regime_dataset(_traj_coords(ds), regime, summary, criteria, steps[window])
    out["catapult"] = ("traj", _catapult(losses, regime, curve, criteria))
    out["catapult"].attrs["long_name"] = (
        "loss spike above catapult_factor L_0, then convergence (at lower sharpness where "
        "known; Lewkowycz et al. 2020)"
    )
    if curve is not None:
        at_edge = np.abs(eta[:, None] * curve[0][:, curve[1]] / 2 - 1) <= criteria.eos_tolerance
        eos = (regime != Regime.DIVERGED) & (at_edge.mean(axis=1) >= criteria.eos_fraction)
        out["edge_of_stability"] = ("traj", eos)
        out["edge_of_stability"].attrs["long_name"] = (
            "sharpness held at 2/eta: |eta lambda_max / 2 - 1| <= eos_tolerance on "
            "eos_fraction of the window (Cohen et al. 2021)"
        )
    return out


def _catapult(
    losses: np.ndarray,
    regime: np.ndarray,
    curve: tuple[np.ndarray, np.ndarray] | None,
    criteria: RegimeCriteria,
) -> np.ndarray:
    """Converged after a loss above catapult_factor L_0 (and, given the sharpness
    curve and its window mask, at a median sharpness over the window's last third
    below the initial one)."""
    converged = regime == Regime.CONVERGED
    peak = np.max(np.where(converged[:, None], losses, 0.0), axis=1)
    catapult = converged & (peak > criteria.catapult_factor * losses[:, 0])
    if curve is not None:
        values, window = curve
        with warnings.catch_warnings():  # a diverged or unrecorded curve is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            sharp_end = np.nanmedian(_thirds(values[:, window])[1], axis=1)
        catapult &= sharp_end < values[:, 0]
    return catapult


def _loss_curves(ds: xr.Dataset, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """The (traj, step) loss array and the steps of a run dataset, checked."""
    if not isinstance(ds, xr.Dataset):
        raise ValueError(f"ds must be an xarray.Dataset of a run (got {type(ds).__name__})")
    if loss not in ds.data_vars:
        raise ValueError(
            f"ds has no loss curve {loss!r}: it holds {sorted(map(str, ds.data_vars))}; "
            "pass loss=<the name of its (traj, step) loss variable>"
        )
    curve = ds[loss]
    if set(curve.dims) != {"traj", "step"}:
        raise ValueError(f"ds[{loss!r}] must have dims (traj, step) (got {curve.dims})")
    return (
        np.asarray(curve.transpose("traj", "step").values, dtype=float),
        np.asarray(ds["step"].values),
    )


def _window(steps: np.ndarray, criteria: RegimeCriteria, what: str) -> np.ndarray:
    """Mask of the save steps in the last ``criteria.window`` fraction of the run."""
    start = steps[-1] - criteria.window * (steps[-1] - steps[0])
    window = steps >= start
    if window.sum() < criteria.min_points:
        raise ValueError(
            f"the {what} curve has {int(window.sum())} save points in the last "
            f"{criteria.window:g} of the run, fewer than RegimeCriteria.min_points = "
            f"{criteria.min_points}: record on a finer save grid (save_steps) or widen "
            "RegimeCriteria.window"
        )
    return window


def _thirds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and last thirds (rounded up) of the columns of ``values``."""
    third = math.ceil(values.shape[1] / 3)
    return values[:, :third], values[:, -third:]


def _window_summary(window: np.ndarray, criteria: RegimeCriteria) -> dict[str, np.ndarray]:
    """Level, band (log10) and decline of each row of the losses over the window (a
    loss of 0 counts as the smallest positive float)."""
    log_window = np.log10(np.maximum(window, np.finfo(float).tiny))
    first, last = _thirds(log_window)
    level = np.median(last, axis=1)
    return {
        "level": level,
        "band": np.quantile(log_window, criteria.band, axis=1).T,
        "decline": 10.0 ** (np.median(first, axis=1) - level),
    }


def _diverged(ds: xr.Dataset, losses: np.ndarray, criteria: RegimeCriteria) -> np.ndarray:
    """Flagged by the run, non-finite, or above diverged_factor L_0 at some save point."""
    flagged = (
        np.asarray(ds["diverged"].values, dtype=bool)
        if "diverged" in ds
        else np.zeros(losses.shape[0], dtype=bool)
    )
    finite = np.isfinite(losses).all(axis=1)
    with np.errstate(invalid="ignore"):
        above = (losses > criteria.diverged_factor * losses[:, :1]).any(axis=1)
    return flagged | ~finite | above


def _sharpness_curve(
    ds: xr.Dataset, sharpness: xr.DataArray | str | None, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(values (traj, step), steps) of the sharpness curve, or None without one."""
    if sharpness is None:
        if SHARPNESS_VARIABLE not in ds.data_vars:
            return None
        sharpness = SHARPNESS_VARIABLE
    if isinstance(sharpness, str):
        if sharpness not in ds.data_vars:
            raise ValueError(
                f"ds has no sharpness variable {sharpness!r}: pass its name, a (traj, step) "
                "DataArray, or None"
            )
        sharpness = ds[sharpness]
    if not isinstance(sharpness, xr.DataArray) or set(sharpness.dims) != {"traj", "step"}:
        raise ValueError(
            "sharpness must be a DataArray with dims (traj, step), a variable name of ds, "
            f"or None (got {type(sharpness).__name__} {getattr(sharpness, 'dims', '')})"
        )
    values = np.asarray(sharpness.transpose("traj", "step").values, dtype=float)
    if values.shape[0] != ds.sizes["traj"]:
        raise ValueError(
            f"sharpness has {values.shape[0]} trajectories but ds has {ds.sizes['traj']}: "
            "pass one sharpness curve per trajectory"
        )
    own_steps = np.asarray(sharpness["step"].values) if "step" in sharpness.coords else steps
    if own_steps.shape[0] != values.shape[1]:
        raise ValueError(
            f"sharpness has {values.shape[1]} steps and no step coordinate matching them: "
            "give it a step coordinate"
        )
    return values, own_steps


def _step_sizes(ds: xr.Dataset, lr: Any, n_traj: int) -> np.ndarray:
    """eta per trajectory for the edge-of-stability flag, checked."""
    if lr is None:
        if "lr" not in ds.coords and "lr" not in ds.data_vars:
            raise ValueError(
                "the edge-of-stability flag needs the step size: ds has no 'lr'; pass lr="
            )
        lr = ds["lr"].values
    eta = np.broadcast_to(np.asarray(lr, dtype=float), (n_traj,)) if np.ndim(lr) <= 1 else None
    if eta is None or not (np.isfinite(eta).all() and (eta > 0).all()):
        raise ValueError(
            f"lr must be a step size > 0 or one per trajectory ({n_traj}) (got {lr!r})"
        )
    return eta


def _traj_coords(ds: xr.Dataset) -> xr.Dataset:
    """An empty dataset with ds's per-trajectory coordinates (``run`` indexed as in ds)."""
    coords_only = ds.drop_vars(list(ds.data_vars))
    return coords_only.drop_dims([dim for dim in coords_only.dims if dim != "traj"])


def _regime_dataset(
    out: xr.Dataset,
    regime: np.ndarray,
    summary: dict[str, np.ndarray],
    criteria: RegimeCriteria,
    window_steps: np.ndarray,
) -> xr.Dataset:
    """The classification as variables over ``traj``, with their CF attributes."""
    names = [member.name.lower() for member in Regime]
    stabilized = regime == Regime.STABILIZED
    out["regime"] = ("traj", regime)
    out["regime"].attrs.update(
        long_name="regime of the trajectory",
        flag_values=np.array([int(member) for member in Regime], dtype=np.int8),
        flag_meanings=" ".join(names),
    )
    out = out.assign_coords(regime_name=("traj", np.array(names)[regime]))
    plateau = np.where(stabilized[:, None], 10.0 ** summary["band"], np.nan)
    out["plateau_level"] = ("traj", np.where(stabilized, 10.0 ** summary["level"], np.nan))
    out["plateau_level"].attrs.update(
        long_name="plateau loss level: median over the window's last third (stabilized only)",
        units="1",
    )
    out["plateau_band"] = (("traj", "bound"), plateau)
    out = out.assign_coords(bound=["low", "high"])
    out["plateau_band"].attrs.update(
        long_name=f"plateau band: quantiles {list(criteria.band)} of the loss over the window",
        units="1",
    )
    diverged = regime == Regime.DIVERGED
    out["window_decline"] = ("traj", np.where(diverged, np.nan, summary["decline"]))
    out["window_decline"].attrs.update(
        long_name="median loss over the window's first third / over its last third",
        units="1",
    )
    out.attrs["regime_criteria"] = json.dumps(criteria.to_config())
    out.attrs["regime_window_steps"] = json.dumps([int(window_steps[0]), int(window_steps[-1])])
    return out
