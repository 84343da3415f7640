"""The comparison of SGD and SDE runs on deep networks: seed statistics, the agreement
score on synthetic results whose answer is known, matched time, the plot and table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sgdsde.random import as_seed_sequence
from sgdsde.validation import MLP, EvaluationOptions, teacher_images
from sgdsde.validation.compare import (
    agreement_score,
    agreement_table,
    compare_runs,
    plot_comparison,
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


def test_plot_and_table_of_real_sgd_runs(tmp_path):
    data = teacher_images(n=24, n_test=8, input_shape=(1, 2, 2), n_classes=3, seed=1)
    net = MLP((1, 2, 2), (6,), n_outputs=3, seed=2)
    kw = dict(
        schedule=0.2,
        n_steps=6,
        batch_size=4,
        evaluation=EvaluationOptions(eval_every=3),
        loss="square",
    )
    large = [train_sgd(net, data, seed=s, **kw) for s in range(3)]
    halfway = [train_sgd(net, data, seed=s, **{**kw, "schedule": 0.1}) for s in (4, 5)]
    with pytest.raises(ValueError, match=r"not evaluated at the SGD times \[1.2"):
        compare_runs(large, halfway)  # times 0, 0.3, 0.6 only
    small = [
        train_sgd(
            net,
            data,
            seed=s,
            **{**kw, "schedule": 0.1, "n_steps": 12, "evaluation": EvaluationOptions(eval_every=6)},
        )
        for s in range(3)
    ]  # times 0, 0.6, 1.2 of the large-step runs reached with twice the steps
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
