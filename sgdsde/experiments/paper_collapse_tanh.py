"""Gallery kind ``paper_collapse_tanh``: the single tanh neuron of Chen et al.,
"Stochastic Collapse" (NeurIPS 2023), Fig. 2 (reference notes collapse-walk.md
Sec. 1.3b).

f(x) = w2 tanh(w1 x) (``TanhNeuron``) on n points; w = 0 is invariant. Near 0 the loss
is a saddle: in u = w1 + w2, v = w1 - w2 the linearized dynamics are independent
geometric Brownian motions. Under the paper's label-noise SDE (label variance delta,
batch 1: ``LabelNoise(delta, eta, 1)``) the exponent of u is c - eta delta m2 / 2 with
c = mean(x y), m2 = mean(x^2), so the origin attracts iff

    eta delta sigma'(0) / 2 > sum(x y) / sum(x^2)        (sigma'(0) = tanh'(0) = 1),

the paper's Theorem 5.1 (``label_noise_threshold``). Three dynamics per step size eta
(one run each):

* ``SDE eta=...``: the paper's label-noise SDE at ``dt``, to time T = n_steps dt;
* ``SGD eta=...``: exact label-noise SGD at batch 1 (label variance delta) to the same
  time, round(T / eta) steps;
* ``SGD-SDE eta=...``: that SGD's own SDE, ``SGDNoise`` (label noise plus the minibatch
  sampling noise), at ``dt``. Near 0 the sampling noise is multiplicative too (the
  per-example gradient is x_i y_i J w), so it adds Var_i(x_i y_i) to delta m2 and lowers
  the threshold (``matched_sde_threshold``); the discrete SGD map
  w <- (I + eta x_i (y_i - xi) J) w has the exact exponents
  mean_i E log|1 +- eta x_i (y_i - xi)| per step (``sgd_threshold``).

A trajectory has collapsed when ||w|| < ``collapse_radius`` (the paper: 1e-2). Per seed
index, the collapse fraction is over its ``n_paths`` trajectories from
w0 ~ ``init_scale`` N(0, I) (the model's init, drawn from the same seeds for every run),
at each time of ``fractions`` of T (the table: at T). The measured threshold of a
dynamics and seed index is the step size where its collapse fraction at T first reaches
1/2 (linear interpolation between the grid's step sizes).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from sgdsde.analysis.plots import finish_figure
from sgdsde.data import RegressionData
from sgdsde.dynamics.sgd import SGD, simulate_sgd
from sgdsde.experiments.base import EXPERIMENTS
from sgdsde.experiments.config import ConfigChecker, Key
from sgdsde.experiments.gallery import (
    PaperExperiment,
    PaperHeader,
    PaperPlan,
    plan_fields,
    reported_dataset,
)
from sgdsde.experiments.paper_collapse import (
    fraction_steps,
    fractions_of_run,
    grid_shape,
    linear_grid,
    path_seeds,
    prepare_1d_data,
    threshold_table,
)
from sgdsde.models.collapse import TanhNeuron
from sgdsde.sde.noise import LabelNoise, SGDNoise
from sgdsde.sde.simulate import simulate_sde
from sgdsde.theory import (
    label_noise_threshold,
    matched_sde_threshold,
    sgd_exponent,
    sgd_threshold,
    tanh_collapse_moments,
)

#: The three dynamics of every step size, in run order.
DYNAMICS = ("SDE", "SGD", "SGD-SDE")


def half_crossing(etas: np.ndarray, fractions: np.ndarray) -> float:
    """The first step size where ``fractions`` (one per eta, increasing etas) reaches
    1/2, linearly interpolated between the finite neighbours (a NaN, a diverged step
    size, is skipped); NaN if it never does (or starts at >= 1/2).

    etas: step sizes (k,). fractions: collapse fractions there (k,), NaN for diverged.
    """
    ok = np.isfinite(fractions)
    etas, fractions = np.asarray(etas)[ok], np.asarray(fractions)[ok]
    for i in range(1, len(etas)):
        lo, hi = fractions[i - 1], fractions[i]
        if lo < 0.5 <= hi:
            return float(etas[i - 1] + (0.5 - lo) / (hi - lo) * (etas[i] - etas[i - 1]))
    return math.nan


TANH_KEYS: dict[str, Key] = {
    "data": Key("table", "[data]: generator = 'tanh_neuron' (or other 1-D data) and options", True),
    "init_scale": Key("number", "w0 ~ init_scale N(0, I_2)", default=0.001, minimum=0),
    "etas": Key("any", "the step sizes eta (one run per dynamics each), numbers > 0", True),
    "label_noise": Key(
        "number", "the label-noise variance delta (zeta^2)", default=1.0, positive=True
    ),
    "dt": Key("number", "the SDEs' Euler-Maruyama step", default=0.02, positive=True),
    "n_steps": Key("int", "the SDEs' steps; the time horizon is T = n_steps dt", True, minimum=1),
    "fractions": Key("any", "the times, as fractions of T, of the collapse fractions"),
    "n_paths": Key("int", "trajectories per run and seed index", default=16, minimum=1),
    "collapse_radius": Key(
        "number", "||w|| below it counts as collapsed", default=0.01, positive=True
    ),
}


@dataclasses.dataclass(frozen=True)
class TanhPlan(PaperPlan):
    """A validated ``paper_collapse_tanh`` config (keys: ``TANH_KEYS``)."""

    data: RegressionData | None
    init_scale: float
    etas: tuple[float, ...]
    label_noise: float
    dt: float
    n_steps: int
    fractions: tuple[float, ...]
    n_paths: int
    collapse_radius: float


def run_name(dynamics: str, eta: float) -> str:
    """The run of ``dynamics`` (one of ``DYNAMICS``) at step size eta, e.g. 'SGD eta=1.5'."""
    return f"{dynamics} eta={eta:g}"


@EXPERIMENTS.register
class TanhCollapse(PaperExperiment):
    """The tanh neuron's collapse over the step size (module docstring)."""

    name = "paper_collapse_tanh"
    quantities: ClassVar[dict[str, str]] = {
        "collapse_fraction": "fraction of paths with ||w|| < collapse_radius at time T",
    }
    extra_keys: ClassVar[dict[str, Key]] = TANH_KEYS

    def prepare_experiment(
        self,
        config: dict[str, Any],
        top: dict[str, Any],
        header: PaperHeader,
        checker: ConfigChecker,
    ) -> TanhPlan:
        data = prepare_1d_data(checker, top.get("data"), "the tanh neuron")
        etas = linear_grid(checker, top, "etas", positive=True)
        if etas is not None and np.any(np.diff(etas) <= 0):
            checker.problem("etas", f"must increase (got {etas.tolist()}): sort them")
        fractions = fractions_of_run(checker, "fractions", top.get("fractions", [0.25, 0.5, 1.0]))
        etas = () if etas is None else tuple(etas.tolist())
        names = [run_name(d, eta) for d in DYNAMICS for eta in etas]
        return TanhPlan(
            **plan_fields(config, top, header, names),
            data=data,
            init_scale=float(top.get("init_scale", 0.001)),
            etas=etas,
            label_noise=float(top.get("label_noise", 1.0)),
            dt=float(top.get("dt", 0.02)),
            n_steps=int(top.get("n_steps", 1)),
            fractions=fractions or (1.0,),
            n_paths=top.get("n_paths", 16),
            collapse_radius=float(top.get("collapse_radius", 0.01)),
        )

    def run(self, plan: TanhPlan, *, engine: str = "numba", progress: bool = False) -> xr.Dataset:
        R, S, N = len(plan.etas), plan.header.n_seeds, plan.n_paths
        seeds = path_seeds(plan.header.seed, R, S, N)  # one block of runs: common numbers
        model, data, delta = TanhNeuron(plan.init_scale), plan.data, plan.label_noise
        lr = np.repeat(np.asarray(plan.etas), S * N).tolist()
        save = fraction_steps(plan.fractions, plan.n_steps)
        collapsed, diverged = {}, {}
        for dynamics, noise in (
            ("SDE", LabelNoise(delta, lr, 1)),
            ("SGD-SDE", SGDNoise(lr, 1, delta)),
        ):
            # euler_numba: below 32 examples it is the default, and from 32 on it is still
            # faster than euler_torch for this two-parameter model
            ds = simulate_sde(
                model, data, noise, dt=plan.dt, n_steps=plan.n_steps, seed=seeds,
                save_steps=save, solver="euler_numba", progress=progress,
            )  # fmt: skip
            collapsed[dynamics] = grid_shape(ds["param_norm"].values[:, 1:], R, S)
            diverged[dynamics] = grid_shape(ds["diverged"].values, R, S)
        horizon = plan.n_steps * plan.dt
        sgd_parts = []
        for r, eta in enumerate(plan.etas):
            steps = max(1, round(horizon / eta))
            ds = simulate_sgd(
                model, data, eta, n_steps=steps, sgd=SGD(1, delta),
                seed=seeds[r * S * N : (r + 1) * S * N],
                save_steps=fraction_steps(plan.fractions, steps),
                engine=engine, progress=progress,
            )  # fmt: skip
            sgd_parts.append((ds["param_norm"].values[:, 1:], ds["diverged"].values))
        collapsed["SGD"] = grid_shape(np.concatenate([p[0] for p in sgd_parts]), R, S)
        diverged["SGD"] = grid_shape(np.concatenate([p[1] for p in sgd_parts]), R, S)
        return self.finish(plan, _assemble(plan, collapsed, diverged, self.quantities))

    def table(self, ds: xr.Dataset) -> str:
        """``gallery_table`` and the thresholds: measured (where the collapse fraction at
        T reaches 1/2) beside predicted."""
        return threshold_table(ds, {"predicted": "predicted_threshold"}, _eta)

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        return plot_tanh(ds, path, title=title)


