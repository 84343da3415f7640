"""Figures of phase diagrams (the datasets of ``sgdsde.analysis.phase_diagram``: dims
``lr``, an optional sweep axis and ``seed``), written atomically like every figure
(``sgdsde.analysis.plots.save_figure``).

* ``plot_phase_heatmap``: one variable over (lr, axis) as a heatmap, the step size on a
  log axis at its true values (cells span the geometric midpoints between grid points),
  the axis values as equal rows; the regime in its colours with a legend, any other
  variable with a colour bar labelled ``long_name [units]`` from its attrs (log scale
  for losses). Seeds are reduced per cell: the regime by majority (a tie goes to the
  higher code, i.e. towards divergence), a continuous variable by the median over the
  seeds that did not diverge (grey where every seed diverged). A dim beyond the axis
  (e.g. ``layer``) gives one panel per value (facets), sharing one colour scale.
* Theory overlays: the GD stability edge 2 / lambda_max(theta_0) (the
  ``gd_stability_edge`` coordinate, per row where it depends on the axis) as a dashed
  line, and the catapult window of Lewkowycz et al. (2020) for two-layer linear (uv)
  networks, dotted: 2 / lambda_0 and 4 / lambda_0 with lambda_0 the NTK's top
  eigenvalue at initialization (the ``catapult_theory_*`` coordinates; without them
  4 / lambda_max). What the sweep found, in red: the edges of the stabilization band
  (``phase_theory.stabilization_edges``: right of the largest eta without divergence,
  left of the smallest stabilized eta) and crosses where GD catapulted.
* ``plot_phase_curves``: variables against lr, one line per axis value (median over
  seeds) with a band (min to max over seeds), and the stability edge.
* ``plot_phase``: the default figure of a phase result: regime, final test loss and
  final l0 norm side by side. Where the step size decays during the run (the
  decay_fraction axis) the regime panel shows ``regime_large_step``, the regime of the
  loss curve before the decay (the final regime reads the small step size after it).
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from sgdsde.analysis.phase_theory import majority_regime, regime_variable, stabilization_edges
from sgdsde.analysis.plots import close_figure, save_figure

#: Colour of cells with no value (every seed diverged, or a regime unclassified).
MISSING_COLOR = "#d9d9d9"

#: Colour of each regime (by name, as in the ``regime`` variable's ``flag_meanings``).
REGIME_COLORS = {
    "converged": "#3a6fb0",
    "stabilized": "#f0a13a",
    "diverged": "#4a4a4a",
    "unclassified": MISSING_COLOR,
}

#: Labels of the theory lines and of what the sweep found (also how tests find them).
EDGE_LABEL = "GD edge 2/λ_max(θ₀)"
CATAPULT_LABEL = "4/λ_max(θ₀): catapult limit (uv)"
CATAPULT_WINDOW_LABEL = "catapult window 2/λ₀–4/λ₀ (NTK; Lewkowycz et al.)"
STABLE_EDGE_LABEL = "largest η without divergence"
STABILIZED_EDGE_LABEL = "smallest stabilized η"
CATAPULT_MEASURED_LABEL = "GD catapulted (most seeds)"

#: Colour of what the sweep found (band edges, measured catapults).
SWEEP_EDGE_COLOR = "#c0392b"

#: The default panels of ``plot_phase``.
DEFAULT_VARIABLES = ("regime", "final_test_loss", "final_l0_norm")


def is_regime(da: xr.DataArray) -> bool:
    """A regime variable (``regime``, ``regime_large_step``): codes with CF flags."""
    return "flag_meanings" in da.attrs and "flag_values" in da.attrs


def reduce_seeds(ds: xr.Dataset, variable: str) -> xr.DataArray:
    """``ds[variable]`` reduced over ``seed`` (module docstring): the majority regime, or
    the median over the seeds that did not diverge (NaN where all diverged)."""
    da = ds[variable]
    if "seed" not in da.dims:
        return da
    if is_regime(da):
        return majority_regime(da)
    alive = ds["diverged"] == 0 if "diverged" in ds else True
    values = da.where(alive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        out = values.median("seed", skipna=True)
    out.attrs = dict(da.attrs)
    return out


def log_edges(values: np.ndarray) -> np.ndarray:
    """Cell edges of a positive increasing grid on a log axis: the geometric midpoints,
    and half a step beyond the ends (a factor 1.1 each way for one value)."""
    logs = np.log(np.asarray(values, dtype=float))
    if logs.size == 1:
        return np.exp(logs[0] + np.log(1.1) * np.array([-1.0, 1.0]))
    mids = (logs[1:] + logs[:-1]) / 2
    return np.exp(np.concatenate([[2 * logs[0] - mids[0]], mids, [2 * logs[-1] - mids[-1]]]))


def sweep_axis_of(ds: xr.Dataset) -> str | None:
    """The name of the second sweep axis of a phase dataset (None: only lr and seed)."""
    dims = [d for d in ds["regime"].dims if d not in ("lr", "seed")]
    return dims[0] if dims else None


def _label(da: xr.DataArray, name: str, width: int = 40) -> str:
    text = da.attrs.get("long_name", name)
    units = da.attrs.get("units")
    if units and units != "1":
        text = f"{text} [{units}]"
    return "\n".join(textwrap.wrap(text, width))


def _value_text(value) -> str:
    return f"{value:.3g}" if np.issubdtype(np.asarray(value).dtype, np.number) else str(value)


def _norm(variable: str, values: np.ndarray):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Normalize(0, 1)
    low, high = float(finite.min()), float(finite.max())
    loglike = variable.endswith("loss") or variable == "plateau_level"
    if loglike and low > 0 and high / low > 10:
        return LogNorm(low, high)
    return Normalize(low, high if high > low else low + 1)


def _row_values(da: xr.DataArray | float, row_dim: str | None, n_rows: int) -> np.ndarray:
    """One x per row: a (row) DataArray's values (its median over seeds), or a scalar."""
    if not isinstance(da, xr.DataArray):
        return np.full(n_rows, float(da))
    if "seed" in da.dims:
        da = da.median("seed")
    if row_dim is None or row_dim not in da.dims:
        return np.full(n_rows, float(np.ravel(da.values)[0]))
    return da.transpose(row_dim).values.astype(float)


