"""Tests for onnxzip.kernels.huffman: optimality, DEFLATE layout, round trips, hostile input."""

from __future__ import annotations

import heapq
import itertools
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxzip.kernels import huffman as H
from onnxzip.kernels.huffman import (
    HuffmanError,
    HuffmanStream,
    auto_segment_size,
    canonical_codes,
    code_lengths,
    decode,
    encode,
    entropy_bits,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=100)


def _decode(s: HuffmanStream, **kw) -> np.ndarray:
    kw.setdefault("checksums", s.checksums)
    kw.setdefault("seed", s.seed)
    return decode(s.payload, s.segment_bytes, s.count, s.segment_size, **kw)


def _kraft_sum_scaled(lengths: np.ndarray, scale: int = 32) -> int:
    """sum(2**-len) * 2**scale, exactly."""
    nz = lengths[lengths > 0].astype(np.int64)
    return int(np.sum(np.left_shift(1, scale - nz)))


def _huffman_cost(counts) -> int:
    """Total bits of an unrestricted optimal code: sum of the merge weights (heap Huffman)."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) <= 1:
        return sum(heap)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def _cost(counts, lengths) -> int:
    return int(np.sum(np.asarray(counts, np.int64) * lengths.astype(np.int64)))


def _sample(rng: np.random.Generator, kind: str, alphabet: int, n: int) -> np.ndarray:
    if kind == "uniform":
        x = rng.integers(0, alphabet, n)
    elif kind == "skewed":  # one symbol ~99%, the rest rare
        x = np.where(rng.random(n) < 0.99, alphabet // 2, rng.integers(0, alphabet, n))
    elif kind == "geometric":
        x = np.minimum(rng.geometric(0.35, n) - 1, alphabet - 1)
    else:  # zipf-like heavy tail
        x = np.minimum(rng.zipf(1.3, n) - 1, alphabet - 1)
    return x.astype(np.uint8 if alphabet <= 256 else np.uint16)


# --------------------------------------------------------------------------- code lengths


def test_classic_example_and_canonical_codes():
    lengths = code_lengths(np.array([5, 9, 12, 13, 16, 45]))
    np.testing.assert_array_equal(lengths, [4, 4, 3, 3, 3, 1])
    np.testing.assert_array_equal(canonical_codes(lengths), [14, 15, 4, 5, 6, 0])
    # RFC 1951 section 3.2.2 example: lengths (3,3,3,3,3,2,4,4) for symbols A..H
    codes = canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    np.testing.assert_array_equal(codes, [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111])


def test_degenerate_histograms():
    np.testing.assert_array_equal(code_lengths(np.zeros(5, np.int64)), np.zeros(5))
    np.testing.assert_array_equal(code_lengths(np.array([0, 0, 7, 0])), [0, 0, 1, 0])
    np.testing.assert_array_equal(code_lengths(np.array([3, 0, 1])), [1, 0, 1])
    assert code_lengths(np.zeros(0, np.int64)).size == 0
    assert code_lengths(np.array([1, 2, 3])).dtype == np.uint8


@SETTINGS
@given(
    counts=st.lists(st.integers(0, 10**9), min_size=1, max_size=300),
    max_len=st.integers(9, 16),
)
def test_lengths_are_optimal_when_the_limit_does_not_bind(counts, max_len):
    c = np.array(counts, np.int64)
    lengths = code_lengths(c, max_len)
    used = int(np.count_nonzero(c))
    assert np.all((lengths > 0) == (c > 0))
    assert int(lengths.max()) <= max_len
    if used >= 2:
        assert _kraft_sum_scaled(lengths) == 1 << 32  # optimal codes are complete
        assert _cost(c, lengths) >= _huffman_cost(c)
        if max(_unlimited_depths([k for k in counts if k])) <= max_len:  # limit not binding
            assert _cost(c, lengths) == _huffman_cost(c)


@SETTINGS
@given(
    counts=st.lists(st.integers(1, 1000), min_size=2, max_size=6),
    max_len=st.integers(2, 4),
)
def test_limited_lengths_match_brute_force(counts, max_len):
    n = len(counts)
    if n > 1 << max_len:
        return
    c = np.array(counts, np.int64)
    best = min(
        _cost(c, np.array(ls))
        for ls in itertools.product(range(1, max_len + 1), repeat=n)
        if sum(2.0**-k for k in ls) <= 1.0
    )
    lengths = code_lengths(c, max_len)
    assert int(lengths.max()) <= max_len
    assert _kraft_sum_scaled(lengths) <= 1 << 32
    assert _cost(c, lengths) == best


def test_fibonacci_counts_hit_the_limit():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    c = np.array(fib, np.int64)
    assert max(_unlimited_depths(fib)) == 29  # unrestricted Huffman would need 29 bits
    for max_len in (5, 8, 15):
        lengths = code_lengths(c, max_len)
        assert int(lengths.max()) == max_len
        assert _kraft_sum_scaled(lengths) == 1 << 32
    with pytest.raises(ValueError, match="cannot be coded with codes of at most 4 bits"):
        code_lengths(c, 4)  # 30 symbols need at least 5 bits


def _unlimited_depths(counts) -> list[int]:
    heap = [(int(w), i, [i]) for i, w in enumerate(counts)]
    heapq.heapify(heap)
    depth = [0] * len(counts)
    while len(heap) > 1:
        w1, i1, s1 = heapq.heappop(heap)
        w2, i2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            depth[s] += 1
        heapq.heappush(heap, (w1 + w2, min(i1, i2), s1 + s2))
    return depth


def test_bad_histograms_raise():
    with pytest.raises(ValueError, match="non-negative"):
        code_lengths(np.array([1, -1]))
    with pytest.raises(ValueError, match="1-d integer"):
        code_lengths(np.array([1.5, 2.0]))
    with pytest.raises(ValueError, match=r"max_len must be in 1\.\.16"):
        code_lengths(np.array([1, 2]), 17)


def test_entropy_bits():
    assert entropy_bits(np.array([1, 1, 1, 1, 1, 1, 1, 1])) == pytest.approx(3.0)
    assert entropy_bits(np.array([0, 5, 0])) == 0.0
    assert entropy_bits(np.zeros(3)) == 0.0
    assert entropy_bits(np.array([3, 1])) == pytest.approx(0.8112781244591328)


# --------------------------------------------------------------------------- layout


class _Bits:
    """LSB-first bit reader over bytes (DEFLATE order), for a hand-written reference inflater."""

    def __init__(self, data: bytes):
        self.v, self.pos, self.n = int.from_bytes(data, "little"), 0, 8 * len(data)

    def read(self, k: int) -> int:  # an integer field, least significant bit first
        assert self.pos + k <= self.n, "read past the end"
        out = (self.v >> self.pos) & ((1 << k) - 1)
        self.pos += k
        return out

    def symbol(self, table: dict) -> int:  # a canonical Huffman code, most significant bit first
        code = 0
        for ln in range(1, 16):
            code = (code << 1) | self.read(1)
            if (ln, code) in table:
                return table[(ln, code)]
        raise AssertionError("invalid code")


def _code_table(lengths) -> dict[tuple[int, int], int]:
    codes = canonical_codes(np.asarray(lengths))
    return {(int(ln), int(c)): i for i, (ln, c) in enumerate(zip(lengths, codes, strict=True)) if ln}


def _length_table() -> dict[int, tuple[int, int]]:
    """RFC 1951 section 3.2.5: length code -> (base length, extra bits)."""
    table, base = {}, 3
    for code in range(257, 285):
        extra = 0 if code < 265 else (code - 261) // 4
        table[code] = (base, extra)
        base += 1 << extra
    table[285] = (258, 0)
    return table


_LENGTHS = _length_table()


def _reference_inflate(seg: bytes) -> tuple[list[int], np.ndarray, int]:
    """Read one dynamic block by RFC 1951 section 3.2.7: (symbols, lit/len code lengths, matches).
    The only distance onnxzip writes is 1 (a run of the previous symbol)."""
    r = _Bits(seg)
    assert r.read(1) == 1 and r.read(2) == 2  # BFINAL, BTYPE = 10 (dynamic Huffman)
    hlit, hdist, hclen = r.read(5) + 257, r.read(5) + 1, r.read(4) + 4
    assert hdist == 1 and hlit <= 286
    order = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
    cl = [0] * 19
    for k in order[:hclen]:
        cl[k] = r.read(3)
    lengths: list[int] = []
    cl_table = _code_table(cl)
    while len(lengths) < hlit + hdist:
        sym = r.symbol(cl_table)
        if sym < 16:
            lengths.append(sym)
        elif sym == 16:
            lengths += [lengths[-1]] * (3 + r.read(2))
        elif sym == 17:
            lengths += [0] * (3 + r.read(3))
        else:
            lengths += [0] * (11 + r.read(7))
    assert len(lengths) == hlit + hdist
    # no distance code (literals only), or the one code for distance 1, of one bit
    assert lengths[hlit:] == ([0] if hlit == 257 else [1])
    lit = np.array(lengths[:hlit], np.uint8)
    out: list[int] = []
    matches = 0
    lit_table = _code_table(lit)
    while (sym := r.symbol(lit_table)) != 256:
        if sym < 256:
            out.append(sym)
            continue
        base, extra = _LENGTHS[sym]
        n = base + r.read(extra)
        assert r.read(1) == 0  # distance code 0: distance 1, no extra bits
        assert out, "a match before any literal"
        out += [out[-1]] * n
        matches += 1
    assert r.n - r.pos < 8 and r.v >> r.pos == 0  # zero padding to the byte boundary only
    return out, lit, matches


def test_tiny_stream_header_bits_by_hand():
    s = encode(np.zeros(3, np.uint8))
    (seg,) = s.segments()
    # BFINAL=1, BTYPE=10 -> bits 1,0,1; HLIT=0 (5 bits): first byte 0b00000101; HDIST=0 next
    assert seg[0] == 0b101 and seg[1] & 0b11111 == 0
    hclen = (seg[1] >> 5) | ((seg[2] & 1) << 3)
    assert 0 <= hclen <= 15
    symbols, lit, _ = _reference_inflate(seg)
    assert symbols == [0, 0, 0]
    assert lit[0] == 1 and lit[256] == 1 and int(lit.sum()) == 2  # symbol 0 and end-of-block
    assert zlib.decompress(seg, -15) == bytes(3)


@SETTINGS
@given(
    alphabet=st.sampled_from([1, 2, 3, 16, 40, 255, 256]),
    kind=st.sampled_from(["uniform", "skewed", "geometric", "zipf"]),
    n=st.integers(0, 3000),
    seed=st.integers(0, 2**32 - 1),
)
def test_segments_are_plain_deflate_and_match_a_reference_reader(alphabet, kind, n, seed):
    x = _sample(np.random.default_rng(seed), kind, alphabet, n).astype(np.uint8)
    s = encode(x, 1000)
    segs = s.segments()
    assert len(segs) == -(-n // 1000) and [len(g) for g in segs] == s.segment_bytes.tolist()
    for i, seg in enumerate(segs):
        want = x[i * 1000 : (i + 1) * 1000]
        assert zlib.decompress(seg, -15) == want.tobytes()  # stock zlib, raw DEFLATE
        symbols, lit, matches = _reference_inflate(seg)
        assert symbols == want.tolist()
        if not matches:  # literals only: the optimal code of the histogram, EOB included
            counts = np.bincount(want, minlength=257)
            counts[256] = 1
            np.testing.assert_array_equal(lit, code_lengths(counts, 15))


@pytest.mark.parametrize("kind", ["zeros", "sparse", "long_runs", "short_runs", "random"])
def test_runs_are_matches_only_where_they_are_smaller(kind, monkeypatch):
    """Long runs of one symbol (a pruned layer's codes) cost bytes, not a bit a symbol; a
    segment with runs is never larger than its literal-only form, and reads back by the RFC."""
    rng = np.random.default_rng(3)
    x = {
        "zeros": np.zeros(100_000, np.uint8),
        "sparse": np.where(rng.random(100_000) < 0.004, rng.integers(1, 16, 100_000), 0),
        "long_runs": np.repeat(rng.integers(0, 16, 500), rng.integers(1, 700, 500)),
        "short_runs": np.repeat(rng.integers(0, 16, 20_000), rng.integers(1, 6, 20_000)),
        "random": rng.integers(0, 16, 100_000),
    }[kind].astype(np.uint8)
    runs = encode(x, 30_000)
    monkeypatch.setattr(H, "RUN_THRESHOLDS", ())
    plain = encode(x, 30_000)
    assert all(a <= b for a, b in zip(runs.segment_bytes.tolist(), plain.segment_bytes.tolist(), strict=True))
    total = 0
    for i, seg in enumerate(runs.segments()):
        want = x[i * 30_000 : (i + 1) * 30_000]
        assert zlib.decompress(seg, -15) == want.tobytes()
        symbols, _, matches = _reference_inflate(seg)
        assert symbols == want.tolist()
        total += matches
    np.testing.assert_array_equal(_decode(runs), x)
    if kind in ("zeros", "sparse", "long_runs"):
        assert total > 0 and runs.payload.size < plain.payload.size / 4
    if kind == "zeros":
        assert runs.payload.size < 200  # 100k symbols: 4 segments of ~60 bytes
    if kind == "random":
        assert total == 0 and runs.payload.tobytes() == plain.payload.tobytes()


# --------------------------------------------------------------------------- round trips


@st.composite
def streams(draw):
    alphabet = draw(st.sampled_from([1, 2, 3, 16, 32, 255, 256]))
    kind = draw(st.sampled_from(["uniform", "skewed", "geometric", "zipf"]))
    n = draw(st.one_of(st.integers(0, 50), st.integers(51, 20_000)))
    segment_size = draw(st.sampled_from([None, 1, 3, 7, 64, 1000, 4096] if n <= 50 else [None, 100, 1000, 4096]))
    max_len = draw(st.integers(9, 15))
    seed = draw(st.integers(0, 2**32 - 1))
    x = _sample(np.random.default_rng(seed), kind, alphabet, n)
    return x, segment_size, max_len, draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(streams())
def test_round_trip(case):
    x, segment_size, max_len, check_seed = case
    s = encode(x, segment_size, max_len=max_len, seed=check_seed)
    seg = segment_size or auto_segment_size(x.size)
    assert s.count == x.size and s.segment_size == seg and s.n_segments == -(-x.size // seg)
    assert s.checksums.size == s.n_segments and int(s.segment_bytes.sum()) == s.payload.size
    y = _decode(s)
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, x)
    size = s.coded_size()
    assert size.payload == s.payload.size and size.total == s.payload.size + 8 * s.n_segments
    assert size.data == s.data_bits / 8 <= s.payload.size


def test_decode_accepts_bytes_and_strided_payload():
    x = _sample(np.random.default_rng(8), "uniform", 16, 999)
    s = encode(x, 100)
    np.testing.assert_array_equal(decode(s.payload.tobytes(), s.segment_bytes, s.count, 100, s.checksums), x)
    strided = np.repeat(s.payload, 2)[::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(decode(strided, s.segment_bytes, s.count, 100, s.checksums), x)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint64])
def test_symbol_dtypes(dtype):
    x = (np.arange(1000) % 7).astype(dtype)
    np.testing.assert_array_equal(_decode(encode(x, 100)), x.astype(np.uint8))


def test_single_symbol_all_symbols_and_empty_streams():
    s = encode(np.full(1001, 5, np.uint8), 100)
    np.testing.assert_array_equal(_decode(s), np.full(1001, 5))
    assert s.data_bits < 1001 // 10  # a literal and one match a segment, not a bit a symbol
    every = np.arange(256, dtype=np.uint8).repeat(3)
    np.testing.assert_array_equal(_decode(encode(every)), every)
    e = encode(np.zeros(0, np.uint8))
    assert e.count == 0 and e.payload.size == 0 and e.n_segments == 0
    out = _decode(e)
    assert out.size == 0 and out.dtype == np.uint8


def test_length_limit_round_trip_with_fibonacci_stream():
    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    x = np.repeat(np.arange(20, dtype=np.uint8), fib)
    np.random.default_rng(0).shuffle(x)
    s = encode(x, max_len=9)
    (seg,) = s.segments()
    lit = _reference_inflate(seg)[1]
    assert int(lit.max()) == 9  # the limit binds
    assert int(code_lengths(np.append(np.array(fib), 1), 15).max()) > 9
    np.testing.assert_array_equal(_decode(s), x)


def test_threads_give_identical_output():
    x = _sample(np.random.default_rng(3), "geometric", 32, 300_000)
    s = encode(x, 4096)
    for threads in (None, 1, 2, 3, 8):
        np.testing.assert_array_equal(_decode(s, threads=threads), x)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        _decode(s, threads=0)


def test_auto_segment_size():
    assert auto_segment_size(0) == auto_segment_size(10**6) == 1 << 18
    assert auto_segment_size(16 << 19) == 1 << 19
    assert auto_segment_size(10**9) == 1 << 20
    for n in (1 << 22, 1 << 23, 50_331_648):
        assert n // auto_segment_size(n) >= 16


def test_determinism():
    x = _sample(np.random.default_rng(4), "zipf", 256, 50_000)
    a, b = encode(x, 4096), encode(x.copy(), 4096)
    assert a.payload.tobytes() == b.payload.tobytes()
    np.testing.assert_array_equal(a.segment_bytes, b.segment_bytes)
    np.testing.assert_array_equal(a.checksums, b.checksums)


def _kmeans_like(n: int, seed: int = 5) -> np.ndarray:
    """5-bit k-means-like indices of a Laplacian weight with 50% exact zeros."""
    rng = np.random.default_rng(seed)
    idx = np.clip(np.round(rng.laplace(size=n) * 4), -15, 15).astype(np.int64) + 16
    return np.where(rng.random(n) < 0.5, 0, idx).astype(np.uint8)


def test_coded_size_close_to_entropy_and_no_larger_than_zstd():
    x = _kmeans_like(1_000_000)
    bound = entropy_bits(np.bincount(x)) * x.size / 8
    s = encode(x)
    size = s.coded_size()
    assert s.n_segments == 4
    assert size.data <= 1.02 * bound
    assert size.total <= 1.02 * bound + size.overhead
    assert size.overhead < 0.001 * size.payload  # headers and table: under 0.1%
    np.testing.assert_array_equal(_decode(s), x)
    zstandard = pytest.importorskip("zstandard")
    head = x[:300_000]
    zs = len(zstandard.ZstdCompressor(level=19).compress(head.tobytes()))
    assert encode(head).coded_size().total <= zs


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError, match=r"symbols must lie in \[0, 256\)"):
        encode(np.array([0, 256]))
    with pytest.raises(ValueError, match=r"symbols must lie in \[0, 256\)"):
        encode(np.array([-1, 2]))
    with pytest.raises(ValueError, match="integer array"):
        encode(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="segment_size must be in"):
        encode(np.array([0]), 0)
    with pytest.raises(ValueError, match=r"max_len must be in 9\.\.15"):
        encode(np.array([0]), max_len=16)


# --------------------------------------------------------------------------- hostile input


@pytest.fixture(scope="module")
def sample_stream() -> tuple[np.ndarray, HuffmanStream]:
    x = _sample(np.random.default_rng(6), "geometric", 40, 5000)
    return x, encode(x, 1024)


def _fields(s: HuffmanStream) -> dict:
    return dict(
        payload=s.payload.copy(),
        segment_bytes=s.segment_bytes.copy(),
        count=s.count,
        segment_size=s.segment_size,
        checksums=s.checksums.copy(),
    )


def test_every_single_bit_flip_is_caught_or_harmless(sample_stream):
    x, s = sample_stream
    f = _fields(s)
    caught = harmless = 0
    for bit in range(0, 8 * f["payload"].size, 5):
        p = f["payload"].copy()
        p[bit // 8] ^= np.uint8(1 << (bit % 8))
        try:
            out = decode(**{**f, "payload": p})
        except HuffmanError as e:
            assert str(e).startswith("segment ")
            caught += 1
        else:  # only the zero padding after a segment's end-of-block code goes unread
            np.testing.assert_array_equal(out, x)
            harmless += 1
    assert harmless <= 7 * s.n_segments and caught + harmless == len(range(0, 8 * s.payload.size, 5))


def _set_item(key, index, value):
    def f(d):
        d[key] = d[key].astype(np.int64)
        d[key][index] = value
    return f


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.update(payload=f["payload"][:-1]), "segments add up to"),
        (lambda f: (f.update(payload=f["payload"][:-1]), _set_item("segment_bytes", -1, f["segment_bytes"][-1] - 1)(f)),
         "segment 4 (ends after|is not valid|does not end)"),
        (lambda f: (f.update(payload=np.concatenate([f["payload"], [0, 0]]).astype(np.uint8)),
                    _set_item("segment_bytes", -1, f["segment_bytes"][-1] + 2)(f)), "segment 4 has 2 bytes after its end"),
        (lambda f: f.update(count=f["count"] + 1), "segment 4 ends after 904 of its 905 symbols"),
        (lambda f: f.update(count=f["count"] - 1), "segment 4 decodes to more than its 903 symbols"),
        (lambda f: f.update(count=f["count"] + 1024), "segment table has 5 entries, the stream has 6"),
        (lambda f: f.update(segment_size=2048), "segment table has 5 entries, the stream has 3"),
        (lambda f: _set_item("checksums", 2, (int(f["checksums"][2]) + 1) % 2**32)(f), "segment 2 checksum mismatch"),
        (lambda f: _set_item("segment_bytes", 1, 2**32)(f), "segment table entries must be uint32"),
        (lambda f: _set_item("segment_bytes", 1, -1)(f), "segment table entries must be uint32"),
        (lambda f: (_set_item("segment_bytes", 1, f["segment_bytes"][1] + 1)(f),
                    _set_item("segment_bytes", 2, f["segment_bytes"][2] - 1)(f)), "segment [12] "),
        (lambda f: f.update(checksums=f["checksums"][:-1]), "checksum table has 4 entries"),
        (lambda f: f.update(segment_bytes=f["segment_bytes"].astype(np.float32)), "must be a 1-d integer array"),
        (lambda f: f.update(payload=f["payload"].astype(np.int16)), "payload must be"),
        (lambda f: f.update(count=-1), "count must be in"),
        (lambda f: f.update(segment_size=0), "segment_size must be in"),
    ],
)
def test_inconsistent_metadata_raises(sample_stream, change, match):
    _, s = sample_stream
    f = _fields(s)
    change(f)
    with pytest.raises(HuffmanError, match=match) as err:
        decode(**f)
    assert str(err.value)[0].islower()


def test_swapped_segments_fail_their_checksums():
    x = np.tile(_sample(np.random.default_rng(9), "zipf", 256, 1000), 2)
    x[1000:] = x[1000:][::-1]  # same histogram, other order
    s = encode(x, 1000)
    segs = s.segments()
    with pytest.raises(HuffmanError, match="segment 0 checksum mismatch"):
        decode(segs[1] + segs[0], s.segment_bytes[::-1], 2000, 1000, s.checksums[::-1])


def test_count_is_checked_against_the_payload_before_allocating(sample_stream):
    _, s = sample_stream
    f = _fields(s)
    with pytest.raises(HuffmanError, match="exceeds the declared maximum"):
        decode(**f, max_count=s.count - 1)
    assert decode(**f, max_count=s.count).size == s.count
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    blob = bomb.compress(bytes(10 << 20)) + bomb.flush()  # valid DEFLATE of 10 MB of zeros
    # a hostile header: 2**40 symbols in one segment of a few hundred bytes
    tracemalloc.start()
    try:
        with pytest.raises(HuffmanError, match=r"more than its \d+ bytes can hold"):
            decode(f["payload"], [f["payload"].size], 1 << 24, 1 << 24)
        with pytest.raises(HuffmanError, match="segment table has"):
            decode(f["payload"], [f["payload"].size], 1 << 40, 1 << 24)
        # the bomb declared as 1000 symbols: inflate stops at 1001
        with pytest.raises(HuffmanError, match="decodes to more than its 1000 symbols"):
            decode(blob, [len(blob)], 1000, 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_fuzzed_streams_never_crash_or_hang(sample_stream):
    x, s = sample_stream
    rng = np.random.default_rng(7)
    outcomes = {"error": 0, "decoded": 0}
    t0 = time.perf_counter()
    for trial in range(300):
        f = _fields(s)
        kind = trial % 4
        if kind <= 1:  # 1..3 random byte or bit flips
            for _ in range(int(rng.integers(1, 4))):
                i = int(rng.integers(0, f["payload"].size))
                f["payload"][i] ^= np.uint8(rng.integers(1, 256) if kind else 1 << rng.integers(8))
        elif kind == 2:  # move a segment boundary
            i = int(rng.integers(0, f["segment_bytes"].size - 1))
            d = int(rng.integers(-20, 21))
            f["segment_bytes"] = f["segment_bytes"].astype(np.int64)
            f["segment_bytes"][i] += d
            f["segment_bytes"][i + 1] -= d
        else:  # truncate or extend the payload, change the count
            cut = int(rng.integers(-4, 5))
            f["payload"] = f["payload"][:cut] if cut < 0 else np.concatenate([f["payload"], np.zeros(cut, np.uint8)])
            f["segment_bytes"] = f["segment_bytes"].astype(np.int64)
            f["segment_bytes"][-1] += cut
            f["count"] += int(rng.integers(-3, 4))
        try:
            out = decode(**f)
        except HuffmanError:
            outcomes["error"] += 1
        else:
            outcomes["decoded"] += 1
            # a damaged stream never decodes to wrong data (flips in end padding are unread)
            assert f["count"] == s.count and np.array_equal(out, x)
    assert time.perf_counter() - t0 < 20
    assert outcomes["error"] > 250
