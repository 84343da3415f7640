"""Figures drawn from run datasets (never from raw arrays)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr


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
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, var in zip(axes, variables, strict=True):
        da = ds[var]
        for t, name in enumerate(names):
            color = colors[t % len(colors)]
            ax.plot(steps, da.values[t], color=color, label=str(name), lw=1.3)
            for m in markers[t] if markers else []:
                ax.axvline(m, color=color, ls=":", lw=1)
        if var.endswith("loss"):
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        label = da.attrs.get("long_name", var)
        if "threshold" in da.attrs:
            label = f"l0 norm (|beta_i| > {da.attrs['threshold']:g})"
        ax.set_title(label if len(label) < 45 else var, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
