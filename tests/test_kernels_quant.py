"""Property tests for onnxzip.kernels.quant (linear quantization, ONNX semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxzip.kernels.quant import (
    dequantize_linear,
    pack_int4,
    qrange,
    quantize_linear,
    sqnr_db,
    unpack_int4,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=40)

values = st.one_of(
    st.floats(-1e3, 1e3, width=32),
    st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 1e-44, 1e37, -1e37]),
)


@st.composite
def quant_cases(draw):
    """(w with some exact zeros, bits, symmetric, axis, block_size)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7))
    w = draw(hnp.arrays(np.float32, shape, elements=values))
    zeros = draw(hnp.arrays(np.bool_, shape))
    w = np.where(zeros, np.float32(0.0), w)
    bits = draw(st.sampled_from([2, 4, 8, 16]))
    symmetric = draw(st.booleans())
    mode = draw(st.sampled_from(["tensor", "channel", "block"]))
    axis = None if mode == "tensor" else draw(st.integers(0, len(shape) - 1))
    block = draw(st.integers(1, 5)) if mode == "block" else None
    return w, bits, symmetric, axis, block


def _expected_param_shape(shape, axis, block):
    if axis is None:
        return ()
    if block is None:
        return (shape[axis],)
    s = list(shape)
    s[axis] = -(-shape[axis] // block)
    return tuple(s)


def _broadcast(p, shape, axis, block):
    """Element-wise view of a parameter, written independently of the kernel."""
    if axis is None:
        return np.broadcast_to(p, shape)
    if block is None:
        b = [1] * len(shape)
        b[axis] = shape[axis]
        return np.broadcast_to(p.reshape(b), shape)
    return np.repeat(p, block, axis=axis).take(np.arange(shape[axis]), axis=axis)


@SETTINGS
@given(quant_cases())
def test_minmax_roundtrip_error_bounded_by_half_scale(case):
    w, bits, symmetric, axis, block = case
    q, scale, zp = quantize_linear(w, bits, symmetric, axis, block)
    qmin, qmax = qrange(bits, symmetric)
    assert q.shape == w.shape
    assert scale.dtype == np.float32 and zp.dtype == q.dtype
    assert q.dtype == np.dtype({(True, 8): np.int8, (False, 8): np.uint8,
                                (True, 16): np.int16, (False, 16): np.uint16}
                               [symmetric, 8 if bits <= 8 else 16])
    assert scale.shape == zp.shape == _expected_param_shape(w.shape, axis, block)
    assert (scale > 0).all() and np.isfinite(scale).all()
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    assert int(zp.min()) >= qmin and int(zp.max()) <= qmax
    if symmetric:
        assert (zp == 0).all()
    deq = dequantize_linear(q, scale, zp, axis, block)
    assert deq.dtype == np.float32 and deq.shape == w.shape
    s = _broadcast(scale, w.shape, axis, block).astype(np.float64)
    err = np.abs(deq.astype(np.float64) - w.astype(np.float64))
    assert (err <= s * 0.5 * (1 + 1e-5) + 1e-6 * np.abs(w.astype(np.float64))).all()
    # pruned zeros come back as exact zeros
    assert (deq[w == 0] == 0).all()


@SETTINGS
@given(quant_cases())
def test_mse_clipping_never_worse_than_minmax(case):
    w, bits, symmetric, axis, block = case
    w = np.clip(w, -1e3, 1e3)  # keep squared errors finite in float64
    errs = {}
    for clip in ("minmax", "mse"):
        q, scale, zp = quantize_linear(w, bits, symmetric, axis, block, clip=clip)
        deq = dequantize_linear(q, scale, zp, axis, block)
        assert (deq[w == 0] == 0).all()
        errs[clip] = float(np.sum((deq.astype(np.float64) - w) ** 2))
    assert errs["mse"] <= errs["minmax"] * (1 + 1e-5) + 1e-30


def test_mse_clipping_helps_heavy_tailed_weights():
    rng = np.random.default_rng(0)
    w = rng.laplace(size=(64, 1024)).astype(np.float32)
    out = {}
    for clip in ("minmax", "mse"):
        q, s, z = quantize_linear(w, 4, True, axis=0, clip=clip)
        out[clip] = sqnr_db(w, dequantize_linear(q, s, z, axis=0))
    assert out["mse"] > out["minmax"] + 1.5  # measured: 13.1 dB -> 15.7 dB


def test_rounding_is_half_to_even_and_range_is_restricted():
    # absmax 127 -> scale exactly 1.0, so the codes are round_half_even(w)
    w = np.array([127.0, 0.5, 1.5, 2.5, -0.5, -2.5, -127.0], dtype=np.float32)
    q, scale, zp = quantize_linear(w, 8, True)
    assert float(scale) == 1.0 and int(zp) == 0
    np.testing.assert_array_equal(q, [127, 0, 2, 2, 0, -2, -127])
    # asymmetric: [0, 255] with 0.0 representable exactly
    q, scale, zp = quantize_linear(np.array([-1.0, 0.0, 3.0], np.float32), 8, False)
    assert q.dtype == np.uint8 and int(q[1]) == int(zp)
    assert dequantize_linear(q, scale, zp)[1] == 0.0


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_ranges_near_float32_max_never_dequantize_to_inf(bits, symmetric):
    big = np.float32(3.0e38)
    w = np.array([-big, -1.0, 0.0, 1.0, big, np.finfo(np.float32).max], np.float32)
    q, scale, zp = quantize_linear(w, bits, symmetric)
    deq = dequantize_linear(q, scale, zp)
    assert np.isfinite(deq).all() and deq[2] == 0.0
    # within one step here (the codes beyond float32's range are not available)
    assert (np.abs(deq.astype(np.float64) - w) <= float(scale) * (1 + 1e-6)).all()


def test_all_zero_groups_get_unit_scale():
    w = np.zeros((3, 4), np.float32)
    w[1] = [1.0, -2.0, 0.5, 0.0]
    for sym in (True, False):
        q, scale, zp = quantize_linear(w, 8, sym, axis=0)
        assert scale[0] == 1.0 and scale[2] == 1.0
        assert (q[0] == zp[0]).all() and (dequantize_linear(q, scale, zp, 0)[0] == 0).all()


def test_blocked_layout_matches_onnx_block_semantics():
    # MatMul weight W[K=10, N=3], blocks of 4 along K (axis 0): scale [ceil(10/4)=3, 3]
    rng = np.random.default_rng(2)
    w = rng.standard_normal((10, 3)).astype(np.float32)
    q, scale, zp = quantize_linear(w, 4, False, axis=0, block_size=4)
    assert scale.shape == (3, 3)
    for blk, rows in enumerate([slice(0, 4), slice(4, 8), slice(8, 10)]):
        q1, s1, z1 = quantize_linear(w[rows], 4, False, axis=1)
        np.testing.assert_array_equal(q[rows], q1)
        np.testing.assert_array_equal(scale[blk], s1)
        np.testing.assert_array_equal(zp[blk], z1)


def _onnx_run(op, inputs, attrs):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    names = [f"i{j}" for j in range(len(inputs))]
    node = helper.make_node(op, names, ["y"], **attrs)
    dtype = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
             np.dtype(np.int16): TensorProto.INT16, np.dtype(np.uint16): TensorProto.UINT16,
             np.dtype(np.float32): TensorProto.FLOAT}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, dtype[a.dtype], a.shape) for n, a in zip(names, inputs, strict=True)],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs, strict=True)))[0]


