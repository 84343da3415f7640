"""Metrics of the post-ReLU features of a ReLU network (Andriushchenko et al., ICML
2023, Sec. 4 and the repository's notebooks; reference notes Sec. 2.7).

A feature matrix Phi is (examples x units) for one hidden layer, from
``model.layer_features(theta, X)`` (a list of (T, n, units) arrays, one per hidden
layer; ``TwoLayerReLU`` and ``DeepReLU`` have it).

* ``feature_sparsity``: the fraction of activations that are both distinct and
  non-zero. (1) optionally divide each example's feature vector by its norm (toy nets
  do); (2) drop units never active; (3) Pearson correlation between the remaining
  units across examples; (4) scan units in order, deleting a unit whose |corr| with a
  unit still kept exceeds ``threshold`` (0.999 1-D regression, 0.99 other toy nets,
  0.95 deep nets); (5) (positive entries of kept units) / (examples x ALL units).
  Lower is sparser. A unit of constant activation has no correlation (NaN) and is kept.
* ``active_fraction``: the raw fraction of positive entries (no de-duplication).
* ``dead_unit_fraction``: the fraction of units positive on no example.
* ``relu_pattern_flips``: entries (example, unit) whose ReLU state (z > 0) differs from
  the one at the initialization theta_0.

The recorded metrics give one value per hidden layer (dim ``layer``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from sgdsde.metrics.base import METRICS, check_inputs_option, select_inputs, shared
from sgdsde.metrics.builtin import BuiltinMetric
from sgdsde.metrics.temporal import IterateMetric


def _as_batch(features: np.ndarray) -> np.ndarray:
    """(T, n, units) from (n, units) or (T, n, units)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim == 2:
        features = features[None]
    if features.ndim != 3:
        raise ValueError(
            f"features must be (examples, units) or (T, examples, units), got shape "
            f"{features.shape}"
        )
    return features


def kept_units(phi: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the units of one feature matrix phi (n, units) kept by steps 2-4 of
    ``feature_sparsity``: active somewhere, and |corr| <= threshold with every unit kept
    before them (scanned in order)."""
    active = np.flatnonzero((phi > 0).any(axis=0))
    if active.size <= 1:
        return active
    centred = phi[:, active] - phi[:, active].mean(axis=0)
    norms = np.sqrt((centred * centred).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = centred / norms  # NaN for a constant unit: no correlation, never dropped
    corr = np.abs(unit.T @ unit)
    kept = np.zeros(active.size, dtype=bool)
    for u in range(active.size):
        kept[u] = not np.any(corr[u, kept] > threshold)
    return active[kept]


def feature_sparsity(
    features: np.ndarray, threshold: float = 0.99, normalize_rows: bool = True
) -> np.ndarray:
    """Feature sparsity with correlation de-duplication (module docstring), (T,).

    features: post-ReLU features (n, units) or (T, n, units).
    threshold: |Pearson corr| above which a unit duplicates a kept one, in [0, 1].
    normalize_rows: divide each example's feature vector by its l2 norm first (zero
        rows stay zero).
    """
    check_correlation_threshold("feature_sparsity", threshold)
    phi = _as_batch(features)
    T, n, units = phi.shape
    if normalize_rows:
        norms = np.sqrt((phi * phi).sum(axis=-1, keepdims=True))
        phi = np.divide(phi, norms, out=np.zeros_like(phi), where=norms > 0)
    out = np.empty(T)
    for t in range(T):
        kept = kept_units(phi[t], threshold)
        out[t] = np.count_nonzero(phi[t][:, kept] > 0) / (n * units)
    return out


def active_fraction(features: np.ndarray) -> np.ndarray:
    """Fraction of positive entries of the feature matrices (T, n, units), (T,)."""
    phi = _as_batch(features)
    return (phi > 0).mean(axis=(1, 2))


def dead_unit_fraction(features: np.ndarray) -> np.ndarray:
    """Fraction of units positive on no example, (T,)."""
    phi = _as_batch(features)
    return (~(phi > 0).any(axis=1)).mean(axis=-1)


def relu_pattern_flips(features: np.ndarray, features0: np.ndarray) -> np.ndarray:
    """#{(i, j) : 1[phi_ij > 0] != 1[phi0_ij > 0]}, (T,) int64: ReLU states that changed
    since the reference (e.g. the initialization); features0 (T or 1, n, units)."""
    phi, phi0 = _as_batch(features), _as_batch(features0)
    return np.count_nonzero((phi > 0) != (phi0 > 0), axis=(1, 2)).astype(np.int64)


def check_correlation_threshold(owner: str, threshold: Any) -> float:
    """``threshold`` as a float in [0, 1] (else ValueError naming ``owner``)."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not (math.isfinite(threshold) and 0 <= threshold <= 1)
    ):
        raise ValueError(
            f"{owner}: threshold must be a |correlation| in [0, 1] (0.999 1-D regression, "
            f"0.99 toy nets, 0.95 deep nets), got {threshold!r}"
        )
    return float(threshold)


