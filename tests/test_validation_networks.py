"""Networks of sgdsde.validation: feature taps (shapes and values), seeded
initialisation, the paper's ResNet-18 architecture, and the torch-model protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgdsde.models import ModuleModel
from sgdsde.validation import MLP, ResNet18, SmallCNN, check_feature_taps, network_features


def test_mlp_features_equal_a_hand_computation():
    net = MLP(3, widths=(4, 2), n_outputs=1, seed=5).double()
    W1, b1 = net.layers.linear1.weight, net.layers.linear1.bias
    W2, b2 = net.layers.linear2.weight, net.layers.linear2.bias
    a, c = net.layers.head.weight, net.layers.head.bias
    x = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0]], dtype=torch.float64)
    with torch.no_grad():
        h1 = np.maximum(x.numpy() @ W1.numpy().T + b1.numpy(), 0)
        h2 = np.maximum(h1 @ W2.numpy().T + b2.numpy(), 0)
        out = h2 @ a.numpy().T + c.numpy()
        feats = net.features(x)
        np.testing.assert_allclose(feats["block1"].numpy(), h1, rtol=1e-12)
        np.testing.assert_allclose(feats["block2"].numpy(), h2, rtol=1e-12)
        np.testing.assert_allclose(net(x).numpy(), out, rtol=1e-12)
    assert list(feats) == ["block1", "block2"]  # the last tap is the penultimate layer


def test_resnet18_taps_have_the_documented_shapes_and_the_pooled_block4():
    width, m = 2, 3
    net = ResNet18((3, 16, 16), width=width, n_outputs=10, seed=0)
    x = torch.randn(m, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = net.features(x)
        out = net(x)
    expected = {
        "block1": width * 16 * 16,
        "block2": 2 * width * 8 * 8,
        "block3": 4 * width * 4 * 4,
        "block4": 8 * width * 2 * 2,
        "block5": 8 * width,
    }
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        k: (m, units) for k, units in expected.items()
    }
    # block5 is block4 averaged over space; the head reads it.
    pooled = feats["block4"].reshape(m, 8 * width, 2, 2).mean(dim=(2, 3))
    torch.testing.assert_close(feats["block5"], pooled)
    torch.testing.assert_close(out, net.head(feats["block5"]).detach())
    for name in ("block1", "block2", "block3", "block4"):
        assert feats[name].min() >= 0  # post-ReLU
    assert out.shape == (m, 10)


def test_resnet18_with_batch_norm_is_the_cifar_resnet18():
    """Width 64 with BatchNorm and 10 classes: the CIFAR ResNet-18 of 11,173,962 parameters
    (He et al.'s ResNet-18 with a 3x3 stride-1 stem and no max-pool)."""
    net = ResNet18(width=64, batch_norm=True)
    assert sum(p.numel() for p in net.parameters()) == 11_173_962
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    stem = net.stem[0]
    assert (stem.kernel_size, stem.stride, stem.bias) == ((3, 3), (1, 1), None)
    plain = ResNet18(width=4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, torch.nn.Conv2d))


def test_small_cnn_taps_and_flat_inputs():
    net = SmallCNN((1, 8, 8), width=3, n_outputs=4, seed=1)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = net.features(x)
        flat = net.features(x.reshape(5, 64))
        torch.testing.assert_close(net(x), net(x.reshape(5, 64)))
    assert {k: v.shape[1] for k, v in feats.items()} == {"block1": 192, "block2": 96, "block3": 6}
    for key in feats:
        torch.testing.assert_close(feats[key], flat[key])
    torch.testing.assert_close(feats["block3"], feats["block2"].reshape(5, 6, 4, 4).mean((2, 3)))
    with pytest.raises(ValueError, match=r"\(m, 1, 8, 8\) or \(m, 64\)"):
        net(torch.zeros(2, 63))


def test_initialisation_is_seeded_he_normal_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = ResNet18(width=8, seed=3), ResNet18(width=8, seed=3), ResNet18(width=8, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        if pa.abs().sum() > 0:  # biases are zero in both
            assert not torch.equal(pa, pc)
    # He-normal, fan_out: std sqrt(2 / (out * 9)); 36864 draws, relative SE of the std
    # 1/sqrt(2 N) = 0.4 %: 2 % is 5 SE.
    weight = a.layer4[1].conv1.weight
    expected = math.sqrt(2 / (weight.shape[0] * 9))
    assert abs(weight.std().item() / expected - 1) < 0.02
    assert torch.all(a.head.bias == 0)


def test_any_module_with_declared_taps_plugs_in():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    net.feature_taps = ["1"]
    x = torch.tensor([[1.0, 2.0]])
    with torch.no_grad():
        feats = network_features(net, x)
        torch.testing.assert_close(feats["1"], torch.relu(net[0](x)))
    assert not net[1]._forward_hooks  # the hooks are removed after the pass
    net.feature_taps = {"hidden": "5"}
    with pytest.raises(ValueError, match=r"does not have: \{'hidden': '5'\}"):
        check_feature_taps(net)
    del net.feature_taps
    with pytest.raises(ValueError, match="declares no feature_taps"):
        network_features(net, x)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MLP((1, 4, 4), (5,), seed=0),
        lambda: SmallCNN((1, 4, 4), width=2, seed=0),
        lambda: ResNet18((1, 4, 4), width=2, n_outputs=1, seed=0),
    ],
    ids=["mlp", "cnn", "resnet18"],
)
def test_module_model_wraps_the_networks_for_scalar_regression(build):
    net = build().double()
    model = ModuleModel(net)  # input_dim from the network's declared input_dim
    assert model.input_dim == net.input_dim == 16
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 16)), rng.standard_normal(6)
    theta = model.init([rng, rng])
    assert np.array_equal(theta[0], model.flat_params())
    pred = model.predict(theta, X)
    with torch.enable_grad():
        out = net(torch.from_numpy(X)).reshape(-1)
        loss = 0.5 * ((out - torch.from_numpy(y)) ** 2).mean()
        grads = torch.autograd.grad(loss, list(net.parameters()))
    np.testing.assert_allclose(pred[1], out.detach().numpy(), rtol=1e-12)
    flat = torch.cat([g.reshape(-1) for g in grads]).numpy()
    np.testing.assert_allclose(model.grad(theta, X, y)[0], flat, rtol=1e-10, atol=1e-14)


def test_module_model_refuses_classification_outputs():
    """ModuleModel is the scalar-output protocol: a 10-class head is refused by name."""
    with pytest.raises(ValueError, match="one scalar output"):
        ModuleModel(SmallCNN((1, 4, 4), width=2, n_outputs=10), input_dim=16)


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="input_shape must be"):
        ResNet18((32, 32), width=2)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        SmallCNN(width=0)
    with pytest.raises(ValueError, match="widths must name"):
        MLP(4, widths=())
