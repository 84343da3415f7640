"""Figures drawn from run datasets (never from raw arrays)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr


def _panel_title(da: xr.DataArray, var: str) -> str:
    if "threshold" in da.attrs:
        return f"l0 norm (|beta_i| > {da.attrs['threshold']:g})"
    label = da.attrs.get("long_name", var)
    return label if len(label) < 45 else var


def _finish_axis(ax, da: xr.DataArray, var: str, xlabel: str, loss_floor: float | None) -> None:
    if var.endswith("loss"):
        ax.set_yscale("log")
        if loss_floor is not None and ax.get_ylim()[0] < loss_floor:
            ax.set_ylim(bottom=loss_floor)
    ax.set_xlabel(xlabel)
    ax.set_title(_panel_title(da, var), fontsize=10)
    ax.grid(alpha=0.3)


def _finish_figure(fig, title: str | None, path: str | Path | None):
    if title:
        fig.suptitle(title, fontsize=10.5)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def _colors() -> list[str]:
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def plot_runs(
    ds: xr.Dataset,
    path: str | Path | None = None,
    variables: tuple[str, ...] = ("train_loss", "test_loss", "l0_norm"),
    markers: list[list[int]] | None = None,
    title: str | None = None,
):
    """One panel per variable against steps, one line per trajectory; dotted vertical
    lines at ``markers[t]`` (e.g. step-size decays) in each run's colour."""
    fig, axes = plt.subplots(1, len(variables), figsize=(4.2 * len(variables), 3.4))
    axes = np.atleast_1d(axes)
    names = ds["run"].values if "run" in ds.coords else [f"traj {t}" for t in ds.traj.values]
    steps = ds["step"].values
    colors = _colors()
    for ax, var in zip(axes, variables, strict=True):
        for t, name in enumerate(names):
            color = colors[t % len(colors)]
            ax.plot(steps, ds[var].values[t], color=color, label=str(name), lw=1.3)
            for m in markers[t] if markers else []:
                ax.axvline(m, color=color, ls=":", lw=1)
        _finish_axis(ax, ds[var], var, "iteration", loss_floor=None)
    axes[0].legend(fontsize=8)
    return _finish_figure(fig, title, path)


def plot_sgd_vs_sde(
    ds: xr.Dataset,
    path: str | Path | None = None,
    variables: tuple[str, ...] = ("l0_norm", "train_loss", "test_loss"),
    title: str | None = None,
    loss_floor: float | None = 1e-12,
):
    """For a ``run_sgd_vs_sde`` dataset (dims run, traj, step): one panel per metric
    against time t, per run the mean over trajectories (line) and the min-max band
    (shaded); SDE runs dashed. Loss axes stop at ``loss_floor`` (curves that converge
    to round-off leave the panel there)."""
    fig, axes = plt.subplots(1, len(variables), figsize=(4.4 * len(variables), 3.6))
    axes = np.atleast_1d(axes)
    t = ds["time"].values
    colors = _colors()
    for ax, var in zip(axes, variables, strict=True):
        for i, rname in enumerate(ds["run"].values):
            v = ds[var].values[i]
            with np.errstate(all="ignore"):
                mean = np.nanmean(v, axis=0)
                lo, hi = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
            is_sde = ds["method"].values[i] == "sde"
            color = colors[i % len(colors)]
            kind = f"SDE, dt = {ds['dt'].values[i]:g}" if is_sde else "exact"
            ax.plot(
                t, mean, ls="--" if is_sde else "-", color=color, lw=1.4, label=f"{rname} ({kind})"
            )
            ax.fill_between(t, lo, hi, color=color, alpha=0.2, lw=0)
        _finish_axis(ax, ds[var], var, "time t = k eta", loss_floor)
    axes[0].legend(
        fontsize=7.5,
        title=f"mean; band: min-max over {ds.sizes['traj']} trajectories",
        title_fontsize=7.5,
    )
    return _finish_figure(fig, title, path)
