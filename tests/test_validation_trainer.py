"""The SGD trainer of sgdsde.validation against hand-written SGD, its evaluations, its
seeding and divergence handling."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sgdsde.dynamics import StepDecay
from sgdsde.random import as_seed_sequence
from sgdsde.validation import MLP, load_digits, teacher_images, torch_generator
from sgdsde.validation.trainer import loss_function, train_sgd


@pytest.fixture(scope="module")
def tiny():
    data = teacher_images(n=20, n_test=8, input_shape=(1, 2, 2), n_classes=3, seed=1)
    return MLP((1, 2, 2), (5,), n_outputs=3, seed=2), data


def _hand_sgd(net, data, lrs, batch_size, loss, momentum, weight_decay, seed):
    """SGD written out: a permutation per epoch from the documented batch stream,
    v <- mu v + g + lambda theta, theta <- theta - eta v."""
    net = copy.deepcopy(net)
    generator = torch_generator(as_seed_sequence(seed).spawn(2)[0])
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    per_epoch = data.n // batch_size
    velocity = [torch.zeros_like(p) for p in net.parameters()]
    losses = []
    for k, eta in enumerate(lrs):
        if k % per_epoch == 0:
            order = torch.randperm(data.n, generator=generator)
        index = order[(k % per_epoch) * batch_size :][:batch_size]
        out = net(X[index])
        if loss == "square":
            target = torch.eye(out.shape[1])[y[index]]
            value = 0.5 * ((out - target) ** 2).sum(1).mean()
        else:
            value = -torch.log_softmax(out, 1)[torch.arange(len(index)), y[index]].mean()
        losses.append(value.item())
        grads = torch.autograd.grad(value, list(net.parameters()))
        with torch.no_grad():
            for p, g, v in zip(net.parameters(), grads, velocity, strict=True):
                v.mul_(momentum).add_(g + weight_decay * p)
                p.sub_(eta * v)
    return net, losses


@pytest.mark.parametrize(
    ("loss", "momentum", "weight_decay"),
    [("square", 0.0, 0.0), ("cross_entropy", 0.0, 0.0), ("cross_entropy", 0.9, 0.01)],
)
def test_train_sgd_equals_hand_written_sgd(tiny, loss, momentum, weight_decay):
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
        eval_every=5,
        seed=3,
    )
    lrs = schedule.values(13)
    expected, losses = _hand_sgd(net, data, lrs, 6, loss, momentum, weight_decay, seed=3)
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
    result = train_sgd(net, data, schedule=0.1, n_steps=2, batch_size=4, metrics_size=7)
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
    kw = dict(schedule=0.2, n_steps=8, batch_size=5, eval_every=4)
    a, b = train_sgd(net, data, seed=0, **kw), train_sgd(net, data, seed=0, **kw)
    c = train_sgd(net, data, seed=1, **kw)
    assert np.array_equal(a.train_loss, b.train_loss) and np.array_equal(a.test_loss, b.test_loss)
    assert not np.array_equal(a.train_loss, c.train_loss)
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))


def test_a_diverging_run_is_recorded_not_raised(tiny):
    net, data = tiny
    result = train_sgd(
        net, data, schedule=1e4, n_steps=50, batch_size=4, loss="square", eval_every=10
    )
    k = result.diverged_step
    assert result.diverged and 0 < k < 50
    assert np.all(np.isfinite(result.test_loss[result.steps < k]))
    assert np.all(np.isnan(result.test_loss[result.steps > k]))
    assert np.all(result.batch_losses[:k] <= 1e6) and np.all(np.isnan(result.batch_losses[k:]))


def test_sgd_learns_digits():
    data = load_digits()
    net = MLP((1, 8, 8), (32,), n_outputs=10, seed=0)
    result = train_sgd(net, data, schedule=0.1, n_steps=300, batch_size=32, eval_every=300)
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
