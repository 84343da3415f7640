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

Theory beside the runs (``sgdsde.theory``), stored as ``theory_*`` variables, drawn as
labelled dashed lines ("theory: ...") on the panels they belong to and listed as theory
rows of the table:

* per dataset (dim ``dataset``) and closed-form predictor (dim ``theory``: the
  gradient-flow limit from the model's init, ``sgdsde.theory.gradient_flow_limit_of``;
  the minimum-l1 and minimum-l2 interpolators, its alpha -> 0 and alpha -> infinity ends):
  ``theory_beta`` and its test loss, l0 norms and l1 norm (``predictor_summaries``);
  ``theory_gd_edge_init``, the GD stability edge 2 / lambda_max at the initialization;
* per GD run, ``gd_edge_curve`` (run, seed, edge_step): the edge 2 / lambda_max(theta_k)
  along the run, against its step size ``lr_curve``: GD that ends at the edge of
  stability has 2 / lambda_max = eta_k (Cohen et al., ICLR 2021);
* per label-noise SDE run (dim ``run``, NaN elsewhere), ``theory_lasso_*``: the weighted
  Lasso that the label-noise SDE solves in its large-step phase (Pillaud-Vivien et al.,
  COLT 2022; ``lasso_prediction``), at that phase's step and the SDE's delta = 2 L*
  (median over seeds).
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
from sgdsde.analysis.plots import finish_figure, median_band
from sgdsde.data import RegressionData
from sgdsde.dynamics import SGD, Schedule, as_schedule, simulate_sgd
from sgdsde.dynamics.schedules import Constant, StepDecay, cumulative_time
from sgdsde.experiments.base import EXPERIMENTS
from sgdsde.experiments.config import ConfigChecker, Key
from sgdsde.experiments.gallery import (
    THEORY_ROWS,
    PaperExperiment,
    PaperHeader,
    PaperPlan,
    plan_fields,
    reported_dataset,
    seed_children,
    theory_row,
)
from sgdsde.experiments.tables import prepare_data, prepare_model, prepare_run_names, prepare_save
from sgdsde.metrics import L0Norm
from sgdsde.metrics.base import Metric
from sgdsde.metrics.norms import l0_norm, l1_norm
from sgdsde.models import DiagonalLinearNet, Model
from sgdsde.sde import SGDCovariance, StabilizedLoss, simulate_sde
from sgdsde.theory import (
    gd_stability_edge,
    gradient_flow_limit_of,
    has_gradient_flow_limit,
    label_noise_lasso,
    min_l1_interpolator,
    min_l2_interpolator,
)

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
CURVES = ("train_loss", "test_loss", "l0_norm", "l1_norm")

