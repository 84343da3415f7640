"""What the stochastic-collapse gallery kinds share (Chen, Kunin, Yamamura, Ganguli,
"Stochastic Collapse", NeurIPS 2023; reference notes collapse-walk.md Sec. 1.3).

The three toy experiments (``paper_collapse_quartic``, ``paper_collapse_tanh``,
``paper_collapse_gelu``) simulate a batch of ``n_paths`` trajectories per run and seed
index in one call. Trajectory (run r, seed index s, path j) is seeded with
``seed_child(seed_children(root)[s], j)``: the same for every run r, so all runs of a
seed index share their random numbers (common random numbers, as the notebooks reset
the seed before each run), and a seed index's numbers do not depend on ``n_seeds`` or
``n_paths``. Trajectories are laid out run-major, then seed, then path
(``grid_shape``), so a (T, ...) result reshapes to (run, seed, path, ...).

A *collapse fraction* of seed index s is the fraction of its ``n_paths`` trajectories
that sit in the collapsed set; the table reports its distribution over the seed indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sgdsde.analysis.phase import seed_child
from sgdsde.experiments.config import ConfigChecker
from sgdsde.experiments.gallery import seed_children
from sgdsde.experiments.phase import grid_values
from sgdsde.random import trajectory_streams


def path_seeds(root: Any, n_runs: int, n_seeds: int, n_paths: int) -> list[np.random.SeedSequence]:
    """One seed per trajectory, run-major then seed index then path: trajectory
    (r, s, j) gets ``seed_child(seed_children(root, n_seeds)[s], j)`` whatever r.

    root: the config's root seed (int or SeedSequence). n_runs, n_seeds, n_paths: the
    grid's sizes (``grid_shape``).
    """
    per_seed = [
        [seed_child(child, j) for j in range(n_paths)] for child in seed_children(root, n_seeds)
    ]
    return [seed for _ in range(n_runs) for seeds in per_seed for seed in seeds]


def gaussian_starts(seeds: list[np.random.SeedSequence], std: float, p: int) -> np.ndarray:
    """theta0 ~ N(0, std^2 I_p) per trajectory, (T, p), drawn from each trajectory's
    ``"init"`` stream (``sgdsde.random.trajectory_streams``, as the simulators draw a
    model's init); equal seeds give equal starts, so every run of a seed index starts
    from the same points.

    seeds: one SeedSequence per trajectory (``path_seeds``). std: the standard deviation.
    p: the number of parameters.
    """
    streams = trajectory_streams(seeds, len(seeds))["init"]
    return np.stack([std * rng.standard_normal(p) for rng in streams])


def grid_shape(values: np.ndarray, n_runs: int, n_seeds: int) -> np.ndarray:
    """A per-trajectory array (T, ...) with T = n_runs n_seeds n_paths, run-major, as
    (run, seed, path, ...)."""
    values = np.asarray(values)
    return values.reshape(n_runs, n_seeds, -1, *values.shape[1:])


#: Gaussian integrals are taken over |z| <= Z_MAX: beyond it there is no mass in double
#: precision.
Z_MAX = 40.0


def expected_log_abs(a: float, b: float) -> float:
    """E log|a + b z| for z ~ N(0, 1): the growth rate per step of a linear recursion
    theta <- (a + b z) theta near an invariant point.

    With r = -a/b it is log|b| + int log|z - r| phi(z) dz; the log singularity at r is
    taken out analytically, int log|z - r| (phi(z) - phi(r)) dz + phi(r) int log|z - r| dz,
    so that quadrature only sees a continuous integrand (over |z| <= ``Z_MAX``).

    a, b: the multiplier's mean and its noise scale.
    """
    from scipy import integrate  # scipy costs ~0.2 s to import: on first use

    if b == 0:
        return math.log(abs(a))
    r = -a / b

    def phi(z):
        return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    def smooth(z):
        return 0.0 if z == r else math.log(abs(z - r)) * (phi(z) - phi(r))

    def antiderivative(u):  # of log|u|
        return 0.0 if u == 0 else u * math.log(abs(u)) - u

    points = [r] if abs(r) < Z_MAX else None
    body = integrate.quad(smooth, -Z_MAX, Z_MAX, points=points, limit=200)[0]
    singular = phi(r) * (antiderivative(Z_MAX - r) - antiderivative(-Z_MAX - r))
    return math.log(abs(b)) + body + singular


def first_sign_change(fn: Callable[[float], float], grid: np.ndarray) -> float:
    """The first x of ``grid`` (increasing) where ``fn`` goes from > 0 to <= 0, refined by
    Brent's method between the two grid points that bracket it; NaN if it never does.

    fn: a continuous function of one number. grid: where to scan.
    """
    from scipy import optimize

    values = [fn(x) for x in grid]
    for lo, hi, f_lo, f_hi in zip(grid[:-1], grid[1:], values[:-1], values[1:], strict=True):
        if f_lo > 0 >= f_hi:
            return float(optimize.brentq(fn, lo, hi)) if f_hi < 0 else float(hi)
    return math.nan


def fractions_of_run(checker: ConfigChecker, path: str, value: Any) -> tuple[float, ...] | None:
    """A list of distinct fractions of the run in (0, 1] (``grid_values``), sorted; None
    with the problem recorded otherwise."""
    values = grid_values(checker, path, value, spacing="linear", positive=True)
    if values is None:
        return None
    if np.any(values > 1):
        checker.problem(path, f"must hold fractions of the run in (0, 1] (got {values.tolist()})")
        return None
    return tuple(sorted(values.tolist()))


def interval(checker: ConfigChecker, path: str, value: Any) -> tuple[float, float] | None:
    """[lo, hi] with 0 <= lo < hi; None with the problem recorded otherwise."""
    values = grid_values(checker, path, value, spacing="linear", positive=False)
    if values is None:
        return None
    if values.size != 2 or values[0] >= values[1]:
        checker.problem(path, f"must be [lo, hi] with lo < hi (got {values.tolist()})")
        return None
    return float(values[0]), float(values[1])