def _row_line(ax, xs: np.ndarray, style: str, label: str):
    """A vertical line per row at xs (one line across all rows where xs is constant);
    None where no x falls inside the lr range."""
    low, high = ax.get_xlim()
    if not np.any((xs >= low) & (xs <= high)):
        return None
    n_rows = xs.size
    if np.all(xs == xs[0]):
        px, py = np.full(2, xs[0]), np.array([-0.5, n_rows - 0.5])
    else:
        px = np.repeat(xs, 3)
        px[2::3] = np.nan
        py = np.ravel([[i - 0.5, i + 0.5, np.nan] for i in range(n_rows)])
    (line,) = ax.plot(px, py, ls=style, color="black", lw=1.4, label=label, scalex=False)
    return line


def _draw_edges(ax, ds: xr.Dataset, row_dim: str | None, n_rows: int) -> list:
    """The theory lines, per row where they depend on the axis, each only where it
    falls inside the lr range: the GD edge 2/lambda_max (dashed) and the catapult
    window of Lewkowycz et al. (dotted: 2/lambda_0 and 4/lambda_0 of the NTK, or
    4/lambda_max without those coordinates); returns the lines drawn."""
    if "gd_stability_edge" not in ds.coords:
        return []
    edge = _row_values(ds["gd_stability_edge"], row_dim, n_rows)
    lines = [_row_line(ax, edge, "--", EDGE_LABEL)]
    if "catapult_theory_high" in ds.coords:
        for name in ("catapult_theory_low", "catapult_theory_high"):
            xs = _row_values(ds[name], row_dim, n_rows)
            lines.append(_row_line(ax, xs, ":", CATAPULT_WINDOW_LABEL))
    else:
        lines.append(_row_line(ax, 2.0 * edge, ":", CATAPULT_LABEL))
    return [line for line in lines if line is not None]


