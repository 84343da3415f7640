"""Experiment kind ``sgd_vs_sde``: exact dynamics and SDEs side by side from one
initialization, a table of final values, and a plot.

Top-level keys: ``name``, ``lr`` (the SGD step size eta), ``n_steps`` (SGD steps; the
time horizon is n_steps lr), ``n_traj``, ``seed``, ``refine`` (SDE steps per SGD step,
dt = lr / refine; a run may override it), tables ``[data]``, ``[model]``, ``[save]``
(``eval_grid`` options and ``l0_threshold``) and one ``[[runs]]`` per dynamics:
``name``, ``method = "sgd"`` with ``sgd = {batch_size, label_noise, with_replacement}``
(``batch_size = "full"``: GD), or ``method = "sde"`` with ``noise = {name =
<NOISE_MODELS key>, ...}`` (a missing ``lr`` is the config's lr).

Every run starts from the model's init drawn once from ``seed`` and runs ``n_traj``
trajectories with its own child of ``seed`` (independent across runs). The dataset has
the shared layout (docs/conventions.md, "Outputs"): dims ``traj`` (run-major: run i
holds trajectories i n_traj .. (i + 1) n_traj - 1) and ``step`` (SGD steps k); coords
``run``, ``method`` and ``dt`` on ``traj`` (``ds.sel(run="GD")``), ``time`` (traj,
step) = k lr; the recorded metrics, ``diverged`` and ``diverged_step`` (in the run's
own steps: SDE steps for an SDE run).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.analysis.plots import plot_sgd_vs_sde
from sgdsde.data import RegressionData
from sgdsde.dynamics.sgd import SGD, simulate_sgd
from sgdsde.experiments.base import EXPERIMENTS, Experiment, Plan
from sgdsde.experiments.config import COMMON_KEYS, ConfigChecker, Key
from sgdsde.experiments.tables import (
    prepare_data,
    prepare_model,
    prepare_run_names,
    prepare_save,
    prepare_sgd,
)
from sgdsde.models import Model
from sgdsde.random import fresh_copy, trajectory_streams
from sgdsde.run.dataset import encode_attrs, index_runs, runs_of
from sgdsde.run.loop import initial_params
from sgdsde.run.provenance import run_attrs
from sgdsde.sde.noise import NOISE_MODELS, NoiseModel, make_noise
from sgdsde.sde.simulate import simulate_sde

#: Top-level keys of a ``kind = "sgd_vs_sde"`` config.
SGD_VS_SDE_CONFIG_KEYS: dict[str, Key] = {
    **COMMON_KEYS,
    "lr": Key("number", "the SGD step size eta (time t = k lr)", required=True, positive=True),
    "n_steps": Key("int", "the number of SGD steps", required=True, minimum=1),
    "n_traj": Key("int", "trajectories per dynamics", default=8, minimum=1),
    "seed": Key("int", "the root seed (the init and one child per run)", default=0, minimum=0),
    "refine": Key("int", "SDE steps per SGD step (dt = lr / refine)", default=4, minimum=1),
    "data": Key("table", "[data]: generator = <sgdsde.data generator> and its options", True),
    "model": Key("table", "[model]: name = <registered model> and its options", True),
    "save": Key("table", "[save]: n_dense, n_points, spacing, l0_threshold", default={}),
    "runs": Key("tables", "one [[runs]] table per dynamics: name, method, sgd or noise", True),
}

#: Keys of a ``[[runs]]`` entry, by method.
RUN_KEYS: dict[str, dict[str, Key]] = {
    "sgd": {
        "name": Key("str", "the run's name", required=True),
        "method": Key("str", "sgd or sde", required=True),
        "sgd": Key("table", "{batch_size, label_noise, with_replacement}", default={}),
    },
    "sde": {
        "name": Key("str", "the run's name", required=True),
        "method": Key("str", "sgd or sde", required=True),
        "noise": Key("table", "{name = <noise model>, ...}", required=True),
        "refine": Key("int", "SDE steps per SGD step for this run", minimum=1),
    },
}


@dataclasses.dataclass(frozen=True)
class Dynamics:
    """One run of the comparison: exact SGD (``sgd``) or an SDE (``noise``, ``refine``)."""

    name: str
    sgd: SGD | None = None
    noise: NoiseModel | None = None
    refine: int = 1

    @property
    def method(self) -> str:
        return "sgd" if self.sgd is not None else "sde"


@dataclasses.dataclass(frozen=True)
class SGDvsSDEPlan(Plan):
    """A validated ``sgd_vs_sde`` config."""

    model: Model
    data: RegressionData
    lr: float
    n_steps: int
    n_traj: int
    seed: int
    save_steps: np.ndarray
    l0_threshold: float | None
    runs: list[Dynamics]


@EXPERIMENTS.register
class SGDvsSDE(Experiment):
    """``kind = "sgd_vs_sde"``: exact dynamics and SDEs from one initialization."""

    name = "sgd_vs_sde"

    def _prepare(self, config: dict[str, Any], checker: ConfigChecker) -> SGDvsSDEPlan:
        top = checker.table("", config, SGD_VS_SDE_CONFIG_KEYS)
        data = prepare_data(checker, top.get("data"))
        model = prepare_model(checker, top.get("model"), data)
        grid, l0_threshold = prepare_save(checker, top.get("save", {}), top.get("n_steps"))
        runs = top.get("runs", [])
        if "runs" in top and not runs:
            checker.problem("runs", "config has no [[runs]]: add at least one dynamics")
        names = prepare_run_names(checker, runs)
        dynamics = []
        for i, (run, name) in enumerate(zip(runs, names, strict=True)):
            dynamics.append(_prepare_run(checker, f"runs[{i}] ({name!r})", run, name, top, data))
        # the resolved config: defaults filled in, every noise model complete
        resolved = {**config, **top}
        resolved["runs"] = [
            {**run, "noise": d.noise.to_config()} if d is not None and d.noise else run
            for run, d in zip(runs, dynamics, strict=True)
        ]
        return SGDvsSDEPlan(
            name=top.get("name", ""),
            description=top.get("description", ""),
            config=resolved,
            model=model,
            data=data,
            lr=top.get("lr"),
            n_steps=top.get("n_steps"),
            n_traj=top.get("n_traj"),
            seed=top.get("seed"),
            save_steps=grid,
            l0_threshold=l0_threshold,
            runs=dynamics,
        )

    def run(self, plan: Plan, *, engine: str = "numba", progress: bool = False) -> xr.Dataset:
        if not isinstance(plan, SGDvsSDEPlan):
            raise TypeError("run takes the plan made by SGDvsSDE.prepare")
        return _run(plan, engine, progress)

    def table(self, ds: xr.Dataset) -> str:
        return sgd_vs_sde_table(ds)

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        return plot_sgd_vs_sde(ds, path, title=title)


def _prepare_run(
    checker: ConfigChecker,
    path: str,
    run: dict[str, Any],
    name: str,
    top: dict[str, Any],
    data: RegressionData | None,
) -> Dynamics | None:
    """One ``[[runs]]`` entry -> its ``Dynamics`` (None, with the problems recorded)."""
    method = run.get("method")
    if method not in RUN_KEYS:
        checker.problem(f"{path}.method", f"method must be 'sgd' or 'sde' (got {method!r})")
        return None
    entry = checker.table(path, run, RUN_KEYS[method])
    if method == "sgd":
        sgd = prepare_sgd(checker, f"{path}.sgd", entry.get("sgd", {}), data)
        return None if sgd is None else Dynamics(name, sgd=sgd)
    noise_cfg = entry.get("noise")
    if not isinstance(noise_cfg, dict):
        return None
    key = noise_cfg.get("name")
    if key not in NOISE_MODELS:
        checker.problem(
            f"{path}.noise.name", f"noise name must be one of {sorted(NOISE_MODELS)} (got {key!r})"
        )
        return None
    options = dict(noise_cfg)
    if "lr" in {f.name for f in dataclasses.fields(NOISE_MODELS[key])} and "lr" in top:
        options.setdefault("lr", top["lr"])
    noise = checker.build(f"{path}.noise", make_noise, **options)
    if noise is not None and data is not None and "n_traj" in top:
        # what depends on the data (B <= n) and on the number of trajectories
        checker.build(f"{path}.noise", noise.coefficients, data.n, top["n_traj"])
    refine = entry.get("refine", top.get("refine"))
    return None if noise is None or refine is None else Dynamics(name, noise=noise, refine=refine)


def _run(plan: SGDvsSDEPlan, engine: str, progress: bool) -> xr.Dataset:
    """Simulate every run of ``plan`` and assemble the dataset (see the module docstring)."""
    model, data, lr, steps, n_traj = plan.model, plan.data, plan.lr, plan.n_steps, plan.n_traj
    root = np.random.SeedSequence(plan.seed)
    theta0 = initial_params(
        model, None, n_traj, trajectory_streams(fresh_copy(root), n_traj)["init"]
    )
    children = fresh_copy(root).spawn(len(plan.runs) + 1)[1:]  # child 0 is reserved (init)
    same_start = bool(np.all(theta0 == theta0[:1]))
    grid = plan.save_steps
    options = {} if plan.l0_threshold is None else {"l0_threshold": plan.l0_threshold}
    results, dts = [], []
    for run, child in zip(plan.runs, children, strict=True):
        common = dict(n_traj=n_traj, seed=child, theta0=theta0, progress=progress, **options)
        if run.sgd is not None:
            sgd = run.sgd
            deterministic = sgd.batch_size in (None, data.n) and not sgd.with_replacement
            deterministic = deterministic and not np.any(sgd.label_noise)
            ds = _tiled(
                deterministic and same_start,
                simulate_sgd,
                (model, data, lr),
                dict(n_steps=steps, sgd=sgd, save_steps=grid, engine=engine, **common),
            )
            dts.append(lr)
        else:
            ell = run.refine
            deterministic = not any(run.noise.coefficients(data.n, n_traj).channels())
            ds = _tiled(
                deterministic and same_start,
                simulate_sde,
                (model, data, run.noise),
                dict(dt=lr / ell, n_steps=steps * ell, save_steps=grid * ell, **common),
            )
            dts.append(lr / ell)
        results.append(ds)
    return _assemble(plan, root, results, dts)


def _assemble(
    plan: SGDvsSDEPlan, root: np.random.SeedSequence, results: list[xr.Dataset], dts: list[float]
) -> xr.Dataset:
    """One dataset of the shared layout from the runs' datasets, run-major along traj."""
    n_traj, grid = plan.n_traj, plan.save_steps
    parts = []
    for i, (run, ds, dt) in enumerate(zip(plan.runs, results, dts, strict=True)):
        parts.append(
            xr.Dataset(
                {name: var.variable for name, var in ds.data_vars.items()},
                coords={
                    "traj": i * n_traj + np.arange(n_traj),
                    "step": grid,
                    "time": (("traj", "step"), ds["time"].values),
                    "run": ("traj", np.array([run.name] * n_traj, dtype=object)),
                    "method": ("traj", np.array([run.method] * n_traj, dtype=object)),
                    "dt": ("traj", np.full(n_traj, dt)),
                },
            )
        )
    out = xr.concat(parts, dim="traj", combine_attrs="override")
    for name in results[0].data_vars:
        out[name].attrs = dict(results[0][name].attrs)
    out["step"].attrs.update({"long_name": "SGD steps done k", "units": "step"})
    out["time"].attrs.update({"long_name": "time t = k lr", "units": "1"})
    out["dt"].attrs.update({"long_name": "step of the run: lr (exact), lr / refine (SDE)"})
    out["diverged_step"].attrs["long_name"] += " (the run's own steps: SDE steps for an SDE)"
    out.attrs = encode_attrs(
        run_attrs(
            plan.description or plan.name,
            plan.config,
            fresh_copy(root),
            experiment=plan.name,
            run_seeds="run i uses SeedSequence(seed).spawn(n_runs + 1)[i + 1]; "
            "theta0 is the model's init from the 'init' streams of seed",
            run_configs=[json.loads(ds.attrs["config"]) for ds in results],
        )
    )
    return index_runs(out)


