"""Phase diagrams over the step size: one call sweeps a grid of step sizes eta x a
second axis x seeds, runs every cell as one trajectory of a single batched engine call,
and returns a Dataset with dims (lr, <axis>, seed) of what each run ended in.

The per-cell measurements (Andriushchenko et al., "SGD with Large Step Sizes Learns
Sparse Features", ICML 2023; reference notes ``phase-validation.md``):

* ``final_train_loss``, ``final_test_loss``, ``final_l0_norm`` (and, for models with
  hidden-layer features, ``final_feature_sparsity`` per layer): the values at the last
  step (NaN for a diverged run);
* ``regime``, ``plateau_level``: ``classify_regimes`` of the cell's loss curve (its
  ``RegimeCriteria`` in the ``regime_criteria`` attribute; the window is the end of the
  run, so a run whose step size decays reads the regime at the small step size);
* ``regime_large_step``, ``plateau_level_large_step`` (where some cell's step size
  changes during the run, e.g. the decay_fraction axis): the same classification of
  the loss curve up to the end of the large-step phase (the schedule's first change
  point; the whole run for a constant step size): where the run was before the decay.
  Code -1 (``unclassified``) where that part holds fewer than ``min_points`` save
  points in its window;
* ``time_to_sparsity``: the first step at which l0(beta) <= ``sparsity_level``, by the
  ``FirstPassage`` metric object recorded during the run (-1: never). A run whose l0
  starts at or below the level (the diagonal network's "uv" init has beta_0 = 0, so
  l0 = 0 at step 0) counts from the save step after its l0 first exceeded the level,
  read on the recorded l0 curve (resolution: the save grid);
* ``gd_stability_edge``: 2 / lambda_max(theta_0), the step size above which GD on the
  quadratic model at initialization diverges (the top Hessian eigenvalue from
  ``model.top_hessian_eigenvalue``), over the dims theta_0 depends on (not lr); also a
  scalar attribute where it is the same for every cell;
* ``catapult_theory_low``, ``catapult_theory_high`` (coordinates like the edge): the
  catapult window 2 / lambda_0 < eta < 4 / lambda_0 of Lewkowycz et al. (2020, "The
  large learning rate phase of deep learning: the catapult mechanism") for two-layer
  linear networks (the diagonal network is one), lambda_0 the top eigenvalue of the NTK
  phi phi^T / n at theta_0 (= the Hessian's where the residuals vanish at theta_0);
* ``sharpness``: lambda_max of the Hessian at the last step (NaN: diverged); for
  gradient descent (full batch, no label noise) also the ``catapult`` and
  ``edge_of_stability`` flags of ``classify_regimes`` (``sgdsde.analysis.phase_theory``
  compares the measured catapult window with the theory's);

Second axes (``SweepAxis`` objects; ``AXES`` names them at the config boundary): the
label-noise variance delta (``LabelNoiseAxis``), the batch size B (``BatchSizeAxis``),
the fraction of the run at the large step size (``DecayFractionAxis``: a ``StepDecay``
dividing eta by ``factor`` at that fraction), and the initialization scale
(``InitScaleAxis``: the model rebuilt with e.g. ``alpha`` = value; theta_0 is that
model's init). An axis applies its value to a ``CellSettings`` (model, schedule, batch
size, label noise).

Seeds: cell (lr, value, s) runs with the seed ``SeedSequence(entropy, spawn_key =
root.spawn_key + (s,))``, the s-th child of the root ``SeedSequence(seed)`` (what
``root.spawn(s + 1)[s]`` returns). Every cell with seed index s shares its random
numbers (common random numbers across the grid, as the papers' notebooks reset the
seed before each run), and a cell's result does not depend on the grid it ran in.

Dynamics: ``SGDDynamics`` (exact SGD by an engine: the whole grid is one
``simulate_sgd`` call with per-trajectory schedules, batch sizes, label noise, seeds and
theta_0) or ``SDEDynamics`` (``simulate_sde`` with a noise model built per trajectory,
e.g. ``LabelNoise(delta, lr, batch_size)``; one call per step size, dt = eta /
``steps_per_lr`` so that SDE time matches SGD's t = k eta). SDE cells whose step size
changes during the run (``DecayFractionAxis``) follow their schedule in dt and in the
noise coefficients (``ScheduledNoise``: dt_j = eta_{j // m} / m, noise at lr = eta_k),
so that SDE time stays SGD's t_k = sum_{j<k} eta_j.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from sgdsde.analysis.regimes import Regime, RegimeCriteria, classify_regimes
from sgdsde.data import RegressionData, make_data
from sgdsde.dynamics.engines import Engine, as_engine
from sgdsde.dynamics.schedules import Constant, Piecewise, Schedule, StepDecay
from sgdsde.dynamics.sgd import DEFAULT_ENGINE, SGD, simulate_sgd
from sgdsde.metrics import FirstPassage, L0Norm, TimeAverage
from sgdsde.metrics.curvature import TopHessianEigenvalue
from sgdsde.metrics.features import FeatureSparsity
from sgdsde.models.base import Model
from sgdsde.random import as_seed_sequence, seed_attrs, trajectory_streams
from sgdsde.registry import to_config
from sgdsde.run.checks import check_model_data, check_n_steps
from sgdsde.run.loop import save_grid
from sgdsde.run.recording import masked
from sgdsde.sde.noise import LabelNoise, NoiseModel
from sgdsde.sde.scheduled import ScheduledNoise
from sgdsde.sde.simulate import simulate_sde
from sgdsde.theory import step_edge

__all__ = [
    "AXES",
    "BatchSizeAxis",
    "CellSettings",
    "ConfigFieldAxis",
    "DecayFractionAxis",
    "InitScaleAxis",
    "LabelNoiseAxis",
    "SDEDynamics",
    "SGDDynamics",
    "SweepAxis",
    "label_noise_sde",
    "phase_config",
    "phase_diagram",
    "seed_child",
]

#: Default settings (module-level: defaults are never built per call).
PLAIN_SGD = SGD()
DEFAULT_CRITERIA = RegimeCriteria()

#: Test examples of the test losses before a cell's last save step: the diagram keeps
#: only the final test loss (on the whole test set; ``sgdsde.run.recording``), and the
#: full test set at each of the headline diagram's 200 save points was ~40 % of its
#: recording.
CURVE_TEST_SUBSAMPLE = 64

#: The variable the time to sparsity is recorded under.
TIME_TO_SPARSITY = "time_to_sparsity"

#: The code of ``regime_large_step`` where the large-step phase is too short to classify.
UNCLASSIFIED = -1

#: The recorded sharpness (steps 0 and N) and, for GD, its sampled curve.
SHARPNESS = "sharpness"
SHARPNESS_CURVE = "sharpness_curve"


@dataclasses.dataclass(frozen=True)
class CellSettings:
    """What one cell of a sweep runs: the model (its init gives theta_0), the step-size
    schedule, the batch size B (n: full batch), the label-noise variance delta (a number,
    or a ``Schedule`` of delta_k for exact SGD) and the data (None: the diagram's)."""

    model: Model
    schedule: Schedule
    batch_size: int
    label_noise: float | Schedule
    data: RegressionData | None = None


# --------------------------------------------------------------------------- axes


def _check_reals(name: str, values: Any, *, positive: bool) -> np.ndarray:
    """A non-empty 1-D float grid, finite and > 0 (or >= 0), without repeats."""
    arr = np.atleast_1d(np.asarray(values, dtype=object))
    bound = "> 0" if positive else ">= 0"
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers {bound} (got {values!r})")
    for v in arr:
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (v <= 0 if positive else v < 0):
            raise ValueError(
                f"{name} must hold finite numbers {bound} (got {v!r} in {list(arr)}): "
                f"pass a grid such as np.geomspace(...)"
            )
    out = arr.astype(np.float64)
    if np.unique(out).size != out.size:
        raise ValueError(f"{name} repeats a value ({out.tolist()}): give each grid value once")
    return out


class SweepAxis(abc.ABC):
    """A second sweep axis: its ``name`` (the dataset dim), ``long_name`` and ``units``,
    a check of its grid and how a value changes a cell's settings."""

    name: ClassVar[str]
    long_name: ClassVar[str]
    units: ClassVar[str] = "1"
    #: The axis changes the model's dynamics (not only theta_0): cells run with their
    #: own model (one engine call per distinct model and data).
    rebuilds_model: ClassVar[bool] = False

    def check_values(self, values: Any, model: Model, data: RegressionData) -> np.ndarray:
        """The grid as an array, or a ValueError naming the axis, the value and the fix."""
        return _check_reals(f"values of axis {self.name!r}", values, positive=True)

    @abc.abstractmethod
    def apply(self, value: Any, cell: CellSettings) -> CellSettings:
        """The cell's settings with the axis at ``value``."""

    def to_config(self) -> dict[str, Any]:
        return to_config(self)


@dataclasses.dataclass(frozen=True)
class LabelNoiseAxis(SweepAxis):
    """The label-noise variance delta (>= 0: 0 is plain SGD).

    until: None (the noise lasts the whole run), or the fraction of the run with label
        noise, after which the run fine-tunes without it: delta_k is
        ``Piecewise(levels=(delta, 0), at=(until,))``, all cells still in one call
        (exact SGD only: the SDE dynamics take a constant delta).
    """

    name: ClassVar[str] = "label_noise"
    long_name: ClassVar[str] = "label-noise variance delta"
    until: float | None = None

    def __post_init__(self):
        if self.until is not None and not (
            isinstance(self.until, numbers.Real) and 0 < self.until < 1
        ):
            raise ValueError(
                f"until must be a fraction of the run in (0, 1) or None (got {self.until!r}): "
                "e.g. until=0.5 adds label noise for the first half, then fine-tunes without"
            )

    def check_values(self, values, model, data):
        return _check_reals(f"values of axis {self.name!r}", values, positive=False)

    def to_config(self) -> dict[str, Any]:
        config = to_config(self)
        if self.until is None:
            del config["until"]  # the config of an axis without it stays {"name": ...}
        return config

    def apply(self, value, cell):
        if self.until is None:
            return dataclasses.replace(cell, label_noise=float(value))
        return dataclasses.replace(
            cell, label_noise=Piecewise(levels=(float(value), 0.0), at=(float(self.until),))
        )


@dataclasses.dataclass(frozen=True)
class BatchSizeAxis(SweepAxis):
    """The minibatch size B, integers in [1, n] (B = n without replacement: GD)."""

    name: ClassVar[str] = "batch_size"
    long_name: ClassVar[str] = "minibatch size B"
    units: ClassVar[str] = "examples"

    def check_values(self, values, model, data):
        out = super().check_values(values, model, data)
        bad = [v for v in out if v != int(v) or not 1 <= v <= data.n]
        if bad:
            raise ValueError(
                f"values of axis 'batch_size' must be integers in [1, n = {data.n}] "
                f"(got {bad[0]!r} in {out.tolist()})"
            )
        return out.astype(np.int64)

    def apply(self, value, cell):
        return dataclasses.replace(cell, batch_size=int(value))


@dataclasses.dataclass(frozen=True)
class DecayFractionAxis(SweepAxis):
    """The fraction of the run at the large step size: ``StepDecay(lr, at=(value,),
    factors=(factor,))``, eta divided by ``factor`` from step int(value N) on (the
    paper's DLN runs: factor 4.8 at 10 %). Values in (0, 1).

    factor: the divisor of the step size at the decay (> 0).
    """

    factor: float = 4.8

    name: ClassVar[str] = "decay_fraction"
    long_name: ClassVar[str] = "fraction of the run at the large step size"

    def __post_init__(self):
        f = self.factor
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not (0 < f < math.inf):
            raise ValueError(
                f"DecayFractionAxis.factor must be a finite number > 0 (got {f!r}): "
                "the step size is divided by it at the decay"
            )

    def check_values(self, values, model, data):
        out = super().check_values(values, model, data)
        if np.any(out >= 1):
            raise ValueError(
                f"values of axis 'decay_fraction' must be fractions of the run in (0, 1) "
                f"(got {out.tolist()})"
            )
        return out

    def apply(self, value, cell):
        if not isinstance(cell.schedule, Constant):
            raise ValueError(
                f"axis 'decay_fraction' decays a constant step size (got {cell.schedule!r})"
            )
        decay = StepDecay(lr=cell.schedule.lr, at=(float(value),), factors=(float(self.factor),))
        return dataclasses.replace(cell, schedule=decay)


@dataclasses.dataclass(frozen=True)
class InitScaleAxis(SweepAxis):
    """The initialization scale: the model rebuilt with ``field`` = value (the diagonal
    network's ``alpha``); theta_0 is the rebuilt model's init from each cell's "init"
    stream. The model's dynamics must depend on ``field`` only through its init.

    field: the model's dataclass field holding the scale (default "alpha").
    """

    field: str = "alpha"

    name: ClassVar[str] = "init_scale"
    long_name: ClassVar[str] = "initialization scale"

    def check_values(self, values, model, data):
        names = (
            [f.name for f in dataclasses.fields(model)] if dataclasses.is_dataclass(model) else []
        )
        if self.field not in names:
            raise ValueError(
                f"axis 'init_scale' sets the model's field {self.field!r}, which "
                f"{type(model).__name__} does not have (fields: {names}): pass "
                "InitScaleAxis(field=<its init-scale field>)"
            )
        return super().check_values(values, model, data)

    def apply(self, value, cell):
        return dataclasses.replace(
            cell, model=dataclasses.replace(cell.model, **{self.field: value})
        )


#: Where a ``ConfigFieldAxis`` path may point: prefix -> what it sets.
CONFIG_FIELD_PREFIXES = {
    "model": "a field of the model's dataclass (the model is rebuilt)",
    "sgd": "batch_size or label_noise of every cell",
    "data": "an option of the data generator in data.config (the data is rebuilt)",
}
#: The per-cell SGD settings a "sgd.<field>" path sets.
SGD_FIELDS = ("batch_size", "label_noise")


@dataclasses.dataclass(frozen=True)
class ConfigFieldAxis(SweepAxis):
    """Any setting by its config path: ``"model.<field>"`` (the model rebuilt with that
    field: its init gives theta_0 and its runs use it, e.g. "model.alpha"),
    ``"sgd.batch_size"`` / ``"sgd.label_noise"`` (B and delta per cell), or
    ``"data.<option>"`` (an option of the data's generator, ``data.config``: the data
    rebuilt by ``sgdsde.data.make_data``, e.g. "data.noise_std" or "data.seed"; a full
    batch stays the rebuilt data's full batch). The
    dim is the path with "_" for "."; values are numbers (integers where the setting
    is one), checked by building every value's model or data before any run. Cells of
    different models or data run in separate engine calls.

    path: "<model|sgd|data>.<field>".
    """

    path: str
    _built: dict = dataclasses.field(default_factory=dict, init=False, compare=False, repr=False)

    rebuilds_model: ClassVar[bool] = True

    def __post_init__(self):
        prefix, _, field = str(self.path).partition(".")
        if prefix not in CONFIG_FIELD_PREFIXES or not field.isidentifier():
            raise ValueError(
                f"ConfigFieldAxis.path must be '<prefix>.<field>' with prefix one of "
                f"{sorted(CONFIG_FIELD_PREFIXES)} (got {self.path!r}): e.g. 'model.alpha', "
                "'sgd.batch_size' or 'data.noise_std'"
            )
        if prefix == "sgd" and field not in SGD_FIELDS:
            raise ValueError(
                f"ConfigFieldAxis path {self.path!r}: 'sgd.' sets the per-cell settings "
                f"{list(SGD_FIELDS)} (with_replacement and the engine are the dynamics' own)"
            )

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.path.replace(".", "_")

    @property
    def long_name(self) -> str:  # type: ignore[override]
        return f"config field {self.path}"

    def _current(self, model: Model, data: RegressionData) -> Any:
        """The setting's value in the diagram's own model / data (its type rules)."""
        prefix, _, field = self.path.partition(".")
        if prefix == "model":
            names = [f.name for f in dataclasses.fields(model) if f.init]
            if field not in names:
                raise ValueError(
                    f"axis path {self.path!r}: {type(model).__name__} has no field {field!r} "
                    f"(fields: {names})"
                )
            return getattr(model, field)
        if prefix == "data":
            options = sorted(k for k in data.config if k != "generator")
            if "generator" not in data.config or field not in options:
                raise ValueError(
                    f"axis path {self.path!r}: the data's generator config "
                    f"{data.config or '{}'} has no option {field!r} (options: {options}); "
                    "data built by hand cannot be rebuilt: sweep a generator's option"
                )
            return data.config[field]
        return data.n if field == "batch_size" else 0.0

    def check_values(self, values, model, data):
        current = self._current(model, data)
        out = _check_reals(f"values of axis {self.path!r}", values, positive=False)
        if isinstance(current, bool):
            raise ValueError(f"axis path {self.path!r} is a flag: sweep a numeric setting")
        integral = isinstance(current, numbers.Integral)
        if integral and np.any(out != np.round(out)):
            raise ValueError(
                f"values of axis {self.path!r} must be integers (the setting is one; got "
                f"{out.tolist()})"
            )
        out = out.astype(np.int64) if integral else out
        for value in out:  # every value's model or data, built now: errors before any run
            cell = self.apply(value, CellSettings(model, Constant(1.0), data.n, 0.0, data))
            check_model_data(cell.model, cell.data)
            if not 1 <= cell.batch_size <= cell.data.n:
                raise ValueError(
                    f"values of axis {self.path!r}: batch_size must be in [1, n = "
                    f"{cell.data.n}] (got {cell.batch_size})"
                )
        return out

    def apply(self, value, cell):
        prefix, _, field = self.path.partition(".")
        value = value.item() if isinstance(value, np.generic) else value
        if prefix == "sgd":
            kind = int if field == "batch_size" else float
            return dataclasses.replace(cell, **{field: kind(value)})
        if prefix == "model":
            model = self._built.setdefault(
                ("model", cell.model, value), dataclasses.replace(cell.model, **{field: value})
            )
            return dataclasses.replace(cell, model=model)
        # keyed by the generator config (it determines the data; an id would not survive
        # pickling to a worker)
        key = ("data", json.dumps(cell.data.config, sort_keys=True, default=str), value)
        if key not in self._built:
            options = {k: v for k, v in cell.data.config.items() if k != "generator"}
            self._built[key] = make_data(cell.data.config["generator"], **{**options, field: value})
        data = self._built[key]
        # a full batch stays a full batch of the rebuilt data (GD when n changes)
        batch = data.n if cell.batch_size == cell.data.n else cell.batch_size
        return dataclasses.replace(cell, data=data, batch_size=batch)

    def to_config(self) -> dict[str, Any]:
        return {"name": "config_field", "path": self.path}


#: Axis name -> class (the config boundary: ``as_axis("batch_size")``).
AXES: dict[str, type[SweepAxis]] = {
    **{cls.name: cls for cls in (LabelNoiseAxis, BatchSizeAxis, DecayFractionAxis, InitScaleAxis)},
    "config_field": ConfigFieldAxis,
}


def as_axis(axis: Any) -> SweepAxis | None:
    """A ``SweepAxis`` from an axis object, its name in ``AXES``, or None (no axis)."""
    if axis is None or isinstance(axis, SweepAxis):
        return axis
    if isinstance(axis, str) and "." in axis:
        return ConfigFieldAxis(axis)
    if isinstance(axis, str) and axis in AXES and axis != "config_field":
        return AXES[axis]()
    raise ValueError(
        f"unknown sweep axis {axis!r}: pass one of {sorted(set(AXES) - {'config_field'})}, "
        "a config path such as 'model.alpha', 'sgd.batch_size' or 'data.noise_std', or a "
        "SweepAxis object (LabelNoiseAxis(), BatchSizeAxis(), DecayFractionAxis(factor), "
        "InitScaleAxis(field), ConfigFieldAxis(path))"
    )


# --------------------------------------------------------------------------- dynamics


@dataclasses.dataclass(frozen=True)
class SGDDynamics:
    """Exact SGD of every cell by one engine call.

    sgd: the base settings (a scalar batch size, None for GD, and label noise); an
        axis overrides its own.
    engine: an ``Engine`` object (default ``NumbaEngine()``) or its registered name.
    """

    sgd: SGD = PLAIN_SGD
    engine: Engine | str = DEFAULT_ENGINE

    name: ClassVar[str] = "sgd"

    def __post_init__(self):
        if (
            not isinstance(self.sgd, SGD)
            or np.ndim(self.sgd.batch_size)
            or np.ndim(self.sgd.label_noise)
        ):
            raise ValueError(
                f"SGDDynamics.sgd must be an SGD(...) with one batch size and one label noise "
                f"(got {self.sgd!r}): sweep them with an axis instead"
            )
        object.__setattr__(self, "engine", as_engine(self.engine))

    def base_cell(self, model: Model, data: RegressionData) -> tuple[int, float]:
        batch = data.n if self.sgd.batch_size is None else int(self.sgd.batch_size)
        return batch, float(self.sgd.label_noise)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "sgd": self.sgd.to_config(), "engine": self.engine.name}