def _eta(value: float) -> str:
    """A threshold step size for the table; NaN: none in the grid (or none predicted)."""
    return f"{value:.3f}" if math.isfinite(value) else "none"


def _assemble(plan: TanhPlan, norms: dict, diverged: dict, docs: dict) -> xr.Dataset:
    """The reported dataset: collapse fractions at T per run and seed, the curves over
    time, and the thresholds (measured per seed, predicted)."""
    R, S = len(plan.etas), plan.header.n_seeds
    curves, flags = [], []
    for d in DYNAMICS:
        fraction = (norms[d] < plan.collapse_radius).mean(axis=2)  # (R, S, time)
        bad = diverged[d].any(axis=2)
        curves.append(np.where(bad[..., None], np.nan, fraction))
        flags.append(bad)
    curve = np.concatenate(curves)  # (3 R, S, time), runs in DYNAMICS order
    flag = np.concatenate(flags)
    ds = reported_dataset(
        plan.run_names,
        {"collapse_fraction": curve[..., -1]},
        flag,
        attrs={q: {"long_name": doc} for q, doc in docs.items()},
    )
    ds["collapse_curve"] = (("run", "seed", "fraction"), curve, {"long_name": "collapse fraction"})
    ds = ds.assign_coords(
        eta=("run", np.tile(np.asarray(plan.etas), len(DYNAMICS))),
        dynamics_of_run=("run", np.repeat(np.array(DYNAMICS, dtype=object), R)),
        fraction=("fraction", np.asarray(plan.fractions)),
        dynamics=("dynamics", np.array(DYNAMICS, dtype=object)),
    )
    etas = np.asarray(plan.etas)
    measured = [
        [half_crossing(etas, curve[i * R : (i + 1) * R, s, -1]) for s in range(S)]
        for i in range(len(DYNAMICS))
    ]
    ds["measured_threshold"] = (
        ("dynamics", "seed"),
        np.asarray(measured),
        {"long_name": "step size where the collapse fraction at T reaches 1/2"},
    )
    x, y, delta = plan.data.X[:, 0], plan.data.y, plan.label_noise
    predicted = [
        label_noise_threshold(x, y, delta),
        sgd_threshold(x, y, delta),
        matched_sde_threshold(x, y, delta),
    ]
    ds["predicted_threshold"] = (
        ("dynamics",),
        np.asarray(predicted),
        {"long_name": "Thm 5.1 (SDE); the discrete map's exponent (SGD); SGDNoise (SGD-SDE)"},
    )
    ds["x_train"] = ("example", x, {"long_name": "training inputs"})
    ds["y_train"] = ("example", y, {"long_name": "training labels"})
    ds.attrs.update(
        horizon=plan.n_steps * plan.dt,
        dt=plan.dt,
        label_noise=delta,
        collapse_radius=plan.collapse_radius,
        n_paths=plan.n_paths,
    )
    return ds


