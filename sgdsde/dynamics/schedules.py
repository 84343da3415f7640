"""Step-size schedules eta_k for SGD and for the time change of its SDE model.

Convention: step ``k = 0 .. N-1`` is the update ``theta_k -> theta_{k+1}`` and ``N = n_steps`` is
the total number of updates. A :class:`Schedule` maps an integer array of steps to the step sizes
``eta_k`` (float64), vectorized, so a whole run is ``schedule.values(n_steps)``.

The schedules reproduce those of "SGD with Large Step Sizes Learns Sparse Features"
(Andriushchenko, Varre, Pillaud-Vivien, Flammarion, ICML 2023; code at
github.com/tml-epfl/sgd-sparse-features):

* ``fc_nets.train_fc_net`` (diagonal / two-layer / multi-layer / 1-D regression notebooks): a
  warm-up ``gamma * (1 + (f - 1) * (i / N)**p)`` applied while ``i <= int(until * N)`` and a
  division by ``decay`` at the threshold, which gives :class:`LinearWarmup`,
  :class:`PowerWarmup` and, for the DLN runs, :class:`StepDecay`;
* ``deep_nets/utils_train.get_lr_schedule``: ``piecewise_05epochs`` / ``03`` / ``01``, which give
  :class:`PiecewiseEpochs`.

Every schedule is a small frozen dataclass; ``to_config`` / :func:`schedule_from_config` turn it
into a JSON-ready dict and back, and :func:`make_schedule` builds one by registry name
(:data:`SCHEDULES`, a :class:`sgdsde.registry.Registry`). Steps and time follow
docs/conventions.md ("Time").
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
import operator
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sgdsde.registry import Registry, to_config
from sgdsde.run.checks import check_options

__all__ = [
    "SCHEDULES",
    "Constant",
    "ExponentialWarmup",
    "LinearWarmup",
    "Piecewise",
    "PiecewiseEpochs",
    "PowerWarmup",
    "Schedule",
    "StepDecay",
    "Warmup",
    "as_schedule",
    "cumulative_time",
    "make_schedule",
    "schedule_from_config",
]


# --------------------------------------------------------------------------- validation helpers


def _as_float(field: str, value: Any) -> float:
    # bool is an int subclass; True as a step size is far more likely a bug than intent.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field} must be a real number (got {value!r}): pass a float")
    return float(value)


def _as_float_tuple(field: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__iter__"):
        raise ValueError(f"{field} must be a sequence of floats (got {value!r}): pass a tuple")
    return tuple(_as_float(f"{field}[{i}]", v) for i, v in enumerate(value))


def _check_positive(field: str, value: float, fix: str) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{field} must be finite (got {value!r}): {fix}")
    if value <= 0:
        raise ValueError(f"{field} must be > 0 (got {value!r}): {fix}")


def _check_fraction(field: str, value: float, fix: str, hi: float = 1.0) -> None:
    if not (0.0 < value < hi):
        raise ValueError(f"{field} must be in (0, {hi:g}) (got {value!r}): {fix}")


def _check_lr(lr: float) -> None:
    _check_positive("lr", lr, "pass a positive step size")


def _as_n_steps(n_steps: Any) -> int:
    if isinstance(n_steps, bool):
        raise ValueError(f"n_steps must be an integer >= 1 (got {n_steps!r})")
    try:
        n = operator.index(n_steps)
    except TypeError:
        raise ValueError(
            f"n_steps must be an integer >= 1 (got {n_steps!r}): pass the number of SGD updates"
        ) from None
    if n < 1:
        raise ValueError(f"n_steps must be >= 1 (got {n}): pass the number of SGD updates")
    return n


def _as_steps(step: Any, n_steps: int) -> np.ndarray:
    k = np.asarray(step)
    if k.size == 0:
        # np.asarray([]) is float64; an empty request is still a valid (empty) set of steps.
        return np.zeros(k.shape, dtype=np.int64)
    if k.dtype == np.bool_ or not np.issubdtype(k.dtype, np.integer):
        raise ValueError(
            f"step must be an integer array (got dtype {k.dtype}): pass step indices 0..n_steps-1"
        )
    if k.min() < 0 or k.max() > n_steps - 1:
        raise ValueError(
            f"step must lie in [0, {n_steps - 1}] for n_steps={n_steps} "
            f"(got min {k.min()}, max {k.max()}): step k is the update theta_k -> theta_(k+1)"
        )
    return k.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- base class


@dataclasses.dataclass(frozen=True)
class Schedule(abc.ABC):
    """A step-size schedule ``eta_k`` for steps ``k = 0 .. n_steps-1``.

    Subclasses set ``name`` (the registry key), declare float / tuple fields, implement
    ``_eta(k, n_steps)`` on a validated int64 array and ``change_points``, and extend
    ``validate``.
    """

    name: ClassVar[str] = ""
    # Fields stored as tuples of floats; all other fields are coerced to float.
    _tuple_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        # Coercing here lets configs written by JSON (lists, ints) compare equal to and hash like
        # schedules built in code, so a config round-trip is exact.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._tuple_fields:
                coerced: Any = _as_float_tuple(f.name, value)
            else:
                coerced = _as_float(f.name, value)
            object.__setattr__(self, f.name, coerced)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field if the parameters are invalid."""
        _check_lr(self.lr)  # type: ignore[attr-defined]

    @abc.abstractmethod
    def _eta(self, k: np.ndarray, n_steps: int) -> np.ndarray:
        """Step sizes for validated int64 steps ``k`` (any shape)."""

    @abc.abstractmethod
    def _phase_starts(self, n_steps: int) -> list[int]:
        """First step of every phase after the first (may include 0 or n_steps)."""

    def change_points(self, n_steps: int) -> list[int]:
        """Steps ``k`` in ``1 .. n_steps - 1`` at which a new phase of the schedule begins
        (a decay divides the step size, a warm-up ends), increasing: ``eta_k`` is the first
        step size of the new phase. Used e.g. for plot markers."""
        n = _as_n_steps(n_steps)
        return sorted({int(k) for k in self._phase_starts(n) if 0 < k < n})

    def __call__(self, step: Any, n_steps: int) -> np.ndarray:
        """Return ``eta_k`` (float64, same shape as ``step``) for a run of ``n_steps`` updates.

        Raises ``ValueError`` if ``n_steps < 1`` or any step is outside ``[0, n_steps - 1]``.
        """
        n = _as_n_steps(n_steps)
        k = _as_steps(step, n)
        return np.asarray(self._eta(k, n), dtype=np.float64)

    def values(self, n_steps: int) -> np.ndarray:
        """Step sizes of the whole run, ``eta_0 .. eta_{n_steps-1}``."""
        n = _as_n_steps(n_steps)
        return self(np.arange(n, dtype=np.int64), n)

    def peak(self, n_steps: int) -> float:
        """Largest step size over the run, ``max_k eta_k``."""
        return float(self.values(n_steps).max())

    def to_config(self) -> dict[str, Any]:
        """JSON-serializable dict: ``{"name": <registry name>, <field>: <value>, ...}``."""
        return to_config(self)


