"""Euler-Maruyama as two GEMMs over all trajectories and a few fused numba passes.

For models whose first layer is a matrix M of k rows per trajectory applied to the
shared inputs (``Model.gemm_kernels``: k = 1 and M = beta for the models linear in
their input, diagonal networks, linear regression, deep diagonal modes; k = m hidden
units for the two-layer ReLU), one step of the scheme of ``sgdsde.sde.solvers.base``
for all T trajectories is

    Z     = M X^T                                          GEMM (T k, d) (d, n), torch
    P     = head(Z)                                        model pass (P = Z if k = 1)
    w_i   = r_i dt / n + sqrt(dt) (a z_i + b r_i (u_i - mean u)),  r = P - y
    G_Z   = dP/dZ^T w, head parameters step                model pass (G_Z = w if k = 1)
    G_M   = G_Z X                                          GEMM (T k, n) (n, d), torch
    theta <- theta - (dM/dtheta)^T G_M - s sqrt(dt) zeta,   M refreshed   (model pass)

i.e. theta - grad L dt + G(theta) dW with phi^T w computed through the two GEMMs
(for a linear predictor beta(theta): phi^T w = J_beta^T (X^T w)). The passes run in
numba, parallel over trajectories; the solver's residual pass and the isotropic pass
draw the normals z, u, zeta inline from per-trajectory xoshiro256++ streams
(``sgdsde.xoshiro``, the layout of ``XoshiroIncrements``, so the iterates equal those
of ``euler_torch`` and ``euler_numba`` with ``XoshiroIncrements()`` to round-off).
Nothing is allocated in the step loop and no (T, S, n) block of normals is stored.

Why this solver: at T ~ 1000 a generic step is a dozen memory-bound passes plus
n T normals from numpy (~0.7 ms); here the two GEMMs (4 n d T flops) dominate
(``benchmarks/bench_sde.py``). CPU only; use ``euler_torch`` on a GPU and for models
without ``gemm_kernels``.

Orders: strong 0.5, weak 1 (strong 1 for additive noise, e.g. label noise on linear
regression). Results depend on T and on the thread count only through the GEMMs'
rounding (~1e-16 relative), as for ``euler_torch``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numba as nb
import numpy as np

from sgdsde import xoshiro
from sgdsde.lazy import lazy_module
from sgdsde.models.kernels import FASTMATH, GemmKernels
from sgdsde.run.checks import check_device
from sgdsde.sde.solvers.base import SDEProblem, Solver, check_option
from sgdsde.sde.solvers.increments import IncrementSource, XoshiroIncrements, as_increments

torch = lazy_module("torch")


# The passes compile lazily (per dtype, on first use, cached on disk): nothing at import.
@nb.njit(cache=True, parallel=True, fastmath=FASTMATH)
def _residual_noise(P, y, a, b, dt, max_loss, diverged_step, k, rng, W, U, edges, ratios, dens):
    T, n = P.shape
    for t in nb.prange(T):
        dt_n = dt[t] / n
        w = W[t]
        if diverged_step[t] >= 0:
            w[:] = 0.0
            continue
        acc = 0.0
        for i in range(n):
            r = np.float64(P[t, i] - y[i])
            acc += r * r
        if not (0.5 * acc / n <= max_loss):
            diverged_step[t] = k
            w[:] = 0.0
            continue
        if a[t] != 0.0:
            xoshiro.fill_normals_row(rng, t, w, edges, ratios, dens)
            for i in range(n):
                w[i] = (P[t, i] - y[i]) * dt_n + a[t] * w[i]
        else:
            for i in range(n):
                w[i] = (P[t, i] - y[i]) * dt_n
        if b[t] != 0.0:
            u = U[t]
            xoshiro.fill_normals_row(rng, t, u, edges, ratios, dens)
            ubar = 0.0
            for i in range(n):
                ubar += u[i]
            ubar /= n
            for i in range(n):
                w[i] += b[t] * (P[t, i] - y[i]) * (u[i] - ubar)


@nb.njit(cache=True, parallel=True, fastmath=FASTMATH)
def _isotropic_noise(theta, s, diverged_step, rng, Z, edges, ratios, dens):
    """theta[t] -= s_t sqrt(dt) zeta for alive trajectories with s_t > 0 (s includes sqrt(dt))."""
    for t in nb.prange(theta.shape[0]):
        if diverged_step[t] >= 0 or s[t] == 0.0:
            continue
        z = Z[t]
        xoshiro.fill_normals_row(rng, t, z, edges, ratios, dens)
        for j in range(z.shape[0]):
            theta[t, j] -= s[t] * z[j]


@dataclasses.dataclass
class _GemmState:
    problem: SDEProblem
    kernels: GemmKernels
    theta: np.ndarray  # (T, p), the state's dtype
    M: np.ndarray  # (T k, d) first-layer matrix (beta for k = 1)
    Z: np.ndarray  # (T k, n) = M X^T
    P: np.ndarray  # (T, n) predictions (Z itself without a head)
    W: np.ndarray  # (T, n) w of the step
    GZ: np.ndarray  # (T k, n) dP/dZ^T w (W itself without a head)
    GM: np.ndarray  # (T k, d) = GZ X
    U: np.ndarray  # (T, n or 0) sgd-channel scratch
    Zeta: np.ndarray  # (T, p or 0) isotropic scratch
    rng: np.ndarray  # (T, 4) uint64
    y: np.ndarray
    spec: np.ndarray
    a: np.ndarray  # coefficients times sqrt(dt), float64
    b: np.ndarray
    s: np.ndarray
    dt: np.ndarray  # (T,) float64, the problem's dt per trajectory
    torch_views: tuple  # (M, Z, GZ, GM, X^T, X) sharing memory with the arrays above


_DTYPES = {"float64": np.float64, "float32": np.float32}


def _scaled_coefficients(problem: SDEProblem) -> dict[str, np.ndarray]:
    """The state's a, b, s (coefficients times sqrt(dt)) and dt, per trajectory."""
    c, dt = problem.coefficients, problem.dt_per_traj()
    sdt = np.sqrt(dt)
    return {
        "a": np.ascontiguousarray(c.label * sdt, dtype=np.float64),
        "b": np.ascontiguousarray(c.sgd * sdt, dtype=np.float64),
        "s": np.ascontiguousarray(c.iso * sdt, dtype=np.float64),
        "dt": dt,
    }


