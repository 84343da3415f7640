"""Euler-Maruyama for the user's own SDE terms (``sgdsde.sde.terms``): the ``euler_terms``
solver.

One step of size dt, for each alive trajectory, with t_k = k dt:

    theta_{k+1} = theta_k + f(theta_k, t_k) dt + G(theta_k, t_k) dW_k

(diagonal noise: G dW_k = g(theta_k, t_k) * dW_k elementwise; general noise: the user's
product). The Brownian increments are dW_k = -sqrt(dt) z_k with the m standard normals
z_k of the isotropic channel of ``sgdsde.sde.solvers.base`` (numpy: m normals per step
from trajectory t's ``"brownian"`` stream, drawn in chunks of steps; xoshiro: its xoshiro
stream; torch: one generator), or the caller's own ``GivenIncrements(dW)`` as they are.

Divergence: at the start of every step, a trajectory with data whose training loss is
non-finite or above ``max_loss`` (as every solver), or, for a free SDE (no model, no
data), whose state has a non-finite norm or ||theta||_2 > ``max_norm``, is frozen and its
``diverged_step`` set to that step.

Two paths, chosen by the terms: numba kernels run in one compiled loop parallel over
trajectories (CPU, float64; the model's ``predict_one`` / ``grad_one`` kernels give
``GradientDrift``), torch functions run batched over trajectories on any torch device
(float64 or float32; ``GradientDrift`` by one vector-Jacobian product of the model's
``predict_with_vjp_torch``, so any ``TorchModel`` runs).

Orders (Kloeden and Platen 1992, Thms 10.2.2 and 14.5.2): weak 1; strong 1 when the
diffusion is declared additive (``additive=True``: G independent of theta), else 0.5.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numba as nb
import numpy as np
from numba import types

from sgdsde.lazy import lazy_module
from sgdsde.metrics.base import describe_fn
from sgdsde.models.base import Model
from sgdsde.models.kernels import (
    FASTMATH,
    GRAD_SIG,
    MAT,
    PREDICT_SIG,
    VEC,
    GradKernel,
    PredictKernel,
)
from sgdsde.models.torch_model import no_kernels_error
from sgdsde.run.checks import check_device
from sgdsde.run.loop import chunk_segments
from sgdsde.sde.noise import NoiseCoefficients
from sgdsde.sde.solvers.base import Increments, Solver, check_option
from sgdsde.sde.solvers.increments import (
    ChunkedDraws,
    GivenIncrements,
    IncrementSource,
    NumpyIncrements,
    TorchIncrements,
    XoshiroIncrements,
    as_increments,
)
from sgdsde.sde.terms import (
    PRODUCT_KERNEL_SIG,
    SDE_KERNEL_SIG,
    DiagonalDiffusion,
    GradientDrift,
    ProductKernel,
    SDEKernel,
    SDETerms,
)

torch = lazy_module("torch")


@dataclasses.dataclass(frozen=True)
class TermsProblem:
    """d theta = f dt + G dW given by ``terms`` for ``n_traj`` trajectories of
    ``n_params`` coordinates; ``model`` and ``data`` are None for a free SDE.

    For the increment sources, W is the isotropic channel: coefficients (0, 0, 1) and
    widths (0, 0, m), m = ``noise_dim``.
    """

    terms: SDETerms
    model: Any
    data: Any
    n_traj: int
    n_params: int
    dt: float
    max_loss: float = 1e10
    max_norm: float = 1e10
    n_steps: int | None = None

    @property
    def noise_dim(self) -> int:
        """m, the dimension of W."""
        return self.terms.diffusion.brownian_dim(self.n_params)

    @property
    def coefficients(self) -> NoiseCoefficients:
        zero = np.zeros(self.n_traj)
        return NoiseCoefficients(zero, zero.copy(), np.ones(self.n_traj))

    def widths(self) -> tuple[int, int, int]:
        return (0, 0, self.noise_dim)

    @property
    def additive_noise(self) -> bool:
        """G declared independent of theta (``additive=True`` on the diffusion)."""
        return self.terms.diffusion.additive


# ------------------------------------------------------------------ numba path

_F3 = types.float64[:, :, ::1]
_I64V = types.int64[::1]

_TERMS_SIG = types.void(
    PredictKernel,  # the model's predict_one (a placeholder for a free SDE)
    GradKernel,  # the model's grad_one (a placeholder for a free SDE)
    SDEKernel,  # the user's drift (a placeholder under GradientDrift)
    SDEKernel,  # diagonal g (a placeholder for a general diffusion)
    ProductKernel,  # G dw (a placeholder for a diagonal diffusion)
    types.boolean,  # the drift is -grad L
    types.boolean,  # the diffusion is diagonal
    types.boolean,  # there is data: divergence by the loss, else by the norm
    MAT,  # theta (T, p), updated in place
    MAT,  # X (n, d)
    VEC,  # y (n,)
    VEC,  # spec
    MAT,  # params (T, q)
    _F3,  # Brownian increments dW (T, S, m)
    types.int64,  # absolute step of row 0 of dW
    types.int64,  # first row to run
    types.int64,  # one past the last row to run
    types.float64,  # dt
    types.float64,  # max_loss
    types.float64,  # max_norm^2
    _I64V,  # diverged_step (T,), -1 alive; updated in place
    MAT,  # drift scratch (T, p)
    MAT,  # diffusion scratch (T, p)
    MAT,  # residual scratch (T, n)
)


def terms_block(
    predict_one,
    grad_one,
    drift,
    diagonal,
    product,
    gradient_drift,
    is_diagonal,
    has_data,
    theta,
    X,
    y,
    spec,
    params,
    dW,
    k0,
    s0,
    s1,
    dt,
    max_loss,
    max_norm_sq,
    diverged_step,
    fbuf,
    gbuf,
    rbuf,
):
    """Rows s0 .. s1-1 of dW for every alive trajectory (module doc)."""
    T, p = theta.shape
    n = X.shape[0]
    inv_n = 1.0 / max(n, 1)
    for t in nb.prange(T):
        if diverged_step[t] >= 0:
            continue
        th = theta[t]
        f = fbuf[t]
        g = gbuf[t]
        r = rbuf[t]
        par = params[t]
        for k in range(s0, s1):
            acc = 0.0
            if has_data:
                for i in range(n):
                    ri = predict_one(th, X[i], spec) - y[i]
                    r[i] = ri
                    acc += ri * ri
                bad = not (0.5 * acc * inv_n <= max_loss)
            else:
                for j in range(p):
                    acc += th[j] * th[j]
                bad = not (acc <= max_norm_sq)
            if bad:
                diverged_step[t] = k0 + k
                break
            time = (k0 + k) * dt
            if gradient_drift:
                for j in range(p):
                    f[j] = 0.0
                for i in range(n):
                    grad_one(th, X[i], spec, -r[i] * inv_n, f)
            else:
                drift(th, time, par, f)
            if is_diagonal:
                diagonal(th, time, par, g)
                for j in range(p):
                    th[j] += f[j] * dt + g[j] * dW[t, k, j]
            else:
                product(th, time, par, dW[t, k], g)
                for j in range(p):
                    th[j] += f[j] * dt + g[j]


@functools.cache
def terms_kernel():
    """``terms_block`` compiled on first use in a process (then loaded from numba's disk
    cache): one compiled loop for every user's kernels (first-class functions)."""
    return nb.njit(_TERMS_SIG, cache=True, parallel=True, fastmath=FASTMATH)(terms_block)