def plot_tanh(ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
    """Left: the collapse fraction at T over the step size per dynamics (median over
    seeds, band min-max; the paper's SDE also at earlier times, thin), the predicted
    thresholds as vertical lines. Right: the predicted exponents of u = w1 + w2 near 0."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.9))
    styles = {"SDE": ("C0", "-"), "SGD": ("C2", "-"), "SGD-SDE": ("C1", "--")}
    labels = {
        "SDE": "label-noise SDE (paper)",
        "SGD": "label-noise SGD, B = 1",
        "SGD-SDE": "SGD's SDE (label + sampling)",
    }
    horizon = float(ds.attrs["horizon"])
    for d in ds["dynamics"].values:
        run = ds.where(ds["dynamics_of_run"] == d, drop=True)
        eta, v = run["eta"].values, run["collapse_curve"].values
        color, ls = styles[d]
        with warnings.catch_warnings():  # all-NaN rows: diverged runs
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(v[..., -1], axis=1)
            left.fill_between(eta, np.nanmin(v[..., -1], axis=1), np.nanmax(v[..., -1], axis=1),
                              color=color, alpha=0.15, lw=0)  # fmt: skip
            if d == "SDE":
                for k, f in enumerate(ds["fraction"].values[:-1]):
                    left.plot(eta, np.nanmedian(v[..., k], axis=1), color=color, lw=0.8,
                              alpha=0.5, ls=":", label=f"SDE at t = {f * horizon:g}")  # fmt: skip
        left.plot(eta, med, "o", ls=ls, ms=3, color=color, label=f"{labels[d]}, t = {horizon:g}")
        left.axvline(float(ds["predicted_threshold"].sel(dynamics=d)), color=color, ls="--", lw=1)
    left.set(xlabel=r"step size $\eta$", ylabel=r"collapse fraction ($\|w\|$ < radius)")
    left.legend(fontsize=7, title="dashed verticals: predicted thresholds", title_fontsize=7)
    eta = np.linspace(ds["eta"].values.min(), ds["eta"].values.max(), 60)
    x, y = ds["x_train"].values, ds["y_train"].values
    c, m2, var = tanh_collapse_moments(x, y)
    delta = float(ds.attrs["label_noise"])
    right.plot(eta, c - eta * delta * m2 / 2, color="C0", label=labels["SDE"])
    right.plot(eta, c - eta * (var + delta * m2) / 2, color="C1", ls="--", label=labels["SGD-SDE"])
    coarse = eta[::3]
    right.plot(coarse, [sgd_exponent(x, y, delta, e) for e in coarse], color="C2",
               label=labels["SGD"] + " (exact map)")  # fmt: skip
    right.axhline(0, color="gray", lw=0.8)
    right.set(xlabel=r"step size $\eta$", ylabel="exponent of w1 + w2 near 0, per unit time")
    right.legend(fontsize=7.5)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    default = "Tanh neuron: collapse over the step size (Chen et al. 2023, Fig. 2)"
    return finish_figure(fig, title or default, path)
