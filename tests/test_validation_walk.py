"""The walk metrics of torch networks (EvaluationOptions.walk, sgdsde.validation.walk)
against hand computations from saved iterates: the exact quadratic loss along a segment
of a linear network with square loss, the cosine of consecutive updates, a simulator's
stride of substeps; walk = False changes nothing; the [evaluation] table accepts it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdsde.validation import (
    MLP,
    EvaluationOptions,
    load_validation_config,
    results_dataset,
    simulate_label_noise_sde,
    simulate_svag,
    teacher_images,
    train_sgd,
    validate,
)
from sgdsde.validation.runner import evaluation_options
from sgdsde.validation.trainer import RECORD_ATTRS, SCALAR_RECORDS, parameter_vector
from sgdsde.validation.walk import WALK_RECORDS, walk_steps

#: Evaluations at the ends only, without the block metrics, for runs that give an iterate.
CHEAP = EvaluationOptions(eval_every=10**6, features=False, collapse=False)

DATA = teacher_images(n=48, n_test=8, input_shape=(1, 3, 3), n_classes=3, seed=4)


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)  # the test's own draw of the initial weights (reproducible)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 3)).double()


def _iterate(n_steps: int, **kwargs) -> np.ndarray:
    """theta_{n_steps} of the run ``train_sgd(..., n_steps=n_steps, **kwargs)`` (the same
    minibatches as a longer run of the seed), flat float64; theta_0 for n_steps = 0."""
    network = kwargs.pop("network")
    if n_steps == 0:
        return parameter_vector(network).numpy()
    kwargs["evaluation"] = CHEAP  # the iterate does not depend on the evaluations
    return parameter_vector(train_sgd(network, DATA, n_steps=n_steps, **kwargs).network).numpy()


def _quadratic(theta_a: np.ndarray, theta_b: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """The square loss 1/(2n) sum_i ||W x_i + b - e_{y_i}||^2 of the linear network on
    the whole training set along theta_a -> theta_b, from its closed form: residuals
    r0 + alpha r1, so f = c + b alpha + a alpha^2 exactly."""
    X = DATA.X.reshape(DATA.n, -1)
    targets = np.eye(3)[DATA.y]

    def residual(theta):
        W, b = theta[:27].reshape(3, 9), theta[27:]
        return X @ W.T + b - targets

    r0 = residual(theta_a)
    r1 = residual(theta_b) - r0  # linear in theta: the residual of the direction
    c, b, a = 0.5 * (r0**2).sum(1).mean(), (r0 * r1).sum(1).mean(), 0.5 * (r1**2).sum(1).mean()
    return c + b * alphas + a * alphas**2


def _top_curvature() -> float:
    """lambda_max of the square loss's Hessian: that of (1/n) [x, 1]^T [x, 1]."""
    X1 = np.hstack([DATA.X.reshape(DATA.n, -1), np.ones((DATA.n, 1))])
    return float(np.linalg.eigvalsh(X1.T @ X1 / DATA.n)[-1])


@pytest.mark.parametrize(("step_times_curvature", "crosses"), [(1.8, True), (0.4, False)])
def test_segment_floor_of_a_linear_network_equals_the_exact_quadratic(
    step_times_curvature, crosses
):
    """Full-batch GD on the quadratic loss of a linear network: the recorded segment loss,
    floor height, height above the floor and interior flag equal those of the closed-form
    quadratic between the saved iterates; eta > 1/lambda overshoots the valley floor
    (interior minimum once the step follows the top direction), eta < 1/lambda never."""
    eta = step_times_curvature / _top_curvature()
    points = 21
    run = dict(
        network=_linear(),
        schedule=eta,
        batch_size=DATA.n,
        loss="square",
        evaluation=EvaluationOptions(
            eval_every=2, metrics_size=DATA.n, walk=True, walk_points=points
        ),
    )
    result = train_sgd(data=DATA, n_steps=10, **run)
    assert result.steps.tolist() == [0, 2, 4, 6, 8, 10]
    alphas = np.linspace(0, 1, points)
    assert np.isnan(result.segment_loss[0]).all() and np.isnan(result.floor_height[0])
    for i, e in enumerate(result.steps[1:], start=1):
        exact = _quadratic(_iterate(e - 1, **run), _iterate(e, **run), alphas)
        np.testing.assert_allclose(result.segment_loss[i], exact, rtol=1e-12, atol=0)
        assert result.floor_height[i] == pytest.approx(exact.min(), rel=1e-12)
        assert result.height_above_floor[i] == pytest.approx(exact[0] - exact.min(), abs=1e-12)
        assert result.interior_minimum[i] == float(exact.min() < min(exact[0], exact[-1]))
        # the segment's end is the evaluated iterate, its start the previous one
        assert exact[-1] == pytest.approx(result.train_loss[i], rel=1e-12)
    interior = result.interior_minimum[2:]  # from step 4 GD follows the top direction
    np.testing.assert_array_equal(interior, 1.0 if crosses else 0.0)
    if not crosses:  # monotone descent: the floor is the end, theta_e
        np.testing.assert_allclose(result.floor_height[1:], result.train_loss[1:], rtol=1e-12)


