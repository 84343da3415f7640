"""Per-trajectory xoshiro256++ streams with ziggurat normals, drawn inside numba kernels.

Why: at T ~ 1000 trajectories an Euler-Maruyama step of the toy models costs two small
GEMMs (~0.2 ms) and n T standard normals; numpy's ``Generator`` draws those in ~0.7 ms
on one core, so the normals, not the maths, set the speed. Here every trajectory
owns a 256-bit xoshiro256++ state (Blackman & Vigna, "Scrambled linear pseudorandom
number generators", ACM TOMS 2021) and normals come from the 256-strip ziggurat
(Marsaglia & Tsang, "The ziggurat method for generating random variables", J. Stat.
Softw. 2000). Kernels draw in parallel over trajectories, ~2-5 ns per normal and core.

Reproducibility is the same contract as ``sgdsde.random``: trajectory t's numbers
depend only on its own seed, never on T, the thread count or how a run is chunked
(draws are sequential per trajectory, one 64-bit word at a time).

Seeding: the state of trajectory t is ``generate_state(4, uint64)`` of the *first
child* of its ``"brownian"`` seed sequence, ``SeedSequence(entropy, spawn_key +
(0,))`` (so it is not the PCG64 state numpy's generator of that stream uses).

One normal from one 64-bit word ``b`` (fast path, 98.8 % of draws): strip
``i = b & 255``, sign ``bit 8``, ``u = (b >> 11) 2^-53``; accept ``x = u x_i`` when
``u < x_{i+1} / x_i``. Otherwise the wedge test on a fresh uniform, or (strip 0) the
exponential-rejection tail beyond R (Marsaglia 1964).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba as nb
import numpy as np

# Strip count 256, right edge R of the base strip and common strip area V (the two
# constants of the 256-strip ziggurat that make the strips tile exactly).
ZIGGURAT_R = 3.6541528853610088
ZIGGURAT_V = 0.00492867323399
_TWO_M53 = 1.0 / 9007199254740992.0  # 2^-53


def ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges x_0..x_256, accept ratios x_{i+1}/x_i, densities exp(-x_i^2 / 2)).

    Strip 0 is the base: a rectangle of virtual width x_0 = V / f(R) that carries the
    tail beyond x_1 = R. Strip i >= 1 spans heights f(x_i) .. f(x_{i+1}) over
    [0, x_i], with f(x_{i+1}) = f(x_i) + V / x_i, and x_256 = 0 (top strip).
    """
    f = lambda x: np.exp(-0.5 * x * x)  # noqa: E731
    edges = np.zeros(257)
    edges[0] = ZIGGURAT_V / f(ZIGGURAT_R)
    edges[1] = ZIGGURAT_R
    for i in range(1, 255):
        edges[i + 1] = np.sqrt(-2.0 * np.log(f(edges[i]) + ZIGGURAT_V / edges[i]))
    ratios = edges[1:] / edges[:-1]
    return edges, ratios, f(edges)


EDGES, RATIOS, DENSITIES = TABLES = ziggurat_tables()


@nb.njit(inline="always")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@nb.njit(inline="always")
def _next(s0, s1, s2, s3):
    """xoshiro256++: the next 64-bit output and the new state."""
    out = _rotl(s0 + s3, 23) + s0
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return out, s0, s1, s2, s3


@nb.njit(cache=True, error_model="numpy")
def next_words(state, t, out):
    """Fill ``out`` (uint64) with the next raw xoshiro256++ words of row t of ``state``
    (for tests against an independent implementation)."""
    s0, s1, s2, s3 = state[t, 0], state[t, 1], state[t, 2], state[t, 3]
    for j in range(out.shape[0]):
        out[j], s0, s1, s2, s3 = _next(s0, s1, s2, s3)
    state[t, 0], state[t, 1], state[t, 2], state[t, 3] = s0, s1, s2, s3


