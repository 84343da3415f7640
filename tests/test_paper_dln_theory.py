"""The theory drawn beside the DLN gallery kinds (sgdsde.theory through paper_dln): the
gradient-flow limit of each parametrization against GD at small steps (the gap shrinks
with the step), the flow's invariants, the loss-slice's closed-form GF point against its
GF run, the solver floor of the l0 counts, the reference lines on a figure, the table's
theory rows."""

from __future__ import annotations

import copy
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from sgdsde.data import sparse_regression_notebook
from sgdsde.dynamics import SGD, simulate_sgd
from sgdsde.experiments import EXPERIMENTS, load_config
from sgdsde.experiments.gallery import THEORY_ROWS, gallery_table, theory_row
from sgdsde.experiments.paper_dln import (
    SOLVER_FLOOR,
    ReferenceLine,
    draw_references,
    predictor_summaries,
)
from sgdsde.models import DiagonalLinearNet
from sgdsde.theory import (
    gradient_flow_limit,
    gradient_flow_limit_of,
    gradient_flow_limit_params,
    has_gradient_flow_limit,
)

# ---------------------------------------------------------------- the gradient-flow limit


@pytest.fixture(scope="module")
def small_problem():
    return sparse_regression_notebook(n=20, d=30, k=3, n_test=50, seed=0)


def _gd_end(model, data, eta, time):
    """beta after GD at step eta up to ``time`` (numba engine, one trajectory)."""
    n_steps = round(time / eta)
    ds = simulate_sgd(
        model,
        data,
        eta,
        n_steps=n_steps,
        sgd=SGD(batch_size=None),
        save_steps=[n_steps],
        save_params=True,
    )
    return model.linear_predictor(ds["params"].values[0, -1])[0]


@pytest.mark.parametrize("parametrization", ["uv", "uu-vv"])
def test_gradient_flow_limit_of_matches_gd_as_the_step_halves(small_problem, parametrization):
    """GD from the constant init, run to convergence (t = 3000: train loss ~1e-10),
    ends O(eta) from the flow's limit: the gap halves with eta (measured ratios 1.97 and
    1.94 for uv), and the limit is the one at alpha / 2 for uv (alpha for uu-vv), not the
    other one."""
    model = DiagonalLinearNet(d=30, parametrization=parametrization, alpha=0.1)
    limit = gradient_flow_limit_of(model, small_problem.X, small_problem.y)
    other = gradient_flow_limit(
        small_problem.X, small_problem.y, 0.1 if parametrization == "uv" else 0.05
    )
    eta = 0.02 if parametrization == "uv" else 0.005  # uu-vv: a 4x stiffer flow (beta = u^2)
    gaps = [
        np.linalg.norm(_gd_end(model, small_problem, e, 3000.0) - limit) for e in (eta, eta / 2)
    ]
    assert 1.7 < gaps[0] / gaps[1] < 2.3, gaps
    assert gaps[1] < 2e-3 * np.linalg.norm(limit)
    assert np.linalg.norm(other - limit) > 50 * gaps[0]


def test_gradient_flow_limit_params_keep_the_flows_invariants():
    beta = np.array([-2.0, -1e-3, 0.0, 0.4, 3.0])
    uv = DiagonalLinearNet(d=5, parametrization="uv", alpha=0.3)
    w = gradient_flow_limit_params(uv, beta)
    u, v = w[:5], w[5:]
    np.testing.assert_allclose(u * u - v * v, 0.09, rtol=1e-12)
    np.testing.assert_allclose(u * v, beta, rtol=1e-12, atol=1e-15)
    assert np.all(u > 0)  # u starts at alpha > 0 and never crosses 0 (u^2 >= alpha^2)
    np.testing.assert_allclose(uv.linear_predictor(w)[0], beta, rtol=1e-12, atol=1e-15)
    uu = DiagonalLinearNet(d=5, parametrization="uu-vv", alpha=0.3)
    w = gradient_flow_limit_params(uu, beta)
    u, v = w[:5], w[5:]
    np.testing.assert_allclose(u * v, 0.09, rtol=1e-12)
    np.testing.assert_allclose(u * u - v * v, beta, rtol=1e-12, atol=1e-15)
    # the init itself is the point of beta = 0
    np.testing.assert_allclose(gradient_flow_limit_params(uv, np.zeros(5)), uv.init([None])[0])


@pytest.mark.parametrize(
    "model",
    [
        DiagonalLinearNet(d=4, parametrization="ww"),
        DiagonalLinearNet(d=4, init_scheme="gaussian"),
        DiagonalLinearNet(d=4, alpha=0.0),
    ],
)
def test_gradient_flow_limit_of_refuses_models_without_one(model):
    assert not has_gradient_flow_limit(model)
    X, y = np.eye(2, 4), np.ones(2)
    with pytest.raises(ValueError, match="init_scheme"):
        gradient_flow_limit_of(model, X, y)
    with pytest.raises(ValueError, match="gradient_flow_limit_of"):
        gradient_flow_limit_params(model, np.zeros(4))


