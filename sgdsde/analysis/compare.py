"""Exact SGD against its SDE model: matched-time statistics and weak-error orders.

``compare_sgd_sde`` runs exact (label-noise, minibatch) SGD at a constant step size
eta for K steps and the SDE model of that SGD (default ``SGDNoise``, the matched
label-noise + minibatch-covariance SDE) at dt = eta / l (``refine=l``) from the same
initial parameters, and compares test functions ("observables") of the two at the
matched times t = k eta (SGD step k, SDE step k l). For every observable and time it
reports both means with normal-approximation confidence bounds and the weak error
|E phi(theta_k) - E phi(Theta_{k eta})| with its Monte Carlo standard error
(Li, Tai and E 2017; reference notes ``sde-tooling.md`` Sec. 3).

Common random numbers. Label-noise GD at step eta *is* Euler-Maruyama of the SDE at
dt = eta driven by the normals z_k of the "label_noise" stream (``sgdsde.sde.solvers
.base``). At dt = eta / l the SDE is driven instead by fine normals built from those
same z_k by a Brownian bridge,

    z_{k,j} = z_k / sqrt(l) + e_{k,j} - mean_j e_{k,j},    j = 1..l,  e iid N(0, 1)

(e from the trajectory's "brownian" stream). The z_{k,j} are iid N(0, 1) and
sum_j sqrt(eta/l) z_{k,j} = sqrt(eta) z_k: the fine SDE path and the GD run see the
*same* Brownian increment over every coarse step, so the difference of the two has a
small variance (the strong error) and the weak error is resolved with few trajectories.
This coupling is used automatically when it exists: full-batch GD, a noise model with
only the label channel, and the numba solver; ``refine=1`` then reproduces GD to
round-off. Minibatch SGD has no Brownian path to share: SGD and SDE then run with
independent seeds and the standard error of the difference is that of two independent
means.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import xarray as xr

from sgdsde.data import RegressionData
from sgdsde.dynamics.sgd import SGD, simulate_sgd
from sgdsde.metrics import FirstPassage, Metric, Recordable
from sgdsde.models.base import Model
from sgdsde.random import fresh_copy, seed_attrs, trajectory_streams
from sgdsde.run.checks import (
    check_int,
    check_model_data,
    check_n_steps,
    check_positive_real,
    check_single_seed,
)
from sgdsde.run.dataset import encode_attrs
from sgdsde.run.grids import as_grid
from sgdsde.run.loop import initial_params
from sgdsde.run.provenance import data_config, run_attrs
from sgdsde.run.recording import masked
from sgdsde.sde.noise import NoiseModel, noise_for_sgd
from sgdsde.sde.simulate import simulate_sde
from sgdsde.sde.solvers import as_solver
from sgdsde.sde.solvers.base import Solver
from sgdsde.sde.solvers.increments import BrownianBridge

__all__ = [
    "BUILTIN_OBSERVABLES",
    "DEFAULT_OBSERVABLES",
    "compare_sgd_sde",
]

#: Test functions recorded by both simulators by default (no extra metric needed).
BUILTIN_OBSERVABLES = ("train_loss", "test_loss", "l0_norm", "l1_norm", "param_norm")
DEFAULT_OBSERVABLES = ("train_loss", "test_loss", "l1_norm", "param_norm")

Observable = Callable[[np.ndarray], np.ndarray]


def as_observables(observables: Any) -> dict[str, Recordable | None]:
    """-> {name: the metric object to record, or None for a default-recorded metric}."""
    if isinstance(observables, str | Recordable):
        observables = (observables,)
    items: list[tuple[Any, Any]] = []
    if isinstance(observables, Mapping):
        items = list(observables.items())
    elif isinstance(observables, Sequence):
        for item in observables:
            if isinstance(item, str):
                items.append((item, None))
            elif isinstance(item, Recordable):
                items.append((item.name, item))
            elif isinstance(item, tuple) and len(item) == 2:
                items.append(item)
            else:
                raise ValueError(
                    "each observable must be a recorded metric name, a metric object or a "
                    f"(name, callable) pair (got {item!r})"
                )
    else:
        raise ValueError(
            "observables must be a sequence of names / metric objects / (name, f) pairs or "
            f"a mapping name -> f (got {type(observables).__name__})"
        )
    if not items:
        raise ValueError("observables is empty: ask for at least one, e.g. 'train_loss'")
    out: dict[str, Recordable | None] = {}
    for name, fn in items:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"observable names must be identifiers (got {name!r})")
        if name in out:
            raise ValueError(f"observable {name!r} given twice")
        out[name] = _observable_metric(name, fn)
    return out


def _observable_metric(name: str, fn: Any) -> Recordable | None:
    """The metric recording observable ``name``: None (a default metric), the given metric
    object (one value per trajectory at the save steps), or f(theta) wrapped as a Metric."""
    if fn is None:
        if name not in BUILTIN_OBSERVABLES:
            raise ValueError(
                f"unknown observable {name!r}: use one of {list(BUILTIN_OBSERVABLES)} "
                "or give a callable f(theta (T, p)) -> (T,) for it"
            )
        return None
    if isinstance(fn, Recordable):
        if fn.name != name:
            raise ValueError(f"observable {name!r} maps to a metric named {fn.name!r}")
        if isinstance(fn, FirstPassage) or fn.dims:
            raise ValueError(
                f"observable {name!r} must have one value per trajectory and save step "
                "(a Metric or TimeAverage without extra dims)"
            )
        return fn
    if not callable(fn):
        raise ValueError(f"observable {name!r} must map to a callable or None (got {fn!r})")
    return Metric(name, _ThetaOnly(fn), long_name=_describe(name, fn))


class _ThetaOnly:
    """f(theta) as a metric function f(theta, model, data)."""

    def __init__(self, fn: Observable):
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", type(fn).__name__)

    def __call__(self, theta: np.ndarray, model: Any, data: Any) -> Any:
        return self.fn(theta)


def _check_sgd(sgd: Any) -> SGD:
    if not isinstance(sgd, SGD):
        raise ValueError(f"sgd must be a sgdsde.dynamics.SGD (got {type(sgd).__name__})")
    for field in ("batch_size", "label_noise"):
        if np.ndim(getattr(sgd, field)) > 0:
            raise ValueError(
                f"sgd.{field} must be a single value here: a comparison runs many iid "
                "trajectories of one SGD"
            )
    return sgd


def _independent(root: np.random.SeedSequence) -> np.random.SeedSequence:
    """A root independent of ``root`` and of all its descendants (different entropy pool)."""
    return np.random.SeedSequence([*_entropy_words(root.entropy), 0x5DE], spawn_key=root.spawn_key)


def _entropy_words(entropy: Any) -> list[int]:
    if isinstance(entropy, int | np.integer):
        return [int(entropy)]
    return [int(e) for e in entropy]


def _crn_possible(sgd: SGD, noise: NoiseModel, solver: Any, n: int, T: int) -> str | None:
    """None if GD and the SDE can share their Brownian path, else the reason why not."""
    full = (sgd.batch_size is None or sgd.batch_size == n) and not sgd.with_replacement
    if not full:
        return "minibatch SGD has no Brownian path to share with the SDE"
    c = noise.coefficients(n, T)
    if np.any(c.sgd) or np.any(c.iso):
        return f"the noise model {noise.name!r} uses the minibatch or isotropic channel"
    if not solver.increments.couples_to_gd:
        return (
            f"the solver's increments {solver.increments.name!r} are not the normals "
            "label-noise GD draws: use numpy increments, e.g. solver='euler_numba'"
        )
    return None


def _values(ds: xr.Dataset, name: str) -> np.ndarray:
    """(T, S) values of a recorded observable; NaN where a trajectory had diverged."""
    return np.asarray(masked(ds[name]).values, dtype=np.float64)


def _mean_se(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over trajectories (axis 0) of the finite values, its standard error, count."""
    ok = np.isfinite(v)
    m = ok.sum(axis=0)
    vz = np.where(ok, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = vz.sum(axis=0) / m
        var = (np.where(ok, v - mean, 0.0) ** 2).sum(axis=0) / (m - 1)
        se = np.sqrt(var / m)
    mean = np.where(m > 0, mean, np.nan)
    se = np.where(m > 1, se, np.nan)
    return mean, se, m


def compare_sgd_sde(
    model: Model,
    data: RegressionData,
    lr: float,
    n_steps: int,
    *,
    sgd: SGD = SGD(),  # noqa: B008 (frozen dataclass: immutable)
    noise: NoiseModel | None = None,
    refine: int = 8,
    solver: str | Solver = "euler_numba",
    n_traj: int = 256,
    seed: Any = 0,
    theta0: np.ndarray | None = None,
    observables: Any = DEFAULT_OBSERVABLES,
    save_steps: Any = None,
    confidence: float = 0.95,
    common_random_numbers: bool | None = None,
    l0_threshold: float = 1e-50,
    max_loss: float = 1e10,
    progress: bool = False,
) -> xr.Dataset:
    """Exact SGD at constant step ``lr`` against its SDE at dt = lr / refine, at t = k lr.

    sgd: the discrete dynamics (``SGD(batch_size, label_noise, with_replacement)``,
        ``GD(delta)``); one setting for all trajectories.
    noise: the SDE's noise model; default ``noise_for_sgd(sgd, lr, n)``, the matched
        ``SGDNoise`` (label noise + minibatch covariance at step lr).
    refine: l, SDE steps per SGD step (dt = lr / l); 1 gives Euler-Maruyama at dt = lr.
    solver: the SDE solver (name or instance); with common random numbers its increments
        become the ``BrownianBridge(refine)`` of GD's normals (possible when its increment
        source ``couples_to_gd``: numpy increments, as ``solver="euler_numba"``).
    n_traj: M iid trajectories per method (>= 2).
    seed: int or SeedSequence. SGD runs with ``seed`` (as ``simulate_sgd(seed=seed)``);
        the SDE with the same seed under common random numbers, else with an
        independent one (both written to the attrs).
    theta0: (p,) or (T, p) start; default the model's init drawn from SGD's "init"
        streams, handed to both methods (so they start from identical parameters).
    observables: recorded metric names (``BUILTIN_OBSERVABLES``), metric objects
        (``sgdsde.metrics``: a ``Metric`` of theta, the model and the data, or a
        ``TimeAverage``, with one value per trajectory), ``(name, f)`` pairs or a
        mapping name -> f (None for a recorded metric), f(theta (T, p)) -> (T,). Each
        is recorded during both runs (no parameters are kept).
    save_steps: SGD steps k at which to compare (default 101 points from 0 to n_steps);
        the SDE is saved at steps k l.
    confidence: level c of the confidence bounds mean -+ z s / sqrt(M), z the
        (1 + c)/2 normal quantile (normal approximation of the sample mean).
    common_random_numbers: couple GD and the SDE through one Brownian path (module doc).
        None: whenever possible; True: require it (ValueError if impossible).

    Returns a Dataset with dims ``dynamics`` (["sgd", "sde"]) and ``step`` (coords ``time``
    = k lr and ``sde_step`` = k l) holding, per observable ``o``: ``o_mean``, ``o_se``,
    ``o_lower``, ``o_upper`` (dynamics, step), ``weak_error_o`` = |mean_sgd - mean_sde| and
    ``weak_error_o_se`` (step); ``n_valid`` (dynamics, step) trajectories not diverged and
    ``diverged_fraction`` (dynamics). Means skip diverged trajectories (NaN).
    Select one with ``ds.sel(dynamics="sgd")``.
    """
    check_model_data(model, data)
    n_steps = check_n_steps(n_steps)
    lr = check_positive_real("lr", lr)
    refine = check_int("refine", refine, 1, "the SDE takes refine steps of lr / refine")
    n_traj = check_int("n_traj", n_traj, 2, "standard errors need at least 2 trajectories")
    confidence = _check_confidence(confidence)
    sgd = _check_sgd(sgd)
    obs = as_observables(observables)
    noise = _matched_noise(noise, sgd, lr, data.n)
    solver = as_solver(solver)
    save = _comparison_grid(save_steps, n_steps)
    root = check_single_seed(seed)
    crn = _use_common_random_numbers(
        common_random_numbers, _crn_possible(sgd, noise, solver, data.n, n_traj)
    )
    if theta0 is None:
        theta0 = initial_params(
            model, None, n_traj, trajectory_streams(fresh_copy(root), n_traj)["init"]
        )
    common = dict(
        n_traj=n_traj,
        theta0=initial_params(model, theta0, n_traj, []),
        metrics=[m for m in obs.values() if m is not None],
        l0_threshold=l0_threshold,
        max_loss=max_loss,
        progress=progress,
    )
    sde_seed = fresh_copy(root) if crn else _independent(root)
    ds_sgd = simulate_sgd(
        model, data, lr, n_steps=n_steps, sgd=sgd, seed=fresh_copy(root), save_steps=save, **common
    )
    ds_sde = simulate_sde(
        model,
        data,
        noise,
        dt=lr / refine,
        n_steps=n_steps * refine,
        solver=solver.with_increments(BrownianBridge(refine)) if crn else solver,
        seed=sde_seed,
        save_steps=save * refine,
        **common,
    )
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    variables: dict[str, Any] = {}
    for name in obs:
        variables |= _observable_statistics(name, ds_sgd, ds_sde, crn, z, confidence)
    variables |= _validity(ds_sgd, ds_sde)
    coords = {
        "dynamics": np.array(["sgd", "sde"], dtype=object),
        "step": ("step", save, {"long_name": "SGD steps done k", "units": "step"}),
        "time": ("step", save * lr, {"long_name": "SDE time t = k lr", "units": "1"}),
        "sde_step": ("step", save * refine, {"long_name": "SDE steps done k l", "units": "step"}),
    }
    out = xr.Dataset(
        {k: xr.Variable(v[0], v[1], v[2]) for k, v in variables.items()}, coords=coords
    )
    config = {
        "kind": "sgd_vs_sde",
        "model": model.to_config(),
        "data": data_config(data),
        "lr": lr,
        "n_steps": n_steps,
        "refine": refine,
        "dt": lr / refine,
        "sgd": sgd.to_config(),
        "noise": noise.to_config(),
        "solver": json.loads(ds_sde.attrs["config"])["solver"],
        "n_traj": n_traj,
        "confidence": confidence,
        "observables": {k: _observable_config(m) for k, m in obs.items()},
        "common_random_numbers": crn,
        "l0_threshold": float(l0_threshold),
        "max_loss": float(max_loss),
    }
    title = f"{model.name}: SGD at lr = {lr:g} against its SDE at dt = lr / {refine}"
    attrs = run_attrs(title, config, fresh_copy(root))
    for key in [k for k in attrs if k.startswith("seed_")]:
        attrs[f"sgd_{key}"] = attrs.pop(key)
    out.attrs.update(
        encode_attrs(
            {
                **attrs,
                "confidence_interval": (
                    f"normal approximation: mean -+ z s / sqrt(M), z = {z:.6g} "
                    f"(the {0.5 + confidence / 2:g} quantile of N(0, 1))"
                ),
                "common_random_numbers": int(crn),
                **{f"sde_{k}": v for k, v in seed_attrs(sde_seed).items()},
            }
        )
    )
    return out


def _check_confidence(confidence: Any) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise ValueError(f"confidence must be a number in (0, 1) (got {confidence!r})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    return float(confidence)


def _matched_noise(noise: Any, sgd: SGD, lr: float, n: int) -> NoiseModel:
    """The SDE's noise model: the given one (one setting for all trajectories), or the
    ``SGDNoise`` matched to ``sgd`` at step ``lr``."""
    if noise is None:
        return noise_for_sgd(sgd, lr, n)
    if not isinstance(noise, NoiseModel):
        raise ValueError(
            f"noise must be a sgdsde.sde noise model or None (got {type(noise).__name__})"
        )
    if noise.n_traj not in (None, 1):
        raise ValueError("noise must have one setting (scalars) for all trajectories")
    return noise


def _comparison_grid(save_steps: Any, n_steps: int) -> np.ndarray:
    """The SGD steps compared: 101 evenly spaced points by default."""
    if save_steps is not None:
        return as_grid(save_steps, n_steps)
    return np.unique(np.rint(np.linspace(0, n_steps, min(n_steps, 100) + 1)).astype(np.int64))


def _use_common_random_numbers(wanted: Any, why_not: str | None) -> bool:
    """Whether to couple GD and the SDE: ``wanted`` None (whenever possible), True
    (required: a ValueError saying ``why_not``) or False."""
    if wanted is None:
        return why_not is None
    if wanted is True:
        if why_not is not None:
            raise ValueError(f"common random numbers are not possible: {why_not}")
        return True
    if wanted is False:
        return False
    raise ValueError(f"common_random_numbers must be None, True or False (got {wanted!r})")


def _observable_statistics(
    name: str, ds_sgd: xr.Dataset, ds_sde: xr.Dataset, crn: bool, z: float, confidence: float
) -> dict[str, tuple]:
    """Means, standard errors, confidence bounds and the weak error of one observable.

    With common random numbers the weak error's standard error is that of the paired
    differences (the two runs share their Brownian path); else that of two independent
    means, sqrt(s_1^2 + s_2^2)."""
    v_sgd, v_sde = _values(ds_sgd, name), _values(ds_sde, name)
    m1, s1, _ = _mean_se(v_sgd)
    m2, s2, _ = _mean_se(v_sde)
    mean, se = np.stack([m1, m2]), np.stack([s1, s2])
    if crn:
        _, se_diff, _ = _mean_se(np.where(np.isfinite(v_sde), v_sgd, np.nan) - v_sde)
    else:
        se_diff = np.hypot(s1, s2)
    long = ds_sgd[name].attrs.get("long_name", name)
    out: dict[str, tuple] = {
        f"{name}_mean": (("dynamics", "step"), mean, {"long_name": f"mean of {long}"}),
        f"{name}_se": (
            ("dynamics", "step"),
            se,
            {"long_name": f"standard error of the mean of {name}: s / sqrt(M)"},
        ),
    }
    for side, sign in (("lower", -1.0), ("upper", 1.0)):
        out[f"{name}_{side}"] = (
            ("dynamics", "step"),
            mean + sign * z * se,
            {
                "long_name": f"{side} {confidence:.0%} confidence bound of the mean of {name} "
                "(normal approximation: mean -+ z s / sqrt(M))",
                "confidence": confidence,
            },
        )
    out[f"weak_error_{name}"] = (
        ("step",),
        np.abs(m1 - m2),
        {"long_name": f"weak error |E {name}(SGD_k) - E {name}(SDE at t = k lr)|"},
    )
    out[f"weak_error_{name}_se"] = (
        ("step",),
        se_diff,
        {
            "long_name": f"standard error of the weak error of {name} "
            + ("(paired: common random numbers)" if crn else "(independent runs)")
        },
    )
    return out


def _validity(ds_sgd: xr.Dataset, ds_sde: xr.Dataset) -> dict[str, tuple]:
    """``n_valid`` (trajectories not yet diverged at each step) and ``diverged_fraction``."""
    alive = []
    for ds in (ds_sgd, ds_sde):
        dstep = ds["diverged_step"].values
        steps = ds["step"].values
        alive.append(((dstep[:, None] < 0) | (dstep[:, None] > steps[None, :])).sum(axis=0))
    return {
        "n_valid": (
            ("dynamics", "step"),
            np.stack(alive),
            {"long_name": "trajectories not diverged (the means use these)", "units": "count"},
        ),
        "diverged_fraction": (
            ("dynamics",),
            np.array([float(ds_sgd.diverged.mean()), float(ds_sde.diverged.mean())]),
            {"long_name": "fraction of trajectories that diverged"},
        ),
    }


def _observable_config(metric: Recordable | None) -> Any:
    if metric is None:
        return "recorded"
    return metric.long_name if type(metric) is Metric else metric.to_config()


def _describe(name: str, fn: Observable) -> str:
    return f"{name} = {getattr(fn, '__qualname__', type(fn).__name__)}(theta)"
