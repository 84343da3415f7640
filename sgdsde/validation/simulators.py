"""SDE simulations of a deep network beside its SGD run (issue 9, section 3).

Each simulator models ``train_sgd`` at step sizes eta_k (any ``sgdsde.dynamics``
schedule), batch size B, for ``n_steps`` SGD steps, on the same ``ImageData`` and from the
same network, and returns a ``TrainResult`` like ``train_sgd``'s so that a comparison
overlays them. Each SGD step k is refined into ``substeps`` simulator steps j (j // substeps
= k) of size dt_j = eta_k / substeps, so the SDE time t_j = sum_{i<j} dt_i matches the
SGD run's t_k = sum_{i<k} eta_i at j = k * substeps (docs/conventions.md, "Time").

Weight decay (``weight_decay`` lambda >= 0, 0 by default) is modelled as ``train_sgd``
has it, coupled L2: every drift below becomes -(grad L + lambda theta), the noise
unchanged (the SDE of SGD on L + lambda/2 ||theta||^2, whose minibatch noise is that of
L: the penalty's gradient is the same on every minibatch); SVAG takes SGD steps with
weight decay lambda.

Losses (as ``train_sgd``): square L = 1/(2n) sum_i ||f(x_i) - e_{y_i}||^2 (one-hot
targets, K outputs; K = 1 gives scalar outputs) or cross-entropy; n the training set.

* ``simulate_label_noise_sde``: Euler-Maruyama of the label-noise SDE (square loss)

      d theta = -grad L dt + sqrt(eta delta / (n B)) phi^T dW,   W in R^{n K},

  (Andriushchenko et al., ICML 2023, Eq. 8; docs/conventions.md, "Label-noise SDE"),
  with dW = -sqrt(dt) z, z ~ N(0, I). One step is one pass over the training set in
  chunks: forward, then the vector-Jacobian product of f(X) with the cotangent
  r / n + sqrt(eta delta / (n B dt)) z (r = f(X) - Y), whose gradient is the drift plus
  the noise; phi is never formed. At dt = eta this is full-batch GD on the labels
  Y - sqrt(delta n / B) z (fresh Gaussian label noise of variance delta n / B; B = n:
  label-noise GD); at delta = 0 it is GD. delta per output: during loss stabilization
  at level L*, delta = 2 L* / K (``plateau_delta``: the mean squared residual per
  output); or delta = the trace-matched ``noise_trace_delta`` of the SGD iterates
  (``EvaluationOptions(noise_delta=True)`` records it; ``noise_trace_plateau_delta``
  averages it over the plateau), which weighs each residual by its example's Jacobian
  as SGD's gradient noise does. delta may also be one value per SGD step, delta_k
  (the noise sqrt(eta_k delta_k / (n B)) phi^T dW during step k): either level followed
  along the run (``loss_delta_path``, ``noise_trace_delta_path``), for a run whose
  noise level moves (a warm-up, a plateau, a step decay).
* ``simulate_sgd_covariance_sde``: Euler-Maruyama of the SGD-covariance SDE (any loss)

      d theta = -grad L dt + sqrt(eta) C_B^{1/2} dW,
      C_B = c / (n B) sum_i (grad l_i - grad L)(grad l_i - grad L)^T,  c = (n-B)/(n-1),

  C_B the exact covariance of a minibatch gradient without replacement
  (docs/conventions.md, "SGD-covariance SDE"). One step is one weighted backward pass
  over the training set: the gradient of (1/n) sum_i w_i l_i with Gaussian weights
  w_i = 1 + sqrt(eta n c / (B dt)) (g_i - mean g), g ~ N(0, I_n) (the noisy GD of Li,
  Malladi and Arora, NeurIPS 2021, with their scaling made explicit).
* ``simulate_svag``: SVAG with parameter l (Li, Malladi, Arora 2021): l times the steps,
  of size eta_k / l, each on the gradient of w_+ L_{B_1} + w_- L_{B_2} for two
  independent minibatches, w_pm = (1 pm sqrt(2 l - 1)) / 2. l = 1 is ``train_sgd``.

Observables and divergence: a simulator runs its steps through ``run_evaluated`` with an
``Evaluator``, the step loop of ``train_sgd``, so it records the same observables (loss
and error on the metrics subset and the test set, weight norm, distance from
initialization, per-tap feature sparsity, active and dead units on the same unit
subsample for the same ``feature_seed``) at the SGD run's times. A step loss (SDEs:
the training loss L(theta_j) of the full pass; SVAG: w_+ L_{B_1} + w_- L_{B_2}) that is
not finite or exceeds ``max_loss`` stops the run at the next evaluation, recorded as
diverged there, not raised.

Randomness: ``seed`` (int or ``numpy.random.SeedSequence``) is spawned into streams, each
a ``torch_generator``; the SDE noise is drawn on ``device`` (no host-device copy per step),
so CPU and CUDA runs agree in law, not in bits.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from sgdsde.dynamics.schedules import Schedule, as_schedule
from sgdsde.random import as_seed_sequence
from sgdsde.run.checks import check_device, check_int
from sgdsde.validation.data import Augmentation, ImageData
from sgdsde.validation.seeding import torch_generator
from sgdsde.validation.trainer import (
    LOSSES,
    EvaluationOptions,
    Evaluator,
    TrainResult,
    check_evaluation,
    check_weight_decay,
    loss_function,
    noise_trace_delta,
    run_evaluated,
)

__all__ = [
    "loss_delta_path",
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
]

StepFunction = Callable[[int], torch.Tensor]


def simulate_label_noise_sde(
    network: torch.nn.Module,
    data: ImageData,
    *,
    schedule: Schedule | float | dict,
    n_steps: int,
    batch_size: int,
    delta: float | Sequence[float] | np.ndarray,
    weight_decay: float = 0.0,
    substeps: int = 1,
    chunk_size: int = 1024,
    evaluation: EvaluationOptions | None = None,
    seed: Any = 0,
    device: str = "cpu",
    normals: Any = None,
) -> TrainResult:
    """Euler-Maruyama of the label-noise SDE of square-loss SGD (module doc) from a copy
    of ``network``.

    network: a ``torch.nn.Module`` mapping images (m, C, H, W) to outputs (m, K),
        K = data.n_classes; its parameters' dtype sets the computation's.
    data: the ``ImageData`` (the whole training set is the drift's).
    schedule: the SGD step sizes eta_k: a Schedule, a number (constant) or a config.
    n_steps: the number of SGD steps modelled (n_steps * substeps simulator steps).
    batch_size: the SGD batch size B, 1 <= B <= data.n.
    delta: the label-noise variance per output, >= 0 (0: GD); ``plateau_delta`` or
        ``noise_trace_plateau_delta`` calibrates it from an SGD run. Or one value per
        SGD step, an array (n_steps,) of them: delta_k during SGD step k (all its
        substeps), a noise level that follows the run (``loss_delta_path``,
        ``noise_trace_delta_path``).
    weight_decay: lambda >= 0 of the SGD run (module doc): the drift is
        -(grad L + lambda theta); 0: none.
    substeps: simulator steps per SGD step (dt = eta_k / substeps; 1: dt = eta).
    chunk_size: training images per forward/backward pass (bounds memory).
    evaluation: the ``EvaluationOptions``, as ``train_sgd``'s (the same observables,
        recorded by its ``Evaluator``); ``eval_every`` counts SGD steps' worth of time
        (simulator steps j = multiples of eval_every * substeps, and the last).
    device: "cpu" or a torch device such as "cuda".
    seed: int or ``numpy.random.SeedSequence``; the noise z of step j is the j-th
        (n, K) draw of ``torch_generator(as_seed_sequence(seed).spawn(1)[0], device)``.
    normals: None (draw z from ``seed``), or the standard normals z_j themselves, an
        array (n_steps * substeps, n, K) (dW_j = -sqrt(dt_j) z_j): couples the run to
        another engine's draws, as ``sgdsde.sde.GivenIncrements`` does for the toy
        engines (tests compare the two engines on one path this way).
    """
    common = _check_common(
        network, data, schedule, n_steps, batch_size, substeps, device, evaluation
    )
    deltas = _check_delta(delta, common["n_steps"])
    chunk_size = check_int("chunk_size", chunk_size, 1, "e.g. chunk_size=1024")
    weight_decay = check_weight_decay(weight_decay)
    n_sim = common["n_steps"] * common["substeps"]
    given = _check_normals(normals, (n_sim, data.n, data.n_classes))
    net, X, y, etas, dts = _prepare(network, data, common)
    targets = torch.nn.functional.one_hot(y, data.n_classes).to(X.dtype)
    generator = torch_generator(as_seed_sequence(seed).spawn(1)[0], common["device"])
    if given is not None:
        given = given.to(device=X.device, dtype=X.dtype)
    n, B = data.n, common["batch_size"]

    def step(j: int) -> torch.Tensor:
        # cotangent r/n + sqrt(eta delta / (n B dt)) z: drift and noise in one VJP
        delta_j = deltas[j // common["substeps"]]
        noise_scale = math.sqrt(etas[j] * delta_j / (n * B * dts[j]))
        z = None
        if delta_j > 0 and given is not None:
            z = given[j]
        elif delta_j > 0:
            z = torch.randn(targets.shape, generator=generator, device=X.device, dtype=X.dtype)
        total = torch.zeros((), dtype=torch.float64, device=X.device)
        net.zero_grad(set_to_none=True)
        for part in _chunks(n, chunk_size):
            outputs = net(X[part])
            residual = outputs.detach() - targets[part]
            cotangent = residual / n if z is None else residual / n + noise_scale * z[part]
            (outputs * cotangent).sum().backward()
            total += 0.5 * (residual.double() ** 2).sum()
        _descend(net, dts[j], weight_decay)
        return total / n

    config = dict(
        method="label_noise_sde",
        **_delta_config(deltas),
        weight_decay=weight_decay,
        chunk_size=chunk_size,
        loss="square",
        normals="seed" if given is None else "given",
    )
    return _drive(net, data, step, common, "square", dts, config, seed)


def plateau_delta(
    result: TrainResult,
    n_outputs: int,
    fraction: float = 0.5,
    *,
    window: tuple[float, float] | None = None,
) -> float:
    """The label-noise variance delta = 2 L* / K that models an SGD run stabilized at the
    loss level L* (docs/conventions.md, "Label-noise SDE": r_i^2 ~ 2 L* per example,
    shared among the K outputs).

    result: a ``train_sgd`` run (square loss) that did not diverge.
    n_outputs: K, the network's number of outputs (the classes for one-hot targets).
    fraction: L* is the mean minibatch loss (``batch_losses``, an unbiased estimate of
        the training loss at every step) over the last ``fraction`` of the steps, 0 <
        fraction <= 1.
    window: (a, b), 0 <= a < b <= 1: L* is instead the mean minibatch loss of steps
        int(a n) .. int(b n) - 1 of the n steps (truncated as ``StepDecay``'s
        thresholds), a plateau inside the run, e.g. (0.25, 0.5) before a step / 10 at
        half; None: the last ``fraction``.
    """
    start, stop = _calibration_steps(result, fraction, window)
    n_outputs = check_int("n_outputs", n_outputs, 1, "give the network's output dimension")
    losses = np.asarray(result.batch_losses, dtype=np.float64)
    return float(2.0 * losses[start:stop].mean() / n_outputs)


def noise_trace_plateau_delta(
    result: TrainResult,
    fraction: float = 0.5,
    *,
    window: tuple[float, float] | None = None,
) -> float:
    """The label-noise variance delta of an SGD run stabilized on a plateau, trace-matched:
    the mean of its ``noise_delta`` records (``noise_trace_delta`` of the iterate theta_k
    on the metrics subset, ``EvaluationOptions(noise_delta=True)``) over the evaluated
    steps k of the plateau, the steps whose minibatch losses ``plateau_delta`` averages.

    result: a ``train_sgd`` run (square loss) that recorded ``noise_delta`` and did not
        diverge.
    fraction: the plateau is the last ``fraction`` of the steps, 0 < fraction <= 1
        (``plateau_delta``'s).
    window: (a, b), 0 <= a < b <= 1: the plateau is steps int(a n) .. int(b n) - 1
        instead (``plateau_delta``'s); None: the last ``fraction``.
    """
    start, stop = _calibration_steps(result, fraction, window)
    if result.noise_delta is None:
        raise ValueError(
            "result has no noise_delta record: run train_sgd with "
            "evaluation=EvaluationOptions(noise_delta=True) (square loss)"
        )
    steps = np.asarray(result.steps)
    inside = (steps >= start) & (steps < stop)
    if not inside.any():
        raise ValueError(
            f"no evaluation of the run (steps {steps.tolist()}) falls in its plateau, steps "
            f"{start} .. {stop - 1}: evaluate more often (smaller eval_every) or widen the "
            "window / fraction"
        )
    return float(np.mean(np.asarray(result.noise_delta, dtype=np.float64)[inside]))


def loss_delta_path(
    results: Sequence[TrainResult], n_outputs: int, *, smoothing: int = 50
) -> np.ndarray:
    """The label-noise variance that follows SGD's loss level, one value per SGD step:

        delta_k = 2 Lbar_k / K,

    ``plateau_delta``'s 2 L* / K with L* the running loss instead of a plateau's mean:
    Lbar_k the mean minibatch loss (``batch_losses``) of the runs, pooled, over the
    ``smoothing`` steps centred on k (fewer at the ends of the run). Andriushchenko et
    al.'s Eq. 8 models SGD stabilized at one level; before the plateau (a warm-up) and
    after a step decay the level differs, and this delta follows it.

    results: ``train_sgd`` runs of one config (square loss, the same number of steps),
        none diverged; their pooled loss is one model of the SGD process.
    n_outputs: K, the network's number of outputs.
    smoothing: the moving-average window in steps, >= 1 (1: each step's pooled
        minibatch losses).
    Returns an array (n_steps,) >= 0.
    """
    losses = _pooled_batch_losses(results)
    n_outputs = check_int("n_outputs", n_outputs, 1, "give the network's output dimension")
    smoothing = check_int("smoothing", smoothing, 1, "a window in steps, e.g. smoothing=50")
    return 2.0 * _centred_mean(losses, smoothing) / n_outputs


def noise_trace_delta_path(
    results: Sequence[TrainResult], n_outputs: int, *, smoothing: int = 50
) -> np.ndarray:
    """The trace-matched label-noise variance along SGD's run, one value per SGD step:

        delta_k = rho(k) 2 Lbar_k / K,   rho(e) = mean_s noise_delta_s(e) / mean_s (2 L_s(e) / K),

    ``loss_delta_path``'s running level times the ratio rho of the trace-matched delta
    (``noise_trace_delta``, recorded at every evaluation e by
    ``EvaluationOptions(noise_delta=True)``) to 2 L / K on the same iterate and
    examples (L_s(e): run s's ``train_loss`` on the metrics subset), pooled over the
    runs and linear in k between evaluations (constant after the last). rho is how much
    more SGD's noise is than isotropic residuals of the same loss give (large residuals
    on examples with large Jacobians): about 1 early, and above 2 on the digits MLP's
    large-step plateau. The loss level moves within a few steps (the first hundred
    steps of a run), rho slowly, so the evaluations need only resolve rho.

    results: ``train_sgd`` runs of one config (square loss, the same steps) that
        recorded ``noise_delta``, none diverged.
    n_outputs: K, the network's number of outputs.
    smoothing: ``loss_delta_path``'s window.
    Returns an array (n_steps,) >= 0.
    """
    level = loss_delta_path(results, n_outputs, smoothing=smoothing)
    if any(r.noise_delta is None for r in results):
        raise ValueError(
            "every run needs a noise_delta record: run train_sgd with "
            "evaluation=EvaluationOptions(noise_delta=True) (square loss)"
        )
    steps = np.asarray(results[0].steps)
    if any(not np.array_equal(r.steps, steps) for r in results):
        raise ValueError("the runs were evaluated at different steps: give runs of one config")
    trace = np.mean([np.asarray(r.noise_delta, dtype=np.float64) for r in results], axis=0)
    loss = np.mean([np.asarray(r.train_loss, dtype=np.float64) for r in results], axis=0)
    isotropic = 2.0 * loss / n_outputs
    ratio = np.divide(trace, isotropic, out=np.ones_like(trace), where=isotropic > 0)
    return level * np.interp(np.arange(len(level)), steps, ratio)


def _pooled_batch_losses(results: Any) -> np.ndarray:
    """The minibatch losses (runs, n_steps) of stable runs of one config, checked."""
    if not (isinstance(results, Sequence) and results):
        raise ValueError("results must be a non-empty list of TrainResults (the SGD runs)")
    for result in results:
        _calibration_steps(result, 1.0, None)
    losses = [np.asarray(r.batch_losses, dtype=np.float64) for r in results]
    if len({len(v) for v in losses}) != 1:
        raise ValueError(
            f"the runs have different numbers of steps ({sorted({len(v) for v in losses})}): "
            "give runs of one config"
        )
    return np.stack(losses)


def _centred_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of ``values`` (runs, n) over runs and the ``window`` steps centred on each
    step, truncated at the ends."""
    n = values.shape[1]
    sums = np.concatenate([[0.0], np.cumsum(values.sum(axis=0))])
    k = np.arange(n)
    lo = np.clip(k - window // 2, 0, n)
    hi = np.clip(k - window // 2 + window, 0, n)
    return (sums[hi] - sums[lo]) / ((hi - lo) * values.shape[0])


def _check_delta(delta: Any, n_steps: int) -> np.ndarray:
    """``delta`` (a number, or one per SGD step) as an array (n_steps,), checked."""
    scalar = isinstance(delta, (int, float)) and not isinstance(delta, bool)
    try:
        values = np.asarray(delta, dtype=np.float64) if not isinstance(delta, bool) else None
    except (TypeError, ValueError):
        values = None
    if values is not None and scalar:
        values = np.full(n_steps, float(delta))
    if values is None or values.shape != (n_steps,) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"delta must be a finite number >= 0 or an array of them, one per SGD step, "
            f"shape ({n_steps},) (got {delta!r:.80}): 0 is GD"
        )
    if not np.all(values >= 0):
        raise ValueError(
            f"delta must be a finite number >= 0 (its smallest value is {values.min()}): 0 is GD"
        )
    return values


def _delta_config(deltas: np.ndarray) -> dict[str, Any]:
    """The run config's record of delta: the number, or for one per step the path's
    mean, min and max."""
    if np.all(deltas == deltas[0]):
        return {"delta": float(deltas[0])}
    return {
        "delta": "per step",
        "delta_mean": float(deltas.mean()),
        "delta_min": float(deltas.min()),
        "delta_max": float(deltas.max()),
    }


def _calibration_steps(result: Any, fraction: Any, window: Any) -> tuple[int, int]:
    """The steps [start, stop) of a stable run's plateau: the last ``fraction`` of its
    steps, or its ``window`` (``plateau_delta``), checked."""
    if not isinstance(result, TrainResult):
        raise ValueError(f"result must be a TrainResult (got {type(result).__name__})")
    if result.diverged:
        raise ValueError(
            f"result diverged at step {result.diverged_step}: it has no loss plateau to "
            "calibrate delta from; use a stable run (smaller step size)"
        )
    return plateau_steps(len(result.batch_losses), fraction, window)


def plateau_steps(
    n_steps: int, fraction: float = 0.5, window: tuple[float, float] | None = None
) -> tuple[int, int]:
    """The steps [start, stop) of the plateau of an ``n_steps``-step run that
    ``plateau_delta`` and ``noise_trace_plateau_delta`` average over.

    n_steps: the run's number of steps, >= 1.
    fraction: the last ``fraction`` of the steps, 0 < fraction <= 1 (at least one).
    window: (a, b), 0 <= a < b <= 1: steps int(a n) .. int(b n) - 1 instead; None: the
        last ``fraction``.
    """
    n_steps = check_int("n_steps", n_steps, 1, "give the run's number of steps")
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"fraction must lie in (0, 1] (got {fraction!r}), e.g. 0.5")
    if window is None:
        return n_steps - max(1, round(fraction * n_steps)), n_steps
    return _window_steps(window, n_steps)


def _window_steps(window: Any, n_steps: int) -> tuple[int, int]:
    """The steps int(a n) .. int(b n) - 1 of a window (a, b) of fractions of a run."""
    ok = isinstance(window, (tuple, list)) and len(window) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)
    if not (ok and 0 <= window[0] < window[1] <= 1):
        raise ValueError(
            f"window must be two fractions 0 <= a < b <= 1 of the run (got {window!r}), "
            "e.g. (0.25, 0.5)"
        )
    start, stop = int(window[0] * n_steps), int(window[1] * n_steps)
    if stop <= start:
        raise ValueError(f"window {list(window)} holds no step of a {n_steps}-step run: widen it")
    return start, stop


def simulate_sgd_covariance_sde(
    network: torch.nn.Module,
    data: ImageData,
    *,
    schedule: Schedule | float | dict,
    n_steps: int,
    batch_size: int,
    loss: str = "square",
    weight_decay: float = 0.0,
    substeps: int = 1,
    chunk_size: int = 1024,
    evaluation: EvaluationOptions | None = None,
    seed: Any = 0,
    device: str = "cpu",
) -> TrainResult:
    """Euler-Maruyama of the SGD-covariance SDE (module doc) from a copy of ``network``,
    by Gaussian per-example loss weights in one weighted backward pass per step.

    loss: "square" or "cross_entropy" (as ``train_sgd``).
    seed: int or ``numpy.random.SeedSequence``; the weights' g of step j is the j-th
        (n,) draw of ``torch_generator(as_seed_sequence(seed).spawn(1)[0], device)``.
    The other arguments are those of ``simulate_label_noise_sde``.
    """
    common = _check_common(
        network, data, schedule, n_steps, batch_size, substeps, device, evaluation
    )
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)} (got {loss!r})")
    chunk_size = check_int("chunk_size", chunk_size, 1, "e.g. chunk_size=1024")
    weight_decay = check_weight_decay(weight_decay)
    net, X, y, etas, dts = _prepare(network, data, common)
    generator = torch_generator(as_seed_sequence(seed).spawn(1)[0], common["device"])
    n, B = data.n, common["batch_size"]
    c = (n - B) / (n - 1) if n > 1 else 0.0

    def step(j: int) -> torch.Tensor:
        g = torch.randn(n, generator=generator, device=X.device, dtype=X.dtype)
        weights = 1.0 + math.sqrt(etas[j] * n * c / (B * dts[j])) * (g - g.mean())
        total = torch.zeros((), dtype=torch.float64, device=X.device)
        net.zero_grad(set_to_none=True)
        for part in _chunks(n, chunk_size):
            per_example = per_example_loss(loss, net(X[part]), y[part])
            ((weights[part] * per_example).sum() / n).backward()
            total += per_example.detach().double().sum()
        _descend(net, dts[j], weight_decay)
        return total / n

    config = dict(
        method="sgd_covariance_sde", weight_decay=weight_decay, chunk_size=chunk_size, loss=loss
    )
    return _drive(net, data, step, common, loss, dts, config, seed)


