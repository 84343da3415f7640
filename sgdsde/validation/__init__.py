"""Validation of the SDE models against real SGD on deep networks (issue 9).

Sits above ``sgdsde.dynamics`` and ``sgdsde.sde`` and below ``sgdsde.experiments``.
Unlike the rest of the package it imports torch when imported: everything here is
torch. Networks with feature taps (``networks``), image data sets read offline
(``data``), seeded torch generators (``seeding``), minibatch SGD runs (``trainer``),
the SDE simulators and SVAG beside them (``simulators``), their comparison
(``compare``) and the config-driven validation (``runner``).
"""

from sgdsde.validation.data import (
    Augmentation,
    ImageData,
    load_cifar,
    load_digits,
    metrics_subset,
    teacher_images,
)
from sgdsde.validation.networks import (
    MLP,
    ResNet18,
    SmallCNN,
    TappedNetwork,
    check_feature_taps,
    network_features,
)
from sgdsde.validation.seeding import torch_generator
from sgdsde.validation.simulators import (
    loss_delta_path,
    noise_trace_delta,
    noise_trace_delta_path,
    noise_trace_plateau_delta,
    per_example_loss,
    plateau_delta,
    plateau_steps,
    simulate_label_noise_sde,
    simulate_sgd_covariance_sde,
    simulate_svag,
    svag_weights,
)
from sgdsde.validation.trainer import TrainResult, loss_function, train_sgd

__all__ = [
    "MLP",
    "Augmentation",
    "ImageData",
    "ResNet18",
    "SmallCNN",
    "TappedNetwork",
    "TrainResult",
    "check_feature_taps",
    "load_cifar",
    "load_digits",
    "loss_delta_path",
    "loss_function",
    "metrics_subset",
    "network_features",
    "noise_trace_delta",
    "noise_trace_delta_path",
    "noise_trace_plateau_delta",
    "per_example_loss",
    "plateau_delta",
    "plateau_steps",
    "simulate_label_noise_sde",
    "simulate_sgd_covariance_sde",
    "simulate_svag",
    "svag_weights",
    "teacher_images",
    "torch_generator",
    "train_sgd",
]

# Evaluations, run datasets and the SGD-vs-SDE comparison (issue 9, Secs. 2 and 4).
from sgdsde.validation.compare import (
    agreement_score,
    agreement_table,
    compare_runs,
    plot_comparison,
)
from sgdsde.validation.runner import (
    check_validation_config,
    load_validation_config,
    validate,
    validation_summary,
)
from sgdsde.validation.trainer import (
    EvaluationOptions,
    Evaluator,
    noisy_labels,
    results_dataset,
    unit_subsample,
)

__all__ += [
    "EvaluationOptions",
    "Evaluator",
    "agreement_score",
    "agreement_table",
    "check_validation_config",
    "compare_runs",
    "load_validation_config",
    "noisy_labels",
    "plot_comparison",
    "results_dataset",
    "unit_subsample",
    "validate",
    "validation_summary",
]
