"""paper_collapse_tanh (Chen et al. 2023, Fig. 2): the thresholds against independent
computations, the exact SGD exponent against Monte Carlo, a small run's collapse
fractions, the shipped config and config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gallery_support import claim, run_config, shipped_config, shipped_plan, written_figure

from sgdsde.data import tanh_neuron_data
from sgdsde.experiments import ConfigError
from sgdsde.experiments.paper_collapse_tanh import (
    TanhCollapse,
    half_crossing,
    label_noise_threshold,
    matched_sde_threshold,
    sgd_exponent,
    sgd_threshold,
)


@pytest.fixture(scope="module")
def xy():
    data = tanh_neuron_data(seed=0)
    return data.X[:, 0], data.y, data.config["collapse_threshold"]


def test_label_noise_threshold_is_the_theorem(xy):
    x, y, ratio = xy
    # eta* zeta^2 sigma'(0) / 2 = sum(xy) / sum(x^2), sigma'(0) = 1: eta* = 2 ratio / delta
    assert label_noise_threshold(x, y, 1.0) == pytest.approx(2 * ratio)
    assert label_noise_threshold(x, y, 4.0) == pytest.approx(ratio / 2)


def test_matched_sde_threshold_by_hand():
    x, y = np.array([1.0, 2.0]), np.array([1.0, 0.0])
    # xy = (1, 0): mean 0.5, population variance 0.25; mean(x^2) = 2.5
    assert matched_sde_threshold(x, y, 2.0) == pytest.approx(2 * 0.5 / (0.25 + 2 * 2.5))


def test_sgd_exponent_against_monte_carlo_and_its_small_step_limit(xy):
    x, y, _ = xy
    eta, delta, k = 1.0, 1.0, 400_000
    rng = np.random.default_rng(0)
    i = rng.integers(0, x.size, k)
    s = x[i] * (y[i] - math.sqrt(delta) * rng.standard_normal(k))
    samples = [np.log(np.abs(1 + sign * eta * s)) / eta for sign in (1, -1)]
    top = max(samples, key=np.mean)
    assert abs(sgd_exponent(x, y, delta, eta) - top.mean()) < 5 * top.std() / math.sqrt(k)
    # eta -> 0: E log|1 + eta s| / eta -> E s = mean(x y)
    assert sgd_exponent(x, y, delta, 1e-4) == pytest.approx(np.mean(x * y), abs=1e-3)


def test_sgd_threshold_is_none_where_the_exact_exponent_stays_positive(xy):
    x, y, _ = xy
    # at zeta = 1 batch-1 SGD's exact exponent stays > 0 on this draw (the map's
    # multipliers |1 +- eta s| are O(1) random once eta nears the SDE thresholds)
    assert math.isnan(sgd_threshold(x, y, 1.0))
    assert all(sgd_exponent(x, y, 1.0, eta) > 0.1 for eta in (0.5, 2.0, 4.0))


def test_half_crossing():
    etas = np.array([1.0, 2.0, 3.0, 4.0])
    assert half_crossing(etas, np.array([0.0, 0.25, 0.75, 1.0])) == pytest.approx(2.5)
    # a diverged (NaN) step size is skipped: 1 + 2 (0.5 / 0.75)
    assert half_crossing(etas, np.array([0.0, np.nan, 0.75, 1.0])) == pytest.approx(7 / 3)
    assert math.isnan(half_crossing(etas, np.zeros(4)))
    assert math.isnan(half_crossing(etas, np.ones(4)))  # at >= 1/2 from the start


def small_config(**change):
    rises = claim(
        "collapse rises with eta", "collapse_fraction", "increasing", ["SDE eta=0.5", "SDE eta=4"]
    )
    small = dict(
        etas=[0.5, 4.0],
        n_seeds=2,
        n_paths=8,
        n_steps=2000,  # T = 40
        published=[],
        claims=[rises],
    )
    return shipped_config("paper_collapse_tanh", small, change)


@pytest.fixture(scope="module")
def small_run():
    return run_config(TanhCollapse(), small_config())


def test_small_run_collapses_on_the_predicted_side(small_run):
    ds = small_run
    assert list(ds["run"].values[:2]) == ["SDE eta=0.5", "SDE eta=4"]
    frac = ds["collapse_fraction"]
    # eta = 0.5: the exponent of u is c - eta delta m2 / 2 ~ 0.51 > 0 for the SDE (none
    # collapses); eta = 4: ~ -0.65 (SDE) and ~ -2.8 (SGD-SDE): ||w|| ~ 1 falls below 1e-2
    # within t ~ 7 and ~ 2, far below T = 40
    assert np.all(frac.sel(run="SDE eta=0.5").values == 0)
    assert np.all(frac.sel(run="SGD eta=0.5").values == 0)
    assert np.all(frac.sel(run="SDE eta=4").values >= 0.75)
    assert np.all(frac.sel(run="SGD-SDE eta=4").values >= 0.75)
    assert ds["collapse_curve"].sizes["fraction"] == 3
    table = TanhCollapse().table(ds)
    assert "| collapse rises with eta | yes (all 2 seeds) |" in table
    predicted = label_noise_threshold(ds["x_train"].values, ds["y_train"].values, 1.0)
    assert f"] | {predicted:.3f} |" in table  # the SDE row's prediction, 2.045
    assert "| SGD | none [none, none] | none |" in table


def test_plot_writes_a_figure(small_run, tmp_path):
    assert len(written_figure(TanhCollapse(), small_run, tmp_path / "t.png").axes) == 2


def test_shipped_config_validates():
    cfg, plan = shipped_plan(TanhCollapse(), "paper_collapse_tanh")
    assert len(plan.run_names) == 3 * len(cfg["etas"])
    x, y = plan.data.X[:, 0], plan.data.y
    assert label_noise_threshold(x, y, plan.label_noise) == pytest.approx(2.045, abs=1e-3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"etas": [1.0, 0.5]}, "etas: must increase"),
        ({"etas": [0.0, 1.0]}, "etas: must hold finite numbers > 0"),
        ({"data": {"generator": "sparse_regression", "d": 2, "k": 1}}, "data: must be 1-D"),
        ({"fractions": [0.0, 1.0]}, "fractions: must hold finite numbers > 0"),
        ({"label_noise": 0.0}, "label_noise: must be > 0"),
    ],
)
def test_config_errors_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        TanhCollapse().prepare(small_config(**change))