# --------------------------------------------------------------------------- schedules


@dataclasses.dataclass(frozen=True)
class Constant(Schedule):
    """``eta_k = lr``: plain SGD with a fixed step size."""

    name: ClassVar[str] = "constant"
    lr: float

    def _eta(self, k: np.ndarray, n_steps: int) -> np.ndarray:
        return np.full(k.shape, self.lr)

    def _phase_starts(self, n_steps: int) -> list[int]:
        return []


@dataclasses.dataclass(frozen=True)
class StepDecay(Schedule):
    """Piecewise-constant decay: ``eta_k = lr / prod_{j : k >= K_j} factors[j]``.

    ``K_j = int(at[j] * n_steps)`` (truncation, as ``int(...)`` in the paper's code, so float
    rounding of ``at[j] * n_steps`` can move a threshold down by one step). The divisions are
    cumulative: after the second threshold the step size is ``lr / (factors[0] * factors[1])``.

    This is the ``thresholds`` / ``decays`` mechanism of ``fc_nets.train_fc_net`` in
    Andriushchenko et al., "SGD with Large Step Sizes Learns Sparse Features" (ICML 2023,
    tml-epfl/sgd-sparse-features); its diagonal-linear-network runs use e.g.
    ``StepDecay(lr=0.282, at=(0.1,), factors=(4.8,))``.
    """

    name: ClassVar[str] = "step_decay"
    _tuple_fields: ClassVar[tuple[str, ...]] = ("at", "factors")
    lr: float
    at: tuple[float, ...]
    factors: tuple[float, ...]

    def validate(self) -> None:
        super().validate()
        if len(self.at) != len(self.factors):
            raise ValueError(
                f"at and factors must have the same length (got {len(self.at)} and "
                f"{len(self.factors)}): give one decay factor per threshold"
            )
        for j, a in enumerate(self.at):
            _check_fraction(f"at[{j}]", a, "give thresholds as fractions of the run length")
        for j, f in enumerate(self.factors):
            _check_positive(f"factors[{j}]", f, "pass a positive divisor (10.0 divides by 10)")
        if any(b <= a for a, b in zip(self.at, self.at[1:], strict=False)):
            raise ValueError(
                f"at must be strictly increasing (got {list(self.at)}): sort the thresholds "
                "and merge repeated ones by multiplying their factors"
            )

    def _eta(self, k: np.ndarray, n_steps: int) -> np.ndarray:
        eta = np.full(k.shape, self.lr)
        for a, f in zip(self.at, self.factors, strict=True):
            eta = np.where(k >= int(a * n_steps), eta / f, eta)
        return eta

    def _phase_starts(self, n_steps: int) -> list[int]:
        return [int(a * n_steps) for a in self.at]


