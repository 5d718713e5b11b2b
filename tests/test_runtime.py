"""onnxzip.runtime on plain and Huffman-coded files, `onnxzip unpack`, and damaged streams."""

from __future__ import annotations

import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_one_error, invoke, make_mlp
from onnxzip import _huffman_op as HO
from onnxzip import model as M
from onnxzip.errors import ModelError
from onnxzip.passes.huffman import HuffmanConfig, HuffmanPass
from onnxzip.runtime import InferenceSession, to_plain
from test_huffman_pass import dq_model, peaked

DAMAGED = "HuffmanDecode stream is damaged"


def coded_model(shape=(64, 48), chunk_size: int | None = 64, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """A DQ model whose int8 weight is Huffman-coded (several chunks), and that weight."""
    q = peaked(shape, TensorProto.INT8, seed)
    m = dq_model(q, k=shape[0], n=shape[1])
    res = HuffmanPass(HuffmanConfig(chunk_size=chunk_size)).call(m)
    assert res.modified
    return res.model, q


def hd_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == HO.OP_TYPE)


def init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value, attr_type=onnx.AttributeProto.INTS) if name == "shape" else helper.make_attribute(name, value))


def get_attr(node: onnx.NodeProto, name: str):
    return helper.get_attribute_value(next(a for a in node.attribute if a.name == name))


def decode(model: onnx.ModelProto) -> np.ndarray:
    scope = next(M.walk(model))
    return HO.decode_node(hd_node(model), scope)


X = np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)


# --------------------------------------------------------------------------- sessions


def test_inference_session_plain_file(tmp_path: Path):
    path = tmp_path / "mlp.onnx"
    onnx.save(make_mlp(), path)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    sess = InferenceSession(path, providers=["cpu"])
    assert np.array_equal(sess.run(None, {"x": x})[0], want)
    assert [i.name for i in sess.get_inputs()] == ["x"]


def test_inference_session_huffman_file(tmp_path: Path):
    coded, q = coded_model()
    path = tmp_path / "coded.onnx"
    M.save_model(coded, path)
    want = ort.InferenceSession(dq_model(q).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    got = InferenceSession(path, providers=["cpu"]).run(None, {"x": X})[0]
    assert np.array_equal(got, want)
    with pytest.raises(Exception, match="HuffmanDecode"):  # stock onnxruntime cannot run it
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_decoder_threads_give_the_same_tensor():
    q = peaked((1 << 21,), TensorProto.INT8, 3)
    enc = HO.encode_tensor(q, TensorProto.INT8, chunk_size=512)
    node, inits = HO.make_node(enc, "w", "p", "o", "hd")
    g = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("w", TensorProto.INT8, list(q.shape))], inits)
    scope = next(M.walk(g))
    one = HO.decode_node(node, scope, threads=1)
    assert one.tobytes() == q.tobytes()
    assert HO.decode_node(node, scope, threads=3).tobytes() == q.tobytes()
    assert HO.decode_node(node, scope).tobytes() == q.tobytes()  # the runtime's default


# --------------------------------------------------------------------------- unpack


def test_unpack_writes_plain_onnx_stock_runtime_loads(tmp_path: Path):
    coded, q = coded_model()
    src, out = tmp_path / "coded.onnx", tmp_path / "plain.onnx"
    M.save_model(coded, src)
    before = src.read_bytes()
    code, stdout, stderr = invoke("unpack", str(src), "-o", str(out))
    assert code == 0, stderr
    assert "1 ai.onnxzip nodes decoded" in stderr and stdout == ""
    assert src.read_bytes() == before  # input untouched
    plain = onnx.load(out)
    assert all(n.domain != M.ONNXZIP_DOMAIN for n in plain.graph.node)
    assert all(o.domain != M.ONNXZIP_DOMAIN for o in plain.opset_import)
    onnx.checker.check_model(plain)
    assert numpy_helper.to_array(init(plain, "w_q")).tobytes() == q.tobytes()
    stock = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    assert np.array_equal(stock, InferenceSession(src).run(None, {"x": X})[0])


def test_unpack_plain_model_and_json(tmp_path: Path, mlp_path: Path):
    out = tmp_path / "copy.onnx"
    code, stdout, stderr = invoke("unpack", str(mlp_path), "-o", str(out), "--json", "-q")
    assert code == 0, stderr
    import json

    info = json.loads(stdout)
    assert info["decoded_nodes"] == 0 and info["output_bytes"] == out.stat().st_size
    assert onnx.load(out).graph == onnx.load(mlp_path).graph


