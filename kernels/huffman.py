"""Canonical, length-limited Huffman coding of byte streams as raw DEFLATE segments (numpy + zlib).

Code lengths
    :func:`code_lengths` runs package-merge (the boundary / coin-collector form), which gives
    the optimal prefix code whose longest codeword is at most ``max_len`` bits. Each of the
    ``max_len`` levels is one vectorized merge, so the cost is O(max_len * n log n) numpy work
    for n used symbols, with no Python loop over symbols.

Codes
    Canonical, DEFLATE ordering: symbols sorted by (length, symbol value) receive consecutive
    codes, shorter codes first. Only the lengths need to be stored.

Stream layout
    Symbols are bytes (0..255). The stream is cut into segments of ``segment_size`` symbols
    (the last one may be shorter); segments are stored back to back, each a complete raw
    DEFLATE stream (RFC 1951) of exactly one block: BFINAL=1, BTYPE=10 (dynamic Huffman).
    The literal/length code covers the 256 byte values plus end-of-block (symbol 256, count 1
    in the histogram), HLIT=0 (257 codes), HDIST=0 (one distance code of length 0: the block
    holds literals only), lengths from :func:`code_lengths` with ``max_len`` <= 15. The code
    length code (alphabet 0..18) is package-merge too (at most 7 bits, forced to two used
    symbols because zlib rejects an incomplete one); the 258 code lengths are run-length coded
    with 16 (repeat previous 3..6), 17 (3..10 zeros) and 18 (11..138 zeros). Then one codeword
    per symbol, then end-of-block.

    Runs: where it makes the segment smaller, runs of one symbol longer than a threshold
    (:data:`RUN_THRESHOLDS`, each tried and costed exactly from the resulting histogram) are
    written as the first symbol as a literal, then matches of length 258 (and one shorter
    tail match of 3..257, or up to 2 literals) at distance 1. The literal/length code then
    has HLIT=257+used length codes, and the one distance code has length 1. This is what
    makes a fully pruned layer or a nearly all-zero code stream cost bytes, not one bit a
    symbol. Bits are packed LSB-first with Huffman codewords
    bit-reversed, exactly as DEFLATE does; the last byte of a segment is zero-padded. Each
    segment has its own code (from its own histogram): a header of about 15-25 bytes for
    4-bit codes, 50-140 for int8. Any DEFLATE decoder reads a segment:
    ``zlib.decompress(segment, wbits=-15)``.

    ``segment_bytes[i]`` is the byte length of segment ``i``; ``checksums[i]`` the CRC-32 of
    ``i`` (8 bytes, little-endian) followed by the segment's decoded symbols, continued from
    ``seed`` (zlib.crc32's start value): segments cannot trade places, and a caller binds its
    header to the data by passing that header's CRC-32. (Adler-32 was measured no faster here,
    and it misses small local changes such as -1, +3, -2 on three neighbouring symbols.)

Segment size
    :func:`auto_segment_size` picks a power of two in [2**18, 2**20] that still gives at least
    16 segments where the stream is long enough: with ~7 bits a symbol the header costs
    < 0.05%, and a 4M-symbol tensor still spreads over 16 threads.

Decoder
    zlib's inflate, one ``decompressobj(-15)`` per segment, run on a thread pool (zlib releases
    the GIL), each copying its output into its slice of one preallocated array (a lone segment
    is returned without a copy, read-only). Measured with ``bench/bench_codec.py`` on the
    2-core development machine: ~200 M symbols/s of CPU time on one core (inflate plus CRC-32),
    for 5-bit k-means and int8 streams alike.

Safety
    :func:`decode` checks the segment table against the payload and the declared count before
    it allocates: a segment of ``b`` bytes may declare at most ``1032 * b`` symbols (a match
    of 258 takes at least 2 bits), so the output is bounded by the payload size (and by
    ``max_count``). Each segment is inflated with ``max_length = n + 1``: it must end (final
    block done) after exactly its ``n`` symbols, with no byte left over; then its checksum.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_SEGMENT_SIZE",
    "CodedSize",
    "HuffmanError",
    "HuffmanStream",
    "auto_segment_size",
    "canonical_codes",
    "code_lengths",
    "decode",
    "encode",
    "entropy_bits",
]

MAX_CODE_LEN = 16  # longest codeword code_lengths builds (DEFLATE itself allows 15)
DEFLATE_MAX_LEN = 15
MAX_ALPHABET = 1 << 16
MAX_SEGMENT_SIZE = 1 << 24
EOB = 256  # DEFLATE end-of-block symbol
_CL_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)


class HuffmanError(ValueError):
    """A Huffman stream or its metadata is malformed, inconsistent or corrupt."""


# ---------------------------------------------------------------------------------------------
# statistics and sizes


def entropy_bits(counts: np.ndarray) -> float:
    """Order-0 (memoryless) entropy of a histogram, in bits per symbol (0.0 when empty)."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    if np.any(c < 0):
        raise ValueError("counts must be non-negative")
    total = c.sum()
    if total <= 0:
        return 0.0
    p = c[c > 0] / total
    return float(-(p * np.log2(p)).sum())


