"""Gallery kind ``paper_dln_loss_slice``: the 2-D loss-surface slice of a diagonal linear
network (Andriushchenko et al., "SGD with Large Step Sizes Learns Sparse Features", ICML
2023, ``diag_nets_2d_loss_surface.ipynb``; reference notes §2.2).

The runs are those of ``DLNRunsExperiment`` (``paper_dln``): gradient flow (GD at a
small step), large-step GD, large-step SGD and the SDEs of the SGD run, with their
parameters saved. The plane goes through the initialization w0 = (u0, v0), spanned by

    e1 = w* - w0,   w* = (sqrt(beta*), sqrt(beta*))  (the balanced target, u*v = beta*),
    e2 = (w_GF - w0) - <w_GF - w0, e1> / |e1|^2 e1  (the GF solution, orthogonalised),

and a point w has plane coordinates (<w - w0, e1> / |e1|^2, <w - w0, e2> / |e2|^2) (so
w0 is (0, 0), w* is (1, 0) and w_GF is (a_GF, 1)). w_GF is the end of the ``gf_run``
(seed 0), as in the notebook, whose plane this is; beside it the closed-form limit of
gradient flow (``sgdsde.theory.gradient_flow_limit_of``, its parameters by the flow's
invariants, ``gradient_flow_limit_params``) is marked, and the dataset records the
distance between the two (``gf_limit_distance``: GD at a finite step and a finite time
ends O(eta) and a residual of the unconverged flow away from the limit) and how far
the closed form lies off the plane (``gf_limit_off_plane``). The training and test losses are
evaluated on a grid of that plane (w0 + a e1 + b e2), clipped at ``clip``, and every
run's trajectory is projected on it; stochastic runs (SGD, SDE) are projected as
(|u|, |v|), as the notebook does (beta = u*v is unchanged by flipping the signs of u_i
and v_i together, and SGD does flip them).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.colors import LogNorm

from sgdsde.analysis.plots import finish_figure
from sgdsde.experiments.base import EXPERIMENTS
from sgdsde.experiments.config import ConfigChecker, Key
from sgdsde.experiments.gallery import THEORY_ROWS, theory_row
from sgdsde.experiments.paper_dln import (
    DLN_KEYS,
    DLNPlan,
    DLNRunsExperiment,
    dln_dataset,
    draw_references,
    prepare_dln,
    reference_lines,
    shown_seeds,
    simulate_dln,
)
from sgdsde.theory import gradient_flow_limit_params

#: Keys of the ``[slice]`` table.
SLICE_KEYS: dict[str, Key] = {
    "gf_run": Key("str", "the run whose final point (seed 0) is the GF solution", True),
    "lo": Key("number", "the grid's lower plane coordinate (both axes)", default=-0.5),
    "hi": Key("number", "the grid's upper plane coordinate (both axes)", default=2.3),
    "points": Key("int", "grid points per axis", default=100, minimum=2),
    "clip": Key("number", "losses above it are drawn at it", default=100.0, positive=True),
}


@dataclasses.dataclass(frozen=True)
class SlicePlan(DLNPlan):
    """A DLN plan that saves parameters, and the plane's grid."""

    gf_run: str = ""
    lo: float = -0.5
    hi: float = 2.3
    points: int = 100
    clip: float = 100.0


