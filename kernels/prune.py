"""Pruning masks: unstructured magnitude, global magnitude, N:M and channel scores.

Conventions shared by every function here:

* a mask is a ``bool`` array shaped like the weight, ``True`` = keep;
* "how many to prune" is ``round(sparsity * count)`` with halves rounded up, so the achieved
  sparsity equals the target to within one element (or one channel);
* ties are broken deterministically: among equal magnitudes the element with the lower flat
  index (C order) is pruned first. Globally, the order is (magnitude, tensor index, flat index).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "channel_scores",
    "channels_to_keep",
    "global_threshold_masks",
    "magnitude_mask",
    "nm_mask",
    "relative_error",
]

# Above this group size the O(m^2) comparison ranking in nm_mask costs more than a sort.
_NM_COMPARE_MAX_M = 16
_CHUNK = 1 << 20


def _check_fraction(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number in [0, 1], got `{value!r}`") from None
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"`{name}` must be in [0, 1], got `{value!r}`")
    return v


def _round_count(fraction: float, total: int) -> int:
    """round(fraction * total), halves up, clamped to [0, total]."""
    return min(total, max(0, math.floor(fraction * total + 0.5)))


def _abs_flat(w: np.ndarray) -> np.ndarray:
    """|w| flattened (C order) in a floating dtype, rejecting NaN/inf."""
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        if not (np.issubdtype(w.dtype, np.integer) or w.dtype == np.bool_):
            raise ValueError(f"weights must be a real numeric array, got dtype `{w.dtype}`")
        w = w.astype(np.float64)
    a = np.abs(w).reshape(-1)
    if a.size and not np.isfinite(a.max()):
        raise ValueError("weights contain nan or inf")
    return a


def _prune_smallest(a: np.ndarray, k: int) -> np.ndarray:
    """Flat bool array marking exactly ``k`` smallest entries of 1-D ``a`` (ties: lower index).

    O(n) selection with np.partition; extra memory is one copy of ``a`` (freed before the
    masks are built) plus the bool outputs.
    """
    n = a.size
    prune = np.zeros(n, dtype=bool)
    if k <= 0:
        return prune
    if k >= n:
        prune[:] = True
        return prune
    t = np.partition(a, k - 1)[k - 1]
    np.less(a, t, out=prune)
    need = k - int(np.count_nonzero(prune))
    if need > 0:
        ties = np.flatnonzero(a == t)[:need]
        prune[ties] = True
    return prune


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep-mask that zeroes exactly ``round(sparsity * w.size)`` smallest-|w| elements.

    mask = |w| > t, where t is the k-th smallest |w| (k = round(sparsity * n), halves up);
    elements equal to t are pruned in flat-index order until exactly k are pruned.
    Selection is O(n) (np.partition); peak extra memory is about two copies of |w|.
    """
    s = _check_fraction(sparsity, "sparsity")
    w = np.asarray(w)
    a = _abs_flat(w)
    prune = _prune_smallest(a, _round_count(s, a.size))
    del a
    np.logical_not(prune, out=prune)
    return prune.reshape(w.shape)


