"""Experiment kinds: a registry kind -> ``Experiment`` (prepare / run / table / plot).

A config's top-level ``kind`` (default ``"sgd"``) selects its ``Experiment``. Running a
config is always the same four steps, whatever the kind:

1. ``plan = experiment.prepare(config)``: validate the whole config against the kind's
   schema and build every object it names (data, model, schedules, noise models, save
   grid), before any work; every problem is reported at once (``ConfigError``);
2. check the outputs (folder writable, no result overwritten unless asked);
3. ``ds = experiment.run(plan)``: simulate; a dataset in the shared layout
   (docs/conventions.md, "Outputs");
4. save ``ds``; ``experiment.table(ds)`` and ``experiment.plot(ds)`` summarize it.

A new kind is one module defining an ``Experiment`` subclass with a ``name``,
registered with ``@EXPERIMENTS.register`` and imported by ``sgdsde.experiments``.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import xarray as xr

from sgdsde.experiments.config import ConfigChecker, ConfigError
from sgdsde.registry import Registry
from sgdsde.run.dataset import check_dataset_path, save_dataset
from sgdsde.run.outputs import check_new_files, check_output_folder


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated config, ready to run.

    name: the experiment's name (a safe file name). description: its one-line summary.
    config: the resolved config (defaults filled in; JSON-ready), written to the output.
    """

    name: str
    description: str
    config: dict[str, Any]


class Experiment(abc.ABC):
    """One experiment kind: its config schema, how it runs, its table and its figure."""

    #: The config's ``kind``.
    name: ClassVar[str] = ""

    def prepare(self, config: Mapping[str, Any], *, n_steps: int | None = None) -> Plan:
        """Validate the whole ``config`` (``n_steps``, when given, replaces its
        ``n_steps``) and build what it names; a ``ConfigError`` lists every problem."""
        config = copy.deepcopy(dict(config))
        if n_steps is not None:
            config["n_steps"] = n_steps
        name = config.get("name")
        checker = ConfigChecker(repr(name) if isinstance(name, str) else "config")
        plan = self._prepare(config, checker)
        checker.raise_if_any()
        return plan

    @abc.abstractmethod
    def _prepare(self, config: dict[str, Any], checker: ConfigChecker) -> Plan:
        """The plan of ``config``, recording every problem in ``checker`` (the plan may
        be incomplete when there are problems: it is then discarded)."""

    @abc.abstractmethod
    def run(self, plan: Plan, *, engine: str = "numba", progress: bool = False) -> xr.Dataset:
        """Simulate ``plan``; ``engine`` is the SGD engine, ``progress`` shows progress bars."""

    @abc.abstractmethod
    def table(self, ds: xr.Dataset) -> str:
        """A markdown table of the final values of each run of ``ds``."""

    @abc.abstractmethod
    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        """The figure of ``ds`` (a matplotlib Figure); written atomically to ``path``
        and closed when a path is given."""


#: config kind -> Experiment class (``EXPERIMENTS.make(kind)`` gives the experiment).
EXPERIMENTS: Registry[Experiment] = Registry("config kind")


def experiment_for(config: Mapping[str, Any]) -> Experiment:
    """The experiment of ``config``'s ``kind`` (default ``"sgd"``); a ConfigError if the
    kind is unknown."""
    if not isinstance(config, Mapping):
        raise ConfigError("config", [f"a config is a table of keys (got {config!r})"])
    kind = config.get("kind", "sgd")
    if not isinstance(kind, str):
        raise ConfigError(
            "config", [f"kind must be a string, one of {sorted(EXPERIMENTS)} (got {kind!r})"]
        )
    try:
        return EXPERIMENTS.make(kind)
    except ValueError as err:
        raise ConfigError("config", [f"kind: {err}"]) from err


def run_experiment(
    config: Mapping[str, Any],
    out_dir: str | os.PathLike | None = None,
    *,
    n_steps: int | None = None,
    engine: str = "numba",
    progress: bool = False,
    overwrite: bool = False,
) -> xr.Dataset:
    """Validate ``config`` whole, run it and return its dataset.

    config: a config dict (``load_config``); its ``kind`` selects the experiment.
    out_dir: when given, the dataset is written to ``out_dir/<name>.nc``; the folder is
        created and checked, and an existing result refused unless ``overwrite``,
        before any work.
    n_steps: replaces the config's run length (schedules scale with it: their change
        points are fractions of the run).
    engine: the SGD engine (see ``sgdsde.dynamics.simulate_sgd``).
    progress: show progress bars.
    overwrite: replace an existing ``out_dir/<name>.nc``.
    """
    experiment = experiment_for(config)
    plan = experiment.prepare(config, n_steps=n_steps)
    target = None
    if out_dir is not None:
        target = check_output_folder(out_dir, "out_dir") / f"{plan.name}.nc"
        check_dataset_path(target)
        check_new_files(
            [target], overwrite, "pass overwrite=True to replace it, or choose another out_dir"
        )
    ds = experiment.run(plan, engine=engine, progress=progress)
    if target is not None:
        save_dataset(ds, target)
    return ds
