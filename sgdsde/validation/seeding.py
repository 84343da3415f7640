"""Seeded torch generators: every random draw of a validation run comes from one of
these, never from torch's global generator."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sgdsde.random import as_seed_sequence


def torch_generator(seed: Any, device: Any = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``seed``.

    seed: int or ``numpy.random.SeedSequence``; a SeedSequence's entropy and spawn key
        both count, so its children give independent generators. The torch seed is the
        first 63 bits of ``SeedSequence.generate_state``.
    device: the generator's device ("cpu", "cuda", a ``torch.device``).
    """
    state = as_seed_sequence(seed).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state) >> 1)
    return generator
