"""The comparison of SGD and SDE runs on deep networks: seed statistics, the agreement
score on synthetic results whose answer is known, matched time, the plot and table."""

from __future__ import annotations

import json
from dataclasses import replace as dataclass_replace

import numpy as np
import pytest

from sgdsde.random import as_seed_sequence
from sgdsde.validation import MLP, EvaluationOptions, teacher_images
from sgdsde.validation.compare import (
    agreement_score,
    agreement_table,
    baseline_comparison,
    compare_runs,
    plot_comparison,
    relative_gap,
)
from sgdsde.validation.trainer import TrainResult, train_sgd


def _result(time, values, blocks=None, seed=None, steps=None):
    """A TrainResult-shaped run whose every scalar record is ``values``."""
    time = np.asarray(time, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    steps = np.arange(len(time)) if steps is None else np.asarray(steps)
    return TrainResult(
        steps=steps,
        time=time,
        train_loss=values,
        train_error=values,
        test_loss=values,
        test_error=values,
        lrs=np.diff(time),
        batch_losses=np.zeros(len(time) - 1),
        diverged_step=None,
        network=None,
        config={"loss": "square"},
        weight_norm=values,
        distance_from_init=values,
        feature_sparsity=blocks or {},
        active_fraction=blocks or {},
        dead_units=blocks or {},
        seed=seed,
    )


def test_identical_distributions_score_at_their_noise_level():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 6))
    out = agreement_score(a, b, n_boot=400, n_perm=400, seed=1)
    # D is a max of noisy gaps: its bias is the permutation null level, of order
    # sqrt(1/200 + 1/200) = 0.1; D - null is 0 within 3 standard errors
    assert 0 < out["null"] < 0.4
    assert abs(out["score"] - out["null"]) < 3 * out["se"]
    assert 0.05 < out["se"] < 0.2
    assert out["p_value"] > 0.01


def test_a_shift_scores_the_shift_over_the_combined_spread():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 6)), 2.0 * rng.normal(size=(200, 6))
    spread = np.sqrt((1.0 + 4.0) / 2)  # S = sqrt((s_A^2 + s_B^2) / 2)
    b[:, 2] += 0.8 * spread
    out = agreement_score(a, b, n_boot=400, n_perm=400, seed=3)
    assert abs(out["score"] - 0.8) < 4 * out["se"]
    assert out["se"] < 0.15
    assert out["step_index"] == 2
    assert out["p_value"] < 0.01


def test_agreement_score_edge_cases():
    # all seeds equal at t = 0 (same initialization): gap 0 over spread 0 counts as 0
    a = np.array([[1.0, 0.0], [1.0, 2.0]])
    b = np.array([[1.0, 1.0], [1.0, 3.0]])
    # t = 1: means 1 and 2, spreads sqrt(2) both: D = 1 / sqrt(2)
    assert agreement_score(a, b, n_boot=10, n_perm=10)["score"] == pytest.approx(2**-0.5)
    # a gap at a time where no seed varies is infinitely far outside the seed spread
    c = np.array([[2.0, 0.0], [2.0, 2.0]])
    assert agreement_score(c, b, n_boot=10, n_perm=10)["score"] == np.inf
    # NaN (a diverged run) is left out of the means; too few seeds everywhere gives NaN
    a_nan = np.array([[1.0, 0.0], [1.0, 2.0], [np.nan, np.nan]])
    assert agreement_score(a_nan, b, n_boot=10, n_perm=10)["score"] == pytest.approx(2**-0.5)
    one = agreement_score(a[:1], b[:1], n_boot=10, n_perm=10)
    assert np.isnan(one["score"]) and one["step_index"] == -1
    # columns are scored separately
    two = agreement_score(np.stack([a, c], -1), np.stack([b, b], -1), n_boot=10, n_perm=10)
    assert two["score"][0] == pytest.approx(2**-0.5) and two["score"][1] == np.inf


def test_agreement_score_bad_input():
    with pytest.raises(ValueError, match="same steps"):
        agreement_score(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="n_boot must be an integer >= 2"):
        agreement_score(np.zeros((3, 4)), np.zeros((3, 4)), n_boot=1)
    with pytest.raises(ValueError, match=r"a must be values \(seeds, steps\)"):
        agreement_score(np.zeros(4), np.zeros((3, 4)))


