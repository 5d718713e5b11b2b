"""Property tests for onnxzip.kernels.svd (low-rank factorization)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxzip.kernels.svd import (
    rank_for_energy,
    rank_from_ratio,
    round_rank,
    singular_values,
    truncated_svd,
    weighted_svd,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=40)


@st.composite
def matrices(draw):
    k = draw(st.integers(1, 24))
    n = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**31))
    decay = draw(st.sampled_from([0.0, 0.2, 1.0]))  # flat, mild and steep spectra
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)) @ np.diag(np.exp(-decay * np.arange(n)))
    rank = draw(st.integers(1, min(k, n)))
    return w.astype(np.float32), rank


@SETTINGS
@given(matrices())
def test_truncated_svd_residual_equals_dropped_energy(case):
    w, r = case
    a, b = truncated_svd(w, r)
    assert a.shape == (w.shape[0], r) and b.shape == (r, w.shape[1])
    assert a.dtype == np.float32 and b.dtype == np.float32
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    dropped = float(np.sum(s[r:] ** 2))
    resid = float(np.sum((w.astype(np.float64) - a.astype(np.float64) @ b) ** 2))
    total = float(np.sum(s**2))
    # rtol 1e-4 on the dropped energy, plus float32 rounding of the factors
    assert abs(resid - dropped) <= 1e-4 * dropped + 1e-9 * total + 1e-30
    # singular values split evenly: column norms of A equal row norms of B
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=1),
                               rtol=1e-4, atol=1e-6)
    # deterministic signs: the largest-|.| entry of each A column is positive
    cols = np.arange(r)
    assert (a[np.argmax(np.abs(a), axis=0), cols] >= 0).all()
    a2, b2 = truncated_svd(w, r)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)


def test_truncated_svd_sign_convention_is_stable_under_input_sign():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 5)).astype(np.float32)
    a, b = truncated_svd(w, 3)
    a_neg, b_neg = truncated_svd(-w, 3)
    # W -> -W flips exactly one factor: with A pinned positive, it is B
    np.testing.assert_allclose(a_neg, a, atol=1e-5)
    np.testing.assert_allclose(b_neg, -b, atol=1e-5)


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(0, 1e3)),
       st.floats(1e-6, 1.0))
def test_rank_for_energy_is_minimal(s, energy):
    r = rank_for_energy(s, energy)
    sq = np.sort(s)[::-1] ** 2
    cum = np.cumsum(sq)
    assert 1 <= r <= s.size
    if cum[-1] == 0:
        assert r == 1
        return
    assert cum[r - 1] >= energy * cum[-1]
    if r > 1:
        assert cum[r - 2] < energy * cum[-1]


def test_rank_for_energy_examples_and_errors():
    s = np.array([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.65) == 2
    assert rank_for_energy(s, 1.0) == 3
    assert rank_for_energy(s[::-1], 0.65) == 2  # order does not matter
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="energy"):
            rank_for_energy(s, bad)
    with pytest.raises(ValueError, match="non-negative"):
        rank_for_energy(np.array([1.0, -1.0]), 0.5)


def test_rank_from_ratio_and_round_rank():
    assert rank_from_ratio((512, 512), 0.5) == 128  # 128 * 1024 = half of 512 * 512
    assert rank_from_ratio((100, 10), 0.5) == 4
    assert rank_from_ratio((100, 10), 10.0) == 10
    assert rank_from_ratio((3, 3), 1e-6) == 1
    with pytest.raises(ValueError, match="ratio"):
        rank_from_ratio((3, 3), 0)
    assert round_rank(33, 16, 512) == 48
    assert round_rank(48, 16, 512) == 48
    assert round_rank(1, 8, 100) == 8
    assert round_rank(97, 8, 100) == 100
    assert round_rank(3, 8, 5) == 5
    with pytest.raises(ValueError, match="round_to"):
        round_rank(3, 0, 5)


def _output_err(x, w, a, b):
    return float(np.sum((x @ w.astype(np.float64) - x @ (a.astype(np.float64) @ b)) ** 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_svd_beats_plain_svd_on_anisotropic_inputs(seed):
    rng = np.random.default_rng(seed)
    k, n, m, r = 32, 24, 2000, 6
    w = rng.standard_normal((k, n)).astype(np.float32)
    mix = rng.standard_normal((k, k)) * np.exp(-0.3 * np.arange(k))  # strongly correlated
    x = rng.standard_normal((m, k)) @ mix.T
    gram = x.T @ x
    a_w, b_w = weighted_svd(w, gram, r)
    a_p, b_p = truncated_svd(w, r)
    assert a_w.shape == (k, r) and b_w.shape == (r, n) and a_w.dtype == np.float32
    e_w, e_p = _output_err(x, w, a_w, b_w), _output_err(x, w, a_p, b_p)
    assert e_w < 0.9 * e_p, (e_w, e_p)


def test_weighted_svd_with_isotropic_gram_is_plain_svd():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((10, 7)).astype(np.float32)
    a, b = weighted_svd(w, 5.0 * np.eye(10), 3)
    a_p, b_p = truncated_svd(w, 3)
    np.testing.assert_allclose(a @ b, a_p @ b_p, atol=1e-5)


def test_weighted_svd_errors():
    w = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="gram"):
        weighted_svd(w, np.eye(3), 1)
    with pytest.raises(ValueError, match="positive definite"):
        weighted_svd(w, -np.eye(4), 1, damp=0.0)
    with pytest.raises(ValueError, match="rank"):
        weighted_svd(w, np.eye(4), 4)
    with pytest.raises(ValueError, match="rank"):
        truncated_svd(w, 0)
    with pytest.raises(ValueError, match="2-D"):
        truncated_svd(np.ones(3), 1)
    np.testing.assert_allclose(singular_values(np.diag([3.0, 1.0, 2.0])), [3.0, 2.0, 1.0])
