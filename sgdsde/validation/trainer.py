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

The SDE time of step k is t_k = sum_{j<k} eta_j. Every ``eval_every`` steps (and at
steps 0 and n_steps) the run records the loss and error (the fraction misclassified,
argmax) on the fixed metrics subset of the training set and on the test set. A
minibatch loss that is not finite or exceeds ``max_loss`` stops the run at the next
evaluation: it is recorded as diverged at that step (later evaluations NaN), not
raised.

Randomness: ``seed`` is spawned into the minibatch and augmentation streams, each a
``torch.Generator`` (``torch_generator``); torch's global generator is never drawn.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import torch

from sgdsde.dynamics.schedules import Schedule, as_schedule, cumulative_time
from sgdsde.random import as_seed_sequence
from sgdsde.run.checks import check_device, check_int, check_positive_real
from sgdsde.validation.data import Augmentation, ImageData, metrics_subset
from sgdsde.validation.seeding import torch_generator

LOSSES = ("square", "cross_entropy")


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

    @property
    def diverged(self) -> bool:
        """Whether the run diverged."""
        return self.diverged_step is not None


def loss_function(name: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean loss ``name`` ("square" or "cross_entropy", module doc) of ``outputs``
    (m, K) against class labels (m,) in [0, K)."""
    if name == "square":
        targets = torch.nn.functional.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
        return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()
    return torch.nn.functional.cross_entropy(outputs, labels)


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
    eval_every: int = 100,
    metrics_size: int = 1000,
    eval_batch_size: int = 1000,
    max_loss: float = 1e6,
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
    eval_every: evaluate every so many steps (and at step 0 and the last step).
    metrics_size: the training loss and error are measured on the first so many
        training images (``metrics_subset``; at most data.n).
    eval_batch_size: images per forward pass in evaluations.
    max_loss: a minibatch loss above this (or not finite) marks the run diverged.
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
    eval_every = check_int("eval_every", eval_every, 1, "e.g. eval_every=100")
    check_int("metrics_size", metrics_size, 1, "e.g. metrics_size=1000")
    eval_batch_size = check_int("eval_batch_size", eval_batch_size, 1, "e.g. 1000")
    if not (0 <= momentum < 1):
        raise ValueError(f"momentum must lie in [0, 1) (got {momentum!r}): 0 is plain SGD")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise ValueError(f"weight_decay must be a finite number >= 0 (got {weight_decay!r})")
    check_positive_real("max_loss", max_loss)
    if augmentation is not None and not isinstance(augmentation, Augmentation):
        raise ValueError("augmentation must be an Augmentation or None (off)")
    device = check_device(device, "train_sgd")

    lrs = schedule.values(n_steps)
    batch_stream, augment_stream = as_seed_sequence(seed).spawn(2)
    batch_generator = torch_generator(batch_stream)
    augment_generator = torch_generator(augment_stream)
    net = copy.deepcopy(network).to(device)
    X = torch.from_numpy(data.X).to(device)
    y = torch.from_numpy(data.y).to(device)
    X_metrics, y_metrics = metrics_subset(data, min(metrics_size, data.n))
    evaluation_sets = {
        "train": (torch.from_numpy(X_metrics).to(device), torch.from_numpy(y_metrics).to(device)),
        "test": (
            torch.from_numpy(data.X_test).to(device),
            torch.from_numpy(data.y_test).to(device),
        ),
    }
    optimizer = torch.optim.SGD(
        net.parameters(), lr=float(lrs[0]), momentum=momentum, weight_decay=weight_decay
    )
    eval_steps = sorted({*range(0, n_steps, eval_every), n_steps})
    eval_at = set(eval_steps)
    records = {f"{split}_{kind}": [] for split in evaluation_sets for kind in ("loss", "error")}
    batches_per_epoch = data.n // batch_size
    order = torch.empty(0, dtype=torch.int64)
    diverged_step = None

    def evaluate() -> None:
        for split, (images, labels) in evaluation_sets.items():
            value, error = _evaluate(net, images, labels, loss, eval_batch_size)
            records[f"{split}_loss"].append(value)
            records[f"{split}_error"].append(error)

    # Minibatch losses stay on the device; divergence is looked for at evaluations only,
    # so a CUDA step loop never waits for a device-to-host copy.
    batch_losses = torch.full((n_steps,), math.nan, dtype=torch.float64, device=device)
    checked = 0
    for k in range(n_steps + 1):
        if k in eval_at:
            diverged_step = _first_bad(batch_losses, checked, k, max_loss)
            if diverged_step is not None:
                break
            checked = k
            evaluate()
        if k == n_steps:
            break
        position = k % batches_per_epoch
        if position == 0:
            order = torch.randperm(data.n, generator=batch_generator).to(device)
        index = order[position * batch_size : (position + 1) * batch_size]
        images = X[index]
        if augmentation is not None:
            images = augmentation(images, augment_generator)
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[k])
        optimizer.zero_grad(set_to_none=True)
        batch_loss = loss_function(loss, net(images), y[index])
        batch_losses[k] = batch_loss.detach()
        batch_loss.backward()
        optimizer.step()

    n_eval = len(eval_steps)
    out = {key: np.full(n_eval, np.nan) for key in records}
    for key, values in records.items():
        out[key][: len(values)] = values
    steps = np.asarray(eval_steps, dtype=np.int64)
    config = dict(
        schedule=schedule.to_config(),
        n_steps=n_steps,
        batch_size=batch_size,
        loss=loss,
        momentum=momentum,
        weight_decay=weight_decay,
        augmentation=None if augmentation is None else dataclasses.asdict(augmentation),
        eval_every=eval_every,
        metrics_size=min(metrics_size, data.n),
        max_loss=max_loss,
        seed=str(seed),
        device=device,
        data=data.config,
    )
    return TrainResult(
        steps=steps,
        time=cumulative_time(lrs)[steps],
        lrs=lrs,
        batch_losses=_until(batch_losses.cpu().numpy(), diverged_step),
        diverged_step=diverged_step,
        network=net,
        config=config,
        **out,
    )


def _first_bad(batch_losses: torch.Tensor, start: int, stop: int, max_loss: float) -> int | None:
    """The first step in [start, stop) whose minibatch loss is not finite or exceeds
    ``max_loss``, else None (one device-to-host copy)."""
    segment = batch_losses[start:stop]
    bad = torch.nonzero(~(torch.isfinite(segment) & (segment <= max_loss)))
    return None if len(bad) == 0 else start + int(bad[0, 0])


def _until(values: np.ndarray, diverged_step: int | None) -> np.ndarray:
    """``values`` with NaN from ``diverged_step`` on."""
    if diverged_step is not None:
        values[diverged_step:] = np.nan
    return values


def _evaluate(
    net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str, chunk: int
) -> tuple[float, float]:
    """(mean loss, error) of ``net`` on ``images`` in eval mode, ``chunk`` at a time."""
    was_training = net.training
    net.eval()
    total, wrong = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(labels), chunk):
            outputs = net(images[start : start + chunk])
            part = labels[start : start + chunk]
            total += loss_function(loss, outputs, part).item() * len(part)
            wrong += int((outputs.argmax(dim=1) != part).sum())
    net.train(was_training)
    return total / len(labels), wrong / len(labels)