def label_noise_sde(lr: np.ndarray, batch_size: np.ndarray, label_noise: np.ndarray) -> NoiseModel:
    """The label-noise SDE of each trajectory: ``LabelNoise(delta, lr, batch_size)``."""
    return LabelNoise(delta=label_noise, lr=lr, batch_size=batch_size)


@dataclasses.dataclass(frozen=True)
class SDEDynamics:
    """The SDE model of SGD for every cell (``simulate_sde``), one call per step size.

    noise: a factory ``(lr, batch_size, label_noise) -> NoiseModel`` called with one
        entry per trajectory (arrays), default ``label_noise_sde``.
    batch_size, label_noise: the base B and delta the factory gets (an axis overrides).
    steps_per_lr: m, the SDE steps per SGD step: dt = eta / m and m N steps, so that the
        SDE reaches SGD's time N eta; steps in the dataset are SGD steps (k_SDE / m).
    solver: a ``Solver``, its name, or None for ``simulate_sde``'s default.
    """

    noise: Callable[..., NoiseModel] = label_noise_sde
    batch_size: int = 1
    label_noise: float = 0.0
    steps_per_lr: int = 1
    solver: Any = None

    name: ClassVar[str] = "sde"

    def __post_init__(self):
        if not callable(self.noise):
            raise ValueError(
                f"SDEDynamics.noise must be a factory (lr, batch_size, label_noise) -> "
                f"NoiseModel (got {self.noise!r}), e.g. label_noise_sde"
            )
        m = self.steps_per_lr
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"SDEDynamics.steps_per_lr must be an integer >= 1 (got {m!r})")

    def base_cell(self, model: Model, data: RegressionData) -> tuple[int, float]:
        return int(self.batch_size), float(self.label_noise)

    def to_config(self) -> dict[str, Any]:
        solver = self.solver
        return {
            "name": self.name,
            "noise": getattr(self.noise, "__qualname__", repr(self.noise)),
            "batch_size": int(self.batch_size),
            "label_noise": float(self.label_noise),
            "steps_per_lr": int(self.steps_per_lr),
            "solver": solver if solver is None or isinstance(solver, str) else solver.to_config(),
        }


