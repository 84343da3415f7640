"""Gallery kinds of the diagonal-linear-network experiments of Andriushchenko et al.,
"SGD with Large Step Sizes Learns Sparse Features" (ICML 2023), ``diag_nets.ipynb``:

* ``paper_dln_notebook_data``: the SGD demo on the paper's own data draw
  (``sparse_regression_notebook``) at the paper's step sizes, beside the demo's runs on
  our generator;
* ``paper_dln_gd_vs_sgd``: large-step GD (edge of stability) against large-step SGD, with
  the label-noise SDE and the SGD-covariance SDE of the SGD run.

Both share the config of ``DLNRunsExperiment`` (the loss-surface slice,
``paper_dln_slice``, builds on it too):

* ``n_steps``; ``[datasets.<label>]``: one data table per label (``generator`` of
  ``sgdsde.data`` and its options); ``[model]``; ``[save]`` (``eval_grid`` options and
  ``l0_threshold``, the paper's 1e-50 by default); ``loose_l0_threshold`` (a second l0
  count, the demo's 1e-10);
* ``[[runs]]``: ``name``, ``data`` (a dataset label; optional with one dataset),
  ``schedule`` (a step size or a schedule table), ``batch_size`` (an int, or ``"full"``:
  GD);
* ``[[sde]]``: ``name``, ``of`` (an SGD run), ``noise`` (``"label_noise"`` or
  ``"sgd_covariance"``), ``refine`` (SDE steps per SGD step, default 1).

Seed index s of every stochastic run uses ``seed_children(seed, n_seeds)[s]`` (common
random numbers across runs, as the notebook resets its seed before each run); GD from
the constant initialization is deterministic, simulated once and repeated over seeds.

An SDE run integrates, phase by phase of its SGD run's piecewise-constant schedule
(constant step eta_j on steps K_j .. K_{j+1}), the SDE at that eta_j with dt = eta_j /
refine for (K_{j+1} - K_j) refine steps (the default solver of simulate_sde:
euler_gemm, xoshiro increments), from the previous phase's end: SDE time
matches SGD time t_k = sum_{i<k} eta_i, and the SDE's records sit on the SGD run's step
grid. ``sgd_covariance`` is ``SGDCovariance(eta_j, B)`` (G G^T = eta x the exact
minibatch-gradient covariance); ``label_noise`` is the paper's Eq. (8) with its constant
explicit, ``StabilizedLoss(L*_j, eta_j, B)`` (label noise of variance delta = 2 L*), with
L*_j, per seed, the SGD run's training loss averaged over the steps of phase j
(``sde_levels``, which also says what a seed whose SGD run diverged takes); the levels
used are in the dataset's ``sde_levels`` attribute.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from sgdsde.analysis.phase import seed_child
from sgdsde.analysis.plots import finish_figure
from sgdsde.data import RegressionData
from sgdsde.dynamics import SGD, Schedule, as_schedule, simulate_sgd
from sgdsde.dynamics.schedules import Constant, StepDecay, cumulative_time
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
from sgdsde.experiments.tables import prepare_data, prepare_model, prepare_run_names, prepare_save
from sgdsde.metrics import L0Norm
from sgdsde.metrics.base import Metric
from sgdsde.models import Model
from sgdsde.sde import SGDCovariance, StabilizedLoss, simulate_sde

#: The SDE noise models an ``[[sde]]`` run may use.
SDE_NOISES = ("label_noise", "sgd_covariance")

#: Top-level keys of the DLN gallery kinds (besides ``GALLERY_KEYS``).
DLN_KEYS: dict[str, Key] = {
    "n_steps": Key("int", "SGD / GD steps of every run", required=True, minimum=1),
    "datasets": Key("table", "[datasets.<label>]: one data table per label", required=True),
    "model": Key("table", "[model]: name = <registered model> and its options", True),
    "save": Key("table", "[save]: n_dense, n_points, spacing, l0_threshold", default={}),
    "loose_l0_threshold": Key(
        "number",
        "a second l0 count, |beta_i| above it (the demo's 1e-10)",
        default=1e-10,
        minimum=0,
    ),
    "runs": Key("tables", "[[runs]]: name, data, schedule, batch_size", required=True),
    "sde": Key("tables", "[[sde]]: name, of, noise, refine", default=[]),
}

#: Keys of a ``[[runs]]`` entry.
DLN_RUN_KEYS: dict[str, Key] = {
    "name": Key("str", "the run's name (a row of the table)", required=True),
    "data": Key("str", "the label of its dataset in [datasets] (optional with one)"),
    "schedule": Key("any", "a step size or {name = <schedule>, ...}", required=True),
    "batch_size": Key("any", 'the minibatch size B, or "full" for GD', default=1),
}

#: Keys of an ``[[sde]]`` entry.
DLN_SDE_KEYS: dict[str, Key] = {
    "name": Key("str", "the run's name (a row of the table)", required=True),
    "of": Key("str", "the SGD run it models (its schedule, data, batch size)", required=True),
    "noise": Key("str", "the noise model", required=True, choices=SDE_NOISES),
    "refine": Key("int", "SDE steps per SGD step (dt = eta / refine)", default=1, minimum=1),
}

#: Reported quantities of the DLN kinds (values at the last step).
DLN_QUANTITIES: dict[str, str] = {
    "train_loss": "training loss (1/2n) sum r_i^2 at the last step",
    "test_loss": "test loss on the 1000 held-out points at the last step",
    "l0_norm": "#{i : |beta_i| > l0_threshold} at the last step (paper: 1e-50)",
    "l0_norm_loose": "#{i : |beta_i| > loose_l0_threshold} at the last step (1e-10)",
    "plateau_loss": "median training loss over the second half of the first constant-step "
    "phase (the large-step phase): the level L* at which the loss stabilizes",
}

#: The curves kept for the figures, (run, seed, step) each.
CURVES = ("train_loss", "test_loss", "l0_norm")


@dataclasses.dataclass(frozen=True)
class ExactRun:
    """A ``[[runs]]`` entry: SGD (``batch_size`` B) or GD (``batch_size`` None) on the
    dataset labelled ``data`` with ``schedule``."""

    name: str
    data: str
    schedule: Schedule
    batch_size: int | None


@dataclasses.dataclass(frozen=True)
class SDERun:
    """An ``[[sde]]`` entry: the SDE (``noise``) of the exact run ``of``, ``refine`` SDE
    steps per SGD step."""

    name: str
    of: str
    noise: str
    refine: int = 1


@dataclasses.dataclass(frozen=True)
class DLNPlan(PaperPlan):
    """A validated DLN gallery config."""

    model: Model
    datasets: dict[str, RegressionData]
    runs: tuple[ExactRun, ...]
    sdes: tuple[SDERun, ...]
    n_steps: int
    save_steps: np.ndarray
    l0_threshold: float
    loose_l0_threshold: float
    save_params: bool = False


def prepare_dln(
    checker: ConfigChecker, config: dict[str, Any], top: dict[str, Any], header: PaperHeader
) -> DLNPlan:
    """The ``DLNPlan`` of a checked top level (problems recorded in ``checker``)."""
    datasets = _prepare_datasets(checker, top.get("datasets"))
    first = next(iter(datasets.values()), None)
    model = prepare_model(checker, top.get("model"), first)
    if model is not None:
        for label, data in datasets.items():
            if data.d != model.input_dim:
                checker.problem(
                    f"datasets.{label}",
                    f"has d = {data.d} but the model takes {model.input_dim} inputs: "
                    "give every dataset the same d",
                )
    n_steps = top.get("n_steps")
    grid, l0_threshold = prepare_save(checker, top.get("save", {}), n_steps)
    runs = _prepare_runs(checker, top.get("runs", []), datasets)
    sdes = _prepare_sdes(checker, top.get("sde", []), runs)
    if sdes and model is not None and not _deterministic_init(model):
        checker.problem(
            "model",
            "an [[sde]] run starts from the model's initialization, which must be the same "
            'for every seed: use init_scheme = "constant" (the paper\'s u0 = alpha, v0 = 0)',
        )
    names = [r.name for r in runs] + [s.name for s in sdes]
    for name in {n for n in names if names.count(n) > 1}:
        checker.problem("sde", f"run name {name!r} is used twice: name each run once")
    return DLNPlan(
        **plan_fields(config, top, header, names),
        model=model,
        datasets=datasets,
        runs=tuple(runs),
        sdes=tuple(sdes),
        n_steps=n_steps,
        save_steps=grid,
        l0_threshold=1e-50 if l0_threshold is None else l0_threshold,
        loose_l0_threshold=float(top.get("loose_l0_threshold", 1e-10)),
    )


def _prepare_datasets(checker: ConfigChecker, value: Any) -> dict[str, RegressionData]:
    if not isinstance(value, dict):
        return {}
    if not value:
        checker.problem("datasets", "has no dataset: add a [datasets.<label>] data table")
    out = {}
    for label, table in value.items():
        data = prepare_data(checker, table)
        if data is not None:
            out[label] = data
    return out


def _prepare_runs(
    checker: ConfigChecker, runs: list[Any], datasets: dict[str, RegressionData]
) -> list[ExactRun]:
    if not runs:
        checker.problem("runs", "config has no [[runs]]: add at least one run with a schedule")
    names = prepare_run_names(checker, runs)
    out = []
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        path = f"runs[{i}]"
        entry = checker.table(path, run, DLN_RUN_KEYS)
        label = entry.get("data")
        if label is None and len(datasets) == 1:
            label = next(iter(datasets))
        if label not in datasets:
            checker.problem(
                f"{path}.data",
                f"must name one of the datasets {sorted(datasets)} (got {label!r})",
            )
            continue
        batch = entry.get("batch_size", 1)
        n = datasets[label].n
        if batch == "full":
            batch = None
        elif isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= n:
            checker.problem(
                f"{path}.batch_size",
                f'must be an integer in [1, n = {n}] or "full" for GD (got {batch!r})',
            )
            continue
        schedule = checker.build(f"{path}.schedule", as_schedule, entry.get("schedule"))
        if schedule is not None:
            out.append(ExactRun(name, label, schedule, None if batch == n else batch))
    return out


def _prepare_sdes(checker: ConfigChecker, sdes: list[Any], runs: list[ExactRun]) -> list[SDERun]:
    by_name = {r.name: r for r in runs}
    out = []
    for i, sde in enumerate(sdes):
        path = f"sde[{i}]"
        entry = checker.table(path, sde, DLN_SDE_KEYS)
        if not all(k in entry for k in ("name", "of", "noise")):
            continue
        of = by_name.get(entry["of"])
        if of is None:
            checker.problem(f"{path}.of", f"must name a run of [[runs]] {sorted(by_name)}")
            continue
        if not isinstance(of.schedule, Constant | StepDecay):
            checker.problem(
                f"{path}.of",
                f"run {of.name!r} has schedule {of.schedule.name!r}: the SDE is integrated "
                "phase by phase, so its run needs a constant or step_decay schedule",
            )
            continue
        out.append(SDERun(entry["name"], of.name, entry["noise"], entry["refine"]))
    return out


def _loose_l0(threshold: float) -> Metric:
    counter = L0Norm(threshold)
    return Metric(
        "l0_norm_loose",
        lambda theta, model, data: counter(theta, model, data),
        long_name=f"number of coordinates of beta with |beta_i| > {threshold:g}",
        units="count",
        dtype=np.int64,
    )


def _deterministic_init(model: Model) -> bool:
    """Whether the model's init draws no random number (the same from any stream)."""
    a = model.init([np.random.default_rng(0)])
    b = model.init([np.random.default_rng(1)])
    return bool(np.array_equal(a, b))