@dataclass(frozen=True)
class CodedSize:
    """Stored size, in bytes, of a coded stream and where the bytes go.

    ``data`` the symbol codewords (bits / 8); ``headers`` the DEFLATE block headers,
    end-of-block codes and byte padding of all segments; ``index`` the segment table
    (byte length and checksum, 4 bytes each per segment).
    """

    data: float
    headers: float
    index: int

    @property
    def payload(self) -> int:
        return round(self.data + self.headers)

    @property
    def overhead(self) -> float:
        return self.headers + self.index

    @property
    def total(self) -> int:
        return self.payload + self.index


def auto_segment_size(count: int) -> int:
    """Symbols per segment for a stream of ``count``: a power of two in [2**18, 2**20],
    doubled while at least 16 segments remain (parallel decode; header overhead < 0.05%)."""
    seg = 1 << 18
    while seg < (1 << 20) and count // (seg * 2) >= 16:
        seg *= 2
    return seg


# ---------------------------------------------------------------------------------------------
# code construction


def _check_counts(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts)
    if c.ndim != 1 or (c.size and c.dtype.kind not in "ui"):
        raise ValueError("counts must be a 1-d integer array")
    c = c.astype(np.int64)
    if c.size and c.min() < 0:
        raise ValueError("counts must be non-negative")
    if c.size > MAX_ALPHABET:
        raise ValueError(f"alphabet of `{c.size}` symbols exceeds the limit of {MAX_ALPHABET}")
    return c


def _check_int(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got `{v!r}`")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got `{v}`")
    return int(v)


