"""1-D k-means weight sharing (Han et al., Deep Compression, section 3).

In one dimension Lloyd's algorithm needs no distance matrix: with sorted centroids c, the
cluster of x is the number of midpoints (c_j + c_{j+1}) / 2 below x, so on sorted data every
cluster is a contiguous run and its mean comes from two prefix-sum lookups. An iteration costs
O(k log n) once the data is sorted (or bucketed), independent of n.

Large inputs (more than ``_EXACT_MAX`` values) are not sorted: they are bucketed by the top 20
bits of an order-preserving integer view of float32 (bucket width ~2^-11 relative to the value,
so outliers cost no resolution), and Lloyd runs on the bucket means weighted by their counts.
The final assignment is always exact nearest-centroid, bucketed or not.

All clustering is done in float32 precision; centroids and codebooks are float32.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kmeans_1d", "kmeans_dequantize", "kmeans_quantize"]

_EXACT_MAX = 1 << 18
_BUCKET_SHIFT = 12  # 32 - 12 = 20 key bits -> 2^20 buckets
_N_BUCKETS = 1 << (32 - _BUCKET_SHIFT)
_INITS = ("linear", "kmeans++")
_SEARCH_CHUNK = 1 << 22  # needles per batched binary-search chunk (bounds temporaries)


# ---------------------------------------------------------------------------------------------
# helpers


def _f32_keys(x: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 view of float32 values (x < y  <=>  key(x) < key(y), -0 < +0)."""
    u = x.view(np.uint32)
    mask = (x.view(np.int32) >> 31).view(np.uint32)  # all ones for negatives, else zero
    mask |= np.uint32(0x80000000)
    return u ^ mask


def _keys_to_f32(k: np.ndarray) -> np.ndarray:
    k = k.astype(np.uint32)
    u = np.where(k >> 31 != 0, k ^ np.uint32(0x80000000), ~k)
    return u.view(np.float32)


def _row_searchsorted(hay: np.ndarray, needles: np.ndarray, rows: np.ndarray | None = None,
                      side: str = "left"):
    """For each r: number of entries of sorted ``hay[rows[r]]`` below ``needles[r]`` (strictly
    below for side="left", at or below for side="right").

    A batched np.searchsorted: a vectorized binary search over all rows at once.
    """
    n_rows, p = hay.shape
    if rows is None:
        rows = np.arange(n_rows)
    m = needles.shape[1]
    out = np.zeros((rows.size, m), dtype=np.intp)
    if p == 0 or m == 0 or rows.size == 0:
        return out
    if rows.size == 1:
        out[0] = np.searchsorted(hay[rows[0]], needles[0], side=side)
        return out
    flat = hay.reshape(-1)
    steps = int(p).bit_length()
    chunk = max(1, _SEARCH_CHUNK // m)
    for s in range(0, rows.size, chunk):
        nd = needles[s: s + chunk]
        base = (rows[s: s + chunk] * p)[:, None]
        lo = np.zeros(nd.shape, dtype=np.intp)
        hi = np.full(nd.shape, p, dtype=np.intp)
        for _ in range(steps):
            mid = (lo + hi) >> 1
            live = lo < hi
            probe = flat[base + np.minimum(mid, p - 1)]
            right = probe < nd if side == "left" else probe <= nd
            right &= live
            np.copyto(lo, mid + 1, where=right)
            np.copyto(hi, mid, where=live & ~right)
        out[s: s + chunk] = lo
    return out


def _check_common(k: int, init: str, max_iter: int, tol: float) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be a positive integer, got `{k!r}`")
    if init not in _INITS:
        raise ValueError(f"unknown init `{init}`; valid choices: `linear`, `kmeans++`")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"`max_iter` must be a non-negative integer, got `{max_iter!r}`")
    if not (isinstance(tol, (int, float, np.floating)) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"`tol` must be a finite number >= 0, got `{tol!r}`")


def _as_finite_f32(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"`{name}` must be a real numeric array, got dtype `{x.dtype}`")
    with np.errstate(over="ignore"):
        x32 = np.asarray(x, dtype=np.float32, order="C")
    if x32.size and not np.isfinite(x32).all():
        raise ValueError(f"`{name}` contains nan or inf (or values beyond float32)")
    return x32


# ---------------------------------------------------------------------------------------------
# the batched core: rows of sorted (optionally weighted) points


