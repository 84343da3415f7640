"""Minibatch SGD on a torch network, the run the SDE simulators are checked against.

One step, k = 0 .. n_steps - 1, on a minibatch B_k of size B drawn without replacement
(a fresh permutation of the training set each epoch of floor(n / B) steps, the last
partial batch dropped, as the paper's deep_nets):

    theta_{k+1} = theta_k - eta_k (grad L_{B_k}(theta_k) + lambda theta_k)   (no momentum)

with eta_k = schedule(k, n_steps) (any ``sgdsde.dynamics`` schedule) and torch's SGD
for momentum mu (v <- mu v + g; theta <- theta - eta_k v) and weight decay lambda, both
0 by default. Losses (docs/conventions.md):

* "square": L_B = 1/(2|B|) sum_{i in B} ||f(x_i) - e_{y_i}||^2 (one-hot targets, the
  package's 1/(2n) convention summed over outputs);
* "cross_entropy": L_B = 1/|B| sum_{i in B} -log softmax(f(x_i))_{y_i}.

Label noise (``label_noise``, fresh at every step for the minibatch's examples only):

* square loss: Gaussian, every entry of the one-hot target plus xi ~ N(0, delta),
  delta = ``label_noise`` (docs/conventions.md's label noise of variance delta, on each
  of the K outputs);
* cross-entropy: each example relabelled with probability p = ``label_noise`` to a class
  drawn uniformly from all K (possibly its own, as the paper's deep_nets
  ``--sgd_p_label_noise``).

The SDE time of step k is t_k = sum_{j<k} eta_j. Every ``eval_every`` steps (and at
steps 0 and n_steps) the run records, through an ``Evaluator``, the loss and error (the
fraction misclassified, argmax) on the fixed metrics subset of the training set and on
the test set, the weight norm ||theta||_2, the distance from initialization
||theta - theta_0||_2 and, for a network declaring feature taps, per tap the feature
sparsity (de-duplicated at |corr| > 0.95, rows not normalized: the deep-net setting of
Andriushchenko et al., ICML 2023), the active fraction and the dead-unit fraction on the
metrics subset, each on at most ``max_units`` units of the tap, a subsample drawn once
per run (``unit_subsample``) and reused at every evaluation; optionally
(``EvaluationOptions.walk``) the walk metrics of the last update (``validation.walk``)
and (``EvaluationOptions.noise_delta``, square loss) the trace-matched label-noise
variance of the iterate (``noise_trace_delta``).
A minibatch loss that is not finite or exceeds ``max_loss`` stops the run at the next
evaluation: it is recorded as diverged at that step (later evaluations NaN), not raised.

Randomness: ``seed`` is spawned into the minibatch, augmentation and label-noise
streams, each a ``torch.Generator`` (``torch_generator``) on the run's device, so that
a CUDA step loop copies nothing from the host (CPU and CUDA runs of one seed then agree
in law, not in bits); torch's global generator is never drawn. The unit subsample
comes from ``feature_seed``, not from ``seed``: every run of a comparison (any seed,
SGD or SDE) measures the same units.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import xarray as xr

from sgdsde.dynamics.schedules import Schedule, as_schedule, cumulative_time
from sgdsde.metrics.features import (
    active_fraction,
    check_correlation_threshold,
    dead_unit_fraction,
    feature_sparsity,
)
from sgdsde.random import as_seed_sequence
from sgdsde.run.checks import check_device, check_int, check_positive_real
from sgdsde.run.dataset import make_dataset
from sgdsde.run.provenance import environment_attrs, run_attrs
from sgdsde.validation.collapse import (
    COLLAPSE_RECORDS,
    collapse_statistics,
    network_neuron_vectors,
)
from sgdsde.validation.data import Augmentation, ImageData, metrics_subset
from sgdsde.validation.networks import network_features
from sgdsde.validation.seeding import torch_generator
from sgdsde.validation.walk import WALK_RECORDS, FlatParameterLoss, walk_record, walk_steps

LOSSES = ("square", "cross_entropy")

#: The de-duplication threshold of feature sparsity on deep networks (the paper's 0.95).
DEEP_NET_THRESHOLD = 0.95

#: Scalar records of every evaluation, in ``TrainResult`` order.
SCALAR_RECORDS = (
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "weight_norm",
    "distance_from_init",
)

#: Optional scalar records of every evaluation (``EvaluationOptions.noise_delta``).
NOISE_RECORDS = ("noise_delta",)

#: Per-tap records of every evaluation (networks declaring feature taps).
FEATURE_RECORDS = ("feature_sparsity", "active_fraction", "dead_units")

#: Every per-block record: the feature metrics per tap, the collapse metrics per hidden
#: layer (networks declaring ``neuron_vectors``; layers named as their taps).
BLOCK_RECORDS = (*FEATURE_RECORDS, *COLLAPSE_RECORDS)

#: Dataset attrs of the records that ``sgdsde.run.dataset`` does not describe.
RECORD_ATTRS = {
    "train_error": {"long_name": "training error (fraction misclassified)", "units": "1"},
    "test_error": {"long_name": "test error (fraction misclassified)", "units": "1"},
    "weight_norm": {"long_name": "l2 norm of all parameters ||theta||", "units": "1"},
    "distance_from_init": {
        "long_name": "distance from initialization ||theta - theta_0||",
        "units": "1",
    },
    "feature_sparsity": {
        "long_name": "feature sparsity: positive entries of decorrelated active units / "
        "(examples x units)",
        "units": "1",
    },
    "active_fraction": {"long_name": "fraction of positive post-ReLU activations", "units": "1"},
    "dead_units": {"long_name": "fraction of units active on no example", "units": "1"},
    "vanishing_neurons": {
        "long_name": "fraction of units with ||theta_i|| < 0.1 max_j ||theta_j|| (collapse)",
        "units": "1",
    },
    "identical_pairs": {
        "long_name": "pairs of non-vanishing units at relative distance < 0.1 (collapse)",
        "units": "count",
    },
    "independent_neurons": {
        "long_name": "groups of identical non-vanishing units / units (collapse)",
        "units": "1",
    },
    "floor_height": {
        "long_name": "lowest training loss on the segment of the update ending here (walk)",
        "units": "1",
    },
    "height_above_floor": {
        "long_name": "training loss before the update ending here minus the lowest loss on "
        "its segment (walk)",
        "units": "1",
    },
    "interior_minimum": {
        "long_name": "1 if the loss on the segment of the update ending here dips below "
        "both ends, else 0 (walk)",
        "units": "1",
    },
    "update_cosine": {
        "long_name": "cosine of the two consecutive updates ending here (walk)",
        "units": "1",
    },
    "segment_loss": {
        "long_name": "training loss (metrics subset) along the segment of the update "
        "ending here (walk)",
        "units": "1",
    },
    "noise_delta": {
        "long_name": "label-noise variance whose SDE noise has the trace of the minibatch "
        "gradient covariance (metrics subset; noise_trace_delta)",
        "units": "1",
    },
}


@dataclasses.dataclass(frozen=True)
class EvaluationOptions:
    """When a run is evaluated and what an evaluation records (module doc): one object
    handed to ``train_sgd`` and to every simulator, so that SGD and its SDE models are
    evaluated at the same times and record the same observables the same way.

    eval_every: evaluate every so many SGD steps (and at step 0 and the last); a
        simulator refining each SGD step into substeps evaluates at the same times.
    metrics_size: the training loss and error and the feature metrics read the first so
        many training images (``metrics_subset``; at most data.n).
    eval_batch_size: images per forward pass in evaluations.
    max_loss: a step loss above this (or not finite) marks the run diverged; found at the
        next evaluation, where the run stops.
    features: record the feature metrics of a network that declares ``feature_taps``.
    feature_threshold: the de-duplication |corr| threshold of feature sparsity (the
        paper's deep-net 0.95).
    max_units: the most units per feature tap the feature metrics read (the paper's
        1000; ``unit_subsample``).
    feature_seed: int or ``numpy.random.SeedSequence`` of the unit subsamples (tap i:
        child i); shared by every run of a comparison, whatever its seed.
    collapse: record the collapse metrics of a network that declares ``neuron_vectors``
        (``sgdsde.validation.collapse``).
    vanishing, identical: the collapse thresholds (``sgdsde.metrics.collapse``; the
        paper's 0.1 and 0.1).
    walk: record the "A Walk with SGD" metrics (Xing et al. 2018;
        ``sgdsde.validation.walk``): at an evaluated step e, the training loss on the
        metrics subset along the last update's segment theta_{e-1} -> theta_e (a
        simulator: its increment over one SGD step's time, substeps steps), its floor
        height, the height of theta_{e-1} above the floor and the interior-minimum flag,
        and the cosine of the consecutive updates theta_{e-1} - theta_{e-2}, theta_e -
        theta_{e-1}; NaN where the run has no such iterates (step 0; the cosine at the
        first step). The segment ends at the evaluated iterate, so the run keeps the
        iterates of the two steps before each evaluation (on the device) and the
        trajectory itself is unchanged. Costs ``walk_points`` training-loss evaluations
        per evaluation. Off by default.
    walk_points: the points of the segment's alpha grid, equally spaced on [0, 1] (the
        paper's 11: steps of 0.1); at least 3.
    noise_delta: record ``noise_trace_delta`` of the iterate on the metrics subset (square
        loss only): the label-noise variance delta whose SDE noise covariance has the
        trace of SGD's minibatch-gradient covariance there. Costs the per-example
        Jacobians of the m = metrics_size examples (K vector-Jacobian products each,
        vmapped ``noise_delta_chunk`` examples at a time) per evaluation, some seconds on
        a CPU for the digits MLP (256, 256) at m = 500, far more than the other records;
        the trajectory is unchanged. Off by default.
    noise_delta_chunk: examples per vmapped Jacobian of ``noise_delta`` (memory: about
        noise_delta_chunk * K * p values for p parameters).
    """

    eval_every: int = 100
    metrics_size: int = 1000
    eval_batch_size: int = 1000
    max_loss: float = 1e6
    features: bool = True
    feature_threshold: float = DEEP_NET_THRESHOLD
    max_units: int = 1000
    feature_seed: Any = 0
    collapse: bool = True
    vanishing: float = 0.1
    identical: float = 0.1
    walk: bool = False
    walk_points: int = 11
    noise_delta: bool = False
    noise_delta_chunk: int = 32

    def __post_init__(self):
        check_int("eval_every", self.eval_every, 1, "e.g. eval_every=100")
        check_int("metrics_size", self.metrics_size, 1, "e.g. metrics_size=1000")
        check_int("eval_batch_size", self.eval_batch_size, 1, "e.g. eval_batch_size=1000")
        object.__setattr__(self, "max_loss", check_positive_real("max_loss", self.max_loss))
        threshold = check_correlation_threshold("EvaluationOptions", self.feature_threshold)
        object.__setattr__(self, "feature_threshold", threshold)
        check_int("max_units", self.max_units, 1, "e.g. max_units=1000")
        as_seed_sequence(self.feature_seed)  # a bad seed fails here, before any work
        check_int("walk_points", self.walk_points, 3, "the ends and an interior point, e.g. 11")
        check_int("noise_delta_chunk", self.noise_delta_chunk, 1, "e.g. noise_delta_chunk=32")
        for key in ("features", "collapse", "walk", "noise_delta"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be True or False (got {getattr(self, key)!r})")
        for key in ("vanishing", "identical"):
            object.__setattr__(self, key, check_positive_real(key, getattr(self, key)))

    def to_config(self, n: int | None = None) -> dict[str, Any]:
        """The options as plain values (``feature_seed`` as its str; ``metrics_size``
        capped at the ``n`` training images when given), for run configs."""
        config = dataclasses.asdict(self)
        config["feature_seed"] = str(self.feature_seed)
        if n is not None:
            config["metrics_size"] = min(self.metrics_size, n)
        return config


def check_evaluation(evaluation: Any) -> EvaluationOptions:
    """``evaluation`` if it is an ``EvaluationOptions``, the defaults for None."""
    if evaluation is None:
        return EvaluationOptions()
    if not isinstance(evaluation, EvaluationOptions):
        raise ValueError(
            "evaluation must be a sgdsde.validation.EvaluationOptions (e.g. "
            f"EvaluationOptions(eval_every=100)) or None (got {type(evaluation).__name__})"
        )
    return evaluation


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """The record of one SGD run.

    steps: the evaluated steps k (int, increasing, from 0 to n_steps).
    time: the SDE time t_k = sum_{j<k} eta_j of each evaluated step.
    train_loss, train_error, test_loss, test_error: the evaluations (NaN after a
        divergence); the train ones on the metrics subset.
    lrs: eta_0 .. eta_{n_steps-1}.
    batch_losses: L_{B_k}(theta_k), the loss of every step's minibatch (NaN from the
        diverged step on).
    diverged_step: the first step whose minibatch loss was not finite or above
        max_loss, or None. It is found at the next evaluation, where the run stops.
    network: the trained network (a copy; the network passed in is left unchanged).
    config: the run's settings.
    weight_norm, distance_from_init: ||theta||_2 and ||theta - theta_0||_2 at each
        evaluation (None: not recorded).
    feature_sparsity, active_fraction, dead_units: {tap: values at each evaluation}
        (empty: the network declares no feature taps, or not recorded).
    vanishing_neurons, identical_pairs, independent_neurons: {layer: values at each
        evaluation}, the collapse metrics (``sgdsde.validation.collapse``; empty: the
        network declares no ``neuron_vectors``, or not recorded).
    floor_height, height_above_floor, interior_minimum, update_cosine: the walk
        metrics at each evaluation (``EvaluationOptions.walk``; None: not recorded).
    segment_loss: (evaluations, walk_points), the training loss along the segment
        ending at each evaluated iterate (alpha = 0 .. 1; ``sgdsde.validation.walk``),
        or None (not recorded); in the dataset as ``segment_loss`` (traj, step,
        segment_alpha).
    noise_delta: ``noise_trace_delta`` of each evaluated iterate on the metrics subset
        (``EvaluationOptions.noise_delta``; None: not recorded).
    seed: the run's seed (int or SeedSequence; None: unknown), for provenance.
    """

    steps: np.ndarray
    time: np.ndarray
    train_loss: np.ndarray
    train_error: np.ndarray
    test_loss: np.ndarray
    test_error: np.ndarray
    lrs: np.ndarray
    batch_losses: np.ndarray
    diverged_step: int | None
    network: Any
    config: dict[str, Any]
    weight_norm: np.ndarray | None = None
    distance_from_init: np.ndarray | None = None
    feature_sparsity: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    active_fraction: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    dead_units: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    vanishing_neurons: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    identical_pairs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    independent_neurons: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    floor_height: np.ndarray | None = None
    height_above_floor: np.ndarray | None = None
    interior_minimum: np.ndarray | None = None
    update_cosine: np.ndarray | None = None
    segment_loss: np.ndarray | None = None
    noise_delta: np.ndarray | None = None
    seed: Any = None

    @property
    def diverged(self) -> bool:
        """Whether the run diverged."""
        return self.diverged_step is not None

    def to_dataset(self, run: str = "SGD", title: str | None = None) -> xr.Dataset:
        """This run as a one-trajectory dataset (``results_dataset``)."""
        return results_dataset([self], run=run, title=title)


def loss_function(name: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean loss ``name`` ("square" or "cross_entropy", module doc) of ``outputs``
    (m, K) against class labels (m,) in [0, K), or, for the square loss, against real
    targets (m, K) (one-hot targets with Gaussian label noise, ``noisy_labels``)."""
    if name == "square":
        targets = labels
        if not labels.is_floating_point():
            targets = torch.nn.functional.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
        return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()
    return torch.nn.functional.cross_entropy(outputs, labels)


def noisy_labels(
    loss: str,
    labels: torch.Tensor,
    n_classes: int,
    label_noise: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The labels of one minibatch with fresh label noise (module doc).

    loss: "square": returns targets (m, K) = one_hot(labels) + sqrt(delta) xi, xi iid
        N(0, 1) per entry; "cross_entropy": returns labels (m,), each replaced with
        probability p by a class uniform on [0, K).
    labels: class labels (m,) int64, on the generator's device.
    n_classes: K.
    label_noise: delta >= 0 (square) or p in [0, 1] (cross-entropy); 0 returns the
        labels unchanged (and draws nothing).
    generator: the ``torch.Generator`` the noise is drawn from.
    """
    if label_noise == 0:
        return labels
    m = labels.shape[0]
    device = labels.device
    if loss == "square":
        targets = torch.nn.functional.one_hot(labels, n_classes).to(torch.float32)
        xi = torch.randn((m, n_classes), generator=generator, device=device)
        return targets + math.sqrt(label_noise) * xi
    relabel = torch.rand((m,), generator=generator, device=device) < label_noise
    drawn = torch.randint(0, n_classes, (m,), generator=generator, device=device)
    return torch.where(relabel, drawn, labels)


def unit_subsample(n_units: int, max_units: int, seed: Any) -> np.ndarray:
    """Indices of the units a feature metric reads: all ``n_units`` if there are at most
    ``max_units``, else ``max_units`` of them drawn without replacement from a
    ``numpy.random.Generator`` seeded by ``seed``, in increasing order (the
    de-duplication scans units in the network's order).

    n_units: the tap's number of units.
    max_units: the most units kept (the paper: 1000).
    seed: int or ``numpy.random.SeedSequence``.
    """
    check_int("n_units", n_units, 1, "a tap has at least one unit")
    check_int("max_units", max_units, 1, "e.g. max_units=1000")
    if n_units <= max_units:
        return np.arange(n_units)
    rng = np.random.default_rng(as_seed_sequence(seed))
    return np.sort(rng.choice(n_units, size=max_units, replace=False))


def parameter_vector(network: torch.nn.Module) -> torch.Tensor:
    """All parameters of ``network`` as one flat float64 vector (on their device)."""
    return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in network.parameters()])


def noise_trace_delta(
    network: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: int = 32,
) -> float:
    """The label-noise variance delta whose label-noise SDE has the noise covariance trace
    of square-loss SGD at the network's parameters theta, on m examples:

        delta = [ (1/m) sum_i ||J_i^T r_i||^2 - ||(1/m) sum_i J_i^T r_i||^2 ]
                / [ (1/m) sum_i ||J_i||_F^2 ],

    J_i = d f(x_i) / d theta (K x p; p: the trainable parameters), r_i = f(x_i) - y_i
    (y_i the one-hot target, or the given real target), so that J_i^T r_i is the
    gradient of l_i = ||r_i||^2 / 2. SGD's minibatch gradient has covariance
    (1/B) Sigma, Sigma = (1/m) sum_i g_i g_i^T - g g^T (g_i = J_i^T r_i, g their mean;
    drawing with replacement; without, times (n - B) / (n - 1), about 1 for B << n,
    which neither this nor ``plateau_delta`` models), the label-noise SDE's noise
    (delta / B) (1/m) sum_i J_i^T J_i (docs/conventions.md, "Label-noise SDE"); the
    ratio of the traces is delta (the 1/B cancels). With residuals isotropic of variance
    s^2 per output and independent of J_i, delta = s^2 (1 - 1/m) in expectation, and
    2 L* / K (``plateau_delta``) is s^2 too: the two differ where large residuals sit on
    examples with large Jacobians. Weight decay does not enter (deterministic).

    Computed exactly (no sampling): per-example Jacobians by ``torch.func``
    (``functional_call``, ``vmap`` over ``jacrev``), ``chunk_size`` examples at a time,
    in the network's dtype on its device, accumulated in float64; the network in eval
    mode (its buffers as they are), left unchanged (mode included).

    network: a ``torch.nn.Module`` mapping images (m, ...) to outputs (m, K).
    images: (m, ...) tensor on the network's device in its dtype, m >= 1.
    labels: (m,) class labels in [0, K) (one-hot targets) or (m, K) real targets.
    chunk_size: examples per vmapped Jacobian (memory: about chunk_size * K * p values).
    """
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"network must be a torch.nn.Module (got {type(network).__name__})")
    chunk_size = check_int("chunk_size", chunk_size, 1, "e.g. chunk_size=32")
    if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)):
        raise ValueError("images and labels must be torch tensors on the network's device")
    m = len(images)
    if m == 0 or len(labels) != m or labels.dim() not in (1, 2):
        raise ValueError(
            f"images ({tuple(images.shape)}) and labels ({tuple(labels.shape)}) must hold the "
            "same m >= 1 examples; labels (m,) class labels or (m, K) targets"
        )
    params = {name: p.detach() for name, p in network.named_parameters() if p.requires_grad}
    buffers = dict(network.named_buffers())

    def output(theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(network, (theta, buffers), (x.unsqueeze(0),))[0]

    jacobians = torch.func.vmap(torch.func.jacrev(output), in_dims=(None, 0))
    was_training = network.training
    network.eval()
    zero = torch.zeros((), dtype=torch.float64, device=images.device)
    squared_gradients = squared_jacobians = zero
    gradient_sum = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}
    try:
        with torch.enable_grad():
            for start in range(0, m, chunk_size):
                x = images[start : start + chunk_size]
                with torch.no_grad():
                    outputs = network(x)
                targets = labels[start : start + chunk_size]
                if not targets.is_floating_point():
                    targets = torch.nn.functional.one_hot(targets, outputs.shape[1])
                residual = outputs - targets.to(outputs.dtype)
                for name, jacobian in jacobians(params, x).items():
                    jacobian = jacobian.reshape(len(x), outputs.shape[1], -1)
                    # J_i^T r_i in the network's dtype (its own precision), then float64
                    gradient = torch.einsum("ckp,ck->cp", jacobian, residual).double()
                    squared_gradients = squared_gradients + (gradient**2).sum()
                    norm = torch.linalg.vector_norm(jacobian, dtype=torch.float64)
                    squared_jacobians = squared_jacobians + norm**2
                    gradient_sum[name] += gradient.sum(dim=0).reshape(params[name].shape)
    finally:
        network.train(was_training)
    if float(squared_jacobians) == 0:
        return math.nan  # the outputs do not depend on theta here: no noise to match
    mean_gradient_squared = sum(float((g**2).sum()) for g in gradient_sum.values()) / m**2
    trace_sgd = float(squared_gradients) / m - mean_gradient_squared
    return trace_sgd / (float(squared_jacobians) / m)


class Evaluator:
    """The evaluations of a run (module doc), one ``evaluate(network)`` per evaluated
    step; shared by the SGD trainer and the SDE simulators so both record the same
    observables the same way.

    network: the network at initialization (theta_0 is read from it; the feature taps
        and their sizes too, if it declares ``feature_taps``).
    data: the ``ImageData``.
    loss: "square" or "cross_entropy".
    options: the ``EvaluationOptions`` (None: the defaults).
    device: the device of the network.
    walk_stride: the steps between the updates the walk metrics compare (SGD: 1; a
        simulator: its substeps per SGD step); unused unless ``options.walk``.

    ``run_evaluated`` drives a run's steps with it: ``keep(k, network)`` before the
    steps ``walk_steps`` names, ``evaluate(network, k)`` at the evaluated steps.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        data: ImageData,
        *,
        loss: str,
        options: EvaluationOptions | None = None,
        device: str = "cpu",
        walk_stride: int = 1,
    ):
        self.options = options = check_evaluation(options)
        if options.noise_delta and loss != "square":
            raise ValueError(
                f"EvaluationOptions(noise_delta=True) needs the square loss (got loss {loss!r}): "
                "the label-noise SDE models square-loss SGD; set noise_delta=False"
            )
        self.walk_stride = check_int("walk_stride", walk_stride, 1, "substeps per SGD step")
        self.kept: dict[int, torch.Tensor] = {}
        self.chunk = options.eval_batch_size
        self.threshold = options.feature_threshold
        self.loss, self.device = loss, device
        # images in the network's dtype (a float64 network reads float64 images)
        dtype = next(network.parameters()).dtype
        X_metrics, y_metrics = metrics_subset(data, min(options.metrics_size, data.n))
        self.sets = {
            "train": (
                torch.from_numpy(X_metrics).to(device=device, dtype=dtype),
                torch.from_numpy(y_metrics).to(device),
            ),
            "test": (
                torch.from_numpy(data.X_test).to(device=device, dtype=dtype),
                torch.from_numpy(data.y_test).to(device),
            ),
        }
        self.theta0 = parameter_vector(network)
        self.subsamples: dict[str, torch.Tensor] = {}
        if options.features and getattr(network, "feature_taps", None) is not None:
            with torch.no_grad():
                probe = network_features(network, self.sets["train"][0][:1])
            children = as_seed_sequence(options.feature_seed).spawn(len(probe))
            for child, (tap, phi) in zip(children, probe.items(), strict=True):
                index = unit_subsample(phi.shape[1], options.max_units, child)
                self.subsamples[tap] = torch.from_numpy(index).to(device)
        self.records: dict[str, list] = {key: [] for key in SCALAR_RECORDS}
        for key in FEATURE_RECORDS:
            self.records.update({f"{key}/{tap}": [] for tap in self.subsamples})
        self.layers = list(network_neuron_vectors(network)) if options.collapse else []
        for key in COLLAPSE_RECORDS:
            self.records.update({f"{key}/{layer}": [] for layer in self.layers})
        if options.walk:
            self.records.update({key: [] for key in (*WALK_RECORDS, "segment_loss")})
        if options.noise_delta:
            self.records.update({key: [] for key in NOISE_RECORDS})

    def walk_steps(self, eval_steps: list[int]) -> set[int]:
        """The steps whose iterates the walk metrics of evaluations at ``eval_steps``
        read (``sgdsde.validation.walk.walk_steps``); none unless ``options.walk``."""
        return walk_steps(eval_steps, self.walk_stride) if self.options.walk else set()

    def keep(self, step: int, network: torch.nn.Module) -> None:
        """Keep theta_step, the parameters of ``network`` now (on its device: no host
        copy in a step loop), for the walk metrics; forgets iterates no later
        evaluation reads."""
        oldest = step - 2 * self.walk_stride
        self.kept = {k: theta for k, theta in self.kept.items() if k >= oldest}
        self.kept[step] = parameter_vector(network)

    def evaluate(self, network: torch.nn.Module, step: int | None = None) -> None:
        """Record every observable of ``network`` now (in eval mode, without gradients);
        ``step``: the run's step now, which the walk metrics need (None: they are NaN)."""
        was_training = network.training
        network.eval()
        with torch.no_grad():
            for split, (images, labels) in self.sets.items():
                value, error = _evaluate(network, images, labels, self.loss, self.chunk)
                self.records[f"{split}_loss"].append(value)
                self.records[f"{split}_error"].append(error)
            theta = parameter_vector(network)
            self.records["weight_norm"].append(float(torch.linalg.vector_norm(theta)))
            distance = torch.linalg.vector_norm(theta - self.theta0)
            self.records["distance_from_init"].append(float(distance))
            for tap, phi in self._features(network).items():
                self.records[f"feature_sparsity/{tap}"].append(
                    float(feature_sparsity(phi, self.threshold, normalize_rows=False)[0])
                )
                self.records[f"active_fraction/{tap}"].append(float(active_fraction(phi)[0]))
                self.records[f"dead_units/{tap}"].append(float(dead_unit_fraction(phi)[0]))
            if self.layers:
                self._collapse(network)
            if self.options.walk:
                self._walk(network, theta, step)
        if self.options.noise_delta:
            images, labels = self.sets["train"]
            value = noise_trace_delta(
                network, images, labels, chunk_size=self.options.noise_delta_chunk
            )
            self.records["noise_delta"].append(value)
        network.train(was_training)

    def _walk(self, network: torch.nn.Module, theta: torch.Tensor, step: int | None) -> None:
        """Record the walk metrics of the segment ending at theta = theta_step
        (``sgdsde.validation.walk``) from the kept iterates."""
        stride = self.walk_stride
        earlier = [None if step is None else self.kept.get(step - j * stride) for j in (1, 2)]
        previous, before = (None if t is None else t.cpu().numpy() for t in earlier)
        images, labels = self.sets["train"]

        def loss_of(params, X, y):
            return _evaluate(network, X, y, self.loss, self.chunk, params)[0]

        record = walk_record(
            FlatParameterLoss(network, loss_of),
            images,
            labels,
            theta.cpu().numpy(),
            previous,
            before,
            self.options.walk_points,
        )
        for key, value in record.items():
            self.records[key].append(value)

    def _collapse(self, network: torch.nn.Module) -> None:
        """Record the collapse metrics of every layer of ``network`` now."""
        options = self.options
        for layer, vectors in network_neuron_vectors(network).items():
            stats = collapse_statistics(vectors, options.vanishing, options.identical)
            for key, value in zip(COLLAPSE_RECORDS, stats, strict=True):
                self.records[f"{key}/{layer}"].append(value)

    def _features(self, network: torch.nn.Module) -> dict[str, np.ndarray]:
        """{tap: (metrics images, subsampled units)} float64, a chunk of images at a time."""
        if not self.subsamples:
            return {}
        images = self.sets["train"][0]
        parts: dict[str, list] = {tap: [] for tap in self.subsamples}
        for start in range(0, len(images), self.chunk):
            features = network_features(network, images[start : start + self.chunk])
            for tap, index in self.subsamples.items():
                parts[tap].append(features[tap][:, index].to(torch.float64).cpu())
        return {tap: torch.cat(chunks).numpy() for tap, chunks in parts.items()}

    def results(self, n_eval: int) -> dict[str, Any]:
        """The records as ``TrainResult`` fields, each padded with NaN to ``n_eval``
        evaluations (a run that stopped early)."""

        def padded(values: list) -> np.ndarray:
            out = np.full(n_eval, np.nan)
            out[: len(values)] = values
            return out

        out: dict[str, Any] = {key: padded(self.records[key]) for key in SCALAR_RECORDS}
        for key in FEATURE_RECORDS:
            out[key] = {tap: padded(self.records[f"{key}/{tap}"]) for tap in self.subsamples}
        for key in COLLAPSE_RECORDS:
            out[key] = {layer: padded(self.records[f"{key}/{layer}"]) for layer in self.layers}
        if self.options.walk:
            out.update({key: padded(self.records[key]) for key in WALK_RECORDS})
            segments = np.full((n_eval, self.options.walk_points), np.nan)
            segments[: len(self.records["segment_loss"])] = self.records["segment_loss"]
            out["segment_loss"] = segments
        if self.options.noise_delta:
            out.update({key: padded(self.records[key]) for key in NOISE_RECORDS})
        return out


def train_sgd(
    network: torch.nn.Module,
    data: ImageData,
    *,
    schedule: Schedule | float | dict,
    n_steps: int,
    batch_size: int,
    loss: str = "cross_entropy",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    augmentation: Augmentation | None = None,
    label_noise: float = 0.0,
    evaluation: EvaluationOptions | None = None,
    seed: Any = 0,
    device: str = "cpu",
) -> TrainResult:
    """Train a copy of ``network`` on ``data`` with minibatch SGD (module doc).

    network: a ``torch.nn.Module`` mapping images (m, C, H, W) to outputs (m, n_classes).
    data: the ``ImageData``.
    schedule: eta_k: a ``sgdsde.dynamics`` Schedule, a number (constant), or a config.
    n_steps: the number of SGD steps.
    batch_size: B, 1 <= B <= data.n.
    loss: "cross_entropy" or "square".
    momentum: heavy-ball momentum mu in [0, 1) (0: plain SGD).
    weight_decay: lambda >= 0, added as lambda theta to every parameter's gradient.
    augmentation: an ``Augmentation`` applied to every minibatch, or None (off).
    label_noise: delta >= 0, the Gaussian label-noise variance (square loss), or p in
        [0, 1], the relabelling probability (cross-entropy); 0: none (module doc).
    evaluation: the ``EvaluationOptions`` (when to evaluate, what to record, the
        divergence threshold); None: the defaults.
    seed: int or ``numpy.random.SeedSequence``.
    device: "cpu" or a torch device such as "cuda".
    """
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"network must be a torch.nn.Module (got {type(network).__name__})")
    if not isinstance(data, ImageData):
        raise ValueError("data must be a sgdsde.validation.ImageData (see sgdsde.validation)")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)} (got {loss!r})")
    schedule = as_schedule(schedule)
    n_steps = check_int("n_steps", n_steps, 1, "give the number of SGD steps")
    batch_size = check_int("batch_size", batch_size, 1, "e.g. batch_size=128")
    if batch_size > data.n:
        raise ValueError(f"batch_size must be at most the {data.n} training images ({batch_size})")
    evaluation = check_evaluation(evaluation)
    if not (0 <= momentum < 1):
        raise ValueError(f"momentum must lie in [0, 1) (got {momentum!r}): 0 is plain SGD")
    weight_decay = check_weight_decay(weight_decay)
    label_noise = _check_label_noise(loss, label_noise)
    if augmentation is not None and not isinstance(augmentation, Augmentation):
        raise ValueError("augmentation must be an Augmentation or None (off)")
    device = check_device(device, "train_sgd")

    lrs = schedule.values(n_steps)
    batch_stream, augment_stream, noise_stream = as_seed_sequence(seed).spawn(3)
    # every generator on the run's device: a CUDA step loop copies nothing from the host
    batch_generator = torch_generator(batch_stream, device)
    augment_generator = torch_generator(augment_stream, device)
    noise_generator = torch_generator(noise_stream, device)
    net = copy.deepcopy(network).to(device)
    X = torch.from_numpy(data.X).to(device=device, dtype=next(net.parameters()).dtype)
    y = torch.from_numpy(data.y).to(device)
    evaluator = Evaluator(net, data, loss=loss, options=evaluation, device=device)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=float(lrs[0]), momentum=momentum, weight_decay=weight_decay
    )
    batches_per_epoch = data.n // batch_size
    order = torch.empty(0, dtype=torch.int64)

    def step(k: int) -> torch.Tensor:
        nonlocal order
        position = k % batches_per_epoch
        if position == 0:
            order = torch.randperm(data.n, generator=batch_generator, device=device)
        index = order[position * batch_size : (position + 1) * batch_size]
        images = X[index]
        if augmentation is not None:
            images = augmentation(images, augment_generator)
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[k])
        optimizer.zero_grad(set_to_none=True)
        labels = noisy_labels(loss, y[index], data.n_classes, label_noise, noise_generator)
        batch_loss = loss_function(loss, net(images), labels)
        batch_loss.backward()
        optimizer.step()
        return batch_loss.detach()

    record = run_evaluated(step, net, lrs, evaluator, eval_every=evaluation.eval_every)
    config = dict(
        schedule=schedule.to_config(),
        n_steps=n_steps,
        batch_size=batch_size,
        loss=loss,
        momentum=momentum,
        weight_decay=weight_decay,
        augmentation=None if augmentation is None else dataclasses.asdict(augmentation),
        label_noise=label_noise,
        evaluation=evaluation.to_config(data.n),
        seed=str(seed),
        device=device,
        data=data.config,
    )
    return TrainResult(network=net, config=config, seed=seed, **record)