def code_lengths(counts: np.ndarray, max_len: int = 15) -> np.ndarray:
    """Optimal code lengths (uint8) with no codeword longer than ``max_len`` bits.

    Package-merge: an optimal length-limited prefix code, so ``sum(2**-len) <= 1`` (``== 1``
    with two or more used symbols). Unused symbols (count 0) get length 0; a lone used symbol
    gets length 1; no used symbol, all 0. Ties are broken deterministically (by symbol value).
    """
    c = _check_counts(counts)
    max_len = _check_int("max_len", max_len, 1, MAX_CODE_LEN)
    lengths = np.zeros(c.size, np.uint8)
    used = np.flatnonzero(c)
    n = used.size
    if n == 0:
        return lengths
    if n == 1:
        lengths[used] = 1
        return lengths
    if n > (1 << max_len):
        raise ValueError(
            f"too many used symbols: `{n}` cannot be coded with codes of at most {max_len} bits"
        )
    order = used[np.argsort(c[used], kind="stable")]
    leaves = c[order]
    # Lists from the deepest level (max_len) up to level 1. Each list is the leaves merged with
    # the packages (pairwise sums) of the list below; leaves sort first on equal weight.
    is_leaf_levels = []
    prev = leaves
    is_leaf_levels.append(np.ones(n, bool))
    for _ in range(max_len - 1):
        m = prev.size // 2
        packages = prev[0 : 2 * m : 2] + prev[1 : 2 * m : 2]
        merged = np.concatenate([leaves, packages])
        idx = np.argsort(merged, kind="stable")
        prev = merged[idx]
        is_leaf_levels.append(idx < n)
    # Select the 2n-2 cheapest items of the top list, then walk down: the packages selected
    # at one level select twice as many items of the level below; every selected leaf adds
    # one bit to its symbol's code length.
    depth = np.zeros(n, np.int64)
    take = 2 * n - 2
    for is_leaf in reversed(is_leaf_levels):
        q = int(np.count_nonzero(is_leaf[:take]))
        depth[:q] += 1
        take = 2 * (take - q)
        if take == 0:
            break
    lengths[order] = depth.astype(np.uint8)
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codewords (uint32, MSB-first values) for these lengths; 0 where length is 0.

    DEFLATE ordering: sorted by (length, symbol), each code is the previous one plus one,
    shifted left when the length grows.
    """
    lens = np.asarray(lengths).astype(np.int64).reshape(-1)
    codes = np.zeros(lens.size, np.uint32)
    used = np.flatnonzero(lens)
    if used.size == 0:
        return codes
    max_l = int(lens.max())
    bl_count = np.bincount(lens[used], minlength=max_l + 1)
    next_code = np.zeros(max_l + 1, np.int64)
    code = 0
    for bits in range(1, max_l + 1):
        code = (code + int(bl_count[bits - 1] if bits > 1 else 0)) << 1
        next_code[bits] = code
    order = used[np.lexsort((used, lens[used]))]
    ol = lens[order]
    group_start = np.concatenate([[0], np.cumsum(bl_count)])[ol]  # first index of each length
    rank = np.arange(order.size) - group_start
    codes[order] = (next_code[ol] + rank).astype(np.uint32)
    return codes


def _reverse_bits(codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reverse the low ``lengths`` bits of each code (uint64 result)."""
    v = codes.astype(np.uint64)
    out = np.zeros_like(v)
    for b in range(MAX_CODE_LEN):
        out = (out << np.uint64(1)) | ((v >> np.uint64(b)) & np.uint64(1))
    shift = (MAX_CODE_LEN - lengths.astype(np.int64)).clip(0, MAX_CODE_LEN).astype(np.uint64)
    return np.where(lengths > 0, out >> shift, 0).astype(np.uint64)


# ---------------------------------------------------------------------------------------------
# encoding


@dataclass(frozen=True, eq=False)
class HuffmanStream:
    """An encoded stream: everything :func:`decode` needs.

    ``payload`` uint8, the DEFLATE segments back to back; ``segment_bytes`` uint32 byte length
    of each segment; ``checksums`` uint32 CRC-32 of each segment's symbols (see the module
    docstring; ``seed`` the start value);
    ``count`` symbols in total; ``segment_size`` symbols per segment; ``data_bits`` the bits
    of all symbol codewords (the rest of the payload is headers). The arrays are read-only.
    (No ``==``: it would compare arrays.)
    """

    payload: np.ndarray
    segment_bytes: np.ndarray
    checksums: np.ndarray
    count: int
    segment_size: int
    seed: int
    data_bits: int

    @property
    def n_segments(self) -> int:
        return int(self.segment_bytes.size)

    def segments(self) -> list[bytes]:
        """Each segment's bytes (a complete raw DEFLATE stream)."""
        ends = np.cumsum(self.segment_bytes, dtype=np.int64).tolist()
        data = self.payload.tobytes()
        return [data[a:b] for a, b in zip([0, *ends], ends, strict=False)]

    def coded_size(self) -> CodedSize:
        """Stored size: symbol codes, per-segment DEFLATE headers, and the segment table."""
        data = self.data_bits / 8
        return CodedSize(data=data, headers=self.payload.size - data, index=8 * self.n_segments)


