"""Stochastic-collapse metrics (Chen, Kunin, Yamamura, Ganguli, NeurIPS 2023; reference
notes collapse-walk.md Sec. 1.4): vanishing neurons, identical neuron pairs and the
fraction of independent neurons, per hidden layer.

Each hidden unit i has the vector theta_i = (incoming weights, bias, outgoing weights)
(``neuron_vectors``).

* vanishing: ||theta_i|| < ``vanishing`` * max_j ||theta_j|| (the paper: 0.1);
* identical pair: among non-vanishing units, 2 ||theta_i - theta_j||^2 /
  (||theta_i||^2 + ||theta_j||^2) < ``identical`` (0.1); this distance is 0 for equal
  units and 2 for orthogonal units of equal norm;
* independent neurons: non-vanishing units grouped greedily (in order, each unit
  starts a group and takes every later unassigned unit identical to it; no transitive
  closure, as the paper's code); their number is the number of groups, reported as a
  fraction of all units of the layer (0 for a fully collapsed layer).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from sgdsde.metrics.base import METRICS
from sgdsde.metrics.builtin import BuiltinMetric
from sgdsde.models import DeepReLU, GeluPair, TwoLayerReLU


def neuron_vectors(model: Any, theta: np.ndarray) -> list[np.ndarray]:
    """theta_i = (incoming weights, bias, outgoing weights) of every hidden unit, one
    array (T, units, k) per hidden layer: two_layer_relu (w_i, b_i, a_i), deep_relu
    (row i of W_l, b_l[i], column i of W_{l+1}), gelu_pair (w_k, a_k)."""
    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    T = theta.shape[0]
    blocks = model.param_blocks()
    if isinstance(model, TwoLayerReLU):
        parts = [theta[:, blocks["W"]].reshape(T, model.m, model.d)]
        if model.bias:
            parts.append(theta[:, blocks["b"], None])
        return [np.concatenate([*parts, theta[:, blocks["a"], None]], axis=-1)]
    if isinstance(model, GeluPair):
        return [np.stack([theta[:, blocks["w"]], theta[:, blocks["a"]]], axis=-1)]
    if isinstance(model, DeepReLU):
        shapes = model.layer_shapes
        out = []
        for l in range(1, len(shapes)):
            (w, fan_in), (next_w, _) = shapes[l - 1], shapes[l]
            parts = [theta[:, blocks[f"W{l}"]].reshape(T, w, fan_in)]
            if model.bias:
                parts.append(theta[:, blocks[f"b{l}"], None])
            W_next = theta[:, blocks[f"W{l + 1}"]].reshape(T, next_w, w)
            out.append(np.concatenate([*parts, W_next.transpose(0, 2, 1)], axis=-1))
        return out
    raise ValueError(
        f"no neuron structure known for model {getattr(model, 'name', type(model).__name__)!r}: "
        "collapse metrics take two_layer_relu, deep_relu or gelu_pair"
    )


def _squared_norms(vectors: np.ndarray) -> np.ndarray:
    return np.einsum("...k,...k->...", vectors, vectors)


def vanishing_mask(vectors: np.ndarray, vanishing: float = 0.1) -> np.ndarray:
    """||theta_i|| < vanishing * max_j ||theta_j||, (T, units) bool, for neuron vectors
    (T, units, k); no unit vanishes in an all-zero layer (0 < 0 is false)."""
    norms = np.sqrt(_squared_norms(vectors))
    return norms < vanishing * norms.max(axis=-1, keepdims=True)


def pair_distances(vectors: np.ndarray) -> np.ndarray:
    """2 ||theta_i - theta_j||^2 / (||theta_i||^2 + ||theta_j||^2), (T, units, units);
    NaN for two zero units."""
    sq = _squared_norms(vectors)
    diff = vectors[:, :, None, :] - vectors[:, None, :, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * _squared_norms(diff) / (sq[:, :, None] + sq[:, None, :])


def identical_pairs(
    vectors: np.ndarray, identical: float = 0.1, vanishing: float = 0.1
) -> np.ndarray:
    """Number of pairs i < j of non-vanishing units at distance < identical, (T,) int64."""
    alive = ~vanishing_mask(vectors, vanishing)
    close = pair_distances(vectors) < identical
    close &= alive[:, :, None] & alive[:, None, :]
    return np.triu(close, k=1).sum(axis=(1, 2)).astype(np.int64)


def independent_fraction(
    vectors: np.ndarray, identical: float = 0.1, vanishing: float = 0.1
) -> np.ndarray:
    """(number of groups of identical non-vanishing units) / units, (T,) (module
    docstring: greedy grouping in unit order)."""
    alive = ~vanishing_mask(vectors, vanishing)
    close = pair_distances(vectors) < identical
    T, units = alive.shape
    out = np.empty(T)
    for t in range(T):
        free = alive[t].copy()
        groups = 0
        for i in range(units):
            if free[i]:
                groups += 1
                free &= ~close[t, i]
                free[i] = False
        out[t] = groups / units
    return out


def _check_fraction(owner: str, key: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(
            f"metric {owner!r}: {key} must be a number > 0 (the paper: 0.1), got {value!r}"
        )
    return float(value)


@dataclasses.dataclass(frozen=True)
class CollapseMetric(BuiltinMetric):
    """A per-hidden-layer collapse metric (dim ``layer``) with the paper's thresholds."""

    vanishing: float = 0.1
    identical: float = 0.1

    dims = ("layer",)

    def __post_init__(self):
        for key in ("vanishing", "identical"):
            object.__setattr__(self, key, _check_fraction(self.name, key, getattr(self, key)))

    def check(self, model, data):
        neuron_vectors(model, np.zeros((1, model.n_params)))

    def per_layer(self, fn, theta, model) -> np.ndarray:
        return np.stack([fn(v) for v in neuron_vectors(model, theta)], axis=-1)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class VanishingNeurons(CollapseMetric):
    """Fraction of vanishing units per hidden layer."""

    name = "vanishing_neurons"
    long_name = "fraction of units with ||theta_i|| < vanishing * max_j ||theta_j||"

    def __call__(self, theta, model, data):
        return self.per_layer(lambda v: vanishing_mask(v, self.vanishing).mean(-1), theta, model)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class IdenticalPairs(CollapseMetric):
    """Number of identical pairs of non-vanishing units per hidden layer."""

    name = "identical_pairs"
    long_name = "pairs of non-vanishing units with 2|ti - tj|^2 / (|ti|^2 + |tj|^2) < identical"
    units = "count"
    dtype = np.int64

    def __call__(self, theta, model, data):
        def count(v):
            return identical_pairs(v, self.identical, self.vanishing)

        return self.per_layer(count, theta, model)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class IndependentNeurons(CollapseMetric):
    """Fraction of independent neurons per hidden layer."""

    name = "independent_neurons"
    long_name = "groups of identical non-vanishing units / units"

    def __call__(self, theta, model, data):
        def fraction(v):
            return independent_fraction(v, self.identical, self.vanishing)

        return self.per_layer(fraction, theta, model)