def test_unpack_errors_leave_no_output(tmp_path: Path):
    coded, _ = coded_model()
    set_attr(hd_node(coded), "checksum", (get_attr(hd_node(coded), "checksum") + 1) % 2**32)
    src, out = tmp_path / "bad.onnx", tmp_path / "out.onnx"
    M.save_model(coded, src)
    code, _, stderr = invoke("unpack", str(src), "-o", str(out))
    assert code == 2
    assert_one_error(stderr)
    assert DAMAGED in stderr and "hint: the file is corrupt; re-download or recompress it" in stderr
    assert not out.exists() and not list(tmp_path.glob(".out.onnx*"))
    # never over the input
    code, _, stderr = invoke("unpack", str(src), "-o", str(src))
    assert code == 2 and "is the input model" in stderr
    code, _, stderr = invoke("unpack", str(tmp_path / "missing.onnx"), "-o", str(out))
    assert code == 2 and "not found" in stderr and not out.exists()


# --------------------------------------------------------------------------- damage


def _bump(name: str, delta: int):
    def f(m):
        set_attr(hd_node(m), name, get_attr(hd_node(m), name) + delta)
    return f


def _set(name: str, value):
    def f(m):
        set_attr(hd_node(m), name, value)
    return f


def _payload(fn):
    def f(m):
        t = init(m, hd_node(m).input[0])
        raw = bytearray(t.raw_data)
        fn(t, raw)
    return f