def test_update_cosine_equals_the_cosine_of_saved_updates():
    """Minibatch SGD on an MLP (float32, with feature taps), evaluated every 3 steps: the
    cosine at step e is that of theta_{e-1} - theta_{e-2} and theta_e - theta_{e-1} from
    separately saved runs; NaN at step 0, where no update exists."""
    network = MLP((1, 3, 3), widths=(8,), n_outputs=3, seed=1)
    run = dict(
        network=network,
        schedule=0.3,
        batch_size=8,
        loss="cross_entropy",
        evaluation=EvaluationOptions(eval_every=3, metrics_size=32, walk=True),
        seed=5,
    )
    result = train_sgd(data=DATA, n_steps=7, **run)
    assert result.steps.tolist() == [0, 3, 6, 7]
    assert np.isnan(result.update_cosine[0])
    for i, e in enumerate(result.steps[1:], start=1):
        t0, t1, t2 = (_iterate(k, **run) for k in (e - 2, e - 1, e))
        u, v = t1 - t0, t2 - t1
        want = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        assert result.update_cosine[i] == pytest.approx(want, rel=1e-10)
        assert -1 < result.update_cosine[i] < 1
    assert result.feature_sparsity  # the walk records sit beside the feature metrics


def test_walk_off_records_nothing_and_walk_on_leaves_the_run_unchanged():
    network = MLP((1, 3, 3), widths=(8,), n_outputs=3, seed=2)
    run = dict(schedule=0.2, n_steps=5, batch_size=8, loss="square", seed=3)
    plain = train_sgd(network, DATA, evaluation=EvaluationOptions(eval_every=2), **run)
    walked = train_sgd(network, DATA, evaluation=EvaluationOptions(eval_every=2, walk=True), **run)
    for key in (*WALK_RECORDS, "segment_loss"):
        assert getattr(plain, key) is None
        assert getattr(walked, key) is not None
    for key in (*SCALAR_RECORDS, "batch_losses", "steps", "time"):
        np.testing.assert_array_equal(getattr(plain, key), getattr(walked, key))
    for key in ("feature_sparsity", "vanishing_neurons"):
        for block, values in getattr(plain, key).items():
            np.testing.assert_array_equal(values, getattr(walked, key)[block])
    np.testing.assert_array_equal(parameter_vector(plain.network), parameter_vector(walked.network))
    plain_ds, walked_ds = results_dataset(plain), results_dataset(walked)
    assert not set(WALK_RECORDS) & set(plain_ds.data_vars)
    assert set(walked_ds.data_vars) - set(plain_ds.data_vars) == {*WALK_RECORDS, "segment_loss"}
    segments = walked_ds["segment_loss"]
    assert segments.dims == ("traj", "step", "segment_alpha")
    np.testing.assert_array_equal(segments.values[0], walked.segment_loss)
    np.testing.assert_array_equal(segments["segment_alpha"], np.linspace(0, 1, 11))
    for key in WALK_RECORDS:
        assert walked_ds[key].dims == ("traj", "step")
        assert walked_ds[key].attrs["long_name"] == RECORD_ATTRS[key]["long_name"]
        np.testing.assert_array_equal(walked_ds[key].values[0], getattr(walked, key))