@dataclasses.dataclass(frozen=True)
class Warmup(Schedule):
    """A warm-up ``_ramp(k, N)`` for ``k < K = int(until * N)``, then the constant
    ``_ramp(K, N) / decay``. Subclasses declare ``until`` and ``decay`` fields and the ramp."""

    def validate(self) -> None:
        super().validate()
        until, decay = self.until, self.decay  # type: ignore[attr-defined]
        _check_fraction("until", until, "give the end of warm-up as a fraction of the run length")
        _check_positive("decay", decay, "pass a positive divisor (1.0 keeps the peak step size)")

    @abc.abstractmethod
    def _ramp(self, k: Any, n_steps: int) -> Any:
        """Warm-up step size at step(s) ``k`` of a run of ``n_steps``."""

    def _cut(self, n_steps: int) -> int:
        return int(self.until * n_steps)  # type: ignore[attr-defined]

    def _eta(self, k: np.ndarray, n_steps: int) -> np.ndarray:
        cut = self._cut(n_steps)
        decayed = self._ramp(cut, n_steps) / self.decay  # type: ignore[attr-defined]
        return np.where(k < cut, self._ramp(k, n_steps), decayed)

    def _phase_starts(self, n_steps: int) -> list[int]:
        return [self._cut(n_steps)]


@dataclasses.dataclass(frozen=True)
class LinearWarmup(Warmup):
    """Linear warm-up measured against the whole run, then a constant, decayed step size.

    With ``N = n_steps`` and ``K = int(until * N)``::

        eta_k = lr * (1 + (factor - 1) * k / N)          for k <  K
        eta_k = lr * (1 + (factor - 1) * K / N) / decay  for k >= K

    The ramp slope is set by ``N``, not by ``K``: ``factor * lr`` would only be reached at
    ``k = N``, so the peak is ``lr * (1 + (factor - 1) * until)``. This is the warm-up of
    ``fc_nets.train_fc_net`` as used in the 1-D regression notebook of Andriushchenko et al.,
    "SGD with Large Step Sizes Learns Sparse Features" (ICML 2023,
    tml-epfl/sgd-sparse-features), where the warm-up sets ``eta_K`` and the decay threshold at
    ``K`` then divides it. If ``K = 0`` the run is ``lr / decay`` throughout.
    """

    name: ClassVar[str] = "linear_warmup"
    lr: float
    factor: float
    until: float
    decay: float = 1.0

    def validate(self) -> None:
        super().validate()
        _check_positive("factor", self.factor, "pass the warm-up multiplier (e.g. 8.0)")

    def _ramp(self, k: Any, n_steps: int) -> Any:
        return self.lr * (1.0 + (self.factor - 1.0) * (k / n_steps))


