"""Metrics of the Jacobian phi_theta(X) (n x p, row i = grad_theta f(x_i)):
Andriushchenko et al. (ICML 2023), Sec. 3-4.

* ``jacobian_rank``: #{i : sigma_i > threshold * sigma_max} (the paper's relative
  SVD threshold, 1e-4);
* ``effective_rank``: exp(H(p)) with p_i = sigma_i / sum_j sigma_j and H the Shannon
  entropy (Roy & Vetterli 2007): between 1 and rank(phi), and equal to r for r equal
  nonzero singular values;
* ``column_norms``: ||phi_j||_2 over the examples, per parameter j (the noise of the
  loss-stabilisation SDE, Eq. (8), acts on coordinate j through it).

Functions take the Jacobian (T, n, p) from ``model.jacobian(theta, X)``; the recorded
metrics (``jacobian_rank``, ``effective_rank``, ``jacobian_column_norms``) evaluate it on
the training or test inputs (``inputs``), optionally the first ``max_examples``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from sgdsde.metrics.base import METRICS, check_inputs_option, select_inputs
from sgdsde.metrics.builtin import BuiltinMetric
from sgdsde.metrics.norms import l2_norm


def singular_values(phi: np.ndarray) -> np.ndarray:
    """Singular values of each matrix of phi (T, n, p), descending, (T, min(n, p))."""
    return np.linalg.svd(np.asarray(phi, dtype=np.float64), compute_uv=False)


def jacobian_rank(phi: np.ndarray, threshold: float = 1e-4) -> np.ndarray:
    """#{i : sigma_i > threshold * sigma_max} per matrix of phi (T, n, p), (T,) int64;
    0 for a zero matrix.

    phi: Jacobians (T, n, p).
    threshold: relative SVD threshold in [0, 1) (the paper: 1e-4).
    """
    sigma = singular_values(phi)
    if sigma.shape[-1] == 0:
        return np.zeros(sigma.shape[:-1], dtype=np.int64)
    top = sigma[..., :1]
    return np.count_nonzero((sigma > threshold * top) & (top > 0), axis=-1).astype(np.int64)


def effective_rank(phi: np.ndarray) -> np.ndarray:
    """exp(-sum_i p_i log p_i), p_i = sigma_i / sum_j sigma_j, per matrix of phi
    (T, n, p), (T,); NaN for a zero matrix (no distribution to take the entropy of)."""
    sigma = singular_values(phi)
    total = sigma.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        prob = sigma / total
        terms = np.where(prob > 0, prob * np.log(np.where(prob > 0, prob, 1.0)), 0.0)
    out = np.exp(-terms.sum(axis=-1))
    return np.where(total[..., 0] > 0, out, np.nan)


def column_norms(phi: np.ndarray) -> np.ndarray:
    """||phi_j||_2 = sqrt(sum_i (df(x_i)/dtheta_j)^2) per column j, (T, p)."""
    phi = np.asarray(phi, dtype=np.float64)
    return l2_norm(np.swapaxes(phi, -1, -2))


@dataclasses.dataclass(frozen=True)
class JacobianMetric(BuiltinMetric):
    """A metric of phi_theta(X) on the training ("train") or test ("test") inputs, the
    first ``max_examples`` of them (all if None)."""

    inputs: str = "train"
    max_examples: int | None = None

    def __post_init__(self):
        check_inputs_option(f"metric {self.name!r}", self.inputs, self.max_examples)

    def jacobian(self, theta, model, data) -> np.ndarray:
        return model.jacobian(theta, select_inputs(data, self.inputs, self.max_examples))


@METRICS.register
@dataclasses.dataclass(frozen=True)
class JacobianRank(JacobianMetric):
    """rank of phi_theta(X) at a relative SVD threshold (``jacobian_rank``)."""

    threshold: float = 1e-4

    name = "jacobian_rank"
    long_name = "rank of the Jacobian phi(X): #{sigma_i > threshold sigma_max}"
    units = "count"
    dtype = np.int64

    def __post_init__(self):
        super().__post_init__()
        t = self.threshold
        if (
            isinstance(t, bool)
            or not isinstance(t, numbers.Real)
            or not (math.isfinite(t) and 0 <= t < 1)
        ):
            raise ValueError(
                f"metric 'jacobian_rank': threshold must be a number in [0, 1) relative to "
                f"sigma_max (the paper: 1e-4), got {t!r}"
            )
        object.__setattr__(self, "threshold", float(t))

    def __call__(self, theta, model, data):
        return jacobian_rank(self.jacobian(theta, model, data), self.threshold)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class EffectiveRank(JacobianMetric):
    """Effective rank of phi_theta(X) (``effective_rank``)."""

    name = "effective_rank"
    long_name = "effective rank of the Jacobian phi(X): exp(entropy of sigma / sum sigma)"

    def __call__(self, theta, model, data):
        return effective_rank(self.jacobian(theta, model, data))


@METRICS.register
@dataclasses.dataclass(frozen=True)
class JacobianColumnNorms(JacobianMetric):
    """||phi_j||_2 per parameter j, dim ``param`` (``column_norms``)."""

    name = "jacobian_column_norms"
    long_name = "column norms ||phi_j||_2 of the Jacobian phi(X)"
    dims = ("param",)

    def __call__(self, theta, model, data):
        return column_norms(self.jacobian(theta, model, data))
