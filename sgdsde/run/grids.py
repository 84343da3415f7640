"""Save / evaluation grids: the steps ``k`` at which iterates ``theta_k`` are recorded.

A run of ``n_steps`` updates has iterates ``theta_0 .. theta_{n_steps}``, so a grid is a sorted
array of unique int64 indices in ``[0, n_steps]``.

"SGD with Large Step Sizes Learns Sparse Features" (Andriushchenko et al., ICML 2023,
tml-epfl/sgd-sparse-features) evaluates at iterations 0-99 plus 250 evenly spaced points over the
run; :func:`eval_grid`'s defaults reproduce that, and ``spacing="log"`` spreads the points
geometrically for runs whose interesting phase is early.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = ["as_grid", "eval_grid"]

_SPACINGS = ("linear", "log")


def _as_int(name: str, value: Any, lo: int, fix: str) -> int:
    # bool is an int subclass; reject it so a misplaced flag is not read as 0 or 1.
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {lo} (got {value!r}): {fix}")
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {lo} (got {value!r}): {fix}") from None
    if n < lo:
        raise ValueError(f"{name} must be >= {lo} (got {n}): {fix}")
    return n


def eval_grid(
    n_steps: int, n_dense: int = 100, n_points: int = 250, spacing: str = "linear"
) -> np.ndarray:
    """Steps at which to save iterates: a dense start plus ``n_points`` spread over the run.

    Returns the sorted unique int64 union of

    * ``0, 1, .., min(n_dense, n_steps + 1) - 1`` (every early iterate),
    * ``np.rint(np.linspace(0, n_steps, n_points))`` for ``spacing="linear"``, or
      ``np.rint(np.geomspace(1, n_steps, n_points))`` for ``spacing="log"``,
    * ``0`` and ``n_steps`` (always present).

    The defaults match the paper's evaluation grid, iterations 0-99 plus 250 evenly spaced points
    (Andriushchenko et al., "SGD with Large Step Sizes Learns Sparse Features", ICML 2023).
    Rounding merges nearby points, so the result can be shorter than ``n_dense + n_points``.
    """
    n = _as_int("n_steps", n_steps, 1, "pass the number of SGD updates of the run")
    dense = _as_int("n_dense", n_dense, 0, "pass how many leading steps to save (0 for none)")
    points = _as_int("n_points", n_points, 2, "pass at least 2 so both ends are spanned")
    if spacing not in _SPACINGS:
        raise ValueError(f"spacing must be one of {list(_SPACINGS)} (got {spacing!r})")
    spread = np.linspace(0.0, n, points) if spacing == "linear" else np.geomspace(1.0, n, points)
    # Clipping guards against endpoint round-off in linspace/geomspace pushing a step past n.
    spread = np.clip(np.rint(spread), 0, n).astype(np.int64)
    head = np.arange(min(dense, n + 1), dtype=np.int64)
    return np.unique(np.concatenate([head, spread, np.array([0, n], dtype=np.int64)]))


def as_grid(steps: Any, n_steps: int) -> np.ndarray:
    """Validate user-given save steps: sorted unique int64 values in ``[0, n_steps]``.

    Integer-valued floats are accepted (``np.linspace`` output, say); endpoints are *not*
    added, so pass ``0`` / ``n_steps`` yourself if you want the initial or final iterate.
    """
    n = _as_int("n_steps", n_steps, 1, "pass the number of SGD updates of the run")
    arr = np.asarray(steps)
    if arr.ndim > 1:
        raise ValueError(f"steps must be 1-D (got shape {arr.shape}): pass a flat list of steps")
    arr = np.atleast_1d(arr)
    if arr.size == 0:
        raise ValueError("steps is empty: pass at least one step in [0, n_steps] to save")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"steps must be integers (got dtype {arr.dtype}): pass step indices")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.rint(arr)):
            bad = float(arr[~np.isfinite(arr) | (arr != np.rint(arr))][0])
            raise ValueError(
                f"steps must be whole numbers (got {bad!r}): round them, e.g. with np.rint"
            )
        arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() > n:
        raise ValueError(
            f"steps must lie in [0, {n}] (got min {arr.min()}, max {arr.max()}): "
            "iterates run from theta_0 to theta_n_steps"
        )
    return np.unique(arr.astype(np.int64, copy=False))