def _kmeans_rows(vals, n_valid, k, spre, wpre, init, rng, max_iter, tol):
    """Lloyd on R independent rows. Returns float32 centroids (R, k), sorted, and k' per row.

    vals: (R, P) float64, each row sorted, valid entries first, +inf padding after n_valid[r].
    spre: (R, P+1) prefix sums of weight * value; wpre: (R, P+1) prefix weights or None
    (unit weights, so the prefix weight is the position). Rows with at most k distinct values
    get exactly those values (k' = that count); the unused tail repeats the last centroid.
    """
    n_rows, p = vals.shape
    cent = np.zeros((n_rows, k), dtype=np.float64)
    kk = np.zeros(n_rows, dtype=np.int64)
    if n_rows == 0:
        return cent.astype(np.float32), kk
    col = np.arange(p)
    valid = col[None, :] < n_valid[:, None]
    first = valid.copy()
    if p > 1:
        first[:, 1:] &= vals[:, 1:] != vals[:, :-1]
    n_distinct = first.sum(axis=1)

    few = np.flatnonzero(n_distinct <= k)
    if few.size:
        rank = np.cumsum(first[few], axis=1) - 1
        rr, ii = np.nonzero(first[few])
        cent[few[rr], rank[rr, ii]] = vals[few[rr], ii]
        kk[few] = n_distinct[few]
        for_pad = few[(n_distinct[few] > 0) & (n_distinct[few] < k)]
        if for_pad.size:
            last = cent[for_pad, n_distinct[for_pad] - 1]
            fill = np.arange(k)[None, :] >= n_distinct[for_pad][:, None]
            cent[for_pad] = np.where(fill, last[:, None], cent[for_pad])

    rows = np.flatnonzero(n_distinct > k)
    if rows.size:
        kk[rows] = k
        lo_v = vals[rows, 0]
        hi_v = vals[rows, n_valid[rows] - 1]
        c = _init_rows(vals, n_valid, wpre, rows, k, init, rng, lo_v, hi_v)
        cent[rows] = _lloyd_rows(vals, n_valid, spre, wpre, rows, c, max_iter, tol, hi_v - lo_v)

    c32 = cent.astype(np.float32)
    c32.sort(axis=1)
    return c32, kk


