"""Label noise that follows a schedule: SGD(label_noise=Piecewise(...)) adds noise of
variance delta_k at step k (large noise, then fine-tuning without it, in one call)."""

from __future__ import annotations

import numpy as np
import pytest

import sgdsde as s
from sgdsde.dynamics import GD, SGD, simulate_sgd
from sgdsde.dynamics.schedules import SCHEDULES, Piecewise, schedule_from_config

N = 400


@pytest.fixture(scope="module")
def problem():
    data = s.sparse_regression(n=12, d=20, k=3, seed=2)
    model = s.make_model("diagonal_linear", d=20, alpha=0.3)
    return model, data


def test_piecewise_values_and_change_points():
    sched = Piecewise(levels=(0.1, 0.0, 0.3), at=(0.25, 0.5))
    k = np.array([0, 24, 25, 49, 50, 99])
    assert sched(k, 100).tolist() == [0.1, 0.1, 0.0, 0.0, 0.3, 0.3]
    assert sched.change_points(100) == [25, 50] and sched.peak(100) == 0.3
    assert schedule_from_config(sched.to_config()) == sched and "piecewise" in SCHEDULES


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"levels": (0.1, 0.0), "at": ()}, "one entry more than at"),
        ({"levels": (0.1, -1.0), "at": (0.5,)}, r"levels\[1\] must be a finite number >= 0"),
        ({"levels": (0.1, 0.0), "at": (1.5,)}, r"at\[0\]"),
        ({"levels": (0.1, 0.0, 0.2), "at": (0.6, 0.4)}, "strictly increasing"),
    ],
)
def test_piecewise_refuses_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        Piecewise(**fields)


@pytest.mark.parametrize("engine", ["numba", "numpy", "torch"])
def test_noise_then_fine_tuning_equals_the_two_runs_one_after_the_other(problem, engine):
    model, data = problem
    sched = Piecewise(levels=(0.05, 0.0), at=(0.5,))
    one = simulate_sgd(
        model,
        data,
        0.1,
        n_steps=N,
        sgd=GD(sched),
        seed=3,
        save_params=True,
        engine=engine,
        save_steps=[0, N // 2, N],
    )
    first = simulate_sgd(
        model, data, 0.1, n_steps=N // 2, sgd=GD(0.05), seed=3, save_params=True, engine=engine
    )
    theta_half = first.params.isel(step=-1).values
    second = simulate_sgd(
        model,
        data,
        0.1,
        n_steps=N // 2,
        sgd=GD(0.0),
        theta0=theta_half,
        save_params=True,
        engine=engine,
    )
    plain = simulate_sgd(model, data, 0.1, n_steps=N // 2, sgd=GD(), seed=3, save_params=True)
    assert not np.allclose(theta_half, plain.params.isel(step=-1).values)  # the noise acted
    np.testing.assert_allclose(one.params.sel(step=N // 2).values, theta_half, rtol=1e-12)
    np.testing.assert_allclose(
        one.params.isel(step=-1).values, second.params.isel(step=-1).values, rtol=1e-11
    )
    assert float(one.label_noise[0]) == 0.05  # the coordinate is the peak delta
    assert one.attrs["config"].count("piecewise") == 1


def test_constant_schedule_is_bit_identical_to_a_number(problem):
    model, data = problem
    kw = dict(n_steps=N, seed=5, save_params=True)
    number = simulate_sgd(model, data, 0.1, sgd=SGD(batch_size=2, label_noise=0.02), **kw)
    constant = simulate_sgd(
        model, data, 0.1, sgd=SGD(batch_size=2, label_noise=Piecewise((0.02,))), **kw
    )
    np.testing.assert_array_equal(number.params.values, constant.params.values)


def test_per_trajectory_noise_schedules_and_numbers_mix(problem):
    model, data = problem
    sgd = SGD(batch_size=3, label_noise=[0.02, Piecewise((0.02, 0.0), at=(0.5,)), 0.0])
    ds = simulate_sgd(
        model,
        data,
        0.1,
        n_steps=N,
        sgd=sgd,
        seed=[7, 7, 7],
        save_params=True,
        save_steps=np.arange(0, N + 1, 50),
    )
    p = ds.params.values
    # same seed: identical until the noise switches off at N/2, then different
    np.testing.assert_array_equal(p[0, ds.step.values <= N // 2], p[1, ds.step.values <= N // 2])
    assert not np.allclose(p[0, -1], p[1, -1]) and not np.allclose(p[1, -1], p[2, -1])
    assert ds.label_noise.values.tolist() == [0.02, 0.02, 0.0]


def test_a_config_takes_a_label_noise_schedule_table():
    from sgdsde.experiments import ConfigError, experiment_for, load_config

    config = load_config("dln_sparse_sgd")
    config["sgd"]["label_noise"] = {"name": "piecewise", "levels": [0.05, 0.0], "at": [0.5]}
    plan = experiment_for(config).prepare(config, n_steps=100)
    assert plan.sgd.label_noise == Piecewise(levels=(0.05, 0.0), at=(0.5,))
    config["sgd"]["label_noise"] = -1.0
    with pytest.raises(ConfigError, match="sgd: label_noise"):
        experiment_for(config).prepare(config, n_steps=100)
    config["sgd"]["label_noise"] = {"name": "piecewise", "levels": [0.05], "at": [0.5]}
    with pytest.raises(ConfigError, match=r"sgd\.label_noise: levels must have one entry more"):
        experiment_for(config).prepare(config, n_steps=100)