def _rle_lengths(ll: list[int]) -> list[tuple[int, int, int]]:
    """DEFLATE run-length coding of a code length sequence: (symbol, extra value, extra bits)."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(ll)
    while i < n:
        v = ll[i]
        j = i
        while j < n and ll[j] == v:
            j += 1
        run = j - i
        if v == 0:
            while run >= 11:
                r = min(run, 138)
                out.append((18, r - 11, 7))
                run -= r
            if run >= 3:
                out.append((17, run - 3, 3))
                run = 0
            out.extend([(0, 0, 0)] * run)
        else:
            out.append((v, 0, 0))
            run -= 1
            while run >= 3:
                r = min(run, 6)
                out.append((16, r - 3, 2))
                run -= r
            out.extend([(v, 0, 0)] * run)
        i = j
    return out


def _block_header(lengths: np.ndarray, dist_len: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(values, bit counts) of a dynamic-Huffman block header for the literal/length code
    ``lengths`` (257..286 entries) and one distance code of length ``dist_len`` (0: literals
    only; 1: distance 1, the run form), values already in DEFLATE bit order."""
    items = _rle_lengths([*lengths.tolist(), int(dist_len)])
    cl_counts = np.bincount([s for s, _, _ in items], minlength=19).astype(np.int64)
    if np.count_nonzero(cl_counts) < 2:  # zlib rejects a one-code code-length code
        cl_counts[int(np.flatnonzero(cl_counts == 0)[0])] = 1
    cl_len = code_lengths(cl_counts, 7)
    cl_rev = _reverse_bits(canonical_codes(cl_len), cl_len).tolist()
    perm = [int(cl_len[k]) for k in _CL_ORDER]
    hclen = max(4, max(i + 1 for i, v in enumerate(perm) if v))
    vals = [1 | (2 << 1), lengths.size - 257, 0, hclen - 4, *perm[:hclen]]
    bits = [3, 5, 5, 4, *([3] * hclen)]
    cl_len_l = cl_len.tolist()
    for s, extra, nextra in items:
        vals += [cl_rev[s], extra]
        bits += [cl_len_l[s], nextra]
    return np.array(vals, np.uint64), np.array(bits, np.uint64)


_ENC_BLOCK = 1 << 18  # symbols per vectorized packing block (temporaries stay in cache)


def _pack(blocks: list[tuple[np.ndarray, np.ndarray]], total_bits: int) -> np.ndarray:
    """Pack (codes, bit counts) uint64 pairs LSB-first into bytes: codewords are OR-ed into
    64-bit words with ``bitwise_or.reduceat`` over the items that share a word."""
    words = np.zeros(total_bits // 64 + 2, np.uint64)
    base = 0
    one, sixty_three = np.uint64(1), np.uint64(63)
    for c, ln in blocks:
        if c.size == 0:
            continue
        start = np.cumsum(ln)
        start -= ln
        start += np.uint64(base)
        base = int(start[-1]) + int(ln[-1])
        w = start >> np.uint64(6)
        sh = start & sixty_three
        lo = c << sh
        hi = (c >> one) >> (sixty_three - sh)  # the part that spills into the next word
        bnd = np.concatenate([[0], np.flatnonzero(w[1:] != w[:-1]) + 1])
        wu = w[bnd].astype(np.intp)
        words[wu] |= np.bitwise_or.reduceat(lo, bnd)
        words[wu + 1] |= np.bitwise_or.reduceat(hi, bnd)
    assert base == total_bits
    return words.astype("<u8", copy=False).view(np.uint8)[: (total_bits + 7) // 8]


# DEFLATE length codes 257..285 for match lengths 3..258: code, extra bits, extra value
_LEN_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258)
_LEN_XBITS = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0)
_LEN_CODE = np.zeros(259, np.int64)
_LEN_EXTRA = np.zeros(259, np.uint64)
for _i, (_b, _x) in enumerate(zip(_LEN_BASE, _LEN_XBITS, strict=True)):
    _LEN_CODE[_b : _b + (1 << _x)] = 257 + _i
    _LEN_EXTRA[_b : _b + (1 << _x)] = np.arange(1 << _x, dtype=np.uint64)
_LEN_CODE[258], _LEN_EXTRA[258] = 285, 0  # 258 has its own code (284 + 31 would also reach it)
_LEN_NX = np.array([0] * 257 + list(_LEN_XBITS), np.uint64)  # extra bits per lit/len symbol
# Runs of one symbol at least this long become distance-1 matches; each candidate is costed
# exactly from its histogram and the cheapest form of the segment is written.
RUN_THRESHOLDS = (8, 32, 128)
MAX_EXPANSION = 1032  # most symbols one payload byte can decode to (258 per 2-bit match)


@dataclass
class _Runs:
    """The runs of a segment that become matches: one literal, then matches of 258, then a
    tail (a shorter match of 3..257, or up to 2 literals)."""

    start: np.ndarray  # run start positions
    length: np.ndarray  # run lengths
    value: np.ndarray  # the repeated symbol
    full: np.ndarray  # matches of 258
    tail: np.ndarray  # tail match length (0: none)
    lits: np.ndarray  # tail literals (0..2)