@pytest.fixture(scope="module")
def synthetic():
    """SGD on times 0, 1, 2 (4 seeds); the SDE on the finer grid 0, 0.5, .., 2 (5 seeds),
    its values shifted by 1 at t = 2; two feature blocks."""
    rng = np.random.default_rng(4)
    sgd_values = rng.normal(size=(4, 3))
    sde_values = rng.normal(size=(5, 5))
    sde_values[:, 4] += 1.0

    def blocks(v):
        return {"block1": v, "block2": 2 * v}

    sgd = [_result([0.0, 1.0, 2.0], v, blocks(v), seed=i) for i, v in enumerate(sgd_values)]
    sde = [
        _result(np.linspace(0, 2, 5), v, blocks(v), seed=10 + i, steps=np.arange(5) * 4)
        for i, v in enumerate(sde_values)
    ]
    return sgd, sde, sgd_values, sde_values[:, ::2]


def test_compare_runs_statistics_on_matched_time(synthetic):
    sgd, sde, a, b = synthetic
    ds = compare_runs(sgd, sde, n_boot=50, n_perm=50, seed=7, confidence=0.9)
    assert ds["dynamics"].values.tolist() == ["SGD", "SDE"]
    assert ds["time"].values.tolist() == [0.0, 1.0, 2.0]
    assert ds["matched_step"].values.tolist() == [0, 8, 16]
    assert ds.sizes["seed"] == 5 and ds["block"].values.tolist() == ["block1", "block2"]
    np.testing.assert_array_equal(ds["test_loss"].values[0, :4], a)
    assert np.all(np.isnan(ds["test_loss"].values[0, 4]))
    np.testing.assert_array_equal(ds["test_loss"].values[1], b)
    for i, v in enumerate((a, b)):
        mean, sd = v.mean(0), v.std(0, ddof=1)
        np.testing.assert_allclose(ds["test_loss_mean"].values[i], mean)
        np.testing.assert_allclose(ds["test_loss_spread"].values[i], sd)
        np.testing.assert_allclose(ds["test_loss_se"].values[i], sd / np.sqrt(len(v)))
        half = 1.6448536269514722 * sd / np.sqrt(len(v))  # the 90% normal quantile
        np.testing.assert_allclose(ds["test_loss_upper"].values[i], mean + half)
        np.testing.assert_allclose(ds["test_loss_lower"].values[i], mean - half)
    gap = np.abs(a.mean(0) - b.mean(0)) / np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / 2)
    assert float(ds["agreement_test_loss"]) == pytest.approx(gap.max())
    assert float(ds["agreement_test_loss_time"]) == float(gap.argmax())
    # the score and its uncertainties are agreement_score's, with the observable's child
    names = list(dict.fromkeys(v.split("_mean")[0] for v in ds.data_vars if "_mean" in v))
    child = as_seed_sequence(7).spawn(len(names))[names.index("test_loss")]
    expected = agreement_score(a, b, n_boot=50, n_perm=50, seed=child)
    assert float(ds["agreement_test_loss_se"]) == pytest.approx(expected["se"])
    assert float(ds["agreement_test_loss_p"]) == pytest.approx(expected["p_value"])
    # per-block observables score per block: block2 = 2 x block1 has the same score
    scores = ds["agreement_feature_sparsity"].values
    assert scores.shape == (2,) and scores[0] == pytest.approx(gap.max())
    assert scores[1] == pytest.approx(scores[0])
    config = json.loads(ds.attrs["config"])
    assert config["methods"]["SGD"]["loss"] == "square" and config["n_boot"] == 50


def test_compare_runs_refuses_unmatched_times_and_unknown_observables(synthetic):
    sgd, sde, _, _ = synthetic
    shifted = [_result([0.0, 1.1, 2.0], np.zeros(3)) for _ in range(3)]
    with pytest.raises(ValueError, match=r"not evaluated at the SGD times \[1.0\]"):
        compare_runs(sgd, shifted)
    with pytest.raises(ValueError, match="observable 'sharpness' is not recorded"):
        compare_runs(sgd, sde, observables=["sharpness"])
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\)"):
        compare_runs(sgd, sde, confidence=95)
    with pytest.raises(ValueError, match="sde must be a TrainResult"):
        compare_runs(sgd, [1, 2])


