"""Experiment kind ``sgd_vs_sde``: exact dynamics and SDEs side by side from one
initialization, a table of final values, and a plot."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.dynamics.sgd import SGD, simulate_sgd
from sgdsde.random import fresh_copy, seed_attrs, trajectory_streams
from sgdsde.run.checks import check_int, check_n_steps, check_positive_real, check_single_seed
from sgdsde.run.loop import initial_params
from sgdsde.sde.noise import NoiseModel
from sgdsde.sde.simulate import simulate_sde

#: Metrics stacked by ``run_sgd_vs_sde`` (dims run, traj, step).
_RUN_METRICS = ("train_loss", "test_loss", "l0_norm", "l1_norm", "param_norm")


def run_sgd_vs_sde(
    config: Mapping[str, Any],
    out_dir: Any = None,
    *,
    n_steps: int | None = None,
    engine: str = "numba",
    progress: bool = False,
) -> xr.Dataset:
    """Run a ``kind = "sgd_vs_sde"`` config: exact dynamics and SDEs from one initialization.

    Top-level keys: ``name``, ``lr`` (the SGD step size eta), ``n_steps`` (SGD steps;
    the time horizon is n_steps lr), ``n_traj``, ``seed``, ``refine`` (SDE steps per SGD
    step, dt = lr / refine; a run may override it), tables ``[data]``, ``[model]``,
    ``[save]`` (``eval_grid`` options and ``l0_threshold``) and one ``[[runs]]`` per
    dynamics: ``name``, ``method = "sgd"`` with ``sgd = {batch_size, label_noise,
    with_replacement}`` (``batch_size = "full"``: GD), or ``method = "sde"`` with ``noise
    = {name = <NOISE_MODELS key>, ...}`` (a missing ``lr`` is the config's lr).

    Every run starts from the model's init drawn once from ``seed`` and runs ``n_traj``
    trajectories with its own child of ``seed`` (independent across runs). Returns a
    Dataset with dims ``run``, ``traj``, ``step`` (SGD steps k; coord ``time`` = k lr)
    holding the recorded metrics, ``diverged``; writes ``out_dir/<name>.nc`` if given.
    """
    from sgdsde.data import make_data
    from sgdsde.experiments.config import require_key
    from sgdsde.models import model_from_config
    from sgdsde.run.dataset import encode_attrs, save_dataset
    from sgdsde.run.grids import eval_grid
    from sgdsde.sde.simulate import _as_noise

    cfg = json.loads(json.dumps(dict(config)))  # deep copy, and JSON-able by construction
    where = "sgd_vs_sde config"
    name = require_key(cfg, "name", where)
    if n_steps is None:
        n_steps = require_key(cfg, "n_steps", where)
    steps = check_n_steps(int(n_steps))
    cfg["n_steps"] = steps
    lr = check_positive_real("lr", require_key(cfg, "lr", where))
    n_traj = check_int("n_traj", cfg.get("n_traj", 8), 1, "trajectories per dynamics")
    refine = check_int("refine", cfg.get("refine", 4), 1, "SDE steps per SGD step")
    data_cfg = dict(require_key(cfg, "data", where))
    data = make_data(data_cfg.pop("generator", "sparse_regression"), **data_cfg)
    model_cfg = dict(require_key(cfg, "model", where))
    model_cfg.setdefault("d", data.d)
    model = model_from_config(model_cfg)
    save_cfg = dict(cfg.get("save", {}))
    l0_threshold = float(save_cfg.pop("l0_threshold", 1e-50))
    grid = eval_grid(steps, **save_cfg)
    runs = require_key(cfg, "runs", where)
    if not runs:
        raise ValueError("config has no [[runs]]: add at least one dynamics")
    root = check_single_seed(cfg.get("seed", 0))
    theta0 = initial_params(
        model, None, n_traj, trajectory_streams(fresh_copy(root), n_traj)["init"]
    )
    children = fresh_copy(root).spawn(len(runs) + 1)[1:]  # child 0 is reserved (init above)
    same_start = bool(np.all(theta0 == theta0[:1]))

    results, methods, dts, names = [], [], [], []
    for i, run in enumerate(runs):
        rname = str(require_key(run, "name", "each [[runs]] entry"))
        method = require_key(run, "method", f"run {rname!r}")
        common = dict(
            n_traj=n_traj,
            seed=children[i],
            theta0=theta0,
            l0_threshold=l0_threshold,
            progress=progress,
        )
        if method == "sgd":
            sgd_cfg = dict(run.get("sgd", {}))
            if sgd_cfg.get("batch_size") == "full":
                sgd_cfg["batch_size"] = None
            try:
                sgd = SGD(**sgd_cfg)
            except TypeError as err:
                raise ValueError(f"run {rname!r}: bad [sgd] options ({err})") from err
            deterministic = sgd.batch_size in (None, data.n) and not sgd.with_replacement
            deterministic = deterministic and not np.any(sgd.label_noise)
            ds = _tiled(
                deterministic and same_start,
                simulate_sgd,
                (model, data, lr),
                dict(n_steps=steps, sgd=sgd, save_steps=grid, engine=engine, **common),
            )
            dt = lr
        elif method == "sde":
            noise_cfg = dict(require_key(run, "noise", f"run {rname!r}"))
            ell = check_int("refine", run.get("refine", refine), 1, "SDE steps per SGD step")
            noise_cls = _noise_class(noise_cfg, rname)
            if "lr" in {f.name for f in dataclasses.fields(noise_cls)}:
                noise_cfg.setdefault("lr", lr)
            noise = _as_noise(noise_cfg)
            deterministic = not any(noise.coefficients(data.n, n_traj).channels())
            ds = _tiled(
                deterministic and same_start,
                simulate_sde,
                (model, data, noise),
                dict(dt=lr / ell, n_steps=steps * ell, save_steps=grid * ell, **common),
            )
            dt = lr / ell
            run["noise"] = noise.to_config()
        else:
            raise ValueError(f"run {rname!r}: method must be 'sgd' or 'sde' (got {method!r})")
        results.append(ds)
        methods.append(method)
        dts.append(dt)
        names.append(rname)

    variables = {
        m: (("run", "traj", "step"), np.stack([ds[m].values for ds in results]))
        for m in _RUN_METRICS
    }
    variables["diverged"] = (("run", "traj"), np.stack([ds.diverged.values for ds in results]))
    out = xr.Dataset(
        variables,
        coords={
            "run": np.array(names, dtype=object),
            "method": ("run", np.array(methods, dtype=object)),
            "dt": ("run", np.array(dts)),
            "traj": np.arange(n_traj),
            "step": ("step", grid, {"long_name": "SGD steps done k", "units": "step"}),
            "time": ("step", grid * lr, {"long_name": "time t = k lr", "units": "1"}),
        },
    )
    for m in (*_RUN_METRICS, "diverged"):
        out[m].attrs.update(results[0][m].attrs)
    from sgdsde.version import __version__

    out.attrs.update(
        encode_attrs(
            {
                "title": cfg.get("description", name),
                "experiment": name,
                "config": cfg,
                "sgdsde_version": __version__,
                "run_seeds": "run i uses SeedSequence(seed).spawn(n_runs + 1)[i + 1]; "
                "theta0 is the model's init from the 'init' streams of seed",
                **seed_attrs(fresh_copy(root)),
            }
        )
    )
    if out_dir is not None:
        from pathlib import Path

        save_dataset(out, Path(out_dir) / f"{name}.nc")
    return out


def _tiled(shortcut: bool, simulate: Callable, args: tuple, kwargs: dict) -> xr.Dataset:
    """``simulate(*args, **kwargs)``; when ``shortcut`` (deterministic dynamics from one start
    shared by every trajectory) simulate one trajectory and repeat it, which is exact."""
    n_traj = kwargs["n_traj"]
    if not shortcut or n_traj == 1:
        return simulate(*args, **kwargs)
    one = simulate(*args, **{**kwargs, "n_traj": 1, "theta0": kwargs["theta0"][:1], "seed": [0]})
    return one.isel(traj=np.zeros(n_traj, dtype=np.int64)).assign_coords(traj=np.arange(n_traj))


def _noise_class(noise_cfg: Mapping[str, Any], rname: str) -> type[NoiseModel]:
    from sgdsde.sde.noise import NOISE_MODELS

    key = noise_cfg.get("name")
    if key not in NOISE_MODELS:
        raise ValueError(
            f"run {rname!r}: noise name must be one of {sorted(NOISE_MODELS)} (got {key!r})"
        )
    return NOISE_MODELS[key]


def sgd_vs_sde_table(ds: xr.Dataset) -> str:
    """Markdown table: per run the final train / test loss (mean over trajectories) and
    the final l0 norm (mean, min-max)."""
    thr = ds["l0_norm"].attrs.get("threshold", "")
    lines = [
        f"| run | final train loss | final test loss | l0 norm (|beta_i| > {thr:g}) | diverged |",
        "|---|---|---|---|---|",
    ]
    for i, rname in enumerate(ds["run"].values):
        last = ds.isel(run=i, step=-1)
        l0 = last["l0_norm"].values
        with np.errstate(all="ignore"):
            lines.append(
                f"| {rname} | {np.nanmean(last['train_loss'].values):.2e} "
                f"| {np.nanmean(last['test_loss'].values):.2e} "
                f"| {np.nanmean(l0):.1f} ({np.nanmin(l0):.0f}-{np.nanmax(l0):.0f}) "
                f"| {int(ds['diverged'].values[i].sum())}/{ds.sizes['traj']} |"
            )
    return "\n".join(lines)