def _no_prediction(theta, x, spec):
    return 0.0


def _no_gradient(theta, x, spec, scale, out):
    return None


def _no_term(theta, t, params, out):
    return None


def _no_product(theta, t, params, dw, out):
    return None


@functools.cache
def placeholders() -> tuple[Any, Any, Any, Any]:
    """Kernels that fill the slots a run does not use (predict, grad, term, product)."""
    jit = functools.partial(nb.njit, cache=True)
    return (
        jit(PREDICT_SIG)(_no_prediction),
        jit(GRAD_SIG)(_no_gradient),
        jit(SDE_KERNEL_SIG)(_no_term),
        jit(PRODUCT_KERNEL_SIG)(_no_product),
    )


@dataclasses.dataclass
class _NumbaTermsState:
    problem: TermsProblem
    kernels: tuple  # predict, grad, drift, diagonal, product
    flags: tuple[bool, bool, bool]  # gradient drift, diagonal, has data
    theta: np.ndarray
    X: np.ndarray
    y: np.ndarray
    spec: np.ndarray
    params: np.ndarray
    draws: ChunkedDraws  # chunks whose iso holds dW
    scratch: tuple[np.ndarray, np.ndarray, np.ndarray]

    def advance(self, k0: int, k1: int, diverged_step: np.ndarray) -> None:
        pb = self.problem
        kernel = terms_kernel()
        for c0, ka, kb in chunk_segments(k0, k1, self.draws.chunk_steps):
            dW = self.draws.at(c0).iso
            kernel(
                *self.kernels,
                *self.flags,
                self.theta,
                self.X,
                self.y,
                self.spec,
                self.params,
                dW,
                c0,
                ka - c0,
                kb - c0,
                float(pb.dt),
                float(pb.max_loss),
                float(pb.max_norm) ** 2,
                diverged_step,
                *self.scratch,
            )

    def params_now(self) -> np.ndarray:
        return self.theta.copy()


