"""Property-based checks (hypothesis) of invariants that must hold for any valid input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdsde.dynamics import PiecewiseEpochs, StepDecay, cumulative_time
from sgdsde.random import uniform_indices, without_replacement
from sgdsde.run.grids import eval_grid

FAST = settings(max_examples=60, deadline=None)


@FAST
@given(
    lr=st.floats(1e-4, 10.0),
    fracs=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=3, unique=True),
    factor=st.floats(1.01, 20.0),
    n_steps=st.integers(1, 5000),
)
def test_step_decay_is_positive_and_non_increasing(lr, fracs, factor, n_steps):
    sched = StepDecay(lr, tuple(sorted(fracs)), (factor,) * len(fracs))
    eta = sched.values(n_steps)
    assert eta.shape == (n_steps,) and np.all(eta > 0) and eta[0] <= lr
    assert np.all(np.diff(eta) <= 0)
    t = cumulative_time(eta)
    assert t[0] == 0 and np.allclose(np.diff(t), eta)


@FAST
@given(
    lr=st.floats(1e-3, 1.0),
    phase_end=st.floats(0.05, 0.85),
    q=st.floats(1.0001, 1.1),
    n_steps=st.integers(100, 20000),
)
def test_piecewise_epochs_ends_at_a_hundredth_of_its_peak(lr, phase_end, q, n_steps):
    eta = PiecewiseEpochs(lr, phase_end, warmup_exp=q).values(n_steps)
    peak = lr * q ** (100 * phase_end)
    assert np.isclose(eta[-1], peak / 100, rtol=1e-12)
    assert np.all(eta <= peak * (1 + 1e-12))


@FAST
@given(n=st.integers(1, 60), data=st.data())
def test_without_replacement_batches_are_distinct_in_range(n, data):
    batch = data.draw(st.integers(1, n))
    seed = data.draw(st.integers(0, 2**32 - 1))
    idx = without_replacement(np.random.default_rng(seed), n, batch, 20)
    assert idx.shape == (20, batch)
    assert np.all((idx >= 0) & (idx < n))
    assert all(len(set(row)) == batch for row in idx)


@FAST
@given(n=st.integers(1, 1000), seed=st.integers(0, 2**32 - 1), split=st.integers(1, 49))
def test_uniform_indices_are_in_range_and_split_invariant(n, seed, split):
    whole = uniform_indices(np.random.default_rng(seed), n, (50, 1))
    rng = np.random.default_rng(seed)
    parts = np.concatenate(
        [uniform_indices(rng, n, (split, 1)), uniform_indices(rng, n, (50 - split, 1))]
    )
    assert np.all((whole >= 0) & (whole < n))
    np.testing.assert_array_equal(whole, parts)


@FAST
@given(n_steps=st.integers(1, 10**6), n_dense=st.integers(0, 200), n_points=st.integers(2, 400))
def test_eval_grid_is_sorted_unique_and_spans_the_run(n_steps, n_dense, n_points):
    grid = eval_grid(n_steps, n_dense=n_dense, n_points=n_points)
    assert grid[0] == 0 and grid[-1] == n_steps
    assert np.all(np.diff(grid) > 0)