def _sgd_runs(seeds, schedule=0.2, n_steps=6, eval_every=3) -> list[TrainResult]:
    """Square-loss SGD runs of one tiny MLP on teacher images, one per seed."""
    data = teacher_images(n=24, n_test=8, input_shape=(1, 2, 2), n_classes=3, seed=1)
    net = MLP((1, 2, 2), (6,), n_outputs=3, seed=2)
    evaluation = EvaluationOptions(eval_every=eval_every)
    kw = dict(schedule=schedule, n_steps=n_steps, batch_size=4, loss="square")
    return [train_sgd(net, data, seed=s, evaluation=evaluation, **kw) for s in seeds]


def test_plot_and_table_of_real_sgd_runs(tmp_path):
    large = _sgd_runs(range(3))
    halfway = _sgd_runs((4, 5), schedule=0.1)
    with pytest.raises(ValueError, match=r"not evaluated at the SGD times \[1.2"):
        compare_runs(large, halfway)  # times 0, 0.3, 0.6 only
    # times 0, 0.6, 1.2 of the large-step runs reached with twice the steps
    small = _sgd_runs(range(3), schedule=0.1, n_steps=12, eval_every=6)
    ds = compare_runs(large, small, methods=("eta 0.2", "eta 0.1"), n_boot=20, n_perm=20)
    assert ds["matched_step"].values.tolist() == [0, 6, 12]
    # every run starts from the same network: identical observables at t = 0
    np.testing.assert_array_equal(
        ds["train_loss"].values[0, :, 0], ds["train_loss"].values[1, :, 0]
    )
    table = agreement_table(ds)
    assert table.splitlines()[0].split()[:2] == ["observable", "score"]
    assert any(line.startswith("feature_sparsity block1") for line in table.splitlines())
    path = tmp_path / "validation.png"
    plot_comparison(ds, path, title="tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["validation.png"]  # no temporaries left
    with pytest.raises(ValueError, match=r"observables \['sharpness'\] were not compared"):
        plot_comparison(ds, observables=["sharpness"])


def test_a_method_whose_every_seed_diverged_does_not_agree():
    """Diverged runs are NaN from their divergence on: once every seed of one method has
    diverged while the other still has values, the score is inf (not the survivors'
    agreement over the earlier times)."""
    from sgdsde.validation.compare import agreement_score

    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 4))
    b = a + 0.01 * rng.normal(size=(6, 4))
    b[:, 2:] = np.nan  # every SDE seed diverged after step 1
    out = agreement_score(a, b, n_boot=20, n_perm=20)
    assert np.isinf(out["score"]) and out["step_index"] == 2
    close = agreement_score(a, a + 0.01 * rng.normal(size=(6, 4)), n_boot=20, n_perm=20)
    assert np.isfinite(close["score"]) and close["score"] < 1


def test_seeds_that_agree_exactly_have_no_spread_and_their_value_as_mean():
    """Three seeds at 0.002 (one example of 500): the mean is 0.002 itself, not 3 x
    0.002 / 3 with a rounding residue, so the gap to 0.002 is exactly 0."""
    a = np.full((3, 2), 0.002)
    b = np.full((2, 2), 0.002)
    out = agreement_score(a, b, n_boot=20, n_perm=20)
    assert out["score"] == 0 and out["se"] == 0 and out["degenerate"] == 0


