"""Checks of plain argument values (numbers, counts), shared by every layer: each raises
a ValueError naming the argument and the value. Checks that involve models, data or
runs live in ``sgdsde.run.checks``."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_real(value: Any) -> bool:
    """A Python or numpy real number, not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def check_positive_int(**values: Any) -> None:
    """Each keyword value is an integer >= 1 (not a bool)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{key} must be a positive integer (got {value!r})")


def check_finite(**values: Any) -> None:
    """Each keyword value is a finite real number."""
    for key, value in values.items():
        if not is_real(value) or not np.isfinite(value):
            raise ValueError(f"{key} must be a finite number (got {value!r})")


def check_nonnegative(**values: Any) -> None:
    """Each keyword value is a finite real number >= 0."""
    for key, value in values.items():
        if not is_real(value) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{key} must be a finite number >= 0 (got {value!r})")