def _draw_sweep_edges(ax, ds: xr.Dataset, row_dim: str | None, n_rows: int) -> list:
    """What the sweep found (``sgdsde.analysis.phase_theory``): the stabilization band's
    edges as red segments on the cell boundaries (solid: right of the largest lr with no
    divergence; dash-dot: left of the smallest stabilized lr), and crosses on the cells
    where GD catapulted in most seeds; returns the artists drawn."""
    if "diverged" not in ds or "seed" not in ds.dims:
        return []
    lrs = ds["lr"].values
    cell_edges = log_edges(lrs)
    found = stabilization_edges(ds)
    handles = []
    for name, side, style, label in (
        ("stable_lr_max", 1, "-", STABLE_EDGE_LABEL),
        ("stabilized_lr_min", 0, "-.", STABILIZED_EDGE_LABEL),
    ):
        xs = _row_values(found[name], row_dim, n_rows)
        segments = [
            [(cell_edges[int(np.flatnonzero(lrs == x)[0]) + side], i - 0.5),
             (cell_edges[int(np.flatnonzero(lrs == x)[0]) + side], i + 0.5)]
            for i, x in enumerate(xs) if np.isfinite(x)
        ]  # fmt: skip
        if segments:
            lines = LineCollection(segments, colors=SWEEP_EDGE_COLOR, linestyles=style, lw=2)
            lines.set_label(label)
            handles.append(ax.add_collection(lines, autolim=False))
    if "catapult" in ds:
        share = ds["catapult"].mean("seed")
        share = share if row_dim is None else share.transpose(row_dim, "lr")
        rows, cols = np.nonzero(np.atleast_2d(share.values) >= 0.5)
        if rows.size:
            marks = ax.scatter(
                lrs[cols], rows, marker="x", color=SWEEP_EDGE_COLOR, s=22, lw=1.2,
                label=CATAPULT_MEASURED_LABEL, zorder=3,
            )  # fmt: skip
            handles.append(marks)
    return handles


def _log_ticks(ax) -> None:
    """Plain-number ticks on a log lr axis (1-2-5 steps: no crowded minor labels)."""
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _heatmap_axes(ax, ds, values2d, variable, row_dim, norm, theory):
    """Draw one (row, lr) panel: the mesh (its array is ``values2d``), axes, theory lines."""
    lrs = ds["lr"].values
    n_rows = values2d.shape[0]
    if is_regime(ds[variable]):
        names = ds[variable].attrs["flag_meanings"].split()
        cmap = ListedColormap([REGIME_COLORS.get(n, "#999999") for n in names])
        codes = np.atleast_1d(ds[variable].attrs["flag_values"]).astype(float)
        norm = BoundaryNorm(np.concatenate([codes - 0.5, [codes[-1] + 0.5]]), len(codes))
    else:
        cmap = plt.get_cmap("viridis").with_extremes(bad=MISSING_COLOR)
    mesh = ax.pcolormesh(
        log_edges(lrs),
        np.arange(n_rows + 1) - 0.5,
        np.ma.masked_invalid(values2d),
        cmap=cmap,
        norm=norm,
        shading="flat",
    )
    mesh.set_label(variable)
    ax.set_xscale("log")
    _log_ticks(ax)
    ax.set_xlim(log_edges(lrs)[[0, -1]])
    ax.set_ylim(-0.5, n_rows - 0.5)
    ax.set_xlabel(f"step size η ({ds['lr'].attrs.get('long_name', 'lr')})", fontsize=9)
    if row_dim is None:
        ax.set_yticks([])
    else:
        values = ds[row_dim].values
        step = max(1, int(np.ceil(len(values) / 12)))
        ax.set_yticks(np.arange(len(values))[::step])
        ax.set_yticklabels([_value_text(v) for v in values[::step]])
        ax.set_ylabel(_label(ds[row_dim], row_dim, 34), fontsize=9)
    if not theory:
        return mesh, []
    return mesh, _draw_edges(ax, ds, row_dim, n_rows) + _draw_sweep_edges(ax, ds, row_dim, n_rows)


