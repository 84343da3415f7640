"""The SDE simulators of sgdsde.validation against hand-written loops (label-noise GD,
GD, weighted-loss noisy GD, SVAG), the exact minibatch-gradient covariance, SGD, and
their seeding, time and divergence conventions."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from sgdsde.dynamics import StepDecay
from sgdsde.random import as_seed_sequence
from sgdsde.validation import (
    MLP,
    Augmentation,
    EvaluationOptions,
    TrainResult,
    per_example_loss,
    plateau_delta,
    results_dataset,
    simulate_label_noise_sde,
    simulate_sgd_covariance_sde,
    simulate_svag,
    svag_weights,
    teacher_images,
    torch_generator,
    train_sgd,
)


@pytest.fixture(scope="module")
def tiny():
    """A float64 MLP (so hand-written loops agree to ~1e-12) and 20 teacher images."""
    data = teacher_images(n=20, n_test=8, input_shape=(1, 2, 2), n_classes=3, seed=1)
    return MLP((1, 2, 2), (5,), n_outputs=3, seed=2).double(), data


def _params(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _descend(net, value, eta):
    grads = torch.autograd.grad(value, list(net.parameters()))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads, strict=True):
            p.sub_(eta * g)


def _hand_label_noise_gd(net, data, lrs, delta, batch_size, seed):
    """Full-batch GD on labels perturbed by fresh Gaussian noise of variance
    delta_k n / B at step k (delta: a number or one per step), drawn from the
    documented noise stream."""
    net = copy.deepcopy(net)
    generator = torch_generator(as_seed_sequence(seed).spawn(1)[0])
    X = torch.from_numpy(data.X).double()
    Y = torch.eye(data.n_classes, dtype=torch.float64)[torch.from_numpy(data.y)]
    deltas = np.broadcast_to(delta, (len(lrs),))  # one delta, or one per step
    for eta, delta_k in zip(lrs, deltas, strict=True):
        z = torch.randn(Y.shape, generator=generator, dtype=torch.float64)
        labels = Y - math.sqrt(delta_k * data.n / batch_size) * z
        _descend(net, 0.5 * ((net(X) - labels) ** 2).sum(1).mean(), eta)
    return net


@pytest.mark.parametrize("batch_size", [20, 4])
def test_label_noise_sde_at_dt_eta_is_gd_on_noisy_labels(tiny, batch_size):
    net, data = tiny
    schedule = StepDecay(lr=0.4, at=(0.5,), factors=(4.0,))
    result = simulate_label_noise_sde(
        net,
        data,
        schedule=schedule,
        n_steps=9,
        batch_size=batch_size,
        delta=0.3,
        chunk_size=7,  # three chunks: the drift and the VJP summed over chunks
        evaluation=EvaluationOptions(eval_every=4),
        seed=5,
    )
    expected = _hand_label_noise_gd(net, data, schedule.values(9), 0.3, batch_size, seed=5)
    torch.testing.assert_close(_params(result.network), _params(expected), rtol=1e-12, atol=1e-12)
    assert result.steps.tolist() == [0, 4, 8, 9] and not result.diverged
    np.testing.assert_allclose(result.time, np.cumsum([0, *schedule.values(9)])[[0, 4, 8, 9]])
    # the noise moved the parameters: GD ends elsewhere
    gd = _hand_label_noise_gd(net, data, schedule.values(9), 0.0, batch_size, seed=5)
    assert (_params(result.network) - _params(gd)).abs().max() > 1e-3


def test_label_noise_sde_with_a_delta_per_step_is_gd_on_labels_of_that_variance(tiny):
    """delta_k during SGD step k: at dt = eta, GD on labels with noise of variance
    delta_k n / B at step k; with substeps, every substep of step k uses delta_k (a path
    constant within each step equals the number); a constant path is the number, bit for
    bit; the run's config records the path's summary."""
    net, data = tiny
    deltas = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.05, 0.2, 0.6])
    kw = dict(schedule=0.2, n_steps=9, batch_size=4, evaluation=EvaluationOptions(eval_every=4))
    result = simulate_label_noise_sde(net, data, delta=deltas, seed=3, **kw)
    expected = _hand_label_noise_gd(net, data, [0.2] * 9, deltas, 4, seed=3)
    torch.testing.assert_close(_params(result.network), _params(expected), rtol=1e-12, atol=1e-12)
    assert result.config["delta"] == "per step"
    assert result.config["delta_mean"] == pytest.approx(deltas.mean(), rel=1e-12)
    assert (result.config["delta_min"], result.config["delta_max"]) == (0.05, 0.6)
    # the path is not the mean: a constant delta at the path's mean ends elsewhere
    mean = _hand_label_noise_gd(net, data, [0.2] * 9, deltas.mean(), 4, seed=3)
    assert (_params(result.network) - _params(mean)).abs().max() > 1e-4
    constant = simulate_label_noise_sde(net, data, delta=np.full(9, 0.3), seed=3, **kw)
    number = simulate_label_noise_sde(net, data, delta=0.3, seed=3, **kw)
    assert torch.equal(_params(constant.network), _params(number.network))
    assert constant.config["delta"] == 0.3
    # substeps = 2: delta_k for both substeps of step k, i.e. the path repeated per substep
    kw2 = dict(kw, substeps=2, n_steps=3, evaluation=EvaluationOptions(eval_every=1))
    sub = simulate_label_noise_sde(net, data, delta=deltas[:3], seed=3, **kw2)
    # at dt = eta / 2 the noise scale is sqrt(eta delta / (n B dt)) = sqrt(2 delta / (n B)):
    # GD at step eta / 2 on labels of variance 2 delta n / B
    expected = _hand_label_noise_gd(net, data, [0.1] * 6, 2 * np.repeat(deltas[:3], 2), 4, seed=3)
    torch.testing.assert_close(_params(sub.network), _params(expected), rtol=1e-12, atol=1e-12)


def test_a_bad_delta_path_names_its_shape(tiny):
    net, data = tiny
    kw = dict(schedule=0.1, n_steps=3, batch_size=4)
    for bad in ([0.1, 0.2], np.ones((3, 1)), "plateau", None, [0.1, float("nan"), 0.1]):
        with pytest.raises(ValueError, match=r"one per SGD step, shape \(3,\)"):
            simulate_label_noise_sde(net, data, delta=bad, **kw)
    with pytest.raises(ValueError, match="delta must be a finite number >= 0"):
        simulate_label_noise_sde(net, data, delta=[0.1, -0.2, 0.1], **kw)


def test_label_noise_sde_with_delta_0_is_gd(tiny):
    net, data = tiny
    kw = dict(
        schedule=0.3, n_steps=6, batch_size=4, delta=0.0, evaluation=EvaluationOptions(eval_every=3)
    )
    a = simulate_label_noise_sde(net, data, seed=0, **kw)
    b = simulate_label_noise_sde(net, data, seed=1, **kw)
    assert torch.equal(_params(a.network), _params(b.network))  # no noise drawn
    expected = _hand_label_noise_gd(net, data, [0.3] * 6, 0.0, 4, seed=0)
    torch.testing.assert_close(_params(a.network), _params(expected), rtol=1e-12, atol=1e-12)
    # the step losses are the full training loss before each step, as GD's
    X = torch.from_numpy(data.X).double()
    with torch.no_grad():
        first = per_example_loss("square", net(X), torch.from_numpy(data.y)).mean().item()
    assert a.batch_losses[0] == pytest.approx(first, rel=1e-12)
    assert np.all(np.diff(a.batch_losses) < 0)  # GD at a small step descends


def test_label_noise_sde_substeps_refine_time_and_converge(tiny):
    net, data = tiny
    kw = dict(
        schedule=0.2, n_steps=4, batch_size=5, delta=0.0, evaluation=EvaluationOptions(eval_every=2)
    )
    coarse = simulate_label_noise_sde(net, data, **kw)
    fine = simulate_label_noise_sde(net, data, substeps=8, **kw)
    assert fine.steps.tolist() == [0, 16, 32] and len(fine.lrs) == 32
    np.testing.assert_allclose(fine.time, coarse.time, rtol=1e-14)
    np.testing.assert_allclose(fine.lrs, 0.025)
    # deterministic drift: dt -> 0 approaches gradient flow, so the two differ by O(dt)
    gap = (_params(fine.network) - _params(coarse.network)).abs().max().item()
    assert 0 < gap < 0.05


def test_label_noise_sde_is_seeded_and_leaves_the_network_unchanged(tiny):
    net, data = tiny
    before = _params(net).clone()
    kw = dict(
        schedule=0.2, n_steps=5, batch_size=4, delta=0.5, evaluation=EvaluationOptions(eval_every=5)
    )
    a, b = (simulate_label_noise_sde(net, data, seed=3, **kw) for _ in range(2))
    c = simulate_label_noise_sde(net, data, seed=4, **kw)
    assert np.array_equal(a.batch_losses, b.batch_losses)
    assert torch.equal(_params(a.network), _params(b.network))
    assert not np.array_equal(a.batch_losses[1:], c.batch_losses[1:])
    assert torch.equal(before, _params(net))
    assert a.config["method"] == "label_noise_sde" and a.config["delta"] == 0.5


def test_a_diverging_sde_is_recorded_not_raised(tiny):
    net, data = tiny
    result = simulate_label_noise_sde(
        net,
        data,
        schedule=50.0,
        n_steps=40,
        batch_size=4,
        delta=1.0,
        evaluation=EvaluationOptions(eval_every=5),
    )
    k = result.diverged_step
    assert result.diverged and 0 < k < 40
    assert np.all(np.isfinite(result.test_loss[result.steps < k]))
    assert np.all(np.isnan(result.test_loss[result.steps > k]))
    assert np.all(np.isnan(result.batch_losses[k:]))


def test_plateau_delta_is_twice_the_late_loss_per_output(tiny):
    net, data = tiny
    run = train_sgd(
        copy.deepcopy(net).float(), data, schedule=0.5, n_steps=20, batch_size=4, loss="square"
    )
    expected = 2 * run.batch_losses[10:].mean() / 3
    assert plateau_delta(run, n_outputs=3) == pytest.approx(expected, rel=1e-12)
    assert plateau_delta(run, n_outputs=3, fraction=0.05) == pytest.approx(
        2 * run.batch_losses[-1] / 3
    )
    diverged = TrainResult(**{**run.__dict__, "diverged_step": 3})
    with pytest.raises(ValueError, match="diverged at step 3"):
        plateau_delta(diverged, n_outputs=3)
    with pytest.raises(ValueError, match="fraction must lie in"):
        plateau_delta(run, n_outputs=3, fraction=0.0)


def test_sgd_covariance_sde_is_gd_on_gaussian_loss_weights(tiny):
    net, data = tiny
    n, B, eta, substeps = data.n, 5, 0.3, 2
    result = simulate_sgd_covariance_sde(
        net,
        data,
        schedule=eta,
        n_steps=2,
        batch_size=B,
        loss="cross_entropy",
        substeps=substeps,
        chunk_size=6,
        evaluation=EvaluationOptions(eval_every=1),
        seed=8,
    )
    expected = copy.deepcopy(net)
    generator = torch_generator(as_seed_sequence(8).spawn(1)[0])
    X, y = torch.from_numpy(data.X).double(), torch.from_numpy(data.y)
    scale = math.sqrt(eta * n * (n - B) / (n - 1) / (B * eta / substeps))
    for _ in range(2 * substeps):
        g = torch.randn(n, generator=generator, dtype=torch.float64)
        weights = 1 + scale * (g - g.mean())
        per_example = per_example_loss("cross_entropy", expected(X), y)
        _descend(expected, (weights * per_example).mean(), eta / substeps)
    torch.testing.assert_close(_params(result.network), _params(expected), rtol=1e-12, atol=1e-12)
    assert result.steps.tolist() == [0, 2, 4] and result.time[-1] == pytest.approx(2 * eta)


def test_sgd_covariance_noise_has_the_exact_minibatch_gradient_covariance():
    """One step at dt = eta: (theta_0 - theta_1) / eta - grad L is the simulated noise;
    its covariance over M seeds against the covariance of the minibatch gradient over
    all C(n, B) minibatches (the SGD step's own noise)."""
    data = teacher_images(n=6, n_test=2, input_shape=(1, 1, 2), n_classes=2, seed=3)
    net = MLP((1, 1, 2), (3,), n_outputs=2, seed=4).double()
    n, B, eta, M = data.n, 4, 0.1, 800
    X, y = torch.from_numpy(data.X).double(), torch.from_numpy(data.y)
    J = torch.stack(
        [
            torch.cat(
                [
                    d.reshape(-1)
                    for d in torch.autograd.grad(
                        per_example_loss("square", net(X[i : i + 1]), y[i : i + 1]).sum(),
                        list(net.parameters()),
                    )
                ]
            )
            for i in range(n)
        ]
    )
    grad = J.mean(0)
    batches = [list(b) for b in itertools.combinations(range(n), B)]
    deviations = torch.stack([J[b].mean(0) - grad for b in batches])
    exact = deviations.T @ deviations / len(batches)
    c = (n - B) / (n - 1)
    torch.testing.assert_close(exact, c / (n * B) * (J - grad).T @ (J - grad))
    theta0 = _params(net)
    noise = torch.stack(
        [
            (theta0 - _params(run.network)) / eta - grad
            for run in (
                simulate_sgd_covariance_sde(
                    net,
                    data,
                    schedule=eta,
                    n_steps=1,
                    batch_size=B,
                    evaluation=EvaluationOptions(eval_every=1),
                    seed=s,
                )
                for s in np.random.SeedSequence(7).spawn(M)
            )
        ]
    )
    sample = noise.T @ noise / M
    # Gaussian noise: Var(sample_ab) = (C_aa C_bb + C_ab^2) / M
    spread = math.sqrt((torch.trace(exact) ** 2 + (exact**2).sum()).item() / M)
    assert torch.linalg.norm(sample - exact).item() < 4 * spread
    # along the top eigenvector the variance has relative standard error sqrt(2 / M)
    top = torch.linalg.eigh(exact).eigenvectors[:, -1]
    ratio = (top @ sample @ top / (top @ exact @ top)).item()
    assert abs(ratio - 1) < 4 * math.sqrt(2 / M)
    standard_error = torch.sqrt(torch.diagonal(exact) / M)
    assert torch.all(noise.mean(0).abs() < 5 * standard_error + 1e-12)


@pytest.mark.parametrize(
    ("loss", "weight_decay"), [("square", 0.0), ("cross_entropy", 0.0), ("square", 0.05)]
)
def test_svag_with_l_1_is_train_sgd_bit_for_bit(tiny, loss, weight_decay):
    net, data = tiny
    net = copy.deepcopy(net).float()
    kw = dict(
        schedule=StepDecay(lr=0.3, at=(0.5,), factors=(10.0,)),
        n_steps=11,
        batch_size=6,
        loss=loss,
        weight_decay=weight_decay,
        augmentation=Augmentation(padding=1),
        evaluation=EvaluationOptions(eval_every=4),
        seed=9,
    )
    svag, sgd = simulate_svag(net, data, l=1, **kw), train_sgd(net, data, **kw)
    for name in ("steps", "time", "lrs", "batch_losses", "train_loss", "test_loss", "test_error"):
        assert np.array_equal(getattr(svag, name), getattr(sgd, name)), name
    assert torch.equal(_params(svag.network), _params(sgd.network))
    # the same observables, through the same Evaluator
    for name in ("train_error", "weight_norm", "distance_from_init"):
        assert np.array_equal(getattr(svag, name), getattr(sgd, name)), name
    assert list(svag.feature_sparsity) == list(sgd.feature_sparsity) != []
    for name in ("feature_sparsity", "active_fraction", "dead_units"):
        for tap, values in getattr(sgd, name).items():
            assert np.array_equal(getattr(svag, name)[tap], values, equal_nan=True), (name, tap)


@pytest.mark.parametrize("simulate", [simulate_label_noise_sde, simulate_sgd_covariance_sde])
def test_sde_simulators_record_every_observable_of_the_trainer(tiny, simulate):
    net, data = tiny
    kw = dict(
        schedule=0.3,
        n_steps=4,
        batch_size=5,
        evaluation=EvaluationOptions(eval_every=2, max_units=3),
        seed=1,
    )
    extra = {"delta": 0.2} if simulate is simulate_label_noise_sde else {}
    result = simulate(net, data, **kw, **extra)
    theta0, theta = _params(net), _params(result.network)
    assert result.weight_norm[0] == pytest.approx(torch.linalg.norm(theta0).item(), rel=1e-12)
    assert result.weight_norm[-1] == pytest.approx(torch.linalg.norm(theta).item(), rel=1e-12)
    assert result.distance_from_init[0] == 0.0
    assert result.distance_from_init[-1] == pytest.approx(
        torch.linalg.norm(theta - theta0).item(), rel=1e-12
    )
    # the unit subsample of feature_seed (3 of the 5 units), as the SGD run's
    sgd = train_sgd(
        net,
        data,
        schedule=0.3,
        n_steps=4,
        batch_size=5,
        evaluation=EvaluationOptions(eval_every=2, max_units=3),
    )
    assert list(result.feature_sparsity) == list(sgd.feature_sparsity) != []
    for tap, values in result.active_fraction.items():
        assert values[0] == sgd.active_fraction[tap][0]  # the same network at t = 0
        assert np.all((values >= 0) & (values <= 1))
    ds = result.to_dataset(run="SDE")
    for name in ("weight_norm", "distance_from_init", "feature_sparsity", "dead_units"):
        assert name in ds


def test_svag_combines_two_minibatches_at_step_eta_over_l(tiny):
    net, data = tiny
    l, B, eta, n_steps = 3, 4, 0.2, 4
    result = simulate_svag(
        net, data, schedule=eta, n_steps=n_steps, batch_size=B, l=l, loss="square", seed=2
    )
    streams = as_seed_sequence(2).spawn(4)
    generators = [torch_generator(streams[0]), torch_generator(streams[2])]
    X, y = torch.from_numpy(data.X).double(), torch.from_numpy(data.y)
    w_plus, w_minus = (1 + math.sqrt(5)) / 2, (1 - math.sqrt(5)) / 2
    expected, orders, losses = copy.deepcopy(net), [None, None], []
    per_epoch = data.n // B
    for j in range(l * n_steps):
        if j % per_epoch == 0:
            orders = [torch.randperm(data.n, generator=g) for g in generators]
        index = [order[(j % per_epoch) * B :][:B] for order in orders]
        value = sum(
            w * per_example_loss("square", expected(X[i]), y[i]).mean()
            for w, i in zip((w_plus, w_minus), index, strict=True)
        )
        losses.append(value.item())
        _descend(expected, value, eta / l)
    torch.testing.assert_close(_params(result.network), _params(expected), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.batch_losses, losses, rtol=1e-12)
    assert result.steps.tolist() == [0, 12] and result.time[-1] == pytest.approx(n_steps * eta)
    assert result.config["substeps"] == l and result.config["method"] == "svag"


def test_svag_dataset_has_the_effective_step_coordinate(tiny):
    """SVAG's dataset: the toy engines' layout plus effective_step = step / l = time /
    eta (constant eta), the SGD step each SVAG step stands for; SGD's has none."""
    net, data = tiny
    l, eta = 4, 0.3
    kw = dict(schedule=eta, n_steps=6, batch_size=4, evaluation=EvaluationOptions(eval_every=2))
    runs = [simulate_svag(net, data, l=l, seed=s, **kw) for s in (0, 1)]
    ds = results_dataset(runs, run=f"SVAG l={l}")
    assert ds["step"].values.tolist() == [0, 8, 16, 24]
    np.testing.assert_array_equal(ds["effective_step"].values, [0, 2, 4, 6])
    np.testing.assert_allclose(ds["effective_step"].values, ds["time"].values[0] / eta)
    assert ds["effective_step"].dims == ("step",) and set(ds.dims) == {"traj", "step", "block"}
    sgd = results_dataset([train_sgd(net, data, seed=0, **kw)])
    assert "effective_step" not in sgd.coords
    # the SDEs refine time the same way: effective_step = step / substeps
    sde = simulate_label_noise_sde(net, data, delta=0.1, substeps=2, **kw)
    np.testing.assert_array_equal(sde.to_dataset()["effective_step"].values, [0, 2, 4, 6])


@pytest.mark.parametrize("simulate", [simulate_label_noise_sde, simulate_sgd_covariance_sde])
def test_sdes_with_weight_decay_and_no_noise_are_gd_with_weight_decay(tiny, simulate):
    """delta = 0 (label-noise SDE) or B = n (the SGD covariance is 0): the SDE with weight
    decay lambda is GD on L + lambda/2 ||theta||^2, i.e. ``train_sgd`` at B = n with
    ``weight_decay`` lambda (one minibatch, the whole set in a permuted order: equal to
    rounding); without the decay term they part."""
    net, data = tiny
    schedule = StepDecay(lr=0.4, at=(0.5,), factors=(4.0,))
    kw = dict(schedule=schedule, n_steps=8, batch_size=data.n, weight_decay=0.3)
    noise = {"delta": 0.0} if simulate is simulate_label_noise_sde else {"loss": "square"}
    sde = simulate(net, data, chunk_size=7, seed=3, **noise, **kw)
    gd = train_sgd(net, data, loss="square", seed=4, **kw)
    torch.testing.assert_close(_params(sde.network), _params(gd.network), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sde.batch_losses, gd.batch_losses, rtol=1e-12)
    assert sde.config["weight_decay"] == 0.3
    plain = simulate(net, data, chunk_size=7, seed=3, **noise, **{**kw, "weight_decay": 0.0})
    # the decay shrank the weights: lambda theta is in the drift
    assert _params(plain.network).norm() - _params(sde.network).norm() > 0.05


def test_label_noise_sde_with_weight_decay_is_gd_with_weight_decay_on_noisy_labels(tiny):
    """At dt = eta with delta > 0 and weight decay: full-batch GD on the noisy labels of
    the documented noise stream, each step theta - eta (grad L_noisy + lambda theta)."""
    net, data = tiny
    eta, wd, delta, B = 0.3, 0.2, 0.3, 4
    result = simulate_label_noise_sde(
        net, data, schedule=eta, n_steps=5, batch_size=B, delta=delta, weight_decay=wd, seed=5
    )
    expected = copy.deepcopy(net)
    generator = torch_generator(as_seed_sequence(5).spawn(1)[0])
    X = torch.from_numpy(data.X).double()
    Y = torch.eye(data.n_classes, dtype=torch.float64)[torch.from_numpy(data.y)]
    for _ in range(5):
        z = torch.randn(Y.shape, generator=generator, dtype=torch.float64)
        labels = Y - math.sqrt(delta * data.n / B) * z
        value = 0.5 * ((expected(X) - labels) ** 2).sum(1).mean()
        value = value + 0.5 * wd * sum((p**2).sum() for p in expected.parameters())
        _descend(expected, value, eta)
    torch.testing.assert_close(_params(result.network), _params(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("l", [1, 2, 8])
def test_svag_weights_keep_the_mean_and_scale_the_covariance_by_l(l):
    plus, minus = svag_weights(l)
    assert plus + minus == pytest.approx(1.0) and plus**2 + minus**2 == pytest.approx(l)


def test_bad_simulator_arguments(tiny):
    net, data = tiny
    kw = dict(schedule=0.1, n_steps=2, batch_size=4)
    with pytest.raises(ValueError, match="delta must be a finite number >= 0"):
        simulate_label_noise_sde(net, data, delta=-1.0, **kw)
    with pytest.raises(ValueError, match="batch_size must be at most the 20"):
        simulate_label_noise_sde(net, data, delta=1.0, **{**kw, "batch_size": 21})
    with pytest.raises(ValueError, match="substeps"):
        simulate_label_noise_sde(net, data, delta=1.0, substeps=0, **kw)
    with pytest.raises(ValueError, match="loss must be one of"):
        simulate_sgd_covariance_sde(net, data, loss="hinge", **kw)
    with pytest.raises(ValueError, match="l must be"):
        simulate_svag(net, data, l=0, **kw)
    for simulate, extra in (
        (simulate_label_noise_sde, {"delta": 0.1}),
        (simulate_sgd_covariance_sde, {}),
        (simulate_svag, {"l": 2}),
    ):
        for bad in (-0.1, float("nan"), True):
            with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
                simulate(net, data, weight_decay=bad, **extra, **kw)
    with pytest.raises(ValueError, match="network must be"):
        simulate_svag(data, data, l=1, **kw)