@dataclasses.dataclass(frozen=True)
class PowerWarmup(Warmup):
    """Power-law warm-up, then a constant, decayed step size.

    With ``N = n_steps`` and ``K = int(until * N)``::

        eta_k = lr * (1 + coef * (k / N) ** power)          for k <  K
        eta_k = lr * (1 + coef * (K / N) ** power) / decay  for k >= K

    ``coef`` is ``gamma_warmup_factor_max - 1`` and ``power`` the ``warmup_exponent`` of
    ``fc_nets.train_fc_net`` in Andriushchenko et al., "SGD with Large Step Sizes Learns Sparse
    Features" (ICML 2023, tml-epfl/sgd-sparse-features). Its three-layer network uses
    ``lr=0.04, coef=5, power=0.5`` with ``until=0.1 / 0.3 / 0.5`` (peaks 0.103 / 0.150 / 0.181)
    and ``decay=3.5 / 2.5 / 5.0``.
    """

    name: ClassVar[str] = "power_warmup"
    lr: float
    coef: float
    power: float
    until: float
    decay: float = 1.0

    def validate(self) -> None:
        super().validate()
        if not math.isfinite(self.coef) or self.coef < 0:
            raise ValueError(
                f"coef must be finite and >= 0 (got {self.coef!r}): the warm-up multiplies lr "
                "by 1 + coef * (k/N)**power, so pass the peak factor minus one"
            )
        _check_positive("power", self.power, "pass a positive exponent (0.5 = square root)")

    def _ramp(self, k: Any, n_steps: int) -> Any:
        return self.lr * (1.0 + self.coef * (k / n_steps) ** self.power)


@dataclasses.dataclass(frozen=True)
class ExponentialWarmup(Warmup):
    """Exponential warm-up, then a constant, decayed step size.

    With ``N = n_steps`` and ``K = int(until * N)``::

        eta_k = lr * base ** (100 * k / N)          for k <  K
        eta_k = lr * base ** (100 * K / N) / decay  for k >= K

    The exponent counts percent of the run, as the ``warmup_exp > 1`` branch of the
    ``piecewise_*epochs`` schedules of Andriushchenko et al., "SGD with Large Step Sizes Learns
    Sparse Features" (ICML 2023, tml-epfl/sgd-sparse-features), but on step ``k`` rather than
    the script's ``(k + 1) / N`` (see :class:`PiecewiseEpochs` for the exact script).
    """

    name: ClassVar[str] = "exponential_warmup"
    lr: float
    base: float
    until: float
    decay: float = 1.0

    def validate(self) -> None:
        super().validate()
        _check_positive("base", self.base, "pass the per-percent growth factor (e.g. 1.05)")

    def _ramp(self, k: Any, n_steps: int) -> Any:
        return self.lr * self.base ** (100.0 * k / n_steps)


# The deep-net script's second decay point, as a fraction of the run.
_PIECEWISE_FINAL = 0.9


