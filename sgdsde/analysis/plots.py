"""Figures drawn from run datasets (never from raw arrays); written atomically (a
temporary beside the final name, then a rename: a kill while plotting never leaves a
half-written image under the final name)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import IO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from sgdsde.run.dataset import runs_of
from sgdsde.run.outputs import write_atomically

#: Resolution of every saved figure.
DPI = 120


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


def median_band(ax, x, values, *, color, label=None, alpha: float = 0.15, ls: str = "-"):
    """Values (seeds, points) against ``x``: their median over seeds as a line and a band
    from the min to the max, NaN (diverged seeds) left out; returns the line.

    ax: the axes. x: (points,). values: (seeds, points). color, label, ls: the line's
    colour, legend label and line style. alpha: the band's opacity.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points: every seed diverged
        (line,) = ax.plot(x, np.nanmedian(values, axis=0), ls=ls, color=color, lw=1.3, label=label)
        ax.fill_between(
            x, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=color, alpha=alpha, lw=0
        )
    return line


def finish_figure(fig, title: str | None, path: str | Path | None, *, title_size: float = 10.5):
    """Finish ``fig``: the suptitle ``title`` (none when empty) at font size
    ``title_size``, a tight layout and, when ``path`` is given, the figure written
    atomically there (``save_figure``) and closed (``close_figure``). Returns ``fig``
    (closed when it was written)."""
    if title:
        fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
        close_figure(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format its suffix names (png by
    default). Returns ``path``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return write_atomically(path, lambda tmp: write_figure(fig, tmp, fmt))


def write_figure(fig, file: str | os.PathLike | IO[bytes], fmt: str = "png") -> None:
    """Render ``fig`` into ``file`` (a path or a binary buffer) as ``fmt`` at ``DPI``."""
    fig.savefig(file, dpi=DPI, format=fmt)


def close_figure(fig) -> None:
    """Release ``fig`` (pyplot keeps every open figure alive)."""
    plt.close(fig)


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
    return finish_figure(fig, title, path)


def plot_sgd_vs_sde(
    ds: xr.Dataset,
    path: str | Path | None = None,
    variables: tuple[str, ...] = ("l0_norm", "train_loss", "test_loss"),
    title: str | None = None,
    loss_floor: float | None = 1e-12,
):
    """For a ``sgd_vs_sde`` dataset (dims traj, step; coords ``run``, ``method`` and
    ``dt`` per trajectory, ``time`` (traj, step)): one panel per metric against time t,
    per run the mean over its trajectories (line) and the min-max band (shaded); SDE
    runs dashed. Loss axes stop at ``loss_floor`` (curves that converge to round-off
    leave the panel there)."""
    fig, axes = plt.subplots(1, len(variables), figsize=(4.4 * len(variables), 3.6))
    axes = np.atleast_1d(axes)
    runs = runs_of(ds)
    colors = _colors()
    for ax, var in zip(axes, variables, strict=True):
        for i, (rname, run) in enumerate(runs.items()):
            v = run[var].values
            with np.errstate(all="ignore"):
                mean = np.nanmean(v, axis=0)
                lo, hi = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
            t = run["time"].values[0]
            is_sde = run["method"].values[0] == "sde"
            color = colors[i % len(colors)]
            kind = f"SDE, dt = {run['dt'].values[0]:g}" if is_sde else "exact"
            ax.plot(
                t, mean, ls="--" if is_sde else "-", color=color, lw=1.4, label=f"{rname} ({kind})"
            )
            ax.fill_between(t, lo, hi, color=color, alpha=0.2, lw=0)
        _finish_axis(ax, ds[var], var, "time t = k eta", loss_floor)
    per_run = max(run.sizes["traj"] for run in runs.values())
    axes[0].legend(
        fontsize=7.5,
        title=f"mean; band: min-max over {per_run} trajectories",
        title_fontsize=7.5,
    )
    return finish_figure(fig, title, path)
