"""Two-layer ReLU teacher-student on the unit circle (Andriushchenko et al., ICML 2023,
``fc_nets_two_layer.ipynb``; reference notes Sec. 2.4 and 4.4).

A teacher of m* = 3 unit-norm neurons with outputs +-1 labels n = 15 inputs on the unit
circle (d = 2); a student of m = 20 neurons without biases (W ~ 0.5 N(0, 1), a = 0) is
trained by SGD with batch size 1 at a small constant step size, or at a large one
divided at 10 / 30 / 50 % of the run. Reported at the end: test and training loss, the
parameter norm, the fraction of ReLU states (example, unit) flipped since the
initialization, the feature sparsity (threshold 0.99) and the Jacobian rank on the first
60 test inputs. The figure adds the neuron movement: an arrow from each student
neuron's initial to its final first-layer weight (the first seed that did not diverge),
teacher neurons in red, for SGD and for its SDE.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from sgdsde.analysis.plots import finish_figure
from sgdsde.experiments.base import EXPERIMENTS
from sgdsde.experiments.config import Key
from sgdsde.experiments.paper_relu import (
    SDE_PREFIX,
    SGD_PREFIX,
    TEST_LOSS_DOC,
    TEST_RANK_DOC,
    TRAIN_LOSS_DOC,
    ReluExperiment,
    ReluPlan,
    curves,
    final,
    jacobian_rank_on_test_inputs,
    plot_over_steps,
    rank_examples_key,
)
from sgdsde.metrics import METRICS
from sgdsde.metrics.features import relu_pattern_flips


def flip_fraction(model, params0: np.ndarray, params: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Fraction of (example, unit) ReLU states of the (single) hidden layer on inputs X
    that differ between params0 and params (both (T, p)), (T,)."""
    now, start = model.layer_features(params, X)[0], model.layer_features(params0, X)[0]
    return relu_pattern_flips(now, start) / (now.shape[1] * now.shape[2])


