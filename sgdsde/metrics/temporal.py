"""Metrics over time: a running time-average of a metric and the first passage of a
metric across a level, recorded while a run goes (``sgdsde.run.recording``) without
storing parameters.

Both follow a ``Metric`` (a function of the state). They describe *which* steps they
need; the recorder evaluates the metric there and keeps O(T x metric size) numbers
per save point (a time average) or per trajectory (a first passage), whatever the
number of sampled steps.

``IterateMetric`` is a function of consecutive iterates (theta_{s-lookback}, ...,
theta_s) and the initial theta_0 at each save step s.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from sgdsde.metrics.base import METRICS, Recordable, as_metric, checked_values
from sgdsde.registry import to_config


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1 step (got {value!r})")
    return int(value)


def _variable_name(owner: str, save_as: Any, default: str) -> str:
    if save_as is None:
        return default
    if not isinstance(save_as, str) or not save_as.isidentifier() or save_as in METRICS:
        raise ValueError(
            f"{owner}: save_as must be an identifier that is not a registered metric's "
            f"name (got {save_as!r})"
        )
    return save_as


def multiples_in(every: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sorted unique multiples of ``every`` in the union of the closed intervals
    [lo_j, hi_j] (lo nondecreasing): merged first, so the work is O(result + intervals)."""
    first = -(-np.maximum(lo, 0) // every)  # ceil(lo / every), per interval
    last = np.asarray(hi) // every
    out, reached = [], -1
    for a, b in zip(first.tolist(), last.tolist(), strict=True):
        a = max(a, reached + 1)
        if a <= b:
            out.append(np.arange(a, b + 1, dtype=np.int64))
            reached = b
    return every * np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class FollowsMetric(Recordable):
    """A recordable built on another metric (``metric``) and saved under ``save_as``:
    its config names its registered class and omits a default ``save_as``, and it can
    be recorded wherever its metric can."""

    metric: Any
    save_as: str | None

    def to_config(self) -> dict[str, Any]:
        cfg = to_config(self) | {"name": type(self).name}
        if self.save_as is None:
            del cfg["save_as"]
        return cfg

    def check(self, model: Any, data: Any) -> None:
        self.metric.check(model, data)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class TimeAverage(FollowsMetric):
    """Running time-average of ``metric`` over a trailing window, at every save step.

    At save step s the recorded value is the mean of metric(theta_k) over the sample
    steps k = multiples of ``every`` with s - window < k <= s (and k >= 0: near the
    start the window holds fewer samples). ``every <= window`` so every window holds
    at least one sample. A trajectory diverged at or before s reads NaN there.

    metric: the Metric to average (a name, a config dict or a Metric).
    window: W, the window length in steps.
    every: e, the sampling stride in steps (default 1: every step).
    save_as: the dataset variable (default ``<metric>_time_average``).
    """

    metric: Any
    window: int
    every: int = 1
    save_as: str | None = None

    name = "time_average"
    dtype = np.float64

    def __post_init__(self):
        metric = as_metric(self.metric)
        object.__setattr__(self, "metric", metric)
        owner = f"TimeAverage of {metric.name!r}"
        window = _positive_int(owner, "window", self.window)
        every = _positive_int(owner, "every", self.every)
        if every > window:
            raise ValueError(
                f"{owner}: every = {every} exceeds window = {window}, so some windows "
                "would hold no sample: take every <= window"
            )
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "every", every)
        default = f"{metric.name}_time_average"
        object.__setattr__(self, "name", _variable_name(owner, self.save_as, default))

    @property
    def dims(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.metric.dims

    @property
    def units(self) -> str:  # type: ignore[override]
        return self.metric.units

    @property
    def long_name(self) -> str:  # type: ignore[override]
        return (
            f"mean of {self.metric.name} over the steps k = 0 mod {self.every} in "
            f"(s - {self.window}, s] at each save step s"
        )

    def attrs(self, model: Any) -> dict[str, Any]:
        inner = {k: v for k, v in self.metric.attrs(model).items() if k != "long_name"}
        return (
            inner
            | super().attrs(model)
            | {"metric_long_name": self.metric.attrs(model)["long_name"]}
        )

    def settings(self) -> dict[str, Any]:
        return {"metric": self.metric.name, "window": self.window, "every": self.every}

    def sample_steps(self, save_steps: np.ndarray) -> np.ndarray:
        """Sorted unique steps at which the metric is sampled (every window's samples)."""
        save = np.asarray(save_steps, dtype=np.int64)
        return multiples_in(self.every, save - self.window + 1, save)

    def sample_counts(self, save_steps: np.ndarray) -> np.ndarray:
        """Number of samples in each save step's window (>= 1), (S,)."""
        save = np.asarray(save_steps, dtype=np.int64)
        lo = np.maximum(save - self.window + 1, 0)
        return save // self.every - (-(-lo // self.every)) + 1

    def windows_containing(self, k: int, save_steps: np.ndarray) -> slice:
        """The save points j whose window (s_j - W, s_j] contains step k: a slice."""
        j0 = int(np.searchsorted(save_steps, k, side="left"))
        j1 = int(np.searchsorted(save_steps, k + self.window, side="left"))
        return slice(j0, j1)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class FirstPassage(FollowsMetric):
    """The first step at which ``metric`` reaches ``level``, per trajectory (-1: never).

    "below": the first evaluated step k with metric(theta_k) <= level; "above": with
    metric(theta_k) >= level. Evaluated at the save steps and, if ``every`` is given,
    at every multiple of ``every`` up to the last save step (every=1: the exact first
    step). Resolution: the true first passage lies after the previous evaluated step
    and at or before the recorded one. Steps from a trajectory's divergence on are not
    evaluated (a trajectory that diverged first reads -1; see ``diverged_step``).

    metric: a Metric with one value per trajectory (no extra dims).
    level: a finite number.
    direction: "below" (default) or "above".
    every: evaluation stride in steps, or None for the save steps only.
    save_as: the dataset variable (default ``<metric>_first_passage``).
    """

    metric: Any
    level: float
    direction: str = "below"
    every: int | None = None
    save_as: str | None = None

    name = "first_passage"
    units = "step"
    dtype = np.int64

    def __post_init__(self):
        metric = as_metric(self.metric)
        object.__setattr__(self, "metric", metric)
        owner = f"FirstPassage of {metric.name!r}"
        if metric.dims:
            raise ValueError(
                f"{owner}: the metric has extra dims {metric.dims}; a first passage needs "
                "one value per trajectory"
            )
        level = self.level
        if (
            isinstance(level, bool)
            or not isinstance(level, numbers.Real)
            or not math.isfinite(level)
        ):
            raise ValueError(f"{owner}: level must be a finite number (got {level!r})")
        object.__setattr__(self, "level", float(level))
        if self.direction not in ("below", "above"):
            raise ValueError(
                f"{owner}: direction must be 'below' or 'above' (got {self.direction!r})"
            )
        if self.every is not None:
            object.__setattr__(self, "every", _positive_int(owner, "every", self.every))
        default = f"{metric.name}_first_passage"
        object.__setattr__(self, "name", _variable_name(owner, self.save_as, default))

    @property
    def long_name(self) -> str:  # type: ignore[override]
        op = "<=" if self.direction == "below" else ">="
        where = "the save steps" + (f" and multiples of {self.every}" if self.every else "")
        return (
            f"first step k with {self.metric.name} {op} {self.level:g}, evaluated at {where} "
            "(-1: never)"
        )

    def attrs(self, model: Any) -> dict[str, Any]:
        return super().attrs(model) | {
            "metric_long_name": self.metric.attrs(model)["long_name"],
            "not_reached": -1,
        }

    def settings(self) -> dict[str, Any]:
        out = {"metric": self.metric.name, "level": self.level, "direction": self.direction}
        return out | ({"every": self.every} if self.every is not None else {})

    def due_steps(self, save_steps: np.ndarray) -> np.ndarray:
        """Sorted unique steps at which the metric is evaluated."""
        save = np.asarray(save_steps, dtype=np.int64)
        if self.every is None:
            return save
        grid = np.arange(0, int(save[-1]) + 1, self.every, dtype=np.int64)
        return np.union1d(save, grid)

    def is_due(self, k: int, save_steps: np.ndarray) -> bool:
        if self.every is not None and k % self.every == 0:
            return True
        j = int(np.searchsorted(save_steps, k))
        return j < len(save_steps) and int(save_steps[j]) == k

    def reached(self, values: np.ndarray) -> np.ndarray:
        """Boolean (T,): values at or beyond the level (NaN never reaches)."""
        return values <= self.level if self.direction == "below" else values >= self.level


class IterateMetric(Recordable):
    """A function of several iterates around each save step s: theta_s, theta_{s-1},
    ..., theta_{s-lookback} and the initial theta_0 (what the "A Walk with SGD"
    metrics and the changes since initialization need). The recorder observes the
    steps s - lookback, ..., s as well as the save steps (``needed_steps``), keeps
    copies of those iterates until the save step, and records

        of_iterates(recent, theta0, model, data) -> (T, *extra),

    recent = (theta_s, theta_{s-1}, ..., theta_{s-lookback}) (recent[l] = theta_{s-l}).
    A save step s < lookback has no earlier iterates: it reads NaN (or -1 for counts).

    Subclasses are frozen dataclasses registered in ``METRICS`` with a ``lookback``
    class attribute and ``of_iterates``.
    """

    lookback: int = 0

    def needed_steps(self, save_steps: np.ndarray) -> np.ndarray:
        """Sorted unique steps s - l (l = 0..lookback, >= 0) over the save steps s."""
        save = np.asarray(save_steps, dtype=np.int64)
        return multiples_in(1, save - self.lookback, save)

    def of_iterates(
        self, recent: tuple[np.ndarray, ...], theta0: np.ndarray, model: Any, data: Any
    ) -> Any:
        """The values (T, *extra) from recent[l] = theta_{s-l} (T, p) and theta_0."""
        raise NotImplementedError

    def evaluate_iterates(
        self, recent: tuple[np.ndarray, ...], theta0: np.ndarray, model: Any, data: Any
    ) -> np.ndarray:
        """``of_iterates`` checked: (T, *extra) of the metric's dtype (else ValueError)."""
        values = self.of_iterates(recent, theta0, model, data)
        return checked_values(self, values, theta0.shape[0])

    def to_config(self) -> dict[str, Any]:
        return to_config(self)
