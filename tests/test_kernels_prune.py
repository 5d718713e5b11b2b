"""Property tests for onnxzip.kernels.prune (pruning masks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxzip.kernels.prune import (
    channel_scores,
    channels_to_keep,
    global_threshold_masks,
    magnitude_mask,
    nm_mask,
    relative_error,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60)

# Few distinct magnitudes on purpose: ties at the threshold are the interesting case.
tied_floats = st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0, 3.5, -3.5])
weights = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9),
                     elements=tied_floats)
fractions = st.floats(0.0, 1.0)


def _reference_prune(a_flat: np.ndarray, k: int) -> np.ndarray:
    """Stable ascending sort by |w| (ties by flat index); the first k are pruned."""
    order = np.argsort(np.abs(a_flat), kind="stable")
    prune = np.zeros(a_flat.size, dtype=bool)
    prune[order[:k]] = True
    return prune


def _count(sparsity: float, n: int) -> int:
    return min(n, math.floor(sparsity * n + 0.5))


@SETTINGS
@given(weights, fractions)
def test_magnitude_mask_matches_stable_sort_reference(w, sparsity):
    mask = magnitude_mask(w, sparsity)
    assert mask.shape == w.shape and mask.dtype == np.bool_
    k = _count(sparsity, w.size)
    assert int((~mask).sum()) == k
    np.testing.assert_array_equal(~mask.reshape(-1), _reference_prune(w.reshape(-1), k))


def test_magnitude_mask_exact_count_on_large_continuous_tensor():
    w = np.random.default_rng(0).standard_normal((300, 701)).astype(np.float32)
    mask = magnitude_mask(w, 0.37)
    assert int((~mask).sum()) == round(0.37 * w.size)
    assert np.abs(w[~mask]).max() <= np.abs(w[mask]).min()


def test_magnitude_mask_extremes_and_errors():
    w = np.arange(-5, 5, dtype=np.float32)
    assert magnitude_mask(w, 0.0).all()
    assert not magnitude_mask(w, 1.0).any()
    assert magnitude_mask(np.zeros(0, np.float32), 0.5).shape == (0,)
    for bad in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(ValueError, match="sparsity"):
            magnitude_mask(w, bad)
    with pytest.raises(ValueError, match="nan"):
        magnitude_mask(np.array([1.0, np.nan]), 0.5)


def _reference_global(ws, k, caps):
    """Greedy over the global order (|w|, tensor, index), skipping tensors at their cap."""
    keys = [(abs(float(v)), t, i) for t, w in enumerate(ws) for i, v in enumerate(w.reshape(-1))]
    keys.sort()
    pruned = [np.zeros(w.size, dtype=bool) for w in ws]
    left = k
    for _, t, i in keys:
        if left == 0:
            break
        if pruned[t].sum() < caps[t]:
            pruned[t][i] = True
            left -= 1
    return pruned


@SETTINGS
@given(st.lists(weights, min_size=1, max_size=4), fractions,
       st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_global_threshold_masks_match_greedy_reference(ws, sparsity, cap):
    sizes = [w.size for w in ws]
    caps = sizes if cap is None else [min(n, math.floor(cap * n + 1e-9)) for n in sizes]
    k = _count(sparsity, sum(sizes))
    if k > sum(caps):
        with pytest.warns(RuntimeWarning, match="unreachable"):
            masks = global_threshold_masks(ws, sparsity, cap)
        assert [int((~m).sum()) for m in masks] == caps
        with pytest.raises(ValueError, match="unreachable"):
            global_threshold_masks(ws, sparsity, cap, strict=True)
        return
    masks = global_threshold_masks(ws, sparsity, cap)
    assert [m.shape for m in masks] == [w.shape for w in ws]
    assert sum(int((~m).sum()) for m in masks) == k
    for m, c in zip(masks, caps, strict=True):
        assert int((~m).sum()) <= c
    for m, ref in zip(masks, _reference_global(ws, k, caps), strict=True):
        np.testing.assert_array_equal(~m.reshape(-1), ref)


def test_global_threshold_equals_magnitude_mask_on_concatenation():
    rng = np.random.default_rng(1)
    ws = [rng.standard_normal(s).astype(np.float32) * scale
          for s, scale in (((30, 20), 1.0), ((50,), 0.1), ((7, 3, 3), 5.0))]
    masks = global_threshold_masks(ws, 0.6)
    flat = np.concatenate([w.reshape(-1) for w in ws])
    np.testing.assert_array_equal(np.concatenate([m.reshape(-1) for m in masks]),
                                  magnitude_mask(flat, 0.6))
    # the small-magnitude tensor is pruned hardest; the cap redistributes to the others
    capped = global_threshold_masks(ws, 0.6, max_layer_sparsity=0.7)
    assert (~capped[1]).mean() <= 0.7
    assert sum(int((~m).sum()) for m in capped) == round(0.6 * flat.size)
    assert global_threshold_masks([], 0.5) == []


nm_cases = st.tuples(st.integers(1, 20), st.integers(0, 20)).filter(lambda t: t[1] <= t[0])


@SETTINGS
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=11),
                  elements=tied_floats),
       nm_cases, st.integers(-3, 2))
def test_nm_mask_keeps_n_largest_per_group(w, mn, axis):
    m, n = mn
    axis = axis % w.ndim
    mask, rem = nm_mask(w, n, m, axis)
    assert mask.shape == w.shape
    length = w.shape[axis]
    assert rem == length % m
    moved_w = np.moveaxis(w, axis, -1)
    moved_m = np.moveaxis(mask, axis, -1)
    full = length - rem
    assert moved_m[..., full:].all()  # the remainder stays dense
    gw = moved_w[..., :full].reshape(-1, m)
    gm = moved_m[..., :full].reshape(-1, m)
    assert (gm.sum(axis=1) == n).all()
    for row_w, row_m in zip(gw, gm, strict=True):
        np.testing.assert_array_equal(~row_m, _reference_prune(row_w, m - n))


def test_nm_mask_2_4_and_errors():
    w = np.array([[0.1, -0.9, 0.5, 0.2, 3.0, 1.0, -2.0, 0.0, 7.0]], dtype=np.float32)
    mask, rem = nm_mask(w, 2, 4, axis=1)
    assert rem == 1
    np.testing.assert_array_equal(mask[0], [False, True, True, False, True, False, True, False,
                                            True])
    with pytest.raises(ValueError, match="n:m"):
        nm_mask(w, 5, 4, 1)
    with pytest.raises(ValueError, match="axis"):
        nm_mask(w, 2, 4, 2)


def test_channel_scores_l1_l2():
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 10
    np.testing.assert_allclose(channel_scores(w, 1, "l1"), np.abs(w).sum(axis=(0, 2)))
    np.testing.assert_allclose(channel_scores(w, -1, "l2"),
                               np.sqrt((w.astype(np.float64) ** 2).sum(axis=(0, 1))))
    with pytest.raises(ValueError, match="criterion"):
        channel_scores(w, 0, "l3")


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(0, 40), elements=st.sampled_from([0.0, 1.0, 2.0, 5.0])),
       fractions, st.integers(1, 8))
def test_channels_to_keep_count_rounding_and_order(scores, sparsity, round_to):
    keep = channels_to_keep(scores, sparsity, round_to)
    c = scores.size
    if c == 0:
        assert keep.size == 0
        return
    assert keep.dtype == np.int64 and (np.diff(keep) > 0).all()
    base = c - _count(sparsity, c)
    expect = min(-(-base // round_to) * round_to, c)
    assert keep.size == max(expect, min(round_to, c), 1)
    assert keep.size == c or keep.size % round_to == 0
    removed = np.setdiff1d(np.arange(c), keep)
    if removed.size:
        assert scores[removed].max() <= scores[keep].min()
        # ties: among equal scores the lower index goes first
        t = scores[removed].max()
        assert removed[scores[removed] == t].max() < keep[scores[keep] == t].min(initial=c)


def test_relative_error():
    w = np.array([3.0, 4.0], dtype=np.float32)
    assert relative_error(w, w) == 0.0
    assert relative_error(w, np.zeros(2)) == pytest.approx(1.0)
    assert relative_error(w, np.array([3.0, 0.0])) == pytest.approx(0.8)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.zeros(3), np.ones(3)) == math.inf
    with pytest.raises(ValueError, match="shape"):
        relative_error(w, np.zeros(3))
