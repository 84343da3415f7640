"""Metric objects: what a run records, as diffrax's ``SaveAt(fn=...)``.

A ``Metric`` is a named function of the state of T trajectories,

    fn(theta (T, p), model, data) -> (T,) or (T, k_1, ..., k_m),

with a ``long_name``, ``units``, the names of its extra dims (``dims``, one per k_i)
and an output dtype (float64, or int64 for counts). Built-in metrics
(``sgdsde.metrics.builtin``) are ``Metric`` subclasses registered in ``METRICS`` under
their ``name``, so configs name them (``{name = "l0_norm", threshold = 1e-3}``); a
user's own metric is ``Metric("xtr", fn=lambda theta, model, data: ...)``.
``TimeAverage`` and ``FirstPassage`` (``sgdsde.metrics.temporal``) record a metric
over time; they are ``Recordable`` too.

Naming: for a registered class the class attribute ``name`` is its registry key; an
instance's ``name`` is the dataset variable it records (the same string for the
built-ins; ``TimeAverage`` and ``FirstPassage`` derive theirs from the metric they
follow, or take ``save_as``).
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from sgdsde.registry import Registry

#: name -> class of every metric that configs can name (built-ins, ``time_average``,
#: ``first_passage``); ``METRICS.from_config(m.to_config()) == m``.
METRICS: Registry[Recordable] = Registry("metric")

MetricFn = Callable[[np.ndarray, Any, Any], Any]


#: Set by ``one_observation``: values shared by the metrics of one recorder step.
_OBSERVATION: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "sgdsde_observation", default=None
)


@contextlib.contextmanager
def one_observation() -> Iterator[None]:
    """The recorder evaluates all metrics of one step inside one: within it, ``shared``
    computes a value once for all of them (beta, the loss on an iterate segment)."""
    token = _OBSERVATION.set({})
    try:
        yield
    finally:
        _OBSERVATION.reset(token)


def shared(name: str, args: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``; inside ``one_observation``, computed once for ``name`` and the very
    same ``args`` objects (identity), then returned to every metric that asks."""
    memo = _OBSERVATION.get()
    if memo is None:
        return compute()
    hit = memo.get(name)
    same = hit is not None and len(hit[0]) == len(args)
    if same and all(a is b for a, b in zip(hit[0], args, strict=True)):
        return hit[1]
    value = compute()
    memo[name] = (args, value)
    return value


class Recordable(abc.ABC):
    """Anything a ``sgdsde.run.recording.Recorder`` records under a variable name.

    Attributes: ``name`` (the variable), ``long_name``, ``units``, ``dims`` (names of
    the extra dims after (traj, step)) and ``dtype`` (float64, or int64 for counts).
    """

    name: str
    long_name: str = ""
    units: str = "1"
    dims: tuple[str, ...] = ()
    dtype: type = np.float64

    def check(self, model: Any, data: Any) -> None:  # noqa: B027 (optional hook)
        """Raise ValueError if the metric cannot be recorded for this model and data
        (called by the recorder before the run starts)."""

    def settings(self) -> dict[str, Any]:
        """The metric's own options written into the variable's attrs (e.g. the l0
        threshold): by default its config without the registry name."""
        cfg = self.to_config()
        cfg.pop("name", None)
        return {k: v for k, v in cfg.items() if isinstance(v, str | int | float)}

    def attrs(self, model: Any) -> dict[str, Any]:
        """Variable attrs: long_name, units and ``settings()``."""
        return {"long_name": self.long_name or self.name, "units": self.units, **self.settings()}

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """``{"name": <registry key>, <option>: <value>, ...}`` (see ``sgdsde.registry``)."""


class Metric(Recordable):
    """A named function of the state: ``fn(theta (T, p), model, data) -> (T, *extra)``.

    name: the dataset variable (an identifier, not a registered metric's name).
    fn: the function; it sees every trajectory, diverged ones included (their values
        are replaced by NaN, or -1 for integer metrics, when recorded).
    long_name, units: the variable's attrs (long_name defaults to "name = fn(...)").
    dims: names of the extra dims, one per axis after the trajectory axis, e.g.
        ``("feature",)`` for a (T, d) vector.
    dtype: np.float64, or np.int64 for a count (non-negative integers).

    Subclasses (the built-ins) override ``__call__`` instead of passing ``fn``.
    """

    def __init__(
        self,
        name: str,
        fn: MetricFn,
        *,
        long_name: str | None = None,
        units: str = "1",
        dims: Sequence[str] = (),
        dtype: Any = np.float64,
    ):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"metric name must be an identifier (got {name!r})")
        if name in METRICS:
            raise ValueError(
                f"metric name {name!r} is a built-in metric's: record the built-in "
                f"(METRICS.make({name!r})) or choose another name"
            )
        if not callable(fn):
            raise ValueError(f"metric {name!r}: fn must be callable (got {fn!r})")
        self.name = name
        self.fn = fn
        self.long_name = f"{name} = {describe_fn(fn)}" if long_name is None else str(long_name)
        self.units = str(units)
        self.dims = check_dims(name, dims)
        self.dtype = check_dtype(name, dtype)

    def __call__(self, theta: np.ndarray, model: Any, data: Any) -> Any:
        return self.fn(theta, model, data)

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, {describe_fn(self.fn)})"

    def to_config(self) -> dict[str, Any]:
        raise ValueError(
            f"metric {self.name!r} is a Python function and has no config: to name a "
            "metric in configs, write a Metric subclass and register it with "
            "sgdsde.metrics.METRICS.register"
        )

    def settings(self) -> dict[str, Any]:
        # a function has no options; subclasses (registered) have their config
        return {} if type(self) is Metric else super().settings()

    def evaluate(self, theta: np.ndarray, model: Any, data: Any) -> np.ndarray:
        """The metric's values for theta (T, p) as an array (T, *extra) of its dtype;
        ValueError if the function returns another shape or a non-integer count."""
        return checked_values(self, self(theta, model, data), theta.shape[0])


