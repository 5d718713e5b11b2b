"""Calibration-aware pruning and bias correction, in the layout of :mod:`onnxzip.kernels.gptq`
(``w`` [R, K]: rows are output channels, columns the reduction; ``h`` = X^T X [K, K]).

* Wanda (Sun et al. 2023): score ``|W_rj| * ||X_j||_2`` with ``||X_j||_2 = sqrt(H_jj)``;
  no update. The comparison group is the whole layer (``group="layer"``: the lowest scores
  of the tensor go, like magnitude's ``scope: layer``) or each output row (``group="row"``:
  every row loses its own share, the paper's choice for LLMs). The reference code offers
  both (``--prune_granularity layer | row`` for its image classifiers); on onnxzip's sample
  models (an MLP, a small CNN, a 2-layer transformer) ``layer`` gives the lower output error,
  on magika ``row`` does, slightly.
* SparseGPT (Frantar & Alistarh 2023): the OBS sweep of :func:`~onnxzip.kernels.gptq.obs_sweep`
  with pruning as the compression: in each lazy block the weights with the smallest
  ``w^2 / [H^-1]_jj`` (``[H^-1]_jj = U_jj^2`` in the Cholesky form) are zeroed, chosen from
  the block's current (already updated) values, and the remaining weights absorb the error.
  How many each block loses: ``allocate="layer"`` (default) takes each block's share from the
  layer-wide ranking of the original weights' scores; ``"block"`` gives every block the same
  sparsity (the reference). N:M picks, per row, the N largest of each group of M
  consecutive columns at the group's first column.
* Bias correction: ``delta = (W - W') E[x]`` per output row, the shift of the layer's mean
  output that adding ``delta`` to the bias undoes.

Counts are exact: ``round(sparsity * size)`` weights (halves up) are pruned per tensor, split
over rows (Wanda) or blocks (SparseGPT) so that the parts add up to the total.
"""

from __future__ import annotations

import numpy as np

from onnxzip.kernels.gptq import _check_common, _check_w_h, damped_hessian, inverse_cholesky, lazy_bounds, obs_sweep
from onnxzip.kernels.prune import magnitude_mask

__all__ = ["WANDA_GROUPS", "bias_delta", "obs_scores", "row_keep", "sparsegpt", "split_count", "wanda_mask", "wanda_scores"]


def _check_sparsity(sparsity: float) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"`sparsity` must be a number in [0, 1], got `{sparsity!r}`") from None
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"`sparsity` must be in [0, 1], got `{sparsity!r}`")
    return s