@EXPERIMENTS.register
class PaperReluTeacherStudent(ReluExperiment):
    """The two-layer teacher-student experiment (module docstring)."""

    name = "paper_relu_teacher_student"
    quantities: ClassVar[dict[str, str]] = {
        "test_loss": TEST_LOSS_DOC,
        "train_loss": TRAIN_LOSS_DOC,
        "param_norm": "final ||theta||_2 over both layers",
        "relu_flips": "fraction of (example, unit) ReLU states on the training inputs flipped "
        "since the initialization",
        "feature_sparsity": "final feature sparsity on the training inputs, fraction",
        "jacobian_rank": TEST_RANK_DOC,
    }
    extra_keys: ClassVar[dict[str, Key]] = {
        "rank_examples": rank_examples_key("the Jacobian rank", 60),
    }

    def prepare_extra(self, top, checker, data, model, n_steps):
        if model is not None and getattr(model, "name", "") != "two_layer_relu":
            checker.problem(
                "model.name", f"must be 'two_layer_relu' (got {model.name!r}): the student"
            )
        if model is not None and getattr(model, "bias", False):
            checker.problem("model.bias", "must be false: the notebook's student has no biases")
        if data is not None and data.d != 2:
            checker.problem("data.d", f"must be 2 for the neuron-movement plot (got {data.d})")
        return {"rank_examples": top.get("rank_examples", 60)}

    def metrics(self, plan: ReluPlan) -> list:
        return [
            METRICS.make("feature_sparsity", threshold=plan.feature_threshold),
            jacobian_rank_on_test_inputs(plan),
        ]

    def report(self, plan: ReluPlan, runs: xr.Dataset):
        model, m, d = plan.model, plan.model.m, plan.model.d
        params = runs["params"].transpose("run", "seed", "step", ...).values
        R, S = params.shape[:2]
        first, last = params[:, :, 0].reshape(R * S, -1), params[:, :, -1].reshape(R * S, -1)
        finite = np.isfinite(last).all(axis=1)
        flips = np.full(R * S, np.nan)
        flips[finite] = flip_fraction(model, first[finite], last[finite], plan.data.X)
        quantities = {
            "test_loss": final(runs, "test_loss"),
            "train_loss": final(runs, "train_loss"),
            "param_norm": final(runs, "param_norm"),
            "relu_flips": flips.reshape(R, S),
            "feature_sparsity": final(runs, "feature_sparsity"),
            "jacobian_rank": final(runs, "jacobian_rank"),
        }
        out = curves(runs, ["train_loss", "test_loss", "feature_sparsity", "jacobian_rank"])
        W = model.param_blocks()["W"]
        dims = ("run", "seed", "neuron", "coord")
        out["w_init"] = (dims, params[:, :, 0, W].reshape(R, S, m, d))
        out["w_final"] = (dims, params[:, :, -1, W].reshape(R, S, m, d))
        teacher = plan.data.config["teacher"]
        out["teacher_w"] = (("teacher", "coord"), np.asarray(teacher["W"]))
        out["teacher_a"] = (("teacher",), np.asarray(teacher["a"]))
        return quantities, out

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        names = [str(r) for r in ds["run"].values]
        bases = [n.partition(" ")[2] for n in names if n.startswith(SGD_PREFIX)]
        rows = [SGD_PREFIX] + ([SDE_PREFIX] if any(n.startswith(SDE_PREFIX) for n in names) else [])
        n_cols = max(4, len(bases))
        fig, axes = plt.subplots(
            1 + len(rows), n_cols, figsize=(3.4 * n_cols, 3.3 * (1 + len(rows))), squeeze=False
        )
        plot_over_steps(axes[0][0], ds, "train_loss_curve", log=True, ylabel="train loss")
        plot_over_steps(axes[0][1], ds, "test_loss_curve", log=True, ylabel="test loss")
        plot_over_steps(axes[0][2], ds, "jacobian_rank_curve", ylabel="rank phi(X), test")
        plot_over_steps(axes[0][3], ds, "feature_sparsity_curve", ylabel="feature sparsity")
        axes[0][0].legend(fontsize=6.5)
        for ax in axes[0][4:]:
            ax.axis("off")
        for row, prefix in enumerate(rows, start=1):
            for col in range(n_cols):
                ax = axes[row][col]
                if col >= len(bases):
                    ax.axis("off")
                    continue
                _neuron_movement(ax, ds, f"{prefix} {bases[col]}")
        return finish_figure(fig, title, path)


def _neuron_movement(ax, ds: xr.Dataset, run: str) -> None:
    """Arrows from each student neuron's initial to its final first-layer weight in the
    first seed where ``run`` did not diverge, the teacher neurons as red stars (a = +1)
    or crosses (a = -1)."""
    alive = np.flatnonzero(~ds["diverged"].sel(run=run).values)
    seed = int(alive[0]) if alive.size else 0
    w0 = ds["w_init"].sel(run=run, seed=seed).values
    w1 = ds["w_final"].sel(run=run, seed=seed).values
    ax.scatter(w0[:, 0], w0[:, 1], s=8, color="0.5", zorder=2)
    if alive.size:
        ax.quiver(
            w0[:, 0],
            w0[:, 1],
            w1[:, 0] - w0[:, 0],
            w1[:, 1] - w0[:, 1],
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.006,
            color="C0" if run.startswith(SGD_PREFIX) else "C1",
        )
    else:
        ax.text(0.5, 0.5, "every seed diverged", transform=ax.transAxes, ha="center")
    teacher, signs = ds["teacher_w"].values, ds["teacher_a"].values
    for w, a in zip(teacher, signs, strict=True):
        ax.plot([0, w[0]], [0, w[1]], color="red", lw=0.8)
        ax.scatter(w[0], w[1], color="red", marker="*" if a > 0 else "X", s=60, zorder=3)
    points = np.concatenate([w0, w1 if alive.size else w0, teacher])
    lim = 1.1 * float(np.abs(points).max())
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(f"{run} (seed {seed})", fontsize=8.5)
    ax.grid(alpha=0.3)