# --------------------------------------------------------------------------- seeds


def seed_child(root: Any, index: int) -> np.random.SeedSequence:
    """The seed of seed index s: ``SeedSequence(root.entropy, spawn_key=root.spawn_key +
    (s,))``, equal to ``root.spawn(s + 1)[s]`` (root: an int or a SeedSequence)."""
    root = as_seed_sequence(root)
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, int(index)))


def _check_seeds(seeds: Any) -> np.ndarray:
    """Seed indices: a count n (0..n-1) or a sequence of distinct integers >= 0."""
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a count >= 1 or seed indices (got {seeds!r})")
        return np.arange(int(seeds), dtype=np.int64)
    arr = np.atleast_1d(np.asarray(seeds, dtype=object))
    ok = arr.ndim == 1 and arr.size > 0
    ok = ok and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in arr
    )
    if not ok or len(set(arr.tolist())) != arr.size:
        raise ValueError(
            f"seeds must be a count >= 1 or distinct seed indices >= 0 (got {seeds!r}): "
            "e.g. seeds=4 or seeds=[0, 3]"
        )
    return arr.astype(np.int64)


# --------------------------------------------------------------------------- the sweep


@dataclasses.dataclass(frozen=True)
class _Grid:
    """The resolved sweep: the grids, the cells in (lr, value, seed) C order, and each
    trajectory's seed and initial parameters."""

    lrs: np.ndarray
    axis: SweepAxis | None
    values: np.ndarray | None
    seed_indices: np.ndarray
    cells: list[CellSettings]
    seeds: list[np.random.SeedSequence]
    theta0: list[np.ndarray]

    @property
    def shape(self) -> tuple[int, ...]:
        middle = () if self.values is None else (len(self.values),)
        return (len(self.lrs), *middle, len(self.seed_indices))

    @property
    def dims(self) -> tuple[str, ...]:
        middle = () if self.axis is None else (self.axis.name,)
        return ("lr", *middle, "seed")


