"""Experiment kind ``phase``: a phase diagram over the step size from a TOML config
(``sgdsde sweep CONFIG``), run by ``sgdsde.analysis.phase_diagram``.

A config has the common keys (``name``, ``kind = "phase"``, ``description``) and

* ``[data]``, ``[model]``: as every kind (``sgdsde.experiments.tables``);
* ``[dynamics]``: ``name = "sgd"`` (exact SGD: ``batch_size`` (an integer or ``"full"``
  for GD), ``label_noise``, ``with_replacement``, ``engine``) or ``name = "sde"`` (the
  SDE model: ``noise`` (a key of ``SDE_NOISE``, default ``"label_noise"``),
  ``batch_size``, ``label_noise``, ``steps_per_lr``, ``solver``);
* ``lrs``: the step sizes, a list or a grid ``{start, stop, num, spacing}`` (spacing
  ``"log"`` by default: ``numpy.geomspace``; ``"linear"``: ``numpy.linspace``);
* ``[axis]`` (optional): the second axis, ``name`` (a key of ``sgdsde.analysis.AXES``),
  ``values`` (a list or a grid as for ``lrs``, spacing ``"linear"`` by default) and the
  axis's own options (``factor`` of ``decay_fraction``, ``field`` of ``init_scale``,
  ``path`` of ``config_field``: any setting by its path, e.g. ``"model.alpha"``,
  ``"sgd.batch_size"``, ``"data.noise_std"``);
* ``seeds`` (a count or a list of seed indices), ``seed`` (the root seed), ``n_steps``;
* ``[save]`` (the save grid of the loss curves and ``l0_threshold``), ``[regimes]``
  (``RegimeCriteria`` options), ``sparsity_level``, ``sparsity_every``, ``max_loss``.

Every field is checked before any work (``PhaseExperiment.prepare``), the grids
included (empty, non-positive, repeated, an axis value the axis refuses). The result is
the ``phase_diagram`` dataset (dims ``lr``, ``<axis>``, ``seed``) with the edges the
sweep found (``sgdsde.analysis.phase_theory.with_phase_edges``: the stabilization
band's ``stable_lr_max`` / ``stabilized_lr_min``, GD's measured catapult window) and the resolved
config in ``experiment_config`` (JSON; grids written out value by value), the kind in
``experiment_kind`` and the provenance of ``sgdsde.run.provenance.environment_attrs``.

Execution goes through one function, ``execute_phase``: today it runs the whole grid
in-process (the engines use every core); the resumable store and the dask executors
plug in there (``workers``, ``scheduler``, ``resume``, ``store``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.analysis.phase import (
    AXES,
    SDEDynamics,
    SGDDynamics,
    SweepAxis,
    label_noise_sde,
    phase_diagram,
)
from sgdsde.analysis.phase_plots import plot_phase
from sgdsde.analysis.phase_theory import regime_variable, with_phase_edges
from sgdsde.analysis.regimes import RegimeCriteria
from sgdsde.analysis.sweep import Sweep, as_executor, open_sweep, run_sweep
from sgdsde.data import RegressionData
from sgdsde.dynamics.engines import ENGINES
from sgdsde.experiments.base import EXPERIMENTS, Experiment, Plan
from sgdsde.experiments.config import COMMON_KEYS, ConfigChecker, Key
from sgdsde.experiments.tables import prepare_data, prepare_model, prepare_save, prepare_sgd
from sgdsde.models import Model
from sgdsde.run.dataset import encode_attrs
from sgdsde.run.provenance import environment_attrs
from sgdsde.sde import SOLVERS
from sgdsde.version import __version__

#: SDE noise factories by config name: ``(lr, batch_size, label_noise) -> NoiseModel``.
SDE_NOISE = {"label_noise": label_noise_sde}

#: Top-level keys of a ``kind = "phase"`` config.
PHASE_CONFIG_KEYS: dict[str, Key] = {
    **COMMON_KEYS,
    "n_steps": Key("int", "the number of SGD steps of every cell", required=True, minimum=1),
    "seed": Key("int", "the root seed (seed index s uses its s-th child)", default=0, minimum=0),
    "seeds": Key("any", "a number of seeds or a list of seed indices", required=True),
    "lrs": Key("any", "step sizes: a list or {start, stop, num, spacing}", required=True),
    "data": Key("table", "[data]: generator = <sgdsde.data generator> and its options", True),
    "model": Key("table", "[model]: name = <registered model> and its options", True),
    "dynamics": Key("table", '[dynamics]: name = "sgd" or "sde" and its options', True),
    "axis": Key("table", "[axis]: name = <sweep axis>, values and the axis's options"),
    "save": Key("table", "[save]: n_dense, n_points, spacing, l0_threshold", default={}),
    "regimes": Key("table", "[regimes]: RegimeCriteria options (window, ...)", default={}),
    "sparsity_level": Key("number", "the l0 level of time_to_sparsity", minimum=0),
    "sparsity_every": Key("int", "evaluate the first passage every so many steps", minimum=1),
    "max_loss": Key("number", "a run whose loss exceeds it is diverged", positive=True),
    "sharpness": Key("bool", "record lambda_max of the Hessian at the end of each run"),
}

#: Keys of a grid spec ``{start, stop, num, spacing}``.
GRID_KEYS: dict[str, Key] = {
    "start": Key("number", "the first value", required=True),
    "stop": Key("number", "the last value", required=True),
    "num": Key("int", "how many values", required=True, minimum=1),
    "spacing": Key("str", "how they are spread", choices=("log", "linear")),
}

#: ``[dynamics]`` keys by name.
DYNAMICS_KEYS: dict[str, dict[str, Key]] = {
    "sgd": {
        "name": Key("str", '"sgd" or "sde"', required=True),
        "batch_size": Key("any", 'the minibatch size B, or "full" for GD'),
        "label_noise": Key("any", "the label-noise variance delta"),
        "with_replacement": Key("any", "draw minibatches with replacement"),
        "engine": Key("str", "the SGD engine (default: the run's)", choices=tuple(ENGINES)),
    },
    "sde": {
        "name": Key("str", '"sgd" or "sde"', required=True),
        "noise": Key("str", "the SDE noise model", default="label_noise", choices=tuple(SDE_NOISE)),
        "batch_size": Key("int", "the batch size B of the noise model", default=1, minimum=1),
        "label_noise": Key("number", "the label-noise variance delta", default=0.0, minimum=0),
        "steps_per_lr": Key("int", "SDE steps per SGD step (dt = lr / m)", default=1, minimum=1),
        "solver": Key("str", "the SDE solver (default: the fastest)", choices=tuple(SOLVERS)),
    },
}


@dataclasses.dataclass(frozen=True)
class PhasePlan(Plan):
    """A validated ``phase`` config: the arguments of ``phase_diagram``.

    engine_given: the config names the SGD engine (else ``run``'s ``engine`` is used).
    """

    model: Model
    data: RegressionData
    dynamics: SGDDynamics | SDEDynamics
    engine_given: bool
    options: dict[str, Any]


@EXPERIMENTS.register
class PhaseExperiment(Experiment):
    """``kind = "phase"``: a phase diagram over step sizes x a second axis x seeds."""

    name = "phase"

    def _prepare(self, config: dict[str, Any], checker: ConfigChecker) -> PhasePlan:
        top = checker.table("", config, PHASE_CONFIG_KEYS)
        data = prepare_data(checker, top.get("data"))
        model = prepare_model(checker, top.get("model"), data)
        n_steps = top.get("n_steps")
        save, l0_threshold = prepare_save(checker, top.get("save", {}), n_steps)
        lrs = grid_values(checker, "lrs", top.get("lrs"), spacing="log", positive=True)
        seeds = _seed_indices(checker, top.get("seeds")) if "seeds" in top else None
        dynamics, engine_given = _prepare_dynamics(checker, top.get("dynamics"), data)
        axis, values = _prepare_axis(checker, top.get("axis"), model, data)
        criteria = _prepare_criteria(checker, top.get("regimes", {}))
        options = {
            "lrs": lrs,
            "axis": axis,
            "values": values,
            "seeds": seeds,
            "n_steps": n_steps,
            "seed": top.get("seed", 0),
            "save_steps": save,
            "criteria": criteria,
            **_given(l0_threshold=l0_threshold),
            **{
                k: top[k]
                for k in ("sparsity_level", "sparsity_every", "max_loss", "sharpness")
                if k in top
            },
        }
        resolved = {**config, **top, "lrs": _plain(lrs), "seeds": _plain(seeds)}
        if axis is not None:
            resolved["axis"] = {**axis.to_config(), "values": _plain(values)}
        if criteria is not None:
            resolved["regimes"] = criteria.to_config()
        if dynamics is not None:
            resolved["dynamics"] = dynamics.to_config()
        return PhasePlan(
            name=top.get("name", ""),
            description=top.get("description", ""),
            config=resolved,
            model=model,
            data=data,
            dynamics=dynamics,
            engine_given=engine_given,
            options=options,
        )

    def run(self, plan: Plan, *, engine: str = "numba", progress: bool = False) -> xr.Dataset:
        if not isinstance(plan, PhasePlan):
            raise TypeError("run takes the plan made by PhaseExperiment.prepare")
        return execute_phase(plan, engine=engine, progress=progress)

    def table(self, ds: xr.Dataset) -> str:
        return phase_table(ds)

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        return plot_phase(ds, path, title=title)


def execute_phase(
    plan: PhasePlan,
    *,
    engine: str = "numba",
    progress: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    store: str | Path | None = None,
    overwrite: bool = False,
) -> xr.Dataset:
    """Run the sweep of ``plan`` and return its dataset (module docstring for the attrs).

    plan: a ``PhasePlan`` (``PhaseExperiment().prepare(config)``).
    engine: the SGD engine when the config names none.
    progress: show progress bars.
    store: the resumable zarr store (``sgdsde.analysis.sweep``) the blocks are written
        into as they finish; None runs the whole grid in this process, in one call of
        ``phase_diagram`` (nothing kept if interrupted).
    workers, scheduler: where the store's blocks run: ``workers`` processes on this
        machine (default: every core; 1: this process) or a dask.distributed
        ``scheduler`` address.
    resume: continue an interrupted sweep of the same config in ``store``.
    overwrite: start over when ``store`` holds an earlier sweep (else refused).
    """
    check_sweep_options(workers, scheduler, resume, store)
    dynamics = plan.dynamics
    if isinstance(dynamics, SGDDynamics) and not plan.engine_given:
        dynamics = dataclasses.replace(dynamics, engine=engine)
    if store is None:
        ds = phase_diagram(
            plan.model, plan.data, dynamics=dynamics, progress=progress, **plan.options
        )
    else:
        sweep = Sweep(plan.model, plan.data, dynamics=dynamics, **plan.options)
        store = Path(store)
        if store.exists() and not resume:
            if not overwrite:
                raise ValueError(
                    f"{store} holds an earlier sweep: pass --resume to continue it or "
                    "--overwrite to start over"
                )
            open_sweep(store)  # a sweep store of ours, or a ValueError: never delete others
            shutil.rmtree(store)
        run_sweep(
            sweep,
            store,
            executor=as_executor(workers=workers, scheduler=scheduler),
            resume=resume,
            progress=progress,
        )
        ds = open_sweep(store).load()
    return with_experiment_attrs(with_phase_edges(ds), plan)


def check_sweep_options(
    workers: Any, scheduler: Any, resume: bool, store: str | Path | None = None
) -> None:
    """Raise a ValueError, before any work, for sweep options that cannot be honoured:
    ``workers`` not a positive integer, ``workers`` together with ``scheduler``, or
    ``resume`` / ``workers`` / ``scheduler`` without a store to run the blocks into."""
    bad = isinstance(workers, bool) or not isinstance(workers, int | None)
    if bad or (workers is not None and workers < 1):
        raise ValueError(f"workers must be a positive integer (got {workers!r})")
    if workers is not None and scheduler is not None:
        raise ValueError(
            "--workers and --scheduler exclude each other: the cluster has its own workers"
        )
    if store is None and (resume or scheduler is not None or workers not in (None, 1)):
        raise ValueError(
            "--resume, --scheduler and --workers need the sweep's store (the command line "
            "keeps it as OUT/<name>.zarr)"
        )


def with_experiment_attrs(ds: xr.Dataset, plan: PhasePlan) -> xr.Dataset:
    """``ds`` with the experiment's name, kind, resolved config and provenance in its
    attrs (the sweep's own ``config`` and seed attrs stay)."""
    ds.attrs.update(
        encode_attrs(
            {
                "experiment": plan.name,
                "experiment_kind": PhaseExperiment.name,
                "experiment_config": json.dumps(plan.config),
                "description": plan.description,
                "sgdsde_version": __version__,
                **environment_attrs(),
            }
        )
    )
    return ds


def grid_values(
    checker: ConfigChecker, path: str, value: Any, *, spacing: str, positive: bool
) -> np.ndarray | None:
    """A grid from a list of numbers or a spec ``{start, stop, num, spacing}``
    (``spacing`` defaults to ``spacing``: "log" is ``numpy.geomspace``, "linear"
    ``numpy.linspace``); None with the problem recorded if it is empty, holds a
    non-number, a value <= 0 (``positive``; else < 0) or a repeat."""
    if isinstance(value, dict):
        spec = checker.table(path, value, GRID_KEYS)
        if len(spec) < 3:
            return None
        spacing = spec.get("spacing", spacing)
        if spacing == "log" and not (spec["start"] > 0 and spec["stop"] > 0):
            checker.problem(
                path,
                f"a log-spaced grid needs start and stop > 0 (got {spec['start']!r}, "
                f"{spec['stop']!r}): give positive bounds or spacing = 'linear'",
            )
            return None
        make = np.geomspace if spacing == "log" else np.linspace
        value = make(spec["start"], spec["stop"], spec["num"]).tolist()
    if not isinstance(value, list) or not value:
        checker.problem(
            path,
            f"must be a non-empty list of numbers or a grid {{start, stop, num}} (got {value!r}): "
            f"e.g. {path} = {{start = 0.01, stop = 1.0, num = 40}}",
        )
        return None
    bound = "> 0" if positive else ">= 0"
    for v in value:
        real = isinstance(v, numbers.Real) and not isinstance(v, bool)
        if not real or not math.isfinite(v) or (v <= 0 if positive else v < 0):
            checker.problem(
                path, f"must hold finite numbers {bound} (got {v!r} in {value}): fix that value"
            )
            return None
    out = np.asarray(value, dtype=np.float64)
    if np.unique(out).size != out.size:
        checker.problem(path, f"repeats a value ({out.tolist()}): give each grid value once")
        return None
    return out


def _seed_indices(checker: ConfigChecker, value: Any) -> list[int] | None:
    """``seeds``: a count n >= 1 (indices 0..n-1) or a list of distinct indices >= 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    ok = (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
        and len(set(value)) == len(value)
    )
    if not ok:
        checker.problem(
            "seeds",
            f"must be a number of seeds >= 1 or a list of distinct seed indices >= 0 "
            f"(got {value!r}): e.g. seeds = 4",
        )
        return None
    return list(value)


def _prepare_dynamics(
    checker: ConfigChecker, value: Any, data: RegressionData | None
) -> tuple[SGDDynamics | SDEDynamics | None, bool]:
    """``[dynamics]`` -> (the dynamics object, whether it names its engine)."""
    if not isinstance(value, dict):
        return None, False
    name = value.get("name")
    if name not in DYNAMICS_KEYS:
        checker.problem(
            "dynamics.name", f"must be 'sgd' or 'sde' (got {name!r}): exact SGD or its SDE"
        )
        return None, False
    if name == "sgd":
        sgd_table = {k: v for k, v in value.items() if k not in ("name", "engine")}
        checker.table("dynamics", value, DYNAMICS_KEYS["sgd"])
        sgd = prepare_sgd(checker, "dynamics", sgd_table, data)
        engine = value.get("engine")
        if sgd is None or (engine is not None and engine not in ENGINES):
            return None, False
        made = checker.build("dynamics", SGDDynamics, sgd=sgd, **_given(engine=engine))
        return made, engine is not None
    table = checker.table("dynamics", value, DYNAMICS_KEYS["sde"])
    if len(table) < len(value) or "noise" not in table:
        return None, False
    noise = SDE_NOISE[table.pop("noise")]
    table.pop("name")
    if data is not None and table["batch_size"] > data.n:
        checker.problem(
            "dynamics.batch_size", f"must be <= n = {data.n} (got {table['batch_size']})"
        )
        return None, False
    return checker.build("dynamics", SDEDynamics, noise=noise, **table), False


def _given(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _prepare_axis(
    checker: ConfigChecker, value: Any, model: Model | None, data: RegressionData | None
) -> tuple[SweepAxis | None, np.ndarray | None]:
    """``[axis]`` -> (the axis object, its checked values); (None, None) without one."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        return None, None
    name = value.get("name")
    if name not in AXES:
        checker.problem(
            "axis.name",
            f"unknown sweep axis {name!r}: use one of {sorted(AXES)} (or drop [axis] for a "
            "diagram over lr and seeds only)",
        )
        return None, None
    if "values" not in value:
        checker.problem("axis", "is missing the key 'values': the grid of the axis")
        return None, None
    cls = AXES[name]
    options = checker.options("axis", value, cls, reserved=("name", "values"))
    if options is None:
        return None, None
    # options go in a dict: ConfigFieldAxis's "path" would clash with build's own
    axis = checker.build("axis", lambda: cls(**options))
    # label-noise variance 0 is plain SGD, a config field may be 0 (its own checks);
    # every other axis value is > 0
    positive = name not in ("label_noise", "config_field")
    values = grid_values(
        checker, "axis.values", value["values"], spacing="linear", positive=positive
    )
    if axis is None or values is None or model is None or data is None:
        return None, None
    if name == "batch_size":
        values = values.astype(np.int64) if np.all(values == np.round(values)) else values
    checked = checker.build("axis.values", axis.check_values, values.tolist(), model, data)
    return (axis, checked) if checked is not None else (None, None)


def _prepare_criteria(checker: ConfigChecker, value: Any) -> RegimeCriteria | None:
    options = checker.options("regimes", value, RegimeCriteria)
    if options is None:
        return None
    return checker.build("regimes", RegimeCriteria, **options)


def _plain(values: Any) -> Any:
    """A grid as JSON-ready Python numbers."""
    return None if values is None else np.asarray(values).tolist()


def phase_table(ds: xr.Dataset) -> str:
    """A markdown table: per step size, how many cells converged, stabilized and diverged
    (in the large-step phase where the step size decays during the run), and the median
    final test loss and l0 norm over the cells that did not diverge."""
    regime = ds[regime_variable(ds)]
    names = regime.attrs["flag_meanings"].split()
    codes = [int(c) for c in np.atleast_1d(regime.attrs["flag_values"])]
    header = "| lr | " + " | ".join(names) + " | median test loss | median l0 norm |"
    lines = [header, "|---" * (len(names) + 3) + "|"]
    for lr in ds["lr"].values:
        cell = ds.sel(lr=lr)
        counts = [int((regime.sel(lr=lr).values == c).sum()) for c in codes]
        alive = cell["diverged"].values == 0
        test = _median(cell["final_test_loss"].values[alive])
        l0 = _median(cell["final_l0_norm"].values[alive])
        lines.append(
            f"| {lr:.4g} | " + " | ".join(map(str, counts)) + f" | {test:.2e} | {l0:.1f} |"
        )
    return "\n".join(lines)


def _median(values: np.ndarray) -> float:
    """The median of the finite values (NaN if there are none)."""
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan
