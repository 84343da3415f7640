"""Randomness as an argument: one ``SeedSequence`` per run, spawned per trajectory.

Trajectory t of a run seeded with ``seed`` uses ``SeedSequence(seed).spawn(T)[t]``,
which it spawns again into one independent stream per purpose (initialisation,
minibatch sampling, label noise, Brownian increments). Streams are drawn only with
split-invariant calls (doubles and normals, never buffered bounded integers), so
the numbers a trajectory sees do not depend on how many other trajectories run,
on the block size, on the save grid, or on the number of threads
(docs/conventions.md, "Randomness").
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

STREAMS = ("init", "batch", "label_noise", "brownian")


def as_seed_sequence(seed: Any) -> np.random.SeedSequence:
    """int, None or SeedSequence -> SeedSequence (None draws fresh OS entropy).

    A SeedSequence comes back as a fresh copy (``fresh_copy``): ``spawn`` is stateful,
    so spawning from the caller's object would give a second run with the same seed
    different children."""
    if isinstance(seed, np.random.SeedSequence):
        return fresh_copy(seed)
    if seed is None or isinstance(seed, int | np.integer):
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer (got {seed})")
        return np.random.SeedSequence(None if seed is None else int(seed))
    raise ValueError(
        f"seed must be an int, None or numpy.random.SeedSequence (got {type(seed).__name__})"
    )


def fresh_copy(root: np.random.SeedSequence) -> np.random.SeedSequence:
    """A copy with no children spawned yet: ``SeedSequence.spawn`` is stateful, so every
    consumer gets its own copy and sees the same children."""
    return np.random.SeedSequence(root.entropy, spawn_key=root.spawn_key)


def trajectory_seeds(seed: Any, n_traj: int) -> list[np.random.SeedSequence]:
    """Each trajectory's own SeedSequence.

    A single seed is spawned into ``n_traj`` children. A sequence of seeds gives each
    trajectory its own root instead: trajectories with equal seeds then share every
    random number (common random numbers, as the paper's notebooks, which reset the
    seed before each run).
    """
    if isinstance(seed, list | tuple | np.ndarray):
        if len(seed) != n_traj:
            raise ValueError(
                f"got {len(seed)} seeds for {n_traj} trajectories: give one per trajectory"
            )
        return [as_seed_sequence(s) for s in seed]
    return as_seed_sequence(seed).spawn(n_traj)


def trajectory_streams(seed: Any, n_traj: int) -> dict[str, list[np.random.Generator]]:
    """One PCG64 generator per trajectory and per purpose in ``STREAMS``."""
    children = trajectory_seeds(seed, n_traj)
    streams: dict[str, list[np.random.Generator]] = {name: [] for name in STREAMS}
    for child in children:
        for name, grandchild in zip(STREAMS, child.spawn(len(STREAMS)), strict=True):
            streams[name].append(np.random.Generator(np.random.PCG64(grandchild)))
    return streams


def brownian_seeds(streams: dict[str, list[np.random.Generator]]) -> list[np.random.SeedSequence]:
    """Each trajectory's ``"brownian"`` SeedSequence (where xoshiro streams and the torch
    generator's seed start from)."""
    return [rng.bit_generator.seed_seq for rng in streams["brownian"]]


def run_seed(streams: dict[str, list[np.random.Generator]], tag: int | None = None) -> int:
    """A 63-bit integer derived, without drawing, from every trajectory's ``"brownian"``
    seed sequence (so from the run's seed), for generators seeded once per run (torch's,
    torchsde's ``BrownianInterval``); ``tag`` separates their domains."""
    words = [] if tag is None else [tag]
    for seq in brownian_seeds(streams):
        words.extend(int(x) for x in seq.generate_state(2, np.uint32))
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_attrs(seed: Any) -> dict[str, str]:
    """The entropy and spawn key of a run's root sequence(s), for dataset attrs, as JSON
    (``json.loads`` reads them back): ``seed_entropy`` an int (or list of ints),
    ``seed_spawn_key`` a list of ints; one of each per trajectory when ``seed`` is a
    list. ``SeedSequence(entropy, spawn_key=spawn_key)`` rebuilds the root."""
    if isinstance(seed, list | tuple | np.ndarray):
        roots = [as_seed_sequence(s) for s in seed]
        return {
            "seed_entropy": json.dumps([_plain_entropy(r) for r in roots]),
            "seed_spawn_key": json.dumps([[int(k) for k in r.spawn_key] for r in roots]),
            "seed_layout": "per trajectory: SeedSequence(entropy[t], spawn_key[t]).spawn(4) -> "
            + ", ".join(STREAMS),
        }
    root = as_seed_sequence(seed)
    return {
        "seed_entropy": json.dumps(_plain_entropy(root)),
        "seed_spawn_key": json.dumps([int(k) for k in root.spawn_key]),
        "seed_layout": "SeedSequence(entropy, spawn_key).spawn(n_traj)[t].spawn(4) -> "
        + ", ".join(STREAMS),
    }


def _plain_entropy(root: np.random.SeedSequence) -> int | list[int]:
    """A root's entropy as a Python int, or a list of them (JSON-ready)."""
    entropy = root.entropy
    if isinstance(entropy, int | np.integer):
        return int(entropy)
    return [int(e) for e in entropy]


def uniform_indices(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Indices uniform on {0..n-1} from doubles: floor(u n) (bias < n 2^-53), split-invariant."""
    return np.minimum((rng.random(shape) * n).astype(np.int64), n - 1)


def without_replacement(rng: np.random.Generator, n: int, batch: int, n_draws: int) -> np.ndarray:
    """(n_draws, batch) index sets, each uniform among batch-subsets of {0..n-1}."""
    keys = rng.random((n_draws, n))
    if batch == n:
        return np.argsort(keys, axis=1)
    return np.argpartition(keys, batch - 1, axis=1)[:, :batch]