def split_count(sparsity: float, sizes: np.ndarray) -> np.ndarray:
    """How many to prune in each part of sizes ``sizes`` so that the parts add up to
    ``round(sparsity * sizes.sum())`` (halves up) and each is within one of its own share."""
    sizes = np.asarray(sizes, dtype=np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    rnd = np.floor(sparsity * ends.astype(np.float64) + 0.5).astype(np.int64)
    rst = np.floor(sparsity * starts.astype(np.float64) + 0.5).astype(np.int64)
    return np.clip(rnd - rst, 0, sizes)


def wanda_scores(w: np.ndarray, h_diag: np.ndarray) -> np.ndarray:
    """``|W| * sqrt(diag H)`` per entry (float64 [R, K])."""
    w = np.asarray(w, dtype=np.float64)
    d = np.asarray(h_diag, dtype=np.float64)
    if w.ndim != 2 or d.shape != (w.shape[1],):
        raise ValueError(f"`h_diag` must have one entry per column of `w` ({w.shape}), got `{d.shape}`")
    if not (np.isfinite(w).all() and np.isfinite(d).all()):
        raise ValueError("`w` and `h_diag` must be finite")
    return np.abs(w) * np.sqrt(np.maximum(d, 0.0))[None, :]


def _row_prune(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Keep-mask pruning the ``counts[r]`` lowest scores of each row (ties: lower index first)."""
    r, k = scores.shape
    order = np.argsort(scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k)[None, :].repeat(r, axis=0), axis=1)
    return rank >= counts[:, None]


def obs_scores(w: np.ndarray, h: np.ndarray, percdamp: float = 0.01) -> np.ndarray:
    """``w^2 / [H^-1]_jj`` per entry (float64 [R, K]): the output error OBS pays to zero one
    weight alone, comparable across layers' groups (used to share a sparsity between the
    groups of a grouped conv before pruning each with :func:`sparsegpt`)."""
    w64, h64 = _check_w_h(w, h)
    hd, _ = damped_hessian(h64, percdamp)
    u = inverse_cholesky(hd)
    hinv_diag = np.sum(u * u, axis=0)
    return w64 * w64 / hinv_diag[None, :]


def row_keep(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep-mask [R, K] pruning each row's lowest scores (ties: lower index first), the
    rows' counts adding up to exactly ``round(sparsity * R * K)``."""
    s = _check_sparsity(sparsity)
    sc = np.asarray(scores, dtype=np.float64)
    if sc.ndim != 2:
        raise ValueError(f"`scores` must be 2-D, got shape `{sc.shape}`")
    r, k = sc.shape
    return _row_prune(sc, split_count(s, np.full(r, k)))


WANDA_GROUPS = ("layer", "row")


def wanda_mask(w: np.ndarray, h_diag: np.ndarray, sparsity: float, group: str = "layer") -> np.ndarray:
    """Wanda keep-mask [R, K] pruning exactly ``round(sparsity * R * K)`` entries: the
    lowest scores of the layer (``group="layer"``) or each row's lowest-scoring share
    (``group="row"``)."""
    if group not in WANDA_GROUPS:
        raise ValueError(f"unknown group `{group}`; valid choices: `layer`, `row`")
    scores = wanda_scores(w, h_diag)
    # The layer: magnitude_mask on the (non-negative) scores, same count and tie order.
    return magnitude_mask(scores, sparsity) if group == "layer" else row_keep(scores, sparsity)


class _PruneColumns:
    """Unstructured: per lazy block, the ``block_counts[b]`` smallest ``w^2 / U_jj^2`` of
    the block's current values. N:M: per row, the ``m - n`` smallest of each group, chosen
    at the group's first column."""

    def __init__(self, r, k, nm=None, group_start=None, block_counts=None):
        self.nm = nm
        self.group_start = group_start  # column -> True at the first column of an N:M group
        self.mask = np.zeros((r, k), dtype=bool)  # True = pruned
        self.block_counts = block_counts
        self.block = 0
        self.u1 = None

    def start_block(self, i1, i2, w1, u1):
        self.u1 = u1
        if self.nm is not None:
            return
        n = int(self.block_counts[self.block])
        self.block += 1
        if n <= 0:
            return
        d = np.diag(u1) ** 2
        score = (w1 * w1 / d[None, :]).reshape(-1)
        order = np.argsort(score, kind="stable")[:n]
        flat = np.zeros(score.size, dtype=bool)
        flat[order] = True
        self.mask[:, i1:i2] = flat.reshape(w1.shape)

    def column(self, j, col, w, w1, i1):
        if self.nm is not None and self.group_start[j]:
            n, m = self.nm
            i = j - i1
            blk = w1[:, i:i + m]
            d = np.diag(self.u1)[i:i + m] ** 2
            score = blk * blk / d[None, :]
            order = np.argsort(score, axis=1, kind="stable")[:, : m - n]
            sel = np.zeros(blk.shape, dtype=bool)
            np.put_along_axis(sel, order, True, axis=1)
            self.mask[:, j:j + m] = sel
        q = col.copy()
        q[self.mask[:, j]] = 0.0
        return q


def sparsegpt(
    w: np.ndarray,
    h: np.ndarray,
    *,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    segment: int | None = None,
    order: np.ndarray | None = None,
    percdamp: float = 0.01,
    lazy_batch: int = 128,
    allocate: str = "layer",
) -> tuple[np.ndarray, np.ndarray]:
    """SparseGPT: prune ``w`` [R, K] and update the survivors. Returns ``(w_new, keep)``:
    float64 weights with exact zeros, and the keep-mask (True = kept).

    Exactly one of ``sparsity`` (unstructured: ``round(sparsity * R * K)`` pruned) or ``nm``
    (keep N of every M). For N:M the columns, taken in ``order`` (default: as given), form
    segments of ``segment`` columns (default: all K); each segment is cut into groups of M
    consecutive columns from its start, the trailing ``segment % M`` stay dense. (A Conv
    weight [O, C, kh, kw] seen as [O, C*kh*kw] has its N:M groups along C: pass the order
    that lists the columns kernel-offset-major and ``segment = C``.)
    """
    w64, h64 = _check_w_h(w, h)
    _check_common(percdamp, lazy_batch)
    if (sparsity is None) == (nm is None):
        raise ValueError("give exactly one of `sparsity` and `nm`")
    if allocate not in ("layer", "block"):
        raise ValueError(f"unknown allocate `{allocate}`; valid choices: `layer`, `block`")
    r, k = w64.shape
    perm = None if order is None else np.asarray(order, dtype=np.intp)
    if perm is not None and (perm.shape != (k,) or not np.array_equal(np.sort(perm), np.arange(k))):
        raise ValueError(f"`order` must be a permutation of range({k})")
    hd, _ = damped_hessian(h64, percdamp)
    if perm is not None:
        w64 = w64[:, perm]
        hd = hd[np.ix_(perm, perm)]
    w64 = np.ascontiguousarray(w64)
    if k == 0 or r == 0:
        return w64, np.ones((r, k), dtype=bool)
    u = inverse_cholesky(hd)
    if nm is not None:
        n, m = (int(v) for v in nm)
        if not (m >= 1 and 0 <= n <= m):
            raise ValueError(f"`nm` must satisfy 0 <= n <= m, got `{nm}`")
        seg = k if segment is None else int(segment)
        if seg < 1 or k % seg:
            raise ValueError(f"`segment` {segment} must divide the column count {k}")
        pos = np.arange(k) % seg
        full = (seg // m) * m
        start = (pos % m == 0) & (pos < full)
        group_end = np.where(pos < full, np.arange(k) - pos % m + m, np.arange(k) + 1)
        cols = _PruneColumns(r, k, nm=(n, m), group_start=start)
        bounds = lazy_bounds(k, lazy_batch, group_end)
    else:
        s = _check_sparsity(sparsity)
        bounds = lazy_bounds(k, lazy_batch)
        if allocate == "block":
            sizes = np.array([(i2 - i1) * r for i1, i2 in bounds], dtype=np.int64)
            counts = split_count(s, sizes)
        else:
            # Each block's share of the tensor's count from the OBS scores of the original
            # weights, so column blocks that matter less lose more; the block then picks
            # that many from its current (updated) values.
            score = (w64 * w64 / (np.diag(u) ** 2)[None, :]).reshape(-1)
            gone = np.zeros(score.size, dtype=bool)
            gone[np.argsort(score, kind="stable")[: int(np.floor(s * score.size + 0.5))]] = True
            per_col = gone.reshape(r, k).sum(axis=0)
            counts = np.array([int(per_col[i1:i2].sum()) for i1, i2 in bounds], dtype=np.int64)
        cols = _PruneColumns(r, k, block_counts=counts)
    out = obs_sweep(w64, u, cols, bounds)
    keep = ~cols.mask
    out[~keep] = 0.0
    if perm is not None:
        inv = np.empty_like(perm)
        inv[perm] = np.arange(k)
        out, keep = out[:, inv], keep[:, inv]
    return out, keep


def bias_delta(w_old: np.ndarray, w_new: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``(W - W') E[x]`` per row (float64 [R]): what the new weights lose of the mean output."""
    a = np.asarray(w_old, dtype=np.float64)
    b = np.asarray(w_new, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or mu.shape != (a.shape[1],):
        raise ValueError(f"shapes do not match: w {a.shape}, w_new {b.shape}, mean {mu.shape}")
    d = (a - b) @ mu
    if not np.all(np.isfinite(d)):
        raise ValueError("bias correction is not finite")
    return d

