"""torchsde adapter: the SDE of an ``SDEProblem`` as a ``torchsde`` module, integrated
with ``torchsde.sdeint`` (torchsde 0.2.6; see /work/shared/reference/sde-tooling.md).

An independent cross-check of the hand-written Euler-Maruyama solvers, not the fast path:
torchsde is about 3x slower per step (most of its time goes to ``BrownianInterval``).

The SDE (``sgdsde.sde.noise``), Ito, for T trajectories batched along the first axis:

    d theta = -grad L(theta) dt + G(theta) dW,
    G dW    = phi^T (a dW_label + b r (.) (dW_sgd - mean dW_sgd)) + s dW_iso.

``ModelSDE`` is the SDE object handed to torchsde (torchsde wraps it in its own module;
it needs only ``f``, ``g_prod``, ``f_and_g_prod``, ``noise_type`` and ``sde_type``):

* ``f(t, y)``          -grad L = -phi^T r / n, one vector-Jacobian product of
  ``model.predict_torch`` (autograd), y of shape (T, p);
* ``g_prod(t, y, v)``  G(y) v for v of shape (T, m), with ONE vector-Jacobian product
  phi^T w, w = a v_label + b r (v_sgd - mean v_sgd) (plus s v_iso): the (T, p, m)
  diffusion matrix is never formed;
* ``f_and_g_prod``     both from one forward pass (two backward passes), what
  torchsde's ``euler`` calls;
* ``g(t, y)``          the full (T, p, m) matrix, for tests only (n backward passes).

Brownian dimension and noise type. The Brownian motion has the columns (label, sgd,
iso) in that order, as ``NoiseModel.diffusion_matrix``; a ``ModelSDE`` built directly
has all m = 2n + p of them, while ``TorchsdeSolver`` keeps only the channels some
trajectory uses (``SDEProblem.widths()``), so that no unused normals are drawn.

* label or sgd channel used: ``noise_type="general"``. torchsde integrates general
  noise with ``euler`` only (``milstein`` and ``srk`` refuse it);
* only the isotropic channel (G = s I, independent of theta), or no noise at all
  (``GradientFlow``; one idle isotropic channel is kept): ``noise_type="additive"``,
  for which ``euler`` (strong order 1 here), ``milstein`` (with dg = 0 it coincides
  with Euler) and ``srk`` (Roessler's SRA1; needs the space-time Levy area, which the
  Brownian interval then carries) are all valid.

Any other combination raises ``ValueError`` naming the allowed methods.

Randomness (the solver's ``increments``, ``BrownianInterval()``). torchsde's
``BrownianInterval`` draws its own numbers: one interval of shape
(T, m) per run, over [0, n_steps dt] (or one per ``advance`` call when the run length
is unknown), seeded with ``entropy`` = a 63-bit integer derived, without drawing, from
every trajectory's ``"brownian"`` seed sequence, i.e. from the run's seed. torchsde paths
are therefore reproducible *per run* (same seed, number of trajectories, save grid,
dtype and device give bitwise the same result), not *per trajectory*: trajectory t does
not see the same Brownian path in a run with another number of trajectories, and the
numbers are unrelated to those of ``euler_numba`` / ``euler_torch`` (the laws agree, the
paths do not). The entropy is always passed explicitly: torchsde's default draws it
from numpy's legacy global generator.

Divergence. torchsde has no per-step hook, so divergence is detected at the save points
only (each ``advance`` call): a trajectory whose loss at step k1 is non-finite or above
``max_loss`` is restored to its parameters at step k0 (the previous save point, the last
state known good), frozen, and ``diverged_step[t] = k1``. A trajectory already bad at
the start of an ``advance`` (e.g. its initial loss) is frozen with ``diverged_step = k0``.
Frozen trajectories have zero drift and diffusion, so they stay put.

Time: ``ts = [k0 dt, k1 dt]`` in float64 whatever the state dtype (float32 times trip
torchsde's interval bounds, issue #152). With ``dtype="float32"`` the state, the
model maths and the Brownian increments are single precision.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from sgdsde.lazy import lazy_module
from sgdsde.models.base import Model
from sgdsde.run.checks import check_device
from sgdsde.sde.noise import NoiseCoefficients
from sgdsde.sde.solvers.base import SDEProblem, Solver, check_option
from sgdsde.sde.solvers.increments import BrownianInterval, IncrementSource, as_increments

torch = lazy_module("torch")
torchsde = lazy_module("torchsde")

_DTYPES = ("float64", "float32")

#: torchsde methods valid for each noise type of our SDE (Ito), with their (strong,
#: weak) orders as declared by torchsde 0.2.6 for general / additive noise.
METHODS_BY_NOISE: dict[str, tuple[str, ...]] = {
    "general": ("euler",),
    "additive": ("euler", "milstein", "srk"),
}
ORDERS: dict[str, tuple[float, float]] = {
    "euler": (0.5, 1.0),
    "milstein": (1.0, 1.0),
    "srk": (1.5, 1.5),
}
#: The same with additive noise, where Euler coincides with Milstein (strong order 1).
ADDITIVE_ORDERS: dict[str, tuple[float, float]] = {**ORDERS, "euler": (1.0, 1.0)}


class ModelSDE:
    """The SDE of a closed-form model as a torchsde module (Ito; see the module doc).

    model, X (n, d), y (n,): the model and its training data (numpy or torch).
    coefficients: per-trajectory (a, b, s), ``NoiseModel.coefficients(n, T)``.
    widths: Brownian columns of each channel (label, sgd, iso), each 0 or (n, n, p);
        default all of them (m = 2n + p).
    """

    sde_type = "ito"

    def __init__(
        self,
        model: Model,
        X: Any,
        y: Any,
        coefficients: NoiseCoefficients,
        *,
        widths: tuple[int, int, int] | None = None,
        dtype: str | torch.dtype = "float64",
        device: str | torch.device = "cpu",
    ):
        dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        kw = {"dtype": dt, "device": torch.device(device)}
        self.model = model
        self.X = torch.as_tensor(np.asarray(X, dtype=np.float64), **kw)
        if self.X.ndim == 1:
            self.X = self.X[:, None]
        self.X = self.X[None]  # (1, n, d)
        self.y = torch.as_tensor(np.asarray(y, dtype=np.float64), **kw)
        n, p = self.y.shape[0], model.n_params
        self.n, self.p = n, p
        if widths is None:
            widths = (n, n, p)
        wl, ws, wi = (int(w) for w in widths)
        if wl not in (0, n) or ws not in (0, n) or wi not in (0, p):
            raise ValueError(f"widths must be (0 or {n}, 0 or {n}, 0 or {p}), got {widths}")
        c = coefficients
        for name, used, coef in (("label", wl, c.label), ("sgd", ws, c.sgd), ("iso", wi, c.iso)):
            if not used and np.any(coef):
                raise ValueError(f"the {name} channel has non-zero coefficients but width 0")
        if wl == ws == wi == 0:
            wi = p  # no noise at all: one idle isotropic channel (s = 0)
        self.widths = (wl, ws, wi)
        self.noise_type = "general" if (wl or ws) else "additive"
        self.a = torch.as_tensor(np.asarray(c.label, dtype=np.float64), **kw)[:, None]
        self.b = torch.as_tensor(np.asarray(c.sgd, dtype=np.float64), **kw)[:, None]
        self.s = torch.as_tensor(np.asarray(c.iso, dtype=np.float64), **kw)[:, None]
        self.alive: torch.Tensor | None = None  # (T,) bool; None: all alive

    @property
    def brownian_size(self) -> int:
        """m, the number of Brownian columns."""
        return sum(self.widths)

    # ---------------------------------------------------------------- helpers
    def _forward(self, y: torch.Tensor):
        """(vjp, predictions, residuals); vjp(w) = phi^T w (see Model.predict_with_vjp_torch)."""
        pred, vjp = self.model.predict_with_vjp_torch(y, self.X)  # (T, n)
        return vjp, pred, pred - self.y

    def _mask(self, out: torch.Tensor) -> torch.Tensor:
        if self.alive is None:
            return out
        return torch.where(self.alive[:, None], out, torch.zeros((), dtype=out.dtype))

    def _weights(self, r: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor | None, Any]:
        """w = a v_label + b r (v_sgd - mean v_sgd) (None if no data channel) and v_iso."""
        wl, ws, wi = self.widths
        w = None
        if wl:
            w = self.a * v[:, :wl]
        if ws:
            vs = v[:, wl : wl + ws]
            term = self.b * r * (vs - vs.mean(dim=1, keepdim=True))
            w = term if w is None else w + term
        return w, (v[:, wl + ws :] if wi else None)

    # ------------------------------------------------------------ torchsde API
    def f(self, t, y):
        """Drift -grad L = -phi^T r / n, (T, p)."""
        vjp, _, r = self._forward(y)
        return self._mask(-vjp(r / self.n))

    def g_prod(self, t, y, v):
        """G(y) v for v (T, m): one vector-Jacobian product phi^T w (+ s v_iso)."""
        vjp, _, r = self._forward(y)
        w, v_iso = self._weights(r, v)
        out = torch.zeros_like(y) if w is None else vjp(w)
        if v_iso is not None:
            out = out + self.s * v_iso
        return self._mask(out)

    def f_and_g_prod(self, t, y, v):
        """(f, G v) from one forward pass and two backward passes."""
        vjp, _, r = self._forward(y)
        w, v_iso = self._weights(r, v)
        drift = -vjp(r / self.n)
        out = torch.zeros_like(y) if w is None else vjp(w)
        if v_iso is not None:
            out = out + self.s * v_iso
        return self._mask(drift), self._mask(out)

    def g(self, t, y):
        """The full diffusion matrix G(y), (T, p, m). For tests only: it forms phi."""
        with torch.enable_grad():
            theta = y.detach().requires_grad_(True)
            pred = self.model.predict_torch(theta, self.X)
            r = pred.detach() - self.y
            cols = [
                torch.autograd.grad(pred[:, i].sum(), theta, retain_graph=True)[0]
                for i in range(self.n)
            ]
        phi_t = torch.stack(cols, dim=2)  # (T, p, n)
        wl, ws, wi = self.widths
        T = y.shape[0]
        blocks = []
        if wl:
            blocks.append(self.a[:, :, None] * phi_t)
        if ws:
            centring = torch.eye(self.n, dtype=y.dtype, device=y.device) - 1.0 / self.n
            blocks.append(self.b[:, :, None] * (phi_t * r[:, None, :]) @ centring)
        if wi:
            eye = torch.eye(self.p, dtype=y.dtype, device=y.device).expand(T, -1, -1)
            blocks.append(self.s[:, :, None] * eye)
        G = torch.cat(blocks, dim=2)
        if self.alive is not None:
            G = torch.where(self.alive[:, None, None], G, torch.zeros((), dtype=G.dtype))
        return G


@dataclasses.dataclass
class _TorchsdeState:
    problem: SDEProblem
    sde: ModelSDE
    theta: torch.Tensor
    entropy: int
    bm: Any  # torchsde.BrownianInterval over the whole run, or None


@dataclasses.dataclass(frozen=True)
class TorchsdeSolver(Solver):
    """``torchsde.sdeint`` on the problem's SDE (see the module doc for noise types,
    randomness and divergence handling).

    method: ``"euler"`` (default; the only one for label or SGD-covariance noise),
        ``"milstein"`` or ``"srk"`` (isotropic-only or no noise: additive noise).
    dtype: ``"float64"`` (default) or ``"float32"``.
    increments: ``BrownianInterval()``, torchsde's own (the only source).
    """

    method: str = "euler"
    dtype: str = "float64"
    increments: IncrementSource | str = dataclasses.field(default_factory=BrownianInterval)
    name = "torchsde"
    needs_kernels: ClassVar[bool] = False  # torch maths only: any TorchModel runs
    accepted_increments: ClassVar[tuple] = (BrownianInterval,)
    # divergence is checked at the ends of advance calls only
    split_invariant: ClassVar[bool] = False

    def __post_init__(self):
        if self.method not in ORDERS:
            raise ValueError(
                f"unknown torchsde method {self.method!r}: choose one of {sorted(ORDERS)} "
                "(only 'euler' for label or sgd-covariance noise)"
            )
        check_option("dtype", self.dtype, _DTYPES)
        increments = as_increments(self.increments, self.accepted_increments)
        object.__setattr__(self, "increments", increments)

    def strong_order(self, problem: SDEProblem) -> float:
        """The method's strong order on this problem's noise (``ADDITIVE_ORDERS``, ``ORDERS``)."""
        return (ADDITIVE_ORDERS if problem.additive_noise else ORDERS)[self.method][0]

    def weak_order(self, problem: SDEProblem) -> float:
        """The method's weak order on this problem's noise."""
        return (ADDITIVE_ORDERS if problem.additive_noise else ORDERS)[self.method][1]

    def make_sde(self, problem: SDEProblem, device: str = "cpu") -> ModelSDE:
        """The torchsde module of ``problem`` (active Brownian channels only)."""
        sde = ModelSDE(
            problem.model,
            problem.data.X,
            problem.data.y,
            problem.coefficients,
            widths=problem.widths(),
            dtype=self.dtype,
            device=device,
        )
        allowed = METHODS_BY_NOISE[sde.noise_type]
        if self.method not in allowed:
            raise ValueError(
                f"torchsde method {self.method!r} does not support {sde.noise_type} noise "
                f"(label or sgd-covariance noise is general): allowed methods are {list(allowed)}"
            )
        return sde

    def init(self, problem, theta0, streams, device="cpu"):
        device = check_device(device, f"solver {self.name!r}")
        sde = self.make_sde(problem, device)
        kw = {"dtype": getattr(torch, self.dtype), "device": torch.device(device)}
        theta = torch.as_tensor(np.array(theta0, dtype=np.float64), **kw)
        entropy = self.increments.entropy(streams)
        bm = None
        if problem.n_steps is not None:
            bm = self._brownian(
                sde, theta, 0.0, int(problem.n_steps) * problem.dt, entropy, problem
            )
        return _TorchsdeState(problem, sde, theta, entropy, bm)

    def advance(self, state, k0, k1, diverged_step):
        if k1 <= k0:
            return
        pb, sde = state.problem, state.sde
        dev = state.theta.device
        alive = torch.as_tensor(diverged_step < 0, device=dev)
        # Trajectories already bad at k0 (their initial state) freeze there.
        bad0 = alive & ~(self._loss(state, state.theta) <= pb.max_loss)
        _flag(diverged_step, bad0, k0)
        alive &= ~bad0
        if not bool(alive.any()):
            return
        sde.alive = alive
        t0, t1 = k0 * pb.dt, k1 * pb.dt
        bm = state.bm
        if bm is None or pb.n_steps is None or k1 > int(pb.n_steps):
            seg = int(np.random.SeedSequence([state.entropy, k0, k1]).generate_state(1)[0])
            bm = self._brownian(sde, state.theta, t0, t1, seg, pb)
        ts = torch.tensor([t0, t1], dtype=torch.float64, device=dev)
        with torch.no_grad():
            ys = torchsde.sdeint(sde, state.theta, ts, bm=bm, method=self.method, dt=pb.dt)
        new = ys[-1]
        bad = alive & ~(self._loss(state, new) <= pb.max_loss)
        _flag(diverged_step, bad, k1)
        keep = alive & ~bad
        state.theta = torch.where(keep[:, None], new, state.theta)

    def params(self, state):
        return state.theta.detach().to("cpu", torch.float64).numpy()

    def _brownian(self, sde, theta, t0, t1, entropy, problem):
        return torchsde.BrownianInterval(
            t0=float(t0),
            t1=float(t1),
            size=(theta.shape[0], sde.brownian_size),
            dtype=theta.dtype,
            device=theta.device,
            entropy=int(entropy),
            dt=float(problem.dt),
            levy_area_approximation="space-time" if self.method == "srk" else "none",
        )

    @staticmethod
    def _loss(state, theta):
        with torch.no_grad():
            return state.problem.model.loss_torch(theta, state.sde.X, state.sde.y)


def _flag(diverged_step: np.ndarray, bad: torch.Tensor, step: int) -> None:
    hit = bad.cpu().numpy()
    diverged_step[hit] = step


def run_entropy(streams: dict[str, list[np.random.Generator]]) -> int:
    """The ``BrownianInterval`` entropy of a run (``BrownianInterval().entropy``)."""
    return BrownianInterval().entropy(streams)


__all__ = ["METHODS_BY_NOISE", "ModelSDE", "TorchsdeSolver", "run_entropy"]
