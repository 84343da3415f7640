"""Euler-Maruyama in torch: batched over trajectories, CPU or CUDA, float64 or float32.

The same scheme as ``euler_numba`` (see there and ``sgdsde.sde.solvers.base``):

    w     = r dt / n + sqrt(dt) (a z + b r (u - mean u))          (T, n)
    theta <- theta - phi^T w - s sqrt(dt) zeta

with phi^T w computed as a vector-Jacobian product of ``model.predict_torch`` (one
backward pass per step; phi is never formed).

Increments (``sgdsde.sde.solvers.increments``):

* ``NumpyIncrements()`` (default, "numpy"): the standard normals are drawn in numpy from
  the trajectory streams exactly as for ``euler_numba`` and moved to the device, so the
  two solvers agree to round-off in float64 for the same seed, and each trajectory's
  numbers do not depend on the others.
* ``XoshiroIncrements()`` ("xoshiro"): per-trajectory xoshiro streams drawn by numba in
  parallel: about 10x faster than numpy's generator, with the same per-trajectory
  reproducibility; the same numbers as ``euler_numba`` with them and ``euler_gemm``.
* ``TorchIncrements()`` ("torch"): normals from one ``torch.Generator`` on the device
  (faster on a GPU: no host-to-device copies). Its seed is a hash of every trajectory's
  ``"brownian"`` seed sequence (so of the run's seed), and it draws one chunk of
  steps at a time on a fixed grid: a run is reproducible (same seed, same number of
  trajectories, same device), but trajectory t does *not* see the same numbers in a
  run with another number of trajectories.
* ``BrownianBridge(refine)``: common random numbers with label-noise GD.

``dtype="float32"`` runs the state and the maths in single precision (increments are
drawn in float64 and rounded); results then agree with float64 to float32 accuracy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from sgdsde.lazy import lazy_module
from sgdsde.run.checks import check_device
from sgdsde.run.loop import chunk_segments
from sgdsde.sde.solvers.base import Increments, SDEProblem, Solver, check_option
from sgdsde.sde.solvers.increments import (
    BrownianBridge,
    ChunkedDraws,
    IncrementSource,
    NumpyIncrements,
    TorchIncrements,
    XoshiroIncrements,
    as_increments,
)

torch = lazy_module("torch")

_DTYPES = ("float64", "float32")


@dataclasses.dataclass
class _TorchState:
    problem: SDEProblem
    theta: Any  # (T, p) tensor
    X: Any  # (1, n, d) tensor
    y: Any  # (n,) tensor
    a: Any  # a sqrt(dt), (T, 1)
    b: Any  # b sqrt(dt), (T, 1)
    s: Any  # s sqrt(dt), (T, 1)
    dt_n: Any  # dt / n: a float (one dt for all) or a (T, 1) tensor (dt per trajectory)
    channels: tuple[bool, bool, bool]
    draws: ChunkedDraws  # chunks of (label, sgd, iso) tensors on the device


@dataclasses.dataclass(frozen=True)
class EulerMaruyamaTorch(Solver):
    """Euler-Maruyama with batched torch maths and autograd VJPs (CPU or CUDA).

    dtype: "float64" (default) or "float32".
    increments: an increment source or its name (module doc; default numpy's streams).
    """

    dtype: str = "float64"
    increments: IncrementSource | str = dataclasses.field(default_factory=NumpyIncrements)
    name = "euler_torch"
    retimes: ClassVar[bool] = True
    needs_kernels: ClassVar[bool] = False  # torch maths only: any TorchModel runs
    accepted_increments: ClassVar[tuple] = (
        NumpyIncrements,
        XoshiroIncrements,
        TorchIncrements,
        BrownianBridge,
    )

    def __post_init__(self):
        check_option("dtype", self.dtype, _DTYPES)
        increments = as_increments(self.increments, self.accepted_increments)
        object.__setattr__(self, "increments", increments)

    def init(self, problem, theta0, streams, device="cpu"):
        dev = torch.device(check_device(device, f"solver {self.name!r}"))
        kw = {"device": dev, "dtype": getattr(torch, self.dtype)}

        def to_device(inc: Increments) -> Increments:
            tensors = (torch.as_tensor(x, **kw) for x in (inc.label, inc.sgd, inc.iso))
            return Increments(inc.k0, *tensors)

        return _TorchState(
            problem=problem,
            theta=torch.as_tensor(np.array(theta0, dtype=np.float64), **kw),
            X=torch.as_tensor(problem.data.X, **kw)[None],
            y=torch.as_tensor(problem.data.y, **kw),
            **_scaled_coefficients(problem, kw),
            channels=problem.coefficients.channels(),
            draws=self.increments.draws(problem, streams, convert=to_device, **kw),
        )

    def retime(self, state, problem):
        state.problem = problem
        kw = {"device": state.theta.device, "dtype": state.theta.dtype}
        for name, value in _scaled_coefficients(problem, kw).items():
            setattr(state, name, value)

    def advance(self, state, k0, k1, diverged_step):
        if k1 <= k0:
            return
        dev = state.theta.device
        alive = torch.as_tensor(diverged_step < 0, device=dev)
        first_bad = torch.full(alive.shape, -1, dtype=torch.int64, device=dev)
        for c0, ka, kb in chunk_segments(k0, k1, state.draws.chunk_steps):
            inc = state.draws.at(c0)
            for k in range(ka, kb):
                _em_step_torch(state, inc.label, inc.sgd, inc.iso, k - c0, k, alive, first_bad)
        hit = first_bad.cpu().numpy()
        diverged_step[hit >= 0] = hit[hit >= 0]

    def params(self, state):
        return state.theta.detach().to("cpu", torch.float64).numpy()


def _scaled_coefficients(problem: SDEProblem, kw: dict) -> dict[str, Any]:
    """The state's a, b, s (coefficients times sqrt(dt), (T, 1) tensors) and dt / n."""
    c, n = problem.coefficients, problem.data.n
    if np.ndim(problem.dt) == 0:
        sdt, dt_n = float(np.sqrt(problem.dt)), problem.dt / n
    else:
        dt = problem.dt_per_traj()
        sdt, dt_n = np.sqrt(dt), torch.as_tensor(dt / n, **kw)[:, None]
    return {
        "a": torch.as_tensor(c.label * sdt, **kw)[:, None],
        "b": torch.as_tensor(c.sgd * sdt, **kw)[:, None],
        "s": torch.as_tensor(c.iso * sdt, **kw)[:, None],
        "dt_n": dt_n,
    }


def em_steps_torch(
    problem: SDEProblem,
    theta: np.ndarray,
    increments: Increments,
    *,
    dtype: str = "float64",
    device: str = "cpu",
    diverged_step: np.ndarray | None = None,
) -> np.ndarray:
    """Run torch EM over all rows of *given* standard normals; returns the new (T, p)
    float64 parameters (``theta`` is not modified). The torch twin of ``em_steps_numba``."""
    solver = EulerMaruyamaTorch(dtype=dtype)
    state = solver.init(problem, theta, {}, device)
    kw = {"device": state.theta.device, "dtype": state.theta.dtype}
    z, u, zeta = (
        torch.as_tensor(x, **kw) for x in (increments.label, increments.sgd, increments.iso)
    )
    if diverged_step is None:
        diverged_step = np.full(theta.shape[0], -1, dtype=np.int64)
    alive = torch.as_tensor(diverged_step < 0, device=state.theta.device)
    first_bad = torch.full(alive.shape, -1, dtype=torch.int64, device=state.theta.device)
    for row in range(increments.n_steps):
        _em_step_torch(state, z, u, zeta, row, increments.k0 + row, alive, first_bad)
    hit = first_bad.cpu().numpy()
    diverged_step[hit >= 0] = hit[hit >= 0]
    return solver.params(state)


def _em_step_torch(state, z, u, zeta, row, k, alive, first_bad):
    """One EM step for every alive trajectory (in place on state.theta, alive, first_bad).

    Frozen trajectories get w = 0 and no isotropic kick, so theta - g leaves them in
    place without a select; ops are fused and in place where possible because at
    T ~ 1000 a step is a handful of memory-bound (T, n) and (T, p) passes."""
    pb = state.problem
    n = state.y.shape[0]
    label, sgd, iso = state.channels
    f, vjp = pb.model.predict_with_vjp_torch(state.theta, state.X)  # f: (T, n)
    r = f - state.y
    sq = (r * r).sum(dim=1)
    bad = alive & ~(sq <= 2.0 * n * pb.max_loss)
    first_bad.masked_fill_(bad & (first_bad < 0), k)
    alive &= ~bad
    keep = alive[:, None].to(r.dtype)
    w = r.mul_(state.dt_n)  # r is not used again: reuse its memory for w
    if label:
        w.addcmul_(state.a, z[:, row])
    if sgd:
        ur = u[:, row]
        w.addcmul_(state.b * (f - state.y), ur - ur.mean(dim=1, keepdim=True))
    w.mul_(keep)
    g = vjp(w)
    with torch.no_grad():
        if iso:
            g.addcmul_(state.s * keep, zeta[:, row])
        state.theta = state.theta - g
