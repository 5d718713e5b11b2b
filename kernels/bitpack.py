"""Fixed-width bit packing of small unsigned integers (1..8 bits each).

Stream layout: little-endian bit order. Value ``i`` occupies stream bits
``[i*bits, (i+1)*bits)``, least significant bit first, and stream bit ``k`` is bit ``k % 8`` of
byte ``k // 8`` (``np.packbits(..., bitorder="little")`` order). The unused high bits of the
last byte are zero. ``n`` values take exactly ``ceil(n * bits / 8)`` bytes.

Both directions work on groups of 8 values, which fill exactly ``bits`` bytes: a group is
assembled in one uint64 lane (8 * bits <= 64) with vectorized shifts, so there is no loop over
elements, only over the 8 positions of a group.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_bits", "packed_size", "unpack_bits"]

_BLOCK = 1 << 16  # groups of 8 values per vectorized block: keeps temporaries in cache


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"bits must be an integer in 1..8, got `{bits!r}`")
    bits = int(bits)
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got `{bits}`")
    return bits


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` values of ``bits`` bits take once packed."""
    bits = _check_bits(bits)
    if count < 0:
        raise ValueError(f"count must be >= 0, got `{count}`")
    return (int(count) * bits + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned integers, each ``< 2**bits``, into a little-endian bitstream (uint8)."""
    bits = _check_bits(bits)
    v = np.asarray(values)
    if v.dtype.kind not in "ui":
        raise ValueError(f"values must be an integer array, got dtype `{v.dtype}`")
    v = v.reshape(-1)
    n = v.size
    if n == 0:
        return np.zeros(0, np.uint8)
    lo, hi = v.min(), v.max()
    if lo < 0 or hi >= (1 << bits):
        raise ValueError(
            f"values must lie in [0, {1 << bits}) for bits={bits}, got range [{lo}, {hi}]"
        )
    if bits == 8:
        return v.astype(np.uint8)
    groups = -(-n // 8)
    out = np.empty((groups, bits), np.uint8)
    full = n // 8
    _pack_groups(v[: full * 8].reshape(full, 8), bits, out[:full])
    if full < groups:
        tail = np.zeros((1, 8), v.dtype)
        tail[0, : n - full * 8] = v[full * 8 :]
        _pack_groups(tail, bits, out[full:])
    return out.reshape(-1)[: packed_size(n, bits)]


def _pack_groups(groups: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Pack rows of 8 values into rows of ``bits`` bytes, a cache-sized block at a time."""
    for start in range(0, groups.shape[0], _BLOCK):
        g = groups[start : start + _BLOCK]
        acc = g[:, 0].astype(np.uint64)
        for j in range(1, 8):
            acc |= g[:, j].astype(np.uint64) << np.uint64(j * bits)
        out[start : start + _BLOCK] = acc.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :bits]


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` values of ``bits`` bits, as uint8.

    ``packed`` may be longer than needed (the rest is ignored), never shorter.
    """
    bits = _check_bits(bits)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got `{count!r}`")
    count = int(count)
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise ValueError(f"packed must be a uint8 array, got dtype `{p.dtype}`")
    p = p.reshape(-1)
    need = packed_size(count, bits)
    if p.size < need:
        raise ValueError(
            f"packed data too short: {count} values of {bits} bits need {need} bytes, got {p.size}"
        )
    if count == 0:
        return np.zeros(0, np.uint8)
    if bits == 8:
        return p[:count].copy()
    groups = -(-count // 8)
    full = min(groups, need // bits)  # groups whose bytes are all present
    out = np.empty((groups, 8), np.uint8)
    src = p[: full * bits].reshape(full, bits)
    mask = np.uint64((1 << bits) - 1)
    for start in range(0, full, _BLOCK):
        stop = min(start + _BLOCK, full)
        _unpack_groups(src[start:stop], bits, mask, out[start:stop])
    if full < groups:
        tail = np.zeros((1, bits), np.uint8)
        tail[0, : need - full * bits] = p[full * bits : need]
        _unpack_groups(tail, bits, mask, out[full:])
    return out.reshape(-1)[:count]


def _unpack_groups(src: np.ndarray, bits: int, mask: np.uint64, out: np.ndarray) -> None:
    rows = np.zeros((src.shape[0], 8), np.uint8)
    rows[:, :bits] = src
    acc = rows.view("<u8").reshape(-1)
    for j in range(8):
        out[:, j] = (acc >> np.uint64(j * bits)) & mask