def evaluation_steps(n_steps: int, every: int) -> list[int]:
    """The evaluated steps of a run of ``n_steps`` steps: every ``every``-th from 0, and
    ``n_steps``."""
    return sorted({*range(0, n_steps, every), n_steps})


def run_evaluated(
    step: Callable[[int], torch.Tensor],
    network: torch.nn.Module,
    step_sizes: np.ndarray,
    evaluator: Evaluator,
    *,
    eval_every: int,
) -> dict[str, Any]:
    """Run ``step(k)`` for k = 0 .. len(step_sizes) - 1 with the evaluations and the
    divergence handling of the module doc; the one step loop of ``train_sgd`` and of the
    SDE simulators.

    step: one update of ``network`` in place; returns the step's loss as a
        0-d tensor on the evaluator's device (kept there: divergence is looked for at
        evaluations only, so a CUDA step loop never waits for a device-to-host copy).
    step_sizes: the size of every step (SGD: eta_k; a simulator: dt_j), which sets the
        time t_k = sum_{j<k} step_sizes_j of each evaluation.
    evaluator: the ``Evaluator`` of the run, called at every evaluated step
        (``evaluation_steps(len(step_sizes), eval_every)``) that precedes a divergence.
    eval_every: evaluate every so many steps (and at step 0 and the last).

    A step loss above the evaluator's ``options.max_loss`` (or not finite) marks the run
    diverged at that step.

    Returns the ``TrainResult`` fields ``steps``, ``time``, ``lrs`` (= step_sizes),
    ``batch_losses`` (the step losses, NaN from the diverged step on), ``diverged_step``
    and the evaluator's records (NaN after a divergence).
    """
    n_steps = len(step_sizes)
    eval_steps = evaluation_steps(n_steps, eval_every)
    eval_at = set(eval_steps)
    keep_at = evaluator.walk_steps(eval_steps)
    losses = torch.full((n_steps,), math.nan, dtype=torch.float64, device=evaluator.device)
    checked, diverged_step = 0, None
    for k in range(n_steps + 1):
        if k in eval_at:
            diverged_step = first_bad_step(losses, checked, k, evaluator.options.max_loss)
            if diverged_step is not None:
                break
            checked = k
            evaluator.evaluate(network, k)
        if k == n_steps:
            break
        if k in keep_at:
            evaluator.keep(k, network)
        losses[k] = step(k)
    steps = np.asarray(eval_steps, dtype=np.int64)
    batch_losses = losses.cpu().numpy()
    if diverged_step is not None:
        batch_losses[diverged_step:] = np.nan
    return dict(
        steps=steps,
        time=cumulative_time(step_sizes)[steps],
        lrs=np.asarray(step_sizes),
        batch_losses=batch_losses,
        diverged_step=diverged_step,
        **evaluator.results(len(eval_steps)),
    )


