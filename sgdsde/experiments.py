"""Experiments from TOML configs: build data, model and schedules, run, save, summarise.

A config has top-level ``name``, ``n_steps``, ``seed`` (and optionally
``common_random_numbers = true``: every run uses the same seed, hence the same
minibatch sequence), tables ``[data]`` (a generator of ``sgdsde.data``),
``[model]`` (a registered model), ``[sgd]``, ``[save]`` and one ``[[runs]]`` table
per trajectory (``name`` and ``schedule``). The built-in configs live in
``sgdsde/configs`` (also reachable as ``configs/`` at the repository root).

A top-level ``kind`` selects the experiment: ``"sgd"`` (the default, described above)
or ``"sgd_vs_sde"`` (exact dynamics and SDEs side by side from one initialization,
``sgdsde.sde.compare.run_sgd_vs_sde``).
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.analysis.dataset import save_dataset
from sgdsde.data import make_data
from sgdsde.dynamics import SGD, eval_grid, simulate_sgd
from sgdsde.models import model_from_config

DEMO_CONFIG = "dln_sparse_sgd"


def builtin_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    files = resources.files("sgdsde") / "configs"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """Read a config from a TOML path or by built-in name (see ``builtin_configs``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise ValueError(f"config file {path} does not exist")
        text = path.read_text()
    else:
        entry = resources.files("sgdsde") / "configs" / f"{name_or_path}.toml"
        if not entry.is_file():
            raise ValueError(
                f"unknown config {name_or_path!r}: give a .toml path or one of {builtin_configs()}"
            )
        text = entry.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config {name_or_path} is not valid TOML: {err}") from err


def require_key(cfg: dict, key: str, where: str = "config") -> Any:
    """cfg[key], or a ValueError naming the missing key and where it belongs."""
    if key not in cfg:
        raise ValueError(f"{where} is missing the key {key!r}")
    return cfg[key]


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
        from sgdsde.sde.compare import run_sgd_vs_sde

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
        steps,
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
    import json

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
    import json

    cfg = json.loads(ds.attrs["config"])
    n = cfg["n_steps"]
    out = []
    for sch in cfg["schedules"]:
        fracs = sch.get("at") or ([sch["until"]] if "until" in sch else [])
        if sch.get("name") == "piecewise_epochs":
            fracs = [sch["phase_end"], 0.9]
        out.append([int(np.floor(f * n)) for f in fracs])
    return out
