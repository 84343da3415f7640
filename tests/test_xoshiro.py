"""xoshiro256++ streams and ziggurat normals (sgdsde.xoshiro).

Ground truth: an independent pure-Python xoshiro256++ for the raw words; the ziggurat's
geometry (equal strip areas, the tail mass) for the tables; and the normal law for the
draws, with tolerances derived from the sample size (fixed seeds, no retries):
moments within K_SE standard errors, Kolmogorov-Smirnov and chi-square statistics
below their 1e-3 critical values.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy import special, stats

from sgdsde import xoshiro
from sgdsde.xoshiro import EDGES, ZIGGURAT_R, ZIGGURAT_V, XoshiroNormals

K_SE = 5.0
MASK = (1 << 64) - 1


def _xoshiro256pp_reference(state, n):
    """The published algorithm (Blackman & Vigna), in Python integers."""
    s = [int(x) for x in state]
    rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & MASK  # noqa: E731
    out = []
    for _ in range(n):
        out.append((rotl((s[0] + s[3]) & MASK, 23) + s[0]) & MASK)
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


def test_raw_words_match_reference_implementation():
    state = xoshiro.seed_state(np.random.SeedSequence(7).spawn(3))
    for t in range(3):
        expected = _xoshiro256pp_reference(state[t], 500)
        words = np.empty(500, dtype=np.uint64)
        xoshiro.next_words(state, t, words)
        assert [int(w) for w in words] == expected
    # and with a hand-picked state (all bits exercised, incl. carries in s0 + s3)
    hand = np.array([[MASK, 1, 0x0123456789ABCDEF, MASK - 5]], dtype=np.uint64)
    words = np.empty(50, dtype=np.uint64)
    expected = _xoshiro256pp_reference(hand[0], 50)
    xoshiro.next_words(hand, 0, words)
    assert [int(w) for w in words] == expected


def test_ziggurat_tables_tile_the_density():
    """Every strip has area V; the top strip closes at x = 0 and the base strip's
    rectangle plus the tail beyond R also has area V."""
    f = lambda x: np.exp(-0.5 * x * x)  # noqa: E731
    areas = EDGES[1:256] * (f(EDGES[2:257]) - f(EDGES[1:256]))
    np.testing.assert_allclose(areas, ZIGGURAT_V, rtol=1e-9)
    tail = math.sqrt(math.pi / 2) * special.erfc(ZIGGURAT_R / math.sqrt(2))
    assert abs(ZIGGURAT_R * f(ZIGGURAT_R) + tail - ZIGGURAT_V) < 1e-12
    assert EDGES[256] == 0.0 and np.all(np.diff(EDGES[1:]) < 0)


@pytest.fixture(scope="module")
def draws():
    z = np.empty((200, 10_000))
    XoshiroNormals.from_seed(3, 200).draw(z)
    return z.ravel()


def test_moments(draws):
    N = draws.size
    assert abs(draws.mean()) <= K_SE / math.sqrt(N)
    assert abs(draws.var() - 1.0) <= K_SE * math.sqrt(2.0 / N)
    assert abs((draws**3).mean()) <= K_SE * math.sqrt(15.0 / N)
    assert abs((draws**4).mean() - 3.0) <= K_SE * math.sqrt(96.0 / N)


def test_law_ks_and_chi_square(draws):
    N = draws.size
    ks = stats.kstest(draws, "norm").statistic
    assert ks < 1.95 / math.sqrt(N)  # 1e-3 critical value
    # 400 bins of equal width on [-4, 4] catch a wrong wedge or strip table
    edges = np.linspace(-4, 4, 401)
    counts, _ = np.histogram(draws, edges)
    p = np.diff(stats.norm.cdf(edges))
    chi2 = ((counts - N * p) ** 2 / (N * p)).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-3, len(p) - 1)


def test_tail_beyond_r(draws):
    """The tail path (strip 0 beyond R ~ 3.65): its frequency and conditional law."""
    tail = np.abs(draws[np.abs(draws) > ZIGGURAT_R])
    p = 2 * stats.norm.sf(ZIGGURAT_R)
    N = draws.size
    assert abs(tail.size - N * p) <= K_SE * math.sqrt(N * p)
    cdf = lambda x: 1 - stats.norm.sf(x) / stats.norm.sf(ZIGGURAT_R)  # noqa: E731
    assert stats.kstest(tail, cdf).statistic < 1.95 / math.sqrt(tail.size)


def test_float32_is_float64_rounded():
    a, b = np.empty((4, 1000)), np.empty((4, 1000), dtype=np.float32)
    XoshiroNormals.from_seed(1, 4).draw(a)
    XoshiroNormals.from_seed(1, 4).draw(b)
    np.testing.assert_array_equal(b, a.astype(np.float32))


def test_streams_do_not_depend_on_chunks_t_or_threads():
    one = np.empty((5, 60))
    XoshiroNormals.from_seed(2, 5).draw(one)
    streams = XoshiroNormals.from_seed(2, 5)
    chunks = [np.empty((5, 25)), np.empty((5, 35))]
    for c in chunks:
        streams.draw(c)
    np.testing.assert_array_equal(np.hstack(chunks), one)
    more = np.empty((9, 60))
    XoshiroNormals.from_seed(2, 9).draw(more)
    np.testing.assert_array_equal(more[:5], one)
    if numba.config.NUMBA_NUM_THREADS >= 2:
        before = numba.get_num_threads()
        try:
            numba.set_num_threads(1)
            serial = np.empty((5, 60))
            XoshiroNormals.from_seed(2, 5).draw(serial)
        finally:
            numba.set_num_threads(before)
        np.testing.assert_array_equal(serial, one)


def test_seeding_differs_from_numpy_stream_and_between_seeds():
    a, b = np.empty((2, 100)), np.empty((2, 100))
    XoshiroNormals.from_seed(0, 2).draw(a)
    XoshiroNormals.from_seed(1, 2).draw(b)
    assert not np.array_equal(a, b) and not np.array_equal(a[0], a[1])
    assert np.all(xoshiro.seed_state(np.random.SeedSequence(0).spawn(4)).any(axis=1))


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(T, 4\)"):
        XoshiroNormals(np.zeros((3, 3), dtype=np.uint64))
    with pytest.raises(ValueError, match="3 rows"):
        XoshiroNormals.from_seed(0, 3).draw(np.empty((4, 2)))
    with pytest.raises(ValueError, match="C-contiguous"):
        XoshiroNormals.from_seed(0, 3).draw(np.empty((6, 2))[::2])