def per_example_loss(name: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss ``name`` of each example, (m,): "square" 1/2 ||f(x_i) - e_{y_i}||^2,
    "cross_entropy" -log softmax(f(x_i))_{y_i}; ``loss_function`` is their mean.

    outputs: (m, K) network outputs. labels: (m,) class labels in [0, K).
    """
    if name == "square":
        targets = torch.nn.functional.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
        return 0.5 * ((outputs - targets) ** 2).sum(dim=1)
    return torch.nn.functional.cross_entropy(outputs, labels, reduction="none")


def svag_weights(l: int) -> tuple[float, float]:
    """SVAG's minibatch weights (w_+, w_-) = ((1 + sqrt(2l - 1)) / 2, (1 - sqrt(2l - 1)) / 2)
    (Li, Malladi, Arora 2021): they sum to 1 and w_+^2 + w_-^2 = l, so the combined
    gradient has the minibatch gradient's mean and l times its covariance.

    l: the SVAG parameter, an integer >= 1.
    """
    l = check_int("l", l, 1, "SVAG's l is an integer >= 1 (1: SGD)")
    root = math.sqrt(2 * l - 1)
    return (1.0 + root) / 2.0, (1.0 - root) / 2.0


def simulate_svag(
    network: torch.nn.Module,
    data: ImageData,
    *,
    schedule: Schedule | float | dict,
    n_steps: int,
    batch_size: int,
    l: int,
    loss: str = "cross_entropy",
    weight_decay: float = 0.0,
    augmentation: Augmentation | None = None,
    evaluation: EvaluationOptions | None = None,
    seed: Any = 0,
    device: str = "cpu",
) -> TrainResult:
    """SVAG with parameter ``l`` (module doc) from a copy of ``network``: l * n_steps
    SGD steps (torch's SGD, no momentum; weight decay lambda, coupled as ``train_sgd``'s)
    of size eta_k / l on the gradient of w_+ L_{B_1} + w_- L_{B_2} (``svag_weights``).
    Its ``steps`` are SVAG steps; the "effective step" of step j is j / l
    (``config["substeps"]`` = l).

    l: the SVAG parameter, an integer >= 1; l = 1 is ``train_sgd`` with the same seed,
        bit for bit (the second minibatch, of weight 0, is then not computed).
    seed: int or ``numpy.random.SeedSequence``, spawned into 4 streams: B_1's and its
        augmentation's are ``train_sgd``'s two (the same minibatches, a permutation per
        epoch of floor(n / B) steps), then B_2's and its augmentation's.
    The other arguments are those of ``train_sgd``.
    """
    weights = svag_weights(l)
    common = _check_common(network, data, schedule, n_steps, batch_size, l, device, evaluation)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)} (got {loss!r})")
    if augmentation is not None and not isinstance(augmentation, Augmentation):
        raise ValueError("augmentation must be an Augmentation or None (off)")
    weight_decay = check_weight_decay(weight_decay)
    net, X, y, _, dts = _prepare(network, data, common)
    streams = as_seed_sequence(seed).spawn(4)
    B = common["batch_size"]
    draws = [
        _MinibatchStream(data.n, B, streams[0], streams[1], augmentation, common["device"]),
        _MinibatchStream(data.n, B, streams[2], streams[3], augmentation, common["device"]),
    ]
    optimizer = torch.optim.SGD(net.parameters(), lr=float(dts[0]), weight_decay=weight_decay)

    def step(j: int) -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = float(dts[j])
        optimizer.zero_grad(set_to_none=True)
        terms = []
        for weight, draw in zip(weights, draws, strict=True):
            if weight != 0.0:  # l = 1: B_2 has weight 0 and is skipped (SGD exactly)
                index, images = draw.next(j, X)
                terms.append(weight * loss_function(loss, net(images), y[index]))
        combined = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        combined.backward()
        optimizer.step()
        return combined.detach()

    config = dict(
        method="svag",
        l=l,
        loss=loss,
        weight_decay=weight_decay,
        augmentation=None if augmentation is None else dataclasses.asdict(augmentation),
    )
    return _drive(net, data, step, common, loss, dts, config, seed)


class _MinibatchStream:
    """Minibatches as ``train_sgd`` draws them: a permutation of the n images per epoch of
    floor(n / B) steps from one generator, each minibatch augmented from another."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        batch_seed: Any,
        augment_seed: Any,
        augmentation: Augmentation | None,
        device: str,
    ):
        self.n, self.batch_size, self.augmentation = n, batch_size, augmentation
        self.per_epoch = n // batch_size
        self.batch_generator = torch_generator(batch_seed, device)
        self.augment_generator = torch_generator(augment_seed, device)
        self.order = torch.empty(0, dtype=torch.int64)

    def next(self, j: int, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, images) of step ``j``'s minibatch of the images ``X``."""
        position = j % self.per_epoch
        if position == 0:
            self.order = torch.randperm(
                self.n, generator=self.batch_generator, device=self.batch_generator.device
            )
        index = self.order[position * self.batch_size : (position + 1) * self.batch_size]
        images = X[index]
        if self.augmentation is not None:
            images = self.augmentation(images, self.augment_generator)
        return index, images