def _init_rows(vals, n_valid, wpre, rows, k, init, rng, lo_v, hi_v):
    if init == "linear" or k == 1:
        if k == 1:
            return ((lo_v + hi_v) * 0.5)[:, None]
        t = np.linspace(0.0, 1.0, k)[None, :]
        return lo_v[:, None] + (hi_v - lo_v)[:, None] * t

    # k-means++ (Arthur & Vassilvitskii): D^2 sampling over every point of a row when rows are
    # short, else over a random sample of each row drawn by weight.
    nv = n_valid[rows]
    p = vals.shape[1]
    cap = max(4 * k, 16384 if rows.size == 1 else 1024)
    r_idx = np.arange(rows.size)
    c = np.empty((rows.size, k), dtype=np.float64)
    if wpre is None and p <= cap:
        first = np.minimum((rng.random(rows.size) * nv).astype(np.intp), nv - 1)
        c[:, 0] = vals[rows, first]
        # padding sits on the first centroid: distance 0, so it is never drawn
        sample = np.where(np.arange(p)[None, :] < nv[:, None], vals[rows], c[:, :1])
    else:
        s = int(min(int(nv.max()), cap))
        u = rng.random((rows.size, s))
        if wpre is None:
            pos = np.minimum((u * nv[:, None]).astype(np.intp), (nv - 1)[:, None])
        else:
            pos = _weighted_positions(wpre, rows, u * wpre[rows, nv][:, None], nv)
        sample = vals[rows[:, None], pos]
        c[:, 0] = sample[:, 0]
    # D^2 sampling needs prefix sums of the distances at every step; a full cumsum per step is
    # the bottleneck, so keep per-block sums and only scan inside the chosen block.
    blk = 64
    width = sample.shape[1]
    n_blk = -(-width // blk)
    if n_blk * blk != width:
        sample = np.concatenate(
            [sample, np.repeat(c[:, :1], n_blk * blk - width, axis=1)], axis=1)
    d2 = np.square(sample - c[:, :1])
    sums = d2.reshape(rows.size, n_blk, blk).sum(axis=2)
    draws = rng.random((rows.size, k))
    tmp = np.empty_like(d2)
    for j in range(1, k):
        cum = np.cumsum(sums, axis=1)
        total = cum[:, -1]
        target = draws[:, j] * total
        b = np.minimum(_row_searchsorted(cum, target[:, None], side="right")[:, 0], n_blk - 1)
        rest = target - (cum[r_idx, b] - sums[r_idx, b])
        inner = np.cumsum(d2.reshape(rows.size, n_blk, blk)[r_idx, b], axis=1)
        pick = b * blk + np.minimum((inner <= rest[:, None]).sum(axis=1), blk - 1)
        # all distances zero (fewer distinct sample values than k): any point will do
        pick = np.where(total > 0, pick, 0)
        c[:, j] = sample[r_idx, pick]
        np.subtract(sample, c[:, j: j + 1], out=tmp)
        np.square(tmp, out=tmp)
        np.minimum(d2, tmp, out=d2)
        d2.reshape(rows.size, n_blk, blk).sum(axis=2, out=sums)
    c.sort(axis=1)
    return c


def _weighted_positions(wpre, rows, targets, nv):
    """Index i with wpre[r, i] <= target < wpre[r, i + 1] (sampling points by weight)."""
    out = np.empty(targets.shape, dtype=np.intp)
    for j, r in enumerate(rows):  # weighted rows only come from the 1-row bucketed path
        out[j] = np.searchsorted(wpre[r, 1: nv[j] + 1], targets[j], side="right")
    return np.minimum(out, (nv - 1)[:, None])


def _lloyd_rows(vals, n_valid, spre, wpre, rows, c, max_iter, tol, span):
    k = c.shape[1]
    if k == 1:
        w_tot = wpre[rows, n_valid[rows]] if wpre is not None else n_valid[rows]
        return (spre[rows, n_valid[rows]] / w_tot)[:, None]
    c = c.copy()
    prev = np.full((rows.size, k - 1), -1, dtype=np.intp)
    active = np.arange(rows.size)
    for _ in range(max_iter):
        if active.size == 0:
            break
        r = rows[active]
        ca = c[active]
        mids = (ca[:, :-1] + ca[:, 1:]) * 0.5
        b = _row_searchsorted(vals, mids, r)
        lo = np.concatenate([np.zeros((r.size, 1), dtype=np.intp), b], axis=1)
        hi = np.concatenate([b, n_valid[r][:, None]], axis=1)
        rr = r[:, None]
        if wpre is None:
            cnt = (hi - lo).astype(np.float64)
        else:
            cnt = wpre[rr, hi] - wpre[rr, lo]
        sums = spre[rr, hi] - spre[rr, lo]
        new = np.where(cnt > 0, sums / np.maximum(cnt, 1e-300), ca)
        empty_rows = np.flatnonzero((cnt <= 0).any(axis=1))
        for e in empty_rows:
            _reseed(new[e], cnt[e], lo[e], hi[e], vals[r[e]])
        if empty_rows.size:
            new.sort(axis=1)
        shift = np.abs(new - ca).max(axis=1)
        done = (b == prev[active]).all(axis=1) | (shift <= tol * span[active])
        c[active] = new
        prev[active] = b
        active = active[~done]
    return c


def _reseed(c, cnt, lo, hi, row_vals):
    """Move empty clusters onto the points farthest from their centroid (cluster endpoints)."""
    empty = np.flatnonzero(cnt <= 0)
    full = np.flatnonzero(cnt > 0)
    cand = np.concatenate([row_vals[lo[full]], row_vals[hi[full] - 1]])
    dist = np.abs(cand - np.concatenate([c[full], c[full]]))
    order = np.argsort(-dist, kind="stable")
    order = order[dist[order] > 0]
    if order.size == 0:
        return
    _, first = np.unique(cand[order], return_index=True)
    picks = cand[order[np.sort(first)]][: empty.size]
    c[empty[: picks.size]] = picks


def _nearest(x: np.ndarray, c32: np.ndarray) -> np.ndarray:
    """Exact nearest-centroid labels (sorted 1-D c32) for any x (exact ties: the lower one)."""
    if c32.size <= 1:
        return np.zeros(x.shape, dtype=np.intp)
    c = c32.astype(np.float64)
    return np.searchsorted((c[:-1] + c[1:]) * 0.5, x, side="left")


# ---------------------------------------------------------------------------------------------
# public API


def kmeans_1d(
    values: np.ndarray,
    k: int,
    init: str = "linear",
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means: minimize sum_i (x_i - c_{label_i})^2. Returns ``(centroids, labels)``.

    ``centroids``: float32, sorted ascending, k' = min(k, number of distinct values) of them
    (fewer distinct values than k -> exactly those values; empty input -> none).
    ``labels``: intp, same length as ``values``; each value's nearest centroid (ties either way).

    ``init="linear"`` spaces the initial centroids evenly over [min, max] (what Deep
    Compression found best: it keeps centroids on the rare large weights); ``"kmeans++"`` seeds
    by D^2 sampling on a random sample, reproducible with ``seed``. Lloyd stops when the
    assignment no longer changes, the largest centroid move is <= tol * (max - min), or after
    ``max_iter`` iterations. Values are processed as float32.
    """
    _check_common(k, init, max_iter, tol)
    x = _as_finite_f32(values, "values")
    if x.ndim != 1:
        raise ValueError(f"`values` must be 1-D, got shape `{x.shape}`")
    rng = np.random.default_rng(seed)
    if x.size > _EXACT_MAX:
        out = _kmeans_bucketed(x, int(k), init, rng, max_iter, tol)
        if out is not None:
            return out
    xs = np.sort(x).astype(np.float64)[None, :]
    spre = np.zeros((1, xs.shape[1] + 1))
    np.cumsum(xs[0], out=spre[0, 1:])
    c32, kk = _kmeans_rows(xs, np.array([x.size]), int(k), spre, None, init, rng, max_iter, tol)
    c32 = c32[0, : kk[0]]
    return c32, _nearest(x, c32)


def _kmeans_bucketed(x, k, init, rng, max_iter, tol):
    x = x + np.float32(0.0)  # -0.0 -> +0.0, so both zeros share a bucket
    bid = (_f32_keys(x) >> np.uint32(_BUCKET_SHIFT)).astype(np.intp)
    cnt = np.bincount(bid, minlength=_N_BUCKETS)
    ne = np.flatnonzero(cnt)
    if ne.size <= k:
        # Maybe no more distinct values than clusters: exact if every bucket is single-valued.
        rep = np.zeros(_N_BUCKETS, dtype=np.float32)
        rep[bid] = x
        if not np.array_equal(rep[bid], x):
            return None  # caller falls back to the exact (sorting) path
        lut = np.zeros(_N_BUCKETS, dtype=np.intp)
        lut[ne] = np.arange(ne.size)
        return rep[ne].copy(), lut[bid]
    sums = np.bincount(bid, weights=x, minlength=_N_BUCKETS)[ne]
    counts = cnt[ne].astype(np.float64)
    means = (sums / counts)[None, :]
    spre = np.zeros((1, ne.size + 1))
    np.cumsum(sums, out=spre[0, 1:])
    wpre = np.zeros((1, ne.size + 1))
    np.cumsum(counts, out=wpre[0, 1:])
    c32, kk = _kmeans_rows(means, np.array([ne.size]), k, spre, wpre, init, rng, max_iter, tol)
    c32 = c32[0, : kk[0]]

    # Exact labels: a bucket whose whole value interval lies between two midpoints gets one
    # label from a lookup table; only values in buckets that straddle a midpoint are searched.
    edge_lo = _keys_to_f32(ne.astype(np.uint32) << np.uint32(_BUCKET_SHIFT))
    edge_hi = _keys_to_f32((ne.astype(np.uint32) << np.uint32(_BUCKET_SHIFT))
                           | np.uint32((1 << _BUCKET_SHIFT) - 1))
    lab_lo = _nearest(edge_lo, c32)
    lab_hi = _nearest(edge_hi, c32)
    lut = np.zeros(_N_BUCKETS, dtype=np.intp)
    lut[ne] = lab_lo
    labels = lut[bid]
    straddle = ne[lab_lo != lab_hi]
    if straddle.size:
        flag = np.zeros(_N_BUCKETS, dtype=bool)
        flag[straddle] = True
        idx = np.flatnonzero(flag[bid])
        labels[idx] = _nearest(x[idx], c32)
    return c32, labels


def _largest(a: np.ndarray, count: int) -> np.ndarray:
    """Bool mask of exactly ``count`` largest entries of 1-D ``a`` (ties: higher index first)."""
    n = a.size
    sel = np.zeros(n, dtype=bool)
    if count <= 0:
        return sel
    if count >= n:
        sel[:] = True
        return sel
    kth = n - count
    t = np.partition(a, kth)[kth]
    np.greater(a, t, out=sel)
    need = count - int(np.count_nonzero(sel))
    if need > 0:
        sel[np.flatnonzero(a == t)[-need:]] = True
    return sel


def kmeans_quantize(
    w: np.ndarray,
    bits: int,
    keep_zero: bool = True,
    per_channel_axis: int | None = None,
    seed: int = 0,
    init: str = "linear",
    outliers: float = 0.0,
    max_iter: int = 300,
    tol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Weight sharing: w ~= codebook[indices]. Returns ``(indices, codebook, (out_idx, out_val))``.

    * ``indices``: uint8, shaped like w, every entry < 2^bits (bits in 1..8).
    * ``codebook``: float32 [2^bits] (per-tensor) or [C, 2^bits] with C = w.shape[axis]
      (``per_channel_axis=axis``: one codebook per index along that axis).
      Layout: with ``keep_zero`` entry 0 is exactly 0.0 and is used for, and only for, the
      weights that are exactly zero; the nonzero weights are clustered into 2^bits - 1
      centroids at entries 1..; without it all weights share 2^bits centroids from entry 0.
      Centroids are ascending; when there are fewer distinct values than centroids the
      unused tail repeats the last entry (never referenced).
    * outliers: the round(outliers * w.size) largest-|w| nonzero weights are left out of the
      clustering and returned exactly as ``(out_idx, out_val)``: int64 flat C-order indices
      (ascending) and float32 values. Their ``indices`` entry is their nearest centroid; the
      caller (or kmeans_dequantize) writes the exact values back.

    Each weight's index is its nearest codebook entry: with ``keep_zero`` that includes entry
    0, so a nonzero weight closer to 0.0 than to every centroid (e.g. a near-dead channel
    among large weights) becomes an exact zero instead of being pushed out to the smallest
    centroid. Deterministic for a given ``seed``. See kmeans_1d for init/max_iter/tol.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"`bits` must be an integer in [1, 8], got `{bits!r}`")
    n_codes = 1 << int(bits)
    k = n_codes - 1 if keep_zero else n_codes
    _check_common(k, init, max_iter, tol)
    try:
        frac = float(outliers)
    except (TypeError, ValueError):
        raise ValueError(f"`outliers` must be a fraction in [0, 1), got `{outliers!r}`") from None
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"`outliers` must be a fraction in [0, 1), got `{outliers!r}`")

    x = _as_finite_f32(w, "w")
    flat = x.reshape(-1)
    off = 1 if keep_zero else 0
    zero = (flat == 0) if keep_zero else np.zeros(flat.size, dtype=bool)
    n_out = min(math.floor(frac * flat.size + 0.5), int(flat.size - zero.sum()))
    if n_out > 0:
        mag = np.abs(flat)
        if keep_zero:
            mag[zero] = -1.0  # zeros are never outliers
        is_out = _largest(mag, n_out)
        del mag
    else:
        is_out = np.zeros(flat.size, dtype=bool)
    out_idx = np.flatnonzero(is_out).astype(np.int64)
    out_val = flat[out_idx].astype(np.float32)
    rng = np.random.default_rng(seed)

    if per_channel_axis is None:
        member = ~(zero | is_out)
        cent, labels = kmeans_1d(flat[member], k, init, seed, max_iter, tol)
        indices = np.zeros(flat.size, dtype=np.uint8)
        lab = (labels + off).astype(np.uint8)
        if keep_zero and cent.size:
            v = flat[member]
            lab[np.abs(v) < np.abs(v - cent[labels])] = 0  # nearer to the exact zero
        indices[member] = lab
        if out_idx.size:
            near = _nearest(out_val, cent)
            lab = (near + off).astype(np.uint8)
            if keep_zero and cent.size:
                lab[np.abs(out_val) < np.abs(out_val - cent[near])] = 0
            indices[out_idx] = lab
        codebook = np.zeros(n_codes, dtype=np.float32)
        codebook[off: off + cent.size] = cent
        if off + cent.size < n_codes:
            codebook[off + cent.size:] = codebook[off + cent.size - 1] if cent.size or off else 0
        return indices.reshape(x.shape), codebook, (out_idx, out_val)

    if x.ndim == 0:
        raise ValueError("`per_channel_axis` needs a tensor of rank >= 1")
    ax = per_channel_axis
    if isinstance(ax, bool) or not isinstance(ax, (int, np.integer)) or not -x.ndim <= ax < x.ndim:
        raise ValueError(f"`per_channel_axis` {ax!r} is out of range for a tensor of rank {x.ndim}")
    ax = int(ax) % x.ndim
    n_ch = x.shape[ax]
    rows_x = np.moveaxis(x, ax, 0).reshape(n_ch, -1)
    excl = np.moveaxis((zero | is_out).reshape(x.shape), ax, 0).reshape(n_ch, -1)
    vals = np.where(excl, np.float32(np.inf), rows_x)
    vals.sort(axis=1)
    vals = vals.astype(np.float64)
    n_valid = (~excl).sum(axis=1).astype(np.int64)
    spre = np.zeros((n_ch, vals.shape[1] + 1))
    np.cumsum(np.where(np.isinf(vals), 0.0, vals), axis=1, out=spre[:, 1:])
    cent, kk = _kmeans_rows(vals, n_valid, k, spre, None, init, rng, max_iter, tol)
    del vals, spre

    c64 = cent.astype(np.float64)
    mids = (c64[:, :-1] + c64[:, 1:]) * 0.5
    labels = _row_searchsorted(mids, rows_x)
    labels = np.minimum(labels, np.maximum(kk, 1)[:, None] - 1)
    if keep_zero:
        near = np.take_along_axis(cent, labels, axis=1)
        labels += off
        labels[(rows_x == 0) | (np.abs(rows_x) < np.abs(rows_x - near))] = 0  # exact or nearer to zero
        del near
    else:
        labels += off
    indices = np.moveaxis(labels.astype(np.uint8).reshape(np.moveaxis(x, ax, 0).shape), 0, ax)
    codebook = np.zeros((n_ch, n_codes), dtype=np.float32)
    codebook[:, off:] = cent
    # Rows with no cluster members at all keep 0.0 (their tail would otherwise be garbage).
    codebook[kk == 0, off:] = 0.0
    return np.ascontiguousarray(indices), codebook, (out_idx, out_val)


def kmeans_dequantize(
    indices: np.ndarray,
    codebook: np.ndarray,
    per_channel_axis: int | None = None,
    outliers: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """w_hat = codebook[indices] (per channel: codebook[c, indices[..c..]]) as float32, then
    w_hat.flat[out_idx] = out_val for the outlier side table, when given."""
    idx = np.asarray(indices)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"`indices` must be an integer array, got dtype `{idx.dtype}`")
    cb = np.asarray(codebook, dtype=np.float32)
    n_codes = cb.shape[-1] if cb.ndim else 0
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n_codes):
        raise ValueError(f"`indices` out of range for a codebook of {n_codes} entries")
    if per_channel_axis is None:
        if cb.ndim != 1:
            raise ValueError(f"per-tensor codebook must be 1-D, got shape `{cb.shape}`")
        out = cb[idx]
    else:
        if idx.ndim == 0 or not -idx.ndim <= per_channel_axis < idx.ndim:
            raise ValueError(f"`per_channel_axis` {per_channel_axis!r} is out of range for "
                             f"indices of rank {idx.ndim}")
        ax = int(per_channel_axis) % idx.ndim
        if cb.ndim != 2 or cb.shape[0] != idx.shape[ax]:
            raise ValueError(f"per-channel codebook must have shape `({idx.shape[ax]}, n)`, "
                             f"got `{cb.shape}`")
        moved = np.moveaxis(idx, ax, 0)
        gathered = np.take_along_axis(cb, moved.reshape(moved.shape[0], -1).astype(np.intp),
                                      axis=1)
        out = np.moveaxis(gathered.reshape(moved.shape), 0, ax)
    out = np.array(out, dtype=np.float32, order="C")
    if outliers is not None:
        o_idx, o_val = (np.asarray(a) for a in outliers)
        if o_idx.shape != o_val.shape or o_idx.ndim != 1:
            raise ValueError("outlier side table must be two 1-D arrays of equal length")
        if o_idx.size and (int(o_idx.min()) < 0 or int(o_idx.max()) >= out.size):
            raise ValueError("outlier index out of range")
        out.reshape(-1)[o_idx.astype(np.intp)] = o_val.astype(np.float32)
    return out
