"""GPTQ, SparseGPT, Wanda and bias-correction kernels (onnxzip.kernels.gptq / .obs)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxzip.kernels.gptq import gptq_codebook, gptq_linear, inverse_cholesky
from onnxzip.kernels.obs import bias_delta, obs_scores, row_keep, sparsegpt, split_count, wanda_mask
from onnxzip.kernels.prune import magnitude_mask, nm_mask
from onnxzip.kernels.quant import quantize_linear

SETTINGS = settings(derandomize=True, deadline=None, max_examples=30)

H3 = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])


def out_err(w, q, h):
    """sum_r (w_r - q_r) H (w_r - q_r)^T: the output error on inputs with Gram matrix H."""
    d = np.asarray(w, dtype=np.float64) - np.asarray(q, dtype=np.float64)
    return float(np.sum((d @ h) * d))


def obq_reference(w: np.ndarray, h: np.ndarray, quant) -> np.ndarray:
    """Optimal Brain Quantization in its textbook form, one row at a time: quantize the
    first remaining weight, then move the others by delta_F = -(w_j - q_j) / [H_F^-1]_jj *
    [H_F^-1]_{:, j}, with H_F^-1 recomputed (np.linalg.inv) for the remaining set F."""
    out = np.zeros_like(w, dtype=np.float64)
    for r in range(w.shape[0]):
        row = w[r].astype(np.float64).copy()
        for j in range(w.shape[1]):
            hinv = np.linalg.inv(h[j:, j:])
            q = quant(row[j], r)
            err = row[j] - q
            row[j:] -= err / hinv[0, 0] * hinv[:, 0]
            row[j] = q
            out[r, j] = q
    return out


def correlated(k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, k)) @ rng.standard_normal((k, k)) * 0.5 + rng.standard_normal(k)
    return x, x.T @ x


# --------------------------------------------------------------------------- GPTQ, by hand


def test_gptq_reproduces_the_hand_computed_example():
    """H = [[2,1,0],[1,2,1],[0,1,2]] (H^-1 = [[3,-2,1],[-2,4,-2],[1,-2,3]] / 4), integer grid.

    Row [0.4, 1.3, -0.6]: q0 = round(0.4) = 0, error 0.4; the others move by
    -0.4 / (3/4) * (-2/4, 1/4) -> [1.5667, -0.7333]. On F = {1, 2}, H_F^-1 = [[2,-1],[-1,2]]/3:
    q1 = round(1.5667) = 2, error -0.4333; w2 moves by 0.4333 / (2/3) * (-1/3) -> -0.95,
    q2 = -1. Q = [0, 2, -1] (rounding gives [0, 1, -1]); output error 0.5 against 1.3.
    Row [-0.45, 0.2, 0.8]: q0 = 0 -> [-0.1, 0.95]; q1 = 0 -> w2 = 0.9; q2 = 1."""
    w = np.array([[0.4, 1.3, -0.6], [-0.45, 0.2, 0.8]])
    fixed = (np.ones((2, 1)), np.zeros((2, 1)))
    q, scale, zp, w_hat = gptq_linear(w, H3, 4, True, params=fixed, percdamp=0.0)
    assert q.tolist() == [[0, 2, -1], [0, 0, 1]]
    assert q.dtype == np.int8 and scale.tolist() == [[1.0], [1.0]] and zp.tolist() == [[0], [0]]
    np.testing.assert_array_equal(w_hat, q.astype(np.float32))
    assert out_err(w[:1], q[:1], H3) == pytest.approx(0.5)
    assert out_err(w[:1], np.round(w[:1]), H3) == pytest.approx(1.3)
    # the textbook formula agrees
    np.testing.assert_array_equal(obq_reference(w, H3, lambda v, r: np.round(v)), q)


def test_gptq_codebook_reproduces_the_hand_computed_example():
    w = np.array([[0.4, 1.3, -0.6]])
    codes, w_hat = gptq_codebook(w, H3, np.array([-1.0, 0.0, 1.0, 2.0]), percdamp=0.0)
    assert codes.tolist() == [[1, 3, 0]]
    np.testing.assert_array_equal(w_hat, [[0.0, 2.0, -1.0]])


@settings(derandomize=True, deadline=None, max_examples=25)
@given(st.integers(0, 2**31), st.integers(1, 6), st.integers(1, 9))
def test_gptq_equals_textbook_obq_with_fixed_scales(seed, r, k):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((r, k))
    a = rng.standard_normal((k + 3, k))
    h = a.T @ a + 0.1 * np.eye(k)
    scale = rng.uniform(0.2, 0.6, (r, 1))
    _, _, _, w_hat = gptq_linear(w, h, 4, True, params=(scale, np.zeros((r, 1))), percdamp=0.0, lazy_batch=3)
    ref = obq_reference(w, h, lambda v, i: np.clip(np.round(v / scale[i, 0]), -7, 7) * scale[i, 0])
    np.testing.assert_allclose(w_hat, ref, rtol=1e-5, atol=1e-6)


def test_inverse_cholesky_is_upper_and_factors_the_inverse():
    _, h = correlated(12, 40, 3)
    u = inverse_cholesky(h)
    np.testing.assert_array_equal(u, np.triu(u))
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(h), rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- GPTQ properties


@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from([None, 4, 8]), st.booleans(), st.booleans())
def test_gptq_with_a_diagonal_hessian_is_rounding(seed, block, symmetric, act_order):
    """No coupling between inputs: nothing to compensate, so GPTQ rounds like quantize_linear
    (per output row, or per row and block of the reduction)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((5, 16))
    h = np.diag(rng.uniform(0.5, 3.0, 16))
    groups = None if block is None else np.arange(16) // block
    q, s, z, _ = gptq_linear(w, h, 4, symmetric, groups, act_order=act_order)
    q_ref, s_ref, z_ref = quantize_linear(w, 4, symmetric, axis=0 if block is None else 1, block_size=block)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref.reshape(5, -1))
    np.testing.assert_array_equal(z, z_ref.reshape(5, -1))


