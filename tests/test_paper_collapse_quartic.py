"""paper_collapse_quartic (Chen et al. 2023, Fig. 1): the growth rate of log|theta| near 0
against its prediction, the thresholds, collapse fractions, the shipped config, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gallery_support import claim, run_config, shipped_config, shipped_plan, written_figure

from sgdsde.experiments import ConfigError
from sgdsde.experiments.config import ConfigChecker
from sgdsde.experiments.paper_collapse import (
    fraction_steps,
    gaussian_starts,
    grid_shape,
    linear_grid,
    path_seeds,
)
from sgdsde.experiments.paper_collapse_quartic import (
    QuarticCollapse,
    discrete_growth_rate,
    discrete_threshold,
    fitted_threshold,
    sde_threshold,
)


def test_discrete_growth_rate_against_monte_carlo_and_its_small_step_limit():
    mu, zeta, step = 1.5, 1.6, 0.05
    z = np.random.default_rng(0).standard_normal(1_000_000)
    samples = np.log(np.abs(1 + mu * step + zeta * math.sqrt(step) * z)) / step
    # 5 standard errors of the Monte Carlo mean
    tol = 5 * samples.std() / math.sqrt(z.size)
    assert abs(discrete_growth_rate(mu, zeta, step) - samples.mean()) < tol
    assert discrete_growth_rate(mu, zeta, 1e-6) == pytest.approx(mu - zeta**2 / 2, abs=1e-4)
    assert discrete_growth_rate(mu, 0.0, step) == pytest.approx(math.log(1 + mu * step) / step)


def test_thresholds():
    assert discrete_threshold(1.5, 1e-6) == pytest.approx(math.sqrt(3), abs=1e-4)
    # a finite step lowers the threshold, and the rate is 0 there
    eta = 0.05
    z = discrete_threshold(1.5, eta)
    assert 1.55 < z < 1.7 and abs(discrete_growth_rate(1.5, z, eta)) < 1e-8
    zetas = np.linspace(1, 2.5, 7)
    assert fitted_threshold(zetas, 1.5 - zetas**2 / 2) == pytest.approx(math.sqrt(3))
    assert math.isnan(fitted_threshold(zetas, 1.0 + zetas**2))  # never crosses
    assert math.isnan(fitted_threshold(zetas[:1], [0.3]))


def test_path_seeds_share_random_numbers_across_runs():
    seeds = path_seeds(3, n_runs=2, n_seeds=2, n_paths=3)
    starts = grid_shape(gaussian_starts(seeds, 2.0, 1), 2, 2)[..., 0]  # (run, seed, path)
    np.testing.assert_array_equal(starts[0], starts[1])
    assert len(np.unique(starts[0])) == 6
    # a seed index's numbers do not depend on how many seeds or paths there are
    more = grid_shape(gaussian_starts(path_seeds(3, 1, 3, 5), 2.0, 1), 1, 3)[0, :2, :3, 0]
    np.testing.assert_array_equal(more, starts[0])


def small_config(**change):
    small = dict(
        zetas=[0.5, 3.0],
        n_seeds=2,
        n_paths=24,
        n_steps=4000,  # t = 10
        collapse_level=1e-6,
        growth_time=10.0,
        fit_range=[0.0, 3.0],
        published=[],
        claims=[claim("rate falls", "growth_rate", "decreasing", ["zeta=0.5", "zeta=3"])],
    )
    return shipped_config("paper_collapse_quartic", small, change)


@pytest.fixture(scope="module")
def small_run():
    return run_config(QuarticCollapse(), small_config())


def test_growth_rates_match_the_discrete_prediction(small_run):
    ds = small_run
    n, T = 24, 10.0
    for zeta, run in zip((0.5, 3.0), ds["run"].values, strict=True):
        # the mean over n paths of (log|theta_T| - log|theta_0|) / T has sd zeta / sqrt(T n)
        tol = 4.5 * zeta / math.sqrt(T * n)
        for q, step in (("growth_rate", 0.0025), ("growth_rate_gd", 0.05)):
            rates = ds[q].sel(run=run).values
            assert np.all(np.abs(rates - discrete_growth_rate(1.5, zeta, step)) < tol), (q, rates)
    thresholds = ds["measured_threshold"].values  # the line through two zetas
    assert np.all((thresholds > 1.4) & (thresholds < 2.1))
    assert not ds["diverged"].values.any()


def test_collapse_fractions_and_table(small_run):
    ds = small_run
    # zeta = 0.5: theta settles at +-sqrt(mu) (none near 0); zeta = 3: log|theta| falls at
    # rate ~3 from ~0 and passes log(1e-3) = -6.9 by t ~ 2.3 (sd 3 sqrt(10) ~ 9.5 at t = 10)
    assert np.all(ds["collapse_fraction"].sel(run="zeta=0.5").values == 0)
    assert np.all(ds["collapse_fraction"].sel(run="zeta=3").values >= 0.8)
    assert ds["collapse_curve"].sizes["time"] == 4
    np.testing.assert_allclose(ds["time"].values, [1.25, 2.5, 5.0, 10.0])
    table = QuarticCollapse().table(ds)
    assert "| rate falls | yes (all 2 seeds) |" in table
    assert "| SDE dt=0.0025 |" in table and "| 1.732 | 1.727 |" in table
    assert "| GD eta=0.05 |" in table


def test_plot_writes_a_figure(small_run, tmp_path):
    assert len(written_figure(QuarticCollapse(), small_run, tmp_path / "q.png").axes) == 2


def test_shipped_config_validates_with_its_claims():
    cfg, plan = shipped_plan(QuarticCollapse(), "paper_collapse_quartic")
    assert len(plan.run_names) == len(cfg["zetas"])
    assert {p.quantity for p in plan.header.published} == {"growth_rate"}
    for p in plan.header.published:  # the published column is mu - zeta^2/2
        zeta = float(p.run.removeprefix("zeta="))
        assert p.value == pytest.approx(plan.mu - zeta**2 / 2, abs=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"zetas": [0.5, -1.0]}, "zetas: must hold finite numbers >= 0"),
        ({"zetas": [1.0, 1.0]}, "zetas: repeats a value"),
        ({"fractions": [0.5, 1.5]}, r"fractions: must hold fractions of the run in \(0, 1\]"),
        ({"fit_range": [2.0, 1.0]}, "fit_range: must be \\[lo, hi\\] with lo < hi"),
        ({"mu": -1.0}, "mu: must be > 0"),
        ({"n_paths": 0}, "n_paths: must be >= 1"),
    ],
)
def test_config_errors_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        QuarticCollapse().prepare(small_config(**change))


def test_missing_zetas_is_an_error():
    cfg = small_config()
    del cfg["zetas"]
    with pytest.raises(ConfigError, match="missing the key 'zetas'"):
        QuarticCollapse().prepare(cfg)


def test_fraction_steps_start_at_0_and_drop_repeats():
    np.testing.assert_array_equal(fraction_steps((0.25, 0.5, 1.0), 10), [0, 2, 5, 10])
    np.testing.assert_array_equal(fraction_steps((0.01, 0.02, 1.0), 10), [0, 10])


def test_linear_grid_absent_invalid_and_valid():
    checker = ConfigChecker("c")
    assert linear_grid(checker, {}, "zetas", positive=False) is None
    assert checker.problems == []  # an absent key is the table check's to report
    np.testing.assert_array_equal(
        linear_grid(checker, {"z": [0, 1.5]}, "z", positive=False), [0, 1.5]
    )
    assert linear_grid(checker, {"z": [0, 1.5]}, "z", positive=True) is None
    assert len(checker.problems) == 1 and "z" in checker.problems[0]


def test_sde_threshold_is_where_the_growth_rate_changes_sign():
    mu = 1.5
    zeta = sde_threshold(mu)
    assert zeta == pytest.approx(math.sqrt(3.0)) and mu - zeta**2 / 2 == pytest.approx(0.0)
    assert discrete_threshold(mu, 1e-4) == pytest.approx(zeta, rel=1e-3)  # step -> 0