def test_predictor_summaries_count_l0_above_the_solver_floor(small_problem):
    beta = np.zeros(30)
    beta[:3] = [1.0, -0.5, 0.25]
    beta[3:6] = 1e-14  # an LP's rounding on coordinates that are 0
    beta[6] = 1e-6  # a real small coordinate (above SOLVER_FLOOR * max |beta| = 1e-9)
    out = predictor_summaries(beta, small_problem, 1e-50, 1e-5)
    assert out["l0_norm"] == 4 and out["l0_norm_loose"] == 3
    assert out["l1_norm"] == pytest.approx(1.75 + 3e-14 + 1e-6)
    X, y = small_problem.X_test, small_problem.y_test
    assert out["test_loss"] == pytest.approx(np.sum((X @ beta - y) ** 2) / (2 * len(y)))
    assert out["train_loss"] == pytest.approx(
        np.sum((small_problem.X @ beta - small_problem.y) ** 2) / 40
    )
    assert SOLVER_FLOOR == 1e-9


# ---------------------------------------------------------------- the loss slice


def _slice_gf_only(eta: float, time: float):
    """The loss-slice kind with its GF run only, at step ``eta`` up to ``time``."""
    config = copy.deepcopy(load_config("paper_dln_loss_slice"))
    gf = f"GF (GD eta={eta})"
    config.update(
        n_seeds=1,
        runs=[{"name": gf, "schedule": eta, "batch_size": "full"}],
        sde=[],
        claims=[],
        published=[],
    )
    config["slice"].update(gf_run=gf, points=5)
    experiment = EXPERIMENTS.make("paper_dln_loss_slice")
    return experiment, experiment.run(experiment.prepare(config, n_steps=round(time / eta)))


def test_slice_closed_form_gf_point_agrees_with_the_gf_run_as_the_step_halves():
    """The closed-form limit beside the slice's GF run converged (t = 3000): their
    distance is the O(eta) of GD, halved with eta; the closed form is where the run
    ends on the plane, up to that gap."""
    runs = [_slice_gf_only(eta, 3000.0) for eta in (0.04, 0.02)]
    gaps = [float(ds["gf_limit_distance"]) for _, ds in runs]
    assert 1.7 < gaps[0] / gaps[1] < 2.3, gaps
    assert gaps[1] < 1e-3
    experiment, ds = runs[1]
    points = json.loads(ds.attrs["plane_points"])
    np.testing.assert_allclose(points["gf_limit"], points["gf_solution"], atol=5e-3)
    assert float(ds["gf_limit_off_plane"]) < 5e-3
    # the closed form's test loss in the table, and the distance row
    table = gallery_table(ds)
    limit_test = float(ds["theory_test_loss"].sel(dataset="paper", theory="gf_limit"))
    run_test = float(ds["test_loss"].isel(run=0, seed=0))
    assert limit_test == pytest.approx(run_test, rel=1e-2)  # measured 0.6 % at the 4e-4 gap
    assert f"| theory: GF limit at alpha = 0.1 | test_loss | {limit_test:.4g} | - | |" in table
    assert "| theory: GF limit against the end of GF (GD eta=0.02) | l2 distance of beta |" in table
    # drawn: the marker on both contour panels, the reference on the test-loss panel
    fig = experiment.plot(ds)
    for ax in fig.axes[:2]:
        (marker,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("theory: GF limit")]
        np.testing.assert_allclose(marker.get_xydata()[0], points["gf_limit"])
    curves = next(ax for ax in fig.axes if ax.get_title().startswith("test loss (median"))
    (line,) = [ln for ln in curves.get_lines() if ln.get_label().startswith("theory: GF limit")]
    np.testing.assert_allclose(line.get_ydata(), [limit_test, limit_test])
    plt.close(fig)


# ---------------------------------------------------------------- drawing and table rows


def test_draw_references_keeps_a_log_axis_on_the_curves():
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.plot([0, 10], [1e-3, 1e-1])
    low = ax.get_ylim()[0]
    lines = [
        ReferenceLine("theory: near", 5e-2, "k"),
        ReferenceLine("theory: exact recovery", 1e-31, "r"),
        ReferenceLine("theory: above", 10.0, "b", until=4.0),
    ]
    handles = draw_references(ax, lines, log=True)
    assert [h.get_label() for h in handles] == [
        "theory: near",
        "theory: exact recovery (below the axis)",
        "theory: above",
    ]
    assert ax.get_ylim()[0] == pytest.approx(low)  # 1e-31 did not stretch the axis
    assert ax.get_ylim()[1] > 10.0  # 10 did, with a margin
    np.testing.assert_array_equal(handles[2].get_xdata(), [0.0, 4.0])  # over [0, until]
    np.testing.assert_array_equal(handles[1].get_ydata(), [1e-31, 1e-31])
    plt.close(fig)


def test_theory_row_names_theory_and_refuses_a_table_separator():
    assert theory_row("theory: x", "test_loss", 1) == {
        "name": "theory: x",
        "quantity": "test_loss",
        "value": 1.0,
    }
    with pytest.raises(ValueError, match="must start with 'theory'"):
        theory_row("GF limit", "test_loss", 1.0)
    with pytest.raises(ValueError, match="separator"):
        theory_row("theory: x", "||beta||", 1.0)
    assert THEORY_ROWS == "theory_rows"
