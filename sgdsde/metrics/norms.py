"""Metrics of a parameter vector, exactly as the anchor notebooks define them."""

from __future__ import annotations

import numpy as np

# Below _TINY or above _HUGE a sum of squares may have underflowed or overflowed
# (squares of numbers below ~1e-154 are subnormal or 0): such rows are recomputed scaled.
_TINY, _HUGE = 1e-140, 1e140


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
    """Euclidean norm along the last axis, without underflow or overflow.

    sqrt(sum_i x_i^2) directly; where that result is tiny, huge, zero or not finite,
    recomputed as s sqrt(sum_i (x_i / s)^2) with s = max_i |x_i| (so ||x|| reads 1e-164,
    not 0, at |x_i| ~ 1e-164). NaN entries give NaN, infinite ones inf.
    """
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        # (x * x).sum: the summation order the package has always used (same bits)
        out = np.sqrt((flat * flat).sum(axis=-1))
        risky = ~((out > _TINY) & (out < _HUGE))
        if np.any(risky):
            rows = flat[risky]
            scale = np.max(np.abs(rows), axis=-1)
            ok = (scale > 0) & np.isfinite(scale)
            scaled = rows[ok] / scale[ok, None]
            fixed = out[risky]
            fixed[ok] = scale[ok] * np.sqrt((scaled * scaled).sum(axis=-1))
            out[risky] = fixed
    return out.reshape(x.shape[:-1]) if x.ndim else out[0]