@dataclasses.dataclass
class _Trajectories:
    """One run's records over seeds: curves (seed, step) by variable, params over the
    save steps (seed, step, p) or None, diverged (seed,), and for a label-noise SDE run
    its levels L* (seed, phase)."""

    curves: dict[str, np.ndarray]
    params: np.ndarray | None
    diverged: np.ndarray
    levels: np.ndarray | None = None


def _split(ds: xr.Dataset, start: int, n_seeds: int) -> _Trajectories:
    """Trajectories start .. start + n_seeds - 1 of a simulation's dataset."""
    part = ds.isel(traj=slice(start, start + n_seeds))
    curves = {}
    for var in (*CURVES, "l0_norm_loose"):
        values = part[var].values.astype(float)
        if var.startswith("l0"):
            values[values < 0] = np.nan  # -1 marks a diverged trajectory's count
        curves[var] = values
    params = part["params"].values if "params" in part else None
    return _Trajectories(curves, params, part["diverged"].values.astype(bool))


def simulate_exact(plan: DLNPlan, engine: str, progress: bool) -> dict[str, _Trajectories]:
    """Every ``[[runs]]`` entry over the plan's seeds: per dataset, the stochastic runs
    in one batched ``simulate_sgd`` call (seed index s: the s-th child of the root for
    every run), the deterministic ones (GD from a constant init) one trajectory each,
    repeated over seeds."""
    n_seeds = plan.header.n_seeds
    seeds = seed_children(plan.header.seed, n_seeds)
    fixed_init = _deterministic_init(plan.model)
    out: dict[str, _Trajectories] = {}
    for label, data in plan.datasets.items():
        runs = [r for r in plan.runs if r.data == label]
        det = [r for r in runs if r.batch_size is None and fixed_init]
        sto = [r for r in runs if r not in det]
        for group, per_run in ((sto, n_seeds), (det, 1)):
            if not group:
                continue
            ds = simulate_sgd(
                plan.model,
                data,
                [r.schedule for r in group for _ in range(per_run)],
                n_steps=plan.n_steps,
                sgd=SGD(batch_size=[r.batch_size for r in group for _ in range(per_run)]),
                seed=[seeds[s] if per_run > 1 else 0 for _ in group for s in range(per_run)],
                save_steps=plan.save_steps,
                save_params=plan.save_params,
                l0_threshold=plan.l0_threshold,
                engine=engine,
                metrics=[_loose_l0(plan.loose_l0_threshold)],
                progress=progress,
            )
            for i, run in enumerate(group):
                traj = _split(ds, i * per_run, per_run)
                out[run.name] = _repeat(traj, n_seeds) if per_run == 1 else traj
    return out


