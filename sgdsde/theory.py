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
  (alpha -> infinity); ``gradient_flow_limit_of`` a ``DiagonalLinearNet``'s own limit
  ("uv" or "uu-vv" from its constant init) and ``gradient_flow_limit_params`` the
  parameters there; ``label_noise_scale_decay``, how label noise shrinks its scale.
* The weighted Lasso that label noise solves on every diagonal network (Pillaud-Vivien,
  Reygner, Flammarion, COLT 2022): ``label_noise_lasso`` and its penalty
  ``label_noise_lasso_penalty`` (constant per parametrization in ``LASSO_CONSTANTS``),
  solved by ``weighted_lasso`` (docs/conventions.md, "Implicit Lasso of label noise").
* The stochastic-collapse thresholds of Chen, Kunin, Yamamura, Ganguli ("Stochastic
  Collapse", NeurIPS 2023) drawn by the gallery kinds ``paper_collapse_quartic``
  (Fig. 1: ``sde_threshold``, ``discrete_growth_rate``, ``discrete_threshold``),
  ``paper_collapse_tanh`` (Fig. 2: ``label_noise_threshold``, ``matched_sde_threshold``,
  ``sgd_exponent``, ``sgd_threshold``, from ``tanh_collapse_moments``) and
  ``paper_collapse_linear_modes`` (Fig. 5: ``soft_threshold_level``, ``soft_threshold``),
  and the GD walk window of
  ``paper_walk`` (``walk_window``). The discrete-step rates rest on
  ``expected_log_abs`` (E log|a + b z|) and the thresholds on ``first_sign_change``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sgdsde.data import RegressionData
from sgdsde.models.base import as_params
from sgdsde.models.diagonal import (
    PARAMETRIZATIONS,
    UV,
    WW,
    DiagonalLinearNet,
    Parametrization,
    UUminusVV,
)

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
    return step_edge(model.top_hessian_eigenvalue(theta, data.X, data.y), 2.0)


def step_edge(lam: Any, factor: float) -> np.ndarray:
    """factor / lambda elementwise, inf where lambda <= 0 (no edge): the GD edge
    2 / lambda_max, or the catapult window's ends 2 / lambda_0 and 4 / lambda_0 of
    Lewkowycz et al. (2020) with lambda_0 the NTK's top eigenvalue."""
    lam = np.asarray(lam, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(lam > 0, factor / np.where(lam > 0, lam, 1.0), np.inf)


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


def has_gradient_flow_limit(model: Any) -> bool:
    """Whether ``gradient_flow_limit_of`` knows the model's gradient-flow limit: a
    ``DiagonalLinearNet`` with parametrization "uv" or "uu-vv", its constant init,
    alpha > 0."""
    return (
        isinstance(model, DiagonalLinearNet)
        and model.parametrization in ("uv", "uu-vv")
        and model.init_scheme == "constant"
        and model.alpha > 0
    )


def gradient_flow_limit_of(model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The limit of gradient flow on the diagonal network ``model`` from its constant
    init (``gradient_flow_limit``, Woodworth et al., COLT 2020), (d,).

    * "uu-vv", u0 = v0 = alpha: ``gradient_flow_limit(X, y, alpha)``, 2 alpha^2 sinh(X^T mu).
    * "uv", u0 = alpha, v0 = 0: with g = X^T r / n, the flow u' = -g v, v' = -g u keeps
      u^2 - v^2 = alpha^2, so u = alpha cosh(phi), v = alpha sinh(phi) with phi' = -g,
      and beta = u v = (alpha^2 / 2) sinh(2 phi) = (alpha^2 / 2) sinh(-2 int g): the
      form 2 a^2 sinh(X^T mu) at a = alpha / 2, ``gradient_flow_limit(X, y, alpha / 2)``
      (tests/test_paper_dln_theory.py checks it against GD at small steps).

    model: a ``DiagonalLinearNet`` (``has_gradient_flow_limit``). X: training inputs
    (n, d), full row rank, n <= d. y: labels (n,).
    """
    if not has_gradient_flow_limit(model):
        raise ValueError(
            f"no closed-form gradient-flow limit for {model!r}: it is known for a "
            'diagonal_linear model with parametrization "uv" or "uu-vv", init_scheme = '
            '"constant" and alpha > 0'
        )
    scale = model.alpha / 2 if model.parametrization == "uv" else model.alpha
    return gradient_flow_limit(X, y, scale)


def gradient_flow_limit_params(model: Any, beta: np.ndarray) -> np.ndarray:
    """The parameters (u, v) (2d,) that gradient flow from ``model``'s constant init
    reaches at the predictor ``beta`` (d,), by the invariants of the flow: for "uv",
    u^2 - v^2 = alpha^2 and u v = beta, so u = alpha cosh(phi), v = alpha sinh(phi) with
    sinh(2 phi) = 2 beta / alpha^2; for "uu-vv", u v = alpha^2 (the flow's u = alpha
    e^{-2G}, v = alpha e^{2G}) and u^2 - v^2 = beta, so u = alpha e^{-psi},
    v = alpha e^{psi} with -2 alpha^2 sinh(2 psi) = beta.

    model: as for ``gradient_flow_limit_of``. beta: a point of the flow (its limit).
    """
    if not has_gradient_flow_limit(model):
        raise ValueError(f"no gradient-flow invariants for {model!r} (see gradient_flow_limit_of)")
    a2 = model.alpha**2
    if model.parametrization == "uv":
        phi = 0.5 * np.arcsinh(2.0 * beta / a2)
        return np.concatenate([model.alpha * np.cosh(phi), model.alpha * np.sinh(phi)])
    psi = -0.5 * np.arcsinh(beta / (2.0 * a2))
    return np.concatenate([model.alpha * np.exp(-psi), model.alpha * np.exp(psi)])


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


def label_noise_scale_decay(X: Any, lr: float, delta: float, batch_size: int) -> np.ndarray:
    """The rate kappa_j, (d,), at which the label-noise SDE shrinks the effective init
    scale of the u*u - v*v diagonal network: d log(u_j v_j) = -kappa_j dt exactly, with

        kappa_j = (4 eta delta / B) s_j,   s_j = (1/n) sum_i x_ij^2.

    Derivation in our conventions (docs/conventions.md, "Label-noise SDE": noise
    sqrt(eta delta / (n B)) phi^T dW, row i of phi = (2 x_i * u, -2 x_i * v)): by Ito,
    d log u_j = (-2 g_j - kappa_j / 2) dt + 2 sqrt(eta delta / (n B)) (X^T dW)_j and
    d log v_j = (+2 g_j - kappa_j / 2) dt - the same noise, so the noise and the gradient
    cancel in log(u_j v_j). With u0 = v0 = alpha, u_j v_j = alpha^2 e^{-kappa_j t} and
    beta_j = 2 u_j v_j sinh(log(u_j / v_j)): the form of ``gradient_flow_limit`` with a
    per-coordinate scale alpha_j(t)^2 = alpha^2 e^{-kappa_j t}, which label noise drives
    to 0 fastest where s_j is largest. This is the mechanism of the weighted Lasso that
    label-noise GD implicitly solves (Pillaud-Vivien, Reygner, Flammarion, COLT 2022);
    that limit is ``label_noise_lasso`` (its penalty ``label_noise_lasso_penalty``,
    derived there for every parametrization). Label-noise GD (B = n) is the
    Euler-Maruyama step of this SDE at dt = eta, so it follows the rate up to O(eta).

    X: training inputs (n, d). lr: the SGD step eta > 0. delta: the label-noise
    variance >= 0. batch_size: B, 1 <= B <= n.
    """
    return 4.0 * _label_noise_rate(X, lr, delta, batch_size)


def _label_noise_rate(X: Any, lr: float, delta: float, batch_size: int) -> np.ndarray:
    """V_j = eta delta s_j / B, (d,), s_j = (1/n) sum_i x_ij^2: the rate at which the
    label-noise SDE's multiplicative noise accumulates on coordinate j (the unit of
    ``label_noise_scale_decay`` and ``label_noise_lasso_penalty``), after checking
    lr > 0, delta >= 0 and 1 <= B <= n."""
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be the (n, d) training inputs (got shape {X.shape})")
    if not (np.isfinite(lr) and lr > 0) or not (np.isfinite(delta) and delta >= 0):
        raise ValueError(f"lr must be > 0 and delta >= 0, both finite (got {lr!r}, {delta!r})")
    if not 1 <= batch_size <= X.shape[0]:
        raise ValueError(f"batch_size must be in [1, n = {X.shape[0]}] (got {batch_size!r})")
    return lr * delta / batch_size * np.mean(X * X, axis=0)


# ----------------------------------------------------------------------------------------
# The implicit Lasso of label noise on diagonal networks (Pillaud-Vivien et al., COLT 2022)


#: c in lambda_j = c eta delta s_j / B, per parametrization (``label_noise_lasso_penalty``).
LASSO_CONSTANTS: dict[type[Parametrization], float] = {UUminusVV: 1.0, UV: 0.5, WW: 1.0}


def as_parametrization(parametrization: Any) -> Parametrization:
    """The ``Parametrization`` object of ``parametrization``: itself, or the one a
    ``DiagonalLinearNet`` was built with."""
    if isinstance(parametrization, DiagonalLinearNet):
        return PARAMETRIZATIONS[parametrization.parametrization]
    if isinstance(parametrization, Parametrization) and type(parametrization) in LASSO_CONSTANTS:
        return parametrization
    raise ValueError(
        f"parametrization must be a sgdsde.models.diagonal.Parametrization (UV(), "
        f"UUminusVV(), WW()) or a DiagonalLinearNet (got {parametrization!r}): for a config "
        "name such as 'uu-vv' pass sgdsde.models.diagonal.PARAMETRIZATIONS['uu-vv']"
    )


def label_noise_lasso_penalty(
    parametrization: Any, X: Any, lr: float, delta: float, batch_size: int
) -> np.ndarray:
    """The weights lambda_j, (d,), of the weighted Lasso that the label-noise SDE of a
    diagonal linear network solves in the long run (Pillaud-Vivien, Reygner, Flammarion,
    COLT 2022, "Label noise (stochastic) gradient descent implicitly solves the Lasso for
    quadratic parametrisation"; ``label_noise_lasso``):

        lambda_j = c eta delta s_j / B,   s_j = (1/n) sum_i x_ij^2,
        c = 1 for u*u - v*v and w*w,   c = 1/2 for u*v  (``LASSO_CONSTANTS``).

    Derivation in our conventions (docs/conventions.md, "Label-noise SDE" and "Implicit
    Lasso of label noise"). The SDE's noise is sigma phi^T dW, sigma^2 = eta delta / (n B),
    so parameter theta_j of coordinate j receives (d beta_j / d theta_j) sigma dM_j with
    M_j = (X^T W)_j, d<M_j> = n s_j dt; write V_j = n sigma^2 s_j = eta delta s_j / B and
    g = grad_beta L = X^T (X beta - y) / n. By Ito:

    * u*u - v*v: du_j = -2 g_j u_j dt + 2 u_j sigma dM_j, dv_j = 2 g_j v_j dt -
      2 v_j sigma dM_j, so d log(u_j v_j) = -4 V_j dt (``label_noise_scale_decay``) and
      u_j v_j -> 0: |beta_j| = u_j^2 + v_j^2 in the limit, and d beta_j =
      -4 g_j (u_j^2 + v_j^2) dt + 4 V_j beta_j dt + 4 (u_j^2 + v_j^2) sigma dM_j gives
      d log|beta_j| = -4 (sign(beta_j) g_j + V_j) dt + 4 sigma dM_j.
    * u*v (anchor u0 = alpha, v0 = 0): du_j = -g_j v_j dt + v_j sigma dM_j, dv_j =
      -g_j u_j dt + u_j sigma dM_j, so d(u_j^2 - v_j^2) = -V_j (u_j^2 - v_j^2) dt exactly
      (alpha^2 e^{-V_j t}) and |beta_j| = (u_j^2 + v_j^2) / 2 in the limit; d beta_j =
      -g_j (u_j^2 + v_j^2) dt + V_j beta_j dt + (u_j^2 + v_j^2) sigma dM_j gives
      d log|beta_j| = -2 (sign(beta_j) g_j + V_j / 2) dt + 2 sigma dM_j.
      (It is u*u - v*v in a = (u + v)/sqrt 2, b = (u - v)/sqrt 2 on inputs X / 2, with
      beta' = a^2 - b^2 = 2 beta: there V_j is V_j / 4, and (V_j / 4)|beta'_j| =
      (V_j / 2)|beta_j|.)
    * w*w: dw_j = -2 g_j w_j dt + 2 w_j sigma dM_j, so exactly, with no scale to decay,
      d log beta_j = -4 (g_j + V_j) dt + 4 sigma dM_j, and beta_j > 0 for ever.

    A coordinate that survives has a stationary log|beta_j|: its drift averages to 0, and
    since g is affine in beta the time-averaged beta satisfies g_j = -c V_j sign(beta_j);
    one with |g_j| < c V_j (w*w: g_j > -V_j) has a negative drift and decays to 0. These
    are the KKT conditions of min L(beta) + sum_j lambda_j |beta_j| (w*w: over beta >= 0).
    With a step-size schedule eta_k, lambda follows the current eta.

    parametrization: a ``Parametrization`` object of sgdsde.models.diagonal (``UV()``,
    ``UUminusVV()``, ``WW()``) or a ``DiagonalLinearNet``. X: training inputs (n, d).
    lr: the SGD step eta > 0. delta: the label-noise variance >= 0. batch_size: B, the
    label-noise SDE's batch size, 1 <= B <= n (B = n: label-noise GD).
    """
    constant = LASSO_CONSTANTS[type(as_parametrization(parametrization))]
    return constant * _label_noise_rate(X, lr, delta, batch_size)


def label_noise_lasso(
    parametrization: Any, X: Any, y: Any, lr: float, delta: float, batch_size: int
) -> np.ndarray:
    """beta_lambda, (d,): the point the time average of a diagonal network's label-noise
    SDE converges to (Pillaud-Vivien, Reygner, Flammarion, COLT 2022), the weighted Lasso

        argmin_beta 1/(2n) ||X beta - y||^2 + sum_j lambda_j |beta_j|   (w*w: beta >= 0),

    lambda_j = c eta delta s_j / B from ``label_noise_lasso_penalty`` (derivation and
    constant c per parametrization there), solved by ``weighted_lasso``. Coordinates with
    |g_j| < lambda_j at beta_lambda (g = grad L) are exactly 0: label noise sparsifies.
    Label-noise GD (B = n) is Euler-Maruyama of this SDE at dt = eta: its time average
    approaches beta_lambda up to O(eta) (tests/test_theory_lasso.py). Minibatch SGD adds
    sampling noise proportional to the residuals, which lambda does not contain.

    parametrization: a ``Parametrization`` object (``UV()``, ``UUminusVV()``, ``WW()``)
    or a ``DiagonalLinearNet``. X: training inputs (n, d), no zero column. y: labels (n,).
    lr: the SGD step eta > 0. delta: the label-noise variance > 0. batch_size: B,
    1 <= B <= n.
    """
    if not delta > 0:
        raise ValueError(
            f"delta must be > 0 (got {delta!r}): without label noise there is no implicit "
            "penalty; the noiseless limit of u*u - v*v is gradient_flow_limit"
        )
    parametrization = as_parametrization(parametrization)
    penalty = label_noise_lasso_penalty(parametrization, X, lr, delta, batch_size)
    return weighted_lasso(X, y, penalty, nonnegative=isinstance(parametrization, WW))


def weighted_lasso(
    X: Any,
    y: Any,
    penalty: Any,
    *,
    nonnegative: bool = False,
    tol: float = 1e-12,
    max_iter: int = 1_000_000,
) -> np.ndarray:
    """argmin_beta 1/(2n) ||X beta - y||^2 + sum_j penalty_j |beta_j| (over beta >= 0 if
    ``nonnegative``), (d,), unique for X in general position (Tibshirani, EJS 2013).

    Solved by scikit-learn's coordinate-descent ``Lasso`` (the same objective with one
    alpha, no intercept) on the columns X_j / w_j, w_j = penalty_j / alpha, alpha the
    mean penalty: with gamma_j = w_j beta_j the objective is sklearn's in gamma. The
    result is then checked against the KKT conditions, with g = X^T (X beta - y) / n:
    g_j = -penalty_j sign(beta_j) where beta_j != 0, |g_j| <= penalty_j (nonnegative:
    g_j >= -penalty_j) where beta_j = 0, to a relative 1e-6 (RuntimeError otherwise).

    X: inputs (n, d). y: labels (n,). penalty: lambda_j > 0, (d,) or a scalar.
    nonnegative: constrain beta >= 0. tol: sklearn's duality-gap tolerance (relative to
    ||y||^2 / n). max_iter: coordinate-descent sweeps at most (RuntimeError beyond).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso  # ~1 s to import: on first use

    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(
            f"X must be (n, d) and y (n,) (got X {X.shape}, y {y.shape}): pass the "
            "training inputs and labels of one problem"
        )
    penalty = np.broadcast_to(np.asarray(penalty, dtype=float), (X.shape[1],))
    bad = np.flatnonzero(~(np.isfinite(penalty) & (penalty > 0)))
    if bad.size:
        raise ValueError(
            f"penalty must be finite and > 0 in every coordinate (got {penalty[bad[0]]!r} "
            f"at coordinate {bad[0]}): a zero weight comes from a zero column of X (drop "
            "it) or from delta = 0 (no Lasso)"
        )
    alpha = float(penalty.mean())
    weights = penalty / alpha
    solver = Lasso(
        alpha=alpha, fit_intercept=False, positive=nonnegative, tol=tol, max_iter=max_iter
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            solver.fit(X / weights, y)
        except ConvergenceWarning as exc:
            raise RuntimeError(
                f"the Lasso did not converge to tol = {tol} in {max_iter} sweeps: raise "
                f"max_iter or tol ({exc})"
            ) from None
    beta = solver.coef_ / weights + 0.0  # + 0.0: no -0.0 in the zeros
    _check_lasso_kkt(X, y, penalty, beta, nonnegative)
    return beta


def _check_lasso_kkt(X, y, penalty, beta, nonnegative, rtol: float = 1e-6) -> None:
    """RuntimeError unless beta meets the weighted Lasso's KKT conditions to ``rtol``."""
    g = X.T @ (X @ beta - y) / X.shape[0]
    on = beta != 0
    off_violation = -g - penalty if nonnegative else np.abs(g) - penalty
    violation = np.where(on, np.abs(g + penalty * np.sign(beta)), off_violation) / penalty
    if np.max(violation) > rtol:
        j = int(np.argmax(violation))
        raise RuntimeError(
            f"the Lasso solution violates its KKT conditions by {violation[j]:.2e} x "
            f"penalty at coordinate {j}: lower tol"
        )


# ----------------------------------------------------------------------------------------
# Growth rates of linear recursions with Gaussian multipliers (for the collapse thresholds)


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


# ----------------------------------------------------------------------------------------
# Stochastic collapse, the quartic well (Chen et al. 2023, Fig. 1; paper_collapse_quartic)


def sde_threshold(mu: float) -> float:
    """sqrt(2 mu): the noise level zeta above which the quartic-well SDE collapses to 0
    (Chen et al. 2023, Fig. 1): near 0, log|theta| grows at the rate mu - zeta^2/2.

    mu: the well's mu (> 0).
    """
    return math.sqrt(2 * mu)


def discrete_growth_rate(mu: float, zeta: float, step: float) -> float:
    """E log|1 + mu eta + zeta sqrt(eta) z| / eta, z ~ N(0, 1): the growth rate per unit
    time of log|theta| near 0 under theta <- theta (1 + mu eta + zeta sqrt(eta) z), the
    Euler-Maruyama step of the quartic-well SDE linearized at 0 (= label-noise GD at
    step eta). It tends to mu - zeta^2/2 as eta -> 0.

    mu: the well's mu. zeta: the noise level (>= 0). step: eta > 0.
    """
    return expected_log_abs(1.0 + mu * step, zeta * math.sqrt(step)) / step


def discrete_threshold(mu: float, step: float) -> float:
    """The smallest zeta where ``discrete_growth_rate(mu, zeta, step)`` crosses 0
    (sqrt(2 mu) as step -> 0); NaN if it does not below 3 sqrt(2 mu). At a finite step
    the rate turns positive again at large zeta (the map's multiplier |1 + b z| is then
    mostly > 1), so the root is bracketed by a scan from 0, not by a wide interval.

    mu: the well's mu (> 0). step: eta > 0.
    """
    grid = np.linspace(1e-6, 3 * sde_threshold(mu), 61)
    return first_sign_change(lambda z: discrete_growth_rate(mu, z, step), grid)


# ----------------------------------------------------------------------------------------
# Stochastic collapse, the tanh neuron (Chen et al. 2023, Fig. 2, Thm. 5.1; paper_collapse_tanh)


def tanh_collapse_moments(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(c, m2, Var_i(x_i y_i)) = (mean(x y), mean(x^2), the population variance of
    x_i y_i): the moments the tanh neuron's collapse thresholds depend on (near w = 0 the
    per-example gradient is x_i (y_i - xi) J w).

    x, y: the training inputs and labels (n,).
    """
    xy = np.asarray(x) * np.asarray(y)
    return float(xy.mean()), float(np.mean(np.asarray(x) ** 2)), float(xy.var())


def label_noise_threshold(x: np.ndarray, y: np.ndarray, delta: float) -> float:
    """The paper's threshold (Theorem 5.1, sigma'(0) = 1): the label-noise SDE collapses
    to w = 0 iff eta > 2 sum(x y) / (delta sum(x^2)).

    x, y: the training inputs and labels (n,). delta: the label-noise variance (zeta^2).
    """
    c, m2, _ = tanh_collapse_moments(x, y)
    return 2 * c / (delta * m2)


def matched_sde_threshold(x: np.ndarray, y: np.ndarray, delta: float) -> float:
    """The threshold of batch-1 SGD's own SDE (``SGDNoise``: label plus sampling noise):
    near 0 the exponent of u = w1 + w2 is c - eta (Var_i(x_i y_i) + delta m2) / 2, so it
    collapses iff eta > 2 c / (Var_i(x_i y_i) + delta m2), c = mean(x y), m2 = mean(x^2).

    x, y: the training inputs and labels (n,). delta: the label-noise variance.
    """
    c, m2, var = tanh_collapse_moments(x, y)
    return 2 * c / (var + delta * m2)


def sgd_exponent(x: np.ndarray, y: np.ndarray, delta: float, eta: float) -> float:
    """The top Lyapunov exponent per unit time (t = k eta) of batch-1 label-noise SGD
    linearized at w = 0: w <- (I + eta s J) w with s = x_i (y_i - xi), J = [[0, 1], [1, 0]],
    i uniform, xi ~ N(0, delta). The matrices commute (eigenvectors (1, +-1)), so the
    exponents are mean_i E log|1 +- eta s| / eta exactly; this returns the larger.

    x, y: the training inputs and labels (n,). delta: the label-noise variance. eta: the
    step size.
    """
    b = eta * np.abs(x) * math.sqrt(delta)
    rates = [
        np.mean(
            [
                expected_log_abs(1 + sign * eta * xk * yk, bk)
                for xk, yk, bk in zip(x, y, b, strict=True)
            ]
        )
        for sign in (1, -1)
    ]
    return max(rates) / eta


def sgd_threshold(x: np.ndarray, y: np.ndarray, delta: float) -> float:
    """The smallest step size where ``sgd_exponent`` turns negative (scan up to 3x the
    paper's threshold); NaN if it does not.

    x, y: the training inputs and labels (n,). delta: the label-noise variance.
    """
    grid = np.linspace(0.02, 3 * label_noise_threshold(x, y, delta), 40)
    return first_sign_change(lambda eta: sgd_exponent(x, y, delta, eta), grid)


# ----------------------------------------------------------------------------------------
# Stochastic collapse, linear teacher-student modes (Chen et al. 2023, Fig. 5;
# paper_collapse_linear_modes)


def soft_threshold_level(lr: float, sigma: Any) -> np.ndarray:
    """tau = eta sigma^2 / 2: the label-noise level below which a mode collapses, for
    label-noise GD at step ``lr`` = eta with per-mode noise standard deviation
    ``sigma`` (label variance delta = n sigma^2; Chen et al. 2023, Sec. 6)."""
    return lr * np.square(np.asarray(sigma, dtype=float)) / 2


def soft_threshold(s_hat: Any, tau: Any) -> np.ndarray:
    """max(hat s - tau, 0): the predicted stationary mean of a mode with least-squares
    value ``s_hat`` at collapse level ``tau`` (broadcast)."""
    return np.maximum(np.asarray(s_hat, dtype=float) - np.asarray(tau, dtype=float), 0.0)


# ----------------------------------------------------------------------------------------
# The GD walk window on a quadratic (Xing et al. 2018, "A Walk with SGD"; gallery kind paper_walk)


def walk_window(lam: float) -> tuple[float, float]:
    """(1 / lambda, 2 / lambda): on a quadratic of curvature ``lam``, GD's step overshoots
    the valley floor (an interior minimum on the segment between iterates, cosine -1 of
    consecutive steps) iff eta > 1 / lambda, and diverges iff eta > 2 / lambda."""
    if not lam > 0:
        raise ValueError(f"lam must be a curvature > 0 (got {lam!r})")
    return 1.0 / lam, 2.0 / lam