def test_svag_with_l_1_records_the_walk_of_sgd_bit_for_bit():
    network = MLP((1, 3, 3), widths=(8,), n_outputs=3, seed=2)
    evaluation = EvaluationOptions(eval_every=2, walk=True, walk_points=5)
    run = dict(schedule=0.2, n_steps=5, batch_size=8, loss="square", evaluation=evaluation)
    sgd = train_sgd(network, DATA, seed=6, **run)
    svag = simulate_svag(network, DATA, l=1, seed=6, **run)
    for key in (*WALK_RECORDS, "segment_loss"):
        np.testing.assert_array_equal(getattr(sgd, key), getattr(svag, key))


def test_a_simulator_with_substeps_walks_over_one_sgd_step_of_time():
    """The label-noise SDE with 2 substeps per SGD step, evaluated every SGD step (every 2
    simulator steps j): its walk records at j read theta_{j-2}, theta_{j-4} (the increment
    over eta), taken from shorter runs with the same normals."""
    network = _linear()
    substeps, n_steps = 2, 3
    normals = np.random.default_rng(7).standard_normal((n_steps * substeps, DATA.n, 3))
    run = dict(
        network=network,
        data=DATA,
        schedule=0.3,
        batch_size=8,
        delta=0.1,
        substeps=substeps,
        evaluation=EvaluationOptions(eval_every=1, metrics_size=DATA.n, walk=True),
    )

    def theta(k):  # the iterate after k SGD steps' worth of time
        if k == 0:
            return parameter_vector(network).numpy()
        fewer = dict(run, n_steps=k, normals=normals[: k * substeps], evaluation=CHEAP)
        short = simulate_label_noise_sde(**fewer)
        return parameter_vector(short.network).numpy()

    result = simulate_label_noise_sde(n_steps=n_steps, normals=normals, **run)
    assert result.steps.tolist() == [0, 2, 4, 6]
    assert np.isnan(result.update_cosine[:2]).all()
    for i in (1, 2, 3):
        exact = _quadratic(theta(i - 1), theta(i), np.linspace(0, 1, 11))
        np.testing.assert_allclose(result.segment_loss[i], exact, rtol=1e-12)
    for i in (2, 3):
        u, v = theta(i - 1) - theta(i - 2), theta(i) - theta(i - 1)
        want = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        assert result.update_cosine[i] == pytest.approx(want, rel=1e-10)


def test_walk_steps_are_the_two_strides_before_each_evaluation():
    assert walk_steps([0, 3, 6, 7], 1) == {1, 2, 4, 5, 6}
    assert walk_steps([0, 4, 8], 2) == {0, 2, 4, 6}


def test_the_evaluation_table_accepts_walk_and_checks_it(tmp_path):
    """``walk = true`` in a config file's [evaluation] table reaches every run: validate
    compares the walk records of SGD and SVAG (l = 1 is SGD: they agree exactly)."""
    path = tmp_path / "walk.toml"
    path.write_text(
        "n_seeds = 2\n"
        '[data]\nname = "teacher"\nn = 24\nn_test = 8\ninput_shape = [1, 2, 2]\nn_classes = 3\n'
        '[network]\nname = "mlp"\nwidths = [6]\n'
        '[sgd]\nschedule = 0.2\nn_steps = 4\nbatch_size = 4\nloss = "square"\n'
        "[evaluation]\neval_every = 2\nwalk = true\nwalk_points = 5\n"
        '[sde]\nmethod = "svag"\nl = [1, 2]\n'
        "[compare]\nn_boot = 10\nn_perm = 10\n"
    )
    config = load_validation_config(path)
    options = evaluation_options(config["evaluation"])
    assert (options.walk, options.walk_points) == (True, 5)
    ds = validate(config, tmp_path / "out")
    for key in WALK_RECORDS:
        assert f"agreement_{key}" in ds
    assert float(ds["svag_agreement_floor_height"].sel(svag_l=1)) == 0.0


@pytest.mark.parametrize(
    ("bad", "match"),
    [({"walk": "yes"}, "walk must be True or False"), ({"walk_points": 2}, "walk_points")],
)
def test_bad_walk_options_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        evaluation_options({"eval_every": 2, **bad})
