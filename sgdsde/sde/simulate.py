"""``simulate_sde``: integrate the SDE model of SGD for many trajectories in one call.

    d theta = -grad L(theta) dt + G(theta) dW        (Ito; G from a ``NoiseModel``)

with a fixed step dt and a ``Solver`` (default: the fastest one the model supports, see
``default_solver``). The output has exactly the layout of ``simulate_sgd``: dims
``traj`` and ``step``, coords ``step`` (steps done) and ``time`` = step * dt, the same
recorded metrics, ``diverged`` and ``diverged_step``, and the resolved configuration,
package version, seeds, solver and increments in the attrs. The random numbers a
trajectory uses are described in ``sgdsde.sde.solvers.base``; label-noise GD at step
eta and ``LabelNoise(delta, eta, n)`` at dt = eta with the same seed give the same
iterates up to round-off under ``solver="euler_numba"`` (numpy increments).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.data import RegressionData
from sgdsde.models.base import Model
from sgdsde.models.torch_model import no_kernels_error
from sgdsde.run.checks import agree_n_traj, check_positive_real, shared_traj_sizes
from sgdsde.run.driver import drive
from sgdsde.run.loop import check_run_arguments, run_names_coord, save_grid
from sgdsde.sde.noise import LabelNoise, NoiseModel, StabilizedLoss, make_noise
from sgdsde.sde.solvers import (
    EulerMaruyamaGEMM,
    EulerMaruyamaNumba,
    EulerMaruyamaTorch,
    XoshiroIncrements,
    as_solver,
)
from sgdsde.sde.solvers.base import SDEProblem, Solver

_COORD_ATTRS = {
    "dt": {"long_name": "SDE time step dt", "units": "1"},
    "noise_label": {"long_name": "label-channel coefficient a (G = phi^T a on dW_label)"},
    "noise_sgd": {"long_name": "SGD-covariance coefficient b (G = b phi^T diag(r) P)"},
    "noise_iso": {"long_name": "isotropic coefficient s (G = s I on dW_iso)"},
}


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


#: From this many examples on, a model without GEMM kernels runs faster in torch (batched
#: over trajectories and examples) than in numba (a loop over examples per trajectory):
#: measured at T = 256 on 2 cores, numba is 1.2-7x faster on the stochastic-collapse toys
#: and on deep ReLU nets with n <= 20, torch 1.4-4x faster on deep ReLU nets with n >= 32.
TORCH_MIN_EXAMPLES = 32


def default_solver(model: Model, data: RegressionData, device: str = "cpu") -> Solver:
    """The fastest solver ``model`` supports on ``device`` (the rule of ``simulate_sde``),
    all with per-trajectory xoshiro increments."""
    if str(device) != "cpu" or not isinstance(model, Model):
        # a TorchModel has no numba kernels: the torch solver is the one that runs it
        return EulerMaruyamaTorch(increments=XoshiroIncrements())
    if model.gemm_kernels is not None:
        return EulerMaruyamaGEMM()
    if data.n >= TORCH_MIN_EXAMPLES:
        return EulerMaruyamaTorch(increments=XoshiroIncrements())
    return EulerMaruyamaNumba(increments=XoshiroIncrements())


def simulate_sde(
    model: Model,
    data: RegressionData,
    noise: NoiseModel,
    *,
    dt: float,
    n_steps: int,
    solver: Solver | str | None = None,
    n_traj: int | None = None,
    seed: Any = 0,
    theta0: np.ndarray | None = None,
    save_steps: Any = None,
    save_params: bool = False,
    l0_threshold: float = 1e-50,
    max_loss: float = 1e10,
    device: str = "cpu",
    run_names: Sequence[str] | None = None,
    metrics: Sequence = (),
    progress: bool = False,
) -> xr.Dataset:
    """Integrate T trajectories of the SDE with noise model ``noise`` and return a Dataset.

    model, data: the closed-form model and its regression data (same input dimension).
    noise: a noise model (``LabelNoise(delta, lr, batch_size)``, ``StabilizedLoss``,
        ``SGDCovariance``, ``SGDNoise``, ``Isotropic``, ``GradientFlow``) or its config
        dict; its per-trajectory parameters (sequences) set the number of trajectories.
    dt, n_steps: the constant time step and the number of steps (final time n_steps dt).
    solver: a ``Solver`` (e.g. ``EulerMaruyamaTorch(dtype="float32")``), a name in
        ``SOLVERS`` or a solver config dict. Default (None): the fastest the model
        supports, ``default_solver(model, data, device)``, all with
        ``XoshiroIncrements``: on the CPU, ``euler_gemm`` for a model with
        ``gemm_kernels`` (diagonal networks, linear models, two-layer ReLU: ~9x the
        generic solvers on the DLN); else ``euler_numba`` for fewer than
        ``TORCH_MIN_EXAMPLES`` = 32 examples (the collapse toys: up to 7x
        ``euler_torch`` on quartic_well at T = 256) and ``euler_torch`` from 32 on
        (1.4-4x ``euler_numba`` on deep_relu); on a GPU, ``euler_torch``. The bit-exact
        path coupled to label-noise GD (numpy increments, the very normals GD draws) is
        ``solver="euler_numba"``.
    n_traj: the number of trajectories T; default: implied by the per-trajectory
        arguments (noise, theta0, seed, run_names), else 1.
    seed: int, SeedSequence, or one seed per trajectory (as ``simulate_sgd``); a
        ``numpy.random.Generator`` is refused.
    theta0: (p,) or (T, p) initial parameters (default: the model's init, drawn from
        the "init" streams exactly as ``simulate_sgd`` does).
    save_steps: steps at which metrics are recorded (default ``eval_grid(n_steps)``).
    save_params: also record the parameters theta at the save steps.
    l0_threshold: |beta_i| counted in l0_norm above it (paper: 1e-50).
    max_loss: a trajectory whose training loss is non-finite or above it is frozen
        and marked diverged (``diverged_step``); the others go on.
    device: "cpu" or a torch device such as "cuda" (torch-based solvers only).
    run_names: one name per trajectory, stored as the ``run`` coordinate.
    metrics: extra metric objects recorded at the save steps (``sgdsde.run.recording``).
    progress: show a progress bar.

    Per-trajectory coords: ``dt``, the noise coefficients ``noise_label``,
    ``noise_sgd``, ``noise_iso``, and, where the noise model defines them, ``lr``,
    ``batch_size`` and ``label_noise`` (delta; 2 L* for ``StabilizedLoss``). The attrs
    name the ``integrator`` (solver) and its ``increments``; the config holds the
    solver's config and its strong and weak orders on this problem.
    """
    n_steps = check_run_arguments(
        model,
        data,
        n_steps=n_steps,
        seed=seed,
        max_loss=max_loss,
        l0_threshold=l0_threshold,
        torch_model_ok=True,
    )
    dt = check_positive_real("dt", dt)
    noise = _as_noise(noise)
    solver = default_solver(model, data, device) if solver is None else as_solver(solver)
    if solver.needs_kernels and not isinstance(model, Model):
        raise no_kernels_error(model)
    sizes = shared_traj_sizes(theta0, run_names, seed)
    if noise.n_traj is not None:
        sizes["noise"] = noise.n_traj
    T = agree_n_traj(n_traj, sizes)
    coefficients = noise.coefficients(data.n, T)
    problem = SDEProblem(model, data, coefficients, dt, float(max_loss), n_steps)
    run = drive(
        solver,
        problem,
        seed=seed,
        theta0=theta0,
        save_steps=save_grid(save_steps, n_steps),
        save_params=save_params,
        l0_threshold=l0_threshold,
        metrics=metrics,
        device=device,
        progress=progress,
    )
    ds = run.to_dataset(
        "sde",
        f"{model.name} under the {noise.name} SDE",
        {
            "noise": noise.to_config(),
            "solver": solver.to_config(),
            "orders": {"strong": solver.strong_order(problem), "weak": solver.weak_order(problem)},
            "dt": dt,
        },
        {
            "dt": np.full(T, dt),
            **_noise_coords(noise, T),
            "noise_label": coefficients.label,
            "noise_sgd": coefficients.sgd,
            "noise_iso": coefficients.iso,
            **run_names_coord(run_names),
        },
        integrator=solver.name,
        increments=solver.increments.name,
    )
    for name, extra in _COORD_ATTRS.items():
        ds[name].attrs.update(extra)
    if "lr" in ds.coords:
        ds["lr"].attrs["long_name"] = "SGD step size eta the noise model stands for"
    ds["time"].attrs["long_name"] = "SDE time t_k = k dt"
    return ds