def checked_values(metric: Recordable, values: Any, n_traj: int) -> np.ndarray:
    """A metric's values as an array (n_traj, *extra) of its dtype; ValueError if they
    have another shape, or are not integers for a count."""
    values = np.asarray(values)
    T = n_traj
    if values.ndim != 1 + len(metric.dims) or values.shape[:1] != (T,):
        want = f"({T},)" if not metric.dims else f"({T}, <one size per dim of {metric.dims}>)"
        raise ValueError(
            f"metric {metric.name!r} returned shape {values.shape} for {T} trajectories: "
            f"it must return {want}; declare extra axes with dims=(...)"
        )
    if np.dtype(metric.dtype).kind == "i":
        if values.dtype.kind not in "iub":
            raise ValueError(
                f"metric {metric.name!r} is a count (dtype int64) but returned "
                f"{values.dtype} values: return integers or use dtype=np.float64"
            )
        return values.astype(np.int64, copy=False)
    return values.astype(np.float64, copy=False)


def describe_fn(fn: Any, args: str = "theta, model, data") -> str:
    """A function's qualified name with its arguments ``args`` (a metric's by default),
    for long_names and configs."""
    return f"{getattr(fn, '__qualname__', type(fn).__name__)}({args})"


def check_dims(name: str, dims: Any) -> tuple[str, ...]:
    """``dims`` of metric ``name`` as a tuple of distinct identifiers (else ValueError)."""
    if isinstance(dims, str) or not isinstance(dims, Sequence):
        raise ValueError(f"metric {name!r}: dims must be a tuple of dim names (got {dims!r})")
    dims = tuple(dims)
    if not all(isinstance(d, str) and d.isidentifier() for d in dims) or len(set(dims)) < len(dims):
        raise ValueError(f"metric {name!r}: dims must be distinct identifiers (got {dims!r})")
    return dims


def check_dtype(name: str, dtype: Any) -> type:
    """np.float64 or np.int64 for the float or integer ``dtype`` of metric ``name``."""
    kind = np.dtype(dtype).kind
    if kind not in "fi":
        raise ValueError(
            f"metric {name!r}: dtype must be np.float64 or np.int64 (a count), got {dtype!r}"
        )
    return np.float64 if kind == "f" else np.int64


def as_recordable(obj: Any) -> Recordable:
    """A metric object from what a user or a config gives: a ``Recordable``, a registered
    name (``"beta"``), a config dict (``{"name": "l0_norm", "threshold": 1e-3}``) or a
    ``(name, fn)`` pair (``Metric(name, fn)``)."""
    if isinstance(obj, Recordable):
        return obj
    if isinstance(obj, str):
        return METRICS.make(obj)
    if isinstance(obj, Mapping):
        return METRICS.from_config(obj)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str):
        return Metric(obj[0], obj[1])
    raise ValueError(
        "a metric must be a Metric object, a registered metric name "
        f"({sorted(METRICS)}), its config dict or a (name, fn) pair (got {obj!r})"
    )


def as_metric(obj: Any) -> Metric:
    """``as_recordable`` restricted to functions of the state (what TimeAverage and
    FirstPassage follow)."""
    metric = as_recordable(obj)
    if not isinstance(metric, Metric):
        raise ValueError(
            f"{metric.name!r} is not a function of the state (a Metric): time averages "
            "and first passages follow a Metric, not another time average or first passage"
        )
    return metric


#: Which inputs a metric of the data evaluates the model on (a config value).
INPUT_SETS = ("train", "test")


def check_inputs_option(owner: str, inputs: Any, max_examples: Any) -> None:
    """ValueError unless ``inputs`` is "train" or "test" and ``max_examples`` is None or
    an integer >= 1 (the options of metrics evaluated on a data set)."""
    if inputs not in INPUT_SETS:
        raise ValueError(
            f"{owner}: inputs must be one of {list(INPUT_SETS)} (the training or the test "
            f"inputs), got {inputs!r}"
        )
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise ValueError(
            f"{owner}: max_examples must be None (all) or an integer >= 1, got {max_examples!r}"
        )


def select_inputs(data: Any, inputs: str, max_examples: int | None) -> np.ndarray:
    """The first ``max_examples`` rows (all if None) of ``data.X`` ("train") or
    ``data.X_test`` ("test")."""
    X = data.X if inputs == "train" else data.X_test
    return X if max_examples is None else X[:max_examples]
