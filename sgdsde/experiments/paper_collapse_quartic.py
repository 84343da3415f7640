"""Gallery kind ``paper_collapse_quartic``: the quartic well of Chen et al., "Stochastic
Collapse" (NeurIPS 2023), Fig. 1 (reference notes collapse-walk.md Sec. 1.3a).

The SDE d theta = -(theta^3 - mu theta) dt + zeta theta dB (``QuarticWell`` on
``quartic_well_data``, drift -grad L, diagonal diffusion zeta theta) has the invariant
point theta = 0, a local maximum of the loss. By Ito,
d log|theta| = (mu - zeta^2/2 - theta^2) dt + zeta dB, so near 0 log|theta| grows at the
rate mu - zeta^2/2 and the origin attracts iff zeta > sqrt(2 mu).

Two measurements per noise level zeta (one run each) and seed index:

* the collapse fraction: of ``n_paths`` trajectories from theta0 ~ N(0, init_std^2),
  the fraction with theta^2 < ``collapse_level`` at each time of ``fractions`` of the
  run (``n_steps`` Euler-Maruyama steps of ``dt``). At a fixed time it does not switch
  at the threshold: just above it log|theta| falls slowly and needs long to reach the
  level;
* the growth rate of log|theta| near 0 (the sharp test): ``n_paths`` trajectories from
  theta0 = ``growth_init`` (so small that theta^2 stays negligible) for ``growth_time``,
  rate = mean over paths of (log|theta_T| - log|theta_0|) / T, which changes sign at the
  threshold. The same rate is measured for label-noise GD at step ``gd_lr`` with label
  variance zeta^2 / (2 gd_lr): on this one-example model, label-noise GD is
  theta <- theta (1 - eta (theta^2 - mu) - zeta sqrt(eta) z), the Euler-Maruyama step of
  the SDE at dt = eta, so it is exact SGD of which the SDE is the model, and at a finite
  step its rate is E log|1 + mu eta + zeta sqrt(eta) z| / eta (``discrete_growth_rate``),
  which shifts the threshold.

The measured threshold of a seed index is where the rate, fitted linearly in zeta^2 over
the runs with zeta in ``fit_range``, crosses 0; the table prints it beside sqrt(2 mu).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from sgdsde.analysis.plots import finish_figure
from sgdsde.data import quartic_well_data
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
    gaussian_starts,
    grid_shape,
    interval,
    linear_grid,
    path_seeds,
    threshold_table,
)
from sgdsde.models.collapse import QuarticWell
from sgdsde.sde.simulate import simulate_sde
from sgdsde.sde.terms import DiagonalDiffusion, SDETerms, sde_kernel
from sgdsde.theory import discrete_growth_rate, discrete_threshold, sde_threshold


@sde_kernel
def multiplicative_noise(theta, t, params, out):
    """g(theta) = zeta theta, zeta = params[0]: the quartic well's diffusion."""
    out[0] = params[0] * theta[0]


def fitted_threshold(zetas: np.ndarray, rates: np.ndarray) -> float:
    """The zeta where the least-squares line rate = a + b zeta^2 crosses 0,
    sqrt(-a / b); NaN when the line does not cross at a real zeta (b >= 0 or a < 0) or
    fewer than two finite rates are given.

    zetas: noise levels (k,). rates: the measured growth rates there (k,).
    """
    zetas, rates = np.asarray(zetas, dtype=float), np.asarray(rates, dtype=float)
    ok = np.isfinite(rates)
    if ok.sum() < 2:
        return math.nan
    b, a = np.polyfit(zetas[ok] ** 2, rates[ok], 1)
    if b >= 0 or a < 0:
        return math.nan
    return math.sqrt(-a / b)


