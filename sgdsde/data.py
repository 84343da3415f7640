"""Seeded data generators for the toy experiments.

Every generator takes ``seed`` (int or ``np.random.SeedSequence``) and returns a
``RegressionData``: training inputs/targets, an independent test set, and the
generator's resolved configuration (written into every output dataset).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class RegressionData:
    """A regression problem: X (n, d), y (n,), X_test (n_test, d), y_test (n_test,)."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    beta_star: np.ndarray | None = None

    def __post_init__(self):
        for name in ("X", "y", "X_test", "y_test"):
            arr = np.ascontiguousarray(np.asarray(getattr(self, name), dtype=np.float64))
            if name.startswith("X") and arr.ndim == 1:
                arr = arr[:, None]
            object.__setattr__(self, name, arr)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"data array {name} contains NaN or inf: clean the data first")
        if self.X.ndim != 2 or self.y.ndim != 1 or self.X.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"X must be (n, d) and y (n,), got X {self.X.shape} and y {self.y.shape}"
            )
        if self.X_test.ndim != 2 or self.X_test.shape[1] != self.X.shape[1]:
            raise ValueError(f"X_test must be (n_test, {self.X.shape[1]}), got {self.X_test.shape}")
        if self.y_test.shape != (self.X_test.shape[0],):
            raise ValueError(f"y_test must be ({self.X_test.shape[0]},), got {self.y_test.shape}")
        if self.X.shape[0] < 1:
            raise ValueError("the training set is empty: give at least one example")

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_positive_int(**values):
    for key, value in values.items():
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{key} must be a positive integer (got {value!r})")


def sparse_regression(
    n: int = 80,
    d: int = 200,
    k: int = 20,
    n_test: int = 1000,
    noise_std: float = 0.0,
    seed=0,
) -> RegressionData:
    """Sparse linear regression of Andriushchenko et al. (2023), Sec. 3 / ``diag_nets.ipynb``.

    x ~ N(0, I_d); beta* has k non-zero (first) coordinates, |N(0, 1)| draws
    normalised to ||beta*||_2 = 1; y = X beta* (+ noise_std * N(0, 1) on the
    training labels only, so the test loss measures recovery of beta*).
    """
    _check_positive_int(n=n, d=d, k=k, n_test=n_test)
    if k > d:
        raise ValueError(f"k = {k} non-zero coordinates cannot exceed d = {d}")
    if not np.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be >= 0 (got {noise_std})")
    rng = _rng(seed)
    beta = np.zeros(d)
    beta[:k] = np.abs(rng.standard_normal(k))
    beta /= np.linalg.norm(beta)
    X = rng.standard_normal((n, d))
    X_test = rng.standard_normal((n_test, d))
    y = X @ beta + noise_std * rng.standard_normal(n)
    config = dict(generator="sparse_regression", n=n, d=d, k=k, n_test=n_test, noise_std=noise_std)
    config["seed"] = seed if isinstance(seed, int | np.integer) else str(seed)
    return RegressionData(X, y, X_test, X_test @ beta, config, beta_star=beta)


def _unit_sphere(rng, m, d):
    x = rng.standard_normal((m, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def teacher_student_sphere(
    n: int = 15, d: int = 2, teacher_width: int = 3, n_test: int = 1000, seed=1
) -> RegressionData:
    """Two-layer ReLU teacher on the unit sphere (``fc_nets_two_layer.ipynb``).

    Inputs are Gaussian vectors normalised to ||x|| = 1. The teacher
    f*(x) = sum_j a_j relu(w_j . x) has unit-norm rows w_j and a_j = +-1 (signs of
    Gaussians), no biases. Its weights are in ``config["teacher"]``.
    """
    _check_positive_int(n=n, d=d, teacher_width=teacher_width, n_test=n_test)
    rng = _rng(seed)
    W = _unit_sphere(rng, teacher_width, d)
    a = np.sign(rng.standard_normal(teacher_width))
    X = _unit_sphere(rng, n, d)
    X_test = _unit_sphere(rng, n_test, d)

    def teacher(Z):
        return np.maximum(Z @ W.T, 0.0) @ a

    config = dict(
        generator="teacher_student_sphere",
        n=n,
        d=d,
        teacher_width=teacher_width,
        n_test=n_test,
        seed=seed if isinstance(seed, int | np.integer) else str(seed),
        teacher={"W": W.tolist(), "a": a.tolist()},
    )
    return RegressionData(X, teacher(X), X_test, teacher(X_test), config)


def regression_1d() -> RegressionData:
    """The 12-point 1-D regression benchmark of ``fc_nets_1d_regression.ipynb``.

    x = (-5.5, -4.5, ..., 5.5)/4 + 0.07, y = 0.345 + (-2, 1.5, 0, 0, 2, 1, 0, -1, 0, 1, 2, -1).
    The training set doubles as the test set, as in the notebook.
    """
    x = (np.arange(12) - 5.5) / 4 + 0.07
    y = 0.345 + np.array([-2, 1.5, 0, 0, 2, 1, 0, -1, 0, 1, 2, -1], dtype=float)
    return RegressionData(x[:, None], y, x[:, None], y.copy(), {"generator": "regression_1d"})


GENERATORS = {
    "sparse_regression": sparse_regression,
    "teacher_student_sphere": teacher_student_sphere,
    "regression_1d": regression_1d,
}


def make_data(generator: str, **kwargs) -> RegressionData:
    """Build a data set by generator name (see ``GENERATORS``)."""
    if generator not in GENERATORS:
        raise ValueError(
            f"unknown data generator {generator!r}: choose one of {sorted(GENERATORS)}"
        )
    try:
        return GENERATORS[generator](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for data generator {generator!r}: {err}") from err
