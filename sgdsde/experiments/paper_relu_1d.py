"""Two-layer ReLU network on the 12-point 1-D regression set (Andriushchenko et al.,
ICML 2023, ``fc_nets_1d_regression.ipynb``; reference notes Sec. 2.3 and 4.4).

m = 100 ReLU units with a first-layer bias, the Blanc et al. initialization, SGD with
batch size 1 and a linear warm-up measured against the whole run, decayed at 2 % or
50 % of the run (``LinearWarmup``); the over-regularizing variant warms up harder.
Reported, at the end of each run: the training loss, the feature sparsity (the
notebook's, on the 12 training inputs, threshold 0.999), the rank of the Jacobian
phi(X) on ``grid_points`` evenly spaced inputs in [min x, max x] (relative threshold
1e-4), and the fraction of active units. The fitted function is recorded on a grid at
``snapshot_fractions`` of the run (the notebook's snapshots).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from sgdsde.analysis.plots import finish_figure
from sgdsde.experiments.base import EXPERIMENTS
from sgdsde.experiments.config import Key
from sgdsde.experiments.paper_relu import (
    ReluExperiment,
    ReluPlan,
    curves,
    final,
    plot_over_steps,
    run_styles,
)
from sgdsde.metrics import METRICS, Metric
from sgdsde.metrics.jacobian import jacobian_rank


def input_grid(data: Any, n_points: int, margin: float = 0.0) -> np.ndarray:
    """``n_points`` evenly spaced 1-D inputs over [min x - margin, max x + margin],
    shape (n_points, 1)."""
    x = data.X[:, 0]
    return np.linspace(x.min() - margin, x.max() + margin, n_points)[:, None]


def grid_rank_metric(grid: np.ndarray, threshold: float) -> Metric:
    """The Jacobian rank on the inputs ``grid`` (the notebook's 300 points in
    [min x, max x]) at the relative SVD threshold, recorded as ``jacobian_rank_grid``."""
    return Metric(
        "jacobian_rank_grid",
        lambda theta, model, data: jacobian_rank(model.jacobian(theta, grid), threshold),
        long_name=f"rank of phi(x) on {len(grid)} grid inputs, relative threshold {threshold:g}",
        units="count",
        dtype=np.int64,
    )


def prediction_metric(grid: np.ndarray) -> Metric:
    """The fitted function f_theta on the inputs ``grid``, recorded as ``prediction``."""
    return Metric(
        "prediction",
        lambda theta, model, data: model.predict(theta, grid),
        long_name="f_theta(x) on the plotting grid",
        dims=("x",),
    )


@EXPERIMENTS.register
class PaperRelu1D(ReluExperiment):
    """The 1-D regression experiment (module docstring)."""

    name = "paper_relu_1d"
    quantities: ClassVar[dict[str, str]] = {
        "train_loss": "final training loss (1/2n) sum r_i^2 (the notebook's MSE is twice it)",
        "feature_sparsity": "final feature sparsity on the training inputs, fraction",
        "jacobian_rank": "final rank of phi(x) on the grid inputs, count",
        "active_fraction": "final fraction of positive activations on the training inputs",
    }
    extra_keys: ClassVar[dict[str, Key]] = {
        "grid_points": Key("int", "inputs of the Jacobian-rank grid", default=300, minimum=1),
        "plot_points": Key("int", "inputs of the fitted-function grid", default=200, minimum=2),
        "snapshot_fractions": Key(
            "any", "fractions of the run at which the fitted function is drawn", default=[1.0]
        ),
    }

    def prepare_extra(self, top, checker, data, model, n_steps):
        fractions = top.get("snapshot_fractions", [1.0])
        ok = isinstance(fractions, list) and all(
            isinstance(f, int | float) and not isinstance(f, bool) and 0 <= f <= 1
            for f in fractions
        )
        if not ok or not fractions:
            checker.problem(
                "snapshot_fractions",
                f"must be a non-empty list of fractions of the run in [0, 1] (got {fractions!r})",
            )
            fractions = [1.0]
        steps = sorted({round(f * n_steps) for f in fractions}) if n_steps else []
        return {
            "grid_points": top.get("grid_points", 300),
            "plot_points": top.get("plot_points", 200),
            "snapshot_steps": steps,
        }

    def metrics(self, plan: ReluPlan) -> list:
        return [
            METRICS.make("feature_sparsity", threshold=plan.feature_threshold),
            METRICS.make("active_fraction"),
            grid_rank_metric(input_grid(plan.data, plan.extra["grid_points"]), plan.rank_threshold),
            prediction_metric(input_grid(plan.data, plan.extra["plot_points"], margin=0.1)),
        ]

    def report(self, plan: ReluPlan, runs: xr.Dataset):
        quantities = {
            "train_loss": final(runs, "train_loss"),
            "feature_sparsity": final(runs, "feature_sparsity"),
            "jacobian_rank": final(runs, "jacobian_rank_grid"),
            "active_fraction": final(runs, "active_fraction"),
        }
        out = curves(runs, ["train_loss", "feature_sparsity", "jacobian_rank_grid"])
        snapshots = runs["prediction"].sel(step=plan.extra["snapshot_steps"])
        out["prediction"] = snapshots.rename(step="snapshot").assign_coords(
            x=input_grid(plan.data, plan.extra["plot_points"], margin=0.1)[:, 0]
        )
        out["data_x"] = ("example", plan.data.X[:, 0])
        out["data_y"] = ("example", plan.data.y)
        return quantities, out

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        snapshots = ds["snapshot"].values
        n_cols = max(4, len(snapshots))
        fig, axes = plt.subplots(2, n_cols, figsize=(3.3 * n_cols, 6.4), squeeze=False)
        top = axes[0]
        plot_over_steps(top[0], ds, "train_loss_curve", log=True, ylabel="train loss")
        plot_over_steps(top[1], ds, "jacobian_rank_grid_curve", ylabel="rank phi(x), grid")
        plot_over_steps(top[2], ds, "feature_sparsity_curve", ylabel="feature sparsity")
        top[0].legend(fontsize=6.5)
        last = snapshots[-1]
        _plot_fit(top[3], ds, last, title=f"fit at step {last} (seed 0; SDE dashed)")
        for ax in top[4:]:
            ax.axis("off")
        for ax, step in zip(axes[1], snapshots, strict=False):
            _plot_fit(ax, ds, step, title=f"step {step}")
        for ax in axes[1][len(snapshots) :]:
            ax.axis("off")
        return finish_figure(fig, title, path)


def _plot_fit(ax, ds: xr.Dataset, step: int, *, title: str) -> None:
    """The fitted function of seed 0 of every run at ``step`` (SGD solid, SDE dashed),
    over the data."""
    styles = run_styles(ds["run"].values)
    x = ds["x"].values
    for name in ds["run"].values[::-1]:  # the first runs (the paper's main ones) on top
        f = ds["prediction"].sel(run=name, seed=0, snapshot=step).values
        ax.plot(x, f, lw=1.1, **styles[str(name)])
    ax.scatter(ds["data_x"].values, ds["data_y"].values, color="k", s=12, zorder=3)
    y = ds["data_y"].values
    ax.set_ylim(y.min() - 1.0, y.max() + 1.0)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