def _resolve_grid(model, data, lrs, axis, values, seeds, seed, dynamics) -> _Grid:
    """Every argument checked (ValueError before any work) and the cells built."""
    check_model_data(model, data)
    lrs = _check_reals("lrs", lrs, positive=True)
    axis = as_axis(axis)
    if (axis is None) != (values is None):
        raise ValueError(
            "axis and values go together: pass both (axis='batch_size', values=[1, 4]) or "
            f"neither (got axis={axis!r}, values={values!r})"
        )
    values = None if axis is None else axis.check_values(values, model, data)
    seed_indices = _check_seeds(seeds)
    if not isinstance(dynamics, SGDDynamics | SDEDynamics):
        raise ValueError(
            f"dynamics must be SGDDynamics(...) or SDEDynamics(...) (got {dynamics!r})"
        )
    if isinstance(dynamics, SDEDynamics) and getattr(axis, "until", None) is not None:
        raise ValueError(
            "a label-noise axis with `until` (noise, then fine-tuning without it) runs with "
            "SGDDynamics; the SDE dynamics take a constant delta: drop until or use SGD"
        )
    batch, delta = dynamics.base_cell(model, data)
    cells, cell_seeds = [], []
    for lr in lrs:
        base = CellSettings(model, Constant(float(lr)), batch, delta, data)
        for value in [None] if values is None else values:
            cell = base if axis is None else axis.apply(value, base)
            for s in seed_indices:
                cells.append(cell)
                cell_seeds.append(seed_child(seed, s))
    for cell in cells:
        if not 1 <= cell.batch_size <= cell.data.n:
            raise ValueError(
                f"batch_size must be in [1, n = {cell.data.n}] (got {cell.batch_size})"
            )
    theta0 = _initial_params(cells, cell_seeds)
    return _Grid(lrs, axis, values, seed_indices, cells, cell_seeds, theta0)


