"""What the stochastic-collapse gallery kinds share (Chen, Kunin, Yamamura, Ganguli,
"Stochastic Collapse", NeurIPS 2023; reference notes collapse-walk.md Sec. 1.3).

The three toy experiments (``paper_collapse_quartic``, ``paper_collapse_tanh``,
``paper_collapse_gelu``) simulate a batch of ``n_paths`` trajectories per run and seed
index in one call. Trajectory (run r, seed index s, path j) is seeded with
``seed_child(seed_children(root)[s], j)``: the same for every run r, so all runs of a
seed index share their random numbers (common random numbers, as the notebooks reset
the seed before each run), and a seed index's numbers do not depend on ``n_seeds`` or
``n_paths``. Trajectories are laid out run-major, then seed, then path
(``grid_shape``), so a (T, ...) result reshapes to (run, seed, path, ...).

A *collapse fraction* of seed index s is the fraction of its ``n_paths`` trajectories
that sit in the collapsed set; the table reports its distribution over the seed indices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sgdsde.analysis.phase import seed_child
from sgdsde.data import RegressionData
from sgdsde.experiments.config import ConfigChecker
from sgdsde.experiments.gallery import gallery_table, seed_children, seed_summary
from sgdsde.experiments.phase import grid_values
from sgdsde.experiments.tables import prepare_data
from sgdsde.random import trajectory_streams


def path_seeds(root: Any, n_runs: int, n_seeds: int, n_paths: int) -> list[np.random.SeedSequence]:
    """One seed per trajectory, run-major then seed index then path: trajectory
    (r, s, j) gets ``seed_child(seed_children(root, n_seeds)[s], j)`` whatever r.

    root: the config's root seed (int or SeedSequence). n_runs, n_seeds, n_paths: the
    grid's sizes (``grid_shape``).
    """
    per_seed = [
        [seed_child(child, j) for j in range(n_paths)] for child in seed_children(root, n_seeds)
    ]
    return [seed for _ in range(n_runs) for seeds in per_seed for seed in seeds]


def gaussian_starts(seeds: list[np.random.SeedSequence], std: float, p: int) -> np.ndarray:
    """theta0 ~ N(0, std^2 I_p) per trajectory, (T, p), drawn from each trajectory's
    ``"init"`` stream (``sgdsde.random.trajectory_streams``, as the simulators draw a
    model's init); equal seeds give equal starts, so every run of a seed index starts
    from the same points.

    seeds: one SeedSequence per trajectory (``path_seeds``). std: the standard deviation.
    p: the number of parameters.
    """
    streams = trajectory_streams(seeds, len(seeds))["init"]
    return np.stack([std * rng.standard_normal(p) for rng in streams])


def grid_shape(values: np.ndarray, n_runs: int, n_seeds: int) -> np.ndarray:
    """A per-trajectory array (T, ...) with T = n_runs n_seeds n_paths, run-major, as
    (run, seed, path, ...)."""
    values = np.asarray(values)
    return values.reshape(n_runs, n_seeds, -1, *values.shape[1:])


def fractions_of_run(checker: ConfigChecker, path: str, value: Any) -> tuple[float, ...] | None:
    """A list of distinct fractions of the run in (0, 1] (``grid_values``), sorted; None
    with the problem recorded otherwise."""
    values = grid_values(checker, path, value, spacing="linear", positive=True)
    if values is None:
        return None
    if np.any(values > 1):
        checker.problem(path, f"must hold fractions of the run in (0, 1] (got {values.tolist()})")
        return None
    return tuple(sorted(values.tolist()))


def fraction_steps(fractions: tuple[float, ...], n_steps: int) -> np.ndarray:
    """The steps to record for the times ``fractions`` of a run of ``n_steps`` steps: step
    0 and round(f n_steps) for each f, sorted and without repeats.

    fractions: fractions of the run in (0, 1] (``fractions_of_run``). n_steps: the run's
    steps.
    """
    return np.unique([round(f * n_steps) for f in (0.0, *fractions)])


def linear_grid(
    checker: ConfigChecker, top: dict[str, Any], key: str, *, positive: bool
) -> np.ndarray | None:
    """The list of numbers ``top[key]`` as checked by ``grid_values`` (linear spacing;
    > 0 with ``positive``, else >= 0); None when the key is absent (a required key's
    absence is already recorded by the table check) or a problem was recorded.

    checker: collects the problems. top: the checked top level. key: the grid's key.
    positive: whether 0 is excluded.
    """
    if key not in top:
        return None
    return grid_values(checker, key, top[key], spacing="linear", positive=positive)


def prepare_1d_data(checker: ConfigChecker, table: Any, model: str) -> RegressionData | None:
    """``[data]`` (``tables.prepare_data``), which must have one input (d = 1) for
    ``model``: else the problem is recorded, naming ``model``.

    checker: collects the problems. table: the config's ``[data]`` table (None if
    absent). model: the model's name in the problem, e.g. "the tanh neuron".
    """
    data = prepare_data(checker, table)
    if data is not None and data.d != 1:
        checker.problem("data", f"must be 1-D (d = 1) for {model} (got d = {data.d})")
    return data


def threshold_table(ds: Any, predicted: dict[str, str], fmt: Callable[[float], str]) -> str:
    """``gallery_table(ds)`` and below it, per ``dynamics`` of ``ds``, the measured
    threshold (``measured_threshold`` (dynamics, seed): median [min, max] over seeds)
    beside the predicted ones.

    ds: a collapse kind's dataset. predicted: column title -> a variable of ``ds`` with
    dims (dynamics,). fmt: formats a threshold (NaN included) for the table.
    """
    lines = [
        gallery_table(ds),
        "",
        "| threshold of | measured: median [min, max] over seeds | " + " | ".join(predicted) + " |",
        "|---|---|" + "---|" * len(predicted),
    ]
    for d in ds["dynamics"].values:
        s = seed_summary(ds["measured_threshold"].sel(dynamics=d).values)
        cells = [fmt(float(ds[var].sel(dynamics=d))) for var in predicted.values()]
        lines.append(
            f"| {d} | {fmt(s.median)} [{fmt(s.low)}, {fmt(s.high)}] | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def interval(checker: ConfigChecker, path: str, value: Any) -> tuple[float, float] | None:
    """[lo, hi] with 0 <= lo < hi; None with the problem recorded otherwise."""
    values = grid_values(checker, path, value, spacing="linear", positive=False)
    if values is None:
        return None
    if values.size != 2 or values[0] >= values[1]:
        checker.problem(path, f"must be [lo, hi] with lo < hi (got {values.tolist()})")
        return None
    return float(values[0]), float(values[1])