def _runs(starts: np.ndarray, lengths: np.ndarray, s: np.ndarray, threshold: int) -> _Runs:
    keep = lengths - 1 >= threshold
    st, ln = starts[keep], lengths[keep]
    r = ln - 1
    full, rem = r // 258, r % 258
    tail = np.where(rem >= 3, rem, 0)
    return _Runs(st, ln, s[st].astype(np.int64), full, tail, np.where(rem >= 3, 0, rem))


def _run_counts(s_counts: np.ndarray, runs: _Runs) -> np.ndarray:
    """Literal/length histogram (286 + EOB) of the segment with ``runs`` as matches."""
    counts = np.zeros(286, np.int64)
    counts[:256] = s_counts[:256]
    # every symbol of a run but its first literal and tail literals is covered by matches
    np.subtract.at(counts, runs.value, runs.length - 1 - runs.lits)
    counts[285] += int(runs.full.sum())
    t = runs.tail[runs.tail > 0]
    np.add.at(counts, _LEN_CODE[t], 1)
    counts[EOB] = 1
    return counts


def _cost(counts: np.ndarray, max_len: int, dist_len: int) -> tuple[int, np.ndarray]:
    """Bits of a whole segment (header, codewords, extra and distance bits, without the
    end-of-block code) for this histogram, and its literal/length code lengths."""
    used = np.flatnonzero(counts[257:286]) if dist_len else np.zeros(0, np.int64)
    nlit = 257 + (int(used[-1]) + 1 if used.size else 0)
    lengths = code_lengths(counts[:nlit], max_len)
    _, hb = _block_header(lengths, dist_len)
    c = counts[:nlit]
    bits = int((c * (lengths.astype(np.int64) + _LEN_NX[:nlit].astype(np.int64))).sum()) - int(lengths[EOB])
    return int(hb.sum()) + bits + int(c[257:].sum()) * dist_len, lengths


def _tokens(s: np.ndarray, runs: _Runs) -> tuple[np.ndarray, np.ndarray]:
    """(lit/len symbol, extra value) per token, in stream order: the symbols outside ``runs``
    as literals, each run as literal + matches + tail."""
    n = s.size
    covered = np.zeros(n + 1, np.int64)  # +1 at a run's first covered position, -1 after it
    first = runs.start + 1
    end = runs.start + runs.length - runs.lits
    np.add.at(covered, first, 1)
    np.add.at(covered, end, -1)
    lit_mask = np.cumsum(covered[:n]) == 0
    # a token's position: literals at their own index, a run's matches at its first covered
    # index (ordered among themselves by a sub-index)
    lit_pos = np.flatnonzero(lit_mask)
    nm = runs.full + (runs.tail > 0)
    m_pos = np.repeat(first, nm)
    within = np.arange(m_pos.size) - np.repeat(np.cumsum(nm) - nm, nm)
    m_len = np.where(within < np.repeat(runs.full, nm), 258, np.repeat(runs.tail, nm))
    pos = np.concatenate([lit_pos, m_pos])
    sub = np.concatenate([np.zeros(lit_pos.size, np.int64), within])
    order = np.lexsort((sub, pos))
    sym = np.concatenate([s[lit_pos].astype(np.int64), _LEN_CODE[m_len]])[order]
    extra = np.concatenate([np.zeros(lit_pos.size, np.uint64), _LEN_EXTRA[m_len]])[order]
    return sym, extra