@dataclasses.dataclass(frozen=True)
class PiecewiseEpochs(Schedule):
    """The ``piecewise_05epochs`` / ``03`` / ``01`` schedules of the paper's deep-net script.

    Exactly ``deep_nets/utils_train.get_lr_schedule`` of Andriushchenko et al., "SGD with Large
    Step Sizes Learns Sparse Features" (ICML 2023, tml-epfl/sgd-sparse-features), with
    ``phase_end = S = 0.5 / 0.3 / 0.1``. The script evaluates it at the fractional epoch
    ``t / E`` with ``t = (epoch - 1) + (i + 1) / iters``, i.e. *after* the step, so here
    ``s = (k + 1) / N``. With ``q = warmup_exp``:

    * ``q > 1`` (exponential)::

        lr * q ** (100 * s)          s < S
        lr * q ** (100 * S) / 10     S <= s < 0.9
        lr * q ** (100 * S) / 100    s >= 0.9

      e.g. ``lr=0.75, q=1.05``: peak 8.60 / 3.24 / 1.22 for ``S = 0.5 / 0.3 / 0.1``.
    * ``q < 1`` (power): ``lr * (1 + (100 * s) ** q)`` for ``s < S``, then the value at
      ``s = S`` divided by 10, and by 100 from ``s = 0.9``.
    * ``q == 1`` (default, linear): ``lr * (1 + (warmup_factor - 1) * s / 0.5)`` for ``s < S``
      (a ramp from ``lr`` to ``warmup_factor * lr`` over *half* the run, cut at ``S``; held at
      ``warmup_factor * lr`` past ``s = 0.5`` like the script's ``np.interp``), then
      ``(S / 0.5) * warmup_factor * lr / 10`` and, from ``s = 0.9``,
      ``(S / 0.5) * warmup_factor * lr / 100``.

    Quirk kept on purpose: in the linear case the decayed value is *not* the ramp's value at
    ``S`` over 10 but ``(S / 0.5) * warmup_factor * lr / 10``. Even without warm-up
    (``warmup_factor=1``) the post-decay step is therefore ``lr / 10`` for ``S = 0.5`` but
    ``0.06 * lr`` for ``S = 0.3`` and ``0.02 * lr`` for ``S = 0.1`` (the SOTA runs' ``lr=0.05``
    drops to 0.005, 0.003 and 0.001).
    """

    name: ClassVar[str] = "piecewise_epochs"
    lr: float
    phase_end: float = 0.5
    warmup_exp: float = 1.0
    warmup_factor: float = 1.0

    def validate(self) -> None:
        super().validate()
        _check_fraction(
            "phase_end",
            self.phase_end,
            "the first decay must come before the second one at 0.9 of the run",
            hi=_PIECEWISE_FINAL,
        )
        _check_positive("warmup_exp", self.warmup_exp, "pass 1.0 (linear), >1 (exp.) or <1")
        _check_positive("warmup_factor", self.warmup_factor, "pass 1.0 for no linear warm-up")

    def _level(self, s: Any) -> Any:
        """Warm-up value at fractional run position ``s`` (``q != 1`` branches)."""
        q = self.warmup_exp
        if q > 1.0:
            return self.lr * q ** (100.0 * s)
        return self.lr * (1.0 + (100.0 * s) ** q)

    def _eta(self, k: np.ndarray, n_steps: int) -> np.ndarray:
        s = (k + 1) / n_steps
        big_s = self.phase_end
        if self.warmup_exp == 1.0:
            ramp = self.lr * (1.0 + (self.warmup_factor - 1.0) * np.minimum(s, 0.5) / 0.5)
            plateau = big_s / 0.5 * self.warmup_factor * self.lr
        else:
            ramp = self._level(s)
            plateau = self._level(big_s)
        return np.where(
            s < big_s, ramp, np.where(s < _PIECEWISE_FINAL, plateau / 10.0, plateau / 100.0)
        )

    def _phase_starts(self, n_steps: int) -> list[int]:
        # The first k with s = (k + 1) / N past each threshold, by the comparison _eta makes.
        s = np.arange(1, n_steps + 1) / n_steps
        return [int(np.argmax(s >= edge)) for edge in (self.phase_end, _PIECEWISE_FINAL)]


