"""Exact minibatch SGD, GD and label-noise SGD for many trajectories in one call.

    theta_{k+1} = theta_k - eta_k (1/B_k) sum_{i in S_k} (r_i + xi_i) grad_theta f(x_i),

r_i = f_theta(x_i) - y_i, S_k of size B_k uniform without replacement (option: with),
xi_i ~ N(0, delta_k) label noise of *variance* delta_k (the package conventions). B = n
without replacement is GD. Each trajectory may have its own schedule eta_k, batch size B
(or schedule B_k), delta (or schedule delta_k) and seed stream; SDE time
t_k = sum_{j<k} eta_j is saved beside every step.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.data import RegressionData
from sgdsde.dynamics.engines import ENGINES, Engine, NumbaEngine, SGDProblem, as_engine
from sgdsde.dynamics.schedules import Piecewise, Schedule, as_schedule, schedule_from_config
from sgdsde.models.base import Model
from sgdsde.registry import config_value
from sgdsde.run.checks import agree_n_traj, shared_traj_sizes
from sgdsde.run.driver import drive
from sgdsde.run.loop import check_run_arguments, run_names_coord, save_grid

__all__ = ["ENGINES", "GD", "SGD", "simulate_sgd"]


_BATCH_FIX = (
    "pass the number of examples per step, e.g. batch_size=2, a Schedule of integer batch "
    "sizes, e.g. batch_size=Piecewise(levels=(1, 16), at=(0.5,)), or None for full-batch GD"
)


def _check_batch_size(value: Any) -> None:
    values = [value] if isinstance(value, Schedule) or np.ndim(value) == 0 else list(value)
    for b in values:
        if b is None:
            continue
        if isinstance(b, Piecewise):
            for j, level in enumerate(b.levels):
                if not (level.is_integer() and level >= 1):
                    raise ValueError(
                        f"batch_size schedule levels[{j}] must be an integer >= 1 (got "
                        f"{level!r}): give whole batch sizes, e.g. Piecewise(levels=(1, 16), "
                        "at=(0.5,))"
                    )
            continue
        if isinstance(b, Schedule):
            continue  # its values are checked against n over the run (_batch_values)
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
            raise ValueError(f"batch_size must be an integer in [1, n] (got {b!r}): {_BATCH_FIX}")


def _batch_values(schedule: Schedule, n: int, n_steps: int) -> np.ndarray:
    """B_0 .. B_{N-1} of a batch-size schedule, checked to be integers in [1, n]."""
    values = schedule.values(n_steps)
    bad = np.flatnonzero((values != np.rint(values)) | (values < 1) | (values > n))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"batch_size schedule {schedule!r} must give integer batch sizes in [1, n = {n}] "
            f"(got B_k = {float(values[k]):g} at step k = {k}): use integer levels <= n, e.g. "
            f"Piecewise(levels=(1, {n}), at=(0.5,))"
        )
    return values


def _schedules_from_config(value: Any) -> Any:
    """``value`` with every schedule config dict (``Schedule.to_config``) made a Schedule,
    so that ``SGD(**sgd.to_config())`` rebuilds the schedules."""
    if isinstance(value, Mapping):
        return schedule_from_config(value)
    if isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
        return type(value)(schedule_from_config(v) if isinstance(v, Mapping) else v for v in value)
    return value


def _check_label_noise(value: Any) -> None:
    values = [value] if isinstance(value, Schedule) or np.ndim(value) == 0 else list(value)
    for d in values:
        if isinstance(d, Schedule):
            continue
        if (
            isinstance(d, bool)
            or not isinstance(d, numbers.Real)
            or not (math.isfinite(d) and d >= 0)
        ):
            raise ValueError(
                f"label_noise (a variance delta) must be a finite number >= 0 (got {d!r}): "
                "pass 0 for plain SGD, or a Schedule of delta_k (e.g. Piecewise)"
            )


@dataclasses.dataclass(frozen=True)
class SGD:
    """Minibatch SGD with optional Gaussian label noise.

    batch_size: B per trajectory (int or sequence); None means the full batch (GD); or a
        ``Schedule`` of integer batch sizes B_k in [1, n] (e.g. ``Piecewise(levels=(1, 16),
        at=(0.5,))``: single samples for half the run, then batches of 16), per
        trajectory or shared. Step k then averages over B_k examples; the random numbers
        it takes are documented in ``SGDProblem.draw_block``. A schedule at B_k = n
        (without replacement) for only part of the run samples a random permutation at
        those steps: GD's update up to the order of summation.
    label_noise: delta, the *variance* of the noise added to each sampled label, or a
        ``Schedule`` of delta_k over the steps (e.g. ``Piecewise(levels=(0.1, 0.0), at=(0.5,))``:
        label noise for half the run, then fine-tuning without it), per trajectory or
        shared.
    with_replacement: draw S_k with replacement (default: without).
    """

    batch_size: int | Schedule | Sequence[int | Schedule | None] | None = 1
    label_noise: float | Schedule | Sequence[float | Schedule] = 0.0
    with_replacement: bool = False

    def __post_init__(self):
        for name in ("batch_size", "label_noise"):  # schedule config dicts (to_config)
            object.__setattr__(self, name, _schedules_from_config(getattr(self, name)))
        _check_batch_size(self.batch_size)
        _check_label_noise(self.label_noise)
        if not isinstance(self.with_replacement, bool | np.bool_):
            raise ValueError(
                f"with_replacement must be True or False (got {self.with_replacement!r})"
            )

    def to_config(self) -> dict[str, Any]:
        """The options as plain JSON-able values; ``SGD(**sgd.to_config()) == sgd`` up to
        sequences becoming lists."""
        return {f.name: config_value(getattr(self, f.name)) for f in dataclasses.fields(self)}


def GD(label_noise: float | Sequence[float] = 0.0) -> SGD:
    """Full-batch gradient descent (with optional label noise): SGD with B = n."""
    return SGD(batch_size=None, label_noise=label_noise)


def _per_traj(name: str, value: Any, n_traj: int | None) -> list | None:
    """A per-trajectory list from a scalar or a sequence; None when scalar and T unknown."""
    if isinstance(value, str | dict | Schedule) or np.isscalar(value) or value is None:
        return None if n_traj is None else [value] * n_traj
    values = list(value)
    if n_traj is not None and len(values) != n_traj:
        raise ValueError(f"{name} has {len(values)} entries but there are {n_traj} trajectories")
    return values


def _n_steps_argument(positional: tuple, n_steps: Any) -> Any:
    """n_steps given as a keyword, or (deprecated) as the 4th positional argument."""
    if not positional:
        if n_steps is None:
            raise TypeError("simulate_sgd() missing the keyword argument n_steps")
        return n_steps
    if len(positional) > 1 or n_steps is not None:
        raise TypeError(
            "simulate_sgd() takes model, data and schedule positionally; pass every other "
            "argument by keyword (n_steps=..., sgd=..., ...)"
        )
    warnings.warn(
        "passing n_steps positionally to simulate_sgd is deprecated: write "
        "simulate_sgd(model, data, schedule, n_steps=...)",
        DeprecationWarning,
        stacklevel=3,
    )
    return positional[0]


DEFAULT_ENGINE = NumbaEngine()


def simulate_sgd(
    model: Model,
    data: RegressionData,
    schedule: Any,
    *deprecated_positional: int,
    n_steps: int | None = None,
    sgd: SGD = SGD(),
    n_traj: int | None = None,
    seed: Any = 0,
    theta0: np.ndarray | None = None,
    save_steps: Any = None,
    save_params: bool = False,
    l0_threshold: float = 1e-50,
    max_loss: float = 1e10,
    engine: Engine | str = DEFAULT_ENGINE,
    device: str = "cpu",
    run_names: Sequence[str] | None = None,
    metrics: Sequence = (),
    progress: bool = False,
    test_subsample: int | None = None,
) -> xr.Dataset:
    """Run T trajectories of (label-noise) SGD and return their metrics as a Dataset.

    model, data: the closed-form model and its regression data (same input dimension).
    schedule: a step size, a ``Schedule`` or its config dict, or a sequence of them
        (one per trajectory).
    n_steps: the number of SGD updates (keyword; positionally it is deprecated).
    sgd: the dynamics, ``SGD(batch_size, label_noise, with_replacement)`` or ``GD(delta)``;
        batch_size and label_noise may be sequences (one per trajectory).
    n_traj: the number of trajectories T; default: implied by the per-trajectory
        arguments (schedule, sgd, theta0, seed, run_names), else 1.
    seed: an int or ``numpy.random.SeedSequence`` (trajectory t uses
        ``SeedSequence(seed).spawn(T)[t]``), or one per trajectory (equal seeds share
        every random number). A ``numpy.random.Generator`` is refused.
    theta0: (p,) or (T, p) initial parameters; default the model's init drawn from each
        trajectory's "init" stream.
    save_steps: steps at which metrics are recorded (default ``eval_grid(n_steps)``:
        steps 0-99, then 250 evenly spaced points, as the paper's notebooks).
    save_params: also record the parameters theta at the save steps (T x S x p memory).
    l0_threshold: |beta_i| counted in l0_norm above it (paper: 1e-50).
    max_loss: a trajectory with a sampled r_i^2/2 or training loss above it (or
        non-finite) is frozen and marked diverged; the others go on.
    engine: an ``Engine`` object (default ``NumbaEngine()``; ``NumpyEngine()`` is the
        plain reference, ``TorchEngine()`` runs on ``device``) or its name in ``ENGINES``.
    device: "cpu", or a torch device such as "cuda" (torch engine only).
    run_names: one name per trajectory, stored as the ``run`` coordinate.
    metrics: extra metric objects recorded at the save steps (``sgdsde.run.recording``).
    progress: show a progress bar.
    test_subsample: None, or the number m of test examples (a fixed seeded subset) the
        test loss is taken on before the last save step; the last one uses the whole
        test set (``sgdsde.run.recording``; the test_loss attrs say so).
    """
    n_steps = _n_steps_argument(deprecated_positional, n_steps)
    n_steps = check_run_arguments(
        model, data, n_steps=n_steps, seed=seed, max_loss=max_loss, l0_threshold=l0_threshold
    )
    engine = as_engine(engine)
    problem = _sgd_problem(
        model, data, schedule, sgd, n_steps, n_traj, theta0, run_names, seed, max_loss
    )
    save = save_grid(save_steps, n_steps)
    run = drive(
        engine,
        problem,
        seed=seed,
        theta0=theta0,
        save_steps=save,
        save_params=save_params,
        l0_threshold=l0_threshold,
        metrics=metrics,
        device=device,
        progress=progress,
        test_subsample=test_subsample,
    )
    ds = run.to_dataset(
        "sgd",
        f"{model.name} trained by SGD",
        {
            "sgd": {
                "batch_size": [
                    int(b) if schedule is None else schedule.to_config()
                    for b, schedule in zip(
                        problem.batch_size,
                        problem.batch_size_schedules or (None,) * problem.n_traj,
                        strict=True,
                    )
                ],
                "label_noise": config_value(
                    list(_per_traj("label_noise", sgd.label_noise, problem.n_traj))
                ),
                "with_replacement": problem.with_replacement,
            },
            "schedules": [s.to_config() for s in problem.schedules],
            "engine": engine.name,
        },
        {
            "lr": np.array([s.peak(n_steps) for s in problem.schedules]),
            "batch_size": problem.batch_size,
            "label_noise": problem.label_noise,
            **run_names_coord(run_names),
        },
        engine=engine.name,
    )
    ds["lr"].attrs["long_name"] = "peak step size max_k eta_k"
    ds["batch_size"].attrs["long_name"] = "batch size B (its peak max_k B_k under a schedule)"
    return ds


def _sgd_problem(
    model, data, schedule, sgd, n_steps, n_traj, theta0, run_names, seed, max_loss
) -> SGDProblem:
    """The per-trajectory settings resolved and checked against the data."""
    if not isinstance(sgd, SGD):
        raise ValueError(f"sgd must be a sgdsde.dynamics.SGD or GD(...) (got {sgd!r})")
    sizes = shared_traj_sizes(theta0, run_names, seed)
    for name, value in (
        ("schedule", schedule),
        ("batch_size", sgd.batch_size),
        ("label_noise", sgd.label_noise),
    ):
        per_traj = _per_traj(name, value, None)
        if per_traj is not None:
            sizes[name] = len(per_traj)
    T = agree_n_traj(n_traj, sizes)
    schedules = tuple(as_schedule(s) for s in _per_traj("schedule", schedule, T))
    n = data.n
    batch = [n if b is None else b for b in _per_traj("batch_size", sgd.batch_size, T)]
    batch_schedules = tuple(b if isinstance(b, Schedule) else None for b in batch)
    peaks = []
    for b in batch:
        if isinstance(b, Schedule):
            peaks.append(int(_batch_values(b, n, n_steps).max()))
        elif not 1 <= b <= n:
            raise ValueError(
                f"batch_size must be an integer in [1, n = {n}] (got {b!r}); "
                "use batch_size=None for full-batch GD"
            )
        else:
            peaks.append(int(b))
    noise = _per_traj("label_noise", sgd.label_noise, T)
    noise_schedules = tuple(d if isinstance(d, Schedule) else None for d in noise)
    return SGDProblem(
        model=model,
        data=data,
        schedules=schedules,
        batch_size=np.array(peaks, dtype=np.int64),
        label_noise=np.array(
            [
                float(d) if s is None else s.peak(n_steps)
                for d, s in zip(noise, noise_schedules, strict=True)
            ],
            dtype=np.float64,
        ),
        label_noise_schedules=noise_schedules if any(noise_schedules) else None,
        batch_size_schedules=batch_schedules if any(batch_schedules) else None,
        with_replacement=bool(sgd.with_replacement),
        n_steps=n_steps,
        max_loss=float(max_loss),
    )
