"""Three-layer ReLU teacher-student (Andriushchenko et al., ICML 2023, appendix;
``fc_nets_multi_layer.ipynb``; reference notes Sec. 2.5 and 4.4).

A deep ReLU teacher (d = 5, hidden widths [2, 2], biases) labels n = 50 inputs on the
unit sphere; a student with hidden widths [10, 10] and biases (W ~ 0.8 N(0, 1)) is
trained by SGD with batch size 1 at a small constant step size, or at a larger one with
a square-root warm-up (``PowerWarmup``) divided at 10 / 30 / 50 % of the run. Reported
at the end: test and training loss, the fraction of active units of each hidden layer on
the training inputs, the feature sparsity of each layer (threshold 0.99), the entropy of
the normalized singular values of the row-normalized layer-2 features on the first
``rank_examples`` test inputs (what the notebook calls their effective rank: its
``effective_rank`` returns the entropy, the log of ``sgdsde.metrics.jacobian``'s
effective rank) and the Jacobian rank on the same inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from sgdsde.analysis.plots import finish_figure
from sgdsde.experiments.base import EXPERIMENTS
from sgdsde.experiments.config import Key
from sgdsde.experiments.paper_relu import (
    TEST_LOSS_DOC,
    TEST_RANK_DOC,
    TRAIN_LOSS_DOC,
    ReluExperiment,
    ReluPlan,
    as_float,
    curves,
    final,
    jacobian_rank_on_test_inputs,
    plot_over_steps,
    rank_examples_key,
)
from sgdsde.metrics import METRICS, Metric
from sgdsde.metrics.jacobian import effective_rank


def rank_entropy(features: np.ndarray) -> np.ndarray:
    """-sum_i p_i log p_i, p_i = sigma_i / sum_j sigma_j, of each row-normalized feature
    matrix (T, n, units) (zero rows stay zero), (T,): the notebook's "effective rank"
    (``utils.effective_rank``), the log of ``effective_rank``; NaN for a zero matrix."""
    features = np.asarray(features, dtype=np.float64)
    norms = np.sqrt((features * features).sum(axis=-1, keepdims=True))
    unit = np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)
    return np.log(effective_rank(unit))


def last_layer_entropy_metric(n_examples: int) -> Metric:
    """``rank_entropy`` of the last hidden layer's features on the first ``n_examples``
    test inputs, recorded as ``feature_rank_entropy``."""

    def fn(theta, model, data):
        return rank_entropy(model.layer_features(theta, data.X_test[:n_examples])[-1])

    return Metric(
        "feature_rank_entropy",
        fn,
        long_name="entropy of the normalized singular values of the last hidden layer's "
        f"row-normalized features on {n_examples} test inputs",
        units="nat",
    )


@EXPERIMENTS.register
class PaperReluThreeLayer(ReluExperiment):
    """The three-layer teacher-student experiment (module docstring)."""

    name = "paper_relu_three_layer"
    quantities: ClassVar[dict[str, str]] = {
        "test_loss": TEST_LOSS_DOC,
        "train_loss": TRAIN_LOSS_DOC,
        "active_layer1": "final fraction of positive layer-1 activations, training inputs",
        "active_layer2": "final fraction of positive layer-2 activations, training inputs",
        "feature_sparsity_layer1": "final feature sparsity of layer 1, training inputs",
        "feature_sparsity_layer2": "final feature sparsity of layer 2, training inputs",
        "layer2_rank_entropy": "final entropy of the layer-2 feature singular values, nats "
        "(the notebook's 'effective rank')",
        "jacobian_rank": TEST_RANK_DOC,
    }
    extra_keys: ClassVar[dict[str, Key]] = {
        "rank_examples": rank_examples_key("the ranks", 181),
    }

    def prepare_extra(self, top, checker, data, model, n_steps):
        widths = getattr(model, "widths", None)
        if model is not None and (model.name != "deep_relu" or len(widths) != 2):
            checker.problem(
                "model", "must be a deep_relu with two hidden layers (widths = [10, 10])"
            )
        return {"rank_examples": top.get("rank_examples", 181)}

    def metrics(self, plan: ReluPlan) -> list:
        return [
            METRICS.make("feature_sparsity", threshold=plan.feature_threshold),
            METRICS.make("active_fraction"),
            jacobian_rank_on_test_inputs(plan),
            last_layer_entropy_metric(plan.extra["rank_examples"]),
        ]

    def report(self, plan: ReluPlan, runs: xr.Dataset):
        sparsity, active = final(runs, "feature_sparsity"), final(runs, "active_fraction")
        quantities = {
            "test_loss": final(runs, "test_loss"),
            "train_loss": final(runs, "train_loss"),
            "active_layer1": active[..., 0],
            "active_layer2": active[..., 1],
            "feature_sparsity_layer1": sparsity[..., 0],
            "feature_sparsity_layer2": sparsity[..., 1],
            "layer2_rank_entropy": final(runs, "feature_rank_entropy"),
            "jacobian_rank": final(runs, "jacobian_rank"),
        }
        out = curves(runs, ["train_loss", "test_loss", "jacobian_rank", "feature_rank_entropy"])
        for name in ("feature_sparsity", "active_fraction"):
            per_layer = as_float(runs[name])
            for layer in range(per_layer.sizes["layer"]):
                out[f"{name}_layer{layer + 1}_curve"] = per_layer.isel(layer=layer, drop=True)
        return quantities, out

    def plot(self, ds: xr.Dataset, path: str | Path | None = None, *, title: str | None = None):
        panels = [
            ("train_loss_curve", True, "train loss"),
            ("test_loss_curve", True, "test loss"),
            ("jacobian_rank_curve", False, "rank phi(X), test"),
            ("feature_sparsity_layer1_curve", False, "feature sparsity, layer 1"),
            ("feature_sparsity_layer2_curve", False, "feature sparsity, layer 2"),
            ("active_fraction_layer2_curve", False, "active fraction, layer 2"),
            ("feature_rank_entropy_curve", False, "layer-2 rank entropy (nats)"),
        ]
        fig, axes = plt.subplots(2, 4, figsize=(14.0, 6.6), squeeze=False)
        flat = axes.ravel()
        for ax, (var, log, label) in zip(flat, panels, strict=False):
            plot_over_steps(ax, ds, var, log=log, ylabel=label)
        flat[0].legend(fontsize=6.5)
        for ax in flat[len(panels) :]:
            ax.axis("off")
        return finish_figure(fig, title, path)