def test_gptq_lowers_the_output_error_of_rounding():
    _, h = correlated(48, 500, 1)
    w = np.random.default_rng(2).standard_normal((24, 48))
    for block in (None, 16):
        groups = None if block is None else np.arange(48) // block
        q_ref, s_ref, _ = quantize_linear(w, 4, True, axis=0 if block is None else 1, block_size=block)
        rtn = (q_ref * np.repeat(s_ref.reshape(24, -1), block or 48, axis=1)).astype(np.float64)
        for act_order in (False, True):
            _, _, _, w_hat = gptq_linear(w, h, 4, True, groups, act_order=act_order)
            assert out_err(w, w_hat, h) < 0.7 * out_err(w, rtn, h)


def test_gptq_lazy_batch_changes_nothing():
    _, h = correlated(40, 200, 4)
    w = np.random.default_rng(5).standard_normal((6, 40))
    fixed = (np.full((6, 1), 0.3), np.zeros((6, 1)))
    runs = [gptq_linear(w, h, 4, True, params=fixed, lazy_batch=b) for b in (1, 7, 128)]
    for q, _, _, w_hat in runs[1:]:
        np.testing.assert_array_equal(q, runs[0][0])
        np.testing.assert_allclose(w_hat, runs[0][3])


def test_gptq_dynamic_groups_take_their_scale_from_the_updated_weights():
    _, h = correlated(32, 200, 6)
    w = np.random.default_rng(7).standard_normal((4, 32))
    q, s, _, w_hat = gptq_linear(w, h, 4, True, np.arange(32) // 16)
    _, s_first, _ = quantize_linear(w[:, :16], 4, True, axis=0)
    np.testing.assert_array_equal(s[:, 0], s_first)  # the first group sees the original weights
    assert s.shape == (4, 2) and q.min() >= -7 and q.max() <= 7
    np.testing.assert_allclose(w_hat, q * np.repeat(s, 16, axis=1), rtol=1e-6)


@SETTINGS
@given(st.integers(0, 2**31), st.booleans())
def test_gptq_codebook_keeps_zeros_and_outliers(seed, per_row):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 20))
    w[rng.random(w.shape) < 0.4] = 0.0
    a = rng.standard_normal((30, 20))
    h = a.T @ a
    cents = np.sort(rng.standard_normal((6 if per_row else 1, 7)), axis=1)
    book = np.concatenate([np.zeros((cents.shape[0], 1)), cents], axis=1)
    keep = np.zeros(w.shape, dtype=bool)
    keep[0, 3] = keep[5, 19] = True
    keep &= w != 0
    codes, w_hat = gptq_codebook(w, h, book if per_row else book[0], zero_code=True, zero_mask=w == 0, keep_mask=keep)
    assert codes.min() >= 0 and codes.max() < 8
    assert (codes[w == 0] == 0).all() and (w_hat[w == 0] == 0).all()
    assert (codes[w != 0] != 0).all()  # code 0 is reserved for the exact zeros
    looked_up = np.take_along_axis(book, codes, axis=1) if per_row else book[0][codes]
    np.testing.assert_array_equal(w_hat[~keep], looked_up[~keep].astype(np.float32))


def test_gptq_codebook_with_diagonal_hessian_is_nearest_centroid():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((5, 30))
    book = np.linspace(-2, 2, 9)
    codes, _ = gptq_codebook(w, np.diag(rng.uniform(1, 2, 30)), book)
    np.testing.assert_array_equal(codes, np.abs(w[..., None] - book).argmin(-1))


def test_gptq_rejects_bad_input():
    with pytest.raises(ValueError, match="`h` must be"):
        gptq_linear(np.zeros((2, 3)), np.eye(4), 4, True)
    with pytest.raises(ValueError, match="ascending"):
        gptq_codebook(np.zeros((2, 3)), np.eye(3), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="percdamp"):
        gptq_linear(np.zeros((2, 3)), np.eye(3), 4, True, percdamp=-1)