@dataclasses.dataclass(frozen=True)
class EulerMaruyamaGEMM(Solver):
    """Euler-Maruyama as two torch GEMMs and fused numba passes per step, normals drawn
    in the passes (xoshiro streams), for models with ``gemm_kernels``. CPU only.

    dtype: "float64" (default) or "float32" (state, data and GEMMs in single precision;
    the normals are drawn in float64 and rounded, the loss check accumulates in float64).
    increments: ``XoshiroIncrements()``, the only source (drawn inside the kernels).
    """

    dtype: str = "float64"
    increments: IncrementSource | str = dataclasses.field(default_factory=XoshiroIncrements)
    name = "euler_gemm"
    retimes: ClassVar[bool] = True
    accepted_increments: ClassVar[tuple] = (XoshiroIncrements,)

    def __post_init__(self):
        check_option("dtype", self.dtype, _DTYPES)
        increments = as_increments(self.increments, self.accepted_increments)
        object.__setattr__(self, "increments", increments)

    def init(self, problem, theta0, streams, device="cpu"):
        check_device(device, f"solver {self.name!r}", cpu_only="use solver='euler_torch' for a GPU")
        model = problem.model
        kernels = model.gemm_kernels
        if kernels is None:
            raise ValueError(
                "solver 'euler_gemm' needs a model with gemm_kernels (diagonal_linear, "
                "linear_regression, linear_teacher_student, two_layer_relu); "
                f"{model.name!r} has none: use solver='euler_torch' or 'euler_numba'"
            )
        dtype = _DTYPES[self.dtype]
        theta = np.array(theta0, dtype=dtype, order="C", copy=True)
        T, k = theta.shape[0], kernels.rows
        n, d = problem.data.n, model.input_dim
        spec = np.ascontiguousarray(model.spec, dtype=dtype)
        M = np.empty((T * k, d), dtype=dtype)
        kernels.first_layer(theta, spec, M)  # descend keeps M in step with theta from here on
        Z = np.empty((T * k, n), dtype=dtype)
        W = np.empty((T, n), dtype=dtype)
        P = Z if kernels.head_forward is None else np.empty((T, n), dtype=dtype)
        GZ = W if kernels.head_backward is None else np.empty((T * k, n), dtype=dtype)
        GM = np.empty((T * k, d), dtype=dtype)
        X = np.ascontiguousarray(problem.data.X, dtype=dtype)
        widths = problem.widths()
        views = tuple(torch.from_numpy(x) for x in (M, Z, GZ, GM, np.ascontiguousarray(X.T), X))
        return _GemmState(
            problem=problem,
            kernels=kernels,
            theta=theta,
            M=M,
            Z=Z,
            P=P,
            W=W,
            GZ=GZ,
            GM=GM,
            U=np.empty((T, widths[1]), dtype=dtype),
            Zeta=np.empty((T, widths[2]), dtype=dtype),
            rng=self.increments.seed_state(streams),
            y=np.ascontiguousarray(problem.data.y, dtype=dtype),
            spec=spec,
            **_scaled_coefficients(problem),
            torch_views=views,
        )

    def retime(self, state, problem):
        state.problem = problem
        for name, value in _scaled_coefficients(problem).items():
            setattr(state, name, value)

    def advance(self, state, k0, k1, diverged_step):
        pb, kern = state.problem, state.kernels
        tM, tZ, tGZ, tGM, tXT, tX = state.torch_views
        tables = xoshiro.TABLES
        dt, max_loss = state.dt, float(pb.max_loss)
        theta, spec = state.theta, state.spec
        for k in range(k0, k1):
            torch.mm(tM, tXT, out=tZ)
            if kern.head_forward is not None:
                kern.head_forward(state.Z, theta, spec, state.P)
            _residual_noise(
                state.P, state.y, state.a, state.b, dt, max_loss, diverged_step, k,
                state.rng, state.W, state.U, *tables,
            )  # fmt: skip
            if kern.head_backward is not None:
                kern.head_backward(state.Z, state.W, theta, spec, diverged_step, state.GZ)
            torch.mm(tGZ, tX, out=tGM)
            kern.descend(theta, state.GM, spec, state.M, diverged_step)
            if state.Zeta.shape[1]:  # some trajectory has s > 0
                _isotropic_noise(theta, state.s, diverged_step, state.rng, state.Zeta, *tables)
                kern.first_layer(theta, spec, state.M)

    def params(self, state):
        return state.theta.astype(np.float64)