@dataclasses.dataclass(frozen=True)
class Piecewise(Schedule):
    """Piecewise-constant values: ``levels[j]`` on steps ``int(at[j-1] N) <= k <
    int(at[j] N)`` (``at[-1] = 0``, ``at[len(at)] = 1``), so ``len(levels) = len(at) + 1``.

    Levels may be 0, which makes it the schedule of a setting switched off part-way:
    label noise of variance 0.1 for the first half of the run, then fine-tuning without
    it, is ``Piecewise(levels=(0.1, 0.0), at=(0.5,))`` as ``SGD(label_noise=...)``.
    """

    name: ClassVar[str] = "piecewise"
    _tuple_fields: ClassVar[tuple[str, ...]] = ("levels", "at")
    levels: tuple[float, ...]
    at: tuple[float, ...] = ()

    def validate(self) -> None:
        if len(self.levels) != len(self.at) + 1:
            raise ValueError(
                f"levels must have one entry more than at (got {len(self.levels)} levels and "
                f"{len(self.at)} change points): levels[j] holds from at[j-1] to at[j]"
            )
        for j, v in enumerate(self.levels):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"levels[{j}] must be a finite number >= 0 (got {v!r})")
        for j, a in enumerate(self.at):
            _check_fraction(f"at[{j}]", a, "give change points as fractions of the run length")
        if any(b <= a for a, b in zip(self.at, self.at[1:], strict=False)):
            raise ValueError(f"at must be strictly increasing (got {list(self.at)})")

    def _eta(self, k: np.ndarray, n_steps: int) -> np.ndarray:
        starts = np.array([int(a * n_steps) for a in self.at], dtype=np.int64)
        return np.asarray(self.levels)[np.searchsorted(starts, k, side="right")]

    def _phase_starts(self, n_steps: int) -> list[int]:
        return [int(a * n_steps) for a in self.at]


# --------------------------------------------------------------------------- registry & helpers

#: name -> schedule class; ``SCHEDULES.make`` / ``from_config`` build one, ``to_config``
#: inverts (but prefer :func:`make_schedule`, whose errors list the required fields).
SCHEDULES: Registry[Schedule] = Registry(
    "schedule",
    {
        cls.name: cls
        for cls in (
            Constant,
            StepDecay,
            LinearWarmup,
            PowerWarmup,
            ExponentialWarmup,
            PiecewiseEpochs,
            Piecewise,
        )
    },
)


def make_schedule(name: str, **fields: Any) -> Schedule:
    """Build the schedule registered as ``name`` (a key of :data:`SCHEDULES`) from its
    ``fields``; every field without a default is required (no hidden defaults)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: pick one of {sorted(SCHEDULES)}")
    cls = SCHEDULES[name]
    check_options(f"schedule {name!r}", cls, fields)
    return cls(**fields)


def schedule_from_config(cfg: Mapping[str, Any]) -> Schedule:
    """Inverse of :meth:`Schedule.to_config`: ``schedule_from_config(s.to_config()) == s``."""
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ValueError(
            f"a schedule config must be a dict with a 'name' key (got {cfg!r}): "
            f"use one of {sorted(SCHEDULES)}"
        )
    kwargs = dict(cfg)
    return make_schedule(kwargs.pop("name"), **kwargs)


def as_schedule(x: Any) -> Schedule:
    """Coerce ``x`` to a schedule: a number is :class:`Constant`, a dict is a config."""
    if isinstance(x, Schedule):
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Constant(float(x))
    if isinstance(x, Mapping):
        return schedule_from_config(x)
    raise ValueError(
        f"cannot make a step-size schedule from {x!r}: pass a positive float, a Schedule or a "
        "config dict with a 'name' key"
    )


def cumulative_time(lrs: Any, axis: int = -1) -> np.ndarray:
    """SDE time of each iterate: ``t_k = sum_{j<k} eta_j``, with ``t_0 = 0``.

    The output has one more entry than ``lrs`` along ``axis``: ``t_N`` is the time of the final
    iterate ``theta_N``, so ``t[k]`` pairs with ``theta_k`` for ``k = 0 .. N``.
    """
    eta = np.asarray(lrs, dtype=np.float64)
    if eta.ndim == 0:
        raise ValueError("lrs must have at least one dimension: pass the array of eta_k")
    if not -eta.ndim <= axis < eta.ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {eta.ndim} dimension(s)")
    axis %= eta.ndim
    pad = [(0, 0)] * eta.ndim
    pad[axis] = (1, 0)
    return np.pad(np.cumsum(eta, axis=axis), pad)
