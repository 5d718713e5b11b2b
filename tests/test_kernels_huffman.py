"""Tests for onnxzip.kernels.huffman: optimality, layout, round trips, hostile input."""

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

from onnxzip.kernels.huffman import (
    HuffmanError,
    HuffmanStream,
    canonical_codes,
    code_lengths,
    coded_size,
    decode,
    encode,
    entropy_bits,
    offsets_from_deltas,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=100)


def _decode(s: HuffmanStream, **kw) -> np.ndarray:
    kw.setdefault("crc32", s.crc32)
    return decode(s.lengths, s.payload, s.chunk_bits, s.count, s.chunk_size, **kw)


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


def test_bit_layout_is_lsb_first_with_codes_msb_first():
    # counts [2, 1, 1] -> lengths [1, 2, 2] -> codes 0, 10, 11
    s = encode(np.array([1, 2, 0, 0], np.uint8), alphabet_size=3)
    np.testing.assert_array_equal(s.lengths, [1, 2, 2])
    # stream bits in order: 1 0 | 1 1 | 0 | 0  ->  byte bits (LSB first) 001101 -> 0b001101
    np.testing.assert_array_equal(s.payload, [0b001101])
    assert s.crc32 == zlib.crc32(s.payload)
    assert s.chunk_bits.dtype == np.uint32 and s.chunk_bits.tolist() == [0]


def test_chunk_offsets_point_at_chunk_starts():
    x = np.array([0, 1, 2, 0, 0, 1, 2, 0, 1], np.uint8)  # lengths [1, 2, 2]
    s = encode(x, 3, chunk_size=4)
    assert s.chunk_bits.tolist() == [0, 1 + 2 + 2 + 1, 6 + 1 + 2 + 2 + 1]
    deltas = s.offset_deltas()
    assert deltas.dtype == np.uint16
    np.testing.assert_array_equal(offsets_from_deltas(deltas), s.chunk_bits)


# --------------------------------------------------------------------------- round trips


@st.composite
def streams(draw):
    alphabet = draw(st.sampled_from([1, 2, 3, 16, 32, 255, 256, 257, 1000, 4096]))
    kind = draw(st.sampled_from(["uniform", "skewed", "geometric", "zipf"]))
    n = draw(st.one_of(st.integers(0, 50), st.integers(51, 20_000)))
    chunk_size = draw(st.sampled_from([1, 3, 7, 64, 100, 1000, 1024, 4096]))
    min_len = max(1, int(np.ceil(np.log2(alphabet))))
    max_len = draw(st.integers(min_len, 16))
    seed = draw(st.integers(0, 2**32 - 1))
    x = _sample(np.random.default_rng(seed), kind, alphabet, n)
    return x, alphabet, chunk_size, max_len