def _initial_params(cells: list[CellSettings], seeds: list) -> list[np.ndarray]:
    """theta_0 of every trajectory (one (p,) array each: models may differ in p): its
    cell's model's init from its own "init" stream, exactly what the simulators draw for
    a model without a given theta0."""
    streams = trajectory_streams(seeds, len(seeds))["init"]
    theta0: list[np.ndarray] = [np.empty(0)] * len(cells)
    models = list(dict.fromkeys(cell.model for cell in cells))
    for model in models:
        rows = [t for t, cell in enumerate(cells) if cell.model == model]
        for t, theta in zip(rows, model.init([streams[t] for t in rows]), strict=True):
            theta0[t] = theta
    return theta0


def _run_groups(
    grid: _Grid, model: Model, per_lr: bool
) -> list[tuple[Model, RegressionData, np.ndarray]]:
    """The engine calls of a diagram: (model, data, the cells' rows), one per distinct
    data and (for an axis that rebuilds the model) model, in order of first appearance;
    with ``per_lr``, also one per step size (the SDE's dt)."""
    rebuilds = grid.axis is not None and grid.axis.rebuilds_model
    keys: dict = {}
    per = len(grid.cells) // len(grid.lrs)
    for t, cell in enumerate(grid.cells):
        run_model = cell.model if rebuilds else model
        key = (t // per if per_lr else 0, id(run_model), id(cell.data))
        keys.setdefault(key, (run_model, cell.data, []))[2].append(t)
    return [(m, d, np.array(rows)) for m, d, rows in keys.values()]


@dataclasses.dataclass(frozen=True)
class _Sharpness(TopHessianEigenvalue):
    """``TopHessianEigenvalue`` evaluated on ``CHUNK`` trajectories at a time (a dense
    Hessian is p x p per trajectory: a whole grid at once would not fit); its config is
    the built-in's (the same values)."""

    CHUNK: ClassVar[int] = 64

    def __call__(self, theta, model, data):
        call = super().__call__
        return np.concatenate(
            [call(theta[i : i + self.CHUNK], model, data) for i in range(0, len(theta), self.CHUNK)]
        )


def _sharpness_metrics(n_steps: int, gd: bool, criteria: RegimeCriteria) -> list:
    """The top Hessian eigenvalue at steps 0 and N only (``SHARPNESS``: a time average
    over windows of N steps sampled every N steps holds lambda(theta_0) up to the last
    save step and lambda(theta_N) there) and, for GD, its curve sampled every E steps
    (``SHARPNESS_CURVE``, held between samples; about 4 min_points samples) for the
    catapult and edge-of-stability flags."""
    lam = _Sharpness()
    out = [TimeAverage(lam, window=n_steps, every=n_steps, save_as=SHARPNESS)]
    if gd:
        every = _curve_stride(n_steps, criteria)
        out.append(TimeAverage(lam, window=every, every=every, save_as=SHARPNESS_CURVE))
    return out


def _recorded_metrics(l0_threshold, sparsity_level, sparsity_every, features):
    passage = FirstPassage(
        L0Norm(l0_threshold),
        level=sparsity_level,
        direction="below",
        every=sparsity_every,
        save_as=TIME_TO_SPARSITY,
    )
    return [passage, FeatureSparsity()] if features else [passage]


def _is_gd(dynamics: SGDDynamics | SDEDynamics, axis: SweepAxis | None, data) -> bool:
    """Every cell runs plain gradient descent: exact full-batch SGD without label noise
    (B = n without replacement), on an axis that changes neither B nor the noise."""
    sets_sgd = isinstance(axis, ConfigFieldAxis) and axis.path.startswith("sgd.")
    if not isinstance(dynamics, SGDDynamics) or sets_sgd:
        return False
    if isinstance(axis, BatchSizeAxis | LabelNoiseAxis):
        return False
    sgd = dynamics.sgd
    full = sgd.batch_size is None or (int(sgd.batch_size) == data.n and not sgd.with_replacement)
    return full and float(sgd.label_noise) == 0.0


def _run_sgd(model, data, grid: _Grid, rows, dynamics: SGDDynamics, run_args) -> xr.Dataset:
    """One engine call for the cells ``rows`` (per-trajectory schedules, B, delta)."""
    cells = [grid.cells[t] for t in rows]
    sgd = SGD(
        batch_size=[c.batch_size for c in cells],
        label_noise=[c.label_noise for c in cells],
        with_replacement=dynamics.sgd.with_replacement,
    )
    return simulate_sgd(
        model,
        data,
        [c.schedule for c in cells],
        sgd=sgd,
        seed=[grid.seeds[t] for t in rows],
        theta0=np.stack([grid.theta0[t] for t in rows]),
        engine=dynamics.engine,
        **run_args,
    )


def _run_sde(model, data, grid: _Grid, rows, dynamics: SDEDynamics, run_args) -> xr.Dataset:
    """One simulate_sde call for the cells ``rows`` of one step size (dt = eta / m),
    steps rescaled to SGD steps."""
    m = dynamics.steps_per_lr
    run_args = dict(run_args)
    n_steps = run_args.pop("n_steps")
    save = run_args.pop("save_steps")
    metrics = [_sde_metric(metric, m) for metric in run_args.pop("metrics")]
    cells = [grid.cells[t] for t in rows]
    lr = float(cells[0].schedule(0, n_steps))  # the cells' peak (and first) step size
    noise = dynamics.noise(
        lr=np.full(len(cells), lr),
        batch_size=np.array([c.batch_size for c in cells], dtype=np.int64),
        label_noise=np.array([c.label_noise for c in cells]),
    )
    noise, dt = _scheduled(noise, [c.schedule for c in cells], lr, m)
    ds = simulate_sde(
        model,
        data,
        noise,
        dt=dt,
        n_steps=n_steps * m,
        solver=dynamics.solver,
        seed=[grid.seeds[t] for t in rows],
        theta0=np.stack([grid.theta0[t] for t in rows]),
        save_steps=save * m,
        metrics=metrics,
        **run_args,
    )
    ds = ds.assign_coords(step=ds["step"] // m)
    hit = ds["diverged_step"]
    ds["diverged_step"] = hit.where(hit < 0, hit // m)  # in SGD steps, as ``step``
    passage = ds[TIME_TO_SPARSITY]
    return ds.assign({TIME_TO_SPARSITY: passage.where(passage < 0, passage // m)})


def _scheduled(noise: NoiseModel, schedules: list[Schedule], lr: float, m: int):
    """The noise and dt of the cells at step size ``lr``: a constant step size runs at
    dt = lr / m; a schedule that changes during the run follows it in dt and in the
    noise coefficients (``ScheduledNoise``, dt None)."""
    if all(isinstance(s, Constant) for s in schedules):
        return noise, lr / m
    return ScheduledNoise(noise, schedules, steps_per_lr=m), None


def _sde_metric(metric, m: int):
    """A recorded metric with its strides in SDE steps (m per SGD step)."""
    if isinstance(metric, FirstPassage) and metric.every is not None:
        return dataclasses.replace(metric, metric=metric.metric, every=metric.every * m)
    if isinstance(metric, TimeAverage):
        window, every = metric.window * m, metric.every * m
        return dataclasses.replace(metric, metric=metric.metric, window=window, every=every)
    return metric


def _time_to_sparsity(run: xr.Dataset, level: float) -> np.ndarray:
    """The recorded first passage, or for a run whose l0 starts at or below the level,
    the first save step at which l0 <= level after it first exceeded it (-1: never)."""
    first = np.asarray(run[TIME_TO_SPARSITY].values, dtype=np.int64).copy()
    l0 = masked(run["l0_norm"]).values
    steps = run["step"].values
    for t in np.flatnonzero(l0[:, 0] <= level):
        above = np.flatnonzero(l0[t] > level)
        later = np.flatnonzero(l0[t, above[0] :] <= level) + above[0] if above.size else []
        first[t] = steps[later[0]] if len(later) else -1
    return first


def _large_step_ends(grid: _Grid, n_steps: int) -> np.ndarray | None:
    """The step at which each cell's large-step phase ends (its schedule's first change
    point; n_steps for a constant step size), or None where no cell's step size changes."""
    ends = []
    for cell in grid.cells:
        changes = cell.schedule.change_points(n_steps)
        ends.append(changes[0] if changes else n_steps)
    return None if min(ends) == n_steps else np.array(ends)


def _large_step_regimes(run: xr.Dataset, criteria: RegimeCriteria, ends: np.ndarray) -> dict:
    """``classify_regimes`` of each trajectory's loss curve up to the end of its
    large-step phase (the save steps <= its end: the state after the last step at the
    large step size); code -1 and NaN where that part holds too few save points for the
    criteria's window."""
    T = run.sizes["traj"]
    regime, plateau = np.full(T, UNCLASSIFIED, dtype=np.int8), np.full(T, np.nan)
    steps = run["step"].values
    for end in np.unique(ends):
        rows, before = np.flatnonzero(ends == end), steps[steps <= end]
        start = before[-1] - criteria.window * (before[-1] - before[0])  # classify's window
        if np.count_nonzero(before >= start) < criteria.min_points:
            continue
        part = run.isel(traj=rows, step=slice(0, before.size))
        if "diverged_step" in part:  # diverged before the end of the phase, not after it
            hit = part["diverged_step"]
            part["diverged"] = (hit >= 0) & (hit <= end)
        regimes = classify_regimes(part, criteria)
        regime[rows] = regimes["regime"].values
        plateau[rows] = regimes["plateau_level"].values
    return {"regime_large_step": regime, "plateau_level_large_step": plateau}


@dataclasses.dataclass(frozen=True)
class _Summarizer:
    """How the runs of a diagram are summarized per cell (``_cell_summary``).

    large_step_ends: per cell, the end of its large-step phase (None: no cell's step
        size changes). window_lrs: per cell, its step size at the last step (the
        edge-of-stability flag's eta). gd: the diagram is gradient descent (catapult and
        edge-of-stability flags from the sharpness curve).
    """

    criteria: RegimeCriteria
    level: float
    n_steps: int
    large_step_ends: np.ndarray | None
    window_lrs: np.ndarray
    sharpness: bool
    gd: bool

    def __call__(self, run: xr.Dataset, rows: slice) -> tuple[dict, dict]:
        """Per-trajectory results of a run (the cells ``rows``): name -> (T, *extra)
        array, and the regime attrs."""
        criteria = self.criteria
        regimes = classify_regimes(run, criteria)
        last = run.isel(step=-1)
        out = {
            "final_train_loss": last["train_loss"].values,
            "final_test_loss": last["test_loss"].values,
            "final_l0_norm": masked(last["l0_norm"]).values,
            "regime": regimes["regime"].values,
            "plateau_level": regimes["plateau_level"].values,
            TIME_TO_SPARSITY: _time_to_sparsity(run, self.level),
            "diverged": run["diverged"].values,
        }
        if "feature_sparsity" in run:
            out["final_feature_sparsity"] = last["feature_sparsity"].values
        if self.large_step_ends is not None:
            out.update(_large_step_regimes(run, criteria, self.large_step_ends[rows]))
        if self.sharpness:
            out[SHARPNESS] = last[SHARPNESS].values
        if self.gd:
            curve = _sampled_curve(run[SHARPNESS_CURVE], _curve_stride(self.n_steps, criteria))
            flags = classify_regimes(run, criteria, sharpness=curve, lr=self.window_lrs[rows])
            out["catapult"] = flags["catapult"].values.astype(np.int8)
            out["edge_of_stability"] = flags["edge_of_stability"].values.astype(np.int8)
        kept = ("regime_criteria", "regime_window_steps")
        return out, {key: regimes.attrs[key] for key in kept}


def _in_cell_order(parts: list[dict], rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The runs' per-trajectory results put back in cell order (name -> (cells, ...))."""
    out = {}
    n_cells = sum(len(r) for r in rows)
    for name, first in parts[0].items():
        values = np.empty((n_cells, *first.shape[1:]), dtype=first.dtype)
        for part, where in zip(parts, rows, strict=True):
            values[where] = part[name]
        out[name] = values
    return out


def _curve_stride(n_steps: int, criteria: RegimeCriteria) -> int:
    """E of the GD sharpness curve: about 4 min_points samples over the run."""
    return max(1, n_steps // (4 * criteria.min_points))


def _sampled_curve(held: xr.DataArray, every: int) -> xr.DataArray:
    """The samples of a curve recorded as a time average over windows of E steps
    sampled every E steps (at save step s: the value at the last multiple of E <= s),
    on their own steps: each multiple of E seen at some save step, once."""
    sample_steps = (held["step"].values // every) * every
    steps, first = np.unique(sample_steps, return_index=True)
    values = held.transpose("traj", "step").values[:, first]
    return xr.DataArray(values, dims=("traj", "step"), coords={"step": steps})


_ATTRS = {
    "final_train_loss": {
        "long_name": "training loss 1/(2n) sum_i r_i^2 at the last step",
        "units": "1",
    },
    "final_test_loss": {
        "long_name": "test loss 1/(2 n_test) sum_i r_i^2 at the last step",
        "units": "1",
    },
    "final_l0_norm": {
        "long_name": "number of coordinates with |beta_i| > l0_threshold at the last step",
        "units": "count",
    },
    "final_feature_sparsity": {
        "long_name": "feature sparsity per hidden layer at the last step",
        "units": "1",
    },
    "plateau_level": {
        "long_name": "plateau loss level of a stabilized run (NaN otherwise)",
        "units": "1",
    },
    "plateau_level_large_step": {
        "long_name": "plateau loss level of the large-step phase if stabilized (NaN otherwise)",
        "units": "1",
    },
    "diverged": {"long_name": "the run diverged", "units": "1"},
    SHARPNESS: {
        "long_name": "top eigenvalue lambda_max of the Hessian of the training loss at the "
        "last step (NaN: diverged)",
        "units": "1",
    },
    "catapult": {
        "long_name": "GD catapult: loss spike above catapult_factor L_0, then convergence at "
        "a lower sharpness (Lewkowycz et al. 2020)",
        "units": "1",
    },
    "edge_of_stability": {
        "long_name": "GD at the edge of stability: |eta lambda_max / 2 - 1| <= eos_tolerance "
        "on eos_fraction of the window (Cohen et al. 2021)",
        "units": "1",
    },
    "lr": {"long_name": "peak step size eta", "units": "1"},
    "seed": {
        "long_name": "seed index s (seed: SeedSequence(entropy, spawn_key + (s,)))",
        "units": "1",
    },
    "gd_stability_edge": {
        "long_name": "GD stability edge 2 / lambda_max(theta_0) of the Hessian at initialization",
        "units": "1",
    },
    "catapult_theory_low": {
        "long_name": "start 2 / lambda_0 of the catapult window of Lewkowycz et al. (2020), "
        "lambda_0 the top eigenvalue of the NTK phi phi^T / n at initialization",
        "units": "1",
    },
    "catapult_theory_high": {
        "long_name": "end 4 / lambda_0 of the catapult window of Lewkowycz et al. (2020) for "
        "two-layer linear networks (above it GD diverges)",
        "units": "1",
    },
}


def _initial_curvatures(grid: _Grid, data: RegressionData) -> tuple[np.ndarray, np.ndarray]:
    """lambda_max at theta_0 of the Hessian and of the NTK phi phi^T / n, for the cells
    of the first step size (theta_0 does not depend on eta), over the dims after lr."""
    per_lr = len(grid.cells) // len(grid.lrs)
    hessian, ntk = np.empty(per_lr), np.empty(per_lr)
    # cells sharing model, data and theta_0 (a deterministic init: all of them) share
    # the curvatures: one eigenproblem each (~10 ms at p = 400), not one per cell
    known: dict[tuple[Model, int, bytes], tuple[float, float]] = {}
    for t in range(per_lr):
        cell, theta = grid.cells[t], grid.theta0[t][None]
        key = (cell.model, id(cell.data), theta.tobytes())
        if key not in known:
            X, y = cell.data.X, cell.data.y
            phi = cell.model.jacobian(theta, X)[0]  # (n, p)
            known[key] = (
                float(cell.model.top_hessian_eigenvalue(theta, X, y)[0]),
                float(np.linalg.norm(phi, 2) ** 2 / cell.data.n),
            )
        hessian[t], ntk[t] = known[key]
    return hessian.reshape(grid.shape[1:]), ntk.reshape(grid.shape[1:])


def phase_diagram(
    model: Model,
    data: RegressionData,
    *,
    lrs: Sequence[float],
    axis: SweepAxis | str | None = None,
    values: Sequence[float] | None = None,
    seeds: int | Sequence[int],
    n_steps: int,
    dynamics: SGDDynamics | SDEDynamics = SGDDynamics(),
    seed: Any = 0,
    save_steps: Any = None,
    criteria: RegimeCriteria = DEFAULT_CRITERIA,
    l0_threshold: float = 1e-50,
    sparsity_level: float | None = None,
    sparsity_every: int | None = None,
    features: bool | None = None,
    max_loss: float = 1e10,
    sharpness: bool = True,
    progress: bool = False,
) -> xr.Dataset:
    """Sweep step sizes x a second axis x seeds and return the phase diagram (module
    docstring for the layout, the seeds and the measurements).

    model, data: the closed-form model and its regression data.
    lrs: the step sizes eta (non-empty, > 0): the dim ``lr`` (the peak step size).
    axis: the second axis, a ``SweepAxis`` or its name in ``AXES`` (label_noise,
        batch_size, decay_fraction, init_scale), or None for a (lr, seed) diagram.
    values: the axis grid (non-empty; its own checks), with ``axis`` only.
    seeds: a count n (seed indices 0..n-1) or a sequence of distinct indices >= 0.
    n_steps: the number of SGD steps N of every cell.
    dynamics: ``SGDDynamics(sgd, engine)`` (exact SGD) or ``SDEDynamics(noise, ...)``.
    seed: the root seed (int or SeedSequence); seed index s uses ``seed_child(seed, s)``.
    save_steps: the save grid of the loss curves (default ``eval_grid(n_steps)``); the
        regime classifier needs ``criteria.min_points`` of them in its window.
    criteria: the ``RegimeCriteria`` of ``classify_regimes``.
    l0_threshold: |beta_i| counted in l0 above it (paper: 1e-50).
    sparsity_level: the l0 level of ``time_to_sparsity`` (default: the support size of
        ``data.beta_star``, else d / 10).
    sparsity_every: also evaluate the first passage every so many steps (None: the save
        steps only).
    features: record the feature sparsity (default: where the model has hidden-layer
        features).
    max_loss: a run whose loss exceeds it is frozen and diverged.
    sharpness: record the top Hessian eigenvalue lambda_max at the end of every run
        (``sharpness``; NaN where diverged) and, where every cell is gradient descent,
        its curve for the ``catapult`` and ``edge_of_stability`` flags of
        ``classify_regimes`` (two p x p eigenproblems per trajectory; ~4 min_points for
        GD).
    progress: show the engine's progress bar.
    """
    grid = _resolve_grid(model, data, lrs, axis, values, seeds, seed, dynamics)
    n_steps = check_n_steps(n_steps)
    save = save_grid(save_steps, n_steps)
    level = _sparsity_level(sparsity_level, data)
    if features is None:
        features = hasattr(model, "layer_features")
    run_args = {
        "n_steps": n_steps,
        "save_steps": save,
        "l0_threshold": l0_threshold,
        "max_loss": max_loss,
        "metrics": _recorded_metrics(l0_threshold, level, sparsity_every, features),
        "progress": progress,
        "test_subsample": CURVE_TEST_SUBSAMPLE,
    }
    sharpness = _check_flag("sharpness", sharpness)
    gd = sharpness and _is_gd(dynamics, grid.axis, data)
    if sharpness:
        run_args["metrics"] += _sharpness_metrics(n_steps, gd, criteria)
    sde = isinstance(dynamics, SDEDynamics)
    run_cells = _run_sde if sde else _run_sgd
    groups = _run_groups(grid, model, per_lr=sde)
    runs = [run_cells(m, d, grid, rows, dynamics, run_args) for m, d, rows in groups]
    summarize = _Summarizer(
        criteria,
        level,
        n_steps,
        _large_step_ends(grid, n_steps),
        np.array([float(c.schedule(n_steps - 1, n_steps)) for c in grid.cells]),
        sharpness,
        gd,
    )
    summaries = [summarize(run, rows) for run, (_, _, rows) in zip(runs, groups, strict=True)]
    results = _in_cell_order([s[0] for s in summaries], [rows for _, _, rows in groups])
    ds = _diagram_dataset(grid, results, summaries[0][1], data)
    resolved = {**run_args, "sharpness": sharpness}
    config = _resolved_config(model, data, grid, dynamics, save, level, resolved, sparsity_every)
    root = as_seed_sequence(seed)
    ds.attrs.update(
        {
            "config": json.dumps(config),
            **seed_attrs(root),
            "seed_layout": "seed index s: SeedSequence(entropy, spawn_key + (s,)), shared by "
            "every cell with index s; .spawn(4) -> init, batch, label_noise, brownian",
            "dynamics": dynamics.name,
        }
    )
    return ds


def _resolved_config(model, data, grid: _Grid, dynamics, save, level, run_args, every) -> dict:
    """The resolved configuration a phase diagram stores (JSON-serializable)."""
    return {
        "model": model.to_config(),
        "data": data.config,
        "lrs": grid.lrs.tolist(),
        "axis": None if grid.axis is None else grid.axis.to_config(),
        "values": None if grid.values is None else grid.values.tolist(),
        "seeds": grid.seed_indices.tolist(),
        "n_steps": run_args["n_steps"],
        "dynamics": dynamics.to_config(),
        "save_steps": save.tolist(),
        "l0_threshold": run_args["l0_threshold"],
        "sparsity_level": level,
        "sparsity_every": every,
        "max_loss": run_args["max_loss"],
        "sharpness": bool(run_args["sharpness"]),
    }


def phase_config(
    model: Model,
    data: RegressionData,
    *,
    lrs: Sequence[float],
    axis: SweepAxis | str | None = None,
    values: Sequence[float] | None = None,
    seeds: int | Sequence[int],
    n_steps: int,
    dynamics: SGDDynamics | SDEDynamics = SGDDynamics(),
    seed: Any = 0,
    save_steps: Any = None,
    l0_threshold: float = 1e-50,
    sparsity_level: float | None = None,
    sparsity_every: int | None = None,
    max_loss: float = 1e10,
    sharpness: bool = True,
) -> dict[str, Any]:
    """Check the arguments of ``phase_diagram`` (same names and meanings; a ValueError
    before any run) and return the resolved configuration it stores in ``attrs["config"]``
    (what a sweep records and compares on resume), without running anything."""
    grid = _resolve_grid(model, data, lrs, axis, values, seeds, seed, dynamics)
    n_steps = check_n_steps(n_steps)
    run_args = {"n_steps": n_steps, "l0_threshold": l0_threshold, "max_loss": max_loss}
    run_args["sharpness"] = _check_flag("sharpness", sharpness)
    save = save_grid(save_steps, n_steps)
    level = _sparsity_level(sparsity_level, data)
    return _resolved_config(model, data, grid, dynamics, save, level, run_args, sparsity_every)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False (got {value!r})")
    return bool(value)


def _sparsity_level(level: Any, data: RegressionData) -> float:
    if level is None:
        beta_star = getattr(data, "beta_star", None)
        if beta_star is not None:
            return float(np.count_nonzero(beta_star))
        return float(max(data.d // 10, 1))
    ok = isinstance(level, numbers.Real) and not isinstance(level, bool) and level >= 0
    if not ok or not math.isfinite(level):
        raise ValueError(f"sparsity_level must be a finite l0 level >= 0 (got {level!r})")
    return float(level)


def _diagram_dataset(grid: _Grid, results: dict, regime_attrs: dict, data) -> xr.Dataset:
    dims, shape = grid.dims, grid.shape
    coords: dict[str, Any] = {"lr": grid.lrs, "seed": grid.seed_indices}
    if grid.axis is not None:
        coords[grid.axis.name] = grid.values
    ds = xr.Dataset(coords=coords)
    for name, values in results.items():
        extra = ("layer",) if values.ndim > 1 else ()
        ds[name] = ((*dims, *extra), values.reshape(*shape, *values.shape[1:]))
        ds[name].attrs.update(_ATTRS.get(name, {}))
    names = [member.name.lower() for member in Regime]
    ds["regime"].attrs.update(
        long_name="regime of the run (its window: the end of the run)",
        flag_values=np.array([int(m) for m in Regime], dtype=np.int8),
        flag_meanings=" ".join(names),
    )
    ds = ds.assign_coords(regime_name=(ds["regime"].dims, np.array(names)[ds["regime"].values]))
    if "regime_large_step" in ds:
        ds["regime_large_step"].attrs.update(
            long_name="regime of the large-step phase (the loss curve before the decay)",
            flag_values=np.array([UNCLASSIFIED, *(int(m) for m in Regime)], dtype=np.int8),
            flag_meanings=" ".join(["unclassified", *names]),
            unclassified="too few save points before the decay for the regime window",
        )
    ds[TIME_TO_SPARSITY].attrs.update(
        long_name="first step with l0 <= sparsity_level (-1: never)", units="step", not_reached=-1
    )
    ds["diverged"] = ds["diverged"].astype(np.int8)
    ds["diverged"].attrs.update(_ATTRS["diverged"])
    hessian, ntk = _initial_curvatures(grid, data)
    edge = step_edge(hessian, 2.0)
    ds = ds.assign_coords(
        gd_stability_edge=(dims[1:], edge),
        catapult_theory_low=(dims[1:], step_edge(ntk, 2.0)),
        catapult_theory_high=(dims[1:], step_edge(ntk, 4.0)),
    )
    for name in ("lr", "seed", "gd_stability_edge", "catapult_theory_low", "catapult_theory_high"):
        ds[name].attrs.update(_ATTRS[name])
    if grid.axis is not None:
        ds[grid.axis.name].attrs.update(long_name=grid.axis.long_name, units=grid.axis.units)
    if np.all(edge == edge.flat[0]):
        ds.attrs["gd_stability_edge"] = float(edge.flat[0])
    ds.attrs.update(regime_attrs)
    ds.attrs["title"] = "phase diagram over the step size"
    return ds
