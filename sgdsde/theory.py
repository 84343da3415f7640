"""Closed-form predictions the papers compare simulations against (numpy / scipy only).

Conventions (docs/conventions.md): L(theta) = 1/(2n) sum_i r_i^2 with r = f(X) - y, GD
theta <- theta - eta grad L, SDE time t = sum of step sizes. Every constant below is
derived for these conventions (some papers use plain MSE: their eta is 2x ours).

* ``gd_stability_edge``: 2 / lambda_max of the Hessian, the step size above which GD
  leaves a quadratic valley (Cohen et al., ICLR 2021, "Gradient descent on neural
  networks typically occurs at the edge of stability").
* The u*u - v*v diagonal network (Woodworth et al., COLT 2020, "Kernel and rich regimes
  in overparametrized models"): ``gradient_flow_limit`` from the init scale alpha, and
  its two ends ``min_l1_interpolator`` (alpha -> 0) and ``min_l2_interpolator``
  (alpha -> infinity).
* The stochastic-collapse thresholds of Chen, Kunin, Yamamura, Ganguli ("Stochastic
  Collapse", NeurIPS 2023) drawn by the gallery kinds ``paper_collapse_quartic``
  (Fig. 1: ``sde_threshold``, ``discrete_growth_rate``, ``discrete_threshold``),
  ``paper_collapse_tanh`` (Fig. 2: ``label_noise_threshold``, ``matched_sde_threshold``,
  ``sgd_exponent``, ``sgd_threshold``) and ``paper_collapse_linear_modes`` (Fig. 5:
  ``soft_threshold_level``, ``soft_threshold``), and the GD walk window of
  ``paper_walk`` (``walk_window``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sgdsde.data import RegressionData
from sgdsde.models.base import as_params

# ----------------------------------------------------------------------------------------
# GD stability


def gd_stability_edge(model: Any, theta: np.ndarray, data: RegressionData) -> np.ndarray:
    """2 / lambda_max(H(theta)) per trajectory, (T,): the step size above which GD
    diverges from a quadratic valley of Hessian H = grad^2 L (the iterate's component
    along the top eigenvector is multiplied by 1 - eta lambda_max per step; Cohen et al.,
    ICLR 2021). inf where lambda_max <= 0 (no edge).

    model: a model with ``top_hessian_eigenvalue(theta, X, y)``. theta: its parameters,
    (T, p) or (p,). data: the training data of L = 1/(2n) sum r_i^2.
    """
    theta = as_params(theta, model.n_params)
    lam = np.asarray(model.top_hessian_eigenvalue(theta, data.X, data.y), dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(lam > 0, 2.0 / np.where(lam > 0, lam, 1.0), np.inf)


# ----------------------------------------------------------------------------------------
# The u*u - v*v diagonal network


def _check_design(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(
            f"X must be (n, d) and y (n,) (got X {X.shape}, y {y.shape}): pass the "
            "training inputs and labels of one problem"
        )
    if X.shape[0] > X.shape[1] or np.linalg.matrix_rank(X) < X.shape[0]:
        raise ValueError(
            f"X {X.shape} must have full row rank n <= d so that X beta = y has "
            "interpolators: use an overparametrized problem (n <= d, generic X)"
        )
    return X, y


def gradient_flow_limit(
    X: Any, y: Any, alpha: float, *, rtol: float = 1e-12, max_iter: int = 500
) -> np.ndarray:
    """The limit beta_inf of gradient flow on the u*u - v*v diagonal network from
    u0 = v0 = alpha (``DiagonalLinearNet(parametrization="uu-vv")``'s init), (d,).

    Derivation in our conventions: with g = grad_beta L = X^T r / n, gradient flow is
    u' = -2 g u, v' = +2 g v, so u = alpha e^{-2 G}, v = alpha e^{2 G} with
    G(t) = int_0^t g ds, and beta = u^2 - v^2 = -2 alpha^2 sinh(4 G). Hence
    (Woodworth et al., COLT 2020, Thm. 1, there with the same 2 alpha^2)

        beta_inf = 2 alpha^2 sinh(X^T mu),   mu = -(4/n) int_0^inf r(t) dt  in R^n,

    and mu is fixed by X beta_inf = y (the flow converges to an interpolator when
    n <= d). X beta(mu) = y is the stationarity of the strictly convex dual
    D(mu) = 2 alpha^2 sum_j cosh((X^T mu)_j) - y . mu, solved here by Newton's method
    with backtracking on D (Hessian 2 alpha^2 X diag(cosh(X^T mu)) X^T). beta_inf
    minimizes sum_j alpha^2 q(beta_j / alpha^2), q(z) = 2 - sqrt(4 + z^2) +
    z arcsinh(z / 2), among interpolators.

    X: inputs (n, d), full row rank, n <= d. y: labels (n,). alpha: init scale > 0.
    rtol: stop when ||X beta - y|| <= rtol ||y||. max_iter: Newton steps at most
    (RuntimeError beyond).
    """
    X, y = _check_design(X, y)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite init scale > 0 (got {alpha!r})")
    log_scale = math.log(2.0 * alpha * alpha)  # cosh and sinh in logs: alpha may be tiny

    def scaled(z, fn):  # 2 alpha^2 fn(z) for fn = sinh or cosh, without overflow
        half = np.exp(np.abs(z) + log_scale - math.log(2.0))  # alpha^2 e^|z|
        if fn == "cosh":
            return half * (1.0 + np.exp(-2.0 * np.abs(z)))
        return np.sign(z) * half * -np.expm1(-2.0 * np.abs(z))

    def dual(mu):
        return float(np.sum(scaled(X.T @ mu, "cosh")) - y @ mu)

    mu = np.zeros(X.shape[0])
    target = rtol * max(float(np.linalg.norm(y)), 1e-300)
    for _ in range(max_iter):
        z = X.T @ mu
        grad = X @ scaled(z, "sinh") - y
        if np.linalg.norm(grad) <= target:
            return scaled(z, "sinh")
        hess = (X * scaled(z, "cosh")) @ X.T
        step = np.linalg.solve(hess, -grad)
        mu = mu + _damped(dual, mu, step, float(grad @ step)) * step
    raise RuntimeError(
        f"Newton did not reach ||X beta - y|| <= {rtol} ||y|| in {max_iter} steps "
        f"(alpha = {alpha}): raise max_iter or rtol"
    )


def _damped(dual: Callable[[np.ndarray], float], mu: np.ndarray, step, slope: float) -> float:
    """The Armijo step length along a Newton direction (slope = grad . step < 0), halved
    from 1; 1 once the predicted decrease -slope is below the rounding of D itself, where
    D can no longer rank the points and Newton's quadratic convergence needs no damping."""
    value, t = dual(mu), 1.0
    if -slope <= 1e-12 * (1.0 + abs(value)):
        return t
    with np.errstate(over="ignore"):  # a far trial point: D = inf, halved again
        while dual(mu + t * step) > value + 0.25 * t * slope and t > 1e-30:
            t *= 0.5
    return t


def min_l1_interpolator(X: Any, y: Any) -> np.ndarray:
    """argmin ||beta||_1 subject to X beta = y, (d,): the alpha -> 0 end of
    ``gradient_flow_limit`` (the "rich regime", Woodworth et al., COLT 2020, Thm. 2),
    solved as the linear program beta = p - q, p, q >= 0, min 1.(p + q) (HiGHS).

    X: inputs (n, d), full row rank, n <= d. y: labels (n,).
    """
    from scipy.optimize import linprog

    X, y = _check_design(X, y)
    d = X.shape[1]
    res = linprog(np.ones(2 * d), A_eq=np.hstack([X, -X]), b_eq=y, bounds=(0, None))
    if not res.success:
        raise RuntimeError(f"linprog failed: {res.message}")
    return res.x[:d] - res.x[d:]


def min_l2_interpolator(X: Any, y: Any) -> np.ndarray:
    """argmin ||beta||_2 subject to X beta = y, X^+ y, (d,): the alpha -> infinity end of
    ``gradient_flow_limit`` (the "kernel regime": sinh is linear near 0, so beta_inf lies
    in the row space of X; Woodworth et al., COLT 2020, Thm. 2).

    X: inputs (n, d), full row rank, n <= d. y: labels (n,).
    """
    X, y = _check_design(X, y)
    return np.linalg.pinv(X) @ y
