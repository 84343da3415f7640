"""Stochastic-collapse metrics of torch networks: vanishing neurons, identical neuron
pairs and the fraction of independent neurons per hidden layer, with the definitions
and thresholds of ``sgdsde.metrics.collapse`` (Chen, Kunin, Yamamura, Ganguli,
"Stochastic Collapse", NeurIPS 2023; DESIGN.md "Collapse").

The neuron-vector protocol: a network declares ``neuron_vectors()``, returning
{layer: (units, k) tensor}, row i the vector theta_i = (incoming weights, bias,
outgoing weights) of hidden unit i (a convolution channel: its filter, its bias and the
next layer's weights that read it). Layers are named as the network's feature taps
(the hidden block whose units they are), so both families of metrics share the
``block`` dimension of a run's dataset.

The metrics here are ``sgdsde.metrics.collapse``'s, computed in torch on the network's
device and with the pair distances from the Gram matrix,

    ||theta_i - theta_j||^2 = ||theta_i||^2 + ||theta_j||^2 - 2 theta_i . theta_j,

so a layer of u units with k-vectors costs O(u^2 k) time and O(u^2) memory (the closed-
form toy models' ``pair_distances`` forms the (u, u, k) differences: 0.3 GB for a
256-unit MLP layer). Equal to the toy definitions up to rounding (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Collapse records of every evaluation, per layer (``Evaluator``).
COLLAPSE_RECORDS = ("vanishing_neurons", "identical_pairs", "independent_neurons")


def network_neuron_vectors(network: Any) -> dict[str, torch.Tensor]:
    """{layer: (units, k) neuron vectors} of a network declaring ``neuron_vectors()``
    (module doc), detached; {} for a network that declares none.

    network: a ``torch.nn.Module``.
    """
    declared = getattr(network, "neuron_vectors", None)
    if not callable(declared):
        return {}
    with torch.no_grad():
        vectors = dict(declared())
    for layer, v in vectors.items():
        if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[0] < 1:
            raise ValueError(
                f"{type(network).__name__}.neuron_vectors() must return (units, k) tensors "
                f"(layer {layer!r}: got {getattr(v, 'shape', type(v).__name__)})"
            )
    return {layer: v.detach() for layer, v in vectors.items()}


def collapse_statistics(
    vectors: torch.Tensor, vanishing: float = 0.1, identical: float = 0.1
) -> tuple[float, int, float]:
    """(fraction of vanishing units, number of identical pairs, fraction of independent
    neurons) of one layer's neuron vectors (units, k), as ``sgdsde.metrics.collapse``'s
    ``vanishing_mask``, ``identical_pairs`` and ``independent_fraction``:

    * vanishing: ||theta_i|| < vanishing * max_j ||theta_j||;
    * identical pair i < j: both non-vanishing and 2 ||theta_i - theta_j||^2 /
      (||theta_i||^2 + ||theta_j||^2) < identical;
    * independent: non-vanishing units grouped greedily in unit order (each unit starts
      a group and takes every later free unit identical to it); groups / units.

    vectors: (units, k), any device and float dtype (computed in float64).
    vanishing, identical: the thresholds (the paper's 0.1 and 0.1).
    """
    v = vectors.to(torch.float64)
    squared = (v * v).sum(dim=1)
    norms = squared.sqrt()
    alive = ~(norms < vanishing * norms.max())
    gram = v @ v.T
    difference = (squared[:, None] + squared[None, :] - 2.0 * gram).clamp_min(0.0)
    total = squared[:, None] + squared[None, :]
    close = 2.0 * difference < identical * total  # never true for two zero units (NaN)
    pairs = close & alive[:, None] & alive[None, :]
    n_pairs = int(torch.triu(pairs, diagonal=1).sum())
    close_host, alive_host = close.cpu().numpy(), alive.cpu().numpy()
    return float(1.0 - alive_host.mean()), n_pairs, _greedy_groups(close_host, alive_host)


def _greedy_groups(close: np.ndarray, alive: np.ndarray) -> float:
    """Groups of identical alive units / units (``independent_fraction``'s grouping)."""
    free = alive.copy()
    groups = 0
    for i in range(len(alive)):
        if free[i]:
            groups += 1
            free &= ~close[i]
            free[i] = False
    return groups / len(alive)
