"""Weak-error order of the SDE model of SGD: fit log(weak error) against log(step size).

The weak error |E phi(theta_k) - E phi(Theta_{k eta})| of an order-1 weak approximation
(Li, Tai and E 2017) shrinks linearly with eta; ``weak_error_order`` measures the slope
with ``compare_sgd_sde`` at several step sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.analysis.compare import (
    Observable,
    as_observables,
    compare_sgd_sde,
)
from sgdsde.data import RegressionData
from sgdsde.dynamics.sgd import SGD
from sgdsde.metrics import Recordable
from sgdsde.models.base import Model
from sgdsde.run.checks import check_positive_real
from sgdsde.sde.noise import NoiseModel
from sgdsde.sde.solvers.base import Solver


def weak_error_order(
    model: Model,
    data: RegressionData,
    lrs: Sequence[float],
    t_end: float,
    *,
    observable: str | tuple[str, Observable] | Recordable = "train_loss",
    sgd: SGD = SGD(),  # noqa: B008 (frozen dataclass: immutable)
    noise: Callable[[float], NoiseModel] | None = None,
    refine: int = 8,
    solver: str | Solver = "euler_numba",
    n_traj: int = 1024,
    seed: Any = 0,
    theta0: np.ndarray | None = None,
    common_random_numbers: bool | None = None,
    max_loss: float = 1e10,
) -> tuple[float, float, xr.Dataset]:
    """Fit log(weak error at t_end) = slope log(lr) + intercept over the step sizes ``lrs``.

    For each lr, ``compare_sgd_sde`` runs t_end / lr SGD steps (t_end must be a multiple
    of every lr) and the SDE at dt = lr / refine; the weak error of ``observable`` (a
    recorded metric name, a ``(name, f)`` pair or a metric object, see
    ``compare_sgd_sde``) at t = t_end enters a least-squares
    fit in log-log. ``noise``: lr -> noise model (default the matched ``SGDNoise``).
    An order-1 weak approximation gives slope ~ 1.

    Returns (slope, intercept, table); the table (dim ``lr``) holds ``weak_error``,
    ``weak_error_se``, ``mean_sgd``, ``mean_sde`` and ``n_steps``.
    """
    t_end = check_positive_real("t_end", t_end)
    if isinstance(lrs, str) or not isinstance(lrs, Sequence | np.ndarray):
        raise ValueError("lrs must be a sequence of step sizes")
    lrs = [check_positive_real("each lr", lr) for lr in lrs]
    if len(set(lrs)) < 2:
        raise ValueError(f"lrs needs at least 2 distinct step sizes to fit a slope (got {lrs})")
    if noise is not None and not callable(noise):
        raise ValueError("noise must be None or a callable lr -> noise model")
    obs = as_observables([observable] if isinstance(observable, tuple) else observable)
    (name,) = obs
    rows = []
    for lr in lrs:
        k = round(t_end / lr)
        if k < 1 or not math.isclose(k * lr, t_end, rel_tol=1e-9):
            raise ValueError(f"t_end = {t_end:g} is not a multiple of lr = {lr:g}")
        ds = compare_sgd_sde(
            model,
            data,
            lr,
            k,
            sgd=sgd,
            noise=None if noise is None else noise(lr),
            refine=refine,
            solver=solver,
            n_traj=n_traj,
            seed=seed,
            theta0=theta0,
            observables=obs,
            save_steps=[k],
            common_random_numbers=common_random_numbers,
            max_loss=max_loss,
        )
        last = ds.isel(step=-1)
        rows.append(
            (
                float(last[f"weak_error_{name}"]),
                float(last[f"weak_error_{name}_se"]),
                float(last[f"{name}_mean"].sel(dynamics="sgd")),
                float(last[f"{name}_mean"].sel(dynamics="sde")),
                k,
                bool(ds.attrs["common_random_numbers"]),
            )
        )
    err = np.array([r[0] for r in rows])
    if not np.all(np.isfinite(err) & (err > 0)):
        raise ValueError(
            f"weak errors {err.tolist()} are not all finite and > 0: cannot fit a log-log "
            "slope (diverged runs, or refine = 1 with common random numbers?)"
        )
    slope, intercept = np.polyfit(np.log(lrs), np.log(err), 1)
    table = xr.Dataset(
        {
            "weak_error": ("lr", err, {"long_name": f"|E {name}(SGD) - E {name}(SDE)| at t_end"}),
            "weak_error_se": ("lr", np.array([r[1] for r in rows])),
            "mean_sgd": ("lr", np.array([r[2] for r in rows])),
            "mean_sde": ("lr", np.array([r[3] for r in rows])),
            "n_steps": ("lr", np.array([r[4] for r in rows])),
            "common_random_numbers": ("lr", np.array([r[5] for r in rows])),
        },
        coords={"lr": np.array(lrs)},
        attrs={
            "observable": name,
            "t_end": t_end,
            "refine": refine,
            "n_traj": n_traj,
            "slope": float(slope),
            "intercept": float(intercept),
            "fit": "least squares of log(weak_error) on log(lr)",
        },
    )
    return float(slope), float(intercept), table