def _check_common(
    network: Any,
    data: Any,
    schedule: Any,
    n_steps: Any,
    batch_size: Any,
    substeps: Any,
    device: Any,
    evaluation: Any,
) -> dict[str, Any]:
    """The checked arguments every simulator shares."""
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"network must be a torch.nn.Module (got {type(network).__name__})")
    if not isinstance(data, ImageData):
        raise ValueError("data must be a sgdsde.validation.ImageData (see sgdsde.validation)")
    schedule = as_schedule(schedule)
    n_steps = check_int("n_steps", n_steps, 1, "give the number of SGD steps modelled")
    batch_size = check_int("batch_size", batch_size, 1, "e.g. batch_size=128")
    if batch_size > data.n:
        raise ValueError(f"batch_size must be at most the {data.n} training images ({batch_size})")
    substeps = check_int("substeps", substeps, 1, "simulator steps per SGD step, e.g. 1")
    return dict(
        schedule=schedule,
        n_steps=n_steps,
        batch_size=batch_size,
        substeps=substeps,
        device=check_device(device, "the simulator"),
        evaluation=check_evaluation(evaluation),
    )


def _check_normals(normals: Any, shape: tuple[int, int, int]) -> torch.Tensor | None:
    """``normals`` as a float64 tensor of ``shape`` (or None), checked."""
    if normals is None:
        return None
    values = torch.as_tensor(np.asarray(normals, dtype=np.float64))
    if tuple(values.shape) != shape or not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"normals must be finite standard normals of shape {shape} (simulator steps, "
            f"training images, outputs) (got shape {tuple(values.shape)}); or None to draw "
            "them from seed"
        )
    return values


