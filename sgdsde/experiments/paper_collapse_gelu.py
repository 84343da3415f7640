"""Gallery kind ``paper_collapse_gelu``: two GELU neurons of Chen et al., "Stochastic
Collapse" (NeurIPS 2023), two-neuron notebook (reference notes collapse-walk.md
Sec. 1.3c).

f(x) = a1 gelu(w1 x) + a2 gelu(w2 x) (``GeluPair``, no biases) on n = 8 points with
x, y ~ N(0, 1), every trajectory from the paper's theta0 = (w1, w2, a1, a2) =
(1.0, 0.6, -0.6, -0.4). The set of identical neurons {(w1, a1) = (w2, a2)} is invariant
(the swap symmetry), and label noise makes it attractive: the distance between the
neurons, ||(w1, a1) - (w2, a2)||, shrinks more as the label noise or the step size grows,
and does not shrink without noise.

Runs: one per (label-noise std sigma, step size lr) of the noise sweep (``noise_levels``
at ``lr``) and the step-size sweep (``lrs`` at ``sweep_noise``), each twice:

* ``GD sigma=... lr=...``: full-batch GD with Gaussian label noise of variance sigma^2
  redrawn every step (exact: ``simulate_sgd``, batch n);
* ``SDE sigma=... lr=...``: its SDE, ``LabelNoise(sigma^2, lr, n)``, at dt = lr /
  ``refine`` to the same time (label-noise GD is that SDE's Euler-Maruyama step at
  dt = lr, so the SDE run is the same model integrated finer).

With ``equal_time`` (default) every run lasts the time T = n_steps lr of the noise sweep
(round(T / lr) steps): the SDE's noise per unit time grows with lr (eta delta), so at
equal time a larger step is more noise and nothing else. The paper compares equal
numbers of steps, where a larger step also runs longer along the noiseless drift
(``equal_time = false``).

Seed index s runs one trajectory per run (the paper: one per seed), all runs of a seed
index from the same seed (common random numbers) and, with ``data_per_seed`` (default),
on its own data draw ([data] with seed ``seed_child([data].seed, s)``): one draw decides
much of the outcome, so the claims are checked over draws. The reported quantity is the distance
at the last step; the dataset holds it over training (``distance``) as well.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from sgdsde.analysis.phase import seed_child
from sgdsde.analysis.plots import finish_figure
from sgdsde.data import RegressionData, make_data
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
from sgdsde.experiments.paper_collapse import linear_grid, path_seeds, prepare_1d_data
from sgdsde.models.collapse import GeluPair
from sgdsde.sde.noise import LabelNoise
from sgdsde.sde.simulate import simulate_sde


def neuron_distance(theta: np.ndarray) -> np.ndarray:
    """||(w1, a1) - (w2, a2)|| of ``GeluPair`` parameters theta = (w1, w2, a1, a2),
    shape (..., 4) -> (...): 0 on the invariant set of identical neurons."""
    theta = np.asarray(theta, dtype=float)
    return np.hypot(theta[..., 0] - theta[..., 1], theta[..., 2] - theta[..., 3])


GELU_KEYS: dict[str, Key] = {
    "data": Key("table", "[data]: 1-D data, e.g. generator = 'tanh_neuron', slope = 0", True),
    "theta0": Key("any", "the start (w1, w2, a1, a2), four numbers", True),
    "lr": Key("number", "the step size of the noise sweep", default=0.1, positive=True),
    "noise_levels": Key("any", "label-noise stds sigma of the noise sweep (>= 0)", True),
    "sweep_noise": Key(
        "number", "the label-noise std of the step-size sweep", default=0.1, minimum=0
    ),
    "lrs": Key("any", "step sizes of the step-size sweep (> 0)", True),
    "n_steps": Key(
        "int", "GD steps at the noise sweep's lr (time T = n_steps lr)", True, minimum=1
    ),
    "refine": Key("int", "SDE steps per GD step (dt = lr / refine)", default=2, minimum=1),
    "n_points": Key(
        "int", "log-spaced steps where the distance is recorded", default=40, minimum=2
    ),
    "data_per_seed": Key(
        "bool", "seed index s draws its own data (data seed: child s of [data].seed)", default=True
    ),
    "equal_time": Key(
        "bool", "run every step size to the time n_steps lr (else n_steps steps each)", default=True
    ),
}


@dataclasses.dataclass(frozen=True)
class GeluPlan(PaperPlan):
    """A validated ``paper_collapse_gelu`` config (keys: ``GELU_KEYS``); ``settings``
    holds the distinct (sigma, lr) pairs, noise sweep first."""

    datas: tuple[RegressionData, ...]
    theta0: tuple[float, ...]
    settings: tuple[tuple[float, float], ...]
    lr: float
    sweep_noise: float
    n_steps: int
    refine: int
    n_points: int
    equal_time: bool


def run_name(dynamics: str, sigma: float, lr: float) -> str:
    """E.g. 'GD sigma=0.4 lr=0.1'."""
    return f"{dynamics} sigma={sigma:g} lr={lr:g}"


@EXPERIMENTS.register
class GeluCollapse(PaperExperiment):
    """The two GELU neurons' distance over label noise and step size (module docstring)."""

    name = "paper_collapse_gelu"
    quantities: ClassVar[dict[str, str]] = {
        "neuron_distance": "||(w1, a1) - (w2, a2)|| at the last step",
    }
    extra_keys: ClassVar[dict[str, Key]] = GELU_KEYS

    def prepare_experiment(
        self,
        config: dict[str, Any],
        top: dict[str, Any],
        header: PaperHeader,
        checker: ConfigChecker,
    ) -> GeluPlan:
        data = prepare_1d_data(checker, top.get("data"), "the GELU pair")
        theta0 = top.get("theta0")
        if theta0 is not None and not (
            isinstance(theta0, list)
            and len(theta0) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in theta0)
        ):
            checker.problem("theta0", f"must be four numbers (w1, w2, a1, a2) (got {theta0!r})")
            theta0 = None
        sigmas = linear_grid(checker, top, "noise_levels", positive=False)
        lrs = linear_grid(checker, top, "lrs", positive=True)
        lr, sweep_noise = top.get("lr", 0.1), top.get("sweep_noise", 0.1)
        settings = [(float(s), float(lr)) for s in ([] if sigmas is None else sigmas)]
        settings += [(float(sweep_noise), float(x)) for x in ([] if lrs is None else lrs)]
        settings = tuple(dict.fromkeys(settings))  # the shared (sweep_noise, lr) once
        names = [run_name(d, s, x) for d in ("GD", "SDE") for s, x in settings]
        return GeluPlan(
            **plan_fields(config, top, header, names),
            datas=_seed_datas(checker, top, data, header),
            theta0=tuple(float(v) for v in theta0 or (0.0,) * 4),
            settings=settings,
            lr=float(lr),
            sweep_noise=float(sweep_noise),
            n_steps=int(top.get("n_steps", 1)),
            refine=int(top.get("refine", 2)),
            n_points=int(top.get("n_points", 40)),
            equal_time=bool(top.get("equal_time", True)),
        )

    def run(self, plan: GeluPlan, *, engine: str = "numba", progress: bool = False) -> xr.Dataset:
        R, S = len(plan.settings), plan.header.n_seeds
        seeds = path_seeds(plan.header.seed, R, S, 1)
        sigma = np.array([s for s, _ in plan.settings])
        lr = np.array([x for _, x in plan.settings])
        points = plan.n_points + 1
        curve = np.full((2 * R, S, points), np.nan)
        time = np.full((2 * R, points), np.nan)
        flags = np.zeros((2 * R, S), dtype=bool)
        for s, data in enumerate(plan.datas):  # one call per seed index, step size, dynamics
            for step in np.unique(lr):
                runs = np.flatnonzero(lr == step)
                steps = plan.n_steps
                if plan.equal_time:
                    steps = max(1, round(plan.n_steps * plan.lr / step))
                run_seeds = [seeds[r * S + s] for r in runs]
                t, dist, bad = _simulate(plan, data, step, sigma[runs], run_seeds, steps, engine)
                for offset in (0, R):  # GD, SDE
                    curve[offset + runs, s, : len(t)] = dist[offset // R]
                    time[offset + runs, : len(t)] = t
                    flags[offset + runs, s] = bad[offset // R]
        ds = reported_dataset(
            plan.run_names,
            {"neuron_distance": curve[np.arange(2 * R), :, _last_points(time)]},
            flags,
            attrs={q: {"long_name": doc} for q, doc in self.quantities.items()},
        )
        ds["distance"] = (
            ("run", "seed", "point"),
            curve,
            {"long_name": "||(w1, a1) - (w2, a2)|| over training (NaN: past the run's end)"},
        )
        ds = ds.assign_coords(
            time=(("run", "point"), time),
            sigma=("run", np.tile(sigma, 2)),
            lr=("run", np.tile(lr, 2)),
            dynamics_of_run=("run", np.repeat(np.array(["GD", "SDE"], dtype=object), R)),
        )
        ds.attrs.update(
            sweep_lr=plan.lr,
            sweep_noise=plan.sweep_noise,
            refine=plan.refine,
            equal_time=int(plan.equal_time),
            data_per_seed=int(len({id(d) for d in plan.datas}) > 1),
        )
        return self.finish(plan, ds)

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        return plot_gelu(ds, path, title=title)


def _last_points(time: np.ndarray) -> np.ndarray:
    """Per run (row of ``time``, NaN-padded), the index of its last recorded point."""
    return np.isfinite(time).sum(axis=1) - 1


def _simulate(
    plan: GeluPlan,
    data: RegressionData,
    lr: float,
    sigma: np.ndarray,
    seeds: list,
    steps: int,
    engine: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GD at step lr and its SDE at dt = lr / refine on ``data``, one trajectory per
    label-noise std of ``sigma`` (seeded by ``seeds``), ``steps`` GD steps: the times of
    the recorded points (P,), the distances (2, runs, P) and diverged (2, runs) of GD and
    the SDE."""
    model = GeluPair()
    grid = np.unique(np.geomspace(1, steps, plan.n_points).round().astype(np.int64))
    grid = np.concatenate([[0], grid])
    delta = (sigma**2).tolist()
    gd = simulate_sgd(
        model, data, lr, n_steps=steps, sgd=SGD(None, delta), seed=seeds, theta0=plan.theta0,
        save_steps=grid, save_params=True, engine=engine,
    )  # fmt: skip
    sde = simulate_sde(
        model, data, LabelNoise(delta, lr, data.n), dt=lr / plan.refine,
        n_steps=steps * plan.refine, seed=seeds, theta0=plan.theta0,
        save_steps=grid * plan.refine, save_params=True,
    )  # fmt: skip
    distances = np.stack([neuron_distance(ds["params"].values) for ds in (gd, sde)])
    diverged = np.stack([ds["diverged"].values for ds in (gd, sde)])
    return grid * lr, distances, diverged


def _seed_datas(
    checker: ConfigChecker, top: dict[str, Any], data: RegressionData | None, header: PaperHeader
) -> tuple[RegressionData, ...]:
    """One data set per seed index: with ``data_per_seed``, seed index s draws [data] with
    seed ``seed_child([data].seed, s)`` (so each seed index is its own draw); else the one
    data set for all."""
    if data is None:
        return ()
    if not top.get("data_per_seed", True):
        return (data,) * header.n_seeds
    table = dict(top["data"])
    generator, root = table.pop("generator"), table.pop("seed", 0)
    datas = [
        checker.build("data", make_data, generator, **table, seed=seed_child(root, s))
        for s in range(header.n_seeds)
    ]
    return () if any(d is None for d in datas) else tuple(datas)


def plot_gelu(ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
    """Left and middle: the distance between the neurons over training (median over
    seeds; the seeds' data draws spread it too widely for a band), GD solid and its SDE
    dashed, for the noise sweep and the step-size sweep. Right: per seed (thin lines),
    GD's final distance over sigma relative to the same draw's noiseless run."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    sigma, lr = ds["sigma"].values, ds["lr"].values
    gd = ds["dynamics_of_run"].values == "GD"
    noise_sweep = gd & (lr == float(ds.attrs["sweep_lr"]))
    lr_sweep = gd & (sigma == float(ds.attrs["sweep_noise"]))
    with warnings.catch_warnings():  # all-NaN columns: diverged runs
        warnings.simplefilter("ignore", RuntimeWarning)
        for ax, chosen, key in ((axes[0], noise_sweep, "sigma"), (axes[1], lr_sweep, "lr")):
            for k, r in enumerate(np.flatnonzero(chosen)):
                match = np.flatnonzero((sigma == sigma[r]) & (lr == lr[r]) & ~gd)[0]
                for idx, ls in ((r, "-"), (match, "--")):
                    v, t = ds["distance"].values[idx], ds["time"].values[idx]
                    name = f"{key} = {ds[key].values[r]:g}" if ls == "-" else None
                    ax.plot(t, np.nanmedian(v, axis=0), ls=ls, color=f"C{k}", lw=1.3, label=name)
            ax.set_xscale("log")
            ax.set(xlabel="time t = k lr", title=f"{key} sweep: median over seeds (dashed: SDE)")
            ax.legend(fontsize=7.5)
        order = np.flatnonzero(noise_sweep)
        final = ds["neuron_distance"].values[order]
        final = np.where(ds["diverged"].values[order], np.nan, final)
        axes[2].plot(sigma[order], final / final[:1], color="gray", lw=0.8, marker="o", ms=2)
        axes[2].plot(sigma[order], np.nanmedian(final / final[:1], axis=1), "k-", lw=2)
    axes[2].set(
        xlabel="label-noise std sigma",
        ylabel="final distance / noiseless run's",
        title="GD, per seed (thin) and median",
    )
    axes[0].set_ylabel(r"$\|(w_1, a_1) - (w_2, a_2)\|$")
    for ax in axes:
        ax.grid(alpha=0.3)
    default = "Two GELU neurons: distance over training (Chen et al. 2023)"
    return finish_figure(fig, title or default, path)
