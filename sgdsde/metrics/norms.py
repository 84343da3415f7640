"""Metrics of a parameter vector, exactly as the anchor notebooks define them."""

from __future__ import annotations

import numpy as np


def l0_norm(beta: np.ndarray, threshold: float) -> np.ndarray:
    """#{i : |beta_i| > threshold} along the last axis.

    Andriushchenko et al. (2023) count |beta_i| > 1e-50, i.e. coordinates that have
    not collapsed to numerical zero; results depend on this threshold, so it is an
    argument and is written into every dataset.
    """
    return np.count_nonzero(np.abs(beta) > threshold, axis=-1)


def l1_norm(beta: np.ndarray) -> np.ndarray:
    """sum_i |beta_i| along the last axis."""
    return np.abs(beta).sum(axis=-1)


def l2_norm(x: np.ndarray) -> np.ndarray:
    """Euclidean norm along the last axis."""
    return np.sqrt((x * x).sum(axis=-1))