def _deflate_segment(s: np.ndarray, max_len: int) -> tuple[np.ndarray, int]:
    """One raw DEFLATE stream (a single dynamic-Huffman block) of the bytes ``s``; and the
    bits its symbol codewords take. Literals only, or, where it is smaller, with long runs of
    one symbol as distance-1 matches (each form costed exactly from its histogram)."""
    s_counts = np.bincount(s, minlength=257).astype(np.int64)
    counts = s_counts.copy()
    counts[EOB] = 1
    best_bits, lengths = _cost(counts, max_len, 0)
    best = None
    if RUN_THRESHOLDS and s.size > min(RUN_THRESHOLDS):
        starts = np.concatenate([[0], np.flatnonzero(s[1:] != s[:-1]) + 1])
        run_len = np.diff(np.append(starts, s.size))
        for t in RUN_THRESHOLDS:  # ascending: once no run is long enough, none of the rest is
            runs = _runs(starts, run_len, s, t)
            if runs.start.size == 0:
                break
            c = _run_counts(s_counts, runs)
            bits, ln = _cost(c, max_len, 1)
            if bits < best_bits:
                best_bits, lengths, best, counts = bits, ln, runs, c
    rev = _reverse_bits(canonical_codes(lengths), lengths)
    lens64 = lengths.astype(np.uint64)
    hv, hb = _block_header(lengths, 0 if best is None else 1)
    blocks = [(hv, hb)]
    if best is None:  # one codeword a symbol
        data_bits = int((counts[:EOB] * lengths[:EOB].astype(np.int64)).sum())
        for b0 in range(0, s.size, _ENC_BLOCK):
            blk = s[b0 : b0 + _ENC_BLOCK]
            blocks.append((rev[blk], lens64[blk]))
    else:  # a codeword, then a match's extra length bits and its 1-bit distance code (0: distance 1)
        sym, extra = _tokens(s, best)
        val = rev[sym] | (extra << lens64[sym])
        nb = lens64[sym] + _LEN_NX[sym] + (sym > EOB).astype(np.uint64)
        data_bits = int(nb.sum())
        blocks.extend((val[b0 : b0 + _ENC_BLOCK], nb[b0 : b0 + _ENC_BLOCK]) for b0 in range(0, sym.size, _ENC_BLOCK))
    total = int(hb.sum()) + data_bits + int(lengths[EOB])
    blocks.append((rev[EOB : EOB + 1], lens64[EOB : EOB + 1]))
    return _pack(blocks, total), data_bits


def _checksum(data, index: int, seed: int) -> int:
    return zlib.crc32(data, zlib.crc32(index.to_bytes(8, "little"), seed))


def encode(
    symbols: np.ndarray, segment_size: int | None = None, *, max_len: int = 15, seed: int = 0
) -> HuffmanStream:
    """Huffman-code a byte stream (integers in 0..255) into raw DEFLATE segments.

    Each segment gets the optimal length-limited code of its own histogram (plus end-of-block)
    and its checksum (CRC-32 of index and symbols, continued from ``seed``). ``segment_size``
    None: :func:`auto_segment_size`.
    Deterministic: the same symbols give the same bytes.
    """
    sym = np.asarray(symbols)
    if sym.size and sym.dtype.kind not in "ui":
        raise ValueError(f"symbols must be an integer array, got dtype `{sym.dtype}`")
    sym = sym.reshape(-1)
    if sym.size and (int(sym.min()) < 0 or int(sym.max()) > 255):
        raise ValueError(f"symbols must lie in [0, 256), got range [{sym.min()}, {sym.max()}]")
    sym = np.ascontiguousarray(sym, dtype=np.uint8)
    count = int(sym.size)
    seg = auto_segment_size(count) if segment_size is None else segment_size
    seg = _check_int("segment_size", seg, 1, MAX_SEGMENT_SIZE)
    max_len = _check_int("max_len", max_len, 9, DEFLATE_MAX_LEN)  # 9: 257 symbols must fit
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    parts, sizes, checks, data_bits = [], [], [], 0
    for i0 in range(0, count, seg):
        s = sym[i0 : i0 + seg]
        part, bits = _deflate_segment(s, max_len)
        parts.append(part)
        sizes.append(part.size)
        checks.append(_checksum(s, len(checks), seed))
        data_bits += bits
    payload = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    segment_bytes = np.array(sizes, np.uint32)
    checksums = np.array(checks, np.uint32)
    for a in (payload, segment_bytes, checksums):
        a.setflags(write=False)
    return HuffmanStream(payload, segment_bytes, checksums, count, seg, seed, data_bits)


# ---------------------------------------------------------------------------------------------
# decoding


def _as_buffer(payload) -> memoryview:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return memoryview(payload).cast("B")
    p = np.asarray(payload)
    if p.dtype != np.uint8 or p.ndim != 1:
        raise HuffmanError("payload must be a 1-d uint8 array or bytes")
    return memoryview(np.ascontiguousarray(p))


