"""GPTQ: quantize a layer column by column so that its outputs on calibration inputs stay
close (Frantar et al. 2022, after Optimal Brain Quantization, Frantar & Alistarh 2022).

Layout shared by this module and :mod:`onnxzip.kernels.obs`: ``w`` is ``[R, K]``, one row
per output channel and one column per index of the reduction (a MatMul weight ``W[K, N]`` is
passed as ``W.T``); ``h`` is the Gram matrix ``H = X^T X`` ``[K, K]`` of the layer's input
rows. The output error of a replacement ``Q`` on those inputs is

    ||X (W - Q)^T||_F^2 = sum_r (w_r - q_r) H (w_r - q_r)^T.

The sweep (:func:`obs_sweep`): damp ``H += lambda I`` (``lambda = percdamp * mean diag H``),
take the upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``), then for the columns
j = 0 .. K-1 in processing order::

    q_j = compress(w_j);   e = (w_j - q_j) / U_jj;   w_{j+1:} -= e U_{j, j+1:}

which is the OBS update: the remaining columns absorb column j's error optimally. Updates
run lazily in blocks of ``lazy_batch`` columns (the same result; the bulk of the work is one
matrix product per block). ``act_order`` processes columns by decreasing ``H_jj``. A column
whose input is always zero (``H_jj = 0``) gets ``H_jj = 1``: it is compressed like the others
and moves nothing.

All arithmetic is float64. Nothing here reads or writes ONNX.
"""

from __future__ import annotations

import math

import numpy as np

from onnxzip.kernels.quant import qrange, quantize_linear

__all__ = [
    "damped_hessian",
    "gptq_codebook",
    "gptq_linear",
    "inverse_cholesky",
    "lazy_bounds",
    "obs_sweep",
]