@SETTINGS
@given(streams())
def test_round_trip(case):
    x, alphabet, chunk_size, max_len = case
    s = encode(x, alphabet, chunk_size=chunk_size, max_len=max_len)
    assert s.count == x.size and s.lengths.size == alphabet
    assert s.chunk_bits.size == -(-x.size // chunk_size)
    assert int(s.lengths.max(initial=0)) <= max_len
    y = _decode(s, max_len=max_len)
    assert y.dtype == (np.uint8 if alphabet <= 256 else np.uint16)
    np.testing.assert_array_equal(y, x)
    # the stored size counts exactly what encode produced
    assert s.coded_size() == coded_size(np.bincount(x, minlength=alphabet), chunk_size, max_len)
    assert s.coded_size().payload == s.payload.size


def test_decode_accepts_bytes_and_strided_payload():
    x = _sample(np.random.default_rng(8), "uniform", 16, 999)
    s = encode(x, 16, chunk_size=100)
    as_bytes = decode(s.lengths, s.payload.tobytes(), s.chunk_bits, s.count, 100, s.crc32)
    np.testing.assert_array_equal(as_bytes, x)
    strided = np.repeat(s.payload, 2)[::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(
        decode(s.lengths, strided, s.chunk_bits, s.count, 100, s.crc32), x
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint64])
def test_symbol_dtypes(dtype):
    x = (np.arange(1000) % 7).astype(dtype)
    s = encode(x, 7, chunk_size=100)
    np.testing.assert_array_equal(_decode(s), x.astype(np.uint8))


def test_single_symbol_and_empty_streams():
    s = encode(np.full(1001, 5, np.uint8), 8, chunk_size=100)
    assert s.lengths.tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    assert s.payload.size == 126 and not s.payload.any()  # 1001 one-bit codes "0"
    np.testing.assert_array_equal(_decode(s), np.full(1001, 5))
    e = encode(np.zeros(0, np.uint8), 300)
    assert e.count == 0 and e.payload.size == 0 and e.chunk_bits.size == 0
    out = _decode(e)
    assert out.size == 0 and out.dtype == np.uint16


def test_length_limit_round_trip_with_fibonacci_stream():
    fib = [1, 1]
    while len(fib) < 24:
        fib.append(fib[-1] + fib[-2])
    x = np.repeat(np.arange(24, dtype=np.uint8), fib)
    np.random.default_rng(0).shuffle(x)
    s = encode(x, 24, chunk_size=333, max_len=15)
    assert int(s.lengths.max()) == 15
    np.testing.assert_array_equal(_decode(s), x)


def test_threads_give_identical_output():
    x = _sample(np.random.default_rng(3), "geometric", 32, 300_000)
    s = encode(x, 32, chunk_size=64)
    ref = _decode(s)
    np.testing.assert_array_equal(ref, x)
    for threads in (2, 3, 8):
        np.testing.assert_array_equal(_decode(s, threads=threads), x)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        _decode(s, threads=0)


@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_many_lockstep_groups(chunk_size):
    # more chunks than one lockstep group holds (8192), short last chunk
    x = _sample(np.random.default_rng(chunk_size), "zipf", 300, 20_003)
    s = encode(x, 300, chunk_size=chunk_size)
    np.testing.assert_array_equal(_decode(s), x)
    np.testing.assert_array_equal(_decode(s, threads=4), x)


def test_determinism():
    x = _sample(np.random.default_rng(4), "zipf", 256, 50_000)
    a, b = encode(x, 256), encode(x.copy(), 256)
    assert a.payload.tobytes() == b.payload.tobytes() and a.crc32 == b.crc32
    np.testing.assert_array_equal(a.lengths, b.lengths)
    np.testing.assert_array_equal(a.chunk_bits, b.chunk_bits)


def test_coded_size_close_to_entropy_for_large_skewed_stream():
    # 5-bit k-means-like indices of a Laplacian weight with 50% exact zeros
    rng = np.random.default_rng(5)
    n = 1_000_000
    w = rng.laplace(size=n)
    idx = np.clip(np.round(w * 4), -15, 15).astype(np.int64) + 16
    x = np.where(rng.random(n) < 0.5, 0, idx).astype(np.uint8)
    counts = np.bincount(x, minlength=32)
    bound_bits = entropy_bits(counts) * n
    s = encode(x, 32)
    size = s.coded_size()
    assert s.payload.size * 8 <= 1.02 * bound_bits
    assert size.total <= 1.02 * bound_bits / 8 + size.overhead
    assert size.overhead < 0.006 * size.payload  # offsets + table: under 0.6%
    np.testing.assert_array_equal(_decode(s), x)


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError, match=r"symbols must lie in \[0, 4\)"):
        encode(np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="integer array"):
        encode(np.array([0.0, 1.0]), 4)
    with pytest.raises(ValueError, match="alphabet_size must be in"):
        encode(np.array([0]), 0)
    with pytest.raises(ValueError, match="chunk_size must be in"):
        encode(np.array([0]), 2, chunk_size=0)
    with pytest.raises(ValueError, match="cannot be coded with codes of at most 3 bits"):
        encode(np.arange(9), 9, max_len=3)


# --------------------------------------------------------------------------- hostile input


@pytest.fixture(scope="module")
def sample_stream() -> tuple[np.ndarray, HuffmanStream]:
    x = _sample(np.random.default_rng(6), "geometric", 40, 5000)
    return x, encode(x, 40, chunk_size=128)


def _fields(s: HuffmanStream) -> dict:
    return dict(
        lengths=s.lengths.copy(),
        payload=s.payload.copy(),
        chunk_bits=s.chunk_bits.copy(),
        count=s.count,
        chunk_size=s.chunk_size,
    )