def _as_u32(name: str, a, n: int) -> list[int]:
    arr = np.asarray(a)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "ui"):
        raise HuffmanError(f"{name} must be a 1-d integer array")
    if arr.size != n:
        raise HuffmanError(f"{name} has {arr.size} entries, the stream has {n} segments")
    if arr.dtype != np.uint32 and arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 2**32):
        raise HuffmanError(f"{name} entries must be uint32")
    return arr.tolist()


def decode(
    payload,
    segment_bytes: np.ndarray,
    count: int,
    segment_size: int,
    checksums: np.ndarray | None = None,
    *,
    seed: int = 0,
    max_count: int | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Decode the segments into a uint8 array of ``count`` symbols.

    The segment table is checked against the payload and ``count`` (at most
    :data:`MAX_EXPANSION` symbols a payload byte) before anything proportional to ``count``
    is allocated. ``threads`` None: ``min(cpu count, segments)``; zlib releases the GIL, so segments decode in parallel.
    Any inconsistency, DEFLATE error or checksum mismatch raises :class:`HuffmanError`.
    """
    try:
        seg = _check_int("segment_size", segment_size, 1, MAX_SEGMENT_SIZE)
        count = _check_int("count", count, 0, 2**62)
        if threads is not None:
            threads = _check_int("threads", threads, 1, 1024)
    except ValueError as e:
        if "threads" in str(e):
            raise ValueError(f"threads must be a positive integer or None, got `{threads!r}`") from None
        raise HuffmanError(str(e)) from None
    if max_count is not None and count > max_count:
        raise HuffmanError(f"count `{count}` exceeds the declared maximum `{max_count}`")
    data = _as_buffer(payload)
    n_seg = -(-count // seg)
    sizes = _as_u32("segment table", segment_bytes, n_seg)
    checks = None if checksums is None else _as_u32("checksum table", checksums, n_seg)
    if sum(sizes) != data.nbytes:
        raise HuffmanError(f"segments add up to {sum(sizes)} bytes, the payload has {data.nbytes}")
    starts = [0] * n_seg
    for i in range(1, n_seg):
        starts[i] = starts[i - 1] + sizes[i - 1]
    counts = [seg] * n_seg
    if n_seg:
        counts[-1] = count - (n_seg - 1) * seg
    for i in range(n_seg):
        if counts[i] > MAX_EXPANSION * sizes[i]:
            raise HuffmanError(
                f"segment {i} declares {counts[i]} symbols, more than its {sizes[i]} bytes can hold"
            )

    def inflate(i: int) -> bytes | str:
        d = zlib.decompressobj(-15)
        try:
            out = d.decompress(data[starts[i] : starts[i] + sizes[i]], counts[i] + 1)
        except zlib.error as e:
            return f"segment {i} is not valid DEFLATE ({e})"
        if len(out) > counts[i]:
            return f"segment {i} decodes to more than its {counts[i]} symbols"
        if len(out) < counts[i]:
            return f"segment {i} ends after {len(out)} of its {counts[i]} symbols"
        if not d.eof:
            return f"segment {i} does not end after its {counts[i]} symbols"
        if d.unused_data:
            return f"segment {i} has {len(d.unused_data)} bytes after its end"
        if checks is not None and _checksum(out, i, seed) != checks[i]:
            return f"segment {i} checksum mismatch"
        return out

    if n_seg == 1:  # no copy: the array reads the inflated bytes
        r = inflate(0)
        if isinstance(r, str):
            raise HuffmanError(r)
        return np.frombuffer(r, np.uint8)
    out = np.empty(count, np.uint8)

    def work(i: int) -> str | None:
        r = inflate(i)
        if isinstance(r, str):
            return r
        out[i * seg : i * seg + counts[i]] = np.frombuffer(r, np.uint8)
        return None

    n_threads = min(threads or os.cpu_count() or 1, n_seg)
    if n_threads <= 1:
        errors = [work(i) for i in range(n_seg)]
    else:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            errors = list(pool.map(work, range(n_seg)))
    for e in errors:
        if e is not None:
            raise HuffmanError(e)
    return out
