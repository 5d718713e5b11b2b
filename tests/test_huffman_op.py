"""The HuffmanDecode node format (version 2): round trips through node + initializers."""

from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxzip import _huffman_op as HO
from onnxzip import model as M

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60)
RANGES = {
    TensorProto.INT8: (-128, 127, np.int8),
    TensorProto.UINT8: (0, 255, np.uint8),
    TensorProto.INT4: (-8, 7, ml_dtypes.int4),
    TensorProto.UINT4: (0, 15, ml_dtypes.uint4),
}


def _node_round_trip(q: np.ndarray, elem_type: int, segment_size: int | None = None) -> tuple[np.ndarray, HO.Encoded, list]:
    enc = HO.encode_tensor(q, elem_type, segment_size=segment_size)
    node, inits = HO.make_node(enc, "w", "w.huff", "w.huff_segments", "w/HuffmanDecode")
    g = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("w", elem_type, list(q.shape))], inits)
    return HO.decode_node(node, next(M.walk(g))), enc, inits


@SETTINGS
@given(
    elem_type=st.sampled_from(sorted(RANGES)),
    shape=st.lists(st.integers(0, 40), min_size=0, max_size=3),
    skew=st.floats(0.05, 50.0),
    segment_size=st.sampled_from([None, 1, 5, 64, 1000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_decode_node_inverts_encode_tensor(elem_type, shape, skew, segment_size, seed):
    lo, hi, dtype = RANGES[elem_type]
    rng = np.random.default_rng(seed)
    q = np.clip(np.round(rng.laplace(0, skew, tuple(shape))), lo, hi).astype(dtype)
    if segment_size is not None and segment_size < 64 and q.size > 300:
        segment_size = 64  # thousands of tiny segments only make the test slow
    out, enc, inits = _node_round_trip(q, elem_type, segment_size)
    assert out.dtype == q.dtype and out.shape == q.shape and out.tobytes() == q.tobytes()
    # the payload is plain DEFLATE: stock zlib gives back the symbols, one byte a value
    table = numpy_helper.to_array(inits[1])
    assert table.dtype == np.uint32 and table.shape == (enc.stream.n_segments, 2)
    payload = inits[0].raw_data
    ends = np.cumsum(table[:, 0]).tolist()
    symbols = b"".join(zlib.decompress(payload[a:b], -15) for a, b in zip([0, *ends], ends, strict=False))
    assert symbols == HO.to_symbols(q, elem_type).tobytes()


def test_all_256_symbols_and_a_single_symbol():
    every = np.arange(-128, 128, dtype=np.int8).repeat(5).reshape(32, 40)
    assert _node_round_trip(every, TensorProto.INT8)[0].tobytes() == every.tobytes()
    same = np.full((7, 9), -3, ml_dtypes.int4)
    out, enc, _ = _node_round_trip(same, TensorProto.INT4)
    assert out.tobytes() == same.tobytes() and enc.stream.data_bits < same.size // 4  # one literal and a match


def test_nodes_are_deterministic():
    q = np.random.default_rng(3).integers(-20, 20, (300, 200)).astype(np.int8)
    a = HO.make_node(HO.encode_tensor(q, TensorProto.INT8, segment_size=4096), "w", "p", "s", "n")
    b = HO.make_node(HO.encode_tensor(q.copy(), TensorProto.INT8, segment_size=4096), "w", "p", "s", "n")
    assert a[0].SerializeToString() == b[0].SerializeToString()
    assert [t.SerializeToString() for t in a[1]] == [t.SerializeToString() for t in b[1]]
    attrs = {x.name: helper.get_attribute_value(x) for x in a[0].attribute}
    assert attrs == {"version": HO.FORMAT_VERSION, "dtype": TensorProto.INT8, "count": 60000, "segment_size": 4096, "shape": [300, 200]}
    assert a[0].domain == M.ONNXZIP_DOMAIN and list(a[0].input) == ["p", "s"]
    assert a[1][1].data_type == onnx.TensorProto.UINT32