def global_threshold_masks(
    weights: Sequence[np.ndarray],
    sparsity: float,
    max_layer_sparsity: float | None = None,
    *,
    strict: bool = False,
) -> list[np.ndarray]:
    """Keep-masks from one magnitude threshold shared by all tensors.

    Exactly k = round(sparsity * N) elements are pruned over all N elements, smallest |w|
    first in the order (|w|, tensor index, flat index).

    With ``max_layer_sparsity = c`` no tensor i loses more than floor(c * n_i) elements: tensors
    that would exceed their cap are pruned to the cap and the remainder of k is taken from the
    others (greedy in the same global order, skipping full tensors), so the global count still
    holds whenever k <= sum(floor(c * n_i)). Otherwise every tensor is pruned to its cap, the
    achieved sparsity is lower than asked, and a ``RuntimeWarning`` says so (``strict=True``
    raises ``ValueError`` instead).

    Memory: one concatenated copy of all |w| plus one partition copy.
    """
    s = _check_fraction(sparsity, "sparsity")
    cap_frac = None if max_layer_sparsity is None else _check_fraction(
        max_layer_sparsity, "max_layer_sparsity"
    )
    arrays = [np.asarray(w) for w in weights]
    if not arrays:
        return []
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    total = int(sizes.sum())
    k = _round_count(s, total)
    if cap_frac is None:
        caps = sizes.copy()
    else:
        caps = np.floor(cap_frac * sizes + 1e-9).astype(np.int64)
        caps = np.minimum(caps, sizes)

    prunes: list[np.ndarray | None] = [None] * len(arrays)
    cap_total = int(caps.sum())
    if k > cap_total:
        msg = (
            f"global sparsity `{s}` is unreachable with max_layer_sparsity `{cap_frac}`: "
            f"at most {cap_total} of {total} elements can be pruned "
            f"(achieved sparsity {cap_total / max(total, 1):.6f})"
        )
        if strict:
            raise ValueError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        for i, a in enumerate(arrays):
            prunes[i] = _prune_smallest(_abs_flat(a), int(caps[i]))
    else:
        active = list(range(len(arrays)))
        remaining = k
        # Each round caps every tensor the unconstrained selection overfills; capped tensors
        # stay saturated because the shared threshold only rises as the others absorb the
        # remainder. Ends after at most len(weights) rounds (usually one or two).
        while active:
            flat = np.concatenate([_abs_flat(arrays[i]) for i in active])
            prune = _prune_smallest(flat, remaining)
            del flat
            offsets = np.concatenate([[0], np.cumsum(sizes[active])])
            counts = [
                np.count_nonzero(prune[offsets[j]: offsets[j + 1]]) for j in range(len(active))
            ]
            over = [j for j, i in enumerate(active) if counts[j] > caps[i]]
            if not over:
                for j, i in enumerate(active):
                    prunes[i] = prune[offsets[j]: offsets[j + 1]]
                break
            for j in over:
                i = active[j]
                prunes[i] = _prune_smallest(_abs_flat(arrays[i]), int(caps[i]))
                remaining -= int(caps[i])
            over_set = {active[j] for j in over}
            active = [i for i in active if i not in over_set]

    masks = []
    for a, p in zip(arrays, prunes, strict=True):
        assert p is not None
        masks.append(np.logical_not(p).reshape(a.shape))
    return masks


def _normalize_axis(axis: int, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"`axis` must be an integer, got `{axis!r}`")
    if not -ndim <= axis < ndim:
        raise ValueError(f"`axis` {axis} is out of range for a tensor of rank {ndim}")
    return int(axis) % ndim


