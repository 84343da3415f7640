"""What the ReLU gallery experiments share (Andriushchenko et al., ICML 2023, Sec. 4 and
the notebooks ``fc_nets_1d_regression``, ``fc_nets_two_layer``, ``fc_nets_multi_layer``):
named SGD runs (one step-size schedule each) over common sampling seeds, and the matched
SDE of each run.

Conventions. The notebooks train with the plain mean squared error (1/n) sum r_i^2;
this package uses L = (1/2n) sum r_i^2 (docs/conventions.md), whose gradient is half
theirs, so the notebooks' step size gamma is ``2 gamma`` here and their losses are
``2 L``. The configs hold our step sizes and convert the published losses.

The matched SDE of an SGD run with schedule eta_k is the SGD-noise SDE
(``sgdsde.sde.SGDNoise``: G G^T = eta times the minibatch-gradient covariance), time
matched: ``sgdsde.sde.ScheduledNoise`` runs one Euler-Maruyama step per SGD step k at
dt_k = eta_k with the coefficients at eta_k, so the SDE is at SGD step k's time
t_k = sum_{j<k} eta_j at every step, warm-ups included.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from sgdsde.analysis.plots import median_band
from sgdsde.data import RegressionData
from sgdsde.dynamics import SGD, simulate_sgd
from sgdsde.dynamics.schedules import Schedule, as_schedule
from sgdsde.experiments.config import ConfigChecker, Key
from sgdsde.experiments.gallery import (
    PaperExperiment,
    PaperPlan,
    plan_fields,
    reported_dataset,
    seed_children,
)
from sgdsde.experiments.tables import prepare_data, prepare_model, prepare_run_names
from sgdsde.metrics import METRICS, Metric
from sgdsde.models.base import Model
from sgdsde.random import trajectory_streams
from sgdsde.run.grids import eval_grid
from sgdsde.sde import ScheduledNoise, SGDNoise, simulate_sde
from sgdsde.sde.noise import NoiseModel

#: Keys of one ``[[runs]]`` entry of a ReLU gallery config.
RUN_KEYS: dict[str, Key] = {
    "name": Key("str", "the run's name (a row of the table)", required=True),
    "schedule": Key(
        "any", "our step size eta (2x the notebook's) or {name = <schedule>, ...}", required=True
    ),
}

#: Prefixes of the run names: the exact SGD run, and its matched SDE.
SGD_PREFIX, SDE_PREFIX = "SGD", "SDE"


@dataclasses.dataclass(frozen=True)
class ScheduledRun:
    """One SGD run of a gallery experiment: its name and step-size schedule."""

    name: str
    schedule: Schedule


def prepare_runs(checker: ConfigChecker, runs: Any) -> tuple[ScheduledRun, ...]:
    """``[[runs]]`` (name, schedule) -> the runs, problems recorded in ``checker``."""
    if not isinstance(runs, list) or not runs:
        checker.problem("runs", "add at least one [[runs]] table with a name and a schedule")
        return ()
    names = prepare_run_names(checker, runs)
    out = []
    for i, (name, run) in enumerate(zip(names, runs, strict=True)):
        entry = checker.table(f"runs[{i}]", run, RUN_KEYS)
        if "schedule" not in entry:
            continue
        schedule = checker.build(f"runs[{i}].schedule", as_schedule, entry["schedule"])
        if schedule is not None:
            out.append(ScheduledRun(name, schedule))
    return tuple(out)


def run_names(runs: Sequence[ScheduledRun], with_sde: bool) -> tuple[str, ...]:
    """The dataset's run names: ``"SGD <name>"`` for each run, then ``"SDE <name>"``
    for each when the matched SDE runs too."""
    names = [f"{SGD_PREFIX} {r.name}" for r in runs]
    if with_sde:
        names += [f"{SDE_PREFIX} {r.name}" for r in runs]
    return tuple(names)


def initial_params(model: Model, seeds: Sequence[np.random.SeedSequence]) -> np.ndarray:
    """theta_0 (S, p) of each seed: the model's init drawn from the seed's ``"init"``
    stream, exactly as ``simulate_sgd(seed=seeds)`` draws it (so SGD and its SDE start
    from the same point)."""
    return np.asarray(model.init(trajectory_streams(list(seeds), len(seeds))["init"]))


def by_run_and_seed(ds: xr.Dataset, names: Sequence[str], n_seeds: int) -> xr.Dataset:
    """A run dataset with trajectories ordered run-major (t = r * n_seeds + s) ->
    its per-trajectory variables (and ``time``) with dims (run, seed, ...)."""
    out = {}
    for var in [*ds.data_vars, "time"]:
        da = ds[var]
        if "traj" not in da.dims:
            continue
        da = da.transpose("traj", ...)
        shape = (len(names), n_seeds, *da.shape[1:])
        out[var] = (("run", "seed", *da.dims[1:]), da.values.reshape(shape), da.attrs)
    coords = {"run": np.asarray(list(names), dtype=object), "seed": np.arange(n_seeds)}
    if "step" in ds.coords:
        coords["step"] = ds["step"].values
    return xr.Dataset(out, coords=coords)


def simulate_sgd_runs(
    model: Model,
    data: RegressionData,
    runs: Sequence[ScheduledRun],
    seeds: Sequence[np.random.SeedSequence],
    *,
    n_steps: int,
    save_steps: np.ndarray,
    metrics: Sequence = (),
    save_params: bool = False,
    engine: str = "numba",
    progress: bool = False,
) -> xr.Dataset:
    """Every run x seed as one batched ``simulate_sgd`` call (batch size 1, the
    notebooks'), seed s shared by all runs (common random numbers); dims (run, seed, ...).

    model, data: the network and its data. runs: the runs. seeds: one SeedSequence per
    seed index. n_steps, save_steps: the run length and the steps recorded. metrics:
    extra metric objects. save_params: also record theta. engine, progress: as
    ``simulate_sgd``.
    """
    S = len(seeds)
    ds = simulate_sgd(
        model,
        data,
        [r.schedule for r in runs for _ in range(S)],
        n_steps=n_steps,
        sgd=SGD(batch_size=1),
        seed=[seeds[s] for _ in runs for s in range(S)],
        save_steps=save_steps,
        save_params=save_params,
        metrics=metrics,
        engine=engine,
        progress=progress,
    )
    return by_run_and_seed(ds, run_names(runs, with_sde=False), S)


def simulate_sde_on_schedule(
    model: Model,
    data: RegressionData,
    schedule: Schedule,
    seeds: Sequence[np.random.SeedSequence],
    *,
    n_steps: int,
    theta0: np.ndarray,
    save_steps: np.ndarray,
    noise: Callable[[float], NoiseModel] = lambda lr: SGDNoise(lr=lr, batch_size=1),
    metrics: Sequence = (),
    save_params: bool = False,
    progress: bool = False,
) -> xr.Dataset:
    """The SDE matched to SGD with ``schedule``, one trajectory per seed (module
    docstring): ``simulate_sde`` with ``ScheduledNoise(noise(peak), schedule)``, one
    Euler-Maruyama step per SGD step k at dt = eta_k.

    model, data: the network and its data. schedule: the SGD run's schedule. seeds: one
    SeedSequence per trajectory. n_steps: the SGD run length. theta0: (S, p) initial
    parameters (``initial_params``). save_steps: SGD steps to record. noise: the noise
    model at step size lr (default the SGD-noise SDE of batch size 1; its lr follows the
    schedule). metrics, save_params, progress: as ``simulate_sde``.

    Returns a dataset with dims (traj, step) on the SGD step coordinate and ``time`` the
    SDE time (= the SGD time of each step).
    """
    return simulate_sde(
        model,
        data,
        ScheduledNoise(noise(schedule.peak(n_steps)), schedule),
        dt=None,
        n_steps=n_steps,
        seed=list(seeds),
        theta0=theta0,
        save_steps=save_steps,
        metrics=metrics,
        save_params=save_params,
        progress=progress,
    )


def simulate_sde_runs(
    model: Model,
    data: RegressionData,
    runs: Sequence[ScheduledRun],
    seeds: Sequence[np.random.SeedSequence],
    *,
    n_steps: int,
    save_steps: np.ndarray,
    metrics: Sequence = (),
    save_params: bool = False,
    progress: bool = False,
) -> xr.Dataset:
    """The matched SDE of every run (``simulate_sde_on_schedule``), all seeds of a run
    batched, from the same theta_0 as SGD; dims (run, seed, ...), runs ``"SDE <name>"``."""
    theta0 = initial_params(model, seeds)
    parts = [
        simulate_sde_on_schedule(
            model,
            data,
            r.schedule,
            seeds,
            n_steps=n_steps,
            theta0=theta0,
            save_steps=save_steps,
            metrics=metrics,
            save_params=save_params,
            progress=progress,
        )
        for r in runs
    ]
    names = [f"{SDE_PREFIX} {r.name}" for r in runs]
    per_run = [by_run_and_seed(p, [n], len(seeds)) for p, n in zip(parts, names, strict=True)]
    return xr.concat(per_run, dim="run", data_vars="all", coords="minimal", compat="override")


def as_float(da: xr.DataArray) -> xr.DataArray:
    """A recorded variable as floats, a count's ``NOT_RECORDED`` (-1, after divergence)
    as NaN; a ``layer`` dim of size 1 dropped."""
    if "layer" in da.dims and da.sizes["layer"] == 1:
        da = da.isel(layer=0, drop=True)
    if da.dtype.kind in "iu":
        da = da.where(da >= 0).astype(np.float64)
    return da


def final(ds: xr.Dataset, var: str) -> np.ndarray:
    """``var`` at the last saved step as floats (``as_float``), (run, seed, ...)."""
    return as_float(ds[var].isel(step=-1)).values


def curves(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """The recorded variables ``names`` over the steps as floats (``as_float``), named
    ``<name>_curve`` (the reported quantity is the final value), with the SGD/SDE time."""
    out = {f"{v}_curve": as_float(ds[v]) for v in names}
    out["time_curve"] = ds["time"]
    return xr.Dataset(out)


#: Top-level keys every ReLU gallery kind accepts (besides ``GALLERY_KEYS``).
RELU_KEYS: dict[str, Key] = {
    "data": Key("table", "[data]: generator = <sgdsde.data generator> and its options", True),
    "model": Key("table", "[model]: name = <registered model> and its options", True),
    "n_steps": Key("int", "the number of SGD steps (batch size 1)", required=True, minimum=1),
    "runs": Key("tables", "one [[runs]] table per SGD run: name, schedule", True),
    "sde": Key("bool", "also run the matched SGD-noise SDE of every run", default=True),
    "save_points": Key("int", "recorded steps, evenly spread over the run", default=30, minimum=2),
    "feature_threshold": Key(
        "number", "|corr| above which a unit duplicates a kept one (feature sparsity)", True
    ),
    "rank_threshold": Key(
        "number", "relative SVD threshold of the Jacobian rank", default=1e-4, minimum=0
    ),
}


#: Docs of the quantities the teacher-student kinds (two- and three-layer) report alike.
TEST_LOSS_DOC = "final test loss (1/2 n_test) sum r_i^2 (the notebook's MSE is twice it)"
TRAIN_LOSS_DOC = "final training loss (1/2n) sum r_i^2"
TEST_RANK_DOC = "final rank of phi(X) on the first rank_examples test inputs, count"


def rank_examples_key(what: str, notebook_p: int) -> Key:
    """The ``rank_examples`` key of a teacher-student kind: how many test inputs ``what``
    (e.g. "the Jacobian rank") is computed on, by default the notebook's p."""
    doc = f"test inputs of {what} (the notebook: p = {notebook_p})"
    return Key("int", doc, default=notebook_p, minimum=1)


def jacobian_rank_on_test_inputs(plan: ReluPlan) -> Metric:
    """The Jacobian rank of phi(X) on the first ``rank_examples`` test inputs, relative
    threshold ``rank_threshold`` (recorded as ``jacobian_rank``)."""
    return METRICS.make(
        "jacobian_rank",
        inputs="test",
        max_examples=plan.extra["rank_examples"],
        threshold=plan.rank_threshold,
    )


@dataclasses.dataclass(frozen=True)
class ReluPlan(PaperPlan):
    """A validated ReLU gallery config: data, model, SGD runs, what to record, and the
    kind's own options (``extra``)."""

    data: RegressionData
    model: Model
    runs: tuple[ScheduledRun, ...]
    n_steps: int
    save_steps: np.ndarray
    with_sde: bool
    feature_threshold: float
    rank_threshold: float
    extra: dict[str, Any]


class ReluExperiment(PaperExperiment):
    """A ReLU gallery kind: SGD runs over common seeds and their matched SDEs.

    Subclasses set ``name``, ``quantities``, ``extra_keys`` (beyond ``RELU_KEYS``) and
    implement ``prepare_extra`` (their own keys), ``metrics`` (recorded during every
    run), ``report`` (the reported quantities and curves) and ``plot``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.extra_keys = {**RELU_KEYS, **cls.__dict__.get("extra_keys", {})}

    def prepare_experiment(self, config, top, header, checker) -> ReluPlan:
        data = prepare_data(checker, top.get("data"))
        model = prepare_model(checker, top.get("model"), data)
        runs = prepare_runs(checker, top.get("runs"))
        n_steps = top.get("n_steps")
        threshold = top.get("feature_threshold")
        if threshold is not None and not 0 <= threshold <= 1:
            checker.problem(
                "feature_threshold",
                f"must be a |correlation| in [0, 1] (got {threshold!r}): the notebooks use "
                "0.999 (1-D regression) and 0.99 (teacher-student)",
            )
        if top.get("rank_threshold", 0) >= 1:
            checker.problem(
                "rank_threshold",
                f"must be < 1 (got {top['rank_threshold']!r}): it is relative to sigma_max",
            )
        extra = self.prepare_extra(top, checker, data, model, n_steps)
        save_steps = None
        if n_steps is not None:
            grid = eval_grid(n_steps, n_dense=0, n_points=top.get("save_points", 30))
            more = np.asarray(extra.get("snapshot_steps", []), dtype=np.int64)
            save_steps = np.unique(np.concatenate([grid, more[more <= n_steps]]))
        with_sde = bool(top.get("sde", True))
        return ReluPlan(
            **plan_fields(config, top, header, run_names(runs, with_sde)),
            data=data,
            model=model,
            runs=runs,
            n_steps=n_steps,
            save_steps=save_steps,
            with_sde=with_sde,
            feature_threshold=float(threshold) if threshold is not None else 0.99,
            rank_threshold=float(top.get("rank_threshold", 1e-4)),
            extra=extra,
        )

    def prepare_extra(
        self,
        top: dict[str, Any],
        checker: ConfigChecker,
        data: RegressionData | None,
        model: Model | None,
        n_steps: int | None,
    ) -> dict[str, Any]:
        """The kind's own options from the checked top level (problems in ``checker``);
        a ``"snapshot_steps"`` entry adds steps to the recorded ones."""
        return {}

    @abc.abstractmethod
    def metrics(self, plan: ReluPlan) -> list:
        """The metric objects recorded during every run (SGD and SDE)."""

    @abc.abstractmethod
    def report(self, plan: ReluPlan, runs: xr.Dataset) -> tuple[dict[str, Any], xr.Dataset]:
        """From the runs (dims run, seed, step, ...): the reported quantities (run, seed)
        and the curves the figure needs."""

    def simulate(self, plan: ReluPlan, *, engine: str = "numba", progress: bool = False):
        """Every SGD run and, with ``sde``, its matched SDE: one dataset (run, seed, ...)."""
        seeds = seed_children(plan.header.seed, plan.header.n_seeds)
        common = dict(
            n_steps=plan.n_steps,
            save_steps=plan.save_steps,
            metrics=self.metrics(plan),
            save_params=True,
            progress=progress,
        )
        parts = [
            simulate_sgd_runs(plan.model, plan.data, plan.runs, seeds, engine=engine, **common)
        ]
        if plan.with_sde:
            parts.append(
                simulate_sde_runs(
                    plan.model,
                    plan.data,
                    plan.runs,
                    seeds,
                    **common,
                )
            )
        return xr.concat(parts, dim="run", data_vars="all", coords="minimal", compat="override")

    def run(self, plan: ReluPlan, *, engine: str = "numba", progress: bool = False):
        runs = self.simulate(plan, engine=engine, progress=progress)
        quantities, curves = self.report(plan, runs)
        ds = reported_dataset(
            plan.run_names,
            quantities,
            runs["diverged"].values,
            attrs={q: {"long_name": doc} for q, doc in self.quantities.items()},
        )
        ds = xr.merge([ds, curves], combine_attrs="override")
        ds.attrs["n_steps"] = plan.n_steps
        ds.attrs["change_points"] = json.dumps(
            [r.schedule.change_points(plan.n_steps) for r in plan.runs]
        )
        return self.finish(plan, ds)


def run_styles(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Matplotlib styles per run: one colour per SGD run, shared by its matched SDE,
    solid for SGD and dashed for the SDE."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bases: list[str] = []
    styles = {}
    for name in names:
        prefix, _, base = str(name).partition(" ")
        if base not in bases:
            bases.append(base)
        color = colors[bases.index(base) % len(colors)]
        styles[str(name)] = {"color": color, "ls": "--" if prefix == SDE_PREFIX else "-"}
    return styles


def plot_over_steps(
    ax, ds: xr.Dataset, var: str, *, log: bool = False, ylabel: str = "", floor: float = 1e-8
) -> None:
    """``var`` (run, seed, step) against the SGD step: per run the median over seeds and
    a band from the min to the max (diverged seeds left out: NaN), styles ``run_styles``;
    dotted lines at the schedules' change points. A log axis stops at ``floor`` (a seed
    that interpolates to 1e-16 would squash the rest)."""
    styles = run_styles(ds["run"].values)
    steps = ds["step"].values
    for name in ds["run"].values:
        values = ds[var].sel(run=name).transpose("seed", "step").values
        median_band(ax, steps, values, label=str(name), alpha=0.12, **styles[str(name)])
    for points in json.loads(ds.attrs.get("change_points", "[]")):
        for k in points:
            ax.axvline(k, color="0.6", ls=":", lw=0.8)
    if log:
        ax.set_yscale("log")
        if ax.get_ylim()[0] < floor:
            ax.set_ylim(bottom=floor)
    ax.set_xlabel("SGD step k (SDE: time t_k)")
    ax.set_ylabel(ylabel or var)
    ax.grid(alpha=0.3)
