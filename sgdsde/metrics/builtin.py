"""The built-in metrics every run records (train_loss, test_loss, l0_norm, l1_norm,
param_norm; params on request) and ``beta``, each a ``Metric`` registered in
``METRICS`` under its name.

beta is the model's linear predictor (f_theta(x) = beta . x) where it has one
(diagonal networks, linear models); otherwise the l0/l1 norms are taken of the
parameters theta, and the variable's long_name says which.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from sgdsde.metrics.base import METRICS, Metric, shared
from sgdsde.metrics.norms import l0_norm, l1_norm, l2_norm
from sgdsde.registry import to_config


def has_linear_predictor(model: Any) -> bool:
    """True when the model is linear in x (``model.linear_predictor`` gives beta)."""
    predictor = getattr(model, "linear_predictor", None)
    return predictor is not None and predictor(np.zeros((1, model.n_params))) is not None


def linear_predictor(theta: np.ndarray, model: Any) -> np.ndarray | None:
    """beta (T, d) with f(x) = beta . x when the model is linear in x, else None; inside
    ``one_observation`` computed once per theta array (at a dense save grid, beta for
    every metric anew cost ~7 % of a diagonal-network SGD run, measured)."""
    if not hasattr(model, "linear_predictor"):
        return None
    return shared("beta", (theta, model), lambda: model.linear_predictor(theta))


def beta_or_theta(theta: np.ndarray, model: Any) -> np.ndarray:
    """beta (T, d) for a model linear in x, else theta itself (what l0/l1 are taken of)."""
    beta = linear_predictor(theta, model)
    return theta if beta is None else beta


def _of(model: Any) -> str:
    return "beta (linear predictor)" if has_linear_predictor(model) else "theta (parameters)"


def mean_squared_residual(theta: np.ndarray, model: Any, X: np.ndarray, y: np.ndarray):
    """1/(2m) ||f(X) - y||^2 per trajectory, (T,); NaN for an empty set (m = 0).

    For a model linear in x: one BLAS product beta X^T (the same predictions as the
    kernels, ~20x faster on large test sets)."""
    if X.shape[0] == 0:
        return np.full(theta.shape[0], np.nan)
    beta = linear_predictor(theta, model)
    if beta is None:
        return model.loss(theta, X, y)
    with np.errstate(over="ignore", invalid="ignore"):
        # in place: the same operations as 0.5 * mean((beta X^T - y)^2), bit for bit,
        # without two (T, m) temporaries (~25 % of a test-loss evaluation at m = 1000)
        r = beta @ X.T
        np.subtract(r, y, out=r)
        np.multiply(r, r, out=r)
        return 0.5 * np.mean(r, axis=-1)


class BuiltinMetric(Metric):
    """A registered metric with a fixed name; its options are dataclass fields."""

    def to_config(self) -> dict[str, Any]:
        return to_config(self)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class TrainLoss(BuiltinMetric):
    """Training loss L(theta) = 1/(2n) sum_i r_i^2."""

    name = "train_loss"
    long_name = "training loss 1/(2n) sum_i r_i^2"

    def __call__(self, theta, model, data):
        return mean_squared_residual(theta, model, data.X, data.y)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class TestLoss(BuiltinMetric):
    """Test loss 1/(2 n_test) sum_i r_i^2 on the data's test set (NaN if it is empty)."""

    __test__ = False  # not a pytest class
    name = "test_loss"
    long_name = "test loss 1/(2 n_test) sum_i r_i^2"

    def __call__(self, theta, model, data):
        return mean_squared_residual(theta, model, data.X_test, data.y_test)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class L0Norm(BuiltinMetric):
    """#{i : |beta_i| > threshold} (strict), an integer count (``sgdsde.metrics.l0_norm``).

    threshold: Andriushchenko et al. (2023) count |beta_i| > 1e-50 (coordinates not
    collapsed to numerical zero); results depend on it, so it is written into the
    variable's attrs.
    """

    threshold: float = 1e-50

    name = "l0_norm"
    units = "count"
    dtype = np.int64

    def __post_init__(self):
        t = self.threshold
        if (
            isinstance(t, bool)
            or not isinstance(t, numbers.Real)
            or not (math.isfinite(t) and t >= 0)
        ):
            raise ValueError(
                f"l0_threshold (the l0_norm threshold) must be a finite number >= 0 (got {t!r})"
            )
        object.__setattr__(self, "threshold", float(t))

    def __call__(self, theta, model, data):
        return l0_norm(beta_or_theta(theta, model), self.threshold)

    def attrs(self, model):
        return super().attrs(model) | {
            "long_name": f"number of coordinates of {_of(model)} with |x_i| > threshold"
        }


@METRICS.register
@dataclasses.dataclass(frozen=True)
class L1Norm(BuiltinMetric):
    """sum_i |beta_i| (of theta for a model not linear in x)."""

    name = "l1_norm"

    def __call__(self, theta, model, data):
        return l1_norm(beta_or_theta(theta, model))

    def attrs(self, model):
        return super().attrs(model) | {"long_name": f"l1 norm of {_of(model)}"}


@METRICS.register
@dataclasses.dataclass(frozen=True)
class ParamNorm(BuiltinMetric):
    """||theta||_2."""

    name = "param_norm"
    long_name = "l2 norm of the parameters theta"

    def __call__(self, theta, model, data):
        with np.errstate(over="ignore"):
            return l2_norm(theta)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class Params(BuiltinMetric):
    """The parameters theta themselves, dim ``param`` (what ``save_params=True`` records:
    T x S x p numbers; a metric of theta records T x S)."""

    name = "params"
    long_name = "parameters theta"
    dims = ("param",)

    def __call__(self, theta, model, data):
        return theta


@METRICS.register
@dataclasses.dataclass(frozen=True)
class Beta(BuiltinMetric):
    """The linear predictor beta (f_theta(x) = beta . x), dim ``feature`` (d entries);
    only for models linear in x."""

    name = "beta"
    long_name = "linear predictor beta (f(x) = beta . x)"
    dims = ("feature",)

    def check(self, model, data):
        if not has_linear_predictor(model):
            raise ValueError(
                f"metric 'beta' needs a model linear in x (f = beta . x): "
                f"{getattr(model, 'name', type(model).__name__)!r} is not; record 'params'"
            )

    def __call__(self, theta, model, data):
        return linear_predictor(theta, model)
