"""The recorder (``sgdsde.run.recording``): driven by hand on a known parameter path
(divergence steps, NaN on a diverged save point, time averages, first passages,
memory), then through ``simulate_sgd`` / ``simulate_sde`` against densely saved
parameters."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

import sgdsde as s
from sgdsde.data import RegressionData
from sgdsde.dynamics import SGD, simulate_sgd
from sgdsde.metrics import (
    Beta,
    FirstPassage,
    L0Norm,
    L1Norm,
    Metric,
    Params,
    TimeAverage,
    TrainLoss,
)
from sgdsde.models import LinearRegression, TwoLayerReLU
from sgdsde.run.recording import NOT_RECORDED, Recorder, masked
from sgdsde.sde import LabelNoise, simulate_sde

MAX_LOSS = 10.0


@pytest.fixture(scope="module")
def problem():
    """f(x) = theta . x with X = diag(1, 2), y = (1, 1): loss(theta) =
    ((theta_1 - 1)^2 + (2 theta_2 - 1)^2) / 4."""
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([1.0, 1.0])
    return LinearRegression(d=2), RegressionData(X, y, X, y)


def path(k: int) -> np.ndarray:
    """theta_k of two trajectories: (k/10, 0), whose loss ((k/10 - 1)^2 + 1) / 4 first
    exceeds MAX_LOSS = 10 at k = 73 (k/10 - 1 > sqrt(39) = 6.245), and (1, 0.5), loss 0."""
    return np.array([[k / 10, 0.0], [1.0, 0.5]])


def drive(recorder: Recorder) -> np.ndarray:
    """Observe every step of recorder.steps on the known path; return diverged_step."""
    diverged_step = np.full(recorder.n_traj, -1, dtype=np.int64)
    for k in recorder.steps:
        recorder.observe(int(k), path(int(k)), diverged_step)
    return diverged_step


def make(problem, save, metrics=(), **kw):
    model, data = problem
    opts = {"l0_threshold": 0.0, "max_loss": MAX_LOSS, "save_params": False} | kw
    return Recorder(model, data, np.asarray(save), 2, metrics=metrics, **opts)


def test_divergence_on_a_save_point_reads_not_recorded(problem):
    rec = make(problem, [0, 10, 50, 73, 100], save_params=True)
    assert rec.steps.tolist() == [0, 10, 50, 73, 100]
    diverged_step = drive(rec)
    assert diverged_step.tolist() == [73, -1]
    v = rec.variables()
    loss = v["train_loss"][1]
    np.testing.assert_allclose(loss[0, :3], [0.5, 0.25, 4.25])  # ((k/10 - 1)^2 + 1) / 4
    assert np.isnan(loss[0, 3:]).all() and (loss[1] == 0).all()
    assert v["l0_norm"][1].dtype == np.int64
    assert v["l0_norm"][1][0].tolist() == [0, 1, 1, NOT_RECORDED, NOT_RECORDED]
    assert v["l0_norm"][1][1].tolist() == [2] * 5
    assert np.isnan(v["params"][1][0, 3:]).all() and v["params"][0] == ("traj", "step", "param")
    np.testing.assert_array_equal(v["params"][1][0, 2], [5.0, 0.0])


def test_diverged_step_is_the_true_step_when_every_step_is_observed(problem):
    """Save steps miss step 73; a time average sampling every step makes the recorder
    see it, and diverged_step is the true step (not the next save point)."""
    sparse = make(problem, [0, 50, 100])
    assert drive(sparse).tolist() == [100, -1]
    dense = make(problem, [0, 50, 100], [TimeAverage("train_loss", window=100)])
    assert len(dense.steps) == 101
    assert drive(dense).tolist() == [73, -1]
    avg = dense.variables()["train_loss_time_average"][1]
    assert np.isnan(avg[0, 2]) and np.isfinite(avg[0, :2]).all()


def test_time_average_equals_the_dense_average(problem):
    model, data = problem
    save = np.array([0, 10, 50, 72])
    metrics = [
        TimeAverage(L1Norm(), window=20, every=3),
        TimeAverage(Params(), window=7, every=2, save_as="theta_avg"),
    ]
    rec = make(problem, save, metrics)
    drive(rec)
    got = rec.variables()
    assert got["theta_avg"][0] == ("traj", "step", "param")
    for j, s_ in enumerate(save):
        ks = [k for k in range(0, s_ + 1, 3) if k > s_ - 20]
        want = np.mean([L1Norm().evaluate(path(k), model, data) for k in ks], axis=0)
        np.testing.assert_allclose(got["l1_norm_time_average"][1][:, j], want, rtol=1e-13)
        ks = [k for k in range(0, s_ + 1, 2) if k > s_ - 7]
        want = np.mean([path(k) for k in ks], axis=0)
        np.testing.assert_allclose(got["theta_avg"][1][:, j], want, rtol=1e-13)
    # by hand: at s = 10 the samples are k = 0, 3, 6, 9 -> mean of k/10 = 0.45
    assert got["l1_norm_time_average"][1][0, 1] == pytest.approx(0.45, rel=1e-14)


def test_first_passage_by_hand(problem):
    """l1 of trajectory 0 is k/10: >= 2 first at k = 20; >= 8 only after its divergence
    at 73. Trajectory 1 has l1 = 1.5."""
    metrics = [
        FirstPassage(L1Norm(), 2.0, "above", every=1, save_as="exact"),
        FirstPassage(L1Norm(), 2.0, "above", save_as="on_save_steps"),
        FirstPassage(L1Norm(), 2.0, "above", every=7, save_as="every_7"),
        FirstPassage(L1Norm(), 8.0, "above", every=1, save_as="after_divergence"),
        FirstPassage(L1Norm(), 1.5, "below", every=1, save_as="below"),
        FirstPassage(TrainLoss(), 0.25, "below", every=5, save_as="loss"),
    ]
    rec = make(problem, [0, 10, 50, 100], metrics)
    drive(rec)
    got = {name: v[1].tolist() for name, v in rec.variables().items() if v[0] == ("traj",)}
    assert got == {
        "exact": [20, -1],
        "on_save_steps": [50, -1],
        "every_7": [21, -1],
        "after_divergence": [-1, -1],
        "below": [0, 0],
        "loss": [10, 0],  # trajectory 0's loss ((k/10 - 1)^2 + 1) / 4 is 0.25 at k = 10
    }
    assert rec.variable_attrs()["every_7"]["level"] == 2.0


def test_steps_are_the_union_and_observe_checks_the_order(problem):
    rec = make(
        problem,
        [5, 12],
        [TimeAverage("l1_norm", window=4, every=2), FirstPassage("l1_norm", 1.0, every=10)],
    )
    # 0 always; save 5, 12; samples {2, 4} in (1, 5] and {10, 12} in (8, 12]; 0, 10 for
    # the passage
    assert rec.steps.tolist() == [0, 2, 4, 5, 10, 12]
    with pytest.raises(ValueError, match=r"next step in recorder\.steps is 0"):
        rec.observe(4, path(4), np.full(2, -1))


def test_recorder_memory_does_not_grow_with_the_sampled_steps(problem):
    """A time average over 20,000 sampled steps holds as much as one over 20: the
    (T, S) rows plus S counts."""
    save = np.linspace(0, 20_000, 5).astype(np.int64)
    short = make(problem, save, [TimeAverage("l1_norm", window=20)])
    long = make(problem, save, [TimeAverage("l1_norm", window=20_000)])
    assert len(long.steps) == 20_001 and len(short.steps) == 1 + 4 * 20
    sizes = []
    for rec in (short, long):
        diverged_step = np.full(2, -1, dtype=np.int64)
        tracemalloc.start()
        for k in rec.steps:
            rec.observe(int(k), np.array([[0.0, 0.0], [1.0, 0.5]]), diverged_step)
        retained, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        sizes.append((rec.nbytes, retained))
    assert sizes[0][0] == sizes[1][0] == 6 * 2 * 5 * 8 + 5 * 8  # 6 metrics' rows, counts
    assert sizes[1][1] < sizes[0][1] + 4096, sizes


def test_names_and_checks(problem):
    _, data = problem
    with pytest.raises(ValueError, match="'l0_norm' is recorded twice"):
        make(problem, [0], [L0Norm(0.1)])
    with pytest.raises(ValueError, match="'params' is recorded twice"):
        make(problem, [0], ["params"], save_params=True)
    with pytest.raises(ValueError, match=r"name\(s\) \['time'\]"):
        make(problem, [0], [("time", lambda th, m, d: th[:, 0])])
    with pytest.raises(ValueError, match=r"name\(s\) \['step'\]"):
        make(problem, [0], [Metric("v", lambda th, m, d: th, dims=("step",))])
    relu = TwoLayerReLU(d=2, m=2)
    with pytest.raises(ValueError, match="needs a model linear in x"):
        Recorder(
            relu,
            data,
            [0],
            2,
            metrics=[TimeAverage(Beta(), window=2)],
            l0_threshold=0.0,
            max_loss=1.0,
            save_params=False,
        )
    # one metric (not in a list), by name, config or pair
    for one in ("beta", {"name": "beta"}, ("b", lambda th, m, d: th[:, 0]), Beta()):
        assert len(make(problem, [0], one).metrics) == 6


def test_attrs_and_masked(problem):
    rec = make(problem, [0, 100], ["beta"], l0_threshold=0.5)
    drive(rec)
    attrs = rec.variable_attrs()
    assert attrs["l0_norm"]["threshold"] == 0.5 and attrs["l0_norm"]["not_recorded"] == -1
    assert attrs["l0_norm"]["units"] == "count" and "not_recorded" not in attrs["train_loss"]
    assert attrs["beta"]["long_name"].startswith("linear predictor beta")
    assert rec.variables()["beta"][0] == ("traj", "step", "feature")
    import xarray as xr

    l0 = xr.DataArray(rec.variables()["l0_norm"][1], dims=("traj", "step"))
    # |0.5| > 0.5 is false: trajectory 1 counts 1
    np.testing.assert_array_equal(masked(l0).values, [[0.0, np.nan], [1.0, 1.0]])
    loss = xr.DataArray(rec.variables()["train_loss"][1])
    assert masked(loss) is loss


# ============================================================ through the simulators


@pytest.fixture(scope="module")
def dln():
    data = s.sparse_regression(n=8, d=5, k=2, n_test=30, seed=3)
    return s.make_model("diagonal_linear", d=5, alpha=0.7), data


def xtr(theta, model, data):
    """X^T r / n per trajectory, (T, d)."""
    return model.residuals(theta, data.X, data.y) @ data.X / data.n


def beta_error(theta, model, data):
    """||beta - beta*||^2 per trajectory."""
    return ((model.linear_predictor(theta) - data.beta_star) ** 2).sum(axis=1)


def test_user_metrics_equal_the_values_from_saved_params(dln, tmp_path):
    model, data = dln
    ds = simulate_sgd(
        model,
        data,
        0.1,
        n_steps=60,
        sgd=SGD(2, 0.2),
        n_traj=3,
        seed=5,
        save_params=True,
        metrics=[Metric("xtr", xtr, dims=("feature",)), ("beta_error", beta_error)],
    )
    params = ds.params.values
    assert ds.xtr.dims == ("traj", "step", "feature") and ds.xtr.shape == (3, len(ds.step), 5)
    for j in range(len(ds.step)):
        theta = params[:, j]
        r = model.predict(theta, data.X) - data.y
        np.testing.assert_allclose(ds.xtr.values[:, j], r @ data.X / 8, rtol=1e-12, atol=1e-15)
        beta = theta[:, :5] * theta[:, 5:]  # beta = u * v
        want = ((beta - data.beta_star) ** 2).sum(axis=1)
        np.testing.assert_allclose(ds.beta_error.values[:, j], want, rtol=1e-12)
    cfg = json.loads(ds.attrs["config"])
    assert [m["name"] for m in cfg["metrics"]] == ["xtr", "beta_error"]
    assert "beta_error" in cfg["metrics"][1]["function"]
    # integer counts stay integers through a save
    back = s.load_dataset(s.save_dataset(ds, tmp_path / "run.nc"))
    assert back.l0_norm.dtype == np.int64 and back.l0_norm.attrs["not_recorded"] == -1
    np.testing.assert_array_equal(back.xtr.values, ds.xtr.values)


@pytest.mark.parametrize("method", ["sgd", "sde"])
def test_time_average_and_first_passage_equal_dense_saves(dln, method):
    """A sparse grid with a time average of beta (every 3 steps over 12) and a first
    passage of the train loss (every step) equals what densely saved parameters give;
    the extra observed steps do not change the run."""
    model, data = dln
    n_steps, level = 90, 0.02

    def run(**kw):
        common = {"n_traj": 4, "seed": 7} | kw
        if method == "sgd":
            return simulate_sgd(model, data, 0.2, n_steps=n_steps, sgd=SGD(3, 0.1), **common)
        noise = LabelNoise(0.1, 0.2, 3)
        return simulate_sde(model, data, noise, dt=0.2, n_steps=n_steps, **common)

    dense = run(save_steps=np.arange(n_steps + 1), save_params=True)
    save = [0, 5, 40, 90]
    sparse = run(
        save_steps=save,
        metrics=[
            TimeAverage(Beta(), window=12, every=3),
            FirstPassage(TrainLoss(), level, every=1),
        ],
    )
    np.testing.assert_array_equal(sparse.train_loss, dense.train_loss.sel(step=save))
    params = dense.params.values
    beta = params[..., :5] * params[..., 5:]
    for j, s_ in enumerate(save):
        ks = [k for k in range(0, s_ + 1, 3) if k > s_ - 12]
        want = beta[:, ks].mean(axis=1)
        got = sparse.beta_time_average.values[:, j]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    loss = dense.train_loss.values
    below = loss <= level
    want = np.where(below.any(axis=1), below.argmax(axis=1), -1)
    assert (want >= 0).any(), "the level should be reached by some trajectory"
    np.testing.assert_array_equal(sparse.train_loss_first_passage.values, want)
    assert sparse.train_loss_first_passage.attrs["units"] == "step"


def test_diverged_run_reads_not_recorded_from_its_diverged_step(dln):
    model, data = dln
    kw = {"sgd": SGD(1), "n_traj": 3, "seed": 2, "max_loss": 50.0}
    dense = simulate_sgd(model, data, 2.0, n_steps=40, save_steps=np.arange(41), **kw)
    step = dense.diverged_step.values
    assert (step > 0).any(), "the step size should make some trajectory diverge"
    t = int(np.argmax(step > 0))
    on = simulate_sgd(model, data, 2.0, n_steps=40, save_steps=[0, int(step[t]), 40], **kw)
    np.testing.assert_array_equal(on.diverged_step, step)
    assert np.isnan(on.train_loss.values[t, 1:]).all() and np.isfinite(on.train_loss[t, 0])
    assert (on.l0_norm.values[t, 1:] == NOT_RECORDED).all()
    assert np.isnan(masked(on.l0_norm).values[t, 1:]).all()
