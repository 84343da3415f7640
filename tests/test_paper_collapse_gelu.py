"""paper_collapse_gelu (Chen et al. 2023, two GELU neurons): the distance, noiseless GD
against a hand-written GD with finite-difference gradients, a small run's values, the
shipped config and config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gallery_support import claim, run_config, shipped_config, shipped_plan, written_figure

from sgdsde.analysis.phase import seed_child
from sgdsde.data import tanh_neuron_data
from sgdsde.experiments import ConfigError
from sgdsde.experiments.paper_collapse_gelu import GeluCollapse, neuron_distance


def test_neuron_distance():
    theta = np.array([[1.0, 0.6, -0.6, -0.4], [2.0, 2.0, 3.0, 3.0]])
    np.testing.assert_allclose(neuron_distance(theta), [math.hypot(0.4, -0.2), 0.0])


def _gelu(z):
    from scipy.special import ndtr

    return z * ndtr(z)


def _loss(theta, x, y):
    f = theta[2] * _gelu(theta[0] * x) + theta[3] * _gelu(theta[1] * x)
    return np.mean((f - y) ** 2) / 2


def _hand_gd(theta, x, y, lr, steps, h=1e-6):
    """GD with central finite-difference gradients: independent of the model's kernels."""
    theta = np.array(theta, dtype=float)
    for _ in range(steps):
        grad = np.array(
            [(_loss(theta + h * e, x, y) - _loss(theta - h * e, x, y)) / (2 * h) for e in np.eye(4)]
        )
        theta -= lr * grad
    return theta


def small_config(**change):
    moves = claim(
        "noise moves the neurons", "neuron_distance", "below", ["GD sigma=0 lr=0.1"], value=10.0
    )
    small = dict(
        noise_levels=[0.0, 0.8],
        lrs=[0.1, 0.5],
        sweep_noise=0.8,
        n_seeds=3,
        n_steps=400,
        n_points=8,
        claims=[moves],
    )
    return shipped_config("paper_collapse_gelu", small, change)


@pytest.fixture(scope="module")
def small_run():
    return run_config(GeluCollapse(), small_config())


def test_runs_share_the_sweeps_common_setting(small_run):
    # (0.8, 0.1) is in both sweeps: it runs once
    names = [str(r) for r in small_run["run"].values]
    assert names == [
        "GD sigma=0 lr=0.1",
        "GD sigma=0.8 lr=0.1",
        "GD sigma=0.8 lr=0.5",
        "SDE sigma=0 lr=0.1",
        "SDE sigma=0.8 lr=0.1",
        "SDE sigma=0.8 lr=0.5",
    ]


def test_noiseless_gd_is_plain_gd_from_the_papers_start(small_run):
    ds = small_run
    gd = ds["neuron_distance"].sel(run="GD sigma=0 lr=0.1").values
    for s in range(3):  # seed index s draws its own data: [data] with seed child s of 0
        data = tanh_neuron_data(n=8, noise_std=1.0, slope=0.0, seed=seed_child(0, s))
        theta = _hand_gd([1.0, 0.6, -0.6, -0.4], data.X[:, 0], data.y, 0.1, 400)
        assert gd[s] == pytest.approx(neuron_distance(theta), rel=1e-6)
    assert np.unique(gd).size == 3
    assert ds["distance"].values[0, 0, 0] == pytest.approx(math.hypot(0.4, -0.2))
    # the noiseless SDE is gradient flow at dt = lr / 2: GD at lr is within O(lr) of it
    flow = ds["neuron_distance"].sel(run="SDE sigma=0 lr=0.1").values
    np.testing.assert_allclose(flow, gd, rtol=0.05)


def test_noise_spreads_the_seeds(small_run):
    noisy = small_run["neuron_distance"].sel(run="GD sigma=0.8 lr=0.5").values
    assert np.unique(noisy).size == noisy.size and not small_run["diverged"].values.any()
    table = GeluCollapse().table(small_run)
    assert "| noise moves the neurons | yes (all 3 seeds) |" in table


def test_plot_writes_a_figure(small_run, tmp_path):
    assert len(written_figure(GeluCollapse(), small_run, tmp_path / "g.png").axes) == 3


def test_shipped_config_validates():
    cfg, plan = shipped_plan(GeluCollapse(), "paper_collapse_gelu")
    assert len(plan.settings) == 9
    assert plan.theta0 == (1.0, 0.6, -0.6, -0.4)
    assert len({d.y.tobytes() for d in plan.datas}) == plan.header.n_seeds  # one draw each
    single = GeluCollapse().prepare({**cfg, "data_per_seed": False})
    assert len({d.y.tobytes() for d in single.datas}) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"theta0": [1.0, 2.0]}, "theta0: must be four numbers"),
        ({"lrs": [0.0, 0.1]}, "lrs: must hold finite numbers > 0"),
        ({"noise_levels": [-0.1]}, "noise_levels: must hold finite numbers >= 0"),
        ({"refine": 0}, "refine: must be >= 1"),
    ],
)
def test_config_errors_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        GeluCollapse().prepare(small_config(**change))


def test_label_noise_pulls_the_neurons_together_at_reduced_length():
    # the paper's claim on 4 data draws at t = 1,000 (10,000 steps at lr 0.1): sigma = 0.8
    # ends closer than sigma = 0 in every draw, for GD and for its SDE
    cfg = small_config(
        noise_levels=[0.0, 0.8],
        lrs=[0.1],
        sweep_noise=0.8,
        n_seeds=4,
        n_steps=10_000,
        n_points=6,
        claims=[
            claim(
                f"{d}: noise shrinks the distance",
                "neuron_distance",
                "decreasing",
                [f"{d} sigma=0 lr=0.1", f"{d} sigma=0.8 lr=0.1"],
            )
            for d in ("GD", "SDE")
        ],
    )
    table = GeluCollapse().table(run_config(GeluCollapse(), cfg))
    assert "| GD: noise shrinks the distance | yes (all 4 seeds) |" in table
    assert "| SDE: noise shrinks the distance | yes (all 4 seeds) |" in table