def _panels_of(ds: xr.Dataset, variable: str) -> tuple[xr.DataArray, str | None, str | None]:
    """The seed-reduced variable, its row dim (the sweep axis) and its facet dim."""
    if variable not in ds:
        raise ValueError(
            f"the dataset has no variable {variable!r}: choose one of {sorted(ds.data_vars)}"
        )
    da = reduce_seeds(ds, variable)
    if "lr" not in da.dims:
        raise ValueError(f"{variable!r} does not vary over lr (dims {da.dims}): not a phase map")
    row_dim = sweep_axis_of(ds)
    rest = [d for d in da.dims if d not in ("lr", row_dim)]
    if len(rest) > 1:
        raise ValueError(
            f"{variable!r} has dims {da.dims}: select all but one of {rest} first "
            f"(ds.isel({rest[1]}=0)) to facet over the other"
        )
    return da, row_dim, (rest[0] if rest else None)


def _matrix(da: xr.DataArray, row_dim: str | None) -> np.ndarray:
    """(rows, lr) values of a (lr[, row]) DataArray."""
    if row_dim is None:
        return da.transpose("lr").values[None, :].astype(float)
    return da.transpose(row_dim, "lr").values.astype(float)


def _legend_items(variable: str, ds: xr.Dataset, missing: bool) -> list:
    """Patches naming the colours of a panel: the regimes, or the missing cells."""
    if is_regime(ds[variable]):
        names = ds[variable].attrs["flag_meanings"].split()
        return [Patch(color=REGIME_COLORS.get(n, "#999999"), label=n) for n in names]
    return [Patch(color=MISSING_COLOR, label="every seed diverged")] if missing else []


def _figure_legend(fig, items: list) -> None:
    """One legend under the panels, each label once."""
    unique = list({item.get_label(): item for item in items}.values())
    if unique:
        fig.legend(
            handles=unique, loc="outside lower center", ncol=min(6, len(unique)), fontsize=8,
            frameon=False,
        )  # fmt: skip


def _finish(fig, title: str | None, path: str | Path | None):
    if title:
        fig.suptitle(title, fontsize=10.5)
    if path is not None:
        save_figure(fig, path)
        close_figure(fig)
    return fig


def plot_phase_heatmap(
    ds: xr.Dataset,
    variable: str = "regime",
    path: str | Path | None = None,
    *,
    theory: bool = True,
    title: str | None = None,
):
    """A heatmap of ``ds[variable]`` over (lr, sweep axis), one panel per value of a
    further dim (module docstring); returns the Figure (written to ``path`` and closed
    when a path is given).

    ds: a phase-diagram dataset. variable: one of its variables over lr (default the
    regime). theory: overlay the GD stability edge and 4 / lambda_max. title: a
    suptitle.
    """
    da, row_dim, facet = _panels_of(ds, variable)
    facets = [None] if facet is None else list(da[facet].values)
    fig, axes = plt.subplots(
        1, len(facets), figsize=(4.6 * len(facets) + 1.2, 4.2), squeeze=False, layout="constrained"
    )
    matrices = [_matrix(da if f is None else da.sel({facet: f}), row_dim) for f in facets]
    regime = is_regime(ds[variable])
    norm = None if regime else _norm(variable, np.concatenate(matrices, axis=None))
    for ax, f, values in zip(axes[0], facets, matrices, strict=True):
        mesh, handles = _heatmap_axes(ax, ds, values, variable, row_dim, norm, theory)
        if f is not None:
            ax.set_title(f"{facet} = {_value_text(f)}", fontsize=9.5)
    if not regime:
        bar = fig.colorbar(mesh, ax=list(axes[0]), shrink=0.9)
        bar.set_label(_label(ds[variable], variable), fontsize=8.5)
    missing = any(np.isnan(m).any() for m in matrices)
    _figure_legend(fig, _legend_items(variable, ds, missing) + handles)
    return _finish(fig, title, path)