def _numba_state(problem: TermsProblem, theta0: np.ndarray, draws: ChunkedDraws):
    terms, model, data = problem.terms, problem.model, problem.data
    predict, grad, term, prod = placeholders()
    gradient_drift = isinstance(terms.drift, GradientDrift)
    if model is not None:
        if not isinstance(model, Model):
            raise no_kernels_error(model)
        predict, grad = model.kernels
    diagonal = isinstance(terms.diffusion, DiagonalDiffusion)
    kernels = (
        predict,
        grad,
        term if gradient_drift else terms.drift.fn,
        terms.diffusion.fn if diagonal else term,
        prod if diagonal else terms.diffusion.fn,
    )
    T, p = theta0.shape
    n = 0 if data is None else data.n
    empty = np.zeros(0)
    return _NumbaTermsState(
        problem=problem,
        kernels=kernels,
        flags=(gradient_drift, diagonal, data is not None),
        theta=np.array(theta0, dtype=np.float64, order="C", copy=True),
        X=np.zeros((0, 1)) if data is None else np.ascontiguousarray(data.X, dtype=np.float64),
        y=empty if data is None else np.ascontiguousarray(data.y, dtype=np.float64),
        spec=empty if model is None else np.ascontiguousarray(model.spec, dtype=np.float64),
        params=terms.params_per_traj(T),
        draws=draws,
        scratch=(np.empty((T, p)), np.empty((T, p)), np.empty((T, n))),
    )


# ------------------------------------------------------------------ torch path


@dataclasses.dataclass
class _TorchTermsState:
    problem: TermsProblem
    theta: Any  # (T, p) tensor
    X: Any  # (1, n, d) tensor or None
    y: Any  # (n,) tensor or None
    noise: Callable  # (t, theta, dW) -> G dW, (T, p)
    draws: ChunkedDraws  # chunks whose iso holds dW as tensors

    def advance(self, k0: int, k1: int, diverged_step: np.ndarray) -> None:
        dev = self.theta.device
        alive = torch.as_tensor(diverged_step < 0, device=dev)
        first_bad = torch.full(alive.shape, -1, dtype=torch.int64, device=dev)
        for c0, ka, kb in chunk_segments(k0, k1, self.draws.chunk_steps):
            dW = self.draws.at(c0).iso
            for k in range(ka, kb):
                self.step(dW[:, k - c0], k, alive, first_bad)
        hit = first_bad.cpu().numpy()
        diverged_step[hit >= 0] = hit[hit >= 0]

    def step(self, dW: Any, k: int, alive: Any, first_bad: Any) -> None:
        """One step of every alive trajectory (in place on theta, alive, first_bad)."""
        pb = self.problem
        theta, t = self.theta, k * pb.dt
        gradient = isinstance(pb.terms.drift, GradientDrift)
        if pb.data is not None:
            n = self.y.shape[0]
            if gradient:
                f, vjp = pb.model.predict_with_vjp_torch(theta, self.X)
            else:
                with torch.no_grad():
                    f = pb.model.predict_torch(theta, self.X)
            r = f - self.y
            ok = (r * r).sum(dim=1) <= 2.0 * n * pb.max_loss
        else:
            ok = (theta * theta).sum(dim=1) <= float(pb.max_norm) ** 2
        bad = alive & ~ok
        first_bad.masked_fill_(bad & (first_bad < 0), k)
        alive &= ~bad
        drift = -vjp(r / n) if gradient else None
        with torch.no_grad():
            if drift is None:
                drift = pb.terms.drift.fn(t, theta)
            step = drift * pb.dt + self.noise(t, theta, dW)
            self.theta = torch.where(alive[:, None], theta + step, theta)

    def params_now(self) -> np.ndarray:
        return self.theta.detach().to("cpu", torch.float64).numpy()


def _noise_product(terms: SDETerms) -> Callable:
    """(t, theta, dW) -> G(theta, t) dW from the diffusion's torch function."""
    fn = terms.diffusion.fn
    if isinstance(terms.diffusion, DiagonalDiffusion):
        return lambda t, theta, dW: fn(t, theta) * dW
    return fn


def _probe(terms: SDETerms, theta: Any, noise_dim: int) -> None:
    """Call each torch function once at t = 0 on the initial state and check that it
    returns a (T, p) tensor, so that a wrong output fails before any step."""
    T, p = theta.shape
    diffusion = terms.diffusion
    if isinstance(diffusion, DiagonalDiffusion):
        calls = [("diffusion", diffusion.fn, diffusion.args(), (0.0, theta))]
    else:
        dW = torch.zeros((T, noise_dim), dtype=theta.dtype, device=theta.device)
        calls = [("diffusion", diffusion.fn, diffusion.args(), (0.0, theta, dW))]
    if not isinstance(terms.drift, GradientDrift):
        calls.append(("drift", terms.drift.fn, "t, theta", (0.0, theta)))
    for role, fn, args, values in calls:
        with torch.no_grad():
            out = fn(*values)
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        if shape != (T, p):
            raise ValueError(
                f"{role} function {describe_fn(fn, args)} returned {shape} for theta of "
                f"shape {(T, p)}: it must return a torch tensor of shape (T, p) = {(T, p)}"
            )