def plane_basis(
    w0: np.ndarray, target: np.ndarray, w_gf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(e1, e2): e1 = target - w0, e2 = w_gf - w0 with its e1 component removed."""
    e1 = target - w0
    g = w_gf - w0
    e2 = g - (g @ e1) / (e1 @ e1) * e1
    if not np.linalg.norm(e2) > 1e-12 * np.linalg.norm(g):
        raise ValueError(
            "the GF solution lies on the line through the initialization and the target: "
            "the plane is not defined (choose another gf_run)"
        )
    return e1, e2


def project(w: np.ndarray, w0: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Plane coordinates (..., 2) of points w (..., p): (<w - w0, e_i> / |e_i|^2)_i."""
    rel = w - w0
    return np.stack([rel @ e1 / (e1 @ e1), rel @ e2 / (e2 @ e2)], axis=-1)


def slice_losses(model, data, w0, e1, e2, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training and test loss (1/2n) ||X beta - y||^2 at w0 + a e1 + b e2 for every (a, b)
    of the grid ``coords`` x ``coords``: arrays (a, b)."""
    a, b = np.meshgrid(coords, coords, indexing="ij")
    theta = w0 + a[..., None] * e1 + b[..., None] * e2
    beta = model.linear_predictor(theta.reshape(-1, w0.size))
    out = []
    for X, y in ((data.X, data.y), (data.X_test, data.y_test)):
        r = beta @ X.T - y
        out.append((0.5 * np.mean(r * r, axis=1)).reshape(a.shape))
    return out[0], out[1]


@EXPERIMENTS.register
class PaperDLNLossSlice(DLNRunsExperiment):
    """``kind = "paper_dln_loss_slice"``: GF, large-step GD, SGD and its SDEs on the plane
    through (initialization, target, GF solution), with the loss contours."""

    name = "paper_dln_loss_slice"
    extra_keys: ClassVar[dict[str, Key]] = {
        **DLN_KEYS,
        "slice": Key("table", "[slice]: gf_run, lo, hi, points, clip", required=True),
    }

    def prepare_experiment(self, config, top, header, checker: ConfigChecker) -> SlicePlan:
        base = prepare_dln(checker, config, top, header)
        table = checker.table("slice", top.get("slice", {}), SLICE_KEYS)
        gf_run = table.get("gf_run")
        if gf_run is not None and gf_run not in [r.name for r in base.runs]:
            checker.problem("slice.gf_run", f"must name a run of [[runs]] (got {gf_run!r})")
        if table.get("lo", 0) >= table.get("hi", 1):
            checker.problem("slice", f"needs lo < hi (got {table.get('lo')}, {table.get('hi')})")
        model = base.model
        if model is not None and getattr(model, "parametrization", None) != "uv":
            checker.problem(
                "model",
                "the slice's target w* = (sqrt(beta*), sqrt(beta*)) is for a diagonal_linear "
                'model with parametrization = "uv"',
            )
        if len(base.datasets) > 1:
            checker.problem("datasets", "the slice is drawn for one dataset: give exactly one")
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(DLNPlan)}
        return SlicePlan(
            **{**fields, "save_params": True},
            gf_run=gf_run or "",
            lo=float(table.get("lo", -0.5)),
            hi=float(table.get("hi", 2.3)),
            points=int(table.get("points", 100)),
            clip=float(table.get("clip", 100.0)),
        )

    def run(self, plan, *, engine: str = "numba", progress: bool = False) -> xr.Dataset:
        if not isinstance(plan, SlicePlan):
            raise TypeError("run takes the plan made by PaperDLNLossSlice.prepare")
        ds = dln_dataset(plan, simulate_dln(plan, engine, progress))
        return self.finish(plan, add_slice(plan, ds))

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        return plot_slice(ds, path, title=title)


def add_slice(plan: SlicePlan, ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the plane: ``slice_train_loss`` / ``slice_test_loss`` (a, b) on the
    grid, ``projection`` (run, seed, step, axis) of every trajectory, the plane points
    of w0, w*, w_GF and the closed-form GF limit (attrs), the GF limit against the
    ``gf_run`` (``gf_limit_distance``, ``gf_limit_off_plane`` and their theory rows),
    and without ``params``."""
    label, data = next(iter(plan.datasets.items()))
    model = plan.model
    w0 = model.init([np.random.default_rng(0)])[0]
    root = np.sqrt(data.beta_star)
    target = np.concatenate([root, root])
    w_gf = ds["params"].sel(run=plan.gf_run).isel(seed=0, step=-1).values
    e1, e2 = plane_basis(w0, target, w_gf)
    beta_limit = ds["theory_beta"].sel(dataset=label, theory="gf_limit").values
    w_limit = gradient_flow_limit_params(model, beta_limit)
    beta_gf = model.linear_predictor(w_gf)[0]
    params = ds["params"].values
    stochastic = np.array([m != "GD" for m in ds["method"].values])
    params = np.where(stochastic[:, None, None, None], np.abs(params), params)
    coords = np.linspace(plan.lo, plan.hi, plan.points)
    train, test = slice_losses(model, data, w0, e1, e2, coords)
    ds = ds.drop_vars("params")
    ds = ds.assign_coords(plane_a=coords, plane_b=coords, axis=["a", "b"])
    ds["projection"] = (("run", "seed", "step", "axis"), project(params, w0, e1, e2))
    ds["slice_train_loss"] = (("plane_a", "plane_b"), np.minimum(train, plan.clip))
    ds["slice_test_loss"] = (("plane_a", "plane_b"), np.minimum(test, plan.clip))
    ds.attrs["plane_points"] = json.dumps(
        {
            "init": [0.0, 0.0],
            "target": project(target, w0, e1, e2).tolist(),
            "gf_solution": project(w_gf, w0, e1, e2).tolist(),
            "gf_limit": project(w_limit, w0, e1, e2).tolist(),
        }
    )
    ds.attrs["gf_run"] = plan.gf_run
    a, b = project(w_limit, w0, e1, e2)
    ds["gf_limit_distance"] = (
        (),
        float(np.linalg.norm(beta_gf - beta_limit)),
        {
            "long_name": f"||beta_run - beta_GF||_2: the end of {plan.gf_run} (seed 0) against "
            "the closed-form gradient-flow limit",
            "units": "1",
        },
    )
    ds["gf_limit_off_plane"] = (
        (),
        float(np.linalg.norm(w_limit - (w0 + a * e1 + b * e2))),
        {
            "long_name": "distance of the closed-form GF limit's parameters from the plane",
            "units": "1",
        },
    )
    rows = json.loads(ds.attrs[THEORY_ROWS])
    rows.append(
        theory_row(
            f"theory: GF limit against the end of {plan.gf_run}",
            "l2 distance of beta",
            float(ds["gf_limit_distance"]),
        )
    )
    ds.attrs[THEORY_ROWS] = json.dumps(rows)
    return ds


def plane_points(ds: xr.Dataset) -> dict[str, Any]:
    """The plane coordinates of w0 ("init"), w* ("target") and w_GF ("gf_solution")."""
    return json.loads(ds.attrs["plane_points"])


def _run_colors(ds: xr.Dataset) -> dict[str, str]:
    """One colour per run, the same in every panel: large-step GD gray, the others from
    the colour cycle."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    out, i = {}, 0
    for run, method in zip(ds["run"].values, ds["method"].values, strict=True):
        if method == "GD" and run != ds.attrs.get("gf_run"):
            out[str(run)] = "0.55"
        else:
            out[str(run)] = cycle[i % len(cycle)]
            i += 1
    return out


def _shown_seed(sel: xr.Dataset) -> int:
    """The seed whose trajectory is drawn: the first that did not diverge (else 0)."""
    ok = np.flatnonzero(~sel["diverged"].values)
    return int(ok[0]) if ok.size else 0


def plot_slice(ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
    """Training- and test-loss contours (log colour scale) on the plane with every run's
    projected trajectory (its first seed that did not diverge; SDE runs dashed) and the
    points w0, w*, w_GF; a third panel the test loss against the iteration (median over
    the seeds that did not diverge)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = _run_colors(ds)
    a, b = ds["plane_a"].values, ds["plane_b"].values
    points = plane_points(ds)
    names = {
        "init": "w0",
        "target": "w*",
        "gf_solution": "w_GF",
        "gf_limit": "GF limit (closed form)",
    }
    for ax, var, label in zip(
        axes[:2], ("slice_train_loss", "slice_test_loss"), ("train loss", "test loss"), strict=True
    ):
        z = ds[var].values.T
        low = max(float(z[z > 0].min()), 1e-8)
        norm = LogNorm(vmin=low, vmax=float(z.max()))
        levels = np.geomspace(low, norm.vmax, 30)
        cs = ax.contourf(a, b, np.maximum(z, low), levels=levels, norm=norm, cmap="viridis")
        fig.colorbar(cs, ax=ax, format="%.0e")
        for run in ds["run"].values:
            sel = ds.sel(run=run)
            seed = _shown_seed(sel)
            xy = sel["projection"].isel(seed=seed).values
            style = "--" if str(sel["method"].item()).startswith("SDE") else "-"
            ax.plot(
                xy[:, 0],
                xy[:, 1],
                style,
                color=colors[str(run)],
                lw=1.1,
                label=f"{run} (seed {seed})",
            )
        for key, marker in (("init", "o"), ("target", "*"), ("gf_solution", "s")):
            x, y = points[key]
            ax.plot(x, y, marker, color="red", ms=10 if marker == "*" else 6, mec="k")
            ax.annotate(
                names[key], (x, y), color="w", fontsize=9, xytext=(4, 4), textcoords="offset points"
            )
        x, y = points["gf_limit"]
        ax.plot(x, y, "+", color="orange", ms=14, mew=2, label="theory: " + names["gf_limit"])
        ax.annotate(
            "GF limit",
            (x, y),
            color="orange",
            fontsize=8,
            xytext=(4, -12),
            textcoords="offset points",
        )
        ax.set_xlim(a[0], a[-1])
        ax.set_ylim(b[0], b[-1])
        ax.set_xlabel("direction to w*")
        ax.set_ylabel("direction to w_GF (orthogonalised)")
        ax.set_title(f"{label} on the plane (w0, w*, w_GF)", fontsize=10)
    axes[0].legend(fontsize=7, loc="upper right")
    steps = np.maximum(ds["step"].values, 1)
    for run in ds["run"].values:
        sel = ds.sel(run=run)
        bad = sel["diverged"].values
        values = shown_seeds(sel["test_loss_curve"].values, bad)
        if values.size:
            style = "--" if str(sel["method"].item()).startswith("SDE") else "-"
            name = f"{run} ({int(bad.sum())}/{bad.size} diverged)" if bad.any() else str(run)
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps (diverged)
                median = np.nanmedian(values, axis=0)
            axes[2].plot(steps, median, style, color=colors[str(run)], label=name)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("iteration")
    axes[2].set_title("test loss (median over seeds that did not diverge)", fontsize=10)
    label = str(ds["dataset"].values[0])
    draw_references(axes[2], reference_lines(ds, label, "test_loss", colors), log=True)
    axes[2].legend(fontsize=6)
    axes[2].grid(alpha=0.3)
    return finish_figure(fig, title, path)