def plot_phase(
    ds: xr.Dataset,
    path: str | Path | None = None,
    variables: tuple[str, ...] = DEFAULT_VARIABLES,
    *,
    theory: bool = True,
    title: str | None = None,
):
    """The default figure of a phase result: one heatmap per variable side by side
    (default: regime, final test loss, final l0 norm), each with its legend or colour
    bar and the theory lines; returns the Figure (written to ``path`` and closed when a
    path is given)."""
    variables = tuple(regime_variable(ds) if v == "regime" else v for v in variables if v in ds)
    fig, axes = plt.subplots(
        1, len(variables), figsize=(5.0 * len(variables), 4.4), squeeze=False, layout="constrained"
    )
    items = []
    for ax, variable in zip(axes[0], variables, strict=True):
        da, row_dim, facet = _panels_of(ds, variable)
        if facet is not None:
            raise ValueError(
                f"{variable!r} has a further dim {facet!r}: draw it with plot_phase_heatmap"
            )
        values = _matrix(da, row_dim)
        regime = is_regime(ds[variable])
        norm = None if regime else _norm(variable, values)
        mesh, handles = _heatmap_axes(ax, ds, values, variable, row_dim, norm, theory)
        if regime:
            what = "before the decay" if variable == "regime_large_step" else "(end of run)"
            ax.set_title(f"regime {what}, majority over seeds", fontsize=9.5)
        else:
            bar = fig.colorbar(mesh, ax=ax, shrink=0.9)
            bar.set_label(_label(ds[variable], variable, 34), fontsize=8)
            ax.set_title(f"{variable} (median over seeds)", fontsize=9.5)
        items += _legend_items(variable, ds, bool(np.isnan(values).any())) + handles
    _figure_legend(fig, items)
    return _finish(fig, title, path)


def plot_phase_curves(
    ds: xr.Dataset,
    path: str | Path | None = None,
    variables: tuple[str, ...] = ("final_test_loss", "final_l0_norm"),
    *,
    theory: bool = True,
    title: str | None = None,
):
    """Each variable against lr: per value of the sweep axis the median over seeds (a
    line, NaN seeds skipped) and the min-max band over seeds (shaded); log lr axis (and
    log values for losses); the GD stability edge dashed where it is one number.
    Returns the Figure (written to ``path`` and closed when a path is given)."""
    row_dim = sweep_axis_of(ds)
    rows = [None] if row_dim is None else list(ds[row_dim].values)
    colors = plt.get_cmap("viridis")(np.linspace(0.05, 0.9, len(rows)))
    fig, axes = plt.subplots(
        1, len(variables), figsize=(4.8 * len(variables), 3.8), squeeze=False, layout="constrained"
    )
    lrs = ds["lr"].values
    for ax, variable in zip(axes[0], variables, strict=True):
        for row, color in zip(rows, colors, strict=True):
            da = ds[variable] if row is None else ds[variable].sel({row_dim: row})
            values = da.transpose("lr", "seed").values.astype(float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mid = np.nanmedian(values, axis=1)
                low, high = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
            label = "all" if row is None else f"{row_dim} = {_value_text(row)}"
            ax.plot(lrs, mid, color=color, lw=1.5, marker=".", ms=4, label=label)
            ax.fill_between(lrs, low, high, color=color, alpha=0.18, lw=0)
        ax.set_xscale("log")
        _log_ticks(ax)
        if variable.endswith("loss") or variable == "plateau_level":
            ax.set_yscale("log")
        if theory and "gd_stability_edge" in ds.attrs:
            ax.axvline(
                float(ds.attrs["gd_stability_edge"]), color="black", ls="--", lw=1.2,
                label=EDGE_LABEL,
            )  # fmt: skip
        ax.set_xlim(log_edges(lrs)[[0, -1]])
        ax.set_xlabel("step size η", fontsize=9)
        ax.set_ylabel(_label(ds[variable], variable, 34), fontsize=8.5)
        ax.grid(alpha=0.3)
    axes[0][0].legend(
        fontsize=7.5, title=f"median; band: min-max over {ds.sizes['seed']} seeds",
        title_fontsize=7.5,
    )  # fmt: skip
    return _finish(fig, title, path)
