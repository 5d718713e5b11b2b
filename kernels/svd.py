"""Low-rank factorization W[K, N] ~= A[K, r] @ B[r, N] (for y = x @ W).

Decompositions are computed in float64 (LAPACK gesdd) and returned as float32. Signs are
made deterministic: each column of U is flipped so that its largest-magnitude entry (first
one on ties) is positive, with the matching row of V^T flipped too.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "rank_for_energy",
    "rank_from_ratio",
    "round_rank",
    "singular_values",
    "truncated_svd",
    "weighted_svd",
]


def _as_matrix(w2d: np.ndarray, name: str = "w2d") -> np.ndarray:
    w = np.asarray(w2d)
    if w.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D, got shape `{w.shape}`")
    if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise ValueError(f"`{name}` must be a real numeric array, got dtype `{w.dtype}`")
    w = w.astype(np.float64)
    if w.size and not np.isfinite(w).all():
        raise ValueError(f"`{name}` contains nan or inf")
    return w


def _check_rank(rank: int, shape: tuple[int, int]) -> int:
    max_rank = min(shape)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ValueError(f"`rank` must be an integer, got `{rank!r}`")
    if not 1 <= rank <= max_rank:
        raise ValueError(f"`rank` must be in [1, {max_rank}] for a `{shape}` matrix, got {rank}")
    return int(rank)


def _fix_signs(u: np.ndarray, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pivot = np.argmax(np.abs(u), axis=0)
    sign = np.where(u[pivot, np.arange(u.shape[1])] < 0, -1.0, 1.0)
    return u * sign, vt * sign[:, None]


def singular_values(w2d: np.ndarray) -> np.ndarray:
    """Singular values of ``w2d``, descending, float64 (for rank_for_energy)."""
    w = _as_matrix(w2d)
    if w.size == 0:
        return np.zeros(0)
    return np.linalg.svd(w, compute_uv=False)


def truncated_svd(w2d: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-r approximation W ~= A @ B (Eckart-Young), singular values split evenly:
    A = U_r diag(sqrt(s_r)) [K, r], B = diag(sqrt(s_r)) V_r^T [r, N], both float32.
    ||W - A B||_F^2 = sum of the dropped s_i^2.
    """
    w = _as_matrix(w2d)
    r = _check_rank(rank, w.shape)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    u, vt = _fix_signs(u[:, :r], vt[:r])
    root = np.sqrt(s[:r])
    return (u * root).astype(np.float32), (vt * root[:, None]).astype(np.float32)


def rank_for_energy(s: np.ndarray, energy: float) -> int:
    """Smallest r >= 1 with sum(s[:r]^2) / sum(s^2) >= energy (s sorted descending here).

    ``energy`` in (0, 1]. An all-zero spectrum gives 1.
    """
    try:
        e = float(energy)
    except (TypeError, ValueError):
        raise ValueError(f"`energy` must be a number in (0, 1], got `{energy!r}`") from None
    if not 0.0 < e <= 1.0:
        raise ValueError(f"`energy` must be in (0, 1], got `{energy!r}`")
    sv = np.asarray(s, dtype=np.float64)
    if sv.ndim != 1 or sv.size == 0:
        raise ValueError(f"`s` must be a non-empty 1-D array, got shape `{sv.shape}`")
    if not np.isfinite(sv).all() or (sv < 0).any():
        raise ValueError("`s` must be finite and non-negative")
    cum = np.cumsum(np.square(np.sort(sv)[::-1]))
    total = cum[-1]
    if total == 0.0:
        return 1
    return int(min(np.searchsorted(cum, e * total, side="left") + 1, sv.size))


def rank_from_ratio(shape: tuple[int, int], ratio: float) -> int:
    """Rank whose factors hold at most ``ratio`` of the parameters of a [K, N] matrix:
    r = floor(ratio * K * N / (K + N)), clamped to [1, min(K, N)]."""
    try:
        k_dim, n_dim = (int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"`shape` must be a pair (K, N), got `{shape!r}`") from None
    if k_dim < 1 or n_dim < 1:
        raise ValueError(f"`shape` must be positive, got `{shape!r}`")
    try:
        q = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"`ratio` must be a positive number, got `{ratio!r}`") from None
    if not (q > 0.0 and math.isfinite(q)):
        raise ValueError(f"`ratio` must be a positive number, got `{ratio!r}`")
    r = math.floor(q * k_dim * n_dim / (k_dim + n_dim) + 1e-9)
    return max(1, min(r, k_dim, n_dim))


def round_rank(r: int, round_to: int, max_rank: int) -> int:
    """Round ``r`` UP to a multiple of ``round_to`` (hardware-friendly), capped at ``max_rank``
    (which need not be a multiple), and at least min(round_to, max_rank)."""
    for name, v in (("r", r), ("round_to", round_to), ("max_rank", max_rank)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer, got `{v!r}`")
    up = -(-int(r) // int(round_to)) * int(round_to)
    return int(min(up, int(max_rank)))


def weighted_svd(
    w2d: np.ndarray, gram: np.ndarray, rank: int, damp: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Data-aware rank-r factorization minimizing ||X (W - A B)||_F for inputs X.

    ``gram`` is H = X^T X [K, K]. With H + lambda I = L L^T (Cholesky; lambda = damp * mean
    diag(H), or damp when H's diagonal is zero), ||X E||_F^2 = ||L^T E||_F^2, so the optimum is
    the truncated SVD of L^T W = U S V^T mapped back: A = L^{-T} U_r sqrt(S_r),
    B = sqrt(S_r) V_r^T. Returns float32 (A [K, r], B [r, N]).
    """
    w = _as_matrix(w2d)
    h = _as_matrix(gram, "gram")
    k_dim = w.shape[0]
    if h.shape != (k_dim, k_dim):
        raise ValueError(f"`gram` must be `({k_dim}, {k_dim})` for a `{w.shape}` weight, "
                         f"got `{h.shape}`")
    r = _check_rank(rank, w.shape)
    try:
        d = float(damp)
    except (TypeError, ValueError):
        raise ValueError(f"`damp` must be a number >= 0, got `{damp!r}`") from None
    if not (d >= 0.0 and math.isfinite(d)):
        raise ValueError(f"`damp` must be a number >= 0, got `{damp!r}`")
    h = (h + h.T) * 0.5
    mean_diag = float(np.mean(np.diag(h)))
    lam = d * mean_diag if mean_diag > 0 else d
    try:
        chol = np.linalg.cholesky(h + lam * np.eye(k_dim))
    except np.linalg.LinAlgError:
        raise ValueError(
            "`gram` plus damping is not positive definite; increase `damp`"
        ) from None
    u, s, vt = np.linalg.svd(chol.T @ w, full_matrices=False)
    u, vt = _fix_signs(u[:, :r], vt[:r])
    root = np.sqrt(s[:r])
    a = np.linalg.solve(chol.T, u * root)
    return a.astype(np.float32), (vt * root[:, None]).astype(np.float32)
