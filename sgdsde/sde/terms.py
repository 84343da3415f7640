"""Your own SDE: drift and diffusion terms that ``simulate_sde`` integrates.

    d theta = f(theta, t) dt + G(theta, t) dW_t        (Ito; theta in R^p, W in R^m)

As in diffrax, the equation's terms are objects separate from the solver that integrates
them (diffrax's ``ODETerm`` / ``ControlTerm`` / ``MultiTerm``, Kidger 2021, "On Neural
Differential Equations", Sec. 5): ``SDETerms(drift=..., diffusion=..., params=...)`` is
the equation, the ``euler_terms`` solver (``sgdsde.sde.solvers.euler_terms``) integrates
it, and ``simulate_sde(model, data, SDETerms(...), dt=..., n_steps=...)`` returns the
standard dataset (docs/sde_terms.md).

Drift terms:

* ``GradientDrift()`` (the default): f = -grad L(theta), the loss drift of the model on
  its data, so ``SDETerms(diffusion=...)`` keeps the SDE model of SGD and swaps the noise;
* ``Drift(fn)``: the user's own f(theta, t).

Diffusion terms, applied to dW only (G is never formed unless the user's function does):

* ``DiagonalDiffusion(fn)``: m = p, G = diag(g(theta, t)): d theta_j += g_j dW_j;
* ``GeneralDiffusion(fn, noise_dim=m)``: fn gives the product G(theta, t) dW, (p,) from
  dW in R^m.

``additive=True`` on a diffusion declares G independent of theta (it may depend on t):
Euler-Maruyama then has strong order 1 instead of 0.5 (``Solver.strong_order``).

Every function is either a **numba kernel** (the numba path: compiled once, parallel over
trajectories, CPU)::

    drift, diagonal g:  fn(theta, t, params, out)       compiled with ``sde_kernel``
    product G dw:       fn(theta, t, params, dw, out)   compiled with ``product_kernel``

(theta (p,), params (q,), dw (m,) float64 vectors, t a float; the kernel writes out (p,)),
or a **batched torch function** (the torch path: CPU or GPU)::

    drift, diagonal g:  fn(t, theta) -> (T, p)          theta a (T, p) tensor
    product G dW:       fn(t, theta, dW) -> (T, p)      dW a (T, m) tensor

t is the time t_k = k dt at the start of step k. The terms of one ``SDETerms`` are all
kernels or all torch functions (``GradientDrift`` fits both). ``params`` go to numba
kernels: one vector (q,) shared by every trajectory or one row per trajectory (T, q);
torch functions take their parameters by closure.

The noise W is drawn as the isotropic channel of the package's solvers
(``sgdsde.sde.solvers.base``): m normals z_k per step from trajectory t's ``"brownian"``
stream (or its xoshiro stream), dW_k = -sqrt(dt) z_k. Hence ``GradientDrift`` with the
constant ``DiagonalDiffusion`` s is ``Isotropic(s)`` to round-off, and on the quartic well
of Chen et al. ("Stochastic Collapse", NeurIPS 2023), whose multiplicative noise
zeta theta dB this module was written for,

    @sde_kernel
    def multiplicative(theta, t, params, out):
        out[0] = params[0] * theta[0]

    simulate_sde(QuarticWell(mu), quartic_well_data(mu),
                 SDETerms(diffusion=DiagonalDiffusion(multiplicative), params=[zeta]), ...)

is the bent form ``LabelNoise(delta=zeta**2 / 2, lr=1, batch_size=1)`` (G = phi^T a with
phi = sqrt(2) theta, a = zeta / sqrt(2)) to round-off under xoshiro increments (tested).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numba as nb
import numpy as np
from numba import types

from sgdsde.metrics.base import describe_fn
from sgdsde.models.kernels import FASTMATH, VEC

#: fn(theta, t, params, out): a drift or a diagonal diffusion as a numba kernel.
SDE_KERNEL_SIG = types.void(VEC, types.float64, VEC, VEC)
#: fn(theta, t, params, dw, out): out = G(theta, t) dw, a general diffusion's product.
PRODUCT_KERNEL_SIG = types.void(VEC, types.float64, VEC, VEC, VEC)
SDEKernel = types.FunctionType(SDE_KERNEL_SIG)
ProductKernel = types.FunctionType(PRODUCT_KERNEL_SIG)

_KERNEL_ARGS = "theta, t, params, out"
_PRODUCT_ARGS = "theta, t, params, dw, out"
_TORCH_ARGS = "t, theta"
_TORCH_PRODUCT_ARGS = "t, theta, dW"


def sde_kernel(fn: Callable) -> Any:
    """Compile ``fn(theta, t, params, out)`` (writes the drift f(theta, t), or the diagonal
    g(theta, t) of a ``DiagonalDiffusion``, into out) as a numba kernel; theta, params and
    out are float64 vectors, t a float. Cached on disk (define it in a file)."""
    return nb.njit(SDE_KERNEL_SIG, cache=True, fastmath=FASTMATH)(fn)


#: The name ``sde_kernel`` had when only diagonal SDEs took kernels (still the same object).
diagonal_sde_kernel = sde_kernel


def product_kernel(fn: Callable) -> Any:
    """Compile ``fn(theta, t, params, dw, out)`` (writes G(theta, t) dw, (p,), for dw in
    R^m) as the numba kernel of a ``GeneralDiffusion``. Cached on disk."""
    return nb.njit(PRODUCT_KERNEL_SIG, cache=True, fastmath=FASTMATH)(fn)


def is_kernel(fn: Any) -> bool:
    """True for a numba function (the numba path), False for a Python/torch function."""
    return isinstance(fn, nb.core.dispatcher.Dispatcher)


def _checked_function(role: str, fn: Any, signature: Any, decorator: str, args: str) -> Any:
    """``fn`` if it is a callable and, when it is a numba function, compiled with
    ``signature`` (else a ValueError saying how to compile it)."""
    if not callable(fn):
        raise ValueError(
            f"{role} must be a numba kernel ({decorator}: fn({args})) or a batched torch "
            f"function (got {fn!r})"
        )
    if is_kernel(fn) and signature.args not in fn.signatures:
        raise ValueError(
            f"{role} {describe_fn(fn, args)} is a numba function without the kernel "
            f"signature: decorate it with sgdsde.sde.{decorator} instead of numba.njit, "
            f"so it compiles as fn({args}) with float64 vectors"
        )
    return fn


class DriftTerm(abc.ABC):
    """The drift f(theta, t) of ``SDETerms``."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def kernel(self) -> bool | None:
        """True: a numba kernel; False: a torch function; None: fits both paths."""

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """The term for the run's config (functions by their qualified names)."""


