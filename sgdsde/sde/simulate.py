"""``simulate_sde``: integrate the SDE model of SGD, or your own SDE, for many trajectories
in one call.

    d theta = -grad L(theta) dt + G(theta) dW        (Ito; G from a ``NoiseModel``)
    d theta = f(theta, t) dt + G(theta, t) dW        (Ito; ``SDETerms``, sgdsde.sde.terms)

with a fixed step dt and a ``Solver`` (default: the fastest one the model supports, see
``default_solver``; ``euler_terms`` for ``SDETerms``). The output has exactly the layout
of ``simulate_sgd``: dims ``traj`` and ``step``, coords ``step`` (steps done) and
``time`` = step * dt, the same recorded metrics, ``diverged`` and ``diverged_step``,
and the resolved configuration, package version, seeds, solver and increments in the
attrs. The random numbers a trajectory uses are described in
``sgdsde.sde.solvers.base``; label-noise GD at step eta and ``LabelNoise(delta, eta, n)``
at dt = eta with the same seed give the same iterates up to round-off under
``solver="euler_numba"`` (numpy increments). ``simulate_diagonal_sde`` (deprecated) is a
thin front over ``simulate_sde`` with ``SDETerms``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.data import RegressionData
from sgdsde.models.base import Model
from sgdsde.models.torch_model import no_kernels_error
from sgdsde.random import trajectory_streams
from sgdsde.run.checks import (
    agree_n_traj,
    check_n_steps,
    check_positive_real,
    check_seed,
    shared_traj_sizes,
)
from sgdsde.run.driver import drive
from sgdsde.run.loop import check_run_arguments, run_names_coord, save_grid
from sgdsde.sde.noise import LabelNoise, NoiseModel, StabilizedLoss, make_noise
from sgdsde.sde.scheduled import PhasedSolver, ScheduledNoise, scheduled_problem
from sgdsde.sde.solvers import (
    EulerMaruyamaGEMM,
    EulerMaruyamaNumba,
    EulerMaruyamaTerms,
    EulerMaruyamaTorch,
    GivenIncrements,
    TermsProblem,
    XoshiroIncrements,
    as_solver,
)
from sgdsde.sde.solvers.base import SDEProblem, Solver
from sgdsde.sde.terms import DiagonalDiffusion, Drift, SDETerms

_COORD_ATTRS = {
    "dt": {"long_name": "SDE time step dt", "units": "1"},
    "noise_label": {"long_name": "label-channel coefficient a (G = phi^T a on dW_label)"},
    "noise_sgd": {"long_name": "SGD-covariance coefficient b (G = b phi^T diag(r) P)"},
    "noise_iso": {"long_name": "isotropic coefficient s (G = s I on dW_iso)"},
}


def _as_noise(noise: Any) -> NoiseModel | ScheduledNoise:
    if isinstance(noise, NoiseModel | ScheduledNoise):
        return noise
    if isinstance(noise, Mapping) and "name" in noise:
        cfg = dict(noise)
        return make_noise(cfg.pop("name"), **cfg)
    raise ValueError(
        "noise must be a sgdsde.sde noise model (LabelNoise, SGDCovariance, ...), its "
        "config dict with a 'name', or SDETerms(...) for your own drift and diffusion "
        f"(got {type(noise).__name__})"
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


def default_solver(
    model: Model, data: RegressionData, device: str = "cpu", *, noise: Any = None
) -> Solver:
    """The fastest solver ``model`` supports on ``device`` (the rule of ``simulate_sde``),
    all with per-trajectory xoshiro increments; for ``noise`` given as ``SDETerms`` (the
    user's own terms), ``euler_terms``, the one solver that integrates them."""
    if isinstance(noise, SDETerms):
        return EulerMaruyamaTerms(increments=XoshiroIncrements())
    if str(device) != "cpu" or not isinstance(model, Model):
        # a TorchModel has no numba kernels: the torch solver is the one that runs it
        return EulerMaruyamaTorch(increments=XoshiroIncrements())
    if model.gemm_kernels is not None:
        return EulerMaruyamaGEMM()
    if data.n >= TORCH_MIN_EXAMPLES:
        return EulerMaruyamaTorch(increments=XoshiroIncrements())
    return EulerMaruyamaNumba(increments=XoshiroIncrements())


@dataclasses.dataclass
class _Setup:
    """What ``simulate_sde`` builds from its noise before the run (the problem) and how
    it labels the dataset (title, config entries, per-trajectory coords, their attrs)."""

    problem: SDEProblem | TermsProblem
    title: str
    config: dict[str, Any]
    coords: dict[str, np.ndarray]
    coord_attrs: dict[str, dict[str, str]]


def _noise_setup(model, data, noise: NoiseModel, T: int, dt: float, max_loss, n_steps) -> _Setup:
    """The SDE model of SGD: per-trajectory noise coefficients and SGD settings."""
    coefficients = noise.coefficients(data.n, T)
    coords = {
        **_noise_coords(noise, T),
        "noise_label": coefficients.label,
        "noise_sgd": coefficients.sgd,
        "noise_iso": coefficients.iso,
    }
    attrs = dict(_COORD_ATTRS)
    if "lr" in coords:
        attrs["lr"] = {"long_name": "SGD step size eta the noise model stands for"}
    return _Setup(
        SDEProblem(model, data, coefficients, dt, float(max_loss), n_steps),
        f"{model.name} under the {noise.name} SDE",
        {"noise": noise.to_config()},
        coords,
        attrs,
    )


def _scheduled_setup(model, data, noise: ScheduledNoise, T: int, max_loss, n_steps) -> _Setup:
    """The SDE model of SGD with a step-size schedule: phases of constant dt and
    coefficients (``sgdsde.sde.scheduled``); coords at step 0."""
    problem = scheduled_problem(model, data, noise, T, max_loss, n_steps)
    first = problem.phase(0)
    step0 = dataclasses.replace(noise.noise, lr=problem.step_sizes(0))
    coords = {
        **_noise_coords(step0, T),
        "dt": first.dt_per_traj(),
        "noise_label": first.coefficients.label,
        "noise_sgd": first.coefficients.sgd,
        "noise_iso": first.coefficients.iso,
    }
    attrs = {name: {**value} for name, value in _COORD_ATTRS.items()}
    attrs["dt"]["long_name"] = "SDE time step dt at step 0 (dt_j = eta_{j // m} / m)"
    for name in ("noise_label", "noise_sgd", "noise_iso"):
        attrs[name]["long_name"] += " at step 0 (follows the schedule)"
    attrs["lr"] = {"long_name": "SGD step size eta_0 at step 0 (follows the schedule)"}
    return _Setup(
        problem,
        f"{model.name} under the {noise.noise.name} SDE with a step-size schedule",
        {"noise": noise.to_config()},
        coords,
        attrs,
    )


def _terms_setup(model, data, terms: SDETerms, T: int, dt: float, bounds, n_steps, theta0):
    """The user's own terms: the state's dimension from the model, else from theta0."""
    max_loss, max_norm = bounds
    if model is None and terms.drift.kernel is None:
        raise ValueError(
            "the default drift GradientDrift() is -grad L of a model on its data, and a "
            "free SDE has neither: give model and data, or SDETerms(drift=Drift(fn), ...)"
        )
    n_params = _free_dim(theta0) if model is None else model.n_params
    config: dict[str, Any] = {"terms": terms.to_config()}
    if model is None:
        config["max_norm"] = max_norm
    return _Setup(
        TermsProblem(terms, model, data, T, n_params, dt, max_loss, max_norm, n_steps),
        f"{'free SDE' if model is None else model.name} under user SDE terms",
        config,
        {},
        {"dt": _COORD_ATTRS["dt"]},
    )


def _free_dim(theta0: Any) -> int:
    """p of a free SDE (no model), from theta0 (p,) or (T, p)."""
    if theta0 is None or np.ndim(theta0) not in (1, 2) or np.shape(theta0)[-1] < 1:
        raise ValueError(
            "theta0 is required for a free SDE (model None): pass the initial state, (p,) "
            f"shared by every trajectory or (T, p) (got {theta0!r})"
        )
    return int(np.shape(theta0)[-1])


def _check_dt(dt: Any, noise: Any) -> float | None:
    """dt > 0, or None for a scheduled noise (its dt follows the schedule)."""
    if isinstance(noise, ScheduledNoise):
        if dt is not None:
            raise ValueError(
                f"dt must be None for a ScheduledNoise (got {dt!r}): its dt follows the "
                "schedule, dt_j = eta_{j // m} / m (set m by steps_per_lr)"
            )
        return None
    if dt is None:
        raise ValueError(
            "dt is required (the constant time step): pass dt=..., or a ScheduledNoise "
            "whose dt follows a step-size schedule"
        )
    return check_positive_real("dt", dt)


def _check_solver_takes(solver: Solver, noise: NoiseModel | SDETerms) -> None:
    """The terms solver takes SDETerms only, the others noise models only."""
    if isinstance(noise, SDETerms) and not solver.takes_terms:
        raise ValueError(
            f"solver {solver.name!r} integrates the noise models of SGD, not SDETerms: "
            f"use solver='{EulerMaruyamaTerms.name}' (EulerMaruyamaTerms), or solver=None"
        )
    if not isinstance(noise, SDETerms) and solver.takes_terms:
        raise ValueError(
            f"solver {solver.name!r} integrates SDETerms (your own drift and diffusion), "
            f"not the noise model {noise.name!r}: pass SDETerms(...), or another solver"
        )


def simulate_sde(
    model: Model | None,
    data: RegressionData | None,
    noise: NoiseModel | ScheduledNoise | SDETerms,
    *,
    dt: float | None = None,
    n_steps: int,
    solver: Solver | str | None = None,
    n_traj: int | None = None,
    seed: Any = 0,
    theta0: np.ndarray | None = None,
    save_steps: Any = None,
    save_params: bool = False,
    l0_threshold: float = 1e-50,
    max_loss: float = 1e10,
    max_norm: float = 1e10,
    device: str = "cpu",
    run_names: Sequence[str] | None = None,
    metrics: Sequence = (),
    progress: bool = False,
    test_subsample: int | None = None,
) -> xr.Dataset:
    """Integrate T trajectories of the SDE with noise model ``noise`` (or your own
    ``SDETerms``) and return a Dataset.

    model, data: the closed-form model and its regression data (same input dimension);
        both None for a free SDE given by ``SDETerms`` (then ``theta0`` is required and
        sets p, and the run records param_norm and the user's metrics).
    noise: a noise model (``LabelNoise(delta, lr, batch_size)``, ``StabilizedLoss``,
        ``SGDCovariance``, ``SGDNoise``, ``Isotropic``, ``GradientFlow``) or its config
        dict; its per-trajectory parameters (sequences) set the number of trajectories.
        Or ``SDETerms(drift=..., diffusion=..., params=...)``: your own drift (default
        -grad L of the model) and diffusion, as numba kernels or torch functions
        (``sgdsde.sde.terms``, docs/sde_terms.md); (T, q) params set T. Or
        ``ScheduledNoise(noise, schedule, steps_per_lr=m)``: SGD's step size follows a
        schedule (one per trajectory allowed), dt_j = eta_{j // m} / m and the noise
        coefficients at lr = eta_{j // m} (``sgdsde.sde.scheduled``); then ``dt`` is
        None, ``n_steps`` = m N, and the solver one with ``retimes``.
    dt, n_steps: the constant time step and the number of steps (final time n_steps dt);
        dt None for a ``ScheduledNoise`` (its dt follows the schedule).
    solver: a ``Solver`` (e.g. ``EulerMaruyamaTorch(dtype="float32")``), a name in
        ``SOLVERS`` or a solver config dict. Default (None): the fastest the model
        supports, ``default_solver(model, data, device, noise=noise)``, all with
        ``XoshiroIncrements``: on the CPU, ``euler_gemm`` for a model with
        ``gemm_kernels`` (diagonal networks, linear models, two-layer ReLU: ~9x the
        generic solvers on the DLN); else ``euler_numba`` for fewer than
        ``TORCH_MIN_EXAMPLES`` = 32 examples (the collapse toys: up to 7x
        ``euler_torch`` on quartic_well at T = 256) and ``euler_torch`` from 32 on
        (1.4-4x ``euler_numba`` on deep_relu); on a GPU, ``euler_torch``. The bit-exact
        path coupled to label-noise GD (numpy increments, the very normals GD draws) is
        ``solver="euler_numba"``. ``SDETerms`` run under ``euler_terms`` (the only solver
        that takes them; ``EulerMaruyamaTerms(increments=GivenIncrements(dW))`` takes
        your own Brownian increments).
    n_traj: the number of trajectories T; default: implied by the per-trajectory
        arguments (noise, theta0, seed, run_names, given increments), else 1.
    seed: int, SeedSequence, or one seed per trajectory (as ``simulate_sgd``); a
        ``numpy.random.Generator`` is refused.
    theta0: (p,) or (T, p) initial parameters (default: the model's init, drawn from
        the "init" streams exactly as ``simulate_sgd`` does).
    save_steps: steps at which metrics are recorded (default ``eval_grid(n_steps)``).
    save_params: also record the parameters theta at the save steps.
    l0_threshold: |beta_i| counted in l0_norm above it (paper: 1e-50).
    max_loss: a trajectory whose training loss is non-finite or above it is frozen
        and marked diverged (``diverged_step``); the others go on.
    max_norm: the same for a free SDE (no data, no loss): a trajectory whose ||theta||_2
        is non-finite or above it is frozen and marked diverged (math.inf: only NaN).
    device: "cpu" or a torch device such as "cuda" (torch-based solvers only).
    run_names: one name per trajectory, stored as the ``run`` coordinate.
    metrics: extra metric objects recorded at the save steps (``sgdsde.run.recording``).
    progress: show a progress bar.
    test_subsample: None, or the number m of test examples (a fixed seeded subset) the
        test loss is taken on before the last save step; the last one uses the whole
        test set (``sgdsde.run.recording``; the test_loss attrs say so).

    Per-trajectory coords: ``dt``, the noise coefficients ``noise_label``,
    ``noise_sgd``, ``noise_iso``, and, where the noise model defines them, ``lr``,
    ``batch_size`` and ``label_noise`` (delta; 2 L* for ``StabilizedLoss``); for
    ``SDETerms``, ``dt`` only (the config describes the terms, functions by name). The
    attrs name the ``integrator`` (solver) and its ``increments``; the config holds the
    solver's config and its strong and weak orders on this problem.
    """
    terms = noise if isinstance(noise, SDETerms) else None
    n_steps = check_run_arguments(
        model,
        data,
        n_steps=n_steps,
        seed=seed,
        max_loss=max_loss,
        l0_threshold=l0_threshold,
        torch_model_ok=True,
        free_ok=terms is not None,
    )
    dt = _check_dt(dt, noise)
    if not (max_norm > 0):
        raise ValueError(
            f"max_norm must be > 0 (got {max_norm!r}): it is the norm ||theta|| above which "
            "a trajectory of a free SDE counts as diverged (math.inf: never)"
        )
    noise = terms or _as_noise(noise)
    if solver is None:
        solver = default_solver(model, data, device, noise=noise)
    solver = as_solver(solver)
    _check_solver_takes(solver, noise)
    if solver.needs_kernels and not isinstance(model, Model):
        raise no_kernels_error(model)
    sizes = shared_traj_sizes(theta0, run_names, seed)
    if noise.n_traj is not None:
        sizes["params" if terms else "noise"] = noise.n_traj
    if solver.increments.n_traj is not None:
        sizes["increments"] = solver.increments.n_traj
    T = agree_n_traj(n_traj, sizes)
    stepper = solver
    if isinstance(noise, ScheduledNoise):
        stepper = PhasedSolver(solver)
        setup = _scheduled_setup(model, data, noise, T, max_loss, n_steps)
    elif terms is None:
        setup = _noise_setup(model, data, noise, T, dt, max_loss, n_steps)
    else:
        bounds = (float(max_loss), float(max_norm))
        setup = _terms_setup(model, data, terms, T, dt, bounds, n_steps, theta0)
    problem = setup.problem
    run = drive(
        stepper,
        problem,
        seed=seed,
        theta0=theta0,
        save_steps=save_grid(save_steps, n_steps),
        save_params=save_params,
        l0_threshold=l0_threshold,
        metrics=metrics,
        device=device,
        progress=progress,
        test_subsample=test_subsample,
    )
    first = problem.phase(0) if isinstance(noise, ScheduledNoise) else problem
    orders = {"strong": solver.strong_order(first), "weak": solver.weak_order(first)}
    ds = run.to_dataset(
        "sde",
        setup.title,
        {**setup.config, "solver": solver.to_config(), "orders": orders, "dt": dt},
        {**_dt_coord(dt, T), **setup.coords, **run_names_coord(run_names)},
        integrator=solver.name,
        increments=solver.increments.name,
    )
    for name, extra in setup.coord_attrs.items():
        ds[name].attrs.update(extra)
    ds["time"].attrs["long_name"] = (
        "SDE time t_k = k dt" if dt is not None else "SDE time t_k = sum_{j<k} dt_j"
    )
    return ds


def _dt_coord(dt: float | None, T: int) -> dict[str, np.ndarray]:
    """The shared dt per trajectory (a scheduled run's setup gives its own)."""
    return {} if dt is None else {"dt": np.full(T, dt)}


def simulate_diagonal_sde(
    drift: Any,
    diffusion: Any,
    params: Any,
    theta0: Any,
    *,
    dt: float,
    n_steps: int,
    n_traj: int | None = None,
    seed: Any = 0,
    dW: np.ndarray | None = None,
) -> np.ndarray:
    """Deprecated: use ``simulate_sde(None, None, SDETerms(drift=Drift(drift),
    diffusion=DiagonalDiffusion(diffusion), params=params), dt=dt, n_steps=n_steps,
    theta0=theta0)``, which returns the standard dataset (``sgdsde.sde.terms``).

    Euler-Maruyama for a user Ito SDE with diagonal noise, d theta_j = f_j dt + g_j dW_j.

    drift, diffusion: kernels made with ``diagonal_sde_kernel``: ``fn(theta, t, params,
        out)`` writes f(theta, t) (resp. the diagonal g(theta, t)) into ``out``.
    params: float64 vector handed to both kernels.
    theta0: (p,) or (T, p) initial state.
    dt, n_steps: the step and the number of steps.
    n_traj: the number of trajectories (default: from dW or theta0).
    seed: seeds the default increments.
    dW: optional Brownian increments (T, n_steps, p) (variance dt each); default
        sqrt(dt) N drawn from trajectory t's ``"brownian"`` stream of ``seed``, as
        ``trajectory_streams(seed, T)["brownian"][t].standard_normal((n_steps, p))``
        (drawn here, whole: T n_steps p numbers; ``simulate_sde`` draws in chunks, with
        the sign of the package's solvers, dW = -sqrt(dt) N).
    Returns theta at step n_steps, shape (T, p): the same numbers as before.
    """
    warnings.warn(
        "simulate_diagonal_sde is deprecated: use simulate_sde(None, None, "
        "SDETerms(drift=Drift(drift), diffusion=DiagonalDiffusion(diffusion), params=params), "
        "dt=..., n_steps=..., theta0=...) from sgdsde.sde, which returns the standard dataset",
        DeprecationWarning,
        stacklevel=2,
    )
    dt = check_positive_real("dt", dt)
    n_steps = check_n_steps(n_steps)
    theta = np.array(theta0, dtype=np.float64, ndmin=2)
    if dW is None:
        T = theta.shape[0] if n_traj is None else n_traj
        streams = trajectory_streams(check_seed(seed), agree_n_traj(T, {}))["brownian"]
        p = theta.shape[1]
        dW = math.sqrt(dt) * np.stack([rng.standard_normal((n_steps, p)) for rng in streams])
    given = GivenIncrements(dW)
    ds = simulate_sde(
        None,
        None,
        SDETerms(
            drift=Drift(drift),
            diffusion=DiagonalDiffusion(diffusion),
            params=np.atleast_1d(np.asarray(params, dtype=np.float64)),  # a scalar, as before
        ),
        dt=dt,
        n_steps=n_steps,
        solver=EulerMaruyamaTerms(increments=given),
        n_traj=n_traj,
        seed=seed,
        theta0=theta[0] if theta.shape[0] == 1 else theta,
        save_steps=[n_steps],
        save_params=True,
        max_norm=math.inf,
    )
    return ds["params"].isel(step=-1).values
