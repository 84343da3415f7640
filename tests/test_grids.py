"""Save grids: contents, endpoints, spacing and validation."""

from __future__ import annotations

import numpy as np
import pytest

from sgdsde.run.grids import as_grid, eval_grid


def test_paper_default_grid():
    g = eval_grid(10_000)
    assert g.dtype == np.int64
    assert np.all(np.diff(g) > 0)  # sorted and unique
    assert g[0] == 0 and g[-1] == 10_000
    np.testing.assert_array_equal(g[:100], np.arange(100))
    # linspace step 10000/249 = 40.16: 40.16 -> 40, 80.32 -> 80, 120.48 -> 120, 160.64 -> 161.
    assert {40, 80, 120, 161, 9960}.issubset(set(g.tolist()))
    assert 160 not in g
    # 100 dense + 250 spread, of which 0, 40 and 80 are already dense.
    assert g.size == 347


def test_short_run_is_every_step():
    np.testing.assert_array_equal(eval_grid(5), np.arange(6))
    np.testing.assert_array_equal(eval_grid(1, n_dense=0, n_points=2), [0, 1])


def test_no_dense_part_and_endpoints_always_present():
    np.testing.assert_array_equal(eval_grid(100, n_dense=0, n_points=5), [0, 25, 50, 75, 100])
    np.testing.assert_array_equal(eval_grid(10, n_dense=3, n_points=2), [0, 1, 2, 10])


def test_log_spacing():
    # geomspace(1, 1000, 4) = 1, 10, 100, 1000; 0 is always added.
    np.testing.assert_array_equal(
        eval_grid(1000, n_dense=0, n_points=4, spacing="log"), [0, 1, 10, 100, 1000]
    )
    g = eval_grid(100_000, n_dense=10, n_points=50, spacing="log")
    assert g[0] == 0 and g[-1] == 100_000
    assert np.all(np.diff(g) > 0)
    # Log spacing puts most points early: at least half lie below 1% of the run.
    assert np.count_nonzero(g < 1000) > g.size // 2


def test_log_spacing_single_step_run():
    np.testing.assert_array_equal(eval_grid(1, n_dense=0, spacing="log"), [0, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_steps": 0}, r"n_steps must be >= 1 \(got 0\)"),
        ({"n_steps": 10.0}, r"n_steps must be an integer"),
        ({"n_steps": True}, r"n_steps must be an integer"),
        ({"n_steps": 10, "n_dense": -1}, r"n_dense must be >= 0"),
        ({"n_steps": 10, "n_points": 1}, r"n_points must be >= 2 \(got 1\)"),
        ({"n_steps": 10, "spacing": "geometric"}, r"spacing must be one of \['linear', 'log'\]"),
    ],
)
def test_eval_grid_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eval_grid(**kwargs)


def test_as_grid_sorts_and_dedupes_without_adding_endpoints():
    g = as_grid([5, 3, 3, 7], n_steps=10)
    assert g.dtype == np.int64
    np.testing.assert_array_equal(g, [3, 5, 7])
    np.testing.assert_array_equal(as_grid(np.array([0.0, 10.0]), 10), [0, 10])
    np.testing.assert_array_equal(as_grid(4, 10), [4])


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ([], r"steps is empty"),
        ([0, 11], r"steps must lie in \[0, 10\]"),
        ([-1, 3], r"steps must lie in \[0, 10\]"),
        ([1.5], r"steps must be whole numbers \(got 1.5\)"),
        ([np.nan], r"steps must be whole numbers"),
        (["a"], r"steps must be integers"),
        ([True, False], r"steps must be integers"),
        ([[1, 2]], r"steps must be 1-D"),
    ],
)
def test_as_grid_validation(steps, match):
    with pytest.raises(ValueError, match=match):
        as_grid(steps, 10)


def test_as_grid_validates_n_steps():
    with pytest.raises(ValueError, match=r"n_steps must be >= 1"):
        as_grid([0], 0)