@dataclasses.dataclass(frozen=True)
class GradientDrift(DriftTerm):
    """f = -grad L(theta) = -(1/n) phi_theta(X)^T r, the model's loss drift on the data
    (the package's loss convention, docs/conventions.md, "Loss"): numba through the
    model's kernels, torch through ``predict_with_vjp_torch``."""

    name = "gradient"

    @property
    def kernel(self) -> None:
        return None

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclasses.dataclass(frozen=True)
class Drift(DriftTerm):
    """The user's drift: a numba kernel ``fn(theta, t, params, out)`` (``sde_kernel``) or
    a batched torch function ``fn(t, theta (T, p)) -> (T, p)``."""

    fn: Callable
    name = "drift"

    def __post_init__(self):
        _checked_function("drift", self.fn, SDE_KERNEL_SIG, "sde_kernel", _KERNEL_ARGS)

    @property
    def kernel(self) -> bool:
        return is_kernel(self.fn)

    def to_config(self) -> dict[str, Any]:
        args = _KERNEL_ARGS if self.kernel else _TORCH_ARGS
        return {"name": self.name, "function": describe_fn(self.fn, args), "kernel": self.kernel}


class DiffusionTerm(abc.ABC):
    """The diffusion of ``SDETerms``: how G(theta, t) acts on dW."""

    name: ClassVar[str]
    fn: Callable
    additive: bool

    @abc.abstractmethod
    def brownian_dim(self, n_params: int) -> int:
        """m, the dimension of W, for a state of n_params coordinates."""

    @property
    def kernel(self) -> bool:
        """True: a numba kernel; False: a torch function."""
        return is_kernel(self.fn)

    def to_config(self) -> dict[str, Any]:
        """The term for the run's config (the function by its qualified name)."""
        cfg: dict[str, Any] = {"name": self.name}
        cfg |= {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fn"}
        return cfg | {"function": describe_fn(self.fn, self.args()), "kernel": self.kernel}

    @abc.abstractmethod
    def args(self) -> str:
        """The arguments of the function, as written in the module doc."""

    def _check(self, signature: Any, decorator: str) -> None:
        if not isinstance(self.additive, bool):
            raise ValueError(f"additive must be True or False (got {self.additive!r})")
        _checked_function(f"{self.name} diffusion", self.fn, signature, decorator, self.args())


@dataclasses.dataclass(frozen=True)
class DiagonalDiffusion(DiffusionTerm):
    """Diagonal noise, m = p: d theta_j += g_j(theta, t) dW_j.

    fn: a numba kernel ``fn(theta, t, params, out)`` writing g (``sde_kernel``) or a
        batched torch function ``fn(t, theta (T, p)) -> g (T, p)``.
    additive: g does not depend on theta (strong order 1 for Euler-Maruyama).
    """

    fn: Callable
    additive: bool = False
    name = "diagonal"

    def __post_init__(self):
        self._check(SDE_KERNEL_SIG, "sde_kernel")

    def brownian_dim(self, n_params: int) -> int:
        return int(n_params)

    def args(self) -> str:
        return _KERNEL_ARGS if self.kernel else _TORCH_ARGS


@dataclasses.dataclass(frozen=True)
class GeneralDiffusion(DiffusionTerm):
    """Noise of dimension m through a p x m matrix G(theta, t), given as the product G dW.

    fn: a numba kernel ``fn(theta, t, params, dw, out)`` writing G dw (``product_kernel``)
        or a batched torch function ``fn(t, theta (T, p), dW (T, m)) -> G dW (T, p)``.
    noise_dim: m, the dimension of W.
    additive: G does not depend on theta (strong order 1 for Euler-Maruyama).
    """

    fn: Callable
    noise_dim: int
    additive: bool = False
    name = "general"

    def __post_init__(self):
        m = self.noise_dim
        if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1:
            raise ValueError(
                f"noise_dim must be a positive integer (got {m!r}): the dimension m of W"
            )
        object.__setattr__(self, "noise_dim", int(m))
        self._check(PRODUCT_KERNEL_SIG, "product_kernel")

    def brownian_dim(self, n_params: int) -> int:
        return self.noise_dim

    def args(self) -> str:
        return _PRODUCT_ARGS if self.kernel else _TORCH_PRODUCT_ARGS


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class SDETerms:
    """d theta = f dt + G dW as terms (module doc): what ``simulate_sde`` takes in place
    of a noise model.

    diffusion: a ``DiagonalDiffusion`` or a ``GeneralDiffusion``.
    drift: a ``DriftTerm`` or the user's function itself (made a ``Drift``); default
        ``GradientDrift()``, -grad L of the model on the data.
    params: numba kernels' parameters: (q,) for every trajectory or (T, q) one row per
        trajectory (then T trajectories); empty for torch functions (they use closures).
    """

    diffusion: DiffusionTerm
    drift: DriftTerm | Callable = dataclasses.field(default_factory=GradientDrift)
    params: Any = ()

    def __post_init__(self):
        if not isinstance(self.diffusion, DiffusionTerm):
            raise ValueError(
                "diffusion must be DiagonalDiffusion(fn) or GeneralDiffusion(fn, noise_dim=m) "
                f"(got {self.diffusion!r})"
            )
        drift = self.drift
        if not isinstance(drift, DriftTerm):
            drift = Drift(drift)
        object.__setattr__(self, "drift", drift)
        if drift.kernel is not None and drift.kernel != self.kernel:
            given = ("a numba kernel", "a Python function")
            raise ValueError(
                f"the drift is {given[not drift.kernel]} but the diffusion is "
                f"{given[not self.kernel]}: give both as numba kernels (sde_kernel, "
                "product_kernel) or both as batched torch functions"
            )
        object.__setattr__(self, "params", self._checked_params(self.params))

    def _checked_params(self, params: Any) -> np.ndarray:
        try:
            arr = np.array(params, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.ndim not in (1, 2) or not np.all(np.isfinite(arr)):
            raise ValueError(
                f"params must be finite numbers, (q,) for every trajectory or (T, q) one row "
                f"per trajectory (got {params!r})"
            )
        if arr.size and not self.kernel:
            raise ValueError(
                f"params {arr.tolist()} go to numba kernels, but these terms are torch "
                "functions: give their parameters by closure and leave params empty"
            )
        return np.ascontiguousarray(arr)

    @property
    def kernel(self) -> bool:
        """True: numba kernels (CPU); False: torch functions."""
        return self.diffusion.kernel

    @property
    def n_traj(self) -> int | None:
        """Trajectories implied by per-trajectory params (None: any)."""
        return self.params.shape[0] if self.params.ndim == 2 else None

    def params_per_traj(self, n_traj: int) -> np.ndarray:
        """params as a C-contiguous (T, q) float64 array, one row per trajectory."""
        rows = self.params if self.params.ndim == 2 else self.params[None, :]
        return np.array(np.broadcast_to(rows, (n_traj, rows.shape[1])), order="C")  # a copy

    def to_config(self) -> dict[str, Any]:
        """The terms for the run's config: each term's config (functions by their
        qualified names, ``sgdsde.metrics.base.describe_fn``) and the params."""
        return {
            "drift": self.drift.to_config(),
            "diffusion": self.diffusion.to_config(),
            "params": self.params.tolist(),
        }


__all__ = [
    "PRODUCT_KERNEL_SIG",
    "SDE_KERNEL_SIG",
    "DiagonalDiffusion",
    "DiffusionTerm",
    "Drift",
    "DriftTerm",
    "GeneralDiffusion",
    "GradientDrift",
    "ProductKernel",
    "SDEKernel",
    "SDETerms",
    "diagonal_sde_kernel",
    "is_kernel",
    "product_kernel",
    "sde_kernel",
]
