"""onnxzip.runtime on plain and Huffman-coded files, `onnxzip unpack`, and damaged streams."""

from __future__ import annotations

import gc
import time
import tracemalloc
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
from onnxzip.runtime import InferenceSession, session_from_model, to_plain
from test_huffman_pass import dq_model, peaked

DAMAGED = "HuffmanDecode stream is damaged"


def coded_model(shape=(64, 48), segment_size: int | None = 256, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """A DQ model whose int8 weight is Huffman-coded (12 segments by default), and that weight."""
    q = peaked(shape, TensorProto.INT8, seed)
    m = dq_model(q, k=shape[0], n=shape[1])
    res = HuffmanPass(HuffmanConfig(segment_size=segment_size)).call(m)
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
    enc = HO.encode_tensor(q, TensorProto.INT8)
    assert enc.stream.n_segments == 8
    node, inits = HO.make_node(enc, "w", "p", "o", "hd")
    g = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("w", TensorProto.INT8, list(q.shape))], inits)
    scope = next(M.walk(g))
    one = HO.decode_node(node, scope, threads=1)
    assert one.tobytes() == q.tobytes()
    assert HO.decode_node(node, scope, threads=3).tobytes() == q.tobytes()
    assert HO.decode_node(node, scope).tobytes() == q.tobytes()  # the runtime's default


