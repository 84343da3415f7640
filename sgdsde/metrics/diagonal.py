"""Metrics of linear predictors and diagonal networks (Andriushchenko et al. 2023,
Sec. 3; Woodworth et al. 2020): the distance of beta to the teacher beta* and the
balancedness || |u| - |v| || of a diagonal network theta = (u, v).

Functions work on saved parameters; ``DistanceToBetaStar`` and ``Balancedness`` are
the recorded metrics (``METRICS`` names ``beta_star_distance``, ``balancedness``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sgdsde.metrics.base import METRICS
from sgdsde.metrics.builtin import BuiltinMetric, has_linear_predictor, linear_predictor
from sgdsde.metrics.norms import l2_norm


def _model_name(model: Any) -> str:
    return getattr(model, "name", type(model).__name__)


def distance_to_beta_star(beta: np.ndarray, beta_star: np.ndarray) -> np.ndarray:
    """||beta - beta*||_2 along the last axis.

    beta: (..., d) linear predictors (``model.linear_predictor(theta)``).
    beta_star: (d,) the teacher (``data.beta_star``).
    """
    beta = np.asarray(beta, dtype=np.float64)
    beta_star = np.asarray(beta_star, dtype=np.float64)
    if beta_star.ndim != 1 or beta.shape[-1] != beta_star.shape[0]:
        raise ValueError(
            f"beta_star must be a vector of length {beta.shape[-1]} (the last axis of "
            f"beta), got shape {beta_star.shape}: pass the teacher of this problem"
        )
    return l2_norm(beta - beta_star)


def balancedness(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|| |u| - |v| ||_2 along the last axis: 0 for a balanced diagonal network
    (|u_j| = |v_j|, which gradient flow from u0 = v0 keeps for "uu-vv" and which the
    "uv" anchor init u0 = alpha, v0 = 0 starts far from).

    u, v: (..., d) the two blocks of a diagonal network's parameters.
    """
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape (got {u.shape} and {v.shape})")
    return l2_norm(np.abs(u) - np.abs(v))


@METRICS.register
@dataclasses.dataclass(frozen=True)
class DistanceToBetaStar(BuiltinMetric):
    """||beta - beta*||_2 with beta* = ``data.beta_star`` (models linear in x)."""

    name = "beta_star_distance"
    long_name = "distance of the linear predictor to the teacher ||beta - beta*||_2"

    def check(self, model, data):
        if not has_linear_predictor(model):
            raise ValueError(
                f"metric 'beta_star_distance' needs a model linear in x (f = beta . x): "
                f"{_model_name(model)!r} is not"
            )
        beta_star = getattr(data, "beta_star", None)
        if beta_star is None or np.shape(beta_star) != (model.input_dim,):
            raise ValueError(
                "metric 'beta_star_distance' needs data.beta_star, a vector of length "
                f"{model.input_dim} (got {None if beta_star is None else np.shape(beta_star)}): "
                "use a generator with a teacher (sparse_regression) or set beta_star"
            )

    def __call__(self, theta, model, data):
        return distance_to_beta_star(linear_predictor(theta, model), data.beta_star)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class Balancedness(BuiltinMetric):
    """|| |u| - |v| ||_2 of a diagonal network with blocks u and v."""

    name = "balancedness"
    long_name = "balancedness || |u| - |v| ||_2 of the diagonal network"

    def check(self, model, data):
        blocks = model.param_blocks() if hasattr(model, "param_blocks") else {}
        if set(blocks) != {"u", "v"}:
            raise ValueError(
                f"metric 'balancedness' needs a diagonal network with blocks u and v "
                f"(parametrization 'uv' or 'uu-vv'): {_model_name(model)!r} has blocks "
                f"{sorted(blocks)}"
            )

    def __call__(self, theta, model, data):
        blocks = model.param_blocks()
        return balancedness(theta[:, blocks["u"]], theta[:, blocks["v"]])
