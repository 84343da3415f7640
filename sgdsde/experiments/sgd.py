"""Experiment kind ``sgd``: every ``[[runs]]`` entry of a config in one batched SGD call.

A config has top-level ``name``, ``n_steps``, ``seed`` (and optionally
``common_random_numbers = true``: every run uses the same seed, hence the same
minibatch sequence), tables ``[data]`` (a generator of ``sgdsde.data``),
``[model]`` (a registered model), ``[sgd]``, ``[save]`` and one ``[[runs]]`` table
per trajectory (``name`` and ``schedule``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.data import make_data
from sgdsde.dynamics import SGD, simulate_sgd
from sgdsde.experiments.config import require_key
from sgdsde.models import model_from_config
from sgdsde.run.dataset import save_dataset
from sgdsde.run.grids import eval_grid


def run_experiment(
    config: dict[str, Any],
    out_dir: str | Path | None = None,
    *,
    n_steps: int | None = None,
    engine: str = "numba",
    progress: bool = False,
) -> xr.Dataset:
    """Run every ``[[runs]]`` entry of ``config`` in one batched SGD call.

    ``n_steps`` overrides the config (decay points scale with it, since schedules
    are defined in fractions of the run). Writes ``out_dir/<name>.nc`` when given.
    """
    cfg = copy.deepcopy(config)
    kind = cfg.get("kind", "sgd")
    if kind == "sgd_vs_sde":
        from sgdsde.experiments.sgd_vs_sde import run_sgd_vs_sde

        return run_sgd_vs_sde(cfg, out_dir, n_steps=n_steps, engine=engine, progress=progress)
    if kind != "sgd":
        raise ValueError(f"unknown config kind {kind!r}: choose 'sgd' or 'sgd_vs_sde'")
    name = require_key(cfg, "name")
    steps = int(n_steps if n_steps is not None else require_key(cfg, "n_steps"))
    cfg["n_steps"] = steps
    data_cfg = dict(require_key(cfg, "data"))
    data = make_data(data_cfg.pop("generator"), **data_cfg)
    model_cfg = dict(require_key(cfg, "model"))
    # The input dimension is the data's: a config need not repeat it.
    model_cfg.setdefault("d", data.d)
    model = model_from_config(model_cfg)
    runs = require_key(cfg, "runs")
    if not runs:
        raise ValueError("config has no [[runs]]: add at least one run with a schedule")
    sgd = SGD(**cfg.get("sgd", {}))
    save = dict(cfg.get("save", {}))
    l0_threshold = save.pop("l0_threshold", 1e-50)
    grid = eval_grid(steps, **save)
    seed = cfg.get("seed", 0)
    if cfg.get("common_random_numbers", False):
        seed = [seed] * len(runs)
    ds = simulate_sgd(
        model,
        data,
        [require_key(r, "schedule", "each [[runs]] entry") for r in runs],
        n_steps=steps,
        sgd=sgd,
        seed=seed,
        save_steps=grid,
        l0_threshold=l0_threshold,
        engine=engine,
        run_names=[require_key(r, "name", "each [[runs]] entry") for r in runs],
        progress=progress,
    )
    ds.attrs["experiment"] = name
    ds.attrs["experiment_config"] = _json(cfg)
    if out_dir is not None:
        save_dataset(ds, Path(out_dir) / f"{name}.nc")
    return ds


def _json(cfg):

    return json.dumps(cfg)


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
    """Steps at which each run's schedule divides the step size (for plot markers)."""

    cfg = json.loads(ds.attrs["config"])
    n = cfg["n_steps"]
    out = []
    for sch in cfg["schedules"]:
        fracs = sch.get("at") or ([sch["until"]] if "until" in sch else [])
        if sch.get("name") == "piecewise_epochs":
            fracs = [sch["phase_end"], 0.9]
        out.append([int(np.floor(f * n)) for f in fracs])
    return out