# ------------------------------------------------------------------ the solver

_DTYPES = {"float64": np.float64, "float32": np.float32}


@dataclasses.dataclass(frozen=True)
class EulerMaruyamaTerms(Solver):
    """Euler-Maruyama for ``SDETerms`` (module doc): numba kernels parallel over
    trajectories, or torch functions batched over trajectories on any device.

    dtype: "float64" (default) or "float32" (torch functions only; the numba path is
        float64).
    increments: ``NumpyIncrements()`` (default: m normals per step from each trajectory's
        "brownian" stream), ``XoshiroIncrements()`` (faster, the default of
        ``simulate_sde``), ``TorchIncrements()`` (torch functions only) or
        ``GivenIncrements(dW)`` (the caller's Brownian increments).
    """

    dtype: str = "float64"
    increments: IncrementSource | str = dataclasses.field(default_factory=NumpyIncrements)
    name = "euler_terms"
    needs_kernels: ClassVar[bool] = False  # torch functions run any TorchModel
    takes_terms: ClassVar[bool] = True
    accepted_increments: ClassVar[tuple] = (
        NumpyIncrements,
        XoshiroIncrements,
        TorchIncrements,
        GivenIncrements,
    )

    def __post_init__(self):
        check_option("dtype", self.dtype, _DTYPES)
        increments = as_increments(self.increments, self.accepted_increments)
        object.__setattr__(self, "increments", increments)

    def init(self, problem, theta0, streams, device="cpu"):
        who = f"solver {self.name!r}"
        device = check_device(device, who)
        if not isinstance(problem, TermsProblem):
            raise ValueError(
                f"{who} integrates SDETerms (your own drift and diffusion, "
                "sgdsde.sde.terms), not a noise model's SDE: pass SDETerms(...) to "
                "simulate_sde, or use euler_numba, euler_gemm or euler_torch"
            )
        if problem.terms.kernel:
            return self._init_numba(problem, theta0, streams, device)
        return self._init_torch(problem, theta0, streams, device)

    def _init_numba(self, problem, theta0, streams, device):
        who = f"solver {self.name!r} with numba kernels"
        check_device(device, who, cpu_only="give the terms as torch functions for a GPU")
        if self.dtype != "float64":
            raise ValueError(
                f"{who} runs in float64 (got dtype={self.dtype!r}): use dtype='float64', "
                "or give the terms as torch functions for float32"
            )
        if isinstance(self.increments, TorchIncrements):
            raise ValueError(
                f"{who} takes NumpyIncrements, XoshiroIncrements or GivenIncrements "
                "(TorchIncrements draw torch tensors): give the terms as torch functions "
                "to use them"
            )
        sdt = math.sqrt(problem.dt)

        def to_dw(inc: Increments) -> Increments:
            if self.increments.standard_normals:
                return dataclasses.replace(inc, iso=np.ascontiguousarray(-sdt * inc.iso))
            return inc

        return _numba_state(problem, theta0, self.increments.draws(problem, streams, to_dw))

    def _init_torch(self, problem, theta0, streams, device):
        kw = {"device": torch.device(device), "dtype": getattr(torch, self.dtype)}
        sdt = math.sqrt(problem.dt)
        scale = -sdt if self.increments.standard_normals else 1.0

        def to_dw(inc: Increments) -> Increments:
            return dataclasses.replace(inc, iso=torch.as_tensor(inc.iso, **kw) * scale)

        theta = torch.as_tensor(np.array(theta0, dtype=np.float64), **kw)
        _probe(problem.terms, theta, problem.noise_dim)
        data = problem.data
        return _TorchTermsState(
            problem=problem,
            theta=theta,
            X=None if data is None else torch.as_tensor(data.X, **kw)[None],
            y=None if data is None else torch.as_tensor(data.y, **kw),
            noise=_noise_product(problem.terms),
            draws=self.increments.draws(problem, streams, convert=to_dw, **kw),
        )

    def advance(self, state, k0, k1, diverged_step):
        if k1 > k0:
            state.advance(k0, k1, diverged_step)

    def params(self, state):
        return state.params_now()


__all__ = ["EulerMaruyamaTerms", "TermsProblem", "placeholders", "terms_block", "terms_kernel"]