@pytest.mark.parametrize("axis,block", [(None, None), (1, None), (0, 2), (1, 4)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_agrees_with_onnx_reference_quantize_and_dequantize(axis, block, symmetric):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((6, 8)) * 3).astype(np.float32)
    w[0, :3] = 0.0
    q, scale, zp = quantize_linear(w, 8, symmetric, axis, block)
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block is not None:
        attrs["block_size"] = block
    ref_deq = _onnx_run("DequantizeLinear", [q, scale, zp], attrs)
    np.testing.assert_array_equal(dequantize_linear(q, scale, zp, axis, block), ref_deq)
    ref_q = _onnx_run("QuantizeLinear", [w, scale, zp], attrs)
    np.testing.assert_array_equal(q, ref_q)


def test_argument_errors():
    w = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="bits"):
        quantize_linear(w, 1, True)
    with pytest.raises(ValueError, match="clip"):
        quantize_linear(w, 8, True, clip="percentile")
    with pytest.raises(ValueError, match="block_size"):
        quantize_linear(w, 8, True, block_size=2)
    with pytest.raises(ValueError, match="axis"):
        quantize_linear(w, 8, True, axis=2)
    with pytest.raises(ValueError, match="nan"):
        quantize_linear(np.array([np.nan], np.float32), 8, True)
    q, s, z = quantize_linear(w, 8, True, axis=0)
    with pytest.raises(ValueError, match="per-channel"):
        dequantize_linear(q, s[:3], z[:3], axis=0)


def test_sqnr_db():
    w = np.array([1.0, -1.0, 2.0], np.float32)
    assert sqnr_db(w, w) == math.inf
    assert sqnr_db(w, w * 0.9) == pytest.approx(20.0)
    assert sqnr_db(np.zeros(2), np.ones(2)) == -math.inf
    with pytest.raises(ValueError, match="shape"):
        sqnr_db(w, w[:2])


@SETTINGS
@given(st.booleans(), hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), st.data())
def test_int4_pack_roundtrip(signed, shape, data):
    lo, hi = (-8, 7) if signed else (0, 15)
    q = data.draw(hnp.arrays(np.int8 if signed else np.uint8, shape, elements=st.integers(lo, hi)))
    packed = pack_int4(q)
    assert packed.dtype == np.uint8 and packed.size == (q.size + 1) // 2
    np.testing.assert_array_equal(unpack_int4(packed, shape, signed=signed), q)


def test_int4_packing_matches_onnx_storage():
    from onnx import TensorProto, helper

    vals = [1, -1, 7, -8, 0]
    t = helper.make_tensor("t", TensorProto.INT4, [5], vals)
    np.testing.assert_array_equal(pack_int4(np.array(vals, np.int8)), t.int32_data)
    u = helper.make_tensor("u", TensorProto.UINT4, [4], [15, 0, 3, 12])
    np.testing.assert_array_equal(pack_int4(np.array([15, 0, 3, 12], np.uint8)), u.int32_data)
    with pytest.raises(ValueError, match="range"):
        pack_int4(np.array([8], np.int8))
    with pytest.raises(ValueError, match="bytes"):
        unpack_int4(np.zeros(2, np.uint8), (5, 2))
