"""Property tests for onnxzip.kernels.kmeans (1-D k-means weight sharing)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxzip.kernels import kmeans as km
from onnxzip.kernels.kmeans import kmeans_1d, kmeans_dequantize, kmeans_quantize

SETTINGS = settings(derandomize=True, deadline=None, max_examples=40)

finite32 = st.floats(-100, 100, width=32)
few_values = st.sampled_from([0.0, -1.0, 1.0, 0.25, 3.0, -7.5])
vectors = hnp.arrays(np.float32, st.integers(0, 300), elements=st.one_of(finite32, few_values))


def _assert_nearest(x, centroids, labels):
    """Each value's centroid is a nearest one (exact ties may go either way)."""
    if x.size == 0:
        return
    d = np.abs(x.astype(np.float64)[:, None] - centroids.astype(np.float64)[None, :])
    own = d[np.arange(x.size), labels]
    assert (own <= d.min(axis=1)).all()


@SETTINGS
@given(vectors, st.integers(1, 20), st.sampled_from(["linear", "kmeans++"]))
def test_kmeans_1d_assigns_nearest_sorted_centroids(x, k, init):
    c, labels = kmeans_1d(x, k, init=init, seed=3)
    n_distinct = np.unique(x).size
    assert c.dtype == np.float32 and c.size == min(k, n_distinct)
    assert (np.diff(c) >= 0).all()
    assert labels.shape == x.shape and (labels < max(c.size, 1)).all() and (labels >= 0).all()
    _assert_nearest(x, c, labels)
    if n_distinct <= k:  # fewer distinct values than clusters: exact
        np.testing.assert_array_equal(c, np.unique(x))
        np.testing.assert_array_equal(c[labels], x)
    again = kmeans_1d(x, k, init=init, seed=3)
    np.testing.assert_array_equal(again[0], c)
    np.testing.assert_array_equal(again[1], labels)


def test_kmeans_1d_edge_inputs_and_errors():
    c, lab = kmeans_1d(np.zeros(0, np.float32), 4)
    assert c.shape == (0,) and lab.shape == (0,)
    c, lab = kmeans_1d(np.full(50, 0.7, np.float32), 4)
    np.testing.assert_array_equal(c, [np.float32(0.7)])
    assert (lab == 0).all()
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="`k`"):
            kmeans_1d(np.ones(3), bad)
    with pytest.raises(ValueError, match="init"):
        kmeans_1d(np.ones(3), 2, init="random")
    with pytest.raises(ValueError, match="nan"):
        kmeans_1d(np.array([1.0, np.inf]), 2)
    with pytest.raises(ValueError, match="1-D"):
        kmeans_1d(np.ones((2, 2)), 2)


def test_kmeans_1d_lloyd_reaches_known_optimum():
    x = np.array([0.0, 0.1, 0.2, 10.0, 10.2, 20.0, 20.1, 20.2, 20.3], np.float32)
    for init in ("linear", "kmeans++"):
        c, lab = kmeans_1d(x, 3, init=init)
        np.testing.assert_allclose(c, [0.1, 10.1, 20.15], rtol=1e-6)
        np.testing.assert_array_equal(lab, [0, 0, 0, 1, 1, 2, 2, 2, 2])


def test_kmeans_1d_bucketed_path_is_exact_nearest_and_deterministic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(km._EXACT_MAX + 5000).astype(np.float32)
    x[:10] = [50.0, -40.0, 0.0, -0.0, 1e-20, -1e-20, 7.0, 7.0, 3e-3, -3e-3]  # outliers, signs
    c, labels = kmeans_1d(x, 64, init="kmeans++", seed=5)
    assert c.size == 64 and (np.diff(c) >= 0).all()
    sub = rng.choice(x.size, 20000, replace=False)
    sub = np.concatenate([np.arange(10), sub])
    _assert_nearest(x[sub], c, labels[sub])
    # every value, checked through the midpoints (exact for sorted centroids)
    mids = (c[:-1].astype(np.float64) + c[1:]) / 2
    lo = np.where(labels > 0, mids[np.maximum(labels - 1, 0)], -np.inf)
    hi = np.where(labels < c.size - 1, mids[np.minimum(labels, c.size - 2)], np.inf)
    assert ((x >= lo) & (x <= hi)).all()
    c2, labels2 = kmeans_1d(x, 64, init="kmeans++", seed=5)
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(labels, labels2)
    # a close match to the exact (sorting) path on the same data
    exact = km._EXACT_MAX
    try:
        km._EXACT_MAX = x.size
        ce, le = kmeans_1d(x, 64, init="kmeans++", seed=5)
    finally:
        km._EXACT_MAX = exact
    mse_b = np.mean((x - c[labels]) ** 2)
    mse_e = np.mean((x - ce[le]) ** 2)
    assert mse_b <= mse_e * 1.02


def test_kmeans_1d_bucketed_few_distinct_values():
    n = km._EXACT_MAX + 1
    levels = np.array([-2.0, -0.5, 0.0, 0.125, 1.0, 9.0], np.float32)
    x = levels[np.arange(n) % levels.size]
    c, lab = kmeans_1d(x, 16)
    np.testing.assert_array_equal(c, levels)
    np.testing.assert_array_equal(c[lab], x)
    # many distinct values inside very few buckets: falls back to sorting, still exact nearest
    y = (np.float32(1.0) + np.arange(n, dtype=np.float32) % 1000 * np.float32(2**-23))
    c, lab = kmeans_1d(y, 8)
    assert c.size == 8
    _assert_nearest(y[:5000], c, lab[:5000])


