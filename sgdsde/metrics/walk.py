"""The "A Walk with SGD" metrics (Xing, Arpit, Tsirigotis, Bengio 2018; reference
notes collapse-walk.md Sec. 2.1), as functions of saved iterates and as recorded
``IterateMetric``s.

* Loss on the segment between consecutive iterates, f_t(alpha) = L(theta_t + alpha
  (theta_{t+1} - theta_t)) on an alpha grid of [0, 1]: the floor alpha* = argmin f_t,
  floor height f_t(alpha*), height above the floor L(theta_t) - f_t(alpha*), and an
  interior minimum when f_t(alpha*) < min(f_t(0), f_t(1)) (the step crossed the floor
  of the valley). Recorded at save step s with t = s - 1.
* cos(g_{t-1}, g_t) of consecutive mini-batch gradients. Plain SGD moves by
  theta_{t+1} - theta_t = -eta_t g_t with eta_t > 0, so the cosine of consecutive
  *updates* is exactly that of the mini-batch gradients the run used (recorded at s
  from theta_{s-2}, theta_{s-1}, theta_s: cos(g_{s-2}, g_{s-1})); for an SDE it is the
  cosine of consecutive increments. ``gradient_cosine`` gives the full-batch version.
* ||theta_t - theta_0||_2, the distance from initialization.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sgdsde.arguments import check_positive_int
from sgdsde.metrics.base import METRICS, shared
from sgdsde.metrics.norms import l2_norm
from sgdsde.metrics.temporal import IterateMetric


def segment_losses(
    model: Any,
    theta_a: np.ndarray,
    theta_b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    alphas: np.ndarray,
) -> np.ndarray:
    """L(theta_a + alpha (theta_b - theta_a)) for each alpha, (T, A).

    model: the model (its ``loss``); theta_a, theta_b: (T, p) the segment's ends;
    X, y: the data the loss is taken on; alphas: (A,) points, 0 = theta_a, 1 = theta_b.
    """
    theta_a, theta_b = np.atleast_2d(theta_a), np.atleast_2d(theta_b)
    alphas = np.asarray(alphas, dtype=np.float64)
    T, p = theta_a.shape
    points = theta_a[:, None, :] + alphas[None, :, None] * (theta_b - theta_a)[:, None, :]
    return model.loss(points.reshape(T * len(alphas), p), X, y).reshape(T, len(alphas))


@dataclasses.dataclass(frozen=True)
class ValleyFloor:
    """Where the loss along a segment is lowest (arrays (T,)): ``alpha`` (alpha*),
    ``height`` (f(alpha*)), ``height_above`` (f(0) - f(alpha*)) and ``interior``
    (f(alpha*) < min(f(0), f(1)))."""

    alpha: np.ndarray
    height: np.ndarray
    height_above: np.ndarray
    interior: np.ndarray


def valley_floor(losses: np.ndarray, alphas: np.ndarray) -> ValleyFloor:
    """The floor of segment losses (T, A) on the grid alphas (A,), which must run from 0
    to 1 (increasing); the first minimum wins a tie."""
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or alphas.size < 2 or alphas[0] != 0 or alphas[-1] != 1:
        raise ValueError(f"alphas must run from 0 to 1 (got {alphas!r}): use np.linspace(0, 1, k)")
    losses = np.asarray(losses, dtype=np.float64)
    best = np.argmin(np.where(np.isnan(losses), np.inf, losses), axis=-1)
    height = np.take_along_axis(losses, best[:, None], axis=-1)[:, 0]
    ends = np.minimum(losses[:, 0], losses[:, -1])
    return ValleyFloor(alphas[best], height, losses[:, 0] - height, height < ends)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a . b / (||a|| ||b||) along the last axis; NaN where either is zero. Both are
    divided by their norms first, so tiny vectors do not underflow."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = l2_norm(a)[..., None], l2_norm(b)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ((a / na) * (b / nb)).sum(axis=-1)
    return np.where((na[..., 0] > 0) & (nb[..., 0] > 0), out, np.nan)


def update_cosine(theta_prev: np.ndarray, theta: np.ndarray, theta_next: np.ndarray) -> np.ndarray:
    """cos(theta - theta_prev, theta_next - theta), (T,): for plain SGD the cosine of
    the consecutive mini-batch gradients g_{t-1}, g_t (module docstring)."""
    return cosine(np.asarray(theta) - theta_prev, np.asarray(theta_next) - theta)


def gradient_cosine(
    model: Any, theta_a: np.ndarray, theta_b: np.ndarray, X: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """cos(grad L(theta_a), grad L(theta_b)) of the loss on (X, y), (T,)."""
    return cosine(model.grad(theta_a, X, y), model.grad(theta_b, X, y))


def distance_from_init(theta: np.ndarray, theta0: np.ndarray) -> np.ndarray:
    """||theta - theta_0||_2 along the last axis."""
    return l2_norm(np.asarray(theta, dtype=np.float64) - theta0)


@dataclasses.dataclass(frozen=True)
class SegmentMetric(IterateMetric):
    """A quantity of the valley floor on the segment [theta_{s-1}, theta_s] with
    ``n_points`` equally spaced alphas in [0, 1] (the paper: steps of 0.1), training loss."""

    n_points: int = 11

    lookback = 1

    def __post_init__(self):
        check_positive_int(n_points=self.n_points)
        if self.n_points < 3:
            raise ValueError(
                f"metric {self.name!r}: n_points must be >= 3 (the ends and an interior "
                f"point), got {self.n_points!r}"
            )

    def check(self, model, data):
        if data is None:
            raise ValueError(f"metric {self.name!r} needs data (a training loss)")

    def floor(self, recent, model, data) -> ValleyFloor:
        """The valley floor of this step's segment, computed once per recorder step for
        all segment metrics of the same ``n_points`` (their iterate channels hold copies
        of the same iterates s-1 and s)."""

        def compute() -> ValleyFloor:
            alphas = np.linspace(0.0, 1.0, self.n_points)
            losses = segment_losses(model, recent[1], recent[0], data.X, data.y, alphas)
            return valley_floor(losses, alphas)

        return shared(f"segment_floor_{self.n_points}", (model, data), compute)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class FloorHeight(SegmentMetric):
    """min_alpha L on [theta_{s-1}, theta_s]."""

    name = "floor_height"
    long_name = "lowest training loss on the segment [theta_{s-1}, theta_s]"

    def of_iterates(self, recent, theta0, model, data):
        return self.floor(recent, model, data).height


@METRICS.register
@dataclasses.dataclass(frozen=True)
class HeightAboveFloor(SegmentMetric):
    """L(theta_{s-1}) - min_alpha L on [theta_{s-1}, theta_s]."""

    name = "height_above_floor"
    long_name = "L(theta_{s-1}) minus the lowest loss on the segment [theta_{s-1}, theta_s]"

    def of_iterates(self, recent, theta0, model, data):
        return self.floor(recent, model, data).height_above


@METRICS.register
@dataclasses.dataclass(frozen=True)
class InteriorMinimum(SegmentMetric):
    """1 if the loss on [theta_{s-1}, theta_s] has its minimum strictly inside (below
    both ends), else 0: the step crossed the valley floor."""

    name = "interior_minimum"
    long_name = "1 if the loss on [theta_{s-1}, theta_s] dips below both ends, else 0"
    units = "count"
    dtype = np.int64

    def of_iterates(self, recent, theta0, model, data):
        return self.floor(recent, model, data).interior.astype(np.int64)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class UpdateCosine(IterateMetric):
    """cos(theta_{s-1} - theta_{s-2}, theta_s - theta_{s-1}): for plain SGD the cosine of
    consecutive mini-batch gradients (module docstring)."""

    name = "update_cosine"
    long_name = "cosine of consecutive updates theta_{s-1} - theta_{s-2}, theta_s - theta_{s-1}"
    lookback = 2

    def of_iterates(self, recent, theta0, model, data):
        return update_cosine(recent[2], recent[1], recent[0])


@METRICS.register
@dataclasses.dataclass(frozen=True)
class InitDistance(IterateMetric):
    """||theta_s - theta_0||_2."""

    name = "init_distance"
    long_name = "distance from initialization ||theta - theta_0||_2"

    def of_iterates(self, recent, theta0, model, data):
        return distance_from_init(recent[0], theta0)
