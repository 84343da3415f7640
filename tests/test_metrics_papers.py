"""The papers' measurements (sgdsde.metrics: diagonal, jacobian, features, collapse,
walk, curvature and the l2 norm without underflow), each on hand-built cases with known
answers, as plain functions and as recorded metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sgdsde.data import RegressionData, sparse_regression
from sgdsde.dynamics import simulate_sgd
from sgdsde.metrics import METRICS, ParamNorm, l1_norm, l2_norm
from sgdsde.metrics.collapse import (
    identical_pairs,
    independent_fraction,
    neuron_vectors,
    pair_distances,
    vanishing_mask,
)
from sgdsde.metrics.curvature import hessian_trace, hessian_vector_product, top_hessian_eigenvalue
from sgdsde.metrics.diagonal import balancedness, distance_to_beta_star
from sgdsde.metrics.features import (
    active_fraction,
    dead_unit_fraction,
    feature_sparsity,
    relu_pattern_flips,
)
from sgdsde.metrics.jacobian import column_norms, effective_rank, jacobian_rank
from sgdsde.metrics.walk import (
    cosine,
    distance_from_init,
    gradient_cosine,
    segment_losses,
    update_cosine,
    valley_floor,
)
from sgdsde.models import DeepReLU, DiagonalLinearNet, GeluPair, LinearRegression, TwoLayerReLU
from sgdsde.run.recording import Recorder


def _data(X, y, beta_star=None):
    X = np.asarray(X, dtype=float)
    return RegressionData(X, np.asarray(y, float), X, np.asarray(y, float), beta_star=beta_star)


# ---------------------------------------------------------------- norms (issue 8 Sec. 7)
def test_l2_norm_without_underflow_or_overflow():
    x = np.full((2, 4), 1e-164)
    x[1] = [3e-200, 4e-200, 0.0, 0.0]
    np.testing.assert_allclose(l2_norm(x), [2e-164, 5e-200], rtol=1e-14)
    np.testing.assert_allclose(l1_norm(x[:1]), [4e-164])
    assert ParamNorm()(x, None, None)[0] == pytest.approx(2e-164, rel=1e-14)
    big = np.array([[3e200, 4e200], [0.0, 0.0], [np.nan, 1.0], [np.inf, 1.0], [3.0, 4.0]])
    out = l2_norm(big)
    np.testing.assert_allclose(out[[0, 1, 4]], [5e200, 0.0, 5.0], rtol=1e-14)
    assert np.isnan(out[2]) and out[3] == np.inf
    assert l2_norm(np.array([3.0, 4.0])) == 5.0


# ------------------------------------------------------------------------- diagonal net
def test_beta_star_distance_and_balancedness_by_hand():
    model = DiagonalLinearNet(d=2, parametrization="uv")
    theta = np.array([[1.0, 2.0, 3.0, -1.0]])  # u = (1, 2), v = (3, -1): beta = (3, -2)
    data = _data(np.eye(2), [0.0, 0.0], beta_star=np.array([3.0, 2.0]))
    np.testing.assert_allclose(distance_to_beta_star(model.linear_predictor(theta), [3, 2]), [4])
    np.testing.assert_allclose(balancedness(theta[:, :2], theta[:, 2:]), [math.sqrt(5)])
    for name, want in (("beta_star_distance", 4.0), ("balancedness", math.sqrt(5))):
        metric = METRICS.make(name)
        metric.check(model, data)
        np.testing.assert_allclose(metric.evaluate(theta, model, data), [want])


def test_diagonal_metrics_refuse_what_they_cannot_measure():
    data = _data(np.eye(2), [0.0, 0.0])
    with pytest.raises(ValueError, match="beta_star"):
        METRICS.make("beta_star_distance").check(DiagonalLinearNet(d=2), data)
    with pytest.raises(ValueError, match="blocks u and v"):
        METRICS.make("balancedness").check(DiagonalLinearNet(d=2, parametrization="ww"), data)
    with pytest.raises(ValueError, match="beta_star must be a vector of length 2"):
        distance_to_beta_star(np.zeros((1, 2)), np.zeros(3))


# ----------------------------------------------------------------------------- Jacobian
def test_jacobian_rank_effective_rank_and_column_norms_by_hand():
    phi = np.stack([np.diag([3.0, 2.0, 1e-5]), np.diag([1.0, 1.0, 0.0]), np.zeros((3, 3))])
    np.testing.assert_array_equal(jacobian_rank(phi, 1e-4), [2, 2, 0])
    np.testing.assert_array_equal(jacobian_rank(phi, 1e-6), [3, 2, 0])
    p = np.array([2.0, 1.0]) / 3.0  # singular values (2, 1)
    er = effective_rank(np.stack([np.diag([1.0, 1.0, 0.0]), np.diag([2.0, 1.0, 0.0])]))
    np.testing.assert_allclose(er, [2.0, np.exp(-(p * np.log(p)).sum())])
    assert np.isnan(effective_rank(np.zeros((1, 2, 2))))[0]
    np.testing.assert_allclose(column_norms(np.array([[[3.0, 0.0], [4.0, 1.0]]])), [[5.0, 1.0]])


def test_jacobian_metrics_of_a_linear_model_read_its_inputs():
    # f = theta . x: phi = X, rank 2 for X with a repeated row; column norms of X
    X = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1e-6]])
    model, data = LinearRegression(d=3), _data(X, np.zeros(4))
    theta = np.ones((2, 3))
    assert METRICS.make("jacobian_rank").evaluate(theta, model, data).tolist() == [2, 2]
    assert METRICS.make("jacobian_rank", threshold=1e-8).evaluate(theta, model, data)[0] == 3
    assert METRICS.make("jacobian_rank", max_examples=1).evaluate(theta, model, data)[0] == 1
    np.testing.assert_allclose(
        METRICS.make("jacobian_column_norms").evaluate(theta, model, data)[0],
        [math.sqrt(2), 2.0, 1e-6],
    )
    with pytest.raises(ValueError, match="inputs must be one of"):
        METRICS.make("effective_rank", inputs="validation")
    with pytest.raises(ValueError, match="threshold must be a number in"):
        METRICS.make("jacobian_rank", threshold=1.5)


# ----------------------------------------------------------------------------- features
#: 4 examples x 4 units: unit 1 = 2 x unit 0 (a duplicate), unit 2 never active,
#: unit 3 active on examples 1 and 2 only.
PHI = np.array(
    [
        [1.0, 2.0, 0.0, 0.0],
        [2.0, 4.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 3.0],
        [1.0, 2.0, 0.0, 0.0],
    ]
)


def test_feature_sparsity_drops_dead_and_duplicate_units():
    # kept: unit 0 (3 positive) and unit 3 (2 positive), |corr(0, 3)| < 0.99; over 4 x 4
    corr03 = abs(np.corrcoef(PHI[:, 0], PHI[:, 3])[0, 1])
    assert corr03 < 0.9
    np.testing.assert_allclose(feature_sparsity(PHI, 0.99, normalize_rows=False), [5 / 16])
    # a threshold below |corr(0, 3)| deletes unit 3 as well
    np.testing.assert_allclose(feature_sparsity(PHI, corr03 - 1e-3, False), [3 / 16])
    np.testing.assert_allclose(active_fraction(PHI), [8 / 16])
    np.testing.assert_allclose(dead_unit_fraction(PHI), [1 / 4])
    # row normalisation = dividing each example by its norm first
    rows = PHI / np.linalg.norm(PHI, axis=1, keepdims=True)
    np.testing.assert_allclose(feature_sparsity(PHI, 0.5, True), feature_sparsity(rows, 0.5, False))
    flipped = PHI.copy()
    flipped[0, 2], flipped[2, 3] = 1.0, 0.0
    np.testing.assert_array_equal(relu_pattern_flips(flipped, PHI), [2])
    with pytest.raises(ValueError, match="threshold must be"):
        feature_sparsity(PHI, 1.5)


def test_feature_metrics_per_layer_on_relu_models():
    # two-layer net with W = identity rows on R^2: features are relu(x) unit by unit
    model = TwoLayerReLU(d=2, m=4)
    W = np.array([[1.0, 0.0], [2.0, 0.0], [-1.0, -1.0], [0.0, 1.0]])
    theta = np.concatenate([W.ravel(), np.ones(4)])[None]
    X = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    data = _data(X, np.zeros(4))
    np.testing.assert_allclose(model.layer_features(theta, X)[0][0], PHI)
    sparsity = METRICS.make("feature_sparsity", normalize_rows=False)
    np.testing.assert_allclose(sparsity.evaluate(theta, model, data), [[5 / 16]])
    np.testing.assert_allclose(METRICS.make("dead_units").evaluate(theta, model, data), [[0.25]])
    np.testing.assert_allclose(
        METRICS.make("active_fraction").evaluate(theta, model, data), [[8 / 16]]
    )
    with pytest.raises(ValueError, match="layer_features"):
        sparsity.check(LinearRegression(d=2), data)


def test_deep_relu_layer_features_rebuild_its_predictions():
    model = DeepReLU(d=3, widths=(4, 5), bias=True)
    rng = np.random.default_rng(1)
    theta = rng.standard_normal((2, model.n_params))
    X = rng.standard_normal((6, 3))
    h1, h2 = model.layer_features(theta, X)
    assert h1.shape == (2, 6, 4) and h2.shape == (2, 6, 5)
    blocks = model.param_blocks()
    W3, b3 = theta[:, blocks["W3"]], theta[:, blocks["b3"]]
    np.testing.assert_allclose(
        np.einsum("tnu,tu->tn", h2, W3) + b3, model.predict(theta, X), rtol=1e-12
    )
    values = METRICS.make("active_fraction").evaluate(theta, model, _data(X, np.zeros(6)))
    np.testing.assert_allclose(values, np.stack([(h1 > 0).mean((1, 2)), (h2 > 0).mean((1, 2))], 1))


# ----------------------------------------------------------------------------- collapse
def test_collapse_metrics_by_hand():
    # 4 neurons (w_i, a_i) on R^2: n1 ~ n0 (identical), n2 orthogonal to n0, n3 vanishing
    W = np.array([[1.0, 0.0], [1.01, 0.0], [-1.0, 1.0], [0.01, 0.0]])
    a = np.array([1.0, 1.01, 1.0, 0.01])
    model = TwoLayerReLU(d=2, m=4)
    theta = np.concatenate([W.ravel(), a])[None]
    (vectors,) = neuron_vectors(model, theta)
    np.testing.assert_allclose(vectors[0], np.column_stack([W, a]))
    np.testing.assert_array_equal(vanishing_mask(vectors)[0], [False, False, False, True])
    dist = pair_distances(vectors)[0]
    # |n0 - n2|^2 = 5, |n0|^2 + |n2|^2 = 5
    assert dist[0, 2] == pytest.approx(2.0) and dist[0, 1] == pytest.approx(2e-4 / 2.0201)
    np.testing.assert_array_equal(identical_pairs(vectors), [1])
    np.testing.assert_allclose(independent_fraction(vectors), [0.5])  # groups {0, 1}, {2}
    data = _data(np.eye(2), [0.0, 0.0])
    for name, want in (
        ("vanishing_neurons", 0.25),
        ("identical_pairs", 1),
        ("independent_neurons", 0.5),
    ):
        np.testing.assert_allclose(METRICS.make(name).evaluate(theta, model, data), [[want]])
    # a looser vanishing threshold keeps n3: it is a third group
    loose = METRICS.make("independent_neurons", vanishing=0.001)
    np.testing.assert_allclose(loose.evaluate(theta, model, data), [[0.75]])


def test_neuron_vectors_of_deep_relu_and_gelu_pair():
    model = DeepReLU(d=2, widths=(3, 2), bias=True)
    theta = np.arange(model.n_params, dtype=float)[None]
    v1, v2 = neuron_vectors(model, theta)
    blocks = model.param_blocks()
    W1 = theta[0, blocks["W1"]].reshape(3, 2)
    W2 = theta[0, blocks["W2"]].reshape(2, 3)
    np.testing.assert_array_equal(v1[0, 1], [*W1[1], theta[0, blocks["b1"]][1], *W2[:, 1]])
    assert v2.shape == (1, 2, 3 + 1 + 1)
    pair = neuron_vectors(GeluPair(), np.array([[1.0, 2.0, 3.0, 4.0]]))[0]
    np.testing.assert_array_equal(pair[0], [[1.0, 3.0], [2.0, 4.0]])
    with pytest.raises(ValueError, match="no neuron structure"):
        METRICS.make("identical_pairs").check(LinearRegression(d=2), None)


# --------------------------------------------------------------------------------- walk
QUADRATIC = (LinearRegression(d=1), _data([[1.0]], [0.0]))  # L(theta) = theta^2 / 2


def test_segment_floor_on_a_quadratic_valley():
    model, data = QUADRATIC
    alphas = np.linspace(0, 1, 11)
    # 1 -> -1 crosses the floor at alpha 0.5; 1 -> 0.5 stays on one wall
    losses = segment_losses(
        model, np.array([[1.0], [1.0]]), np.array([[-1.0], [0.5]]), data.X, data.y, alphas
    )
    np.testing.assert_allclose(losses[0], 0.5 * (1 - 2 * alphas) ** 2)
    floor = valley_floor(losses, alphas)
    np.testing.assert_allclose(floor.alpha, [0.5, 1.0])
    np.testing.assert_allclose(floor.height, [0.0, 0.125], atol=1e-15)
    np.testing.assert_allclose(floor.height_above, [0.5, 0.375])
    np.testing.assert_array_equal(floor.interior, [True, False])
    with pytest.raises(ValueError, match="alphas must run from 0 to 1"):
        valley_floor(losses, np.linspace(0, 0.9, 11))


def test_cosines_and_distance_from_init():
    np.testing.assert_allclose(
        cosine(np.array([[1.0, 0], [1, 1]]), np.array([[0, 2.0], [2, 2]])), [0.0, 1.0]
    )
    assert np.isnan(cosine(np.zeros(2), np.ones(2)))
    np.testing.assert_allclose(
        cosine(np.array([1e-200, 0]), np.array([1e-200, 1e-200])), 1 / math.sqrt(2)
    )
    np.testing.assert_allclose(update_cosine(np.array([[1.0]]), [[-0.5]], [[0.25]]), [-1.0])
    model, data = QUADRATIC  # grad L = theta
    np.testing.assert_allclose(gradient_cosine(model, [[1.0]], [[-2.0]], data.X, data.y), [-1.0])
    np.testing.assert_allclose(distance_from_init([[3.0, 4.0]], [[0.0, 0.0]]), [5.0])


def test_recorder_gives_iterate_metrics_their_consecutive_steps():
    """GD-like iterates theta_k = r^k on L = theta^2 / 2 (r = -0.5 bounces across the
    valley, r = 0.5 descends one wall): values at save steps 0, 3, 5 by hand."""
    model, data = QUADRATIC
    ratios = np.array([-0.5, 0.5])
    metrics = [
        "update_cosine",
        "init_distance",
        "interior_minimum",
        {"name": "floor_height", "n_points": 4},
        "height_above_floor",
        "relu_flips",
    ]
    with pytest.raises(ValueError, match="layer_features"):
        Recorder(
            model,
            data,
            [0, 3, 5],
            2,
            metrics=metrics,
            l0_threshold=0.0,
            max_loss=1e10,
            save_params=False,
        )
    rec = Recorder(
        model,
        data,
        [0, 3, 5],
        2,
        metrics=metrics[:-1],
        l0_threshold=0.0,
        max_loss=1e10,
        save_params=False,
    )
    np.testing.assert_array_equal(rec.steps, [0, 1, 2, 3, 4, 5])
    diverged = np.full(2, -1)
    for k in rec.steps:
        rec.observe(int(k), (ratios**k)[:, None].copy(), diverged)
    out = {name: values for name, (dims, values) in rec.variables().items()}
    assert np.isnan(out["update_cosine"][:, 0]).all()  # no earlier steps at s = 0
    np.testing.assert_allclose(out["update_cosine"][:, 1:], [[-1, -1], [1, 1]])
    np.testing.assert_allclose(out["init_distance"], np.abs(ratios[:, None] ** [0, 3, 5] - 1))
    np.testing.assert_array_equal(out["interior_minimum"], [[-1, 1, 1], [-1, 0, 0]])
    # segment r^{s-1} -> r^s: the floor is 0 at alpha = 2/3 (r = -1/2) or the end (r = 1/2)
    prev = ratios[:, None] ** np.array([2, 4])
    np.testing.assert_allclose(out["floor_height"][0, 1:], [0, 0], atol=1e-30)
    np.testing.assert_allclose(out["floor_height"][1, 1:], 0.5 * (prev[1] / 2) ** 2)
    np.testing.assert_allclose(out["height_above_floor"][1, 1:], 0.5 * prev[1] ** 2 * 0.75)


def test_recorded_walk_metrics_match_saved_parameters_of_an_sgd_run():
    data = sparse_regression(n=10, d=8, k=2, seed=0)
    model = DiagonalLinearNet(d=8, alpha=0.3)
    ds = simulate_sgd(
        model,
        data,
        0.05,
        n_steps=30,
        n_traj=2,
        seed=1,
        save_steps=np.arange(31),
        save_params=True,
        metrics=["init_distance", "update_cosine"],
    )
    params = ds["params"].values
    np.testing.assert_allclose(
        ds["init_distance"].values, np.linalg.norm(params - params[:, :1], axis=-1), rtol=1e-12
    )
    steps = np.diff(params, axis=1)
    want = np.einsum("tsp,tsp->ts", steps[:, 1:], steps[:, :-1]) / (
        np.linalg.norm(steps[:, 1:], axis=-1) * np.linalg.norm(steps[:, :-1], axis=-1)
    )
    np.testing.assert_allclose(ds["update_cosine"].values[:, 2:], want, rtol=1e-10)
    # single-sample SGD: consecutive mini-batch gradients are far from aligned
    assert np.nanmean(ds["update_cosine"].values) < 0.9


def test_relu_flips_recorded_against_the_initialization():
    model = TwoLayerReLU(d=2, m=4)
    W = np.array([[1.0, 0.0], [2.0, 0.0], [-1.0, -1.0], [0.0, 1.0]])
    theta0 = np.concatenate([W.ravel(), np.ones(4)])[None]
    X = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    data = _data(X, np.zeros(4))
    theta1 = theta0.copy()
    theta1[0, 4:6] = [1.0, 1.0]  # unit 2 becomes w = (1, 1): active on all 4 examples
    rec = Recorder(
        model,
        data,
        [0, 1],
        1,
        metrics=["relu_flips"],
        l0_threshold=0.0,
        max_loss=1e10,
        save_params=False,
    )
    diverged = np.full(1, -1)
    rec.observe(0, theta0, diverged)
    rec.observe(1, theta1, diverged)
    np.testing.assert_array_equal(rec.variables()["relu_flips"][1], [[[0], [4]]])


# ---------------------------------------------------------------------------- curvature
def test_hessian_of_a_linear_model_by_hand():
    # L = |X theta - y|^2 / (2n) with X = diag(2, 1), n = 2: H = diag(2, 0.5)
    model, data = LinearRegression(d=2), _data(np.diag([2.0, 1.0]), [1.0, 0.0])
    theta = np.zeros((1, 2))
    np.testing.assert_allclose(top_hessian_eigenvalue(model, theta, data.X, data.y), [2.0])
    np.testing.assert_allclose(hessian_trace(model, theta, data.X, data.y), [2.5])
    # a diagonal Hessian: Hutchinson with Rademacher vectors is exact
    np.testing.assert_allclose(
        hessian_trace(model, theta, data.X, data.y, method="hutchinson", n_samples=3), [2.5]
    )
    hvp = hessian_vector_product(model, theta, data.X, data.y)
    np.testing.assert_allclose(hvp(np.array([[1.0, 2.0]])), [[2.0, 1.0]])
    with pytest.raises(ValueError, match="method must be one of"):
        top_hessian_eigenvalue(model, theta, data.X, data.y, method="power")


def test_lanczos_matches_the_closed_form_and_autograd_hessians():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((12, 3)), rng.standard_normal(12)
    for model in (TwoLayerReLU(d=3, m=5, bias=True), DeepReLU(d=3, widths=(8, 8))):
        theta = 0.7 * rng.standard_normal((2, model.n_params))
        exact = np.linalg.eigvalsh(model.hessian(theta, X, y))[:, -1]
        lanczos = top_hessian_eigenvalue(model, theta, X, y, method="lanczos", seed=0)
        np.testing.assert_allclose(lanczos, exact, rtol=1e-8)
    metric = METRICS.make("top_hessian_eigenvalue", method="lanczos")
    np.testing.assert_allclose(metric.evaluate(theta, model, _data(X, y)), exact, rtol=1e-8)


def test_hutchinson_trace_within_its_standard_deviation():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((20, 6)), rng.standard_normal(20)
    model = TwoLayerReLU(d=6, m=4, bias=True)
    theta = rng.standard_normal((3, model.n_params))
    H = model.hessian(theta, X, y)
    exact = np.trace(H, axis1=1, axis2=2)
    n_samples = 200
    # Var(v^T H v) = 2 (||H||_F^2 - sum_j H_jj^2) for Rademacher v
    var = 2 * ((H**2).sum((1, 2)) - (np.diagonal(H, axis1=1, axis2=2) ** 2).sum(1))
    est = hessian_trace(model, theta, X, y, method="hutchinson", n_samples=n_samples, seed=5)
    assert np.all(np.abs(est - exact) < 4 * np.sqrt(var / n_samples))
    np.testing.assert_allclose(hessian_trace(model, theta, X, y, method="exact"), exact)
    again = METRICS.make("hessian_trace", method="hutchinson", n_samples=n_samples, seed=5)
    np.testing.assert_array_equal(again.evaluate(theta, model, _data(X, y)), est)


def test_segment_metrics_share_one_segment_per_step(monkeypatch):
    """floor_height, height_above_floor and interior_minimum recorded together evaluate
    the loss on each step's segment once (not once per metric), with the values each
    gives when recorded alone."""
    import sgdsde.metrics.walk as walk

    data = sparse_regression(n=10, d=8, k=2, seed=0)
    model = DiagonalLinearNet(d=8, alpha=0.3)
    names = ["floor_height", "height_above_floor", "interior_minimum"]
    kw = dict(n_steps=12, n_traj=2, seed=1, save_steps=np.arange(0, 13, 3))
    calls = []
    original = walk.segment_losses
    monkeypatch.setattr(
        walk, "segment_losses", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    together = simulate_sgd(model, data, 0.05, metrics=names, **kw)
    assert len(calls) == 4  # save steps 3, 6, 9, 12 (step 0 has no previous iterate)
    for name in names:
        alone = simulate_sgd(model, data, 0.05, metrics=[name], **kw)
        np.testing.assert_array_equal(together[name].values, alone[name].values)


def test_feature_metrics_share_the_features_of_a_step(monkeypatch):
    """feature_sparsity, active_fraction and dead_units recorded together compute the
    layer features once per save step, with the values each gives alone."""
    import sgdsde.metrics.features as features
    from sgdsde.data import teacher_student_sphere
    from sgdsde.models import TwoLayerReLU

    data = teacher_student_sphere(n=12, d=3, seed=0)
    model = TwoLayerReLU(d=3, m=6)
    names = ["feature_sparsity", "active_fraction", "dead_units"]
    kw = dict(n_steps=6, n_traj=2, seed=1, save_steps=[0, 3, 6])
    calls = []
    original = features.features_per_layer
    monkeypatch.setattr(features, "features_per_layer", lambda *a: calls.append(1) or original(*a))
    together = simulate_sgd(model, data, 0.05, metrics=names, **kw)
    assert len(calls) == 3  # one per save step (0, 3, 6), not one per metric (9)
    for name in names:
        alone = simulate_sgd(model, data, 0.05, metrics=[name], **kw)
        np.testing.assert_array_equal(together[name].values, alone[name].values)