def test_an_error_rate_constant_across_seeds_scores_finite_with_its_resolution():
    """The digits case that gave a standard error of 4.5e14 (the default config's
    train_error): errors on 500 images, k / 500 with k = 0..4, the SDE's seeds at one
    count at several times. A bootstrap resample that repeats one seed three times had
    a spread of ~1e-19 (3 x 0.004 / 3 != 0.004 in floating point) beside a gap."""
    r = 1 / 500
    sgd = np.array([[2, 2, 2, 2], [3, 1, 0, 0], [4, 3, 2, 2]]) * r
    sde = np.array([[2, 2, 2, 2], [2, 1, 1, 1], [2, 2, 2, 2]]) * r
    out = agreement_score(sgd, sde, resolution=r, n_boot=400, n_perm=200, seed=0)
    # t = 0: means 3r and 2r, spreads r and 0: D = r / sqrt(r^2 / 2) = sqrt(2), the
    # largest; the floor r / sqrt(12) = 0.29 r binds nowhere
    spread = np.sqrt((sgd.var(0, ddof=1) + sde.var(0, ddof=1)) / 2)
    gap = np.abs(sgd.mean(0) - sde.mean(0))
    expected = np.max(gap / np.fmax(spread, r / np.sqrt(12)))
    assert out["score"] == pytest.approx(expected) == pytest.approx(np.sqrt(2))
    assert out["step_index"] == 0
    # every resample is finite: where neither method's resampled seeds vary, the spread
    # is floored at r / sqrt(12), so D <= 2r / (r / sqrt(12)) (counts 4 against 2), and
    # elsewhere S >= r / sqrt(6); the sd of values in [0, 2 sqrt(12)] is <= sqrt(12)
    assert out["degenerate"] == 0
    assert 0 < out["se"] <= np.sqrt(12)
    # without the resolution, a resample repeating SGD seed 1 or 2 three times (2/27 of
    # them) has no spread at t = 0 beside the SDE's constant 2 there, and a gap: inf.
    # Those are counted and enter the quantiles as inf; under 16 % of them, the
    # standard error stays finite
    bare = agreement_score(sgd, sde, n_boot=400, n_perm=200, seed=0)
    assert abs(bare["degenerate"] - 2 / 27) < 4 * np.sqrt(2 / 27 * 25 / 27 / 400)
    assert bare["score"] == pytest.approx(np.max(gap / spread))
    assert 0 < bare["se"] < np.inf


def test_all_seeds_at_zero_error_under_both_methods_agree():
    r = 1 / 297
    zeros = np.zeros((3, 5))
    zeros[:, 0] = 0.9  # every run starts from the same network, then fits every image
    out = agreement_score(zeros, zeros.copy(), resolution=r, n_boot=200, n_perm=50)
    assert out["score"] == 0 and out["se"] == 0 and out["degenerate"] == 0
    # one method one test image worse on every seed: gap r over the floor r / sqrt(12)
    worse = zeros + np.where(np.arange(5) > 0, r, 0.0)
    shifted = agreement_score(zeros, worse, resolution=r, n_boot=200, n_perm=50)
    assert shifted["score"] == pytest.approx(np.sqrt(12)) and shifted["step_index"] >= 1
    assert np.isfinite(shifted["se"]) and shifted["degenerate"] == 0
    # resolution 0: the same gap with no seed spread is infinitely far (and its se NaN)
    bare = agreement_score(zeros, worse, n_boot=200, n_perm=50)
    assert bare["score"] == np.inf and np.isnan(bare["se"]) and bare["degenerate"] == 1