def test_session_owns_the_handed_over_arrays(tmp_path: Path):
    """Decoded 8-bit tensors reach onnxruntime as OrtValues (not through the proto); the
    session keeps them alive, and the caller's model is never modified."""
    coded, q = coded_model()
    before = coded.SerializeToString()
    want = ort.InferenceSession(dq_model(q).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    sess = session_from_model(coded, ["CPUExecutionProvider"])
    assert coded.SerializeToString() == before
    assert list(sess._onnxzip_arrays) == ["w_q"] and sess._onnxzip_arrays["w_q"].tobytes() == q.tobytes()
    path = tmp_path / "coded.onnx"
    M.save_model(coded, path)
    wrapped = InferenceSession(path)
    del coded
    for _ in range(3):
        gc.collect()
        np.zeros(1 << 20, np.int8)  # reuse freed memory, if any were freed
    assert np.array_equal(sess.run(None, {"x": X})[0], want)
    assert np.array_equal(wrapped.run(None, {"x": X})[0], want)


@pytest.mark.parametrize("elem_type", [TensorProto.INT4, TensorProto.UINT4])
def test_4bit_streams_load_through_the_proto(elem_type, tmp_path: Path):
    q = peaked((64, 48), elem_type)
    m = dq_model(q, zp=elem_type == TensorProto.UINT4)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    res = HuffmanPass(HuffmanConfig()).call(m)
    assert res.modified
    path = tmp_path / "q4.onnx"
    M.save_model(res.model, path)
    sess = InferenceSession(path)
    assert sess._sess._onnxzip_arrays == {}  # onnxruntime takes no int4 OrtValue from numpy
    assert np.array_equal(sess.run(None, {"x": X})[0], want)


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
    _table(lambda a: a + np.array([[0, 1]], np.uint32))(coded)  # every checksum off by one
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


def _truncate_payload(t, raw):
    t.raw_data = bytes(raw[:-10])
    t.dims[0] = len(raw) - 10


def _short_raw(t, raw):
    t.raw_data = bytes(raw[:-1])  # dims still say the old length


def _table(fn):
    def f(m):
        t = init(m, hd_node(m).input[1])
        arr = numpy_helper.to_array(t).copy()
        t.CopyFrom(numpy_helper.from_array(fn(arr), t.name))
    return f


def _bump_entry(row: int, col: int, delta: int):
    def fn(a):
        a[row, col] = (int(a[row, col]) + delta) % 2**32
        return a
    return _table(fn)


def _move_boundary(a):
    a[3, 0] += 1  # segment 3 takes the first byte of segment 4: same total
    a[4, 0] -= 1
    return a


def _extend_last(m):
    """Bytes after the last segment's end, counted in its length."""
    _payload(lambda t, raw: (setattr(t, "raw_data", bytes(raw) + b"\0\0"), t.dims.__setitem__(0, len(raw) + 2)))(m)
    _bump_entry(-1, 0, 2)(m)


def _swap_segments(m):
    """Segments 0 and 1 trade places, bytes and table rows alike."""
    t, tab = init(m, hd_node(m).input[0]), init(m, hd_node(m).input[1])
    a = numpy_helper.to_array(tab).copy()
    n0, n1 = int(a[0, 0]), int(a[1, 0])
    raw = t.raw_data
    t.raw_data = raw[n0 : n0 + n1] + raw[:n0] + raw[n0 + n1 :]
    tab.CopyFrom(numpy_helper.from_array(a[[1, 0, *range(2, len(a))]], tab.name))


def _rename_input(m):
    hd_node(m).input[0] = "nowhere"


CORRUPTIONS = {
    "count+1": (_bump("count", 1), "holds 3072 values but `count` is 3073"),
    "shape-and-count-huge": (lambda m: (_set("shape", [2**20, 2**20])(m), _set("count", 2**40)(m)), "more than a"),
    "shape-and-count-2000x": (lambda m: (_set("shape", [64000, 96])(m), _set("count", 64000 * 96)(m)), "more than a"),
    "shape-transposed": (_set("shape", [48, 64]), "segment 0 checksum mismatch"),
    "negative-dim": (lambda m: (_set("shape", [-64, -48])(m)), "negative dimension"),
    "dtype-uint8": (_set("dtype", TensorProto.UINT8), "segment 0 checksum mismatch"),
    "dtype-float": (_set("dtype", TensorProto.FLOAT), "not a coded integer type"),
    "segment-size": (_set("segment_size", 128), "segment table has shape [12, 2]"),
    "segment-size-bigger": (_set("segment_size", 512), "segment table has shape [12, 2]"),
    "segment-size-zero": (_set("segment_size", 0), "`segment_size` 0 is out of range"),
    "checksum": (_bump_entry(5, 1, 1), "segment 5 checksum mismatch"),
    "version-0": (_set("version", 0), "format version `0`"),
    "missing-attr": (_set("count", None), "attribute `count` is missing"),
    "wrong-attr-type": (lambda m: (_set("count", None)(m), hd_node(m).attribute.append(helper.make_attribute("count", 3072.0))), "wrong type"),
    "payload-flip": (_payload(_flip_payload), DAMAGED),
    "payload-truncated": (_payload(_truncate_payload), "segments add up to"),
    "payload-extended": (_extend_last, "segment 11 has 2 bytes after its end"),
    "payload-raw-short": (_payload(_short_raw), "its shape says"),
    "payload-missing": (_rename_input, "is not an initializer"),
    "segments-swapped": (_swap_segments, "segment 0 checksum mismatch"),
    "segment-boundary-moved": (_table(_move_boundary), "segment 3 "),
    "segment-length-short": (_bump_entry(0, 0, -5), "segments add up to"),
    "segment-length-zero": (_table(lambda a: (a.__setitem__((slice(None), 0), 0), a)[1]), "segments add up to"),
    "table-dropped-row": (_table(lambda a: a[:-1]), "segment table has shape [11, 2]"),
    "table-float": (_table(lambda a: a.astype(np.float32)), "must be a 2-D uint32 tensor"),
    "table-flat": (_table(lambda a: a.reshape(-1)), "must be a 2-D uint32 tensor"),
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
    set_attr(hd_node(m), "version", HO.FORMAT_VERSION + 1)
    with pytest.raises(ModelError) as e:
        to_plain(m)
    assert f"format version {HO.FORMAT_VERSION + 1} is newer" in e.value.message and "upgrade onnxzip" in e.value.hint


def test_version_1_node_asks_for_recompression(tmp_path: Path):
    """onnxzip's first format (chunked Huffman with an offset table) is no longer read."""
    m, _ = coded_model()
    node = hd_node(m)
    set_attr(node, "version", 1)
    set_attr(node, "segment_size", None)
    set_attr(node, "chunk_size", 1024)  # what a version-1 node carries
    set_attr(node, "code_lengths", bytes(128))
    with pytest.raises(ModelError) as e:
        to_plain(m)
    assert "format version 1 was written by an older onnxzip" in e.value.message
    assert DAMAGED not in e.value.message
    assert e.value.hint == "recompress the original model with this onnxzip"
    path = tmp_path / "v1.onnx"
    M.save_model(m, path)
    code, _, stderr = invoke("unpack", str(path), "-o", str(tmp_path / "out.onnx"))
    assert code == 2 and "written by an older onnxzip" in stderr
    assert_one_error(stderr)


def test_damaged_file_through_inference_session(tmp_path: Path):
    m, _ = coded_model()
    _payload(_flip_payload)(m)
    path = tmp_path / "bad.onnx"
    M.save_model(m, path)
    with pytest.raises(ModelError, match=DAMAGED):
        InferenceSession(path)


def test_fuzz_every_outcome_is_a_correct_decode_or_a_clean_error():
    """Random payload flips, segment table and header perturbations:
    each decode returns the exact tensor or raises ModelError, quickly and without large
    allocations. Bounded to a few seconds, seeded."""
    base, q = coded_model(shape=(64, 48), segment_size=256)
    want = q.tobytes()
    rng = np.random.default_rng(1234)
    names = ["count", "segment_size", "shape", "dtype", "version"]
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
                elif kind == 1:  # segment table entries: lengths, checksums
                    t = init(m, node.input[1])
                    arr = numpy_helper.to_array(t).copy()
                    i, j = rng.integers(0, arr.shape[0]), rng.integers(0, 2)
                    arr[i, j] = rng.integers(0, 2**32) if j else (int(arr[i, j]) + int(rng.integers(-3, 4))) % 2**32
                    t.CopyFrom(numpy_helper.from_array(arr, t.name))
                elif kind == 2:  # an attribute
                    name = names[rng.integers(0, len(names))]
                    old = get_attr(node, name)
                    if name == "shape":
                        new = [int(d) for d in rng.integers(-2, 5000, rng.integers(0, 4))]
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
                assert DAMAGED in e.message or "newer" in e.message or "older" in e.message, e.message
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


def test_format_2_files_still_decode_and_keep_their_tighter_bound(monkeypatch):
    """A literal-only version-2 file (what onnxzip wrote before runs) decodes bit-exactly; its
    expansion bound stays 8 symbols a payload byte."""
    from onnxzip.kernels import huffman as H

    monkeypatch.setattr(H, "RUN_THRESHOLDS", ())
    monkeypatch.setattr(HO, "FORMAT_VERSION", 2)
    m, q = coded_model()
    monkeypatch.undo()
    assert HO.FORMAT_VERSION == 3
    node = hd_node(m)
    assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "version")) == 2
    np.testing.assert_array_equal(numpy_helper.to_array(init(to_plain(m), node.output[0])), q)
    # 100x the values the payload holds: over version 2's bound, under version 3's
    set_attr(node, "shape", [6400, 48])
    set_attr(node, "count", 6400 * 48)
    with pytest.raises(ModelError) as e:
        to_plain(m)
    assert "more than a" in e.value.message