def _tiled(shortcut: bool, simulate: Callable, args: tuple, kwargs: dict) -> xr.Dataset:
    """``simulate(*args, **kwargs)``; when ``shortcut`` (deterministic dynamics from one start
    shared by every trajectory) simulate one trajectory and repeat it, which is exact."""
    n_traj = kwargs["n_traj"]
    if not shortcut or n_traj == 1:
        return simulate(*args, **kwargs)
    one = simulate(*args, **{**kwargs, "n_traj": 1, "theta0": kwargs["theta0"][:1], "seed": [0]})
    return one.isel(traj=np.zeros(n_traj, dtype=np.int64)).assign_coords(traj=np.arange(n_traj))


def sgd_vs_sde_table(ds: xr.Dataset) -> str:
    """Markdown table: per run the final train / test loss (mean over its trajectories)
    and the final l0 norm (mean, min-max), and how many trajectories diverged."""
    thr = ds["l0_norm"].attrs.get("threshold", "")
    lines = [
        f"| run | final train loss | final test loss | l0 norm (|beta_i| > {thr:g}) | diverged |",
        "|---|---|---|---|---|",
    ]
    for rname, run in runs_of(ds).items():
        last = run.isel(step=-1)
        l0 = last["l0_norm"].values
        with np.errstate(all="ignore"):
            lines.append(
                f"| {rname} | {np.nanmean(last['train_loss'].values):.2e} "
                f"| {np.nanmean(last['test_loss'].values):.2e} "
                f"| {np.nanmean(l0):.1f} ({np.nanmin(l0):.0f}-{np.nanmax(l0):.0f}) "
                f"| {int(run['diverged'].values.sum())}/{run.sizes['traj']} |"
            )
    return "\n".join(lines)