def test_kmeans_1d_speed_one_million():
    x = np.random.default_rng(1).standard_normal(1_000_000).astype(np.float32)
    kmeans_1d(x[:1000], 256)
    t0 = time.perf_counter()
    kmeans_1d(x, 256)
    assert time.perf_counter() - t0 < 2.0  # measured ~0.05 s; loose so it cannot flake


@st.composite
def weight_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8))
    w = draw(hnp.arrays(np.float32, shape, elements=st.one_of(finite32, few_values)))
    pruned = draw(hnp.arrays(np.bool_, shape))
    return np.where(pruned, np.float32(0), w)


@SETTINGS
@given(weight_cases(), st.integers(1, 4), st.booleans(), st.data())
def test_kmeans_quantize_properties(w, bits, keep_zero, data):
    axis = data.draw(st.one_of(st.none(), st.integers(0, w.ndim - 1)))
    outliers = data.draw(st.sampled_from([0.0, 0.0, 0.05, 0.2]))
    idx, cb, (o_idx, o_val) = kmeans_quantize(w, bits, keep_zero, axis, seed=1, outliers=outliers)
    n_codes = 2**bits
    assert idx.shape == w.shape and idx.dtype == np.uint8 and (idx < n_codes).all()
    assert cb.dtype == np.float32
    assert cb.shape == ((n_codes,) if axis is None else (w.shape[axis], n_codes))
    if keep_zero:
        assert (cb[..., 0] == 0).all()
        assert (idx[w == 0] == 0).all()  # pruned weights keep code 0 (exact zero) ...

    nonzero = np.ones(w.size, bool) if not keep_zero else (w.reshape(-1) != 0)
    assert o_idx.dtype == np.int64 and o_val.dtype == np.float32
    assert o_idx.size == min(int(np.floor(outliers * w.size + 0.5)), int(nonzero.sum()))
    assert (np.diff(o_idx) > 0).all()
    np.testing.assert_array_equal(o_val, w.reshape(-1)[o_idx])
    if o_idx.size:  # outliers are the largest magnitudes among the candidates
        rest = np.setdiff1d(np.flatnonzero(nonzero), o_idx)
        if rest.size:
            assert np.abs(o_val).min() >= np.abs(w.reshape(-1)[rest]).max()

    # nearest centroid, per tensor or per channel
    moved_w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if axis is not None else \
        w.reshape(1, -1)
    moved_i = np.moveaxis(idx, axis, 0).reshape(moved_w.shape) if axis is not None else \
        idx.reshape(1, -1)
    books = cb.reshape(-1, n_codes)
    for row_w, row_i, book in zip(moved_w, moved_i, books, strict=True):
        # ... and every weight has its nearest entry (with keep_zero: entry 0 included, so a
        # nonzero weight nearer to 0.0 than to any centroid becomes an exact zero)
        used = np.unique(row_i)
        _assert_nearest(row_w, book[: used.max() + 1], row_i.astype(np.intp))

    deq = kmeans_dequantize(idx, cb, axis, (o_idx, o_val))
    assert deq.dtype == np.float32 and deq.shape == w.shape
    if keep_zero:
        assert (deq[w == 0] == 0).all()
    np.testing.assert_array_equal(deq.reshape(-1)[o_idx], o_val)
    again = kmeans_quantize(w, bits, keep_zero, axis, seed=1, outliers=outliers)
    np.testing.assert_array_equal(again[0], idx)
    np.testing.assert_array_equal(again[1], cb)


def _sqnr(w, w_hat):
    return 10 * np.log10(np.sum(w.astype(np.float64) ** 2) / np.sum((w - w_hat) ** 2.0))


@pytest.mark.parametrize("axis", [None, 0])
def test_kmeans_quantize_sqnr_improves_with_bits_and_keeps_zeros(axis):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((32, 200)).astype(np.float32)
    w[np.abs(w) < 0.5] = 0.0  # ~38 % pruned
    scores = []
    for bits in (2, 3, 4, 6):
        idx, cb, _ = kmeans_quantize(w, bits, per_channel_axis=axis)
        deq = kmeans_dequantize(idx, cb, axis)
        assert (deq[w == 0] == 0).all()  # (a nonzero weight nearer 0.0 than any centroid may become 0)
        scores.append(_sqnr(w, deq))
    assert all(b > a + 3 for a, b in itertools.pairwise(scores)), scores


def test_kmeans_quantize_outliers_improve_error():
    rng = np.random.default_rng(5)
    w = rng.standard_normal(5000).astype(np.float32)
    w[:5] = [40, -35, 30, 25, -60]
    idx, cb, _ = kmeans_quantize(w, 3)
    base = _sqnr(w, kmeans_dequantize(idx, cb))
    idx, cb, side = kmeans_quantize(w, 3, outliers=0.001)
    np.testing.assert_array_equal(np.sort(side[0]), np.arange(5))
    assert _sqnr(w, kmeans_dequantize(idx, cb, outliers=side)) > base + 3


def test_kmeans_quantize_and_dequantize_errors():
    w = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="bits"):
        kmeans_quantize(w, 9)
    with pytest.raises(ValueError, match="bits"):
        kmeans_quantize(w, 0)
    with pytest.raises(ValueError, match="outliers"):
        kmeans_quantize(w, 4, outliers=1.0)
    with pytest.raises(ValueError, match="per_channel_axis"):
        kmeans_quantize(w, 4, per_channel_axis=2)
    idx, cb, _ = kmeans_quantize(w, 2)
    np.testing.assert_array_equal(kmeans_dequantize(idx, cb), w)
    with pytest.raises(ValueError, match="out of range"):
        kmeans_dequantize(idx + 4, cb)
    with pytest.raises(ValueError, match="per-channel codebook"):
        kmeans_dequantize(idx, cb, per_channel_axis=0)