def test_flipped_payload_byte_fails_crc(sample_stream):
    x, s = sample_stream
    f = _fields(s)
    f["payload"][17] ^= 0x40
    with pytest.raises(HuffmanError, match="crc32 mismatch"):
        decode(**f, crc32=s.crc32)
    try:  # without the crc: an error or an array of the declared length, never a crash
        out = decode(**f)
    except HuffmanError:
        pass
    else:
        assert out.shape == x.shape and out.dtype == np.uint8


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.update(chunk_bits=f["chunk_bits"][:-1]), "chunk table has"),
        (lambda f: f["chunk_bits"].__setitem__(0, 3), "first chunk must start at bit 0"),
        (lambda f: f["chunk_bits"].__setitem__(5, f["chunk_bits"][3]), "chunk sizes in bits"),
        (lambda f: f["chunk_bits"].__setitem__(-1, 10**9), "within the"),
        (lambda f: f["chunk_bits"].__setitem__(7, f["chunk_bits"][7] + 1), "chunk 6 ends at bit"),
        # up to 7 extra symbols could hide in the zero padding of the last byte; 8 cannot
        (lambda f: f.update(count=f["count"] + 8), "last chunk of|stream ends at bit"),
        (lambda f: f.update(count=f["count"] - 3), "last chunk of|stream ends at bit"),
        (lambda f: f.update(payload=f["payload"][:-1]), "last chunk of|stream ends at bit"),
        (lambda f: f.update(payload=f["payload"][:0]), "last chunk of|within the"),
        (lambda f: f.update(chunk_size=64), "chunk table has"),
        (lambda f: f["lengths"].__setitem__(0, 1), "kraft"),
        (lambda f: f["lengths"].__setitem__(0, 16), "code lengths must lie in 0..15"),
        (lambda f: f.update(lengths=f["lengths"].astype(np.int8) * -1), "code lengths must lie"),
        (lambda f: f.update(lengths=np.zeros(40, np.uint8)), "no symbol has a code"),
        (lambda f: f.update(lengths=np.zeros(0, np.uint8)), "lengths must be a 1-d"),
        (lambda f: f.update(payload=f["payload"].astype(np.int16)), "payload must be"),
        (lambda f: f.update(count=-1), "count must be a non-negative integer"),
        (lambda f: f.update(chunk_size=0), "chunk_size must be in"),
    ],
)
def test_inconsistent_metadata_raises(sample_stream, change, match):
    _, s = sample_stream
    f = _fields(s)
    change(f)
    with pytest.raises(HuffmanError, match=match) as err:
        decode(**f)
    assert str(err.value)[0].islower()


def test_invalid_code_and_padding_are_detected():
    # one used symbol -> code "0"; the slot "1" has no symbol
    lengths = np.array([0, 1, 0], np.uint8)
    with pytest.raises(HuffmanError, match="invalid code in chunk 2"):
        decode(lengths, np.array([0x00, 0x00, 0x01], np.uint8), np.array([0, 8, 16]), 24, 8)
    ok = decode(lengths, np.array([0x00], np.uint8), np.array([0]), 5, 8)
    np.testing.assert_array_equal(ok, [1] * 5)
    with pytest.raises(HuffmanError, match="non-zero padding bits"):
        decode(lengths, np.array([0x20], np.uint8), np.array([0]), 5, 8)


def test_count_limit_is_checked_before_allocating(sample_stream):
    _, s = sample_stream
    f = _fields(s)
    with pytest.raises(HuffmanError, match="exceeds the declared maximum"):
        decode(**f, max_count=s.count - 1)
    assert decode(**f, max_count=s.count).size == s.count
    # a hostile header: 2**40 symbols in chunks of 2**24 with a matching 65536-entry table
    tracemalloc.start()
    try:
        with pytest.raises(HuffmanError):
            decode(f["lengths"], f["payload"], np.zeros(1 << 16, np.uint32), 1 << 40, 1 << 24)
        with pytest.raises(HuffmanError, match="exceeds the declared maximum"):
            decode(
                f["lengths"],
                f["payload"],
                np.zeros(1 << 16, np.uint32),
                1 << 40,
                1 << 24,
                max_count=10**6,
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_fuzzed_streams_never_crash_or_hang(sample_stream):
    _, s = sample_stream
    rng = np.random.default_rng(7)
    outcomes = {"error": 0, "decoded": 0, "crc": 0}
    t0 = time.perf_counter()
    for trial in range(300):
        f = _fields(s)
        kind = trial % 6
        if kind <= 2:  # 1..3 random byte or bit flips
            for _ in range(int(rng.integers(1, 4))):
                i = int(rng.integers(0, f["payload"].size))
                f["payload"][i] ^= np.uint8(rng.integers(1, 256) if kind else 1 << rng.integers(8))
        elif kind == 3:  # nudge chunk offsets
            i = int(rng.integers(0, f["chunk_bits"].size))
            f["chunk_bits"] = f["chunk_bits"].astype(np.int64)
            f["chunk_bits"][i] += int(rng.integers(-20, 21))
        elif kind == 4:  # perturb code lengths
            i = int(rng.integers(0, f["lengths"].size))
            f["lengths"][i] = rng.integers(0, 16)
        else:  # truncate or extend the payload, change the count
            cut = int(rng.integers(-4, 5))
            f["payload"] = (
                f["payload"][:cut]
                if cut < 0
                else np.concatenate([f["payload"], np.zeros(cut, np.uint8)])
            )
            f["count"] += int(rng.integers(-3, 4))
        try:
            out = decode(**f)
        except HuffmanError:
            outcomes["error"] += 1
        else:
            outcomes["decoded"] += 1
            assert out.shape == (f["count"],) and out.dtype == np.uint8
        if kind <= 2 and not np.array_equal(f["payload"], s.payload):
            with pytest.raises(HuffmanError, match="crc32 mismatch"):
                decode(**f, crc32=s.crc32)
            outcomes["crc"] += 1
    assert time.perf_counter() - t0 < 20
    assert outcomes["error"] > 100 and outcomes["crc"] >= 100
