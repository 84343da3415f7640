"""Deep networks for validation runs, each exposing its block features through taps.

The feature-tap protocol: a ``torch.nn.Module`` declares ``feature_taps``, a mapping
from a tap name to the dotted name of one of its submodules (as in
``named_modules()``); the features of a tap are that submodule's output.
``network_features(module, x)`` runs one forward pass and returns them, in declared
order, by forward hooks: any module with such a declaration plugs in, ours and the
user's. By convention the last tap is the penultimate layer, the input of the final
linear layer (what Andriushchenko et al. call block 5 of a ResNet-18, "SGD with Large
Step Sizes Learns Sparse Features", ICML 2023, Sec. 4). Every tap of the networks here
is post-ReLU, so "> 0" means "active" for the feature-sparsity metrics.

The networks take images (m, C, H, W) or the same images flattened, (m, C*H*W), so that
``sgdsde.models.ModuleModel`` (inputs (m, d)) can wrap them: pass
``input_dim=net.input_dim``. Parameters are drawn from a ``torch.Generator`` seeded by
``seed``, never from torch's global generator (whose state the constructors leave as
they found it).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sgdsde.arguments import check_positive_int
from sgdsde.validation.seeding import torch_generator


def check_feature_taps(module: Any) -> dict[str, str]:
    """The module's ``feature_taps`` as a {tap: submodule name} dict, after checking that
    every named submodule exists (ValueError naming the missing ones otherwise).

    module: a ``torch.nn.Module`` with a ``feature_taps`` attribute, a mapping
        {tap name: submodule name} or a sequence of submodule names (each its own tap).
    """
    taps = getattr(module, "feature_taps", None)
    if taps is None:
        raise ValueError(
            f"{type(module).__name__} declares no feature_taps: give the module an attribute "
            "feature_taps = {tap name: submodule name}, e.g. {'block1': 'layer1'}"
        )
    if not isinstance(taps, Mapping):
        if isinstance(taps, str) or not isinstance(taps, Sequence):
            raise ValueError(
                f"feature_taps must be a mapping or a list of submodule names (got {taps!r})"
            )
        taps = {name: name for name in taps}
    if not taps:
        raise ValueError("feature_taps is empty: declare at least one tap")
    submodules = dict(module.named_modules())
    missing = {tap: name for tap, name in taps.items() if name not in submodules}
    if missing:
        raise ValueError(
            f"feature_taps of {type(module).__name__} name submodules it does not have: "
            f"{missing}; its submodules are {sorted(k for k in submodules if k)}"
        )
    return {str(tap): str(name) for tap, name in taps.items()}


def network_features(module: Any, x: Any) -> dict[str, Any]:
    """{tap: features} for inputs ``x``: one forward pass, each tap's submodule output
    flattened to (m, units) (a conv block's (m, C, H, W) is (m, C*H*W), unit (c, h, w) at
    column (c*H + h)*W + w), in the order of ``feature_taps``.

    module: a ``torch.nn.Module`` declaring ``feature_taps`` (see ``check_feature_taps``).
    x: inputs the module accepts, batch first.
    """
    taps = check_feature_taps(module)
    submodules = dict(module.named_modules())
    outputs: dict[str, Any] = {}
    handles = []
    for tap, name in taps.items():

        def hook(_mod, _inp, out, tap=tap):
            outputs[tap] = out.reshape(out.shape[0], -1)

        handles.append(submodules[name].register_forward_hook(hook))
    try:
        module(x)
    finally:
        for handle in handles:
            handle.remove()
    return {tap: outputs[tap] for tap in taps}


class TappedNetwork(nn.Module):
    """Base of the networks here: a fixed input shape, flat inputs accepted, taps.

    Subclasses set ``feature_taps`` and implement ``forward_images`` on (m, *input_shape).
    """

    feature_taps: dict[str, str]

    def __init__(self, input_shape: tuple[int, ...]):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)

    @property
    def input_dim(self) -> int:
        """C*H*W (or d): the width of the flattened inputs."""
        return math.prod(self.input_shape)

    def forward(self, x):
        if x.shape[1:] != self.input_shape:
            if x.ndim != 2 or x.shape[1] != self.input_dim:
                raise ValueError(
                    f"inputs must have shape (m, {', '.join(map(str, self.input_shape))}) or "
                    f"(m, {self.input_dim}) (got {tuple(x.shape)})"
                )
            x = x.reshape(x.shape[0], *self.input_shape)
        return self.forward_images(x)

    def forward_images(self, x):
        raise NotImplementedError

    def features(self, x) -> dict[str, Any]:
        """{tap: (m, units) features} of inputs ``x`` (``network_features``)."""
        return network_features(self, x)


def _initialise(module: Any, seed: Any) -> None:
    """He-normal (fan_out, ReLU gain) convolutions and He-normal (fan_in) linear weights,
    zero biases, BatchNorm weight 1 and bias 0 (the initialisation of the paper's
    deep_nets), drawn from a generator seeded by ``seed``."""
    generator = torch_generator(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d | nn.Linear):
                mode = "fan_out" if isinstance(sub, nn.Conv2d) else "fan_in"
                nn.init.kaiming_normal_(
                    sub.weight, mode=mode, nonlinearity="relu", generator=generator
                )
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.BatchNorm2d):
                sub.weight.fill_(1.0)
                sub.bias.zero_()


class MLP(TappedNetwork):
    """x -> ReLU(W_1 x + b_1) -> ... -> ReLU(W_L h + b_L) -> a^T h (+ c).

    input_shape: the shape of one input, e.g. (64,) or (1, 8, 8) (flattened inside).
    widths: hidden widths (h_1, ..., h_L), L >= 1.
    n_outputs: 1 for scalar regression, the number of classes for classification.
    bias: biases in every layer.
    seed: int or ``numpy.random.SeedSequence`` of the initialisation.

    Taps: "block1" .. "blockL", the hidden ReLU outputs; the last is the penultimate.
    """

    def __init__(
        self,
        input_shape: Sequence[int] | int,
        widths: Sequence[int] = (64, 64),
        n_outputs: int = 1,
        *,
        bias: bool = True,
        seed: Any = 0,
    ):
        shape = (input_shape,) if isinstance(input_shape, int | np.integer) else input_shape
        widths = tuple(widths)
        if not widths:
            raise ValueError("widths must name at least one hidden layer, e.g. widths=(64,)")
        check_positive_int(n_outputs=n_outputs, **{f"widths[{i}]": w for i, w in enumerate(widths)})
        with torch.random.fork_rng(devices=[]):
            super().__init__(shape)
            layers: dict[str, Any] = {}
            fan_in = self.input_dim
            for i, width in enumerate(widths, start=1):
                layers[f"linear{i}"] = nn.Linear(fan_in, width, bias=bias)
                layers[f"relu{i}"] = nn.ReLU()
                fan_in = width
            layers["head"] = nn.Linear(fan_in, n_outputs, bias=bias)
            self.layers = nn.Sequential(OrderedDict(layers))
        self.feature_taps = {f"block{i}": f"layers.relu{i}" for i in range(1, len(widths) + 1)}
        _initialise(self, seed)

    def forward_images(self, x):
        return self.layers(x.reshape(x.shape[0], -1))

    def neuron_vectors(self) -> dict[str, torch.Tensor]:
        """{"block<l>": (h_l, k)}: hidden unit i of layer l as (row i of W_l, b_l[i],
        column i of W_{l+1}) (``sgdsde.validation.collapse``; the toy ``deep_relu``'s
        ``neuron_vectors``)."""
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        out = {}
        for l, (layer, following) in enumerate(itertools.pairwise(linears), 1):
            parts = [layer.weight]
            if layer.bias is not None:
                parts.append(layer.bias[:, None])
            out[f"block{l}"] = torch.cat([*parts, following.weight.T], dim=1)
        return out


class SmallCNN(TappedNetwork):
    """Two 3x3 conv + ReLU blocks (the second with stride 2), global average pooling,
    a linear head.

    input_shape: (C, H, W) of one image.
    width: channels of the first block (the second has 2*width).
    n_outputs: 1 for scalar regression, the number of classes for classification.
    seed: int or ``numpy.random.SeedSequence`` of the initialisation.

    Taps: "block1" (width, H, W), "block2" (2 width, ceil(H/2), ceil(W/2)), "block3" the
    pooled penultimate features (2 width,).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 8, 8),
        width: int = 16,
        n_outputs: int = 1,
        *,
        seed: Any = 0,
    ):
        _check_image_shape(input_shape)
        check_positive_int(width=width, n_outputs=n_outputs)
        with torch.random.fork_rng(devices=[]):
            super().__init__(tuple(input_shape))
            channels = self.input_shape[0]
            self.conv1 = nn.Conv2d(channels, width, 3, stride=1, padding=1)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
            self.relu2 = nn.ReLU()
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(2 * width, n_outputs)
        self.feature_taps = {"block1": "relu1", "block2": "relu2", "block3": "pool"}
        _initialise(self, seed)

    def forward_images(self, x):
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.head(self.pool(h))

    def neuron_vectors(self) -> dict[str, torch.Tensor]:
        """{"block1": (width, k), "block2": (2 width, k)}: channel i as (its filter, its
        bias, the next layer's weights reading it: conv2[:, i] for block 1, head[:, i]
        for block 2) (``sgdsde.validation.collapse``)."""
        out = {}
        for name, conv, reader in (
            ("block1", self.conv1, self.conv2.weight.transpose(0, 1)),
            ("block2", self.conv2, self.head.weight.T),
        ):
            units = conv.weight.shape[0]
            parts = [conv.weight.reshape(units, -1), conv.bias[:, None]]
            out[name] = torch.cat([*parts, reader.reshape(units, -1)], dim=1)
        return out