def record_blocks(result: TrainResult) -> list[str]:
    """The blocks of a run's per-block records: its feature taps, in order, then any
    collapse layer that is no tap."""
    layers = [layer for key in COLLAPSE_RECORDS for layer in getattr(result, key)]
    return list(dict.fromkeys([*result.feature_sparsity, *layers]))


def block_values(result: TrainResult, key: str, blocks: list[str]) -> np.ndarray:
    """The per-block record ``key`` of ``result`` as (evaluations, blocks), NaN in the
    blocks it does not cover (e.g. the collapse metrics of a pooled tap)."""
    recorded = getattr(result, key)
    missing = np.full(len(result.steps), np.nan)
    return np.stack([recorded.get(b, missing) for b in blocks], axis=-1).astype(np.float64)


def results_dataset(results: Any, run: str = "SGD", title: str | None = None) -> xr.Dataset:
    """Runs of one method (seeds) as one dataset in the package's layout
    (``sgdsde.run.dataset``): dims ``traj`` (one per result, in order) and ``step``, and
    ``block`` (the feature taps, and the collapse layers, ``record_blocks``) for the
    per-block records (``BLOCK_RECORDS``; NaN in a block a record does not cover);
    coords ``step``, ``time`` (traj, step), ``block``, ``run`` (``run`` for every
    trajectory), ``seed`` (its str) and, for a simulator's runs (SVAG, the SDEs: a
    ``substeps`` in their config), ``effective_step`` (step) = step / substeps, the SGD
    step at the same time (SVAG's "effective steps" of Li, Malladi and Arora: step / l);
    every recorded observable of ``SCALAR_RECORDS``, ``WALK_RECORDS`` and
    ``NOISE_RECORDS`` (where recorded) and ``BLOCK_RECORDS`` (NaN after a divergence),
    ``diverged``
    and ``diverged_step`` (-1: never); attrs: the title, the first run's config without
    its seed and the provenance of ``sgdsde.run.provenance.run_attrs`` (seed entropies
    per trajectory where every result knows its seed).

    results: a ``TrainResult`` or a sequence of them, all evaluated at the same steps
        and times (one method over seeds); SGD and SDE datasets then overlay on time.
    run: the name of the method ("SGD", "SDE", "SVAG l=4", ...).
    title: the dataset's title (default: ``run`` over n seeds).
    """
    results = [results] if isinstance(results, TrainResult) else list(results)
    if not results or not all(isinstance(r, TrainResult) for r in results):
        raise ValueError("results must be a TrainResult or a non-empty sequence of them")
    first = results[0]
    for i, r in enumerate(results[1:], start=1):
        same_grid = np.array_equal(r.steps, first.steps) and np.allclose(
            r.time, first.time, rtol=1e-12, atol=0
        )
        if not same_grid:
            raise ValueError(
                f"results[{i}] was evaluated at other steps or times than results[0]: "
                "stack runs of one method with the same schedule, n_steps and eval_every"
            )
    taps = record_blocks(first)
    if any(record_blocks(r) != taps for r in results):
        raise ValueError("results record different feature taps: stack runs of one network")
    variables: dict[str, tuple] = {}
    for key in (*SCALAR_RECORDS, *WALK_RECORDS, *NOISE_RECORDS):
        values = [getattr(r, key) for r in results]
        if all(v is not None for v in values):
            variables[key] = (("traj", "step"), np.stack(values).astype(np.float64))
    for key in BLOCK_RECORDS:
        if getattr(first, key):
            values = [block_values(r, key, taps) for r in results]
            variables[key] = (("traj", "step", "block"), np.stack(values))
    segments = [r.segment_loss for r in results]
    if all(v is not None for v in segments):
        variables["segment_loss"] = (("traj", "step", "segment_alpha"), np.stack(segments))
    variables["diverged"] = (("traj",), np.array([r.diverged for r in results]))
    variables["diverged_step"] = (
        ("traj",),
        np.array([-1 if r.diverged_step is None else r.diverged_step for r in results]),
    )
    config = {k: v for k, v in first.config.items() if k != "seed"}
    title = title or f"{run}: {len(results)} seed(s)"
    seeds = [r.seed for r in results]
    if all(seed is not None for seed in seeds):
        attrs = run_attrs(title, config, seeds)
    else:
        attrs = {"title": title, "config": config, **environment_attrs()}
    ds = make_dataset(
        first.steps,
        np.stack([r.time for r in results]),
        variables,
        {"run": np.array([run] * len(results)), "seed": np.array([str(s) for s in seeds])},
        attrs,
    )
    if taps:
        ds = ds.assign_coords(block=np.array(taps))
    if "segment_loss" in ds:
        ds = ds.assign_coords(segment_alpha=np.linspace(0.0, 1.0, ds.sizes["segment_alpha"]))
        ds["segment_alpha"].attrs.update(
            long_name="position on the segment theta_{e-1} -> theta_e of the update ending "
            "at the evaluation (0: the previous iterate, 1: the evaluated one)",
            units="1",
        )
    substeps = first.config.get("substeps")
    if substeps is not None:  # a simulator: its steps refine the SGD steps
        ds = ds.assign_coords(effective_step=("step", first.steps / substeps))
        ds["effective_step"].attrs.update(
            long_name="effective step: the SGD step of the same time, step / substeps "
            "(SVAG: step / l; time / eta at a constant eta)",
            units="1",
        )
    for name, extra in RECORD_ATTRS.items():
        if name in ds:
            ds[name].attrs.update(extra)
    for split in ("train", "test"):
        if f"{split}_loss" in ds:
            where = "the metrics subset of the training set" if split == "train" else "the test set"
            ds[f"{split}_loss"].attrs["long_name"] = f"{config.get('loss', '')} loss on {where}"
    return ds