def _repeat(traj: _Trajectories, n_seeds: int) -> _Trajectories:
    """A deterministic run's one trajectory as the same values for every seed."""
    rep = np.zeros(n_seeds, dtype=np.int64)
    return _Trajectories(
        {k: v[rep] for k, v in traj.curves.items()},
        None if traj.params is None else traj.params[rep],
        traj.diverged[rep],
    )


def phases(schedule: Schedule, n_steps: int) -> list[tuple[int, int, float]]:
    """The constant-step phases (K_j, K_{j+1}, eta_j) of a piecewise-constant schedule."""
    bounds = [0, *[k for k in schedule.change_points(n_steps) if 0 < k < n_steps], n_steps]
    return [(a, b, float(schedule(a, n_steps))) for a, b in itertools.pairwise(bounds)]


def window_medians(values: np.ndarray, grid: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Per seed (row of ``values``, (seed, step) on ``grid``), the median of the finite
    values at the saved steps in [start, stop); NaN for a seed with none there."""
    window = values[:, (grid >= start) & (grid < stop)]
    return np.array(
        [np.median(v[np.isfinite(v)]) if np.isfinite(v).any() else np.nan for v in window]
    )


def second_half(start: int, stop: int) -> tuple[int, int]:
    """The second half [start + (stop - start) // 2, stop) of a phase: its plateau."""
    return start + (stop - start) // 2, stop


def step_weights(grid: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Weights of the saved steps for an average over the steps of [start, stop): a saved
    value stands for the steps up to the next saved step (0 outside the window)."""
    nxt = np.append(grid[1:], grid[-1] + 1)
    lo, hi = np.maximum(grid, start), np.minimum(nxt, stop)
    return np.where(grid < stop, np.maximum(hi - lo, 0), 0).astype(float)


def sde_levels(
    train_loss: np.ndarray, diverged: np.ndarray, grid: np.ndarray, start: int, stop: int
) -> np.ndarray:
    """The per-seed level L* (delta = 2 L*) of the label-noise SDE in phase [start, stop):
    the SGD run's training loss averaged over the steps of the phase (``step_weights``).
    The SDE's sparsifying drift grows with the time integral of delta (the effective
    initialization shrinks as exp(-eta delta ||X_i||^2 t / 2), reference §3), so the
    time average, not the median, is the level that matches it.

    A seed whose SGD run diverged takes the median over the seeds that did not; where
    every seed diverged, each seed takes its own weighted median over the steps before
    it diverged (robust to the blow-up); 0 (gradient flow) where nothing is finite.
    train_loss: (seed, step) on ``grid``; diverged: (seed,).
    """
    weights = step_weights(grid, start, stop)
    finite = np.isfinite(train_loss)
    ok = ~np.asarray(diverged, dtype=bool) & finite[:, weights > 0].all(axis=1)
    if ok.any():
        means = np.sum(np.where(finite, train_loss, 0.0) * weights, axis=1) / weights.sum()
        return np.where(ok, means, float(np.median(means[ok])))
    levels = np.zeros(train_loss.shape[0])
    for s, (values, keep) in enumerate(zip(train_loss, finite & (weights > 0), strict=True)):
        if keep.any():
            order = np.argsort(values[keep])
            cum = np.cumsum(weights[keep][order])
            levels[s] = values[keep][order][np.searchsorted(cum, cum[-1] / 2)]
    return levels


def simulate_sde_run(plan: DLNPlan, sde: SDERun, exact: _Trajectories, index: int) -> _Trajectories:
    """The SDE run ``sde`` (the ``index``-th) of its exact run, phase by phase (module
    docstring); seed index s of phase j uses child j of child 1 + index of seed s."""
    run = next(r for r in plan.runs if r.name == sde.of)
    data = plan.datasets[run.data]
    batch = data.n if run.batch_size is None else run.batch_size
    n_seeds, grid = plan.header.n_seeds, plan.save_steps
    seeds = seed_children(plan.header.seed, n_seeds)
    init_row = plan.model.init([np.random.default_rng(0)])[0]
    theta = np.repeat(init_row[None], n_seeds, axis=0)
    diverged = np.zeros(n_seeds, dtype=bool)
    levels: list[np.ndarray] = []
    curves = {v: np.full((n_seeds, grid.size), np.nan) for v in exact.curves}
    params = np.full((n_seeds, grid.size, init_row.size), np.nan) if plan.save_params else None
    for j, (k0, k1, eta) in enumerate(phases(run.schedule, plan.n_steps)):
        if sde.noise == "sgd_covariance":
            noise = SGDCovariance(lr=eta, batch_size=batch)
        else:
            level = sde_levels(exact.curves["train_loss"], exact.diverged, grid, k0, k1)
            levels.append(level)
            noise = StabilizedLoss(level=level, lr=eta, batch_size=batch)
        # the phase's save steps, and its last step (it starts the next phase)
        steps = np.unique(np.concatenate([grid[(grid >= k0) & (grid <= k1)], [k1]]))
        ds = simulate_sde(
            plan.model,
            data,
            noise,
            dt=eta / sde.refine,
            n_steps=(k1 - k0) * sde.refine,
            seed=[seed_child(seed_child(seeds[s], 1 + index), j) for s in range(n_seeds)],
            theta0=theta,
            save_steps=(steps - k0) * sde.refine,
            save_params=True,
            l0_threshold=plan.l0_threshold,
            metrics=[_loose_l0(plan.loose_l0_threshold)],
        )
        phase = _split(ds, 0, n_seeds)
        on_grid = np.isin(steps, grid)
        cols = np.searchsorted(grid, steps[on_grid])
        for var, values in phase.curves.items():
            values[diverged] = np.nan  # a seed diverged in an earlier phase stays so
            curves[var][:, cols] = values[:, on_grid]
        if params is not None:
            params[:, cols] = np.where(diverged[:, None, None], np.nan, phase.params[:, on_grid])
        diverged |= phase.diverged
        end = phase.params[:, -1]
        theta = np.where(np.isfinite(end) & ~diverged[:, None], end, init_row)
    return _Trajectories(curves, params, diverged, np.array(levels).T if levels else None)


def simulate_dln(plan: DLNPlan, engine: str, progress: bool) -> dict[str, _Trajectories]:
    """Every exact run and every SDE run of ``plan``, by run name."""
    exact = simulate_exact(plan, engine, progress)
    out = dict(exact)
    for i, sde in enumerate(plan.sdes):
        out[sde.name] = simulate_sde_run(plan, sde, exact[sde.of], i)
    return out


def _schedule_of(plan: DLNPlan, name: str) -> tuple[ExactRun, str]:
    """The exact run behind run ``name`` (itself, or the run an SDE models) and the
    run's method ("GD", "SGD" or "SDE <noise>")."""
    sde = next((s for s in plan.sdes if s.name == name), None)
    run = next(r for r in plan.runs if r.name == (sde.of if sde else name))
    if sde is not None:
        return run, f"SDE {sde.noise}"
    return run, "GD" if run.batch_size is None else "SGD"


def dln_dataset(plan: DLNPlan, trajs: dict[str, _Trajectories]) -> xr.Dataset:
    """The gallery dataset: the reported quantities (run, seed) at the last step, the
    curves ``<var>_curve`` (run, seed, step), coords ``method``, ``data`` (dataset label)
    and ``time`` (run, step) = sum of the run's step sizes, ``params`` (run, seed, step,
    param) when the plan saves them."""
    names, grid = list(plan.run_names), plan.save_steps
    quantities: dict[str, list[np.ndarray]] = {q: [] for q in DLN_QUANTITIES}
    methods, labels, times = [], [], []
    for name in names:
        traj = trajs[name]
        run, method = _schedule_of(plan, name)
        for var in ("train_loss", "test_loss", "l0_norm", "l0_norm_loose"):
            quantities[var].append(traj.curves[var][:, -1])
        k0, k1, _ = phases(run.schedule, plan.n_steps)[0]
        quantities["plateau_loss"].append(
            window_medians(traj.curves["train_loss"], grid, *second_half(k0, k1))
        )
        methods.append(method)
        labels.append(run.data)
        times.append(cumulative_time(run.schedule.values(plan.n_steps))[grid])
    diverged = np.array([trajs[n].diverged for n in names])
    ds = reported_dataset(
        names,
        {q: np.array(v) for q, v in quantities.items()},
        diverged,
        attrs={q: {"long_name": doc} for q, doc in DLN_QUANTITIES.items()},
    )
    ds = ds.assign_coords(
        step=grid,
        method=("run", np.array(methods, dtype=object)),
        data=("run", np.array(labels, dtype=object)),
        time=(("run", "step"), np.array(times)),
    )
    for var in (*CURVES, "l0_norm_loose"):
        ds[f"{var}_curve"] = (
            ("run", "seed", "step"),
            np.array([trajs[n].curves[var] for n in names]),
        )
    ds["l0_norm_curve"].attrs["threshold"] = plan.l0_threshold
    ds["l0_norm_loose_curve"].attrs["threshold"] = plan.loose_l0_threshold
    if plan.save_params:
        ds["params"] = (
            ("run", "seed", "step", "param"),
            np.array([trajs[n].params for n in names]),
        )
    levels = {n: trajs[n].levels.tolist() for n in names if trajs[n].levels is not None}
    ds.attrs["sde_levels"] = json.dumps(levels)  # label-noise SDE: L* per seed and phase
    ds.attrs["l0_threshold"] = plan.l0_threshold
    ds.attrs["loose_l0_threshold"] = plan.loose_l0_threshold
    return ds


class DLNRunsExperiment(PaperExperiment):
    """The shared part of the DLN gallery kinds: the config of ``prepare_dln``, the runs
    of ``simulate_dln``, the dataset of ``dln_dataset``."""

    quantities: ClassVar[dict[str, str]] = DLN_QUANTITIES
    extra_keys: ClassVar[dict[str, Key]] = DLN_KEYS

    def prepare_experiment(self, config, top, header, checker) -> DLNPlan:
        return prepare_dln(checker, config, top, header)

    def run(self, plan, *, engine: str = "numba", progress: bool = False) -> xr.Dataset:
        if not isinstance(plan, DLNPlan):
            raise TypeError(f"run takes the plan made by {type(self).__name__}.prepare")
        return self.finish(plan, dln_dataset(plan, simulate_dln(plan, engine, progress)))

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        return plot_dln_curves(ds, path, title=title)


@EXPERIMENTS.register
class PaperDLNNotebookData(DLNRunsExperiment):
    """``kind = "paper_dln_notebook_data"``: the DLN SGD demo on the paper's own data
    draw at the paper's step sizes, beside the demo's runs on our generator
    (Andriushchenko et al. 2023, ``diag_nets.ipynb`` cell 1)."""

    name = "paper_dln_notebook_data"


@EXPERIMENTS.register
class PaperDLNGDvsSGD(DLNRunsExperiment):
    """``kind = "paper_dln_gd_vs_sgd"``: large-step GD against large-step SGD and its SDEs
    (Andriushchenko et al. 2023, ``diag_nets.ipynb`` cell 2)."""

    name = "paper_dln_gd_vs_sgd"


#: Panels of the curve figure: variable, title, log scale.
_PANELS = (
    ("train_loss_curve", "train loss", True),
    ("test_loss_curve", "test loss", True),
    ("l0_norm_curve", "l0 norm", False),
)


def shown_seeds(values: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """The seeds a curve is drawn from: those that did not diverge, or, where every seed
    diverged, all of them (their values before divergence; NaN after)."""
    return values[~diverged] if (~diverged).any() else values


def plot_dln_curves(ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
    """One row of panels (train loss, test loss, l0 norm against the iteration) per
    dataset label; per run the median over its non-diverged seeds (line) and their
    min-max band (``shown_seeds``: a run whose every seed diverged is drawn until they
    do); SDE runs dashed, GD dotted; the legend counts diverged seeds."""
    labels = list(dict.fromkeys(ds["data"].values.tolist()))
    fig, axes = plt.subplots(len(labels), 3, figsize=(17, 3.6 * len(labels)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    steps = ds["step"].values
    for row, label in zip(axes, labels, strict=True):
        runs = [r for r in ds["run"].values if ds["data"].sel(run=r).item() == label]
        for i, run in enumerate(runs):
            sel = ds.sel(run=run)
            bad = sel["diverged"].values
            method = str(sel["method"].item())
            style = "--" if method.startswith("SDE") else (":" if method == "GD" else "-")
            name = f"{run} ({int(bad.sum())}/{bad.size} diverged)" if bad.any() else str(run)
            for ax, (var, panel, log) in zip(row, _PANELS, strict=True):
                values = shown_seeds(sel[var].values, bad)
                color = colors[i % len(colors)]
                if values.size:
                    with warnings.catch_warnings(), np.errstate(all="ignore"):
                        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps (diverged)
                        ax.plot(
                            steps,
                            np.nanmedian(values, axis=0),
                            style,
                            color=color,
                            lw=1.3,
                            label=name,
                        )
                        ax.fill_between(
                            steps,
                            np.nanmin(values, axis=0),
                            np.nanmax(values, axis=0),
                            color=color,
                            alpha=0.15,
                        )
                ax.set_yscale("log" if log else "linear")
                thr = ds[var].attrs.get("threshold")
                ax.set_title(
                    f"{panel} (|beta_i| > {thr:g})" if thr is not None else f"{panel}", fontsize=10
                )
                ax.set_xlabel("iteration")
                ax.grid(alpha=0.3)
        row[0].set_ylabel(f"data: {label}")
        row[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return finish_figure(fig, title, path)
