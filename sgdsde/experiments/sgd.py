"""Experiment kind ``sgd``: every ``[[runs]]`` entry of a config in one batched SGD call.

A config has top-level ``name``, ``n_steps``, ``seed`` (and optionally
``common_random_numbers = true``: every run uses the same seed, hence the same
minibatch sequence), tables ``[data]`` (a generator of ``sgdsde.data``),
``[model]`` (a registered model), ``[sgd]``, ``[save]`` and one ``[[runs]]`` table
per trajectory (``name`` and ``schedule``: a step size or a schedule table).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.analysis.plots import plot_runs
from sgdsde.data import RegressionData
from sgdsde.dynamics import SGD, Schedule, as_schedule, simulate_sgd
from sgdsde.dynamics.schedules import schedule_from_config
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

#: Top-level keys of a ``kind = "sgd"`` config.
SGD_CONFIG_KEYS: dict[str, Key] = {
    **COMMON_KEYS,
    "n_steps": Key("int", "the number of SGD steps", required=True, minimum=1),
    "seed": Key("int", "the root seed of the run", default=0, minimum=0),
    "common_random_numbers": Key(
        "bool", "every run uses the same seed (the same minibatches)", default=False
    ),
    "data": Key("table", "[data]: generator = <sgdsde.data generator> and its options", True),
    "model": Key("table", "[model]: name = <registered model> and its options", True),
    "sgd": Key("table", "[sgd]: batch_size, label_noise, with_replacement", default={}),
    "save": Key("table", "[save]: n_dense, n_points, spacing, l0_threshold", default={}),
    "runs": Key("tables", "one [[runs]] table per trajectory: name, schedule", True),
}

#: Keys of each ``[[runs]]`` entry.
SGD_RUN_KEYS: dict[str, Key] = {
    "name": Key("str", "the run's name (a row of the table)", required=True),
    "schedule": Key("any", "a step size or {name = <schedule>, ...}", required=True),
}


@dataclasses.dataclass(frozen=True)
class SGDPlan(Plan):
    """A validated ``sgd`` config: the objects ``simulate_sgd`` takes."""

    model: Model
    data: RegressionData
    sgd: SGD
    schedules: list[Schedule]
    run_names: list[str]
    n_steps: int
    seed: int | list[int]
    save_steps: np.ndarray
    l0_threshold: float | None


@EXPERIMENTS.register
class SGDExperiment(Experiment):
    """``kind = "sgd"``: one batched ``simulate_sgd`` call, one trajectory per run."""

    name = "sgd"

    def _prepare(self, config: dict[str, Any], checker: ConfigChecker) -> SGDPlan:
        top = checker.table("", config, SGD_CONFIG_KEYS)
        n_steps = top.get("n_steps")
        data = prepare_data(checker, top.get("data"))
        model = prepare_model(checker, top.get("model"), data)
        sgd = prepare_sgd(checker, "sgd", top.get("sgd", {}), data)
        grid, l0_threshold = prepare_save(checker, top.get("save", {}), n_steps)
        runs = top.get("runs", [])
        if "runs" in top and not runs:
            checker.problem("runs", "config has no [[runs]]: add at least one run with a schedule")
        names = prepare_run_names(checker, runs)
        schedules = []
        for i, run in enumerate(runs):
            entry = checker.table(f"runs[{i}]", run, SGD_RUN_KEYS)
            if "schedule" in entry:
                schedules.append(checker.build(f"runs[{i}].schedule", as_schedule, run["schedule"]))
        seed = top.get("seed", 0)
        if top.get("common_random_numbers"):
            seed = [seed] * len(runs)
        return SGDPlan(
            name=top.get("name", ""),
            description=top.get("description", ""),
            config={**config, **top},
            model=model,
            data=data,
            sgd=sgd,
            schedules=schedules,
            run_names=names,
            n_steps=n_steps,
            seed=seed,
            save_steps=grid,
            l0_threshold=l0_threshold,
        )

    def run(self, plan: Plan, *, engine: str = "numba", progress: bool = False) -> xr.Dataset:
        if not isinstance(plan, SGDPlan):
            raise TypeError("run takes the plan made by SGDExperiment.prepare")
        options = {} if plan.l0_threshold is None else {"l0_threshold": plan.l0_threshold}
        ds = simulate_sgd(
            plan.model,
            plan.data,
            plan.schedules,
            n_steps=plan.n_steps,
            sgd=plan.sgd,
            seed=plan.seed,
            save_steps=plan.save_steps,
            engine=engine,
            run_names=plan.run_names,
            progress=progress,
            **options,
        )
        ds.attrs["experiment"] = plan.name
        ds.attrs["experiment_config"] = json.dumps(plan.config)
        return ds

    def table(self, ds: xr.Dataset) -> str:
        return summary_table(ds)

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        return plot_runs(ds, path, markers=decay_steps(ds), title=title)


def summary_table(ds: xr.Dataset) -> str:
    """One line per run: final train loss, test loss and l0 norm (markdown table)."""
    names = ds["run"].values if "run" in ds.coords else ds["traj"].values.astype(str)
    thr = ds["l0_norm"].attrs.get("threshold", "")
    header = f"| run | final train loss | final test loss | l0 norm (|beta_i| > {thr:g}) |"
    lines = [header, "|---|---|---|---|"]
    for t, name in enumerate(names):
        if bool(ds["diverged"].values[t]):
            step = int(ds["diverged_step"].values[t])
            lines.append(f"| {name} | diverged at step {step} | - | - |")
            continue
        last = ds.isel(traj=t, step=-1)
        lines.append(
            f"| {name} | {float(last.train_loss):.2e} | {float(last.test_loss):.2e} "
            f"| {int(last.l0_norm)} |"
        )
    return "\n".join(lines)


def decay_steps(ds: xr.Dataset) -> list[list[int]]:
    """Steps at which each trajectory's schedule begins a new phase (a decay, the end of
    a warm-up: ``Schedule.change_points``), for plot markers."""
    cfg = json.loads(ds.attrs["config"])
    return [schedule_from_config(s).change_points(cfg["n_steps"]) for s in cfg["schedules"]]
