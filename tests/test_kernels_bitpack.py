"""Tests for onnxzip.kernels.bitpack (fixed-width little-endian bit packing)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxzip.kernels.bitpack import pack_bits, packed_size, unpack_bits

SETTINGS = settings(derandomize=True, deadline=None, max_examples=100)


def _reference_pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Bit by bit: value i's bit b is stream bit i*bits + b, stream LSB-first in each byte."""
    v = values.astype(np.int64)
    stream = ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little")


@st.composite
def packing_cases(draw):
    bits = draw(st.integers(1, 8))
    count = draw(st.one_of(st.integers(0, 40), st.integers(41, 3000)))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.uint64]))
    values = np.random.default_rng(seed).integers(0, 1 << bits, count).astype(dtype)
    return values, bits


@SETTINGS
@given(packing_cases())
def test_round_trip_matches_reference_layout(case):
    values, bits = case
    packed = pack_bits(values, bits)
    assert packed.dtype == np.uint8
    assert packed.size == packed_size(values.size, bits) == -(-values.size * bits // 8)
    np.testing.assert_array_equal(packed, _reference_pack(values, bits))
    out = unpack_bits(packed, bits, values.size)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, values.astype(np.uint8))


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [1, 3, 7, 8, 9, 15, 17, 1001])
def test_odd_counts_all_widths(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    values = rng.integers(0, 1 << bits, count).astype(np.uint8)
    packed = pack_bits(values, bits)
    np.testing.assert_array_equal(unpack_bits(packed, bits, count), values)
    # the unused high bits of the last byte are zero
    used = count * bits % 8
    if used:
        assert int(packed[-1]) >> used == 0


def test_known_layout():
    # 3-bit values 1, 2, 7 -> stream bits 100 010 111 (LSB first) -> 0b11010001, 0b00000001
    np.testing.assert_array_equal(pack_bits(np.array([1, 2, 7]), 3), [0b11010001, 0b1])
    np.testing.assert_array_equal(pack_bits(np.array([1, 0, 3, 2]), 2), [0b10110001])
    np.testing.assert_array_equal(pack_bits(np.array([0xA, 0x5]), 4), [0x5A])


def test_longer_packed_input_is_accepted():
    values = np.array([5, 1, 7, 0, 3], np.uint8)
    packed = np.concatenate([pack_bits(values, 3), np.array([0xFF, 0xFF], np.uint8)])
    np.testing.assert_array_equal(unpack_bits(packed, 3, 5), values)
    np.testing.assert_array_equal(unpack_bits(packed, 3, 2), values[:2])


def test_empty():
    assert pack_bits(np.zeros(0, np.uint8), 5).size == 0
    assert unpack_bits(np.zeros(0, np.uint8), 5, 0).size == 0


@pytest.mark.parametrize(
    ("values", "bits", "match"),
    [
        (np.array([0, 4]), 2, r"values must lie in \[0, 4\)"),
        (np.array([-1, 0]), 4, "values must lie in"),
        (np.array([256]), 8, "values must lie in"),
        (np.array([0.5]), 4, "integer array"),
        (np.array([1]), 0, "bits must be in 1..8"),
        (np.array([1]), 9, "bits must be in 1..8"),
        (np.array([1]), 2.0, "bits must be an integer"),
    ],
)
def test_pack_rejects_bad_input(values, bits, match):
    with pytest.raises(ValueError, match=match) as err:
        pack_bits(values, bits)
    assert str(err.value)[0].islower()


def test_unpack_rejects_short_or_bad_input():
    packed = pack_bits(np.arange(10) % 8, 3)  # 30 bits -> 4 bytes
    with pytest.raises(ValueError, match="packed data too short") as err:
        unpack_bits(packed, 3, 11)  # 33 bits -> 5 bytes
    assert str(err.value)[0].islower()
    with pytest.raises(ValueError, match="packed data too short"):
        unpack_bits(packed[:3], 3, 10)
    with pytest.raises(ValueError, match="count must be a non-negative integer"):
        unpack_bits(packed, 3, -1)
    with pytest.raises(ValueError, match="uint8"):
        unpack_bits(packed.astype(np.int16), 3, 10)
