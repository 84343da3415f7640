"""The "A Walk with SGD" metrics of torch networks (Xing, Arpit, Tsirigotis, Bengio 2018;
reference notes collapse-walk.md Sec. 2.1), recorded by the ``Evaluator`` when
``EvaluationOptions.walk`` is on. The definitions are ``sgdsde.metrics.walk``'s and are
computed by its functions (``segment_losses``, ``valley_floor``, ``update_cosine``) on
flat float64 parameter vectors; here only the network's loss as a function of such a
vector (``FlatParameterLoss``) and the bookkeeping.

Which segment an evaluation reads: the one *ending* at the evaluated iterate, as the
toy runs' recorded metrics (``sgdsde.metrics.walk``: "recorded at save step s with
t = s - 1"). At an evaluated step e of a run whose updates are s steps apart (SGD:
s = 1; a simulator with ``substeps`` steps per SGD step: s = substeps, so that an SDE
"update" is its increment over one SGD step's worth of time eta_k),

    f(alpha) = L(theta_{e-s} + alpha (theta_e - theta_{e-s})), alpha = 0 .. 1,

on the metrics subset of the training set (the training loss's set, the network in
eval mode), and

* floor height min_alpha f, height above the floor f(0) - min_alpha f, and the interior
  minimum flag (1: min_alpha f < min(f(0), f(1)), the update crossed the valley floor);
* the update cosine cos(theta_{e-s} - theta_{e-2s}, theta_e - theta_{e-s}): for plain
  SGD the cosine of the consecutive minibatch gradients g_{e-2}, g_{e-1} (with momentum
  or weight decay, of the updates); for an SDE of its consecutive increments.

Evaluating the segment ending at e needs only iterates the run has already passed
(``walk_steps`` says which to keep), so every evaluation is complete when it is made
and a divergence needs no special case. The price: at step 0 nothing is defined, and
at step s the cosine is not (NaN). The distance from initialization ||theta - theta_0||
is recorded by every evaluation anyway (``distance_from_init``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from sgdsde.metrics.walk import segment_losses, update_cosine, valley_floor

#: Walk records of every evaluation (scalars), in ``TrainResult`` order.
WALK_RECORDS = ("floor_height", "height_above_floor", "interior_minimum", "update_cosine")


class FlatParameterLoss:
    """A torch network's loss as a function of flat parameter vectors: the ``model``
    whose ``loss`` ``sgdsde.metrics.walk.segment_losses`` evaluates.

    network: the ``torch.nn.Module``; its parameters give the layout of theta (in
        ``parameters()`` order, each flattened row-major: ``parameter_vector``'s).
    loss_of: (params {name: tensor}, images, labels) -> the mean loss (float) of the
        network with those parameters in place of its own (its buffers as they are).
    """

    def __init__(self, network: torch.nn.Module, loss_of: Callable[..., float]):
        self.loss_of = loss_of
        self.layout = [(name, p.shape, p.dtype, p.device) for name, p in network.named_parameters()]

    def parameters(self, theta: np.ndarray) -> dict[str, torch.Tensor]:
        """theta (p,) as the network's named parameters, in their dtypes and devices."""
        out, start = {}, 0
        for name, shape, dtype, device in self.layout:
            size = math.prod(shape)
            values = torch.from_numpy(np.ascontiguousarray(theta[start : start + size]))
            out[name] = values.reshape(shape).to(device=device, dtype=dtype)
            start += size
        if start != len(theta):
            raise ValueError(f"theta has {len(theta)} entries; the network has {start} parameters")
        return out

    def loss(self, thetas: np.ndarray, X: Any, y: Any) -> np.ndarray:
        """The loss on images X and labels y at every row of thetas (N, p), (N,)."""
        return np.array([self.loss_of(self.parameters(row), X, y) for row in np.atleast_2d(thetas)])


def walk_steps(eval_steps: Iterable[int], stride: int) -> set[int]:
    """The steps k whose iterates theta_k the walk records of evaluations at
    ``eval_steps`` read: e - stride and e - 2 stride (module doc), those >= 0."""
    return {e - j * stride for e in eval_steps for j in (1, 2) if e - j * stride >= 0}


def walk_record(
    model: FlatParameterLoss,
    images: Any,
    labels: Any,
    theta: np.ndarray,
    previous: np.ndarray | None,
    before: np.ndarray | None,
    n_points: int,
) -> dict[str, Any]:
    """The walk records of one evaluation (module doc): ``segment_loss`` (n_points,)
    f(alpha) and the scalars of ``WALK_RECORDS`` (``interior_minimum`` 1.0 or 0.0).

    model: the network's ``FlatParameterLoss``.
    images, labels: the data of the loss (the metrics subset).
    theta: theta_e (p,) float64, the evaluated iterate.
    previous, before: theta_{e-s} and theta_{e-2s} (p,), or None where the run has no
        such iterate (then the records that need it are NaN).
    n_points: the points of the alpha grid, equally spaced from 0 to 1 (>= 3).
    """
    missing = {key: math.nan for key in WALK_RECORDS}
    if previous is None:
        return {"segment_loss": np.full(n_points, math.nan), **missing}
    alphas = np.linspace(0.0, 1.0, n_points)
    losses = segment_losses(model, previous, theta, images, labels, alphas)
    floor = valley_floor(losses, alphas)
    cosine = math.nan if before is None else float(update_cosine(before, previous, theta))
    return {
        "segment_loss": losses[0],
        "floor_height": float(floor.height[0]),
        "height_above_floor": float(floor.height_above[0]),
        "interior_minimum": float(floor.interior[0]),
        "update_cosine": cosine,
    }
