"""``simulate_sde``: integrate the SDE model of SGD for many trajectories in one call.

    d theta = -grad L(theta) dt + G(theta) dW        (Ito; G from a ``NoiseModel``)

with a fixed step dt and a ``Solver`` (default the numba Euler-Maruyama). The output
has exactly the layout of ``simulate_sgd``: dims ``traj`` and ``step``, coords ``step``
(steps done) and ``time`` = step * dt, the same recorded metrics, ``diverged`` and
``diverged_step``, and the resolved configuration, package version, seeds and
integrator in the attrs. The random numbers a trajectory uses are described in
``sgdsde.sde.solvers.base``; label-noise GD at step eta and ``LabelNoise(delta, eta,
n)`` at dt = eta with the same seed give the same iterates up to round-off.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.data import RegressionData
from sgdsde.models.base import Model
from sgdsde.random import trajectory_streams
from sgdsde.run.checks import (
    agree_n_traj,
    check_bounds,
    check_model_data,
    check_n_steps,
    shared_traj_sizes,
)
from sgdsde.run.grids import as_grid, eval_grid
from sgdsde.run.loop import (
    base_config,
    block_steps,
    finish_dataset,
    initial_params,
    start_recording,
    walk_save_points,
)
from sgdsde.run.provenance import run_attrs
from sgdsde.sde.noise import LabelNoise, NoiseModel, StabilizedLoss, make_noise
from sgdsde.sde.solvers import SOLVERS
from sgdsde.sde.solvers.base import SDEProblem, Solver

_COORD_ATTRS = {
    "dt": {"long_name": "SDE time step dt", "units": "1"},
    "noise_label": {"long_name": "label-channel coefficient a (G = phi^T a on dW_label)"},
    "noise_sgd": {"long_name": "SGD-covariance coefficient b (G = b phi^T diag(r) P)"},
    "noise_iso": {"long_name": "isotropic coefficient s (G = s I on dW_iso)"},
}


def _as_solver(solver: Any) -> Solver:
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}: choose one of {sorted(SOLVERS)}")
        return SOLVERS[solver]()
    raise ValueError(
        f"solver must be a name in {sorted(SOLVERS)} or a Solver instance "
        f"(got {type(solver).__name__})"
    )


def _as_noise(noise: Any) -> NoiseModel:
    if isinstance(noise, NoiseModel):
        return noise
    if isinstance(noise, Mapping) and "name" in noise:
        cfg = dict(noise)
        return make_noise(cfg.pop("name"), **cfg)
    raise ValueError(
        "noise must be a sgdsde.sde noise model (LabelNoise, SGDCovariance, ...) or its "
        f"config dict with a 'name' (got {type(noise).__name__})"
    )


def _noise_coords(noise: NoiseModel, n_traj: int) -> dict[str, np.ndarray]:
    """Per-trajectory SGD settings the noise model stands for: lr, batch_size, label_noise."""
    fields = {f.name: getattr(noise, f.name) for f in dataclasses.fields(noise)}
    out: dict[str, np.ndarray] = {}

    def per_traj(value):
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (n_traj,)).copy()

    if "lr" in fields:
        out["lr"] = per_traj(fields["lr"])
    if "batch_size" in fields:
        batch = per_traj(fields["batch_size"])
        out["batch_size"] = batch.astype(np.int64) if np.all(batch == np.rint(batch)) else batch
    if isinstance(noise, LabelNoise):
        out["label_noise"] = per_traj(noise.delta)
    elif isinstance(noise, StabilizedLoss):
        out["label_noise"] = 2.0 * per_traj(noise.level)
    elif "label_noise" in fields:  # e.g. SGDNoise: the label-noise variance delta
        out["label_noise"] = per_traj(fields["label_noise"])
    return out


def simulate_sde(
    model: Model,
    data: RegressionData,
    noise: NoiseModel,
    *,
    dt: float,
    n_steps: int,
    solver: str | Solver = "euler_numba",
    n_traj: int | None = None,
    seed: Any = 0,
    theta0: np.ndarray | None = None,
    save_steps: Any = None,
    save_params: bool = False,
    metrics: Sequence[Any] = (),
    l0_threshold: float = 1e-50,
    max_loss: float = 1e10,
    device: str = "cpu",
    run_names: Sequence[str] | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Integrate T trajectories of the SDE with noise model ``noise`` and return a Dataset.

    noise: a noise model (``LabelNoise(delta, lr, batch_size)``, ``StabilizedLoss``,
        ``SGDCovariance``, ``Isotropic``, ``GradientFlow``) or its config dict; its
        per-trajectory parameters (sequences) set the number of trajectories.
    dt, n_steps: the constant time step and the number of steps (final time n_steps dt).
    solver: a name in ``SOLVERS`` ("euler_numba", "euler_torch", ...) or a Solver
        instance (e.g. ``EulerMaruyamaTorch(dtype="float32")``).
    seed: int, SeedSequence, or one seed per trajectory (as ``simulate_sgd``).
    theta0: (p,) or (T, p) initial parameters (default: the model's init, drawn from
        the "init" streams exactly as ``simulate_sgd`` does).
    save_steps: steps at which metrics are recorded (default ``eval_grid(n_steps)``).
    save_params: also record the parameters theta at every save step (T x S x p).
    metrics: extra metric objects recorded during the run (as ``simulate_sgd``).
    max_loss: a trajectory whose training loss is non-finite or above it is frozen
        and marked diverged (``diverged_step``); the others go on.
    device: "cpu" or a torch device such as "cuda" (torch-based solvers only).

    Per-trajectory coords: ``dt``, the noise coefficients ``noise_label``,
    ``noise_sgd``, ``noise_iso``, and, where the noise model defines them, ``lr``,
    ``batch_size`` and ``label_noise`` (delta; 2 L* for ``StabilizedLoss``).
    """
    # ---------------------------------------------------------------- validation
    check_model_data(model, data, torch_model_ok=True)
    check_n_steps(n_steps)
    check_bounds(max_loss, l0_threshold)
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0 (got {dt!r})")
    dt = float(dt)
    noise = _as_noise(noise)
    solver = _as_solver(solver)
    if run_names is not None:
        run_names = [str(r) for r in run_names]
    sizes = shared_traj_sizes(theta0, run_names, seed)
    if noise.n_traj is not None:
        sizes["noise"] = noise.n_traj
    T = agree_n_traj(n_traj, sizes)
    n = data.n
    coefficients = noise.coefficients(n, T)
    save = eval_grid(n_steps) if save_steps is None else as_grid(save_steps, n_steps)

    # ------------------------------------------------------------ randomness, init
    streams = trajectory_streams(seed, T)
    theta = initial_params(model, theta0, T, streams["init"])
    problem = SDEProblem(model, data, coefficients, dt, float(max_loss), int(n_steps))
    state = solver.start(problem, theta, streams, device)
    recorder, diverged_step, times = start_recording(
        model,
        data,
        save,
        T,
        metrics=metrics,
        l0_threshold=l0_threshold,
        max_loss=max_loss,
        save_params=save_params,
    )

    # ------------------------------------------------------------------- the loop
    def advance(ka: int, kb: int) -> None:
        if kb > ka:
            solver.advance(state, ka, kb, diverged_step)

    def record(i: int, k: int) -> None:
        j = int(np.searchsorted(save, k))
        if j < len(save) and save[j] == k:
            times[:, j] = k * dt
        recorder.observe(k, solver.params(state), diverged_step)

    walk_save_points(
        recorder.steps,
        block_steps(T, sum(problem.widths())),
        advance,
        record,
        progress=progress,
        desc=f"SDE ({solver.name})",
    )

    # ------------------------------------------------------------------ output
    config = base_config(
        "sde",
        model,
        data,
        n_steps=n_steps,
        n_traj=T,
        device=device,
        l0_threshold=l0_threshold,
        max_loss=max_loss,
        theta0=theta0,
    )
    config |= {"noise": noise.to_config(), "solver": solver.to_config(), "dt": dt}
    if recorder.config():
        config["metrics"] = recorder.config()
    attrs = run_attrs(
        f"{model.name} under the {noise.name} SDE", config, seed, integrator=solver.name
    )
    traj_coords: dict[str, np.ndarray] = {
        "dt": np.full(T, dt),
        **_noise_coords(noise, T),
        "noise_label": coefficients.label,
        "noise_sgd": coefficients.sgd,
        "noise_iso": coefficients.iso,
    }
    if run_names is not None:
        traj_coords["run"] = np.array(run_names, dtype=object)
    ds = finish_dataset(recorder, save, times, diverged_step, traj_coords, attrs)
    for name, extra in _COORD_ATTRS.items():
        ds[name].attrs.update(extra)
    if "lr" in ds.coords:
        ds["lr"].attrs["long_name"] = "SGD step size eta the noise model stands for"
    ds["time"].attrs["long_name"] = "SDE time t_k = k dt"
    return ds