#: The GD edge 2 / lambda_max(theta_k) of a GD run is taken at this many of the saved
#: steps (``edge_steps``): an exact Hessian eigenvalue each (~20 ms at p = 200).
EDGE_POINTS = 40


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
    save steps (seed, step, p) or None, diverged (seed,), for a label-noise SDE run its
    levels L* (seed, phase), for a GD run its edge 2 / lambda_max (seed, edge step)."""

    curves: dict[str, np.ndarray]
    params: np.ndarray | None
    diverged: np.ndarray
    levels: np.ndarray | None = None
    edge: np.ndarray | None = None


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
    """Every ``[[runs]]`` entry over the plan's seeds: per dataset, the SGD runs in one
    batched ``simulate_sgd`` call (seed index s: the s-th child of the root for every
    run), the GD runs in another, one trajectory each, repeated over seeds, when the
    init is deterministic; a GD run also gets its edge (``gd_edges``)."""
    n_seeds = plan.header.n_seeds
    seeds = seed_children(plan.header.seed, n_seeds)
    fixed_init = _deterministic_init(plan.model)
    out: dict[str, _Trajectories] = {}
    for label, data in plan.datasets.items():
        runs = [r for r in plan.runs if r.data == label]
        gd = [r for r in runs if r.batch_size is None]
        sgd = [r for r in runs if r.batch_size is not None]
        for group, per_run in ((sgd, n_seeds), (gd, 1 if fixed_init else n_seeds)):
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
                save_params=plan.save_params or group is gd,
                l0_threshold=plan.l0_threshold,
                engine=engine,
                metrics=[_loose_l0(plan.loose_l0_threshold)],
                progress=progress,
            )
            for i, run in enumerate(group):
                traj = _split(ds, i * per_run, per_run)
                if group is gd:
                    traj.edge = gd_edges(plan.model, data, traj.params, plan.save_steps)
                    traj.params = traj.params if plan.save_params else None
                out[run.name] = _repeat(traj, n_seeds) if per_run < n_seeds else traj
    return out


def edge_steps(grid: np.ndarray) -> np.ndarray:
    """The indices into the save ``grid`` where a GD run's edge is taken: ``EDGE_POINTS``
    spread evenly over the grid's indices (so as dense as the grid where it is dense),
    the first and last included."""
    return np.unique(
        np.rint(np.linspace(0, grid.size - 1, min(EDGE_POINTS, grid.size))).astype(int)
    )


def gd_edges(
    model: Model, data: RegressionData, params: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """The GD stability edge 2 / lambda_max(theta_k) (``sgdsde.theory.gd_stability_edge``)
    of saved parameters ``params`` (seed, step, p) at the ``edge_steps`` of ``grid``:
    (seed, edge step); NaN where a trajectory has diverged (its parameters are NaN)."""
    at = params[:, edge_steps(grid)]
    out = np.full(at.shape[:2], np.nan)
    for s, rows in enumerate(at):  # one seed at a time: T Hessians of p x p in memory
        ok = np.isfinite(rows).all(axis=1)
        if ok.any():
            out[s, ok] = gd_stability_edge(model, rows[ok], data)
    return out


def _repeat(traj: _Trajectories, n_seeds: int) -> _Trajectories:
    """A deterministic run's one trajectory as the same values for every seed."""
    rep = np.zeros(n_seeds, dtype=np.int64)
    return _Trajectories(
        {k: v[rep] for k, v in traj.curves.items()},
        None if traj.params is None else traj.params[rep],
        traj.diverged[rep],
        edge=None if traj.edge is None else traj.edge[rep],
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


# ----------------------------------------------------------------------------------------
# Theory beside the runs


#: The closed-form predictors of every dataset (dim ``theory``): key -> what it is.
THEORY_PREDICTORS: dict[str, str] = {
    "gf_limit": "gradient-flow limit from the init",
    "min_l1": "min-l1 interpolator (the alpha -> 0 end)",
    "min_l2": "min-l2 interpolator (the alpha -> infinity end)",
}

#: Summaries of a closed-form beta: name -> (long_name, units); stored as
#: ``theory_<name>`` (per dataset and predictor) and ``theory_lasso_<name>`` (per run).
PREDICTOR_SUMMARIES: dict[str, tuple[str, str]] = {
    "train_loss": ("training loss (1/2n) ||X beta - y||^2", "1"),
    "test_loss": ("test loss on the held-out points", "1"),
    "l0_norm": ("#{i : |beta_i| > max(l0_threshold, SOLVER_FLOOR max|beta|)}", "count"),
    "l0_norm_loose": ("#{i : |beta_i| > max(loose_l0_threshold, SOLVER_FLOOR max|beta|)}", "count"),
    "l1_norm": ("l1 norm sum_i |beta_i|", "1"),
}

#: The closed forms are solved to about this precision relative to max |beta_i| (the LP
#: of ``min_l1_interpolator`` leaves ~1e-14 on coordinates that are 0): their l0 counts
#: only coordinates above it, whatever the l0 threshold (a run's 1e-50 counts
#: coordinates that the dynamics has not yet collapsed, a meaning a solver's rounding
#: does not have).
SOLVER_FLOOR = 1e-9


def has_interpolators(data: RegressionData) -> bool:
    """Whether X beta = y has solutions for every y: X (n, d) of full row rank n <= d."""
    return data.n <= data.d and int(np.linalg.matrix_rank(data.X)) == data.n


def closed_form_predictors(model: Model, data: RegressionData) -> dict[str, np.ndarray]:
    """The ``THEORY_PREDICTORS`` of ``data`` that exist: the gradient-flow limit of
    ``model`` (``gradient_flow_limit_of``) and the min-l1 / min-l2 interpolators, each
    only where ``has_interpolators`` (and, for the first, ``has_gradient_flow_limit``)."""
    if not has_interpolators(data):
        return {}
    out = {}
    if has_gradient_flow_limit(model):
        out["gf_limit"] = gradient_flow_limit_of(model, data.X, data.y)
    out["min_l1"] = min_l1_interpolator(data.X, data.y)
    out["min_l2"] = min_l2_interpolator(data.X, data.y)
    return out


def predictor_summaries(
    beta: np.ndarray, data: RegressionData, l0_threshold: float, loose_l0_threshold: float
) -> dict[str, float]:
    """The ``PREDICTOR_SUMMARIES`` of a closed-form ``beta`` (d,) on ``data``: its train
    and test loss (1/2m) ||X beta - y||^2, its l0 norms at the two thresholds (above the
    ``SOLVER_FLOOR`` too) and its l1 norm."""
    floor = SOLVER_FLOOR * float(np.max(np.abs(beta)))
    return {
        "train_loss": float(0.5 * np.mean((data.X @ beta - data.y) ** 2)),
        "test_loss": float(0.5 * np.mean((data.X_test @ beta - data.y_test) ** 2)),
        "l0_norm": float(l0_norm(beta, max(l0_threshold, floor))),
        "l0_norm_loose": float(l0_norm(beta, max(loose_l0_threshold, floor))),
        "l1_norm": float(l1_norm(beta)),
    }


def _summary_attrs(name: str, what: str) -> dict[str, str]:
    long_name, units = PREDICTOR_SUMMARIES[name]
    return {"long_name": f"{what}: {long_name}", "units": units}


def theory_dataset(plan: DLNPlan) -> xr.Dataset:
    """Per dataset label (dim ``dataset``) and ``THEORY_PREDICTORS`` key (dim ``theory``):
    ``theory_beta`` (dataset, theory, coefficient) and ``theory_<summary>`` (dataset,
    theory), NaN where a predictor does not exist; ``theory_gd_edge_init`` (dataset),
    the GD edge 2 / lambda_max at the model's init (NaN for a random init)."""
    labels, keys = list(plan.datasets), list(THEORY_PREDICTORS)
    d = plan.model.input_dim
    betas = np.full((len(labels), len(keys), d), np.nan)
    summaries = {q: np.full((len(labels), len(keys)), np.nan) for q in PREDICTOR_SUMMARIES}
    edges = np.full(len(labels), np.nan)
    fixed_init = _deterministic_init(plan.model)
    for i, data in enumerate(plan.datasets.values()):
        for key, beta in closed_form_predictors(plan.model, data).items():
            j = keys.index(key)
            betas[i, j] = beta
            for q, value in predictor_summaries(
                beta, data, plan.l0_threshold, plan.loose_l0_threshold
            ).items():
                summaries[q][i, j] = value
        if fixed_init:
            theta0 = plan.model.init([np.random.default_rng(0)])
            edges[i] = gd_stability_edge(plan.model, theta0, data)[0]
    what = "closed-form predictor (sgdsde.theory)"
    ds = xr.Dataset(
        {
            "theory_beta": (
                ("dataset", "theory", "coefficient"),
                betas,
                {"long_name": f"{what}: beta", "units": "1"},
            ),
            **{
                f"theory_{q}": (("dataset", "theory"), v, _summary_attrs(q, what))
                for q, v in summaries.items()
            },
            "theory_gd_edge_init": (
                ("dataset",),
                edges,
                {
                    "long_name": "GD stability edge 2 / lambda_max(H(theta_0)) at the init",
                    "units": "step size",
                },
            ),
        },
        coords={
            "dataset": np.array(labels, dtype=object),
            "theory": np.array(keys, dtype=object),
        },
    )
    ds["theory"].attrs["description"] = json.dumps(THEORY_PREDICTORS)
    return ds


def lasso_prediction(
    plan: DLNPlan, sde: SDERun, levels: np.ndarray
) -> tuple[np.ndarray, float, float, int] | None:
    """The weighted Lasso that the label-noise SDE run ``sde`` solves in its large-step
    phase (``sgdsde.theory.label_noise_lasso``, Pillaud-Vivien et al., COLT 2022): at
    that phase's step eta_0 and batch size B of its SGD run, and delta = 2 median_s L*_s
    (``levels`` (seed, phase), the SDE's own levels of phase 0). Returns (beta, eta_0,
    delta, the phase's last step), or None for a run of another noise, or where delta
    = 0 (no noise: no Lasso)."""
    if sde.noise != "label_noise" or levels is None:
        return None
    run = next(r for r in plan.runs if r.name == sde.of)
    data = plan.datasets[run.data]
    _, stop, eta = phases(run.schedule, plan.n_steps)[0]
    delta = 2.0 * float(np.median(levels[:, 0]))
    if not delta > 0:
        return None
    batch = data.n if run.batch_size is None else run.batch_size
    return label_noise_lasso(plan.model, data.X, data.y, eta, delta, batch), eta, delta, stop


def lasso_dataset(plan: DLNPlan, trajs: dict[str, _Trajectories]) -> xr.Dataset:
    """Per run (NaN but for label-noise SDE runs, ``lasso_prediction``):
    ``theory_lasso_beta`` (run, coefficient), ``theory_lasso_<summary>``,
    ``theory_lasso_lr``, ``theory_lasso_delta`` and ``theory_lasso_until`` (the last
    step of the large-step phase it is drawn over)."""
    names = list(plan.run_names)
    betas = np.full((len(names), plan.model.input_dim), np.nan)
    summaries = {q: np.full(len(names), np.nan) for q in PREDICTOR_SUMMARIES}
    setting = {k: np.full(len(names), np.nan) for k in ("lr", "delta", "until")}
    for sde in plan.sdes:
        found = lasso_prediction(plan, sde, trajs[sde.name].levels)
        if found is None:
            continue
        i = names.index(sde.name)
        betas[i], setting["lr"][i], setting["delta"][i], setting["until"][i] = found
        data = plan.datasets[next(r.data for r in plan.runs if r.name == sde.of)]
        for q, value in predictor_summaries(
            betas[i], data, plan.l0_threshold, plan.loose_l0_threshold
        ).items():
            summaries[q][i] = value
    what = "label-noise Lasso of the run's large-step phase (sgdsde.theory)"
    return xr.Dataset(
        {
            "theory_lasso_beta": (
                ("run", "coefficient"),
                betas,
                {"long_name": f"{what}: beta", "units": "1"},
            ),
            **{
                f"theory_lasso_{q}": ("run", v, _summary_attrs(q, what))
                for q, v in summaries.items()
            },
            "theory_lasso_lr": (
                "run",
                setting["lr"],
                {"long_name": f"{what}: step eta_0", "units": "step size"},
            ),
            "theory_lasso_delta": (
                "run",
                setting["delta"],
                {"long_name": f"{what}: label-noise variance delta = 2 median L*", "units": "1"},
            ),
            "theory_lasso_until": (
                "run",
                setting["until"],
                {"long_name": f"{what}: the last step of the large-step phase", "units": "step"},
            ),
        },
        coords={"run": np.array(names, dtype=object)},
    )


def theory_labels(model: Model) -> dict[str, str]:
    """The legend and table names of the ``THEORY_PREDICTORS`` for ``model``."""
    alpha = f" at alpha = {model.alpha:g}" if isinstance(model, DiagonalLinearNet) else ""
    return {
        "gf_limit": f"theory: GF limit{alpha}",
        "min_l1": "theory: min-l1 interpolator",
        "min_l2": "theory: min-l2 interpolator",
    }


def theory_label(ds: xr.Dataset, key: str) -> str:
    """The legend / table name of closed-form predictor ``key`` of a DLN dataset."""
    return json.loads(ds.attrs["theory_labels"])[key]


def dln_theory_rows(ds: xr.Dataset) -> list[dict[str, Any]]:
    """The table's theory rows (``theory_row``): per dataset, the test loss of the three
    closed-form predictors and the l0 norm of the first two (the min-l2 interpolator is
    dense), the GD edge at the init where the dataset has a GD run; per label-noise SDE
    run, its Lasso's test loss and l0 norm."""
    labels = ds["dataset"].values.tolist()
    rows = []
    for label in labels:
        where = f" (data: {label})" if len(labels) > 1 else ""
        sel = ds.sel(dataset=label)
        for key, quantities in (
            ("gf_limit", ("test_loss", "l0_norm")),
            ("min_l1", ("test_loss", "l0_norm")),
            ("min_l2", ("test_loss",)),
        ):
            for q in quantities:
                value = float(sel[f"theory_{q}"].sel(theory=key))
                if np.isfinite(value):
                    rows.append(theory_row(theory_label(ds, key) + where, q, value))
        has_gd = any(
            m == "GD" and d == label
            for m, d in zip(ds["method"].values, ds["data"].values, strict=True)
        )
        edge = float(sel["theory_gd_edge_init"])
        if has_gd and np.isfinite(edge):
            rows.append(
                theory_row(f"theory: GD edge 2/lambda_max at init{where}", "step size", edge)
            )
    for run in ds["run"].values:
        for q in ("test_loss", "l0_norm"):
            value = float(ds[f"theory_lasso_{q}"].sel(run=run))
            if np.isfinite(value):
                rows.append(theory_row(f"theory: label-noise Lasso of {run}", q, value))
    return rows


def dln_dataset(plan: DLNPlan, trajs: dict[str, _Trajectories]) -> xr.Dataset:
    """The gallery dataset: the reported quantities (run, seed) at the last step, the
    curves ``<var>_curve`` (run, seed, step), coords ``method``, ``data`` (dataset label)
    and ``time`` (run, step) = sum of the run's step sizes, ``lr_curve`` (run, step),
    ``gd_edge_curve`` (run, seed, edge_step), ``params`` (run, seed, step, param) when
    the plan saves them, and the theory beside the runs (``theory_dataset``,
    ``lasso_dataset``; its table rows in the ``THEORY_ROWS`` attribute)."""
    names, grid = list(plan.run_names), plan.save_steps
    quantities: dict[str, list[np.ndarray]] = {q: [] for q in DLN_QUANTITIES}
    methods, labels, times, rates = [], [], [], []
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
        rates.append(run.schedule(np.minimum(grid, plan.n_steps - 1), plan.n_steps))
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
    ds["lr_curve"] = (
        ("run", "step"),
        np.array(rates),
        {
            "long_name": "step size eta_k of the step from k (the last one at k = n_steps)",
            "units": "step size",
        },
    )
    nan_edges = np.full((plan.header.n_seeds, edge_steps(grid).size), np.nan)
    ds = ds.assign_coords(edge_step=grid[edge_steps(grid)])
    ds["gd_edge_curve"] = (
        ("run", "seed", "edge_step"),
        np.array([nan_edges if trajs[n].edge is None else trajs[n].edge for n in names]),
        {
            "long_name": "GD stability edge 2 / lambda_max(H(theta_k)) of a GD run (NaN else)",
            "units": "step size",
        },
    )
    if plan.save_params:
        ds["params"] = (
            ("run", "seed", "step", "param"),
            np.array([trajs[n].params for n in names]),
        )
    levels = {n: trajs[n].levels.tolist() for n in names if trajs[n].levels is not None}
    ds.attrs["sde_levels"] = json.dumps(levels)  # label-noise SDE: L* per seed and phase
    ds.attrs["l0_threshold"] = plan.l0_threshold
    ds.attrs["loose_l0_threshold"] = plan.loose_l0_threshold
    ds = xr.merge([ds, theory_dataset(plan), lasso_dataset(plan, trajs)], combine_attrs="override")
    ds.attrs["theory_labels"] = json.dumps(theory_labels(plan.model))
    ds.attrs[THEORY_ROWS] = json.dumps(dln_theory_rows(ds))
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


#: Panels of the curve figure: variable, title, log scale, the theory summary drawn on it.
_PANELS = (
    ("train_loss_curve", "train loss", True, "train_loss"),
    ("test_loss_curve", "test loss", True, "test_loss"),
    ("l0_norm_curve", "l0 norm", False, "l0_norm"),
    ("l1_norm_curve", "l1 norm", False, "l1_norm"),
)

#: Colours of the closed-form predictors' reference lines.
THEORY_COLORS = {"gf_limit": "black", "min_l1": "tab:red", "min_l2": "0.5"}

#: On a log panel a reference line more than this factor below the curves is not let
#: stretch the axis (an exact-recovery interpolator's test loss is ~1e-30): it is marked
#: "below the axis" in the legend instead.
OFF_SCALE = 1e3


@dataclasses.dataclass(frozen=True)
class ReferenceLine:
    """A theory value drawn as a horizontal line: ``label`` (starting "theory: "),
    ``value``, ``color``, line ``style``, over steps [0, ``until``] (from the axis' left
    end on a log axis; None: the whole axis)."""

    label: str
    value: float
    color: str
    style: str = "--"
    until: float | None = None


def reference_lines(
    ds: xr.Dataset, label: str, summary: str, colors: dict[str, str]
) -> list[ReferenceLine]:
    """The theory drawn on the panel of ``summary`` in the row of dataset ``label``: the
    closed-form predictors (not on the train loss: they interpolate, loss 0) and the
    Lasso of each label-noise SDE run of the dataset (in the run's colour from
    ``colors``), over its large-step phase."""
    out = []
    if summary != "train_loss":
        sel = ds.sel(dataset=label)
        for key in ds["theory"].values:
            value = float(sel[f"theory_{summary}"].sel(theory=key))
            if np.isfinite(value):
                name = f"{theory_label(ds, key)}: {value:.3g}"
                out.append(ReferenceLine(name, value, THEORY_COLORS[key]))
    for run in ds["run"].values:
        value = float(ds[f"theory_lasso_{summary}"].sel(run=run))
        if ds["data"].sel(run=run).item() == label and np.isfinite(value):
            out.append(
                ReferenceLine(
                    f"theory: label-noise Lasso of {run}: {value:.3g}",
                    value,
                    colors[str(run)],
                    "-.",
                    float(ds["theory_lasso_until"].sel(run=run)),
                )
            )
    return out


def draw_references(ax, lines: list[ReferenceLine], log: bool) -> list:
    """Draw ``lines`` on ``ax`` (after its curves) without letting a value far below the
    curves stretch a log axis (``OFF_SCALE``); returns the line artists."""
    low, high = ax.get_ylim()
    handles, shown = [], []
    for line in lines:
        off = log and not line.value > low / OFF_SCALE
        label = f"{line.label} (below the axis)" if off else line.label
        style = {"ls": line.style, "color": line.color, "lw": 1.1, "label": label}
        if line.until is None:  # across the whole axis, not stretching the x limits
            handle = ax.axhline(line.value, **style)
        else:
            start = ax.get_xlim()[0] if ax.get_xscale() == "log" else 0.0  # no 0 on a log axis
            (handle,) = ax.plot([start, line.until], [line.value, line.value], **style)
        handles.append(handle)
        if not off:
            shown.append(line.value)
    if shown:  # the axis widened to the shown values, with a margin where it grows
        pad = (lambda v, k: v * 1.5**k) if log else (lambda v, k: v + 0.05 * k * (high - low))
        lo, hi = min(shown), max(shown)
        ax.set_ylim(low if lo >= low else pad(lo, -1), high if hi <= high else pad(hi, 1))
    return handles


def shown_seeds(values: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """The seeds a curve is drawn from: those that did not diverge, or, where every seed
    diverged, all of them (their values before divergence; NaN after)."""
    return values[~diverged] if (~diverged).any() else values


def _plot_edges(ax, ds: xr.Dataset, label: str, gd_runs: list[str], colors: dict[str, str]):
    """The GD panel of a row: per GD run its step size eta_k (line) and its edge
    2 / lambda_max(theta_k) (dots, median over seeds), the edge at the init dashed."""
    for run in gd_runs:
        sel = ds.sel(run=run)
        ax.plot(
            ds["step"].values,
            sel["lr_curve"].values,
            "-",
            color=colors[run],
            lw=1.0,
            drawstyle="steps-post",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (diverged)
            edge = np.nanmedian(sel["gd_edge_curve"].values, axis=0)
        ax.plot(ds["edge_step"].values, edge, "o:", color=colors[run], ms=3, lw=0.8)
    ax.set_yscale("log")
    ax.set_title("GD: edge 2/lambda_max(theta_k) (dots) vs step eta_k (line)", fontsize=10)
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    value = float(ds["theory_gd_edge_init"].sel(dataset=label))
    if not np.isfinite(value):
        return []
    line = ReferenceLine(f"theory: GD edge 2/lambda_max at init: {value:.3g}", value, "black")
    return draw_references(ax, [line], log=True)


def plot_dln_curves(ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
    """One row of panels per dataset label: train loss, test loss, l0 norm, l1 norm
    against the iteration, and where the dataset has GD runs, their step size against
    their GD edge (``_plot_edges``). Per run the median over its non-diverged seeds
    (line) and their min-max band (``shown_seeds``: a run whose every seed diverged is
    drawn until they do); SDE runs dashed, GD dotted; the legend counts diverged seeds.
    The theory (``reference_lines``) is drawn as labelled lines, "theory: ..."."""
    labels = list(dict.fromkeys(ds["data"].values.tolist()))
    gd = {
        label: [
            str(r)
            for r, m, d in zip(
                ds["run"].values, ds["method"].values, ds["data"].values, strict=True
            )
            if m == "GD" and d == label
        ]
        for label in labels
    }
    n_cols = len(_PANELS) + any(gd.values())
    fig, axes = plt.subplots(
        len(labels), n_cols, figsize=(4.4 * n_cols + 3, 3.7 * len(labels)), squeeze=False
    )
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    steps = ds["step"].values
    for row, label in zip(axes, labels, strict=True):
        runs = [str(r) for r in ds["run"].values if ds["data"].sel(run=r).item() == label]
        colors = {run: cycle[i % len(cycle)] for i, run in enumerate(runs)}
        run_lines = []
        for run in runs:
            sel = ds.sel(run=run)
            bad = sel["diverged"].values
            method = str(sel["method"].item())
            style = "--" if method.startswith("SDE") else (":" if method == "GD" else "-")
            name = f"{run} ({int(bad.sum())}/{bad.size} diverged)" if bad.any() else run
            for ax, (var, *_) in zip(row, _PANELS, strict=False):
                values = shown_seeds(sel[var].values, bad)
                if values.size:
                    line = median_band(ax, steps, values, color=colors[run], label=name, ls=style)
                    if ax is row[0]:
                        run_lines.append(line)
        for ax, (var, panel, log, summary) in zip(row, _PANELS, strict=False):
            ax.set_yscale("log" if log else "linear")
            thr = ds[var].attrs.get("threshold")
            ax.set_title(f"{panel} (|beta_i| > {thr:g})" if thr is not None else panel, fontsize=10)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            theory = draw_references(ax, reference_lines(ds, label, summary, colors), log)
            if theory:
                ax.legend(handles=theory, fontsize=6, loc="best", framealpha=0.7)
        if gd[label]:
            edge = _plot_edges(row[len(_PANELS)], ds, label, gd[label], colors)
            run_lines += edge
        elif n_cols > len(_PANELS):
            fig.delaxes(row[len(_PANELS)])
        row[0].set_ylabel(f"data: {label}")
        last = row[len(_PANELS)] if gd[label] else row[len(_PANELS) - 1]
        if last.get_legend() is not None:
            last.add_artist(last.get_legend())
        last.legend(handles=run_lines, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return finish_figure(fig, title, path)
