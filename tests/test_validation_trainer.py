"""The SGD trainer of sgdsde.validation against hand-written SGD, its evaluations, its
seeding and divergence handling."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sgdsde.dynamics import StepDecay
from sgdsde.metrics.features import feature_sparsity
from sgdsde.random import as_seed_sequence
from sgdsde.validation import (
    MLP,
    EvaluationOptions,
    ImageData,
    load_digits,
    teacher_images,
    torch_generator,
)
from sgdsde.validation.trainer import (
    loss_function,
    noisy_labels,
    parameter_vector,
    results_dataset,
    train_sgd,
    unit_subsample,
)


@pytest.fixture(scope="module")
def tiny():
    data = teacher_images(n=20, n_test=8, input_shape=(1, 2, 2), n_classes=3, seed=1)
    return MLP((1, 2, 2), (5,), n_outputs=3, seed=2), data


def _hand_sgd(net, data, lrs, batch_size, loss, momentum, weight_decay, seed, label_noise=0.0):
    """SGD written out: a permutation per epoch from the documented batch stream, label
    noise from the third stream, v <- mu v + g + lambda theta, theta <- theta - eta v."""
    net = copy.deepcopy(net)
    batch_stream, _, noise_stream = as_seed_sequence(seed).spawn(3)
    generator = torch_generator(batch_stream)
    noise = torch_generator(noise_stream)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    per_epoch = data.n // batch_size
    velocity = [torch.zeros_like(p) for p in net.parameters()]
    losses = []
    for k, eta in enumerate(lrs):
        if k % per_epoch == 0:
            order = torch.randperm(data.n, generator=generator)
        index = order[(k % per_epoch) * batch_size :][:batch_size]
        out = net(X[index])
        labels = y[index]
        if loss == "square":
            target = torch.eye(out.shape[1])[labels]
            if label_noise:
                target = target + label_noise**0.5 * torch.randn(target.shape, generator=noise)
            value = 0.5 * ((out - target) ** 2).sum(1).mean()
        else:
            if label_noise:
                relabel = torch.rand(len(labels), generator=noise) < label_noise
                drawn = torch.randint(0, out.shape[1], (len(labels),), generator=noise)
                labels = torch.where(relabel, drawn, labels)
            value = -torch.log_softmax(out, 1)[torch.arange(len(index)), labels].mean()
        losses.append(value.item())
        grads = torch.autograd.grad(value, list(net.parameters()))
        with torch.no_grad():
            for p, g, v in zip(net.parameters(), grads, velocity, strict=True):
                v.mul_(momentum).add_(g + weight_decay * p)
                p.sub_(eta * v)
    return net, losses


@pytest.mark.parametrize(
    ("loss", "momentum", "weight_decay", "label_noise"),
    [
        ("square", 0.0, 0.0, 0.0),
        ("cross_entropy", 0.0, 0.0, 0.0),
        ("cross_entropy", 0.9, 0.01, 0.0),
        ("square", 0.0, 0.0, 0.3),
        ("cross_entropy", 0.0, 0.0, 0.5),
    ],
)
def test_train_sgd_equals_hand_written_sgd(tiny, loss, momentum, weight_decay, label_noise):
    net, data = tiny
    schedule = StepDecay(lr=0.3, at=(0.5,), factors=(10.0,))
    result = train_sgd(
        net,
        data,
        schedule=schedule,
        n_steps=13,
        batch_size=6,
        loss=loss,
        momentum=momentum,
        weight_decay=weight_decay,
        label_noise=label_noise,
        evaluation=EvaluationOptions(eval_every=5),
        seed=3,
    )
    lrs = schedule.values(13)
    expected, losses = _hand_sgd(
        net, data, lrs, 6, loss, momentum, weight_decay, seed=3, label_noise=label_noise
    )
    np.testing.assert_allclose(result.batch_losses, losses, rtol=1e-5)
    for got, want in zip(result.network.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert result.steps.tolist() == [0, 5, 10, 13] and not result.diverged
    np.testing.assert_allclose(result.time, np.concatenate([[0], np.cumsum(lrs)])[[0, 5, 10, 13]])
    # the final evaluation is the trained network's loss and error, by hand
    with torch.no_grad():
        out = expected(torch.from_numpy(data.X_test))
        labels = torch.from_numpy(data.y_test)
        test_loss = loss_function(loss, out, labels).item()
        test_error = (out.argmax(1) != labels).double().mean().item()
    assert result.test_loss[-1] == pytest.approx(test_loss, rel=1e-5)
    assert result.test_error[-1] == pytest.approx(test_error)


def test_evaluation_at_step_0_reads_the_metrics_subset(tiny):
    net, data = tiny
    result = train_sgd(
        net,
        data,
        schedule=0.1,
        n_steps=2,
        batch_size=4,
        evaluation=EvaluationOptions(metrics_size=7),
    )
    with torch.no_grad():
        out = net(torch.from_numpy(data.X[:7]))
        labels = torch.from_numpy(data.y[:7])
        expected = torch.nn.functional.cross_entropy(out, labels).item()
        error = (out.argmax(1) != labels).double().mean().item()
    assert result.train_loss[0] == pytest.approx(expected, rel=1e-6)
    assert result.train_error[0] == pytest.approx(error)


def test_square_loss_is_half_the_squared_distance_to_one_hot():
    out = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    labels = torch.tensor([0, 0])
    # example 1: 0; example 2: (0.5 - 1)^2 + 2^2 = 4.25; mean / 2
    assert loss_function("square", out, labels).item() == pytest.approx(4.25 / 4)


def test_runs_are_seeded_and_leave_the_network_unchanged(tiny):
    net, data = tiny
    before = [p.clone() for p in net.parameters()]
    kw = dict(schedule=0.2, n_steps=8, batch_size=5, evaluation=EvaluationOptions(eval_every=4))
    a, b = train_sgd(net, data, seed=0, **kw), train_sgd(net, data, seed=0, **kw)
    c = train_sgd(net, data, seed=1, **kw)
    assert np.array_equal(a.train_loss, b.train_loss) and np.array_equal(a.test_loss, b.test_loss)
    assert not np.array_equal(a.train_loss, c.train_loss)
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))


def test_a_diverging_run_is_recorded_not_raised(tiny):
    net, data = tiny
    result = train_sgd(
        net,
        data,
        schedule=1e4,
        n_steps=50,
        batch_size=4,
        loss="square",
        evaluation=EvaluationOptions(eval_every=10),
    )
    k = result.diverged_step
    assert result.diverged and 0 < k < 50
    assert np.all(np.isfinite(result.test_loss[result.steps < k]))
    assert np.all(np.isnan(result.test_loss[result.steps > k]))
    assert np.all(result.batch_losses[:k] <= 1e6) and np.all(np.isnan(result.batch_losses[k:]))


def test_sgd_learns_digits():
    data = load_digits()
    net = MLP((1, 8, 8), (32,), n_outputs=10, seed=0)
    result = train_sgd(
        net,
        data,
        schedule=0.1,
        n_steps=300,
        batch_size=32,
        evaluation=EvaluationOptions(eval_every=300),
    )
    assert result.test_error[0] > 0.7  # chance is 0.9
    assert result.test_error[-1] < 0.15


def test_bad_trainer_arguments(tiny):
    net, data = tiny
    kw = dict(schedule=0.1, n_steps=2, batch_size=4)
    with pytest.raises(ValueError, match="loss must be one of"):
        train_sgd(net, data, **{**kw, "loss": "hinge"})
    with pytest.raises(ValueError, match="batch_size must be at most the 20"):
        train_sgd(net, data, **{**kw, "batch_size": 21})
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        train_sgd(net, data, **{**kw, "momentum": 1.0})
    with pytest.raises(ValueError, match="data must be"):
        train_sgd(net, data.X, **kw)
    with pytest.raises(ValueError, match="label_noise must be a finite number >= 0"):
        train_sgd(net, data, **{**kw, "label_noise": -0.1})
    with pytest.raises(ValueError, match=r"relabelling probability p .* \[0, 1\]"):
        train_sgd(net, data, **{**kw, "label_noise": 1.5})
    with pytest.raises(ValueError, match="max_units must be an integer >= 1"):
        train_sgd(net, data, **{**kw, "evaluation": EvaluationOptions(max_units=0)})


# ----------------------------------------------------------------- evaluations


@pytest.fixture(scope="module")
def by_hand():
    """An MLP 2 -> 4 -> 2 whose hidden features on four non-negative inputs are, unit by
    unit, x1, 2 x1 (a duplicate: corr 1), 0 (dead: weights -1, -1) and x2."""
    net = MLP((1, 1, 2), (4,), n_outputs=2, seed=0)
    with torch.no_grad():
        net.layers.linear1.weight.copy_(torch.tensor([[1.0, 0], [2, 0], [-1, -1], [0, 1]]))
        net.layers.linear1.bias.zero_()
    X = np.array([[1.0, 0], [0, 1], [1, 1], [2, 0]], dtype=np.float32).reshape(4, 1, 1, 2)
    data = ImageData(X, np.array([0, 1, 0, 1]), X[:2], np.array([0, 1]), n_classes=2)
    return net, data


def test_feature_metrics_by_hand(by_hand):
    net, data = by_hand
    result = train_sgd(
        net,
        data,
        schedule=0.05,
        n_steps=3,
        batch_size=2,
        evaluation=EvaluationOptions(eval_every=1),
    )
    # units x1 = [1, 0, 1, 2] and x2 = [0, 1, 1, 0] are kept (corr -0.29); 2 x1 is a
    # duplicate (corr 1 > 0.95), the dead unit is dropped: (3 + 2) positives / (4 x 4)
    assert result.feature_sparsity["block1"][0] == pytest.approx(5 / 16)
    assert result.active_fraction["block1"][0] == pytest.approx(8 / 16)
    assert result.dead_units["block1"][0] == pytest.approx(1 / 4)
    # the last evaluation is that of the trained network (rows not normalized, 0.95)
    with torch.no_grad():
        phi = net.layers.relu1(result.network.layers.linear1(torch.from_numpy(data.X[:, 0, 0])))
    assert result.feature_sparsity["block1"][-1] == pytest.approx(
        feature_sparsity(phi.double().numpy(), 0.95, normalize_rows=False)[0]
    )


def test_weight_norm_and_distance_from_init(by_hand):
    net, data = by_hand
    result = train_sgd(
        net, data, schedule=0.1, n_steps=4, batch_size=2, evaluation=EvaluationOptions(eval_every=2)
    )
    theta0, theta = parameter_vector(net), parameter_vector(result.network)
    assert result.weight_norm[0] == pytest.approx(float(theta0.norm()), rel=1e-12)
    assert result.weight_norm[-1] == pytest.approx(float(theta.norm()), rel=1e-12)
    assert result.distance_from_init[0] == 0.0
    assert result.distance_from_init[-1] == pytest.approx(float((theta - theta0).norm()))
    assert result.distance_from_init[-1] > 0


def test_unit_subsample_is_seeded_sorted_and_distinct():
    a, b = unit_subsample(5000, 1000, seed=3), unit_subsample(5000, 1000, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 1000
    assert np.all(np.diff(a) > 0) and a[0] >= 0 and a[-1] < 5000
    assert not np.array_equal(a, unit_subsample(5000, 1000, seed=4))
    assert np.array_equal(unit_subsample(7, 1000, seed=3), np.arange(7))


def test_feature_metrics_read_the_same_unit_subsample_at_every_evaluation(by_hand):
    net, data = by_hand
    result = train_sgd(
        net,
        data,
        schedule=0.1,
        n_steps=4,
        batch_size=2,
        evaluation=EvaluationOptions(eval_every=2, max_units=2),
        seed=5,
    )
    # the subsample of the only tap: child 0 of feature_seed (0), whatever the run's seed
    index = unit_subsample(4, 2, as_seed_sequence(0).spawn(1)[0])
    for k, network in ((0, net), (-1, result.network)):
        with torch.no_grad():
            h = network.layers.linear1(torch.from_numpy(data.X[:, 0, 0]))
            phi = network.layers.relu1(h)[:, index].double().numpy()
        assert result.feature_sparsity["block1"][k] == pytest.approx(
            feature_sparsity(phi, 0.95, normalize_rows=False)[0]
        )
        assert result.active_fraction["block1"][k] == pytest.approx((phi > 0).mean())


def test_gaussian_label_noise_has_mean_0_and_variance_delta():
    m, K, delta = 20_000, 3, 0.25
    labels = torch.arange(m) % K
    targets = noisy_labels("square", labels, K, delta, torch_generator(0))
    xi = (targets - torch.eye(K)[labels]).double().numpy().ravel()
    N = xi.size  # 60,000 draws: 5 standard errors of the mean and of the variance
    assert abs(xi.mean()) < 5 * np.sqrt(delta / N)
    assert abs(xi.var() - delta) < 5 * delta * np.sqrt(2 / N)
    again = noisy_labels("square", labels, K, delta, torch_generator(0))
    assert torch.equal(targets, again)
    assert noisy_labels("square", labels, K, 0.0, torch_generator(0)) is labels


def test_relabelling_with_probability_p():
    m, K, p = 20_000, 4, 0.3
    labels = torch.zeros(m, dtype=torch.int64)
    noisy = noisy_labels("cross_entropy", labels, K, p, torch_generator(1)).numpy()
    # class 0 keeps 1 - p + p/K of the mass, every other class gets p/K (binomial SEs)
    for c in range(K):
        q = 1 - p + p / K if c == 0 else p / K
        assert abs((noisy == c).mean() - q) < 5 * np.sqrt(q * (1 - q) / m)


def test_results_dataset_stacks_seeds_in_the_shared_layout(by_hand):
    net, data = by_hand
    kw = dict(schedule=0.1, n_steps=4, batch_size=2, evaluation=EvaluationOptions(eval_every=2))
    results = [train_sgd(net, data, seed=s, **kw) for s in (0, 1, 2)]
    ds = results_dataset(results, run="SGD")
    assert ds.sizes == {"traj": 3, "step": 3, "block": 1}
    assert ds["step"].values.tolist() == [0, 2, 4]
    np.testing.assert_allclose(ds["time"].values, np.tile([0.0, 0.2, 0.4], (3, 1)))
    assert ds["block"].values.tolist() == ["block1"]
    for t, r in enumerate(results):
        np.testing.assert_array_equal(ds["test_loss"].values[t], r.test_loss)
        np.testing.assert_array_equal(ds["distance_from_init"].values[t], r.distance_from_init)
        np.testing.assert_array_equal(
            ds["feature_sparsity"].values[t, :, 0], r.feature_sparsity["block1"]
        )
    assert ds["seed"].values.tolist() == ["0", "1", "2"]
    assert ds.sel(run="SGD").sizes["traj"] == 3 and not ds["diverged"].any()
    assert json.loads(ds.attrs["config"])["n_steps"] == 4
    assert json.loads(ds.attrs["seed_entropy"]) == [0, 1, 2]
    one = results[0].to_dataset(run="SDE")
    assert one.sizes["traj"] == 1 and one["run"].values.tolist() == ["SDE"]
    other = train_sgd(net, data, seed=0, **{**kw, "evaluation": EvaluationOptions(eval_every=1)})
    with pytest.raises(ValueError, match="other steps or times"):
        results_dataset([results[0], other])