def test_the_standard_error_is_inf_when_many_resamples_are_degenerate():
    """Two seeds per method: a resample repeats one seed with probability 1/2 per method,
    so a quarter of the resamples have S = 0 beside a gap: inf, beyond the 16 % that
    the upper quantile q_84 of the standard error tolerates."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    out = agreement_score(a, b, n_boot=400, n_perm=20, seed=1)
    assert np.isfinite(out["score"])
    # binomial(400, 1/4): standard deviation 0.022
    assert abs(out["degenerate"] - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 400)
    assert out["se"] == np.inf


def test_agreement_score_refuses_a_bad_resolution():
    with pytest.raises(ValueError, match="resolution must be a finite number >= 0"):
        agreement_score(np.zeros((3, 4)), np.zeros((3, 4)), resolution=-0.1)
    with pytest.raises(ValueError, match="resolution has 3 entries but the values 1 columns"):
        agreement_score(np.zeros((3, 4)), np.zeros((3, 4)), resolution=[0.1, 0.1, 0.1])


def test_compare_runs_takes_the_error_resolution_from_the_runs_configs():
    """train_error on the 500-image metrics subset: r = 1/500; test_error: 1/n_test."""
    from sgdsde.validation.compare import observable_resolution

    config = {"evaluation": {"metrics_size": 500}, "data": {"n_test": 297}}
    assert observable_resolution("train_error", config) == 1 / 500
    assert observable_resolution("test_error", config) == 1 / 297
    assert observable_resolution("identical_pairs", config) == 1
    assert observable_resolution("train_loss", config) == 0
    assert observable_resolution("test_error", {}) == 0

    def runs(counts):
        out = []
        for i, k in enumerate(counts):
            run = _result([0.0, 1.0, 2.0], np.array([0.3, k, k]) / 500, seed=i)
            out.append(dataclass_replace(run, config={"loss": "square", **config}))
        return out

    sgd, sde = runs([0, 0, 1]), runs([0, 0, 0])
    ds = compare_runs(sgd, sde, observables=["train_error", "test_error"], n_boot=200, n_perm=50)
    assert ds["agreement_train_error"].attrs["resolution"] == 1 / 500
    # the values are k/500 also as "test errors": there r = 1/297 floors at 0.29/297
    assert ds["agreement_test_error"].attrs["resolution"] == 1 / 297
    assert float(ds["agreement_train_error"]) == pytest.approx(np.sqrt(6) / 3)
    assert np.isfinite(float(ds["agreement_train_error_se"]))
    assert float(ds["agreement_train_error_degenerate"]) == 0
    # given resolutions win; 0 leaves the one-seed resamples degenerate, which the
    # table reports
    bare = compare_runs(sgd, sde, observables=["train_error"], resolution={"train_error": 0})
    assert float(bare["agreement_train_error_degenerate"]) > 0
    assert "bootstrap resamples degenerate" in agreement_table(bare)
    with pytest.raises(ValueError, match=r"resolution names observables \['sharpness'\]"):
        compare_runs(sgd, sde, observables=["train_error"], resolution={"sharpness": 0.1})


def test_the_standard_error_is_the_central_range_of_the_bootstrap_scores():
    """se = (q_84 - q_16) / 2 of D over the resamples, recomputed here by hand from the
    same resampling stream (child 0 of the seed): with 3 seeds, two of them nearly equal,
    resamples repeating those two have a spread of ~1e-6 and D ~ 1e6, which make the
    standard deviation of the resamples meaningless; the quantile range is not."""
    a = np.array([[0.0, 1.0], [0.0, 1.000001], [0.0, 1.3]])
    b = np.array([[0.0, 1.1], [0.0, 1.25], [0.0, 0.9]])
    n_boot = 500
    out = agreement_score(a, b, n_boot=n_boot, n_perm=10, seed=4)
    rng = np.random.default_rng(as_seed_sequence(4).spawn(2)[0])
    index_a, index_b = rng.integers(0, 3, (n_boot, 3)), rng.integers(0, 3, (n_boot, 3))
    scores = []
    for ia, ib in zip(index_a, index_b, strict=True):
        x, y = a[ia, 1], b[ib, 1]  # t = 0: every seed 0, gap 0 over spread 0 counts 0
        gap, spread = abs(x.mean() - y.mean()), np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
        same = np.ptp(x) == 0 and np.ptp(y) == 0
        scores.append(np.inf if same and gap > 0 else 0.0 if same else gap / spread)
    scores = np.array(scores)
    low, high = np.quantile(scores, [0.16, 0.84], method="inverted_cdf")
    assert out["se"] == pytest.approx((high - low) / 2, rel=1e-9)
    assert out["degenerate"] == pytest.approx(np.mean(np.isinf(scores)))
    finite = scores[np.isfinite(scores)]
    assert finite.max() > 1e4 and finite.std() > 100 * out["se"]
    assert 0 < out["se"] < 2


def test_relative_gap_is_the_worst_model_gap_over_the_worst_baseline_gap():
    """Means over seeds: reference 0 0 0, model 0 0.2 -0.3, baseline 0 -1 2 at three
    times (seed spread around each mean), so G = 0.3 / 2; per column; NaN where the
    baseline never moves; NaN seeds are left out of the means."""
    spread = np.array([-0.1, 0.0, 0.1])[:, None]
    reference = np.zeros((3, 3)) + spread
    model = np.array([0.0, 0.2, -0.3]) + spread
    baseline = np.array([0.0, -1.0, 2.0]) + spread
    out = relative_gap(reference, model, baseline, n_boot=50)
    assert out["gap"] == pytest.approx(0.15, rel=1e-12)
    assert out["gap"].shape == () and np.isfinite(out["se"]) and out["se"] > 0
    # seeds without spread: every resample is the sample, se exactly 0
    exact = relative_gap(np.zeros((2, 3)), [[0, 0.2, -0.3]] * 2, [[0, -1, 2]] * 2, n_boot=20)
    assert exact["gap"] == pytest.approx(0.15, rel=1e-12) and exact["se"] == 0.0
    # columns separately; a column whose baseline equals the reference: NaN
    columns = np.stack([model, reference], axis=-1)
    out = relative_gap(np.stack([reference] * 2, -1), columns, np.stack([baseline, reference], -1))
    assert out["gap"][0] == pytest.approx(0.15, rel=1e-12) and np.isnan(out["gap"][1])
    assert np.isnan(out["se"][1])
    with_nan = model.copy()
    with_nan[0, 2] = np.nan  # seed 0 lost at the last time: mean of the other two, -0.25
    assert relative_gap(reference, with_nan, baseline)["gap"] == pytest.approx(0.125, rel=1e-12)
    with pytest.raises(ValueError, match="same steps"):
        relative_gap(reference, model[:, :2], baseline)


def test_relative_gap_standard_error_matches_its_sampling_spread():
    """One time, m seeds of N(mu, 1) per method, reference mu 0, model 0.5, baseline 10:
    G = |mean_model - mean_ref| / |mean_base - mean_ref| has standard deviation about
    sqrt(2 / m) / 10 (numerator) with a relative term G sqrt(2 / m) / 10 from the
    denominator; the bootstrap's (q84 - q16) / 2 estimates it, within 15 % at
    n_boot = 4000 (its own relative error about 2 %) and m = 400."""
    m = 400
    rng = np.random.default_rng(7)
    reference, model, baseline = (mu + rng.standard_normal((m, 1)) for mu in (0.0, 0.5, 10.0))
    out = relative_gap(reference, model, baseline, n_boot=4000, seed=3)
    expected_sd = np.sqrt(2 / m) / 10 * np.sqrt(1 + 0.05**2)
    assert out["se"] == pytest.approx(expected_sd, rel=0.15)
    # and G itself lies within 4 of those of 0.05
    assert abs(out["gap"] - 0.05) < 4 * expected_sd


def test_baseline_comparison_reads_a_third_set_of_runs_at_the_same_steps(tmp_path):
    large = _sgd_runs(range(3), eval_every=2)
    model = _sgd_runs(range(3, 6), eval_every=2)
    small = _sgd_runs(range(3), schedule=0.02, eval_every=2)
    ds = compare_runs(large, model, n_boot=20, n_perm=20)
    variables = baseline_comparison(ds, small, n_boot=30, seed=1)
    out = ds.assign(variables)
    mean = np.mean([r.train_loss for r in small], axis=0)
    np.testing.assert_allclose(out["baseline_train_loss_mean"].values, mean, rtol=1e-12)
    half = 1.959964 * np.std([r.train_loss for r in small], axis=0, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(out["baseline_train_loss_upper"].values, mean + half, rtol=1e-6)
    np.testing.assert_allclose(out["baseline_train_loss_lower"].values, mean - half, rtol=1e-6)
    assert np.all(half[1:] > 0)  # the seeds part after the shared initialization
    sgd_mean = np.mean([r.train_loss for r in large], axis=0)
    model_mean = np.mean([r.train_loss for r in model], axis=0)
    expected = np.max(np.abs(model_mean - sgd_mean)) / np.max(np.abs(mean - sgd_mean))
    assert float(out["relative_gap_train_loss"]) == pytest.approx(expected, rel=1e-12)
    # per block
    sparsity = out["relative_gap_feature_sparsity"]
    assert sparsity.dims == ("block",) and np.all(np.isfinite(sparsity.values))
    assert "G" in agreement_table(out).splitlines()[0].split()
    figure = plot_comparison(out, title="with a baseline")
    assert figure._suptitle.get_text() == "with a baseline"
    first = figure.axes[0]
    assert [line.get_label() for line in first.get_lines()][-1] == "baseline (same step)"
    np.testing.assert_allclose(first.get_lines()[-1].get_ydata(), mean, rtol=1e-12)
    assert first.get_title().endswith(f"G = {float(out['relative_gap_train_loss']):.2g}")
    import matplotlib.pyplot as plt

    plt.close(figure)
    path = tmp_path / "three.png"
    plot_comparison(out, path, title="with a baseline")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other_grid = _sgd_runs([0], eval_every=3)
    with pytest.raises(ValueError, match="same n_steps and eval_every"):
        baseline_comparison(ds, other_grid)
