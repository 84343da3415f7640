"""Phase-diagram figures (sgdsde.analysis.phase_plots): what is drawn equals the
dataset (the heatmap's array, the seed reduction, the theory lines' positions, the
facets, the seed bands), and the file is written atomically."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm, to_rgb

from sgdsde.analysis import phase_diagram
from sgdsde.analysis.phase_plots import (
    CATAPULT_LABEL,
    EDGE_LABEL,
    MISSING_COLOR,
    log_edges,
    plot_phase,
    plot_phase_curves,
    plot_phase_heatmap,
    reduce_seeds,
)
from sgdsde.analysis.plots import close_figure
from sgdsde.data import sparse_regression
from sgdsde.models.diagonal import DiagonalLinearNet

LRS = np.array([0.1, 0.2, 0.4, 0.8])
DELTAS = np.array([0.0, 0.5, 1.0])
REGIME_ATTRS = {
    "flag_values": np.array([0, 1, 2], dtype=np.int8),
    "flag_meanings": "converged stabilized diverged",
}


def synthetic(edge=0.3, seeds=3, per_row_edge=False) -> xr.Dataset:
    """A hand-built phase dataset (lr, label_noise, seed) with known values."""
    shape = (len(LRS), len(DELTAS), seeds)
    rng = np.random.default_rng(0)
    loss = 10.0 ** rng.uniform(-6, -1, shape)  # over decades: a log colour scale
    diverged = np.zeros(shape, dtype=np.int8)
    diverged[-1] = 1  # the largest lr diverges for every seed
    diverged[-2, 0, 0] = 1  # and one seed of one cell
    loss[diverged == 1] = np.nan
    regime = np.where(diverged == 1, 2, 1).astype(np.int8)
    regime[0] = 0
    dims = ("lr", "label_noise", "seed")
    ds = xr.Dataset(
        {
            "final_test_loss": (dims, loss, {"long_name": "test loss", "units": "1"}),
            "final_l0_norm": (dims, rng.integers(0, 30, shape).astype(float), {"units": "count"}),
            "regime": (dims, regime, dict(REGIME_ATTRS)),
            "diverged": (dims, diverged),
        },
        coords={"lr": LRS, "label_noise": DELTAS, "seed": np.arange(seeds)},
    )
    ds["final_l0_norm"].values[diverged == 1] = np.nan
    ds["final_l0_norm"].attrs["long_name"] = "l0 norm"
    if per_row_edge:
        edges = np.array([0.15, 0.3, 0.6])
        return ds.assign_coords(gd_stability_edge=("label_noise", edges))
    ds = ds.assign_coords(gd_stability_edge=edge)
    ds.attrs["gd_stability_edge"] = edge
    return ds


def mesh_of(ax) -> QuadMesh:
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    return mesh


def line(ax, label):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return found


@pytest.fixture
def figures():
    made = []
    yield made
    for fig in made:
        close_figure(fig)


def test_heatmap_array_is_the_median_over_seeds_that_did_not_diverge(figures):
    ds = synthetic()
    fig = plot_phase_heatmap(ds, "final_test_loss")
    figures.append(fig)
    drawn = np.ma.filled(mesh_of(fig.axes[0]).get_array(), np.nan).reshape(len(DELTAS), len(LRS))
    expected = np.full((len(DELTAS), len(LRS)), np.nan)
    for i in range(len(LRS)):
        for j in range(len(DELTAS)):
            alive = ds["diverged"].values[i, j] == 0
            if alive.any():
                expected[j, i] = np.median(ds["final_test_loss"].values[i, j][alive])
    np.testing.assert_array_equal(drawn, expected)
    assert np.isnan(drawn[:, -1]).all()  # every seed diverged: grey, not a value
    assert isinstance(mesh_of(fig.axes[0]).norm, LogNorm)  # a loss over decades
    assert fig.axes[0].get_xscale() == "log"


def test_heatmap_cells_sit_at_the_step_sizes_on_a_log_axis(figures):
    np.testing.assert_allclose(np.sqrt(log_edges(LRS)[:-1] * log_edges(LRS)[1:]), LRS)
    np.testing.assert_allclose(log_edges([0.5]), [0.5 / 1.1, 0.5 * 1.1])
    fig = plot_phase_heatmap(synthetic(), "regime")
    figures.append(fig)
    np.testing.assert_allclose(fig.axes[0].get_xlim(), log_edges(LRS)[[0, -1]])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["0", "0.5", "1"]


def test_regime_map_is_the_majority_with_ties_towards_divergence(figures):
    ds = synthetic(seeds=2)
    ds["regime"].values[1, 1] = [1, 2]  # a tie: stabilized vs diverged
    ds["regime"].values[1, 2] = [0, 0]
    reduced = reduce_seeds(ds, "regime")
    assert int(reduced.sel(lr=0.2, label_noise=0.5)) == 2
    assert int(reduced.sel(lr=0.2, label_noise=1.0)) == 0
    fig = plot_phase_heatmap(ds, "regime")
    figures.append(fig)
    drawn = mesh_of(fig.axes[0]).get_array().reshape(len(DELTAS), len(LRS))
    np.testing.assert_array_equal(drawn, reduced.transpose("label_noise", "lr").values)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()][:3] == ["converged", "stabilized", "diverged"]


def test_theory_lines_sit_at_the_gd_edge_and_twice_it(figures):
    fig = plot_phase_heatmap(synthetic(edge=0.3), "final_l0_norm")
    figures.append(fig)
    ax = fig.axes[0]
    np.testing.assert_allclose(line(ax, EDGE_LABEL).get_xdata(), [0.3, 0.3])
    np.testing.assert_allclose(line(ax, CATAPULT_LABEL).get_xdata(), [0.6, 0.6])
    colorbar = fig.axes[1]
    assert "l0 norm [count]" in colorbar.get_ylabel().replace("\n", " ")


def test_an_edge_outside_the_lr_range_is_not_drawn(figures):
    fig = plot_phase_heatmap(synthetic(edge=50.0), "regime")
    figures.append(fig)
    assert not fig.axes[0].get_lines()


def test_an_edge_per_row_is_drawn_per_row(figures):
    fig = plot_phase_heatmap(synthetic(per_row_edge=True), "regime")
    figures.append(fig)
    xs = line(fig.axes[0], EDGE_LABEL).get_xdata()
    np.testing.assert_allclose(xs[0::3], [0.15, 0.3, 0.6])
    np.testing.assert_allclose(xs[1::3], [0.15, 0.3, 0.6])


def test_a_further_dim_gives_one_facet_per_value_on_one_colour_scale(figures):
    ds = synthetic()
    layers = xr.concat([ds["final_l0_norm"], 2 * ds["final_l0_norm"]], dim="layer")
    ds["final_feature_sparsity"] = layers.transpose("lr", "label_noise", "seed", "layer")
    ds["final_feature_sparsity"].attrs = {"long_name": "feature sparsity", "units": "1"}
    fig = plot_phase_heatmap(ds, "final_feature_sparsity")
    figures.append(fig)
    panels = [ax for ax in fig.axes if ax.collections and isinstance(ax.collections[0], QuadMesh)]
    assert [ax.get_title() for ax in panels] == ["layer = 0", "layer = 1"]
    reduced = reduce_seeds(ds, "final_feature_sparsity")
    for k, ax in enumerate(panels):
        drawn = np.ma.filled(mesh_of(ax).get_array(), np.nan).reshape(len(DELTAS), len(LRS))
        expected = reduced.isel(layer=k).transpose("label_noise", "lr").values
        np.testing.assert_array_equal(drawn, expected)
    assert mesh_of(panels[0]).norm is mesh_of(panels[1]).norm


def test_curves_are_the_median_with_a_min_max_band_over_seeds(figures):
    ds = synthetic()
    fig = plot_phase_curves(ds, variables=("final_test_loss",))
    figures.append(fig)
    ax = fig.axes[0]
    for delta in DELTAS:
        values = ds["final_test_loss"].sel(label_noise=delta).values
        drawn = line(ax, f"label_noise = {delta:.3g}").get_ydata()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN lr
            expected = np.nanmedian(values, axis=1)
        np.testing.assert_array_equal(drawn, expected)
    np.testing.assert_allclose(line(ax, EDGE_LABEL).get_xdata(), [0.3, 0.3])
    assert len(ax.collections) == len(DELTAS)  # one band per axis value


def test_a_missing_variable_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="no variable 'final_l1_norm'"):
        plot_phase_heatmap(synthetic(), "final_l1_norm")


def test_a_real_diagram_plots_and_is_written_atomically(tmp_path):
    data = sparse_regression(n=20, d=30, k=3, n_test=50, seed=1)
    model = DiagonalLinearNet(d=30, alpha=0.1)
    ds = phase_diagram(
        model,
        data,
        lrs=[0.1, 0.3, 1.0],
        axis="label_noise",
        values=[0.0, 0.5],
        seeds=2,
        n_steps=300,
        save_steps=np.arange(0, 301, 10),
        l0_threshold=1e-3,
    )
    path = tmp_path / "phase.png"
    assert plot_phase(ds, path) is not None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["phase.png"]  # no temporary left behind
    fig = plot_phase(ds)
    try:
        regimes = mesh_of(fig.axes[0]).get_array().reshape(2, 3)
        expected = reduce_seeds(ds, "regime").transpose("label_noise", "lr").values
        np.testing.assert_array_equal(regimes, expected)
        assert regimes[:, -1].tolist() == [2, 2]  # eta = 1 diverges
    finally:
        close_figure(fig)


def test_a_decay_diagram_shows_the_regime_before_the_decay():
    """On the decay_fraction axis the regime panel is regime_large_step (its majority
    over seeds), with the unclassified cells (a phase too short to classify) grey."""
    data = sparse_regression(n=20, d=30, k=3, n_test=50, seed=1)
    ds = phase_diagram(
        DiagonalLinearNet(d=30, alpha=0.1), data, lrs=[0.1, 1.0], axis="decay_fraction",
        values=[0.02, 0.5], seeds=2, n_steps=300, save_steps=np.arange(0, 301, 10),
        l0_threshold=1e-3,
    )  # fmt: skip
    fig = plot_phase(ds)
    try:
        shown = mesh_of(fig.axes[0]).get_array().reshape(2, 2)
        expected = reduce_seeds(ds, "regime_large_step").transpose("decay_fraction", "lr")
        np.testing.assert_array_equal(shown, expected.values)
        assert shown[0].tolist() == [-1, -1] and shown[1, 1] == 2  # too short; eta = 1 diverges
        assert "before the decay" in fig.axes[0].get_title()
        assert mesh_of(fig.axes[0]).cmap(0)[:3] == to_rgb(MISSING_COLOR)
    finally:
        close_figure(fig)
