"""Batch sizes that follow a schedule: SGD(batch_size=Piecewise(...)) samples B_k examples
at step k (small batches, then larger ones, in one call)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sgdsde as s
from sgdsde.dynamics import GD, SGD, simulate_sgd
from sgdsde.dynamics.engines import SGDProblem
from sgdsde.dynamics.engines import base as engine_base
from sgdsde.dynamics.schedules import Piecewise, StepDecay, as_schedule
from sgdsde.random import trajectory_streams, uniform_indices, without_replacement

N = 40
ENGINE_NAMES = ["numba", "numpy", "torch"]


@pytest.fixture(scope="module")
def problem():
    data = s.sparse_regression(n=12, d=20, k=3, seed=2)
    model = s.make_model("diagonal_linear", d=20, alpha=0.3)
    theta0 = model.init(trajectory_streams(1, 4)["init"])
    return model, data, theta0


def _params(model, data, sgd, engine, theta0, seed=3, n_steps=N, lr=0.05, **kw):
    ds = simulate_sgd(
        model,
        data,
        lr,
        n_steps=n_steps,
        sgd=sgd,
        seed=seed,
        theta0=theta0,
        save_params=True,
        save_steps=np.arange(n_steps + 1),
        engine=engine,
        **kw,
    )
    return ds, ds.params.values  # (T, S, p)


def _reference(model, data, theta0, lr, batch, delta, seed, replace=False):
    """theta <- theta - eta (1/B_k) sum_b (r_i + sqrt(delta) z_b) grad f(x_i), step by
    step, each step drawing from the trajectory's streams exactly what
    ``SGDProblem.draw_block`` documents: B_k doubles (with replacement or B_k = 1) or n
    doubles (the B_k smallest keys), then B_k normals when delta > 0."""
    X, y, n = data.X, data.y, data.n
    T = len(batch)
    streams = trajectory_streams(seed, T)
    theta = np.array(theta0, dtype=np.float64)
    path = [theta.copy()]
    for k in range(batch.shape[1]):
        for t in range(T):
            B = int(batch[t, k])
            rng = streams["batch"][t]
            if replace or B == 1:
                idx = uniform_indices(rng, n, (1, B))[0]
            else:
                idx = without_replacement(rng, n, B, 1)[0]
            th = theta[t : t + 1]
            r = model.residuals(th, X[idx], y[idx])[0]
            if delta[t] > 0:
                r = r + np.sqrt(delta[t]) * streams["label_noise"][t].standard_normal(B)
            grads = model.per_example_grads(th, X[idx])[0]
            theta[t] -= lr * (r @ grads) / B
        path.append(theta.copy())
    return np.stack(path, axis=1)


@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("replace", [False, True])
def test_constant_schedule_is_bit_identical_to_an_integer(problem, engine, replace):
    model, data, theta0 = problem
    n = data.n
    ints = SGD(
        batch_size=[1, 3, 5, n], label_noise=[0.0, 0.02, 0.0, 0.01], with_replacement=replace
    )
    sched = SGD(
        batch_size=[Piecewise((1,)), Piecewise((3,)), 5, Piecewise((n,))],
        label_noise=[0.0, 0.02, 0.0, 0.01],
        with_replacement=replace,
    )
    _, a = _params(model, data, ints, engine, theta0)
    ds, b = _params(model, data, sched, engine, theta0)
    np.testing.assert_array_equal(a, b)
    assert ds.batch_size.values.tolist() == [1, 3, 5, n]


@pytest.mark.parametrize("replace", [False, True])
def test_two_phase_schedule_matches_the_hand_computed_steps_on_every_engine(
    problem, replace, monkeypatch
):
    """The schedule switches inside a chunk of draws (chunks of 7 steps): every engine
    follows the step-by-step reference drawn from the documented stream consumption,
    and agrees with the others to 1e-12."""
    model, data, theta0 = problem
    levels = [(1, 4), (3, 1), (2, data.n), (5, 2)]
    sgd = SGD(
        batch_size=[Piecewise(lv, at=(0.5,)) for lv in levels],
        label_noise=[0.0, 0.03, 0.0, 0.02],
        with_replacement=replace,
    )
    batch = np.array([[lv[0]] * (N // 2) + [lv[1]] * (N // 2) for lv in levels])
    ref = _reference(model, data, theta0, 0.05, batch, [0.0, 0.03, 0.0, 0.02], 3, replace)
    got = {e: _params(model, data, sgd, e, theta0)[1] for e in ENGINE_NAMES}
    assert not np.allclose(ref[:, N // 2], ref[:, -1])  # the runs moved after the switch
    for e in ENGINE_NAMES:
        np.testing.assert_allclose(got[e], ref, rtol=1e-10, atol=1e-14, err_msg=e)
        np.testing.assert_allclose(got[e], got["numpy"], rtol=1e-12, atol=1e-15, err_msg=e)
    monkeypatch.setattr(engine_base, "block_steps", lambda *_: 7)
    np.testing.assert_array_equal(_params(model, data, sgd, "numba", theta0)[1], got["numba"])


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_single_samples_then_full_batches_equal_the_two_runs_one_after_the_other(problem, engine):
    """Piecewise((1, n)): the first half is bit for bit B = 1 SGD (same seed, same
    stream); the second half samples a permutation of the data at each step, which is
    GD's update up to the order of summation: a GD run from the half-way point."""
    model, data, theta0 = problem
    n = data.n
    sgd = SGD(batch_size=Piecewise((1, n), at=(0.5,)))
    ds, one = _params(model, data, sgd, engine, theta0[:1])
    _, first = _params(model, data, SGD(batch_size=1), engine, theta0[:1], n_steps=N // 2)
    np.testing.assert_array_equal(one[:, : N // 2 + 1], first)
    _, second = _params(model, data, GD(), engine, first[:, -1], n_steps=N // 2)
    np.testing.assert_allclose(one[:, N // 2 :], second, rtol=1e-12, atol=1e-15)
    assert not np.allclose(first[:, -1], second[:, -1])  # the GD phase moved
    assert int(ds.batch_size[0]) == n  # the coordinate is the peak B
    config = json.loads(ds.attrs["config"])
    assert config["sgd"]["batch_size"] == [
        {"name": "piecewise", "levels": [1.0, 12.0], "at": [0.5]}
    ]


def _problem(model, data, batch_schedules, replace=False):
    n = data.n
    return SGDProblem(
        model=model,
        data=data,
        schedules=(as_schedule(0.1),) * len(batch_schedules),
        batch_size=np.full(len(batch_schedules), n),
        label_noise=np.zeros(len(batch_schedules)),
        with_replacement=replace,
        n_steps=N,
        batch_size_schedules=batch_schedules,
    )


def test_a_schedule_reaching_n_part_of_the_run_is_not_full(problem):
    model, data, _ = problem
    n = data.n
    prob = _problem(model, data, (Piecewise((1, n), at=(0.5,)), Piecewise((n,)), None))
    assert prob.full.tolist() == [False, True, True]
    assert prob.batch_steps(np.array([0, 19, 20, 39])).tolist() == [[1, 1, n, n]] + [[n] * 4] * 2
    assert _problem(model, data, (Piecewise((n,)),), replace=True).full.tolist() == [False]


def test_per_trajectory_and_shared_schedules_mix_with_integers(problem):
    model, data, _ = problem
    shared = Piecewise((1, 6), at=(0.25,))
    a = simulate_sgd(model, data, 0.05, n_steps=N, sgd=SGD(batch_size=shared), n_traj=3, seed=4)
    b = simulate_sgd(model, data, 0.05, n_steps=N, sgd=SGD(batch_size=[shared, 2, 6]), seed=4)
    assert a.batch_size.values.tolist() == [6, 6, 6] and b.batch_size.values.tolist() == [6, 2, 6]
    np.testing.assert_array_equal(a.train_loss.values[0], b.train_loss.values[0])
    assert not np.allclose(b.train_loss.values[0, -1], b.train_loss.values[1, -1])


@pytest.mark.parametrize(
    ("batch_size", "message"),
    [
        (Piecewise((1, 2.5), at=(0.5,)), r"levels\[1\] must be an integer >= 1 \(got 2.5\)"),
        (Piecewise((0, 2), at=(0.5,)), r"levels\[0\] must be an integer >= 1"),
        ([1, Piecewise((1.5,))], r"levels\[0\] must be an integer >= 1 \(got 1.5\).*Piecewise"),
    ],
)
def test_non_integer_levels_are_refused_at_construction(batch_size, message):
    with pytest.raises(ValueError, match=message):
        SGD(batch_size=batch_size)


def test_schedules_beyond_n_or_not_integer_over_the_run_are_refused(problem):
    model, data, _ = problem
    with pytest.raises(
        ValueError, match=r"integer batch sizes in \[1, n = 12\].*B_k = 16 at step k = 20"
    ):
        simulate_sgd(model, data, 0.1, n_steps=N, sgd=SGD(batch_size=Piecewise((1, 16), at=(0.5,))))
    decay = StepDecay(lr=4.0, at=(0.5,), factors=(3.0,))  # 4, then 4/3
    with pytest.raises(ValueError, match=r"B_k = 1.33.* at step k = 20.*integer levels"):
        simulate_sgd(model, data, 0.1, n_steps=N, sgd=SGD(batch_size=decay))


def test_a_config_takes_a_batch_size_schedule_table():
    from sgdsde.experiments import ConfigError, experiment_for, load_config

    config = load_config("dln_sparse_sgd")
    config["sgd"]["batch_size"] = {"name": "piecewise", "levels": [1, 16], "at": [0.5]}
    plan = experiment_for(config).prepare(config, n_steps=100)
    assert plan.sgd.batch_size == Piecewise(levels=(1, 16), at=(0.5,))
    config["sgd"]["batch_size"] = {"name": "piecewise", "levels": [1, 2.5], "at": [0.5]}
    with pytest.raises(
        ConfigError, match=r"sgd: batch_size schedule levels\[1\] must be an integer"
    ):
        experiment_for(config).prepare(config, n_steps=100)
    config["sgd"]["batch_size"] = {"name": "piecewise", "levels": [1, 10_000], "at": [0.5]}
    with pytest.raises(ConfigError, match=r"sgd\.batch_size: must be <= n = \d+ \(got 10000\)"):
        experiment_for(config).prepare(config, n_steps=100)
    config["sgd"]["batch_size"] = {"name": "piecewise", "levels": [1], "at": [0.5]}
    with pytest.raises(ConfigError, match=r"sgd\.batch_size: levels must have one entry more"):
        experiment_for(config).prepare(config, n_steps=100)


def test_sgd_round_trips_its_config_with_schedules():
    sgd = SGD(batch_size=Piecewise((1, 16), at=(0.5,)), label_noise=Piecewise((0.1, 0.0), (0.5,)))
    cfg = json.loads(json.dumps(sgd.to_config()))
    assert cfg["batch_size"] == {"name": "piecewise", "levels": [1.0, 16.0], "at": [0.5]}
    assert SGD(**cfg) == sgd
    mixed = SGD(batch_size=[2, Piecewise((1, 4), at=(0.25,))], label_noise=[0.0, 0.1])
    assert SGD(**json.loads(json.dumps(mixed.to_config()))).batch_size == list(mixed.batch_size)


@pytest.mark.parametrize(
    "sgd",
    [
        SGD(batch_size=Piecewise(levels=(1, 4), at=(0.5,))),
        SGD(batch_size=2, label_noise=Piecewise(levels=(0.1, 0.0), at=(0.5,))),
    ],
)
def test_the_matched_sde_refuses_a_scheduled_batch_size_or_label_noise(sgd):
    from sgdsde.sde.noise import noise_for_sgd

    with pytest.raises(ValueError, match="the matched SDE takes a constant"):
        noise_for_sgd(sgd, 0.1, 10)
