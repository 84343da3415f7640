"""Stochastic collapse in the linear teacher-student network (Chen, Kunin, Yamamura,
Ganguli, NeurIPS 2023, Fig. 5; reference notes collapse-walk.md Sec. 1.3d).

The depth-2 diagonal linear network f(x) = sum_k a_k b_k x_k
(``LinearTeacherStudent``) on an orthogonal design, X^T X / n = I
(``linear_teacher_student_data(design="orthogonal")``), is a set of independent modes
s_k = a_k b_k. Label-noise GD at step eta with label variance delta = n sigma^2 (a
per-mode gradient noise of standard deviation sigma, the paper's sigma) drives mode k,
started balanced at a_k = b_k = 1, as

    d log s_k = 2 (hat s_k - tau - s_k) dt - 2 sqrt(2 tau) dB,   tau = eta sigma^2 / 2,

with hat s_k = (X^T y / n)_k the least-squares value of the mode (derivation in
``sgdsde.models.collapse.LinearTeacherStudent``). A mode collapses (s_k -> 0) iff
hat s_k < tau, and the others fluctuate around hat s_k - tau: label noise
soft-thresholds the least-squares modes by tau, ``soft_threshold``. The experiment runs
label-noise GD and its SDE (``LabelNoise``, dt = eta / ``sde_refine``) for every noise
level and sampling seed, and reports per run and seed the test loss of the
time-averaged modes, the fraction of collapsed modes, whether each mode far from the
threshold collapsed as predicted, and the ratio of the surviving modes' averages to the
prediction.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from sgdsde.analysis.plots import finish_figure
from sgdsde.data import RegressionData
from sgdsde.dynamics.sgd import GD, simulate_sgd
from sgdsde.experiments.base import EXPERIMENTS
from sgdsde.experiments.config import ConfigChecker, Key
from sgdsde.experiments.gallery import (
    PaperExperiment,
    PaperHeader,
    PaperPlan,
    plan_fields,
    reported_dataset,
    seed_children,
)
from sgdsde.experiments.tables import prepare_data, prepare_model
from sgdsde.models.collapse import LinearTeacherStudent
from sgdsde.sde.noise import LabelNoise
from sgdsde.sde.simulate import simulate_sde
from sgdsde.theory import soft_threshold, soft_threshold_level


def mode_values(model: LinearTeacherStudent, params: np.ndarray) -> np.ndarray:
    """The modes s_k = prod_l W[l, k] of parameters (..., depth * d), shape (..., d)."""
    params = np.asarray(params, dtype=float)
    return params.reshape(*params.shape[:-1], model.depth, model.d).prod(axis=-2)


@dataclasses.dataclass(frozen=True)
class LinearModesPlan(PaperPlan):
    """A validated ``paper_collapse_linear_modes`` config.

    data, model: the orthogonal-design data and the depth-2 balanced network.
    n_steps, lr: label-noise GD's length and step size. sigmas: the per-mode noise
    levels (label variance n sigma^2). sde_refine: the SDE's dt = lr / sde_refine.
    average_from: the fraction of the run after which the modes are averaged, over
    ``n_average`` save points. collapse_threshold: a mode below it at the end has
    collapsed. margin: modes with |hat s - tau| <= margin are left out of the
    agreement and ratio (their collapse is too slow to decide in the run).
    """

    data: RegressionData | None = None
    model: LinearTeacherStudent | None = None
    n_steps: int = 0
    lr: float = 0.0
    sigmas: tuple[float, ...] = ()
    sde_refine: int = 1
    average_from: float = 0.5
    n_average: int = 100
    collapse_threshold: float = 1e-4
    margin: float = 0.1


def run_name(method: str, sigma: float) -> str:
    """The run of ``method`` ("GD" or "SDE") at noise level ``sigma``, e.g. "GD sigma=5"."""
    return f"{method} sigma={sigma:g}"


@EXPERIMENTS.register
class CollapseLinearModes(PaperExperiment):
    """Chen et al. (2023), Fig. 5: label noise soft-thresholds the modes of a linear
    teacher-student network; label-noise GD beside its SDE."""

    name = "paper_collapse_linear_modes"
    quantities: ClassVar[dict[str, str]] = {
        "test_loss": "mean over modes of (time-averaged s_k - teacher_k)^2 (the paper's "
        "mean of (W - W*)^2 over entries)",
        "collapsed_fraction": "fraction of the modes below collapse_threshold at the end",
        "collapse_agreement": "fraction of the modes with |hat s - tau| > margin that "
        "collapsed iff hat s < tau",
        "threshold_ratio": "sum of the time-averaged surviving modes (hat s > tau + margin) "
        "over the sum of their predictions hat s - tau (1: soft-thresholding by tau)",
    }
    extra_keys: ClassVar[dict[str, Key]] = {
        "n_steps": Key("int", "label-noise GD steps", required=True, minimum=1),
        "lr": Key("number", "the step size eta", required=True, positive=True),
        "sigmas": Key(
            "any", "per-mode label-noise levels sigma (label variance n sigma^2)", required=True
        ),
        "sde_refine": Key("int", "the SDE's dt is lr / sde_refine", default=2, minimum=1),
        "average_from": Key(
            "number", "fraction of the run after which modes are averaged", default=0.5
        ),
        "n_average": Key("int", "save points in the averaging window", default=100, minimum=2),
        "collapse_threshold": Key(
            "number", "a mode below it at the end has collapsed", default=1e-4, positive=True
        ),
        "margin": Key("number", "modes within it of the threshold are undecided", default=0.1),
        "data": Key("table", "[data]: generator linear_teacher_student, design orthogonal", True),
        "model": Key("table", "[model]: linear_teacher_student, depth 2, constant init", True),
    }

    def prepare_experiment(
        self, config: dict[str, Any], top: dict[str, Any], header: PaperHeader, checker
    ) -> LinearModesPlan:
        data = prepare_data(checker, top.get("data"))
        if data is not None and data.config.get("design") != "orthogonal":
            checker.problem(
                "data.design",
                'must be "orthogonal" (with generator = "linear_teacher_student"): the '
                "modes decouple, and the prediction holds, only when X^T X / n is diagonal",
            )
        model = prepare_model(checker, top.get("model"), data)
        if model is not None and not (
            isinstance(model, LinearTeacherStudent)
            and model.depth == 2
            and model.init_scheme == "constant"
        ):
            checker.problem(
                "model",
                'must be name = "linear_teacher_student" with depth = 2 and init_scheme = '
                '"constant" (balanced modes: the setting of the prediction)',
            )
        sigmas = _sigmas(checker, top.get("sigmas"))
        average_from = top.get("average_from", 0.5)
        if not 0 <= average_from < 1:
            checker.problem("average_from", f"must be in [0, 1) (got {average_from!r})")
        margin = top.get("margin", 0.1)
        if margin < 0:
            checker.problem("margin", f"must be >= 0 (got {margin!r})")
        runs = tuple(run_name(m, s) for m in ("GD", "SDE") for s in sigmas)
        return LinearModesPlan(
            **plan_fields(config, top, header, runs),
            data=data,
            model=model,
            n_steps=top.get("n_steps", 1),
            lr=float(top.get("lr", 1.0)),
            sigmas=sigmas,
            sde_refine=top.get("sde_refine", 2),
            average_from=float(average_from),
            n_average=top.get("n_average", 100),
            collapse_threshold=float(top.get("collapse_threshold", 1e-4)),
            margin=float(margin),
        )

    def run(self, plan, *, engine="numba", progress=False) -> xr.Dataset:
        return self.finish(plan, run_linear_modes(plan, engine=engine, progress=progress))

    def plot(self, ds, path=None, *, title=None):
        return plot_linear_modes(ds, path, title=title)


def _sigmas(checker: ConfigChecker, value: Any) -> tuple[float, ...]:
    ok = (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(np.isfinite(v) and v >= 0 for v in value)
    )
    if not ok:
        checker.problem(
            "sigmas", f"must be a non-empty list of numbers >= 0 (got {value!r}), e.g. [0, 5, 10]"
        )
        return ()
    if len(set(value)) != len(value):
        checker.problem("sigmas", f"must be distinct (got {value!r})")
    return tuple(float(v) for v in value)


def _save_steps(plan: LinearModesPlan) -> np.ndarray:
    start = int(plan.average_from * plan.n_steps)
    return np.unique(np.linspace(start, plan.n_steps, plan.n_average).round().astype(np.int64))


def run_linear_modes(plan: LinearModesPlan, *, engine="numba", progress=False) -> xr.Dataset:
    """Label-noise GD and its SDE for every noise level and seed (one batched call
    each; trajectory (level, seed s) uses seed s's root), reduced to the reported
    quantities and the mode values the figure draws."""
    data, model, n = plan.data, plan.model, plan.data.n
    n_seeds, levels = plan.header.n_seeds, np.asarray(plan.sigmas)
    seeds = seed_children(plan.header.seed, n_seeds) * len(levels)
    delta = list(np.repeat(n * levels**2, n_seeds))
    save = _save_steps(plan)
    gd = simulate_sgd(
        model,
        data,
        plan.lr,
        n_steps=plan.n_steps,
        sgd=GD(label_noise=delta),
        seed=seeds,
        save_steps=save,
        save_params=True,
        engine=engine,
        progress=progress,
    )
    k = plan.sde_refine
    sde = simulate_sde(
        model,
        data,
        LabelNoise(delta=delta, lr=plan.lr, batch_size=n),
        dt=plan.lr / k,
        n_steps=plan.n_steps * k,
        seed=seeds,
        save_steps=save * k,
        save_params=True,
        progress=progress,
    )
    shape = (len(levels), n_seeds)
    modes = np.concatenate(
        [
            mode_values(model, ds["params"].values).reshape(*shape, len(save), data.d)
            for ds in (gd, sde)
        ]
    )  # (run, seed, save, mode)
    diverged = np.concatenate([ds["diverged"].values.reshape(shape) for ds in (gd, sde)])
    return linear_modes_dataset(plan, modes, diverged)


def linear_modes_dataset(
    plan: LinearModesPlan, modes: np.ndarray, diverged: np.ndarray
) -> xr.Dataset:
    """The reported quantities of mode values ``modes`` (run, seed, save point, mode)
    over the averaging window (the last save point is the end of the run), with the
    time-averaged and final modes, hat s, the teacher and tau per run."""
    data = plan.data
    s_hat = data.X.T @ data.y / data.n
    teacher = np.asarray(data.beta_star, dtype=float)
    tau = np.tile(soft_threshold_level(plan.lr, plan.sigmas), 2)[:, None, None]  # (run,1,1)
    average, final = modes.mean(axis=2), modes[:, :, -1]
    collapsed = final < plan.collapse_threshold
    decided = np.abs(s_hat - tau) > plan.margin
    predicted = s_hat < tau
    agree = np.where(decided, collapsed == predicted, False).sum(-1) / decided.sum(-1)
    survivors = s_hat > tau + plan.margin
    ratio = np.where(survivors, average, 0).sum(-1) / np.where(
        survivors, soft_threshold(s_hat, tau), 0
    ).sum(-1)
    quantities = {
        "test_loss": np.mean((average - teacher) ** 2, axis=-1),
        "collapsed_fraction": collapsed.mean(axis=-1),
        "collapse_agreement": agree,
        "threshold_ratio": ratio,
    }
    ds = reported_dataset(plan.run_names, quantities, diverged)
    ds = ds.assign_coords(
        mode=np.arange(data.d),
        s_hat=("mode", s_hat),
        teacher=("mode", teacher),
        sigma=("run", np.tile(plan.sigmas, 2)),
        tau=("run", tau[:, 0, 0]),
        method=("run", np.repeat(["GD", "SDE"], len(plan.sigmas)).astype(object)),
    )
    ds["mode_average"] = (("run", "seed", "mode"), average)
    ds["mode_average"].attrs["long_name"] = "time-averaged mode value s_k"
    ds["mode_final"] = (("run", "seed", "mode"), final)
    ds["mode_final"].attrs["long_name"] = "mode value s_k at the end of the run"
    ds.attrs.update(lr=plan.lr, sde_dt=plan.lr / plan.sde_refine, n_steps=plan.n_steps)
    return ds


def plot_linear_modes(ds: xr.Dataset, path: str | Path | None = None, *, title=None):
    """Three panels: time-averaged modes against hat s per noise level (GD dots, SDE
    crosses; medians over seeds) with the soft threshold max(hat s - tau, 0); the test
    loss against sigma (median, min-max bars) with the soft-threshold prediction's; the
    collapsed fraction against sigma with the predicted fraction (hat s < tau)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    s_hat, teacher = ds["s_hat"].values, ds["teacher"].values
    gd = ds.sel(run=ds["method"].values == "GD")
    sde = ds.sel(run=ds["method"].values == "SDE")
    sigmas, taus = gd["sigma"].values, gd["tau"].values
    grid = np.linspace(min(s_hat.min(), 0), s_hat.max() * 1.05, 200)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax = axes[0]
    for i, (sigma, tau) in enumerate(zip(sigmas, taus, strict=True)):
        c = colors[i % len(colors)]
        ax.plot(grid, soft_threshold(grid, tau), color=c, lw=1, alpha=0.8)
        ax.plot(
            s_hat,
            gd["mode_average"].median("seed").values[i],
            "o",
            color=c,
            ms=3.5,
            label=f"sigma={sigma:g} (tau={tau:.3g})",
        )
        ax.plot(s_hat, sde["mode_average"].median("seed").values[i], "x", color=c, ms=4)
    ax.plot(
        s_hat[teacher != 0],
        np.zeros((teacher != 0).sum()),
        "|",
        color="k",
        ms=10,
        label="teacher modes",
    )
    ax.set(
        xlabel="least-squares mode value hat s_k",
        ylabel="time-averaged s_k",
        title="modes (dots GD, crosses SDE) and max(hat s - tau, 0)",
    )
    ax.legend(fontsize=7)
    for ax, q, ylabel in (
        (axes[1], "test_loss", "test loss (mean (s - s*)^2)"),
        (axes[2], "collapsed_fraction", "collapsed fraction of modes"),
    ):
        for sub, marker, label in ((gd, "o-", "label-noise GD"), (sde, "x--", "SDE")):
            v = sub[q].where(~sub["diverged"])
            med = v.median("seed").values
            ax.errorbar(
                sigmas,
                med,
                yerr=[med - v.min("seed").values, v.max("seed").values - med],
                fmt=marker,
                capsize=3,
                label=label,
            )
        if q == "test_loss":
            pred = np.mean((soft_threshold(s_hat, taus[:, None]) - teacher) ** 2, axis=-1)
        else:
            pred = np.mean(s_hat < taus[:, None], axis=-1)
        ax.plot(sigmas, pred, "k:", label="prediction (soft threshold)")
        ax.set(xlabel="label-noise level sigma", ylabel=ylabel, title=ylabel)
        ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    return finish_figure(fig, title, path)