def check_weight_decay(weight_decay: Any) -> float:
    """``weight_decay`` lambda (coupled L2: lambda theta added to the gradient) as a
    float after checking it is a finite number >= 0; shared by ``train_sgd`` and the SDE
    simulators that model it."""
    value = weight_decay if isinstance(weight_decay, int | float) else math.nan
    if isinstance(weight_decay, bool) or not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"weight_decay must be a finite number >= 0 (got {weight_decay!r}): 0 is none"
        )
    return float(value)


def _check_label_noise(loss: str, label_noise: Any) -> float:
    """``label_noise`` as a float after checking it fits ``loss`` (module doc)."""
    value = label_noise if isinstance(label_noise, int | float) else math.nan
    if isinstance(label_noise, bool) or not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"label_noise must be a finite number >= 0 (got {label_noise!r}): 0 is no label noise"
        )
    if loss == "cross_entropy" and value > 1:
        raise ValueError(
            f"label_noise is the relabelling probability p for the cross-entropy loss and must "
            f"lie in [0, 1] (got {label_noise!r})"
        )
    return float(value)


def first_bad_step(
    batch_losses: torch.Tensor, start: int, stop: int, max_loss: float
) -> int | None:
    """The first step in [start, stop) whose minibatch loss is not finite or exceeds
    ``max_loss``, else None (one device-to-host copy)."""
    segment = batch_losses[start:stop]
    bad = torch.nonzero(~(torch.isfinite(segment) & (segment <= max_loss)))
    return None if len(bad) == 0 else start + int(bad[0, 0])


def _evaluate(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss: str,
    chunk: int,
    params: dict[str, torch.Tensor] | None = None,
) -> tuple[float, float]:
    """(mean loss, error) of ``net`` on ``images`` in eval mode, ``chunk`` at a time; with
    ``params`` ({name: tensor}), of ``net`` with those parameters in place of its own
    (``torch.func.functional_call``; ``net`` is left unchanged)."""
    was_training = net.training
    net.eval()
    total, wrong = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(labels), chunk):
            part_images = images[start : start + chunk]
            if params is None:
                outputs = net(part_images)
            else:
                outputs = torch.func.functional_call(net, params, (part_images,))
            part = labels[start : start + chunk]
            total += loss_function(loss, outputs, part).item() * len(part)
            wrong += int((outputs.argmax(dim=1) != part).sum())
    net.train(was_training)
    return total / len(labels), wrong / len(labels)
