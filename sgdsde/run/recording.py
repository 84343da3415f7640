"""The recorder: evaluates metric objects on the state while a simulation runs (exact SGD
or SDE), as diffrax's ``SaveAt(fn=...)``.

The driver calls ``recorder.observe(k, theta_k, diverged_step)`` at every step k of
``recorder.steps``, in order: step 0, the save steps, and the steps that time averages
sample and first passages evaluate. At each observed step the recorder

1. detects divergence: a trajectory whose training loss is non-finite or above
   ``max_loss`` (without data, a free SDE: whose ||theta|| is non-finite or above
   ``max_norm``) gets ``diverged_step[t] = k`` (if still -1);
2. at a save step, writes one row of every recorded metric;
3. adds samples to time averages and checks first passages;
4. keeps copies of the iterates an ``IterateMetric`` needs (theta_0 and the steps
   s - lookback, ..., s before each save step s) until it records them.

From a trajectory's diverged step on, its recorded values are not recorded: NaN for
float metrics, ``NOT_RECORDED`` (-1) for integer counts such as ``l0_norm`` (their
``not_recorded`` attr says so; ``masked`` turns them into floats with NaN). A
divergence exactly on a save step reads as not recorded there.

Test subsample (``test_subsample = m``): the test loss is the costliest default metric
(T x n_test x d per save point: at the headline phase diagram's 200 save points, 1000
test examples, it was ~40 % of a block's recording). With m set, the ``test_loss`` rows
before the last save step are the loss on a fixed subset of m test examples (drawn
without replacement by ``numpy.random.default_rng(test_subsample_seed)``, the same for
every trajectory and run), and the last row is on the whole test set, so the final test
loss keeps its bits. The variable's attrs say so (``test_subsample``, ...).

Memory: the values at save steps, T x S x (metric size) per metric, whatever the
number of sampled steps (a time average accumulates into its own output rows).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.metrics.base import Metric, Recordable, as_recordable, describe_fn, one_observation
from sgdsde.metrics.builtin import (
    L0Norm,
    L1Norm,
    ParamNorm,
    Params,
    TestLoss,
    TrainLoss,
    mean_squared_residual,
)
from sgdsde.metrics.temporal import FirstPassage, IterateMetric, TimeAverage

#: What an integer metric (a count) holds where it is not recorded (after divergence).
NOT_RECORDED = -1

#: Names the run dataset uses itself (dims and the driver's variables and coords).
RESERVED_NAMES = frozenset(
    {"traj", "step", "time", "run", "diverged", "diverged_step", "lr", "batch_size"}
    | {"label_noise", "dt", "noise_label", "noise_sgd", "noise_iso"}
)

Evaluate = Callable[[Metric], np.ndarray]


def default_metrics(
    l0_threshold: float, save_params: bool, with_data: bool = True
) -> list[Recordable]:
    """What every run records: train_loss, test_loss, l0_norm, l1_norm, param_norm
    (and params when ``save_params``); without data (a free SDE) param_norm only."""
    out: list[Recordable] = [ParamNorm()]
    if with_data:
        out = [TrainLoss(), TestLoss(), L0Norm(l0_threshold), L1Norm(), *out]
    return [*out, Params()] if save_params else out


def masked(values: xr.DataArray) -> xr.DataArray:
    """A recorded variable as float64 with NaN where not recorded (integer counts hold
    ``NOT_RECORDED`` there); float variables are returned as they are."""
    if values.dtype.kind != "i":
        return values
    return values.where(values != NOT_RECORDED).astype(np.float64)


def describe(metric: Recordable) -> Any:
    """A metric for the run's config: its config, or name and function for a
    ``Metric`` built from a Python function."""
    if type(metric) is Metric:
        return {"name": metric.name, "function": describe_fn(metric.fn)}
    return metric.to_config()


class Recorder:
    """Records metric objects of T trajectories on a save grid.

    model, data: the problem (metrics are functions of theta, the model and the data);
        both None for a free SDE (no loss: the defaults are param_norm and params).
    save_steps: sorted unique int steps at which rows are recorded.
    n_traj: T.
    metrics: extra metric objects (``Metric``, ``TimeAverage``, ``FirstPassage``, or a
        registered name, a config dict, a ``(name, fn)`` pair), recorded after the
        defaults (``default_metrics``); names must be distinct.
    l0_threshold: the threshold of the default ``l0_norm``.
    max_loss: a trajectory whose training loss is non-finite or above it diverges.
    max_norm: without data, a trajectory whose ||theta||_2 is non-finite or above it
        diverges.
    save_params: also record ``params`` (T x S x p numbers).
    test_subsample: None (the whole test set at every save step) or m >= 1: the test
        loss before the last save step on a fixed subset of m test examples (module
        docstring); m >= n_test is the whole set.
    test_subsample_seed: the seed of that subset.

    ``steps``: every step the driver must ``observe``, sorted unique int64.
    """

    def __init__(
        self,
        model: Any,
        data: Any,
        save_steps: Any,
        n_traj: int,
        *,
        metrics: Iterable[Any] = (),
        l0_threshold: float,
        max_loss: float,
        max_norm: float = math.inf,
        save_params: bool,
        test_subsample: int | None = None,
        test_subsample_seed: int = 0,
    ):
        self.model, self.data = model, data
        self.save_steps = np.asarray(save_steps, dtype=np.int64)
        self.n_traj = int(n_traj)
        self.max_loss = float(max_loss)
        # what must stay finite and bounded: the training loss, or without data the norm
        self._bounded = (
            (TrainLoss(), self.max_loss) if data is not None else (ParamNorm(), float(max_norm))
        )
        recorded = default_metrics(l0_threshold, save_params, with_data=data is not None)
        self._n_default = len(recorded)
        recorded += [as_recordable(m) for m in _as_list(metrics)]
        _check_names(recorded)
        for metric in recorded:
            metric.check(model, data)
        self.metrics = recorded
        self._channels = [_channel(m, self.save_steps, self.n_traj, model, data) for m in recorded]
        subset = test_subset(data, test_subsample, test_subsample_seed)
        if subset is not None:
            self._channels = [
                TestSubsampleChannel(c.metric, self.save_steps, self.n_traj, model, subset)
                if type(c.metric) is TestLoss
                else c
                for c in self._channels
            ]
        steps = [np.zeros(1, np.int64), self.save_steps]
        steps += [c.steps for c in self._channels if c.steps is not None]
        self.steps = np.unique(np.concatenate(steps))
        self.steps.flags.writeable = False
        self._next = 0  # index in steps of the next step to observe
        self._diverged_step: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held for recorded values (the save rows, the first-passage steps and the
        time averages' sample counts; not ``steps``)."""
        return sum(c.nbytes for c in self._channels)

    def observe(self, k: int, theta: np.ndarray, diverged_step: np.ndarray) -> None:
        """See the state theta_k (T, p) at step k (the next of ``steps``); update
        ``diverged_step`` (T,) in place and record."""
        if self._next >= len(self.steps) or k != self.steps[self._next]:
            expected = self.steps[self._next] if self._next < len(self.steps) else "none"
            raise ValueError(
                f"observe got step {k} but the next step in recorder.steps is {expected}: "
                "the driver must observe every step of recorder.steps, in order"
            )
        self._next += 1
        self._diverged_step = diverged_step
        cache: dict[Metric, np.ndarray] = {}

        def evaluate(metric: Metric) -> np.ndarray:
            if metric not in cache:
                # diverged trajectories may overflow: their values are not recorded
                with np.errstate(over="ignore", invalid="ignore"):
                    cache[metric] = metric.evaluate(theta, self.model, self.data)
            return cache[metric]

        with one_observation():
            metric, bound = self._bounded
            newly = (diverged_step < 0) & ~(evaluate(metric) <= bound)
            diverged_step[newly] = k
            alive = (diverged_step < 0) | (diverged_step > k)
            j = int(np.searchsorted(self.save_steps, k))
            save_row = j if j < len(self.save_steps) and self.save_steps[j] == k else None
            for channel in self._channels:
                channel.observe(k, save_row, alive, evaluate, theta)

    def variables(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """name -> (dims, values) of every recorded metric.

        Values from each trajectory's diverged step on (``diverged_step`` as of the last
        ``observe``) read as not recorded, also where a simulator flagged the divergence
        after the recorder saw that step (e.g. from a sampled residual)."""
        if self._diverged_step is not None:
            for channel in self._channels:
                channel.mask_diverged(self._diverged_step)
        return {c.metric.name: c.variable() for c in self._channels}

    def variable_attrs(self) -> dict[str, dict[str, Any]]:
        """name -> attrs (long_name, units, the metric's settings; ``not_recorded`` for
        integer variables)."""
        out = {}
        for channel in self._channels:
            attrs = channel.metric.attrs(self.model)
            if np.dtype(channel.metric.dtype).kind == "i" and not isinstance(
                channel.metric, FirstPassage
            ):
                attrs["not_recorded"] = NOT_RECORDED
            if isinstance(channel, TestSubsampleChannel):
                attrs |= channel.subset.attrs()
            out[channel.metric.name] = attrs
        return out

    def config(self) -> list[Any]:
        """The extra metrics (beyond the defaults) as config entries."""
        return [describe(m) for m in self.metrics[self._n_default :]]


def test_subset(data: Any, size: Any, seed: Any) -> TestSubset | None:
    """The fixed test subset of ``size`` examples (module docstring), None for the whole
    set (size None, or >= n_test); a ValueError for a size that is not an integer >= 1."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(
            f"test_subsample must be None (the whole test set) or an integer >= 1 (got "
            f"{size!r}): the number of test examples of the intermediate test losses"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"test_subsample_seed must be an integer >= 0 (got {seed!r})")
    n_test = 0 if data is None else data.X_test.shape[0]
    if size >= n_test:
        return None
    rows = np.sort(np.random.default_rng(seed).choice(n_test, int(size), replace=False))
    return TestSubset(data.X_test[rows], data.y_test[rows], int(size), n_test, int(seed))


@dataclasses.dataclass(frozen=True)
class TestSubset:
    """The test examples of the intermediate test losses."""

    __test__ = False  # not a pytest class
    X: np.ndarray
    y: np.ndarray
    size: int
    n_test: int
    seed: int

    def attrs(self) -> dict[str, Any]:
        return {
            "test_subsample": self.size,
            "test_subsample_seed": self.seed,
            "test_subsample_note": (
                f"before the last save step: the loss on {self.size} of the {self.n_test} "
                "test examples (numpy default_rng(test_subsample_seed).choice without "
                "replacement); at the last save step: on all of them"
            ),
        }


def _as_list(metrics: Any) -> list[Any]:
    """One metric (an object, a name, a config dict, a (name, fn) pair) or a sequence."""
    pair = isinstance(metrics, tuple) and len(metrics) == 2 and isinstance(metrics[0], str)
    if pair and callable(metrics[1]):
        return [metrics]
    if isinstance(metrics, Recordable | str | Mapping):
        return [metrics]
    if not isinstance(metrics, Iterable):
        raise ValueError(f"metrics must be a sequence of metric objects (got {metrics!r})")
    return list(metrics)


def _check_names(metrics: list[Recordable]) -> None:
    seen: set[str] = set()
    for metric in metrics:
        if metric.name in seen:
            raise ValueError(
                f"metric {metric.name!r} is recorded twice (the defaults are train_loss, "
                "test_loss, l0_norm, l1_norm, param_norm; params with save_params=True; "
                "set l0_threshold instead of passing l0_norm): give distinct names (save_as=)"
            )
        clash = ({metric.name} | set(metric.dims)) & RESERVED_NAMES
        if clash:
            raise ValueError(
                f"metric {metric.name!r} uses the name(s) {sorted(clash)} of the run's own "
                "dims or variables: rename it"
            )
        seen.add(metric.name)


def _channel(metric: Recordable, save: np.ndarray, n_traj: int, model: Any, data: Any) -> Any:
    if isinstance(metric, TimeAverage):
        return TimeAverageChannel(metric, save, n_traj)
    if isinstance(metric, FirstPassage):
        return FirstPassageChannel(metric, save, n_traj)
    if isinstance(metric, IterateMetric):
        return IterateChannel(metric, save, n_traj, model, data)
    if isinstance(metric, Metric):
        return SaveChannel(metric, save, n_traj)
    raise ValueError(
        f"cannot record {metric!r}: not a Metric, TimeAverage, FirstPassage or IterateMetric"
    )


def _fill(dtype: Any) -> Any:
    return NOT_RECORDED if np.dtype(dtype).kind == "i" else np.nan


class SaveChannel:
    """A metric's values at the save steps: (T, S, *extra)."""

    def __init__(self, metric: Metric, save: np.ndarray, n_traj: int):
        self.metric, self.save, self.n_traj = metric, save, n_traj
        self.steps = None  # the save steps only
        self.values: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return 0 if self.values is None else self.values.nbytes

    def buffer(self, extra: tuple[int, ...], dtype: Any, fill: Any) -> np.ndarray:
        """The (T, S, *extra) output, allocated at the first value (its size is known then)."""
        if self.values is None:
            self.values = np.full((self.n_traj, len(self.save), *extra), fill, dtype=dtype)
        elif self.values.shape[2:] != extra:
            raise ValueError(
                f"metric {self.metric.name!r} returned extra shape {extra} after "
                f"{self.values.shape[2:]}: its size must not change during a run"
            )
        return self.values

    def observe(
        self, k: int, row: int | None, alive: np.ndarray, evaluate: Evaluate, theta: np.ndarray
    ) -> None:
        if row is None:
            return
        value = evaluate(self.metric)
        out = self.buffer(value.shape[1:], self.metric.dtype, _fill(self.metric.dtype))
        mask = alive.reshape(-1, *([1] * (value.ndim - 1)))
        out[:, row] = np.where(mask, value, _fill(self.metric.dtype))

    def mask_diverged(self, diverged_step: np.ndarray) -> None:
        """Mark the rows at and after each trajectory's diverged step not recorded."""
        if self.values is not None:
            d = diverged_step[:, None]
            dead = (d >= 0) & (self.save[None, :] >= d)
            self.values[dead] = _fill(self.values.dtype)

    def variable(self) -> tuple[tuple[str, ...], np.ndarray]:
        if self.values is None:
            raise ValueError(f"metric {self.metric.name!r}: nothing recorded yet")
        return (("traj", "step", *self.metric.dims), self.values)


class TimeAverageChannel(SaveChannel):
    """Sums of samples into the rows of the save points whose window holds them; a row
    is divided by its sample count (and masked) at its save step."""

    def __init__(self, average: TimeAverage, save: np.ndarray, n_traj: int):
        super().__init__(average, save, n_traj)
        self.average = average
        self.steps = average.sample_steps(save)
        self.counts = average.sample_counts(save)

    @property
    def nbytes(self) -> int:
        return super().nbytes + self.counts.nbytes

    def observe(
        self, k: int, row: int | None, alive: np.ndarray, evaluate: Evaluate, theta: np.ndarray
    ) -> None:
        rows = self.average.windows_containing(k, self.save)
        if k % self.average.every == 0 and rows.start < rows.stop:
            value = evaluate(self.average.metric)
            out = self.buffer(value.shape[1:], np.float64, 0.0)
            with np.errstate(over="ignore", invalid="ignore"):
                out[:, rows] += value[:, None]
        if row is not None:
            out = self.values
            mask = alive.reshape(-1, *([1] * (out.ndim - 2)))
            with np.errstate(over="ignore", invalid="ignore"):
                out[:, row] = np.where(mask, out[:, row] / self.counts[row], np.nan)


class IterateChannel(SaveChannel):
    """An ``IterateMetric`` at the save steps: copies of theta_0 and of the iterates
    s - lookback..s are held (at most lookback + 2 arrays (T, p)) until step s records."""

    def __init__(self, metric: IterateMetric, save: np.ndarray, n_traj: int, model, data):
        super().__init__(metric, save, n_traj)
        self.model, self.data = model, data
        self.steps = metric.needed_steps(save)
        self.theta0: np.ndarray | None = None
        self.recent: dict[int, np.ndarray] = {}

    def observe(
        self, k: int, row: int | None, alive: np.ndarray, evaluate: Evaluate, theta: np.ndarray
    ) -> None:
        if k == 0:
            self.theta0 = np.array(theta, dtype=np.float64)
        lookback = self.metric.lookback
        j = int(np.searchsorted(self.save, k))
        if j < len(self.save) and self.save[j] - lookback <= k:
            self.recent[k] = np.array(theta, dtype=np.float64)
        if row is None:
            return
        recent = tuple(self.recent.get(k - lag) for lag in range(lookback + 1))
        fill = _fill(self.metric.dtype)
        if any(r is None for r in recent):  # a save step s < lookback
            value = None
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                value = self.metric.evaluate_iterates(recent, self.theta0, self.model, self.data)
        self.recent = {step: r for step, r in self.recent.items() if step > k - lookback}
        if value is None:  # the row keeps its fill (the buffer starts filled)
            return
        out = self.buffer(value.shape[1:], self.metric.dtype, fill)
        mask = alive.reshape(-1, *([1] * (value.ndim - 1)))
        out[:, row] = np.where(mask, value, fill)

    def variable(self) -> tuple[tuple[str, ...], np.ndarray]:
        if self.values is None and not self.metric.dims:  # no save step s >= lookback
            self.buffer((), self.metric.dtype, _fill(self.metric.dtype))
        return super().variable()


class TestSubsampleChannel(SaveChannel):
    """The test loss on a ``TestSubset`` at every save step but the last, where it is on
    the whole test set (through the shared per-step ``evaluate``)."""

    def __init__(self, metric: TestLoss, save: np.ndarray, n_traj: int, model, subset):
        super().__init__(metric, save, n_traj)
        self.model, self.subset = model, subset

    def observe(
        self, k: int, row: int | None, alive: np.ndarray, evaluate: Evaluate, theta: np.ndarray
    ) -> None:
        if row is None or row == len(self.save) - 1:
            super().observe(k, row, alive, evaluate, theta)
            return
        with np.errstate(over="ignore", invalid="ignore"):
            value = mean_squared_residual(theta, self.model, self.subset.X, self.subset.y)
        out = self.buffer((), self.metric.dtype, np.nan)
        out[:, row] = np.where(alive, value, np.nan)


class FirstPassageChannel:
    """The first evaluated step at which a metric reaches a level, (T,) int64, -1 never."""

    def __init__(self, passage: FirstPassage, save: np.ndarray, n_traj: int):
        self.metric, self.passage, self.save = passage, passage, save
        self.steps = passage.due_steps(save)
        self.first = np.full(n_traj, NOT_RECORDED, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return self.first.nbytes

    def observe(
        self, k: int, row: int | None, alive: np.ndarray, evaluate: Evaluate, theta: np.ndarray
    ) -> None:
        if not self.passage.is_due(k, self.save):
            return
        hit = alive & (self.first < 0)
        if hit.any():
            hit &= self.passage.reached(evaluate(self.passage.metric))
            self.first[hit] = k

    def mask_diverged(self, diverged_step: np.ndarray) -> None:
        """Forget passages at or after a trajectory's diverged step."""
        self.first[(diverged_step >= 0) & (self.first >= diverged_step)] = NOT_RECORDED

    def variable(self) -> tuple[tuple[str, ...], np.ndarray]:
        return (("traj",), self.first)