QUARTIC_KEYS: dict[str, Key] = {
    "mu": Key(
        "number", "the well's mu (minima +-sqrt(mu); threshold sqrt(2 mu))", True, positive=True
    ),
    "zetas": Key("any", "the noise levels zeta (one run each), a list of numbers >= 0", True),
    "dt": Key("number", "the Euler-Maruyama step", default=0.0025, positive=True),
    "n_steps": Key("int", "Euler-Maruyama steps of the collapse runs", True, minimum=1),
    "fractions": Key("any", "the times, as fractions of the run, of the collapse fractions"),
    "n_paths": Key("int", "trajectories per run and seed index", default=32, minimum=1),
    "init_std": Key(
        "number", "theta0 ~ N(0, init_std^2) for the collapse runs", default=2.0, positive=True
    ),
    "collapse_level": Key(
        "number", "theta^2 below it counts as collapsed", default=1e-30, positive=True
    ),
    "growth_time": Key(
        "number", "the time over which the growth rate is measured", default=40.0, positive=True
    ),
    "growth_init": Key(
        "number", "theta0 of the growth-rate runs (near 0)", default=1e-100, positive=True
    ),
    "gd_lr": Key(
        "number", "the step of the label-noise GD beside the SDE", default=0.05, positive=True
    ),
    "fit_range": Key("any", "[lo, hi]: the zetas whose rates enter the threshold fit"),
}


@dataclasses.dataclass(frozen=True)
class QuarticPlan(PaperPlan):
    """A validated ``paper_collapse_quartic`` config (keys: ``QUARTIC_KEYS``)."""

    mu: float
    zetas: tuple[float, ...]
    dt: float
    n_steps: int
    fractions: tuple[float, ...]
    n_paths: int
    init_std: float
    collapse_level: float
    growth_time: float
    growth_init: float
    gd_lr: float
    fit_range: tuple[float, float]


def run_name(zeta: float) -> str:
    """The run of noise level zeta, e.g. 'zeta=1.75'."""
    return f"zeta={zeta:g}"


@EXPERIMENTS.register
class QuarticCollapse(PaperExperiment):
    """The quartic well's collapse over the noise level (module docstring)."""

    name = "paper_collapse_quartic"
    quantities: ClassVar[dict[str, str]] = {
        "collapse_fraction": "fraction of paths with theta^2 < collapse_level at the final time",
        "growth_rate": "SDE: mean growth rate of log|theta| near 0, per unit time",
        "growth_rate_gd": "label-noise GD at step gd_lr: the same rate, per unit time (t = k eta)",
    }
    extra_keys: ClassVar[dict[str, Key]] = QUARTIC_KEYS

    def prepare_experiment(
        self,
        config: dict[str, Any],
        top: dict[str, Any],
        header: PaperHeader,
        checker: ConfigChecker,
    ) -> QuarticPlan:
        zetas = linear_grid(checker, top, "zetas", positive=False)
        fractions = fractions_of_run(
            checker, "fractions", top.get("fractions", [0.125, 0.25, 0.5, 1.0])
        )
        fit = interval(checker, "fit_range", top.get("fit_range", [1.0, 2.5]))
        names = tuple(run_name(z) for z in (() if zetas is None else zetas))
        return QuarticPlan(
            **plan_fields(config, top, header, names),
            mu=float(top.get("mu", 1.0)),
            zetas=tuple(() if zetas is None else zetas.tolist()),
            dt=float(top.get("dt", 0.0025)),
            n_steps=int(top.get("n_steps", 1)),
            fractions=fractions or (1.0,),
            n_paths=top.get("n_paths", 32),
            init_std=float(top.get("init_std", 2.0)),
            collapse_level=float(top.get("collapse_level", 1e-30)),
            growth_time=float(top.get("growth_time", 40.0)),
            growth_init=float(top.get("growth_init", 1e-100)),
            gd_lr=float(top.get("gd_lr", 0.05)),
            fit_range=fit or (0.0, math.inf),
        )

    def run(
        self, plan: QuarticPlan, *, engine: str = "numba", progress: bool = False
    ) -> xr.Dataset:
        R, S, N = len(plan.zetas), plan.header.n_seeds, plan.n_paths
        seeds = path_seeds(plan.header.seed, R, S, N)
        zeta = np.repeat(np.asarray(plan.zetas), S * N)
        terms = SDETerms(diffusion=DiagonalDiffusion(multiplicative_noise), params=zeta[:, None])
        curve, times, diverged = _collapse_runs(plan, terms, seeds, progress)
        rates, growth_diverged = _growth_runs(plan, terms, seeds, zeta, engine, progress)
        diverged |= growth_diverged
        ds = reported_dataset(
            plan.run_names,
            {
                "collapse_fraction": curve[..., -1],
                "growth_rate": rates[0],
                "growth_rate_gd": rates[1],
            },
            diverged,
            attrs={q: {"long_name": doc} for q, doc in self.quantities.items()},
        )
        ds = ds.assign_coords(zeta=("run", np.asarray(plan.zetas)), time=("time", times))
        ds["collapse_curve"] = (
            ("run", "seed", "time"),
            curve,
            {"long_name": "collapse fraction at each time"},
        )
        ds = _with_thresholds(ds, plan, rates, diverged)
        ds.attrs.update(
            mu=plan.mu, dt=plan.dt, gd_lr=plan.gd_lr, n_paths=N, collapse_level=plan.collapse_level
        )
        return self.finish(plan, ds)

    def table(self, ds: xr.Dataset) -> str:
        """``gallery_table`` and the measured thresholds beside the predicted ones."""
        predicted = {
            "sqrt(2 mu)": "predicted_threshold",
            "at the dynamics' step": "discrete_threshold",
        }
        return threshold_table(ds, predicted, "{:.3f}".format)

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        return plot_quartic(ds, path, title=title)


