"""Collapse metrics of torch networks (sgdsde.validation.collapse) against the closed-form
toys' definitions (sgdsde.metrics.collapse), the networks' neuron vectors by hand, and
their records in SGD runs and datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdsde.metrics.collapse import identical_pairs, independent_fraction, vanishing_mask
from sgdsde.validation import (
    MLP,
    EvaluationOptions,
    ResNet18,
    SmallCNN,
    results_dataset,
    teacher_images,
    train_sgd,
)
from sgdsde.validation.collapse import collapse_statistics, network_neuron_vectors


def _planted(seed: int) -> np.ndarray:
    """12 units in R^6: two vanishing, one zero, a pair and a triple of near-copies
    (relative distance ~1e-4), and a close-but-not-identical pair (distance ~0.5)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((12, 6))
    v[1] *= 0.01  # vanishing
    v[2] = 0.0  # zero: vanishing, and in no pair
    v[4] = v[3] + 1e-2 * rng.standard_normal(6)
    v[7] = v[6] * 1.001
    v[8] = v[6] + 1e-2 * rng.standard_normal(6)
    v[10] = v[9] + 0.5 * rng.standard_normal(6)
    return v


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("vanishing", "identical"), [(0.1, 0.1), (0.3, 0.6)])
def test_collapse_statistics_equal_the_toy_definitions(seed, vanishing, identical):
    v = _planted(seed)
    expected = (
        vanishing_mask(v[None], vanishing).mean(),
        identical_pairs(v[None], identical, vanishing)[0],
        independent_fraction(v[None], identical, vanishing)[0],
    )
    got = collapse_statistics(torch.from_numpy(v).float(), vanishing, identical)
    assert got[1] == expected[1] and isinstance(got[1], int)
    np.testing.assert_allclose([got[0], got[2]], [expected[0], expected[2]], rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collapse_statistics_of_the_planted_layer(seed):
    # units 1, 2 vanish; pairs (3, 4), (6, 7), (6, 8), (7, 8) ((9, 10) is too far);
    # groups of the 10 alive units: {0}, {3, 4}, {5}, {6, 7, 8}, {9}, {10}, {11}
    vanishing, pairs, independent = collapse_statistics(torch.from_numpy(_planted(seed)))
    assert (vanishing, pairs) == (pytest.approx(2 / 12), 4)
    assert independent == pytest.approx(7 / 12)


def test_mlp_and_cnn_neuron_vectors_by_hand():
    net = MLP((1, 1, 3), (4, 5), n_outputs=2, seed=0)
    vectors = network_neuron_vectors(net)
    assert list(vectors) == ["block1", "block2"]
    W1, b1 = net.layers.linear1.weight, net.layers.linear1.bias
    W2, b2, head = net.layers.linear2.weight, net.layers.linear2.bias, net.layers.head.weight
    torch.testing.assert_close(vectors["block1"][2], torch.cat([W1[2], b1[2:3], W2[:, 2]]))
    torch.testing.assert_close(vectors["block2"][4], torch.cat([W2[4], b2[4:5], head[:, 4]]))
    cnn = SmallCNN((2, 4, 4), width=3, n_outputs=2, seed=0)
    v = network_neuron_vectors(cnn)
    assert {k: tuple(t.shape) for k, t in v.items()} == {
        "block1": (3, 2 * 9 + 1 + 6 * 9),
        "block2": (6, 3 * 9 + 1 + 2),
    }
    torch.testing.assert_close(
        v["block1"][1],
        torch.cat(
            [
                cnn.conv1.weight[1].reshape(-1),
                cnn.conv1.bias[1:2],
                cnn.conv2.weight[:, 1].reshape(-1),
            ]
        ),
    )
    assert network_neuron_vectors(torch.nn.Linear(2, 2)) == {}


def test_sgd_runs_record_collapse_per_block():
    data = teacher_images(n=16, n_test=4, input_shape=(1, 1, 3), n_classes=2, seed=1)
    net = MLP((1, 1, 3), (4,), n_outputs=2, seed=0)
    with torch.no_grad():  # unit 1 a copy of unit 0, unit 3 nearly zero
        for p in (net.layers.linear1.weight, net.layers.linear1.bias):
            p[1] = p[0]
            p[3] = 1e-4 * p[3]
        net.layers.head.weight[:, 1] = net.layers.head.weight[:, 0]
        net.layers.head.weight[:, 3] = 0.0
    kw = dict(schedule=0.01, n_steps=4, batch_size=4, loss="square")
    result = train_sgd(net, data, evaluation=EvaluationOptions(eval_every=2), **kw)
    assert result.identical_pairs["block1"][0] == 1
    assert result.vanishing_neurons["block1"][0] == 0.25
    assert result.independent_neurons["block1"][0] == 0.5  # {0, 1}, {2} of 4 units
    ds = results_dataset([result, result])
    assert ds["identical_pairs"].dims == ("traj", "step", "block")
    assert ds["identical_pairs"].attrs["units"] == "count"
    off = train_sgd(net, data, evaluation=EvaluationOptions(eval_every=2, collapse=False), **kw)
    assert off.identical_pairs == {} and "identical_pairs" not in off.to_dataset()
    # a pooled tap has no neurons of its own: NaN there
    images = teacher_images(n=8, n_test=4, input_shape=(1, 4, 4), n_classes=2, seed=1)
    cnn = train_sgd(SmallCNN((1, 4, 4), width=2, n_outputs=2), images, **kw)
    values = cnn.to_dataset()["vanishing_neurons"].sel(block="block3").values
    assert np.isnan(values).all()
    assert np.isfinite(cnn.to_dataset()["vanishing_neurons"].sel(block="block2").values).all()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_resnet18_neuron_vectors_by_hand(batch_norm):
    net = ResNet18((3, 8, 8), width=2, n_outputs=3, batch_norm=batch_norm, seed=0)
    vectors = network_neuron_vectors(net)
    assert list(vectors) == ["block1", "block2", "block3", "block4"]
    own = 2 if batch_norm else 1
    for s, channels in enumerate((2, 4, 8, 16), 1):
        readers = 2 * channels * 9 + 2 * channels if s < 4 else 3
        assert tuple(vectors[f"block{s}"].shape) == (channels, channels * 9 + own + readers)
    last, following = net.layer2[1], net.layer3[0]
    bias = [last.bn2.weight[3:4], last.bn2.bias[3:4]] if batch_norm else [last.conv2.bias[3:4]]
    expected = torch.cat(
        [
            last.conv2.weight[3].reshape(-1),
            *bias,
            following.conv1.weight[:, 3].reshape(-1),
            following.shortcut[0].weight[:, 3].reshape(-1),
        ]
    )
    torch.testing.assert_close(vectors["block2"][3], expected)
    torch.testing.assert_close(vectors["block4"][5][-3:], net.head.weight[:, 5])
    # a channel whose filter, bias and readers are zeroed is found vanishing
    with torch.no_grad():
        net.layer4[1].conv2.weight[0] = 0.0
        (net.layer4[1].bn2.weight if batch_norm else net.layer4[1].conv2.bias)[0] = 0.0
        if batch_norm:
            net.layer4[1].bn2.bias[0] = 0.0
        net.head.weight[:, 0] = 0.0
    vanishing, _, _ = collapse_statistics(network_neuron_vectors(net)["block4"])
    assert vanishing == pytest.approx(1 / 16)


def test_resnet18_runs_record_collapse_per_stage():
    images = teacher_images(n=8, n_test=4, input_shape=(3, 8, 8), n_classes=2, seed=1)
    net = ResNet18((3, 8, 8), width=2, n_outputs=2, seed=0)
    kw = dict(schedule=0.01, n_steps=2, batch_size=4, loss="square")
    ds = train_sgd(net, images, evaluation=EvaluationOptions(eval_every=1), **kw).to_dataset()
    independent = ds["independent_neurons"]
    assert np.isnan(independent.sel(block="block5").values).all()
    for s in range(1, 5):
        values = independent.sel(block=f"block{s}").values
        assert np.isfinite(values).all() and (values > 0).all() and (values <= 1).all()