class BasicBlock(nn.Module):
    """Post-activation residual block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)),
    the shortcut a 1x1 conv (+ BN) where the shape changes (He et al. 2016)."""

    def __init__(self, in_channels: int, channels: int, stride: int, batch_norm: bool):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride, batch_norm)
        self.bn1 = _norm(channels, batch_norm)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(channels, channels, 1, batch_norm)
        self.bn2 = _norm(channels, batch_norm)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=not batch_norm),
                _norm(channels, batch_norm),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x):
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet18(TappedNetwork):
    """ResNet-18 in the "plain" (post-activation) form of the paper's deep_nets
    (``resnet18_plain``), with the CIFAR stem: a 3x3 conv with stride 1 and no max-pool,
    then four stages of two ``BasicBlock``s with width, 2, 4, 8 x width channels (strides
    1, 2, 2, 2), global average pooling and a linear head.

    input_shape: (C, H, W) of one image, (3, 32, 32) for CIFAR.
    width: channels of the stem and the first stage (64 in the paper).
    n_outputs: the number of classes (1 for scalar regression).
    batch_norm: BatchNorm after every conv, as in the paper's ``resnet18_plain``. Off by
        default: the network is then a function of its parameters alone (no batch
        statistics), as the SDE simulators and ``ModuleModel`` need; convs get biases.
    seed: int or ``numpy.random.SeedSequence`` of the initialisation.

    Taps: "block1" .. "block4", the outputs of the four stages (post-ReLU;
    (width, H, W), (2 width, H/2, W/2), (4 width, H/4, W/4), (8 width, H/8, W/8)), and
    "block5", the pooled penultimate features (8 width,).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        width: int = 64,
        n_outputs: int = 10,
        *,
        batch_norm: bool = False,
        seed: Any = 0,
    ):
        _check_image_shape(input_shape)
        check_positive_int(width=width, n_outputs=n_outputs)
        with torch.random.fork_rng(devices=[]):
            super().__init__(tuple(input_shape))
            self.stem = nn.Sequential(
                _conv3x3(self.input_shape[0], width, 1, batch_norm),
                _norm(width, batch_norm),
                nn.ReLU(),
            )
            stages, in_channels = [], width
            for stage, stride in enumerate((1, 2, 2, 2)):
                channels = width * 2**stage
                stages.append(
                    nn.Sequential(
                        BasicBlock(in_channels, channels, stride, batch_norm),
                        BasicBlock(channels, channels, 1, batch_norm),
                    )
                )
                in_channels = channels
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(in_channels, n_outputs)
        self.batch_norm = bool(batch_norm)
        self.feature_taps = {f"block{i}": f"layer{i}" for i in range(1, 5)}
        self.feature_taps["block5"] = "pool"
        _initialise(self, seed)

    def forward_images(self, x):
        h = self.stem(x)
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return self.head(self.pool(h))

    def neuron_vectors(self) -> dict[str, torch.Tensor]:
        """{"block<s>": (channels_s, k)} for the four stages: output channel c of stage s
        as (the filter of its last block's second conv that writes channel c, that conv's
        bias, or BatchNorm's scale and shift with ``batch_norm``; the weights that read
        channel c: the next stage's first conv ``conv1[:, c]`` and its 1x1 shortcut
        ``[:, c]``, or ``head[:, c]`` after stage 4) (``sgdsde.validation.collapse``).

        The identity shortcut inside the last block adds the block's input to channel c
        with no parameter, so it is not part of the vector. "block5" (the pooled stage-4
        channels) has no neurons of its own: its units are block 4's.
        """
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        out = {}
        for s, stage in enumerate(stages, 1):
            last = stage[-1]
            units = last.conv2.weight.shape[0]
            if self.batch_norm:
                own = [last.bn2.weight[:, None], last.bn2.bias[:, None]]
            else:
                own = [last.conv2.bias[:, None]]
            if s < len(stages):
                following = stages[s][0]
                readers = [following.conv1.weight, following.shortcut[0].weight]
            else:
                readers = [self.head.weight]
            read = [r.transpose(0, 1).reshape(units, -1) for r in readers]
            out[f"block{s}"] = torch.cat([last.conv2.weight.reshape(units, -1), *own, *read], 1)
        return out


def _conv3x3(in_channels: int, channels: int, stride: int, batch_norm: bool):
    return nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=not batch_norm)


def _norm(channels: int, batch_norm: bool):
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _check_image_shape(input_shape: Any) -> None:
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if len(shape) != 3 or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(
            f"input_shape must be (channels, height, width) of positive integers "
            f"(got {input_shape!r}), e.g. (3, 32, 32) for CIFAR or (1, 8, 8) for digits"
        )
