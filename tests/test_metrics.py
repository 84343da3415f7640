"""Metric objects (``sgdsde.metrics``): built-in values on hand-built cases, the l0
threshold (strict >), user metrics and their validation, TimeAverage / FirstPassage
step arithmetic, and the METRICS registry round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sgdsde.data import RegressionData
from sgdsde.metrics import (
    METRICS,
    Beta,
    FirstPassage,
    L0Norm,
    L1Norm,
    Metric,
    ParamNorm,
    Params,
    TestLoss,
    TimeAverage,
    TrainLoss,
    as_metric,
    as_recordable,
)
from sgdsde.metrics.temporal import multiples_in
from sgdsde.models import DiagonalLinearNet, LinearRegression, TwoLayerReLU


@pytest.fixture(scope="module")
def tiny():
    """f(x) = theta . x on R^2, two training and one test example (values by hand)."""
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([1.0, 1.0])
    data = RegressionData(X, y, np.array([[1.0, 1.0]]), np.array([0.0]))
    return LinearRegression(d=2), data


def test_losses_by_hand(tiny):
    model, data = tiny
    theta = np.array([[1.0, 1.0], [0.0, 0.0]])
    # trajectory 0: predictions (1, 2), r = (0, 1) -> 1/(2*2) (0 + 1) = 0.25; test r = 2 -> 2
    # trajectory 1: r = (-1, -1) -> 0.5; test r = 0 -> 0
    np.testing.assert_array_equal(TrainLoss().evaluate(theta, model, data), [0.25, 0.5])
    np.testing.assert_array_equal(TestLoss().evaluate(theta, model, data), [2.0, 0.0])


def test_loss_without_a_linear_predictor_uses_the_model():
    rng = np.random.default_rng(0)
    model = TwoLayerReLU(d=2, m=3)
    X, y = rng.standard_normal((5, 2)), rng.standard_normal(5)
    data = RegressionData(X, y, X[:2], y[:2])
    theta = rng.standard_normal((4, model.n_params))
    np.testing.assert_array_equal(TrainLoss().evaluate(theta, model, data), model.loss(theta, X, y))
    r = model.predict(theta, X[:2]) - y[:2]
    np.testing.assert_allclose(TestLoss().evaluate(theta, model, data), 0.5 * (r * r).mean(1))
    # l0/l1 of theta, and the attrs say so
    np.testing.assert_array_equal(L1Norm().evaluate(theta, model, data), np.abs(theta).sum(1))
    assert "theta (parameters)" in L0Norm().attrs(model)["long_name"]
    with pytest.raises(ValueError, match="needs a model linear in x"):
        Beta().check(model, data)


def test_norms_of_beta_by_hand():
    """Diagonal network beta = u * v: theta = (u, v)."""
    model = DiagonalLinearNet(d=3, parametrization="uv")
    theta = np.array([[1.0, -2.0, 0.5, 3.0, 1.0, 0.0]])  # beta = (3, -2, 0)
    data = RegressionData(np.eye(3), np.zeros(3), np.eye(3), np.zeros(3))
    assert L0Norm().evaluate(theta, model, data).tolist() == [2]
    assert L1Norm().evaluate(theta, model, data).tolist() == [5.0]
    np.testing.assert_allclose(ParamNorm().evaluate(theta, model, data), [np.sqrt(15.25)])
    np.testing.assert_array_equal(Params().evaluate(theta, model, data), theta)
    np.testing.assert_array_equal(Beta().evaluate(theta, model, data), [[3.0, -2.0, 0.0]])
    assert "beta (linear predictor)" in L1Norm().attrs(model)["long_name"]


@pytest.mark.parametrize("threshold", [0.0, 1e-50, 1e-3, 0.25])
def test_l0_counts_strictly_above_the_threshold(tiny, threshold):
    """Values exactly at the threshold are not counted (|beta_i| > threshold, strict)."""
    model = LinearRegression(d=6)
    t = threshold
    theta = np.array([[t, -t, 2 * t + 1e-3, -(2 * t + 1e-3), 0.0, t]])
    data = RegressionData(np.eye(6), np.zeros(6), np.eye(6), np.zeros(6))
    count = L0Norm(threshold).evaluate(theta, model, data)
    assert count.dtype == np.int64 and count.tolist() == [2]


def test_l0_threshold_validation():
    for bad in (-1.0, float("nan"), float("inf"), "1e-3", True):
        with pytest.raises(ValueError, match="l0_threshold"):
            L0Norm(bad)


def test_user_metric_shapes_dtypes_and_names(tiny):
    model, data = tiny
    theta = np.array([[1.0, 1.0], [0.0, 0.0], [2.0, -1.0]])

    def xtr(theta, model, data):
        r = model.residuals(theta, data.X, data.y)
        return r @ data.X / data.n

    vec = Metric("xtr", xtr, dims=("feature",))
    # X^T r / n by hand for trajectory 0: r = (0, 1) -> (0, 2) / 2 = (0, 1)
    np.testing.assert_allclose(vec.evaluate(theta, model, data)[0], [0.0, 1.0])
    assert (
        vec.long_name
        == "xtr = test_user_metric_shapes_dtypes_and_names.<locals>.xtr(theta, model, data)"
    )
    with pytest.raises(ValueError, match=r"returned shape \(3, 2\) for 3 trajectories"):
        Metric("xtr", xtr).evaluate(theta, model, data)
    with pytest.raises(ValueError, match="returned shape"):
        Metric("s", lambda th, m, d: th[:, 0], dims=("x",)).evaluate(theta, model, data)
    with pytest.raises(ValueError, match="is a count"):
        Metric("c", lambda th, m, d: th[:, 0], dtype=np.int64).evaluate(theta, model, data)
    counts = Metric("c", lambda th, m, d: (th > 0).sum(1), dtype=np.int64)
    assert counts.evaluate(theta, model, data).tolist() == [2, 0, 1]
    for bad, match in (
        (("train_loss", xtr), "built-in metric"),
        (("2x", xtr), "identifier"),
        (("f", 3), "callable"),
    ):
        with pytest.raises(ValueError, match=match):
            Metric(*bad)
    with pytest.raises(ValueError, match="dims must be"):
        Metric("f", xtr, dims="feature")
    with pytest.raises(ValueError, match="dtype must be"):
        Metric("f", xtr, dtype=bool)
    with pytest.raises(ValueError, match="has no config"):
        vec.to_config()


def test_as_recordable(tiny):
    assert as_recordable("beta") == Beta()
    assert as_recordable({"name": "l0_norm", "threshold": 0.5}) == L0Norm(0.5)
    m = as_recordable(("sq", lambda th, model, data: (th**2).sum(1)))
    assert isinstance(m, Metric) and m.name == "sq"
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        as_recordable("nope")
    with pytest.raises(ValueError, match="a metric must be"):
        as_recordable(3)
    with pytest.raises(ValueError, match="not a function of the state"):
        as_metric(TimeAverage("train_loss", window=4))


#: One instance of every registered class (the round trip below covers them all; a new
#: registered metric fails ``test_registry_round_trip`` until it is added here).
EXAMPLES = {
    "train_loss": TrainLoss(),
    "test_loss": TestLoss(),
    "l0_norm": L0Norm(1e-3),
    "l1_norm": L1Norm(),
    "param_norm": ParamNorm(),
    "params": Params(),
    "beta": Beta(),
    "time_average": TimeAverage(L0Norm(0.1), window=50, every=5, save_as="l0_smooth"),
    "first_passage": FirstPassage("train_loss", level=1e-3, direction="below", every=10),
    # the papers' measurements (tests/test_metrics_papers.py)
    "beta_star_distance": METRICS.make("beta_star_distance"),
    "balancedness": METRICS.make("balancedness"),
    "jacobian_rank": METRICS.make("jacobian_rank", threshold=1e-6, inputs="test"),
    "effective_rank": METRICS.make("effective_rank", max_examples=5),
    "jacobian_column_norms": METRICS.make("jacobian_column_norms"),
    "feature_sparsity": METRICS.make("feature_sparsity", threshold=0.95, normalize_rows=False),
    "active_fraction": METRICS.make("active_fraction", inputs="test"),
    "dead_units": METRICS.make("dead_units"),
    "relu_flips": METRICS.make("relu_flips", max_examples=3),
    "vanishing_neurons": METRICS.make("vanishing_neurons", vanishing=0.2),
    "identical_pairs": METRICS.make("identical_pairs", identical=0.05),
    "independent_neurons": METRICS.make("independent_neurons"),
    "floor_height": METRICS.make("floor_height", n_points=21),
    "height_above_floor": METRICS.make("height_above_floor"),
    "interior_minimum": METRICS.make("interior_minimum"),
    "update_cosine": METRICS.make("update_cosine"),
    "init_distance": METRICS.make("init_distance"),
    "top_hessian_eigenvalue": METRICS.make("top_hessian_eigenvalue", method="lanczos", seed=3),
    "hessian_trace": METRICS.make("hessian_trace", method="hutchinson", n_samples=7, seed=1),
}


def test_registry_round_trip():
    assert set(EXAMPLES) == set(METRICS)
    for key, metric in EXAMPLES.items():
        assert isinstance(metric, METRICS[key])
        cfg = metric.to_config()
        assert cfg["name"] == key
        assert METRICS.from_config(json.loads(json.dumps(cfg))) == metric, key
    assert EXAMPLES["time_average"].to_config() == {
        "name": "time_average",
        "metric": {"name": "l0_norm", "threshold": 0.1},
        "window": 50,
        "every": 5,
        "save_as": "l0_smooth",
    }
    assert METRICS.make("l0_norm", threshold=0.5) == L0Norm(0.5)
    with pytest.raises(ValueError, match="unknown option"):
        METRICS.make("l1_norm", threshold=0.5)


def test_time_average_steps_by_hand():
    """W = 10, e = 3, save steps (0, 5, 30, 31): windows (-9, 0], (-4, 5], (20, 30],
    (21, 31] hold the multiples of 3 {0}, {0, 3}, {21, 24, 27, 30}, {24, 27, 30}."""
    avg = TimeAverage("train_loss", window=10, every=3)
    save = np.array([0, 5, 30, 31])
    assert avg.name == "train_loss_time_average" and avg.dims == () and avg.units == "1"
    assert avg.sample_steps(save).tolist() == [0, 3, 21, 24, 27, 30]
    assert avg.sample_counts(save).tolist() == [1, 2, 4, 3]
    assert avg.windows_containing(24, save) == slice(2, 4)
    assert avg.windows_containing(3, save) == slice(1, 2)
    assert TimeAverage(Params(), window=4).dims == ("param",)
    assert multiples_in(4, np.array([-3, 2, 9]), np.array([1, 12, 13])).tolist() == [0, 4, 8, 12]


def test_first_passage_steps_and_levels():
    below = FirstPassage("train_loss", level=0.5)
    above = FirstPassage(L1Norm(), level=2, direction="above", every=4, save_as="big")
    save = np.array([0, 3, 10])
    assert below.name == "train_loss_first_passage" and above.name == "big"
    assert below.due_steps(save).tolist() == [0, 3, 10]
    assert above.due_steps(save).tolist() == [0, 3, 4, 8, 10]
    assert [above.is_due(k, save) for k in (3, 4, 5, 10)] == [True, True, False, True]
    values = np.array([0.4, 0.5, 0.6, np.nan])
    assert below.reached(values).tolist() == [True, True, False, False]
    assert above.reached(values * 4).tolist() == [False, True, True, False]
    assert below.attrs(None)["not_reached"] == -1 and above.attrs(None)["every"] == 4


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: TimeAverage("train_loss", window=0), "window must be an integer >= 1"),
        (lambda: TimeAverage("train_loss", window=4, every=5), "every = 5 exceeds window"),
        (lambda: TimeAverage("train_loss", window=4.0), "window must be an integer"),
        (lambda: TimeAverage("train_loss", window=4, save_as="l1_norm"), "save_as must be"),
        (lambda: FirstPassage("params", level=1.0), "extra dims"),
        (lambda: FirstPassage("train_loss", level=float("nan")), "level must be a finite"),
        (lambda: FirstPassage("train_loss", level=1.0, direction="up"), "'below' or 'above'"),
        (lambda: FirstPassage("train_loss", level=1.0, every=0), "every must be"),
        (lambda: FirstPassage(FirstPassage("train_loss", 1.0), 1.0), "not a function"),
    ],
)
def test_temporal_validation(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_one_observation_shares_beta_only_for_the_same_array():
    """Inside one recorder step the metrics share beta; another array (or the same
    array after the step) gets its own."""
    from sgdsde.metrics.base import one_observation
    from sgdsde.metrics.builtin import linear_predictor

    model = DiagonalLinearNet(d=3, parametrization="uv")
    theta = np.array([[1.0, -2.0, 0.5, 3.0, 1.0, 0.0]])
    other = theta * 2.0
    with one_observation():
        first = linear_predictor(theta, model)
        assert linear_predictor(theta, model) is first
        np.testing.assert_array_equal(linear_predictor(other, model), [[12.0, -8.0, 0.0]])
    theta[0, 0] = 5.0  # outside an observation nothing is cached
    np.testing.assert_array_equal(linear_predictor(theta, model), [[15.0, -2.0, 0.0]])


def test_l2_norm_keeps_the_plain_sum_bits_for_ordinary_values():
    """Outside the underflow/overflow range the norm is sqrt((x * x).sum()) bit for bit
    (the arithmetic every earlier dataset used)."""
    from sgdsde.metrics import l2_norm

    x = np.random.default_rng(3).normal(size=(7, 401)) * np.array([[1e-3], [1], [1e5]] * 2 + [[7]])
    np.testing.assert_array_equal(l2_norm(x), np.sqrt((x * x).sum(axis=-1)))