def _check_w_h(w: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(w)
    h = np.asarray(h)
    if w.ndim != 2:
        raise ValueError(f"`w` must be 2-D [R, K], got shape `{w.shape}`")
    k = w.shape[1]
    if h.shape != (k, k):
        raise ValueError(f"`h` must be `({k}, {k})` for a `{w.shape}` weight, got `{h.shape}`")
    w64 = w.astype(np.float64)
    h64 = h.astype(np.float64)
    if (w64.size and not np.isfinite(w64).all()) or (h64.size and not np.isfinite(h64).all()):
        raise ValueError("`w` and `h` must be finite")
    return w64, h64


def _check_common(percdamp: float, lazy_batch: int) -> None:
    if not (isinstance(percdamp, (int, float, np.floating)) and not isinstance(percdamp, bool)
            and math.isfinite(percdamp) and percdamp >= 0):
        raise ValueError(f"`percdamp` must be a number >= 0, got `{percdamp!r}`")
    if isinstance(lazy_batch, bool) or not isinstance(lazy_batch, (int, np.integer)) or lazy_batch < 1:
        raise ValueError(f"`lazy_batch` must be a positive integer, got `{lazy_batch!r}`")


def damped_hessian(h: np.ndarray, percdamp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(H symmetrized, dead diagonal set to 1, plus ``percdamp * mean diag`` on the diagonal;
    mask of the dead columns). float64."""
    h = np.asarray(h, dtype=np.float64)
    h = (h + h.T) * 0.5
    diag = np.diag(h).copy()
    dead = diag <= 0
    if dead.any():
        h[:, dead] = 0.0
        h[dead, :] = 0.0
        h[dead, dead] = 1.0
    mean = float(np.mean(np.diag(h))) if h.size else 0.0
    lam = percdamp * mean if mean > 0 else percdamp
    h[np.diag_indices_from(h)] += lam
    return h, dead


def inverse_cholesky(h: np.ndarray) -> np.ndarray:
    """Upper-triangular U with ``H^-1 = U^T U`` for a positive definite H (float64).

    When H is not numerically positive definite, the damping is raised tenfold (up to six
    times) before giving up with ``ValueError``."""
    h = np.asarray(h, dtype=np.float64)
    k = h.shape[0]
    if k == 0:
        return np.zeros((0, 0))
    mean = float(np.mean(np.diag(h)))
    # With J the reversal permutation and J H J = L L^T: H^-1 = (J L^-1 J)^T (J L^-1 J), and
    # J L^-1 J is upper triangular: one Cholesky and one triangular inverse.
    rev = np.arange(k)[::-1]
    hr = np.ascontiguousarray(h[np.ix_(rev, rev)])
    extra = 0.0
    for _ in range(7):
        try:
            low = np.linalg.cholesky(hr + extra * np.eye(k)) if extra else np.linalg.cholesky(hr)
            u = np.linalg.inv(low)[np.ix_(rev, rev)]
            return np.triu(u)
        except np.linalg.LinAlgError:
            extra = max(extra * 10.0, 1e-6 * max(mean, 1e-12))
    raise ValueError("`h` is not positive definite even with extra damping; raise `percdamp`")


def lazy_bounds(k: int, lazy_batch: int, group_ends: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Block bounds ``[(i1, i2), ...]`` covering ``range(k)`` in steps of ``lazy_batch``; with
    ``group_ends`` (for each column, the end of the group it belongs to), a block never ends
    inside a group (it is extended to the group's end)."""
    out = []
    i1 = 0
    while i1 < k:
        i2 = min(i1 + lazy_batch, k)
        if group_ends is not None and i2 < k:
            i2 = max(i2, int(group_ends[i2 - 1]))
        out.append((i1, i2))
        i1 = i2
    return out


def obs_sweep(w: np.ndarray, u: np.ndarray, compress, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Run the OBS/GPTQ column sweep on ``w`` ([R, K] float64, overwritten and returned).

    ``compress`` is an object with ``start_block(i1, i2, w1, u1)`` and
    ``column(j, col, w, w1, i1) -> q``: ``col`` is column j with every earlier update applied,
    ``w1`` the current block (columns i1.. with updates applied), ``w`` the whole weight
    (columns past the block lack this block's updates). ``q`` is the compressed column.
    """
    k = w.shape[1]
    for i1, i2 in bounds:
        w1 = w[:, i1:i2].copy()
        u1 = u[i1:i2, i1:i2]
        err = np.empty_like(w1)
        compress.start_block(i1, i2, w1, u1)
        for i in range(i2 - i1):
            col = w1[:, i]
            q = compress.column(i1 + i, col, w, w1, i1)
            e = (col - q) / u1[i, i]
            if i + 1 < i2 - i1:
                w1[:, i + 1:] -= e[:, None] * u1[i, i + 1:][None, :]
            w1[:, i] = q
            err[:, i] = e
        w[:, i1:i2] = w1
        if i2 < k:
            w[:, i2:] -= err @ u[i1:i2, i2:]
    return w


def _prepare(w, h, percdamp, act_order):
    hd, dead = damped_hessian(h, percdamp)
    order = np.argsort(-np.diag(hd), kind="stable") if act_order else None
    if order is not None:
        w = w[:, order]
        hd = hd[np.ix_(order, order)]
    return np.ascontiguousarray(w), inverse_cholesky(hd), order, dead


def _unpermute(a: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    if order is None:
        return a
    out = np.empty_like(a)
    out[:, order] = a
    return out


class _LinearColumns:
    """Affine quantization of each column with its (row, group) scale and zero point;
    a group's parameters come from its columns' current values when the sweep reaches the
    group's first column, unless fixed in advance."""

    def __init__(self, r, k, col_group, n_groups, bits, symmetric, clip, params):
        self.bits, self.symmetric, self.clip = bits, symmetric, clip
        self.qmin, self.qmax = qrange(bits, symmetric)
        self.col_group = col_group
        self.members = [np.flatnonzero(col_group == g) for g in range(n_groups)]
        self.q = np.zeros((r, k), dtype=np.float64)
        if params is not None:
            self.scale = np.asarray(params[0], dtype=np.float64)
            self.zp = np.asarray(params[1], dtype=np.float64)
            self.ready = np.ones(n_groups, dtype=bool)
        else:
            self.scale = np.ones((r, n_groups), dtype=np.float64)
            self.zp = np.zeros((r, n_groups), dtype=np.float64)
            self.ready = np.zeros(n_groups, dtype=bool)

    def start_block(self, i1, i2, w1, u1):
        pass

    def column(self, j, col, w, w1, i1):
        g = self.col_group[j]
        if not self.ready[g]:
            cols = self.members[g]
            cur = w[:, cols].copy()
            inside = (cols >= i1) & (cols < i1 + w1.shape[1])
            cur[:, inside] = w1[:, cols[inside] - i1]
            _, s, z = quantize_linear(cur, self.bits, self.symmetric, axis=0, clip=self.clip)
            self.scale[:, g] = s.astype(np.float64)
            self.zp[:, g] = z.astype(np.float64)
            self.ready[g] = True
        s, z = self.scale[:, g], self.zp[:, g]
        q = np.clip(np.rint(col / s) + z, self.qmin, self.qmax)
        self.q[:, j] = q
        return (q - z) * s


def gptq_linear(
    w: np.ndarray,
    h: np.ndarray,
    bits: int,
    symmetric: bool,
    col_group: np.ndarray | None = None,
    *,
    params: tuple[np.ndarray, np.ndarray] | None = None,
    clip: str = "minmax",
    percdamp: float = 0.01,
    act_order: bool = False,
    lazy_batch: int = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """GPTQ with an affine integer grid. Returns ``(q, scale, zero_point, w_hat)``.

    ``col_group[j]`` (default: all 0) names the parameter group of column j: every row has
    its own (scale, zero point) per group, ``G = col_group.max() + 1`` of them (per output
    channel: one group; blocks along the reduction: one group per block). Without ``params``
    a group's parameters are chosen (``clip``: ``minmax`` or ``mse``, as
    :func:`~onnxzip.kernels.quant.quantize_linear` per row) from its columns' values when the
    sweep reaches its first column, as in the GPTQ reference; with ``act_order`` (columns
    out of order) they are chosen from the original weights up front. ``params`` = (scale,
    zero point), each ``[R, G]``, fixes them (a per-tensor scale is a constant array).

    ``q``: integer codes [R, K] (int8 symmetric / uint8 otherwise for bits <= 8, else 16-bit);
    ``scale`` float32 [R, G]; ``zero_point`` [R, G] in q's dtype; ``w_hat`` float32 [R, K] =
    (q - zero_point) * scale, the weights the decoder will see.
    """
    w64, h64 = _check_w_h(w, h)
    _check_common(percdamp, lazy_batch)
    r, k = w64.shape
    cg = np.zeros(k, dtype=np.intp) if col_group is None else np.asarray(col_group, dtype=np.intp)
    if cg.shape != (k,) or (k and (cg.min() < 0)):
        raise ValueError(f"`col_group` must be {k} non-negative group ids")
    n_groups = int(cg.max()) + 1 if k else 0
    if params is not None:
        ps, pz = (np.asarray(p) for p in params)
        if ps.shape != (r, n_groups) or pz.shape != (r, n_groups):
            raise ValueError(f"`params` must be two `({r}, {n_groups})` arrays")
    elif act_order and k:
        # Out of order, a group's first processed column is not its first column: fix every
        # group's parameters from the original weights ("static groups").
        ps = np.ones((r, n_groups))
        pz = np.zeros((r, n_groups))
        for g in range(n_groups):
            _, s, z = quantize_linear(w64[:, cg == g], bits, symmetric, axis=0, clip=clip)
            ps[:, g], pz[:, g] = s, z
        params = (ps, pz)
    qdt = np.dtype((np.int8 if symmetric else np.uint8) if bits <= 8 else (np.int16 if symmetric else np.uint16))
    if k == 0 or r == 0:
        return (np.zeros((r, k), qdt), np.ones((r, n_groups), np.float32), np.zeros((r, n_groups), qdt),
                np.zeros((r, k), np.float32))
    wp, u, order, _ = _prepare(w64, h64, percdamp, act_order)
    cgp = cg[order] if order is not None else cg
    cols = _LinearColumns(r, k, cgp, n_groups, bits, symmetric, clip, params)
    obs_sweep(wp, u, cols, lazy_bounds(k, lazy_batch))
    q = _unpermute(cols.q, order).astype(qdt)
    scale = cols.scale.astype(np.float32)
    zp = cols.zp.astype(qdt)
    # What DequantizeLinear computes, in float32.
    w_hat = ((q.astype(np.int32) - np.take(zp, cg, axis=1).astype(np.int32)).astype(np.float32)
             * np.take(scale, cg, axis=1))
    return q, scale, zp, w_hat


class _CodebookColumns:
    """Nearest-centroid assignment of each column (shared or per-row codebooks), with exact
    zeros forced to code 0 and "kept" entries (outliers) stored exactly."""

    def __init__(self, r, k, codebook, offset, zero_mask, keep_mask):
        self.cb = codebook.astype(np.float64)
        self.off = offset
        self.shared = self.cb.shape[0] == 1
        cents = self.cb[:, offset:]
        self.mids = (cents[:, :-1] + cents[:, 1:]) * 0.5
        self.zero, self.keep = zero_mask, keep_mask
        self.codes = np.zeros((r, k), dtype=np.int64)
        self.rows = np.arange(r)

    def start_block(self, i1, i2, w1, u1):
        pass

    def column(self, j, col, w, w1, i1):
        if self.mids.shape[1] == 0:
            idx = np.zeros(col.shape, dtype=np.int64)
        elif self.shared:
            idx = np.searchsorted(self.mids[0], col, side="left")
        else:
            idx = np.count_nonzero(self.mids < col[:, None], axis=1)
        idx = idx + self.off
        q = self.cb[0, idx] if self.shared else self.cb[self.rows, idx]
        if self.zero is not None:
            z = self.zero[:, j]
            idx[z] = 0
            q[z] = 0.0
        if self.keep is not None:
            kp = self.keep[:, j]
            q[kp] = col[kp]
        self.codes[:, j] = idx
        return q


def gptq_codebook(
    w: np.ndarray,
    h: np.ndarray,
    codebook: np.ndarray,
    *,
    zero_code: bool = False,
    zero_mask: np.ndarray | None = None,
    keep_mask: np.ndarray | None = None,
    percdamp: float = 0.01,
    act_order: bool = False,
    lazy_batch: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ assignment to a fixed codebook. Returns ``(codes, w_hat)``, both [R, K].

    ``codebook``: [C] shared by every row, or [R, C] one per row; entries ascending (from
    entry 1 when ``zero_code``: entry 0 is the exact zero reserved for ``zero_mask``). Each
    column is assigned, after the updates of the earlier columns, to its nearest entry
    (never entry 0 when ``zero_code``); entries in ``zero_mask`` get code 0 and value 0 (pruned
    weights stay pruned, their residual moves to the later columns); entries in ``keep_mask``
    keep their updated value exactly (``w_hat`` holds it; their code is the nearest entry).
    ``codes`` is int64; ``w_hat`` float32.
    """
    w64, h64 = _check_w_h(w, h)
    _check_common(percdamp, lazy_batch)
    r, k = w64.shape
    cb = np.asarray(codebook, dtype=np.float64)
    if cb.ndim == 1:
        cb = cb[None, :]
    if cb.ndim != 2 or cb.shape[0] not in (1, r) or cb.shape[1] < (2 if zero_code else 1):
        raise ValueError(f"`codebook` must be [C] or [{r}, C] with enough entries, got `{np.shape(codebook)}`")
    if not np.all(np.diff(cb[:, 1 if zero_code else 0:], axis=1) >= 0):
        raise ValueError("`codebook` entries must be ascending (from entry 1 with `zero_code`)")
    for name, m in (("zero_mask", zero_mask), ("keep_mask", keep_mask)):
        if m is not None and np.shape(m) != (r, k):
            raise ValueError(f"`{name}` must have shape `{(r, k)}`, got `{np.shape(m)}`")
    if k == 0 or r == 0:
        return np.zeros((r, k), np.int64), np.zeros((r, k), np.float32)
    wp, u, order, _ = _prepare(w64, h64, percdamp, act_order)
    zm = None if zero_mask is None else np.asarray(zero_mask, dtype=bool)
    km = None if keep_mask is None else np.asarray(keep_mask, dtype=bool)
    if order is not None:
        zm = None if zm is None else zm[:, order]
        km = None if km is None else km[:, order]
    cols = _CodebookColumns(r, k, cb, 1 if zero_code else 0, zm, km)
    w_hat = obs_sweep(wp, u, cols, lazy_bounds(k, lazy_batch))
    return _unpermute(cols.codes, order), _unpermute(w_hat, order).astype(np.float32)