# --------------------------------------------------------------------------- pruning


def test_split_count_adds_up():
    counts = split_count(0.5, np.array([9] * 64))
    assert counts.sum() == 288 and set(counts) == {4, 5}
    assert split_count(0.3, np.array([7, 0, 13])).sum() == round(0.3 * 20)


@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from([0.25, 0.5, 0.7]))
def test_sparsegpt_prunes_exactly_and_keeps_survivors_updated(seed, sparsity):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((7, 45))
    _, h = correlated(45, 90, seed % 1000)
    new, keep = sparsegpt(w, h, sparsity=sparsity, lazy_batch=16)
    assert int((~keep).sum()) == int(np.floor(sparsity * w.size + 0.5))
    assert (new[~keep] == 0).all()
    assert out_err(w, new, h) <= out_err(w, w * magnitude_mask(w, sparsity), h)


def test_sparsegpt_with_diagonal_hessian_prunes_by_the_obs_score():
    """No coupling, so no update: the mask is the layer's smallest w^2 H_jj (= w^2 / [H^-1]_jj)."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal((6, 40))
    d = rng.uniform(0.1, 5.0, 40)
    new, keep = sparsegpt(w, np.diag(d), sparsity=0.5, percdamp=0.0, lazy_batch=8)
    np.testing.assert_array_equal(keep, magnitude_mask(w * w * d, 0.5))
    np.testing.assert_allclose(new, w * keep)
    np.testing.assert_allclose(obs_scores(w, np.diag(d), 0.0), w * w * d)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_sparsegpt_n_m_pattern(n, m):
    rng = np.random.default_rng(10)
    w = rng.standard_normal((5, 34))  # 34 = 8 groups of 4 + 2 dense (for m=4)
    _, h = correlated(34, 80, 11)
    new, keep = sparsegpt(w, h, nm=(n, m))
    full = 34 // m * m
    groups = keep[:, :full].reshape(5, -1, m)
    assert (groups.sum(axis=2) == n).all()
    assert keep[:, full:].all()
    ref, _ = nm_mask(w, n, m, axis=1)
    assert out_err(w, new, h) < out_err(w, w * ref, h)


def test_sparsegpt_n_m_along_conv_input_channels():
    """A conv weight [O, C, kh, kw] as [O, C*kh*kw]: visiting the columns offset-major with
    segments of C puts every N:M group along C, where nm_mask puts it."""
    rng = np.random.default_rng(12)
    o, c, kk = 4, 8, 9
    w = rng.standard_normal((o, c * kk))
    _, h = correlated(c * kk, 400, 13)
    order = np.arange(c * kk).reshape(c, kk).T.reshape(-1)
    _, keep = sparsegpt(w, h, nm=(2, 4), segment=c, order=order)
    per_offset = keep.reshape(o, c // 4, 4, kk)
    assert (per_offset.sum(axis=2) == 2).all()


def test_wanda_compares_within_rows():
    rng = np.random.default_rng(14)
    w = rng.standard_normal((6, 11))
    d = rng.uniform(0.1, 4.0, 11)
    keep = wanda_mask(w, d, 0.5, group="row")
    assert int((~keep).sum()) == round(0.5 * 66)
    assert set((~keep).sum(axis=1)) <= {5, 6}  # each row loses its own share
    score = np.abs(w) * np.sqrt(d)
    for r in range(6):
        assert score[r][keep[r]].min() >= score[r][~keep[r]].max()
    # equal input norms: per-row magnitude
    np.testing.assert_array_equal(wanda_mask(w, np.ones(11), 0.5, group="row"), row_keep(np.abs(w), 0.5))


def test_wanda_compares_across_the_layer_by_default():
    rng = np.random.default_rng(16)
    w = rng.standard_normal((6, 11))
    d = rng.uniform(0.1, 4.0, 11)
    keep = wanda_mask(w, d, 0.4)
    assert int((~keep).sum()) == round(0.4 * 66)
    score = np.abs(w) * np.sqrt(d)
    assert score[keep].min() >= score[~keep].max()  # one threshold for the whole tensor
    assert len(set((~keep).sum(axis=1))) > 1  # rows lose different shares
    # equal input norms: magnitude with scope layer, ties included
    w[0, :3] = w[1, 5] = 0.25
    np.testing.assert_array_equal(wanda_mask(w, np.ones(11), 0.5), magnitude_mask(w, 0.5))
    with pytest.raises(ValueError, match="valid choices"):
        wanda_mask(w, d, 0.5, group="column")


def test_bias_delta_is_the_mean_output_shift():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((200, 9)) + 1.5
    w = rng.standard_normal((4, 9))
    w2 = w * (rng.random(w.shape) < 0.5)
    d = bias_delta(w, w2, x.mean(axis=0))
    np.testing.assert_allclose((x @ w.T).mean(axis=0), (x @ w2.T).mean(axis=0) + d, rtol=1e-10)