def nm_mask(w: np.ndarray, n: int, m: int, axis: int) -> tuple[np.ndarray, int]:
    """N:M keep-mask: in each run of ``m`` consecutive elements along ``axis`` keep the ``n``
    largest |w| (ties: the lower index is pruned first).

    When ``w.shape[axis]`` is not a multiple of ``m`` the trailing ``shape[axis] % m`` elements
    of every line are kept dense; that remainder length is returned with the mask.
    Returns ``(mask, remainder)``.
    """
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"`{name}` must be an integer, got `{v!r}`")
    n, m = int(n), int(m)
    if m < 1 or not 0 <= n <= m:
        raise ValueError(f"n:m must satisfy 0 <= n <= m and m >= 1, got `{n}:{m}`")
    w = np.asarray(w)
    if w.ndim == 0:
        raise ValueError("nm_mask needs a tensor of rank >= 1")
    ax = _normalize_axis(axis, w.ndim)
    a = _abs_flat(w).reshape(w.shape)
    a = np.moveaxis(a, ax, -1)
    length = a.shape[-1]
    full = (length // m) * m
    remainder = length - full
    keep = np.ones(a.shape, dtype=bool)
    n_prune = m - n
    if full and n_prune:
        g = a[..., :full].reshape(-1, m)
        if m <= _NM_COMPARE_MAX_M:
            # rank_i = #{j < i: a_j <= a_i} + #{j > i: a_j < a_i}: position of element i in a
            # stable ascending sort of its group, with (m-1) * size column comparisons.
            rank = np.zeros(g.shape, dtype=np.int16)
            for i in range(m):
                gi = g[:, i]
                for j in range(m):
                    if j < i:
                        rank[:, i] += g[:, j] <= gi
                    elif j > i:
                        rank[:, i] += g[:, j] < gi
            gkeep = rank >= n_prune
        else:
            order = np.argsort(g, axis=-1, kind="stable")
            gkeep = np.ones(g.shape, dtype=bool)
            np.put_along_axis(gkeep, order[:, :n_prune], False, axis=-1)
        keep[..., :full] = gkeep.reshape(a.shape[:-1] + (full,))
    return np.moveaxis(keep, -1, ax), remainder


def channel_scores(w: np.ndarray, axis: int, criterion: str = "l1") -> np.ndarray:
    """Per-channel importance along ``axis``: the L1 (sum |w|) or L2 (sqrt(sum w^2)) norm over
    all other axes. Returns float64 of length ``w.shape[axis]``."""
    if criterion not in ("l1", "l2"):
        raise ValueError(f"unknown criterion `{criterion}`; valid choices: `l1`, `l2`")
    w = np.asarray(w)
    if w.ndim == 0:
        raise ValueError("channel_scores needs a tensor of rank >= 1")
    ax = _normalize_axis(axis, w.ndim)
    a = _abs_flat(w).reshape(w.shape)
    other = tuple(i for i in range(w.ndim) if i != ax)
    if criterion == "l1":
        return np.sum(a, axis=other, dtype=np.float64)
    return np.sqrt(np.sum(np.square(a, dtype=np.float64), axis=other))


def channels_to_keep(scores: np.ndarray, sparsity: float, round_to: int = 1) -> np.ndarray:
    """Sorted int64 indices of the channels to keep.

    Removes round(sparsity * C) lowest-scoring channels (halves up; ties: lower index removed
    first), then rounds the kept count UP to a multiple of ``round_to``, never above C and never
    below min(round_to, C) (so at least one channel survives when C > 0).
    """
    s = _check_fraction(sparsity, "sparsity")
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1:
        raise ValueError(f"`round_to` must be a positive integer, got `{round_to!r}`")
    sc = np.asarray(scores)
    if sc.ndim != 1:
        raise ValueError(f"`scores` must be 1-D, got shape `{sc.shape}`")
    c = sc.size
    if c == 0:
        return np.zeros(0, dtype=np.int64)
    sc = sc.astype(np.float64)
    if not np.isfinite(sc).all():
        raise ValueError("scores contain nan or inf")
    r = int(round_to)
    n_keep = c - _round_count(s, c)
    n_keep = -(-n_keep // r) * r
    n_keep = max(min(n_keep, c), min(r, c), 1)
    order = np.argsort(sc, kind="stable")
    return np.sort(order[c - n_keep:]).astype(np.int64)


def _sum_squares(x: np.ndarray) -> float:
    """sum(x^2) accumulated in float64, in chunks so a float32 tensor is never copied whole."""
    flat = np.asarray(x).reshape(-1)
    total = 0.0
    for i in range(0, flat.size, _CHUNK):
        c = flat[i: i + _CHUNK].astype(np.float64)
        total += float(np.dot(c, c))
    return total


def relative_error(w: np.ndarray, w2: np.ndarray) -> float:
    """||w - w2||_F / ||w||_F. 0.0 when w and w2 are both all-zero; inf when only w is."""
    w = np.asarray(w)
    w2 = np.asarray(w2)
    if w.shape != w2.shape:
        raise ValueError(f"shape mismatch: `{w.shape}` vs `{w2.shape}`")
    a = w.reshape(-1)
    b = w2.reshape(-1)
    num = 0.0
    for i in range(0, a.size, _CHUNK):
        d = a[i: i + _CHUNK].astype(np.float64) - b[i: i + _CHUNK].astype(np.float64)
        num += float(np.dot(d, d))
    den = _sum_squares(w)
    if not (math.isfinite(num) and math.isfinite(den)):
        raise ValueError("weights contain nan or inf")
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return math.sqrt(num / den)
