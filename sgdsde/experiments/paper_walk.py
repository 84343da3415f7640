""" "A Walk with SGD" (Xing, Arpit, Tsirigotis, Bengio, 2018) on toy problems (reference
notes collapse-walk.md Sec. 2).

The walk metrics of ``sgdsde.metrics.walk`` (loss on the segment between consecutive
iterates: interior minimum, height above its floor; cosine of consecutive updates;
distance from initialization) for several dynamics on several problems, over step
size and batch size:

* ``gd``        full-batch gradient descent;
* ``sgd``       minibatch SGD at batch size B;
* ``gd_noise``  GD plus isotropic Gaussian noise, theta_{k+1} = theta_k - eta grad L +
  eta sqrt(v) z, with v the per-coordinate variance tr C_B(theta_0) / p of SGD's
  minibatch gradient at the initialization (the paper's control, its noise matched to
  SGD's total power rather than to 0.02 x its largest coordinate variance); run as
  Euler-Maruyama of ``Isotropic(scale = sqrt(eta v))`` at dt = eta;
* ``sgd_sde``   the SDE of SGD (``SGDCovariance``) at dt = eta: Gaussian steps with
  SGD's exact minibatch covariance, anisotropic like SGD.

On a quadratic with top curvature lambda (``linear_regression`` on an orthogonal
design), GD's segment has an interior minimum iff eta > 1 / lambda and GD diverges iff
eta > 2 / lambda (its error contracts by |1 - eta lambda| per step): the window
1/lambda < eta < 2/lambda, ``walk_window``, is drawn and checked. Reported per run and
seed: over the last ``window`` of the run, the fraction of steps with an interior
minimum, the mean height above the floor (absolute, and relative to the loss) and the
mean cosine of consecutive updates; the final distance from initialization; the
per-step loss contraction (L_N / L_0)^{1/(2N)} (|1 - eta lambda| for GD on an isotropic
quadratic; > 1: diverging) and the final sharpness lambda_max.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from sgdsde.analysis.plots import finish_figure
from sgdsde.data import RegressionData
from sgdsde.dynamics.sgd import SGD, simulate_sgd
from sgdsde.experiments.base import EXPERIMENTS
from sgdsde.experiments.config import ConfigChecker, Key
from sgdsde.experiments.gallery import (
    PaperExperiment,
    PaperHeader,
    PaperPlan,
    plan_fields,
    reported_dataset,
    seed_children,
)
from sgdsde.experiments.tables import prepare_data, prepare_model
from sgdsde.metrics.curvature import top_hessian_eigenvalue
from sgdsde.metrics.walk import (
    FloorHeight,
    HeightAboveFloor,
    InitDistance,
    InteriorMinimum,
    UpdateCosine,
)
from sgdsde.models import Model
from sgdsde.sde.noise import Isotropic, SGDCovariance
from sgdsde.sde.simulate import simulate_sde

#: method -> its label in run names.
METHODS = {"gd": "GD", "sgd": "SGD", "gd_noise": "GD+noise", "sgd_sde": "SGD-SDE"}


def minibatch_noise_variance(model: Model, theta: np.ndarray, data: RegressionData, batch_size):
    """tr C_B(theta) / p per trajectory, (T,): the per-coordinate variance of the
    minibatch gradient (1/B) sum_{i in S} r_i grad f(x_i) at theta (T, p), S drawn
    without replacement: C_B = (n - B) / ((n - 1) B) (1/n) sum_i (g_i - g)(g_i - g)^T
    with g_i = r_i grad f(x_i) and g their mean (``SGDCovariance``'s covariance / eta)."""
    n, batch = data.n, np.asarray(batch_size, dtype=float)
    g = model.residuals(theta, data.X, data.y)[..., None] * model.jacobian(theta, data.X)
    centered = g - g.mean(axis=1, keepdims=True)
    per_sample = np.einsum("tip,tip->t", centered, centered) / n
    return (n - batch) / ((n - 1) * batch) * per_sample / model.n_params


@dataclasses.dataclass(frozen=True)
class WalkRun:
    """One run: ``problem`` (a key of the plan's problems), ``method`` (``METHODS``),
    step size ``lr`` and ``batch_size`` (None for GD)."""

    problem: str
    method: str
    lr: float
    batch_size: int | None

    @property
    def name(self) -> str:
        """e.g. "valley SGD lr=0.1 B=10"."""
        batch = "" if self.batch_size is None else f" B={self.batch_size}"
        return f"{self.problem} {METHODS[self.method]} lr={self.lr:g}{batch}"


@dataclasses.dataclass(frozen=True)
class Problem:
    """A problem's data and model, and its run length, averaging window and save
    spacing (the plan's unless the problem's table overrides them)."""

    data: RegressionData
    model: Model
    n_steps: int
    window: float
    save_every: int


#: Keys of a ``[problems.NAME]`` table.
PROBLEM_KEYS: dict[str, Key] = {
    "data": Key("table", "[data] table", True),
    "model": Key("table", "[model] table", True),
    "n_steps": Key("int", "this problem's run length (default: the top-level one)", minimum=3),
    "window": Key("number", "this problem's averaging window (fraction of its run)"),
    "save_every": Key("int", "this problem's save spacing", minimum=1),
}


@dataclasses.dataclass(frozen=True)
class WalkPlan(PaperPlan):
    """A validated ``paper_walk`` config: ``problems`` (name -> ``Problem``), ``runs``,
    the default ``n_steps``, averaging ``window`` (last fraction of the run) and save
    spacing ``save_every`` in it (a problem may override them), ``n_points`` alphas per
    segment and ``max_loss``."""

    problems: dict[str, Problem] = dataclasses.field(default_factory=dict)
    runs: tuple[WalkRun, ...] = ()
    n_steps: int = 0
    window: float = 0.5
    save_every: int = 1
    n_points: int = 11
    max_loss: float = 1e100


SWEEP_KEYS: dict[str, Key] = {
    "problem": Key("str", "the problem (a key of [problems])", True),
    "method": Key("str", "the dynamics", True, choices=tuple(METHODS)),
    "lr": Key("any", "the step sizes (a list of numbers > 0)", True),
    "batch_size": Key("any", "the batch sizes (a list; not for gd)"),
}


@EXPERIMENTS.register
class Walk(PaperExperiment):
    """Xing et al. (2018): walk metrics of GD, SGD, GD + isotropic noise and SGD's SDE on
    a quadratic, a valley and a two-layer ReLU network, over step size and batch size."""

    name = "paper_walk"
    quantities: ClassVar[dict[str, str]] = {
        "interior_fraction": "fraction of the window's steps whose segment has an "
        "interior loss minimum (the step crossed the valley floor)",
        "height_above_floor": "mean over the window of L(theta_t) - min over the segment",
        "relative_height": "mean over the window of (L(theta_t) - segment min) / L(theta_t)",
        "update_cosine": "mean over the window of cos(consecutive updates)",
        "init_distance": "||theta_N - theta_0||_2 at the end",
        "loss_rate": "(L_N / L_0)^(1/(2N)): per-step contraction (> 1: diverging)",
        "sharpness": "lambda_max of the Hessian at the end",
    }
    extra_keys: ClassVar[dict[str, Key]] = {
        "n_steps": Key("int", "steps of every run", required=True, minimum=3),
        "window": Key("number", "the last fraction of the run averaged over", default=0.5),
        "save_every": Key("int", "save spacing in the window (steps)", default=1, minimum=1),
        "n_points": Key("int", "alphas on each segment (the paper: 11)", default=11, minimum=3),
        "max_loss": Key("number", "a loss above it counts as diverged", default=1e100),
        "problems": Key("table", "[problems.NAME]: data and model tables", required=True),
        "sweeps": Key("tables", "[[sweeps]]: problem, method, lr list, batch_size list", True),
    }

    def prepare_experiment(
        self, config: dict[str, Any], top: dict[str, Any], header: PaperHeader, checker
    ) -> WalkPlan:
        window = top.get("window", 0.5)
        _check_window(checker, "window", window)
        defaults = (top.get("n_steps", 3), window, top.get("save_every", 1))
        problems = _prepare_problems(checker, top.get("problems", {}), defaults)
        runs = _prepare_sweeps(checker, top.get("sweeps", []), problems)
        if not top.get("max_loss", 1e100) > 0:
            checker.problem("max_loss", f"must be > 0 (got {top.get('max_loss')!r})")
        return WalkPlan(
            **plan_fields(config, top, header, tuple(r.name for r in runs)),
            problems=problems,
            runs=runs,
            n_steps=top.get("n_steps", 3),
            window=float(window),
            save_every=top.get("save_every", 1),
            n_points=top.get("n_points", 11),
            max_loss=float(top.get("max_loss", 1e100)),
        )

    def run(self, plan, *, engine="numba", progress=False) -> xr.Dataset:
        return self.finish(plan, run_walk(plan, engine=engine, progress=progress))

    def plot(self, ds, path=None, *, title=None):
        return plot_walk(ds, path, title=title)


def _check_window(checker: ConfigChecker, path: str, window: Any) -> None:
    if not 0 < window <= 1:
        checker.problem(path, f"must be in (0, 1] (got {window!r})")


def _prepare_problems(checker: ConfigChecker, value: Any, defaults: tuple) -> dict[str, Problem]:
    if not isinstance(value, dict) or not value:
        checker.problem("problems", "must hold at least one [problems.NAME] with data and model")
        return {}
    out = {}
    for name, table in value.items():
        path = f"problems.{name}"
        table = checker.table(path, table, PROBLEM_KEYS)
        sub = ConfigChecker(checker.name)
        data = prepare_data(sub, table.get("data"))
        model = prepare_model(sub, table.get("model"), data)
        for problem in sub.problems:
            checker.problem(path, problem)
        n_steps, window, save_every = (
            table.get(key, default)
            for key, default in zip(("n_steps", "window", "save_every"), defaults, strict=True)
        )
        _check_window(checker, f"{path}.window", window)
        if data is not None and model is not None:
            out[name] = Problem(data, model, n_steps, float(window), save_every)
    return out


def _numbers(checker, path, value, *, integer=False) -> list:
    kind = int if integer else (int, float)
    if not (
        isinstance(value, list)
        and value
        and all(isinstance(v, kind) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        what = "integers >= 1" if integer else "numbers > 0"
        checker.problem(path, f"must be a non-empty list of {what} (got {value!r})")
        return []
    return list(value)


def _prepare_sweeps(checker, sweeps: list, problems: dict) -> tuple[WalkRun, ...]:
    runs: list[WalkRun] = []
    for i, entry in enumerate(sweeps):
        path = f"sweeps[{i}]"
        table = checker.table(path, entry, SWEEP_KEYS)
        problem, method = table.get("problem"), table.get("method")
        if problem is not None and problem not in problems:
            checker.problem(f"{path}.problem", f"unknown problem {problem!r}: {sorted(problems)}")
            continue
        lrs = _numbers(checker, f"{path}.lr", table.get("lr"))
        if method == "gd":
            if "batch_size" in table:
                checker.problem(f"{path}.batch_size", "gd is full batch: drop batch_size")
            batches = [None]
        elif method is not None:
            batches = _numbers(checker, f"{path}.batch_size", table.get("batch_size"), integer=True)
            n = problems[problem].data.n
            for b in batches:
                if b > n:
                    checker.problem(f"{path}.batch_size", f"{b} exceeds n = {n} ({problem})")
        else:
            continue
        runs += [
            WalkRun(problem, method, float(lr), b) for lr, b in itertools.product(lrs, batches)
        ]
    names = [r.name for r in runs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        checker.problem("sweeps", f"run {name!r} appears twice: each run once")
    return tuple(runs)


def _window_start(problem: Problem) -> int:
    """The first step of the averaging window (>= 2: the cosine needs two updates)."""
    return max(2, round((1 - problem.window) * problem.n_steps))


def _save_steps(problem: Problem) -> np.ndarray:
    n = problem.n_steps
    return np.unique(np.r_[0, np.arange(_window_start(problem), n + 1, problem.save_every), n])


def _metrics(plan: WalkPlan) -> list:
    return [
        InteriorMinimum(n_points=plan.n_points),
        HeightAboveFloor(n_points=plan.n_points),
        FloorHeight(n_points=plan.n_points),
        UpdateCosine(),
        InitDistance(),
    ]


def _initial_params(model, data, seeds) -> np.ndarray:
    """theta_0 of each seed (the model's init from its "init" stream), (S, p)."""
    ds = simulate_sgd(model, data, 1e-3, n_steps=1, seed=seeds, save_steps=[0], save_params=True)
    return ds["params"].values[:, 0]


def _simulate_group(plan, runs, problem, theta0, seeds, engine, progress) -> list:
    """The datasets of ``runs`` (all on ``problem``), each (seed, step) in run order: the
    exact dynamics in one simulate_sgd call, the SDE-driven ones in one call per run."""
    data, model, n_steps = problem.data, problem.model, problem.n_steps
    n_seeds, save = len(seeds), _save_steps(problem)
    common = dict(
        save_steps=save,
        save_params=True,
        metrics=_metrics(plan),
        max_loss=plan.max_loss,
        progress=progress,
    )
    out: dict[WalkRun, xr.Dataset] = {}
    exact = [r for r in runs if r.method in ("gd", "sgd")]
    if exact:
        ds = simulate_sgd(
            model,
            data,
            [r.lr for r in exact for _ in range(n_seeds)],
            n_steps=n_steps,
            sgd=SGD(batch_size=[r.batch_size for r in exact for _ in range(n_seeds)]),
            seed=seeds * len(exact),
            theta0=np.tile(theta0, (len(exact), 1)),
            engine=engine,
            **common,
        )
        for i, r in enumerate(exact):
            out[r] = ds.isel(traj=slice(i * n_seeds, (i + 1) * n_seeds))
    for r in runs:
        if r.method in ("gd", "sgd"):
            continue
        if r.method == "gd_noise":
            v = minibatch_noise_variance(model, theta0, data, r.batch_size)
            noise = Isotropic(scale=list(np.sqrt(r.lr * v)))
        else:
            noise = SGDCovariance(lr=r.lr, batch_size=r.batch_size)
        out[r] = simulate_sde(
            model, data, noise, dt=r.lr, n_steps=n_steps, seed=seeds, theta0=theta0, **common
        )
    return [out[r] for r in runs]


def _reduce(problem: Problem, ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The reported quantities of one run's dataset, one value per seed."""
    model, data, steps = problem.model, problem.data, ds["step"].values
    window = steps >= _window_start(problem)
    interior = ds["interior_minimum"].values[:, window].astype(float)
    interior[interior < 0] = np.nan
    loss = ds["train_loss"].values
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: diverged seeds
        rate = (loss[:, -1] / loss[:, 0]) ** (1 / (2 * problem.n_steps))
        height = ds["height_above_floor"].values[:, window]
        relative = height / (height + ds["floor_height"].values[:, window])
        theta_end = ds["params"].values[:, -1]
        finite = np.all(np.isfinite(theta_end), axis=1)
        sharp = np.full(theta_end.shape[0], np.nan)
        if finite.any():
            sharp[finite] = top_hessian_eigenvalue(model, theta_end[finite], data.X, data.y)
        return {
            "interior_fraction": np.nanmean(interior, axis=1),
            "height_above_floor": np.nanmean(height, axis=1),
            "relative_height": np.nanmean(relative, axis=1),
            "update_cosine": np.nanmean(ds["update_cosine"].values[:, window], axis=1),
            "init_distance": ds["init_distance"].values[:, -1],
            "loss_rate": rate,
            "sharpness": sharp,
        }


def run_walk(plan: WalkPlan, *, engine="numba", progress=False) -> xr.Dataset:
    """Every run of ``plan`` for every seed (all runs of seed s share its root and its
    theta_0), reduced to the reported quantities, with each problem's curvature
    lambda_max at the initialization (median over seeds) for the figure."""
    seeds = seed_children(plan.header.seed, plan.header.n_seeds)
    values: dict[WalkRun, dict[str, np.ndarray]] = {}
    diverged: dict[WalkRun, np.ndarray] = {}
    lam0 = {}
    for name, problem in plan.problems.items():
        runs = [r for r in plan.runs if r.problem == name]
        if not runs:
            continue
        data, model = problem.data, problem.model
        theta0 = _initial_params(model, data, seeds)
        spectrum = np.linalg.eigvalsh(model.hessian(theta0, data.X, data.y))  # (S, p)
        lam0[name] = (float(np.median(spectrum[:, -1])), float(np.median(spectrum[:, 0])))
        for r, ds in zip(
            runs,
            _simulate_group(plan, runs, problem, theta0, seeds, engine, progress),
            strict=True,
        ):
            values[r] = _reduce(problem, ds)
            diverged[r] = ds["diverged"].values
    quantities = {q: np.array([values[r][q] for r in plan.runs]) for q in Walk.quantities}
    ds = reported_dataset(plan.run_names, quantities, np.array([diverged[r] for r in plan.runs]))
    ds = ds.assign_coords(
        problem=("run", np.array([r.problem for r in plan.runs], dtype=object)),
        method=("run", np.array([r.method for r in plan.runs], dtype=object)),
        lr=("run", np.array([r.lr for r in plan.runs])),
        batch_size=("run", np.array([r.batch_size or 0 for r in plan.runs])),
    )
    ds["batch_size"].attrs["long_name"] = "batch size (0: full batch)"
    ds = ds.assign_coords(problem_name=np.array(list(lam0), dtype=object))
    ds["lambda0"] = ("problem_name", np.array([v[0] for v in lam0.values()]))
    ds["lambda0"].attrs["long_name"] = "top Hessian eigenvalue at the initialization (median)"
    ds["lambda0_min"] = ("problem_name", np.array([v[1] for v in lam0.values()]))
    ds["lambda0_min"].attrs["long_name"] = "least Hessian eigenvalue at the initialization"
    return ds


_PANELS = (
    ("interior_fraction", "interior-minimum fraction"),
    ("update_cosine", "cos(consecutive updates)"),
    ("relative_height", "relative height above the floor"),
    ("init_distance", "distance from init"),
)


def plot_walk(ds: xr.Dataset, path: str | Path | None = None, *, title=None):
    """One row per problem, one panel per walk metric against eta lambda_0 (lambda_0:
    the problem's top curvature at the initialization): per method and batch size the
    median over seeds with min-max bars. The window 1 < eta lambda_0 < 2 is shaded,
    and GD's predicted interior fraction (0 then 1) and cosine (+1 then -1) on a
    quadratic are drawn; the last panel shows the loss contraction with |1 - eta
    lambda_0| (GD on an isotropic quadratic) where the Hessian at the initialization is
    isotropic, else the sharpness lambda_max at the end."""
    problems = [str(p) for p in ds["problem_name"].values]
    ncol = len(_PANELS) + 1
    fig, axes = plt.subplots(len(problems), ncol, figsize=(3.3 * ncol, 2.9 * len(problems)))
    axes = np.atleast_2d(axes)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, problem in zip(axes, problems, strict=True):
        lam = float(ds["lambda0"].sel(problem_name=problem))
        isotropic = float(ds["lambda0_min"].sel(problem_name=problem)) > 0.999 * lam
        last = ("loss_rate", "loss contraction") if isotropic else ("sharpness", "final lambda_max")
        sub = ds.sel(run=ds["problem"].values == problem)
        groups = sorted(
            {
                (str(m), int(b))
                for m, b in zip(sub["method"].values, sub["batch_size"].values, strict=True)
            }
        )
        for ax, (q, label) in zip(row, (*_PANELS, last), strict=True):
            ax.axvspan(1, 2, color="0.9", zorder=0)
            for i, (method, batch) in enumerate(groups):
                g = sub.sel(
                    run=(sub["method"].values == method) & (sub["batch_size"].values == batch)
                )
                x = g["lr"].values * lam
                v = g[q].where(~g["diverged"])
                med = v.median("seed").values
                lo, hi = v.min("seed").values, v.max("seed").values
                name = METHODS[method] + (f" B={batch}" if batch else "")
                ax.errorbar(
                    x,
                    med,
                    yerr=[med - lo, hi - med],
                    fmt="o-",
                    ms=3,
                    capsize=2,
                    color=colors[i % len(colors)],
                    label=name,
                )
            grid = np.linspace(0, max(2.2, ax.get_xlim()[1]), 300)
            if q == "interior_fraction":
                ax.plot(grid, (grid > 1).astype(float), "k:", lw=1, label="GD, quadratic")
            elif q == "update_cosine":
                ax.plot(grid, np.where(grid > 1, -1.0, 1.0), "k:", lw=1)
            elif q == "loss_rate":
                ax.plot(grid, np.abs(1 - grid), "k:", lw=1)
                ax.axhline(1, color="0.5", lw=0.8)
            if q == "init_distance" and np.nanmin(sub[q].values) > 0:
                ax.set_yscale("log")
            ax.set_title(f"{problem}: {label}", fontsize=9)
            ax.set_xlabel(f"eta lambda_0 (lambda_0 = {lam:.3g})", fontsize=8)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=6.5)
    return finish_figure(fig, title, path)