def check_feature_model(owner: str, model: Any) -> None:
    """ValueError unless the model gives its post-ReLU features (``layer_features``)."""
    if not callable(getattr(model, "layer_features", None)):
        raise ValueError(
            f"metric {owner!r} needs a ReLU network with layer_features(theta, X) "
            f"(two_layer_relu, deep_relu): {getattr(model, 'name', type(model).__name__)!r} "
            "has none"
        )


def features_per_layer(model: Any, theta: np.ndarray, X: np.ndarray) -> list[np.ndarray]:
    """``model.layer_features(theta, X)``: one (T, n, units) array per hidden layer."""
    return model.layer_features(theta, X)


@dataclasses.dataclass(frozen=True)
class FeatureMetric(BuiltinMetric):
    """A per-layer metric of the post-ReLU features on the training ("train") or test
    ("test") inputs, the first ``max_examples`` (all if None); dim ``layer``."""

    inputs: str = "train"
    max_examples: int | None = None

    dims = ("layer",)

    def __post_init__(self):
        check_inputs_option(f"metric {self.name!r}", self.inputs, self.max_examples)

    def check(self, model, data):
        check_feature_model(self.name, model)

    def layers(self, theta, model, data) -> list[np.ndarray]:
        """The features, computed once per recorder step for every feature metric on the
        same inputs (``shared``)."""
        X = select_inputs(data, self.inputs, self.max_examples)
        key = f"layer_features_{self.inputs}_{self.max_examples}"
        return shared(key, (theta, model, data), lambda: features_per_layer(model, theta, X))

    def per_layer(self, fn, theta, model, data) -> np.ndarray:
        return np.stack([fn(phi) for phi in self.layers(theta, model, data)], axis=-1)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class FeatureSparsity(FeatureMetric):
    """``feature_sparsity`` per hidden layer."""

    threshold: float = 0.99
    normalize_rows: bool = True

    name = "feature_sparsity"
    long_name = (
        "feature sparsity: positive entries of decorrelated active units / (examples x units)"
    )

    def __post_init__(self):
        super().__post_init__()
        threshold = check_correlation_threshold("metric 'feature_sparsity'", self.threshold)
        object.__setattr__(self, "threshold", threshold)
        if not isinstance(self.normalize_rows, bool):
            raise ValueError(
                f"metric 'feature_sparsity': normalize_rows must be true or false, got "
                f"{self.normalize_rows!r}"
            )

    def settings(self):
        return super().settings() | {"normalize_rows": int(self.normalize_rows)}

    def __call__(self, theta, model, data):
        def sparsity(phi):
            return feature_sparsity(phi, self.threshold, self.normalize_rows)

        return self.per_layer(sparsity, theta, model, data)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class ActiveFraction(FeatureMetric):
    """``active_fraction`` per hidden layer."""

    name = "active_fraction"
    long_name = "fraction of positive post-ReLU activations"

    def __call__(self, theta, model, data):
        return self.per_layer(active_fraction, theta, model, data)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class DeadUnits(FeatureMetric):
    """``dead_unit_fraction`` per hidden layer."""

    name = "dead_units"
    long_name = "fraction of hidden units active on no example"

    def __call__(self, theta, model, data):
        return self.per_layer(dead_unit_fraction, theta, model, data)


@METRICS.register
@dataclasses.dataclass(frozen=True)
class ReluFlips(IterateMetric):
    """``relu_pattern_flips`` of theta_s against theta_0 per hidden layer, on the
    training ("train") or test ("test") inputs, the first ``max_examples``."""

    inputs: str = "train"
    max_examples: int | None = None

    name = "relu_flips"
    long_name = "number of (example, unit) ReLU states changed since initialization"
    units = "count"
    dims = ("layer",)
    dtype = np.int64

    def __post_init__(self):
        check_inputs_option(f"metric {self.name!r}", self.inputs, self.max_examples)

    def check(self, model, data):
        check_feature_model(self.name, model)

    def of_iterates(self, recent, theta0, model, data):
        X = select_inputs(data, self.inputs, self.max_examples)
        now = features_per_layer(model, recent[0], X)
        start = features_per_layer(model, theta0, X)
        return np.stack([relu_pattern_flips(a, b) for a, b in zip(now, start, strict=True)], -1)
