"""Step-size schedules against hand-computed values (formulas of Andriushchenko et al., ICML 2023).

Expected numbers are written out by hand from the closed forms, never produced by the code under
test, so a wrong formula cannot agree with itself.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from sgdsde.dynamics.schedules import (
    SCHEDULES,
    Constant,
    ExponentialWarmup,
    LinearWarmup,
    Piecewise,
    PiecewiseEpochs,
    PowerWarmup,
    Schedule,
    StepDecay,
    as_schedule,
    cumulative_time,
    make_schedule,
    schedule_from_config,
)
from sgdsde.registry import Registry, to_config

ALL_EXAMPLES = [
    Constant(0.1),
    StepDecay(0.282, at=(0.1,), factors=(4.8,)),
    StepDecay(1.0, at=(0.25, 0.5), factors=(2.0, 5.0)),
    LinearWarmup(2e-4, factor=8.0, until=0.02, decay=2.5),
    PowerWarmup(0.04, coef=5.0, power=0.5, until=0.3, decay=2.5),
    ExponentialWarmup(1.0, base=2.0, until=0.05, decay=2.0),
    PiecewiseEpochs(0.75, phase_end=0.3, warmup_exp=1.05),
    PiecewiseEpochs(0.05, phase_end=0.1),
    Piecewise(levels=(0.3, 0.0, 0.1), at=(0.2, 0.6)),
]


def values(schedule: Schedule, n: int) -> np.ndarray:
    return schedule(np.arange(n), n)


# --------------------------------------------------------------------------- formulas


def test_constant():
    np.testing.assert_allclose(values(Constant(0.1), 7), [0.1] * 7, rtol=0, atol=0)


def test_step_decay_paper_dln():
    eta = values(StepDecay(0.282, at=(0.1,), factors=(4.8,)), 100)
    np.testing.assert_allclose(eta[:10], 0.282, rtol=1e-15)
    np.testing.assert_allclose(eta[10:], 0.05875, rtol=1e-12)  # 0.282 / 4.8


def test_step_decay_cumulative():
    # K_0 = int(0.25 * 8) = 2, K_1 = int(0.5 * 8) = 4.
    eta = values(StepDecay(1.0, at=(0.25, 0.5), factors=(2.0, 5.0)), 8)
    np.testing.assert_allclose(eta, [1, 1, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1], rtol=1e-15)


def test_step_decay_halves_run_by_ten():
    # at and factors are required (no hidden defaults): see test_make_schedule.
    halve = StepDecay(1.0, at=(0.5,), factors=(10.0,))
    np.testing.assert_allclose(values(halve, 4), [1, 1, 0.1, 0.1], rtol=1e-15)
    with pytest.raises(TypeError):
        StepDecay(1.0)  # type: ignore[call-arg]


def test_linear_warmup_small():
    # N = 10, K = 5: 1 + 2k/10 while k < 5, then (1 + 2 * 5/10) / 2 = 1.
    eta = values(LinearWarmup(1.0, factor=3.0, until=0.5, decay=2.0), 10)
    np.testing.assert_allclose(eta, [1.0, 1.2, 1.4, 1.6, 1.8] + [1.0] * 5, rtol=1e-14)


def test_linear_warmup_paper_regression_runs():
    n = 31623
    s = LinearWarmup(2e-4, factor=400 * 0.02, until=0.02, decay=2.5)
    k_cut = 632  # int(0.02 * 31623) = int(632.46)
    before, after = s([k_cut - 1, k_cut], n)
    assert before == pytest.approx(2e-4 * (1 + 7 * 631 / 31623), rel=1e-12)
    assert before == pytest.approx(2.28e-4, rel=2e-3)
    assert after == pytest.approx(2e-4 * (1 + 7 * 632 / 31623) / 2.5, rel=1e-12)
    assert after == pytest.approx(9.12e-5, rel=2e-3)

    s = LinearWarmup(2e-4, factor=200.0, until=0.5, decay=3.0)
    before, after = s([15810, 15811], n)  # K = int(15811.5)
    assert before == pytest.approx(0.0201, rel=2e-3)
    assert after == pytest.approx(0.0067, rel=2e-3)


def test_linear_warmup_cut_below_one_step_is_just_decayed():
    # K = int(0.05 * 10) = 0: no warm-up step at all.
    np.testing.assert_allclose(values(LinearWarmup(1.0, 3.0, 0.05, 4.0), 10), 0.25, rtol=1e-15)


def test_power_warmup_small():
    # N = 10, K = 5: 1 + 3 (k/10)^2, then (1 + 3 * 0.25) / 4 = 0.4375.
    eta = values(PowerWarmup(1.0, coef=3.0, power=2.0, until=0.5, decay=4.0), 10)
    np.testing.assert_allclose(eta, [1.0, 1.03, 1.12, 1.27, 1.48] + [0.4375] * 5, rtol=1e-14)


@pytest.mark.parametrize(
    ("until", "decay", "peak"), [(0.1, 3.5, 0.103), (0.3, 2.5, 0.150), (0.5, 5.0, 0.181)]
)
def test_power_warmup_paper_three_layer_peaks(until, decay, peak):
    n = 10_000
    s = PowerWarmup(0.04, coef=5.0, power=0.5, until=until, decay=decay)
    cut = int(until * n)
    assert round(s.peak(n), 3) == pytest.approx(peak, abs=1e-12)
    before, after = s([cut - 1, cut], n)
    assert before == s.peak(n)
    # The decayed value is the warm-up formula *at* K divided by decay.
    assert after == pytest.approx(0.04 * (1 + 5 * until**0.5) / decay, rel=1e-12)


def test_exponential_warmup_small():
    # N = 100 so the exponent 100 k / N is k; K = 5, then 2^5 / 2 = 16.
    eta = values(ExponentialWarmup(1.0, base=2.0, until=0.05, decay=2.0), 100)
    np.testing.assert_allclose(eta[:5], [1, 2, 4, 8, 16], rtol=1e-14)
    np.testing.assert_allclose(eta[5:], 16.0, rtol=1e-14)


# --------------------------------------------------------------------------- deep-net script


def test_piecewise_exponential_uses_k_plus_one():
    # N = 10, S = 0.5: s = (k + 1)/10, so k = 0..3 warm up, k = 4 (s = 0.5) is already decayed.
    eta = values(PiecewiseEpochs(0.75, phase_end=0.5, warmup_exp=1.05), 10)
    warm = [0.75 * 1.05**10, 0.75 * 1.05**20, 0.75 * 1.05**30, 0.75 * 1.05**40]
    np.testing.assert_allclose(eta[:4], warm, rtol=1e-12)
    np.testing.assert_allclose(eta[4:8], 0.8600549842, rtol=1e-9)  # 0.75 * 1.05^50 / 10
    np.testing.assert_allclose(eta[8:], 0.08600549842, rtol=1e-9)  # s >= 0.9


@pytest.mark.parametrize(("phase_end", "peak"), [(0.5, 8.60), (0.3, 3.24), (0.1, 1.22)])
def test_piecewise_exponential_paper_peaks(phase_end, peak):
    s = PiecewiseEpochs(0.75, phase_end=phase_end, warmup_exp=1.05)
    n = 100_000  # the largest step sits one step before S, so N must be large for 3 digits
    assert round(s.peak(n), 2) == pytest.approx(peak, abs=1e-12)
    plateau = s([int(phase_end * n), n - 1], n)
    np.testing.assert_allclose(plateau, [peak / 10, peak / 100], rtol=2e-3)


def test_piecewise_power_branch():
    # q = 0.5, S = 0.5, N = 100: 1 + sqrt(100 s) with s = (k + 1)/100.
    s = PiecewiseEpochs(1.0, phase_end=0.5, warmup_exp=0.5)
    eta = s([3, 48, 49, 88, 89, 99], 100)
    top = 1 + 50**0.5  # 8.0710678...
    np.testing.assert_allclose(
        eta, [3.0, 8.0, top / 10, top / 10, top / 100, top / 100], rtol=1e-12
    )
    assert top / 10 == pytest.approx(0.80710678, rel=1e-8)


def test_piecewise_linear_branch_with_warmup_factor():
    # lr = 1, warmup_factor = 3, S = 0.3, N = 10: 1 + 2 s / 0.5, then 0.3/0.5 * 3 / 10 = 0.18.
    eta = values(PiecewiseEpochs(1.0, phase_end=0.3, warmup_factor=3.0), 10)
    np.testing.assert_allclose(eta, [1.4, 1.8] + [0.18] * 6 + [0.018] * 2, rtol=1e-12)


@pytest.mark.parametrize(("phase_end", "after"), [(0.5, 0.005), (0.3, 0.003), (0.1, 0.001)])
def test_piecewise_linear_quirk_sota_runs(phase_end, after):
    # Without warm-up the script still scales the decayed step by S / 0.5.
    n = 1000
    eta = values(PiecewiseEpochs(0.05, phase_end=phase_end), n)
    first_after = round(phase_end * n) - 1  # s = (k + 1)/N reaches S at k = S N - 1
    np.testing.assert_allclose(eta[:first_after], 0.05, rtol=1e-15)
    np.testing.assert_allclose(eta[first_after:899], after, rtol=1e-12)
    np.testing.assert_allclose(eta[899:], after / 10, rtol=1e-12)


def test_piecewise_linear_ramp_holds_past_half_like_np_interp():
    # S = 0.7 > 0.5: the ramp stops at warmup_factor * lr, the plateau is 0.7/0.5 * 3 / 10.
    eta = values(PiecewiseEpochs(1.0, phase_end=0.7, warmup_factor=3.0), 10)
    np.testing.assert_allclose(eta[3:7], [2.6, 3.0, 3.0, 0.42], rtol=1e-12)


# --------------------------------------------------------------------------- call semantics


@pytest.mark.parametrize("schedule", ALL_EXAMPLES, ids=lambda s: s.name)
def test_vectorized_matches_scalar_calls(schedule):
    n = 50
    ks = np.array([[0, 7, 49], [13, 25, 44]])
    batch = schedule(ks, n)
    assert batch.shape == (2, 3)
    assert batch.dtype == np.float64
    scalars = [[float(schedule(int(k), n)) for k in row] for row in ks]
    np.testing.assert_array_equal(batch, scalars)
    assert schedule(3, n).shape == ()
    assert schedule([], n).shape == (0,)
    np.testing.assert_array_equal(schedule.values(n), schedule(np.arange(n), n))
    assert schedule.peak(n) == schedule.values(n).max()


@pytest.mark.parametrize(
    ("step", "n_steps", "match"),
    [
        (-1, 10, r"step must lie in \[0, 9\]"),
        (10, 10, r"step must lie in \[0, 9\]"),
        ([0, 5, 11], 10, r"max 11"),
        (0, 0, r"n_steps must be >= 1 \(got 0\)"),
        (0, 2.5, r"n_steps must be an integer"),
        (0.0, 10, r"step must be an integer array"),
        (np.array([True]), 10, r"step must be an integer array"),
    ],
)
def test_call_rejects_bad_steps(step, n_steps, match):
    with pytest.raises(ValueError, match=match):
        Constant(0.1)(step, n_steps)


def test_numpy_integer_n_steps_accepted():
    assert float(Constant(0.1)(np.int32(2), np.int64(3))) == 0.1


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: Constant(-0.1), r"lr must be > 0 \(got -0.1\): pass a positive step size"),
        (lambda: Constant(0.0), r"lr must be > 0 \(got 0.0\)"),
        (lambda: Constant(float("nan")), r"lr must be finite \(got nan\)"),
        (lambda: Constant(float("inf")), r"lr must be finite \(got inf\)"),
        (lambda: Constant(True), r"lr must be a real number"),
        (lambda: Constant("0.1"), r"lr must be a real number"),
        (lambda: StepDecay(1.0, at=(0.5, 0.2), factors=(2, 2)), r"at must be strictly increasing"),
        (lambda: StepDecay(1.0, at=(0.5, 0.5), factors=(2, 2)), r"at must be strictly increasing"),
        (lambda: StepDecay(1.0, at=(0.5,), factors=(2, 2)), r"same length \(got 1 and 2\)"),
        (
            lambda: StepDecay(1.0, at=(1.0,), factors=(2.0,)),
            r"at\[0\] must be in \(0, 1\) \(got 1.0\)",
        ),
        (
            lambda: StepDecay(1.0, at=(0.5,), factors=(0.0,)),
            r"factors\[0\] must be > 0 \(got 0.0\)",
        ),
        (lambda: StepDecay(1.0, at="0.5", factors=(2.0,)), r"at must be a sequence of floats"),
        (lambda: LinearWarmup(1.0, factor=-2.0, until=0.5), r"factor must be > 0 \(got -2.0\)"),
        (lambda: LinearWarmup(1.0, factor=2.0, until=0.0), r"until must be in \(0, 1\)"),
        (lambda: LinearWarmup(1.0, 2.0, 0.5, decay=0.0), r"decay must be > 0 \(got 0.0\)"),
        (lambda: PowerWarmup(1.0, coef=-1.0, power=0.5, until=0.1), r"coef must be finite"),
        (lambda: PowerWarmup(1.0, coef=1.0, power=0.0, until=0.1), r"power must be > 0"),
        (lambda: ExponentialWarmup(1.0, base=0.0, until=0.1), r"base must be > 0 \(got 0.0\)"),
        (lambda: ExponentialWarmup(-1.0, base=1.1, until=0.1), r"lr must be > 0"),
        (lambda: PiecewiseEpochs(1.0, phase_end=0.9), r"phase_end must be in \(0, 0.9\)"),
        (lambda: PiecewiseEpochs(1.0, warmup_exp=0.0), r"warmup_exp must be > 0"),
        (lambda: PiecewiseEpochs(1.0, warmup_factor=-1.0), r"warmup_factor must be > 0"),
    ],
)
def test_validation_messages(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_fields_are_coerced_and_frozen():
    s = StepDecay(1, at=[0.1, 0.2], factors=[2, 3])
    assert s == StepDecay(1.0, at=(0.1, 0.2), factors=(2.0, 3.0))
    assert isinstance(s.lr, float)
    assert hash(s) == hash(StepDecay(1.0, at=(0.1, 0.2), factors=(2.0, 3.0)))
    assert StepDecay(1.0, at=0.3, factors=5.0).at == (0.3,)
    with pytest.raises(AttributeError):
        s.lr = 2.0  # type: ignore[misc]


def test_schedule_is_abstract():
    with pytest.raises(TypeError):
        Schedule()  # type: ignore[abstract]


# --------------------------------------------------------------------------- registry & config


def test_registry_names():
    assert set(SCHEDULES) == {
        "constant",
        "step_decay",
        "linear_warmup",
        "power_warmup",
        "exponential_warmup",
        "piecewise_epochs",
        "piecewise",
    }
    for name, cls in SCHEDULES.items():
        assert cls.name == name


@pytest.mark.parametrize("schedule", ALL_EXAMPLES, ids=lambda s: s.name)
def test_config_round_trip_through_json(schedule):
    cfg = schedule.to_config()
    assert cfg["name"] == schedule.name
    restored = schedule_from_config(json.loads(json.dumps(cfg)))
    assert restored == schedule
    assert type(restored) is type(schedule)
    np.testing.assert_array_equal(restored.values(40), schedule.values(40))


def test_to_config_contents():
    cfg = StepDecay(0.282, at=(0.1,), factors=(4.8,)).to_config()
    assert cfg == {"name": "step_decay", "lr": 0.282, "at": [0.1], "factors": [4.8]}


def test_make_schedule():
    assert make_schedule("power_warmup", lr=0.04, coef=5, power=0.5, until=0.1) == PowerWarmup(
        0.04, 5.0, 0.5, 0.1, 1.0
    )
    with pytest.raises(ValueError, match=r"unknown schedule 'cosine': pick one of .*constant"):
        make_schedule("cosine", lr=0.1)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['gamma'\]: it accepts \['lr'\]"):
        make_schedule("constant", gamma=0.1)
    with pytest.raises(ValueError, match=r"missing field\(s\) \['factor', 'until'\]"):
        make_schedule("linear_warmup", lr=0.1)
    with pytest.raises(ValueError, match=r"lr must be > 0"):
        make_schedule("constant", lr=-1.0)
    # no hidden defaults: the decay points and factors of a step decay are required
    with pytest.raises(ValueError, match=r"missing field\(s\) \['at', 'factors'\]"):
        make_schedule("step_decay", lr=0.1)
    with pytest.raises(ValueError, match=r"did you mean 'factors' for 'factor'"):
        make_schedule("step_decay", lr=0.1, at=[0.5], factor=[2.0])


def test_registry_is_a_registry_with_round_trip():
    assert isinstance(SCHEDULES, Registry)
    for schedule in ALL_EXAMPLES:
        assert SCHEDULES.from_config(to_config(schedule)) == schedule


@pytest.mark.parametrize("schedule", ALL_EXAMPLES, ids=lambda s: s.name)
@pytest.mark.parametrize("n", [10, 37, 1000])
def test_change_points_are_where_phases_begin(schedule, n):
    """eta changes at every change point and is constant between consecutive ones (the
    first phase may be a warm-up ramp)."""
    eta = schedule.values(n)
    points = schedule.change_points(n)
    assert points == sorted(set(points)) and all(0 < k < n for k in points)
    for k in points:
        assert eta[k] != eta[k - 1], (k, eta[k - 1 : k + 1])
    for start, stop in itertools.pairwise([*points, n]):
        np.testing.assert_array_equal(eta[start:stop], eta[start])
    no_warmup = isinstance(schedule, PiecewiseEpochs) and schedule == PiecewiseEpochs(
        schedule.lr, schedule.phase_end
    )
    if isinstance(schedule, StepDecay) or no_warmup:
        # plateaus from the start: no change outside the change points
        assert list(np.flatnonzero(np.diff(eta)) + 1) == points


def test_change_points_of_the_demo_and_the_deep_net_script():
    assert StepDecay(0.235, at=(0.1,), factors=(4.8,)).change_points(100_001) == [10_000]
    assert Constant(0.2).change_points(100) == []
    # s = (k + 1)/N reaches S = 0.3 at k = 299 and 0.9 at k = 899
    assert PiecewiseEpochs(0.05, phase_end=0.3).change_points(1000) == [299, 899]
    assert LinearWarmup(1.0, factor=3.0, until=0.5, decay=2.0).change_points(10) == [5]


def test_schedule_from_config_requires_name():
    with pytest.raises(ValueError, match=r"'name' key"):
        schedule_from_config({"lr": 0.1})


def test_as_schedule():
    s = StepDecay(1.0, at=(0.5,), factors=(10.0,))
    assert as_schedule(s) is s
    assert as_schedule(0.1) == Constant(0.1)
    assert as_schedule(np.float32(0.5)) == Constant(0.5)
    assert as_schedule(2) == Constant(2.0)
    assert as_schedule({"name": "constant", "lr": 0.3}) == Constant(0.3)
    for bad in ("0.1", None, [0.1], True):
        with pytest.raises(ValueError, match=r"cannot make a step-size schedule"):
            as_schedule(bad)
    with pytest.raises(ValueError, match=r"lr must be > 0"):
        as_schedule(-0.1)


# --------------------------------------------------------------------------- SDE time


def test_cumulative_time_constant():
    t = cumulative_time(Constant(0.1).values(5))
    np.testing.assert_allclose(t, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-14, atol=0)
    assert t[0] == 0.0


def test_cumulative_time_step_decay():
    # eta = [1, 1, 0.1, 0.1]
    t = cumulative_time(StepDecay(1.0, at=(0.5,), factors=(10.0,)).values(4))
    np.testing.assert_allclose(t, [0.0, 1.0, 2.0, 2.1, 2.2], rtol=1e-14)


def test_cumulative_time_axis():
    lrs = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(cumulative_time(lrs), [[0, 1, 3, 6], [0, 0.5, 1.0, 1.5]])
    np.testing.assert_allclose(
        cumulative_time(lrs, axis=0), [[0, 0, 0], [1, 2, 3], [1.5, 2.5, 3.5]]
    )
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        cumulative_time(lrs, axis=2)
    with pytest.raises(ValueError, match="at least one dimension"):
        cumulative_time(0.1)
