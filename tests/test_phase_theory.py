"""What a finished phase diagram says (sgdsde.analysis.phase_theory): the edges of the
stabilization band on hand-built diagrams, and GD's measured catapult window against
Lewkowycz et al. (2020) on their uv model (a two-layer linear network), where the
theory's lambda_0 is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sgdsde.analysis import (
    SGDDynamics,
    catapult_window,
    majority_regime,
    phase_diagram,
    seed_child,
    stabilization_edges,
    with_phase_edges,
)
from sgdsde.analysis.phase_plots import (
    CATAPULT_MEASURED_LABEL,
    CATAPULT_WINDOW_LABEL,
    STABLE_EDGE_LABEL,
    log_edges,
    plot_phase_heatmap,
)
from sgdsde.analysis.plots import close_figure
from sgdsde.data import RegressionData
from sgdsde.dynamics.sgd import SGD
from sgdsde.models.diagonal import DiagonalLinearNet
from sgdsde.random import trajectory_streams

REGIME_ATTRS = {"flag_values": np.array([0, 1, 2], dtype=np.int8), "flag_meanings": "c s d"}
LRS = np.array([0.1, 0.2, 0.4, 0.8, 1.6])


def hand_built(regimes, diverged) -> xr.Dataset:
    """A (lr, row, seed) diagram with the given regime codes and divergence flags."""
    dims = ("lr", "row", "seed")
    return xr.Dataset(
        {
            "regime": (dims, np.array(regimes, dtype=np.int8), dict(REGIME_ATTRS)),
            "diverged": (dims, np.array(diverged, dtype=np.int8)),
        },
        coords={"lr": LRS, "row": [0, 1], "seed": [0, 1]},
    )


def test_stabilization_edges_on_a_hand_built_diagram():
    # row 0: converged, converged, stabilized, stabilized (one seed diverged), diverged
    # row 1: converged everywhere except a divergence at 0.4 (one seed) and 1.6
    regimes = np.zeros((5, 2, 2), dtype=int)
    diverged = np.zeros((5, 2, 2), dtype=int)
    regimes[2:4, 0] = 1
    diverged[3, 0, 1] = 1
    regimes[3, 0, 1] = 2
    regimes[4, 0] = 2
    diverged[4, 0] = 1
    diverged[2, 1, 0] = 1
    regimes[2, 1, 0] = 2
    diverged[4, 1] = 1
    regimes[4, 1] = 2
    edges = stabilization_edges(hand_built(regimes, diverged))
    # row 0: no divergence up to 0.4; the tie at 0.8 (stabilized vs diverged) goes to
    # diverged, so the smallest stabilized lr is 0.4
    np.testing.assert_allclose(edges["stable_lr_max"], [0.4, 0.2])
    assert float(edges["stabilized_lr_min"].sel(row=0)) == 0.4
    assert np.isnan(edges["stabilized_lr_min"].sel(row=1))  # never stabilized
    assert edges.attrs["regime_variable"] == "regime"
    majority = majority_regime(hand_built(regimes, diverged)["regime"])
    assert int(majority.sel(lr=0.8, row=0)) == 2


def test_with_phase_edges_adds_variables_and_scalar_attrs():
    regimes = np.zeros((5, 2, 2), dtype=int)
    regimes[1:3] = 1
    diverged = np.zeros((5, 2, 2), dtype=int)
    diverged[3:] = 1
    out = with_phase_edges(hand_built(regimes, diverged).isel(row=0))
    assert float(out["stable_lr_max"]) == 0.4 and out.attrs["stable_lr_max"] == 0.4
    assert out.attrs["stabilized_lr_min"] == 0.2
    with pytest.raises(ValueError, match="catapult flag is recorded for gradient descent"):
        catapult_window(out)
    with pytest.raises(ValueError, match="expected a phase diagram"):
        stabilization_edges(out.isel(seed=0))


# Lewkowycz et al. (2020), Sec. 2: the uv model f(x) = (1/sqrt(m)) v . u x on one
# example (x = 1, y = 0), u, v ~ N(0, 1): a diagonal network whose m inputs all equal
# 1/sqrt(m). Its NTK is lambda_0 = (|u|^2 + |v|^2) / m; GD catapults for
# 2/lambda_0 < eta < 4/lambda_0 (large m) and diverges above.
WIDTH = 40
X = np.full((1, WIDTH), WIDTH**-0.5)
UV_DATA = RegressionData(X, np.zeros(1), X, np.zeros(1))
UV_MODEL = DiagonalLinearNet(d=WIDTH, alpha=1.0, init_scheme="gaussian")
UV_LRS = np.geomspace(0.5, 3.0, 14)


@pytest.fixture(scope="module")
def uv():
    return phase_diagram(
        UV_MODEL, UV_DATA, lrs=UV_LRS, seeds=3, n_steps=300, save_steps=np.arange(0, 301, 3),
        dynamics=SGDDynamics(SGD(batch_size=None)),
    )  # fmt: skip


def test_theory_window_is_lewkowycz_uv_ntk(uv):
    """catapult_theory_low / high = 2 / lambda_0, 4 / lambda_0 with lambda_0 =
    (|u_0|^2 + |v_0|^2) / m of each seed's initialization."""
    for s in range(3):
        rng = trajectory_streams([seed_child(0, s)], 1)["init"][0]
        theta0 = UV_MODEL.init([rng])[0]
        lam0 = (theta0**2).sum() / WIDTH
        cell = uv.sel(seed=s)
        np.testing.assert_allclose(cell["catapult_theory_low"], 2 / lam0, rtol=1e-10)
        np.testing.assert_allclose(cell["catapult_theory_high"], 4 / lam0, rtol=1e-10)