def _prepare(network: torch.nn.Module, data: ImageData, common: dict[str, Any]):
    """(network copy on the device, training images and labels there in the network's
    dtype, eta and dt of every simulator step)."""
    net = copy.deepcopy(network).to(common["device"])
    dtype = next(net.parameters()).dtype
    X = torch.from_numpy(data.X).to(device=common["device"], dtype=dtype)
    y = torch.from_numpy(data.y).to(common["device"])
    etas = np.repeat(common["schedule"].values(common["n_steps"]), common["substeps"])
    return net, X, y, etas, etas / common["substeps"]


def _chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering range(n)."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _descend(net: torch.nn.Module, dt: float, weight_decay: float) -> None:
    """theta <- theta - dt * (theta.grad + weight_decay * theta), in torch's SGD's order
    of operations (so that a step on the same gradient matches ``train_sgd``'s)."""
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                step = p.grad if weight_decay == 0 else p.grad.add(p, alpha=weight_decay)
                p.add_(step, alpha=-float(dt))


def _drive(
    net: torch.nn.Module,
    data: ImageData,
    step: StepFunction,
    common: dict[str, Any],
    loss: str,
    dts: np.ndarray,
    config: dict[str, Any],
    seed: Any,
) -> TrainResult:
    """Run ``step(j)`` (one update; returns its step loss as a 0-d device tensor) for every
    simulator step with ``train_sgd``'s evaluations and divergence handling
    (``run_evaluated`` with an ``Evaluator``), evaluating every ``eval_every * substeps``
    simulator steps so that evaluations fall at the SGD run's times."""
    evaluation = common["evaluation"]
    evaluator = Evaluator(
        net,
        data,
        loss=loss,
        options=evaluation,
        device=common["device"],
        walk_stride=common["substeps"],  # walk metrics: increments over one SGD step's time
    )
    every = evaluation.eval_every * common["substeps"]
    record = run_evaluated(step, net, dts, evaluator, eval_every=every)
    config = dict(
        config,
        schedule=common["schedule"].to_config(),
        n_steps=common["n_steps"],
        batch_size=common["batch_size"],
        substeps=common["substeps"],
        evaluation=evaluation.to_config(data.n),
        seed=str(seed),
        device=common["device"],
        data=data.config,
    )
    return TrainResult(network=net, config=config, seed=seed, **record)