def _flip_payload(t, raw):
    raw[len(raw) // 2] ^= 0x5A
    t.raw_data = bytes(raw)


def _flip_payload_fix_crc(m):
    _payload(_flip_payload)(m)
    set_attr(hd_node(m), "crc32", zlib.crc32(init(m, hd_node(m).input[0]).raw_data))


def _truncate_payload(t, raw):
    t.raw_data = bytes(raw[:-10])
    t.dims[0] = len(raw) - 10


def _short_raw(t, raw):
    t.raw_data = bytes(raw[:-1])  # dims still say the old length


def _offsets(fn):
    def f(m):
        t = init(m, hd_node(m).input[1])
        arr = numpy_helper.to_array(t).copy()
        t.CopyFrom(numpy_helper.from_array(fn(arr), t.name))
    return f


def _swap_lengths(m):
    table = bytearray(get_attr(hd_node(m), "code_lengths"))
    table[0], table[3] = table[3], table[0]  # a permutation: still a prefix code
    set_attr(hd_node(m), "code_lengths", bytes(table))


def _rename_input(m):
    hd_node(m).input[0] = "nowhere"


CORRUPTIONS = {
    "count+1": (_bump("count", 1), "holds 3072 values but `count` is 3073"),
    "shape-and-count-huge": (lambda m: (_set("shape", [2**20, 2**20])(m), _set("count", 2**40)(m)), "more than a"),
    "shape-and-count-100x": (lambda m: (_set("shape", [6400, 48])(m), _set("count", 6400 * 48)(m)), "more than a"),
    "shape-transposed": (_set("shape", [48, 64]), "decoded data checksum mismatch"),
    "negative-dim": (lambda m: (_set("shape", [-64, -48])(m)), "negative dimension"),
    "dtype-uint8": (_set("dtype", TensorProto.UINT8), "decoded data checksum mismatch"),
    "dtype-float": (_set("dtype", TensorProto.FLOAT), "not a coded integer type"),
    "chunk-size": (_set("chunk_size", 32), "offset table has"),
    "chunk-size-zero": (_set("chunk_size", 0), "`chunk_size` 0 is out of range"),
    "lengths-swapped": (_swap_lengths, DAMAGED),
    "lengths-short": (lambda m: _set("code_lengths", get_attr(hd_node(m), "code_lengths")[:-1])(m), "code length table holds 127 bytes"),
    "lengths-not-prefix": (_set("code_lengths", bytes([0x11]) * 128), "do not form a prefix code"),
    "crc32": (_bump("crc32", 1), "crc32 mismatch"),
    "checksum": (_bump("checksum", 1), "decoded data checksum mismatch"),
    "version-0": (_set("version", 0), "format version `0`"),
    "missing-attr": (_set("count", None), "attribute `count` is missing"),
    "wrong-attr-type": (lambda m: (_set("count", None)(m), hd_node(m).attribute.append(helper.make_attribute("count", 3072.0))), "wrong type"),
    "payload-flip": (_payload(_flip_payload), "crc32 mismatch"),
    "payload-flip-crc-fixed": (_flip_payload_fix_crc, DAMAGED),
    "payload-truncated": (_payload(_truncate_payload), DAMAGED),
    "payload-raw-short": (_payload(_short_raw), "its shape says"),
    "payload-missing": (_rename_input, "is not an initializer"),
    "offset-bumped": (_offsets(lambda a: a + np.eye(1, a.size, 3, dtype=a.dtype)[0]), DAMAGED),
    "offset-dropped": (_offsets(lambda a: a[:-1]), "offset table has"),
    "offset-float": (_offsets(lambda a: a.astype(np.float32)), "must be a 1-D uint16/uint32 tensor"),
    "two-outputs": (lambda m: hd_node(m).output.append("extra"), "exactly one output"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_damaged_streams_raise_clean_model_error(case):
    corrupt, msg = CORRUPTIONS[case]
    m, _ = coded_model()
    corrupt(m)
    with pytest.raises(ModelError) as e:
        to_plain(m)
    err = e.value
    assert err.message.startswith("node `w_q/HuffmanDecode`: ") and DAMAGED in err.message, err.message
    assert msg in err.message, err.message
    assert err.hint == "the file is corrupt; re-download or recompress it"
    assert "\n" not in err.message


def test_newer_format_version_asks_for_upgrade():
    m, _ = coded_model()
    set_attr(hd_node(m), "version", 2)
    with pytest.raises(ModelError) as e:
        to_plain(m)
    assert "format version 2 is newer" in e.value.message and "upgrade onnxzip" in e.value.hint


def test_damaged_file_through_inference_session(tmp_path: Path):
    m, _ = coded_model()
    _payload(_flip_payload)(m)
    path = tmp_path / "bad.onnx"
    M.save_model(m, path)
    with pytest.raises(ModelError, match=DAMAGED):
        InferenceSession(path)


def test_fuzz_every_outcome_is_a_correct_decode_or_a_clean_error():
    """Random payload flips (with and without a fixed-up crc32) and header perturbations:
    each decode returns the exact tensor or raises ModelError, quickly and without large
    allocations. Bounded to a few seconds, seeded."""
    base, q = coded_model(shape=(64, 48), chunk_size=64)
    want = q.tobytes()
    rng = np.random.default_rng(1234)
    names = ["count", "chunk_size", "shape", "code_lengths", "checksum", "dtype", "crc32"]
    outcomes = {"ok": 0, "error": 0}
    deadline = time.perf_counter() + 3.0
    payload_bytes = len(init(base, hd_node(base).input[0]).raw_data)
    tracemalloc.start()
    try:
        while time.perf_counter() < deadline:
            m = onnx.ModelProto()
            m.CopyFrom(base)
            node = hd_node(m)
            for _ in range(rng.integers(1, 4)):
                kind = rng.integers(0, 4)
                if kind == 0:  # payload byte flips
                    t = init(m, node.input[0])
                    raw = bytearray(t.raw_data)
                    for _ in range(rng.integers(1, 4)):
                        raw[rng.integers(0, len(raw))] ^= 1 << int(rng.integers(0, 8))
                    t.raw_data = bytes(raw)
                    if rng.random() < 0.7:
                        set_attr(node, "crc32", zlib.crc32(t.raw_data))
                elif kind == 1:  # offset table entries
                    t = init(m, node.input[1])
                    arr = numpy_helper.to_array(t).copy()
                    if arr.size:
                        arr[rng.integers(0, arr.size)] = rng.integers(0, 2**16)
                    t.CopyFrom(numpy_helper.from_array(arr, t.name))
                elif kind == 2:  # an attribute
                    name = names[rng.integers(0, len(names))]
                    old = get_attr(node, name)
                    if name == "shape":
                        new = [int(d) for d in rng.integers(-2, 5000, rng.integers(0, 4))]
                    elif name == "code_lengths":
                        b = bytearray(old)
                        b[rng.integers(0, len(b))] = int(rng.integers(0, 256))
                        new = bytes(b)
                    else:
                        new = int(old) + int(rng.choice([-1, 1, 7, 1 << 20, -(1 << 40), 1 << 40]))
                    set_attr(node, name, new)
                else:  # a large, self-consistent but implausible header
                    n = int(rng.integers(1, 1 << 16))
                    set_attr(node, "shape", [n, n])
                    set_attr(node, "count", n * n)
            t0 = time.perf_counter()
            try:
                got = decode(m)
            except ModelError as e:
                assert DAMAGED in e.message or "newer" in e.message, e.message
                outcomes["error"] += 1
            else:
                assert got.tobytes() == want and got.shape == q.shape and got.dtype == q.dtype
                outcomes["ok"] += 1
            assert time.perf_counter() - t0 < 1.0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcomes["error"] > 50, outcomes
    # never more than a small multiple of what the payload can legitimately expand to
    assert peak < 64 * 8 * payload_bytes + (1 << 20), peak