def test_measured_catapult_window_overlaps_the_theory(uv):
    """Every seed catapults on a window of step sizes that overlaps Lewkowycz et al.'s
    (and lies inside it up to one grid step); below it GD converges without a spike,
    above it GD diverges."""
    window = catapult_window(uv)
    assert bool(window["overlaps"].all()) and bool(window["inside"].all())
    assert (window["measured_high"] > window["measured_low"]).all()  # a window, not a point
    for s in range(3):
        cell = uv.sel(seed=s)
        below = uv["lr"] < 0.9 * cell["catapult_theory_low"]
        assert not cell["catapult"].where(below, 0).any()
        above = uv["lr"] > 1.3 * cell["catapult_theory_high"]
        assert (cell["diverged"].where(above, 1) == 1).all()
    out = with_phase_edges(uv)
    assert out.attrs["catapult_lr_low"] == float(window["measured_low"].min())
    assert out.attrs["catapult_lr_high"] == float(window["measured_high"].max())


def test_heatmap_draws_the_sweep_edges_and_the_catapult_window(uv):
    fig = plot_phase_heatmap(uv, "final_train_loss")
    try:
        ax = fig.axes[0]
        found = stabilization_edges(uv)
        cells = log_edges(UV_LRS)
        (stable,) = [c for c in ax.collections if c.get_label() == STABLE_EDGE_LABEL]
        i = int(np.flatnonzero(float(found["stable_lr_max"]) == UV_LRS)[0])
        np.testing.assert_allclose(stable.get_segments()[0][:, 0], cells[i + 1])
        labels = {c.get_label() for c in ax.collections} | {ln.get_label() for ln in ax.lines}
        assert CATAPULT_MEASURED_LABEL in labels and CATAPULT_WINDOW_LABEL in labels
        theory = [ln for ln in ax.lines if ln.get_label() == CATAPULT_WINDOW_LABEL]
        xs = sorted(float(np.nanmedian(ln.get_xdata())) for ln in theory)
        expected = [float(uv[n].median()) for n in ("catapult_theory_low", "catapult_theory_high")]
        np.testing.assert_allclose(xs, expected)
    finally:
        close_figure(fig)