def _collapse_runs(
    plan: QuarticPlan, terms: SDETerms, seeds: list, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SDE from theta0 ~ N(0, init_std^2): the collapse fractions (run, seed, time)
    at the times of ``fractions`` (returned too), and diverged (run, seed)."""
    R, S = len(plan.zetas), plan.header.n_seeds
    save = fraction_steps(plan.fractions, plan.n_steps)
    ds = simulate_sde(
        QuarticWell(plan.mu),
        quartic_well_data(plan.mu),
        terms,
        dt=plan.dt,
        n_steps=plan.n_steps,
        seed=seeds,
        theta0=gaussian_starts(seeds, plan.init_std, 1),
        save_steps=save,
        save_params=True,
        progress=progress,
    )
    theta = ds["params"].values[:, 1:, 0]
    curve = grid_shape(theta**2 < plan.collapse_level, R, S).mean(axis=2)
    return curve, save[1:] * plan.dt, grid_shape(ds["diverged"].values, R, S).any(axis=2)


def _growth_runs(
    plan: QuarticPlan, terms: SDETerms, seeds: list, zeta: np.ndarray, engine: str, progress: bool
) -> tuple[list[np.ndarray], np.ndarray]:
    """The SDE and label-noise GD (label variance zeta^2 / (2 gd_lr)) from theta0 =
    growth_init for ``growth_time``: their growth rates [(run, seed), (run, seed)] and
    diverged (run, seed)."""
    R, S = len(plan.zetas), plan.header.n_seeds
    model, data = QuarticWell(plan.mu), quartic_well_data(plan.mu)
    start = np.full((len(seeds), 1), plan.growth_init)
    sde_steps = max(1, round(plan.growth_time / plan.dt))
    sde = simulate_sde(
        model,
        data,
        terms,
        dt=plan.dt,
        n_steps=sde_steps,
        seed=seeds,
        theta0=start,
        save_steps=np.array([0, sde_steps]),
        save_params=True,
        progress=progress,
    )
    gd_steps = max(1, round(plan.growth_time / plan.gd_lr))
    gd = simulate_sgd(
        model,
        data,
        plan.gd_lr,
        n_steps=gd_steps,
        sgd=SGD(batch_size=None, label_noise=(zeta**2 / (2 * plan.gd_lr)).tolist()),
        seed=seeds,
        theta0=start,
        save_steps=np.array([0, gd_steps]),
        save_params=True,
        engine=engine,
        progress=progress,
    )
    diverged = grid_shape(sde["diverged"].values | gd["diverged"].values, R, S).any(axis=2)
    return [_growth_rates(ds, R, S) for ds in (sde, gd)], diverged


def _with_thresholds(
    ds: xr.Dataset, plan: QuarticPlan, rates: list[np.ndarray], diverged: np.ndarray
) -> xr.Dataset:
    """``ds`` with, per dynamics (SDE, GD), the measured threshold of every seed (the
    zero of the rate fitted over ``fit_range``), sqrt(2 mu) and the discrete prediction."""
    zetas = np.asarray(plan.zetas)
    in_fit = (zetas >= plan.fit_range[0]) & (zetas <= plan.fit_range[1])
    fits = [
        [
            fitted_threshold(zetas[in_fit], np.where(diverged[:, s], np.nan, r[:, s])[in_fit])
            for s in range(plan.header.n_seeds)
        ]
        for r in rates
    ]
    names = np.array([f"SDE dt={plan.dt:g}", f"GD eta={plan.gd_lr:g}"], dtype=object)
    ds = ds.assign_coords(dynamics=("dynamics", names))
    ds["measured_threshold"] = (
        ("dynamics", "seed"),
        np.asarray(fits),
        {"long_name": "zeta where the fitted growth rate crosses 0"},
    )
    ds["predicted_threshold"] = (
        ("dynamics",),
        np.full(2, sde_threshold(plan.mu)),
        {"long_name": "sqrt(2 mu): the SDE's threshold (the paper's)"},
    )
    ds["discrete_threshold"] = (
        ("dynamics",),
        np.array([discrete_threshold(plan.mu, step) for step in (plan.dt, plan.gd_lr)]),
        {"long_name": "the root of discrete_growth_rate at the dynamics' step (dt, eta)"},
    )
    return ds


def _growth_rates(ds: xr.Dataset, n_runs: int, n_seeds: int) -> np.ndarray:
    """(run, seed): the mean over paths of (log|theta_T| - log|theta_0|) / T."""
    theta = np.abs(ds["params"].values[..., 0])
    elapsed = ds["time"].values[:, -1] - ds["time"].values[:, 0]
    with np.errstate(divide="ignore"):
        rate = (np.log(theta[:, -1]) - np.log(theta[:, 0])) / elapsed
    return grid_shape(rate, n_runs, n_seeds).mean(axis=2)


def plot_quartic(ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
    """Left: the collapse fraction over zeta at each recorded time (median over seeds,
    band min-max), the threshold sqrt(2 mu) dashed. Right: the measured growth rates
    against the predicted mu - zeta^2/2 (the diagonal), GD's beside its own prediction."""
    import matplotlib.pyplot as plt

    mu, zeta = float(ds.attrs["mu"]), ds["zeta"].values
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, t in enumerate(ds["time"].values):
        v = ds["collapse_curve"].isel(time=i).values
        color = f"C{i}"
        left.plot(zeta, np.median(v, axis=1), "o-", ms=3, color=color, label=f"t = {t:g}")
        left.fill_between(zeta, v.min(axis=1), v.max(axis=1), color=color, alpha=0.15, lw=0)
    left.axvline(sde_threshold(mu), color="k", ls="--", lw=1, label=r"$\sqrt{2\mu}$")
    left.set(xlabel=r"noise level $\zeta$", ylabel=r"collapse fraction ($\theta^2$ < level)")
    left.legend(fontsize=8)
    predicted = mu - zeta**2 / 2
    fine = np.linspace(zeta.min(), zeta.max(), 60)
    gd_lr, dt = float(ds.attrs["gd_lr"]), float(ds.attrs["dt"])
    right.plot(
        mu - fine**2 / 2, mu - fine**2 / 2, "k-", lw=1, label=r"SDE theory: $\mu - \zeta^2/2$"
    )
    for step, style, label in (
        (gd_lr, "C1-", f"GD theory, eta = {gd_lr:g}"),
        (dt, "C0:", f"Euler-Maruyama at dt = {dt:g}"),
    ):
        rates = [discrete_growth_rate(mu, z, step) for z in fine]
        right.plot(mu - fine**2 / 2, rates, style, lw=1, label=label)
    for q, color, label in (
        ("growth_rate", "C0", "SDE"),
        ("growth_rate_gd", "C1", f"GD eta = {gd_lr:g}"),
    ):
        v = ds[q].values
        med = np.median(v, axis=1)
        right.errorbar(
            predicted,
            med,
            yerr=[med - v.min(axis=1), v.max(axis=1) - med],
            fmt="o",
            ms=3,
            color=color,
            label=f"{label} (median, min-max)",
        )
    right.axhline(0, color="gray", lw=0.8)
    right.axvline(0, color="gray", lw=0.8)
    right.set(
        xlabel=r"predicted rate $\mu - \zeta^2/2$", ylabel=r"measured growth rate of log|$\theta$|"
    )
    right.legend(fontsize=7.5)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return finish_figure(
        fig, title or "Quartic well: collapse over noise (Chen et al. 2023, Fig. 1)", path
    )