@nb.njit(cache=True, error_model="numpy")
def fill_normals_row(state, t, out, edges, ratios, densities):
    """Fill the 1-D array ``out`` with standard normals from row t of ``state`` (T, 4),
    advancing that row. ``out`` may be float64 or float32 (drawn in float64, rounded)."""
    s0, s1, s2, s3 = state[t, 0], state[t, 1], state[t, 2], state[t, 3]
    for j in range(out.shape[0]):
        while True:
            b, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
            i = np.int64(b & np.uint64(255))
            u = np.float64(b >> np.uint64(11)) * _TWO_M53
            x = u * edges[i]
            if u < ratios[i]:
                break
            if i == 0:  # tail beyond R: x = R + e1 with e1 ~ Exp(R), accepted w.p. exp(-e1^2/2)
                while True:
                    b1, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
                    b2, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
                    # (k + 1) 2^-53 lies in (0, 1]: the logs stay finite
                    e1 = -np.log((np.float64(b1 >> np.uint64(11)) + 1.0) * _TWO_M53) / ZIGGURAT_R
                    e2 = -np.log((np.float64(b2 >> np.uint64(11)) + 1.0) * _TWO_M53)
                    if e2 + e2 > e1 * e1:
                        break
                x = ZIGGURAT_R + e1
                break
            b1, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
            u1 = np.float64(b1 >> np.uint64(11)) * _TWO_M53
            if densities[i] + u1 * (densities[i + 1] - densities[i]) < np.exp(-0.5 * x * x):
                break
        out[j] = -x if (b >> np.uint64(8)) & np.uint64(1) else x
    state[t, 0], state[t, 1], state[t, 2], state[t, 3] = s0, s1, s2, s3


@nb.njit(cache=True, parallel=True, error_model="numpy")
def fill_normals(state, out, edges, ratios, densities):
    """Row t of ``out`` (T, m) from stream t, in parallel over t."""
    for t in nb.prange(out.shape[0]):
        fill_normals_row(state, t, out[t], edges, ratios, densities)


def seed_state(seeds: Sequence[np.random.SeedSequence]) -> np.ndarray:
    """(T, 4) uint64 xoshiro256++ states, one per seed sequence (see the module doc)."""
    state = np.empty((len(seeds), 4), dtype=np.uint64)
    for t, seq in enumerate(seeds):
        child = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, 0))
        words = child.generate_state(4, np.uint64)
        if not words.any():  # the one state xoshiro cannot leave (probability 2^-256)
            words[0] = 1
        state[t] = words
    return state


class XoshiroNormals:
    """T independent normal streams; ``draw(out)`` fills row t of ``out`` from stream t.

    >>> streams = XoshiroNormals.from_seed(0, 3)
    >>> z = np.empty((3, 5)); streams.draw(z)       # (T, m), float64 or float32
    """

    def __init__(self, state: np.ndarray):
        state = np.ascontiguousarray(state, dtype=np.uint64)
        if state.ndim != 2 or state.shape[1] != 4:
            raise ValueError(f"state must be (T, 4) uint64 (got shape {state.shape})")
        self.state = state.copy()

    @classmethod
    def from_seeds(cls, seeds: Sequence[np.random.SeedSequence]) -> XoshiroNormals:
        return cls(seed_state(seeds))

    @classmethod
    def from_seed(cls, seed, n_traj: int) -> XoshiroNormals:
        """Streams of the ``"brownian"`` seeds of ``trajectory_streams(seed, n_traj)``."""
        from sgdsde.random import brownian_seeds, trajectory_streams

        return cls.from_seeds(brownian_seeds(trajectory_streams(seed, n_traj)))

    @property
    def n_traj(self) -> int:
        return self.state.shape[0]

    def draw(self, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` of shape (T, ...) (C-contiguous float64/float32) in place."""
        if out.shape[0] != self.n_traj or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a C-contiguous array with {self.n_traj} rows (got {out.shape})"
            )
        fill_normals(self.state, out.reshape(self.n_traj, -1), EDGES, RATIOS, DENSITIES)
        return out


@nb.njit(cache=True, parallel=True, error_model="numpy")
def fill_channels(state, use_label, use_sgd, use_iso, label, sgd, iso, edges, ratios, densities):
    """SDE increments of S steps: for each trajectory t and step k, in this order, n
    normals into label[t, k] if use_label[t], n into sgd[t, k] if use_sgd[t], p into
    iso[t, k] if use_iso[t] (arrays (T, S, width)); rows not used are left alone."""
    for t in nb.prange(label.shape[0]):
        for k in range(label.shape[1]):
            if use_label[t]:
                fill_normals_row(state, t, label[t, k], edges, ratios, densities)
            if use_sgd[t]:
                fill_normals_row(state, t, sgd[t, k], edges, ratios, densities)
            if use_iso[t]:
                fill_normals_row(state, t, iso[t, k], edges, ratios, densities)
