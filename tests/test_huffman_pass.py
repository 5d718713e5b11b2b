"""`huffman`: lossless coding of integer weight streams into HuffmanDecode nodes."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SAMPLES, feeds_for, invoke, run
from onnxzip import _huffman_op as HO
from onnxzip import model as M
from onnxzip.errors import RecipeError
from onnxzip.passes import REGISTRY
from onnxzip.passes.huffman import HuffmanConfig, HuffmanPass
from onnxzip.pipeline import run_pipeline, verify
from onnxzip.recipe import parse_recipe
from onnxzip.runtime import to_plain

NP_TYPES = {
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT4: ml_dtypes.int4,
    TensorProto.UINT4: ml_dtypes.uint4,
}


def peaked(shape, elem_type, seed=0) -> np.ndarray:
    """Integer codes with a peaked (Laplacian) histogram, as quantized weights have."""
    rng = np.random.default_rng(seed)
    v = np.round(rng.laplace(0, 1.5 if elem_type in (TensorProto.INT4, TensorProto.UINT4) else 6, shape))
    lo, hi = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255), TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}[elem_type]
    if elem_type in (TensorProto.UINT8, TensorProto.UINT4):
        v = v + (hi + 1) // 2
    return np.clip(v, lo, hi).astype(NP_TYPES[elem_type])


def dq_model(q: np.ndarray, *, k: int = 64, n: int = 48, zp: bool = False, opset: int = 21) -> onnx.ModelProto:
    """x[N, k] @ DequantizeLinear(q[k, n], scale[n], axis=1) -> y."""
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(np.full(n, 0.02, np.float32), "w_s")]
    ins = ["w_q", "w_s"]
    if zp:
        inits.append(numpy_helper.from_array(np.zeros(n, q.dtype), "w_zp"))
        ins.append("w_zp")
    g = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ins, ["w"], name="dq", axis=1),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        "dq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def kmeans_model(k: int = 64, n: int = 48, clusters: int = 16, seed: int = 1) -> onnx.ModelProto:
    """uint8 codes -> Cast(int64) -> Gather(codebook) -> Reshape -> MatMul (the k-means form)."""
    rng = np.random.default_rng(seed)
    p = np.exp(-np.arange(clusters) / 3.0)
    codes = rng.choice(clusters, size=k * n, p=p / p.sum()).astype(np.uint8)
    book = np.linspace(-1, 1, clusters).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Cast", ["codes"], ["idx"], name="cast", to=TensorProto.INT64),
            helper.make_node("Gather", ["book", "idx"], ["flat"], name="gather", axis=0),
            helper.make_node("Reshape", ["flat", "shape"], ["w"], name="reshape"),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        "km",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [
            numpy_helper.from_array(codes, "codes"),
            numpy_helper.from_array(book, "book"),
            numpy_helper.from_array(np.array([k, n], np.int64), "shape"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def huffman(model: onnx.ModelProto, **cfg):
    res = HuffmanPass(HuffmanConfig(**cfg)).call(model)
    if res.modified:
        verify(res.model)
    return res


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for s in M.walk(model) for t in s.graph.initializer}


def assert_bit_identical(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("elem_type", [TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4])
def test_dq_round_trip_is_bit_identical(elem_type):
    q = peaked((64, 48), elem_type)
    m = dq_model(q, zp=elem_type in (TensorProto.UINT8, TensorProto.UINT4))
    x = np.random.default_rng(2).standard_normal((5, 64)).astype(np.float32)
    ref = run(m, {"x": x})[0]
    original = initializers(m)
    res = huffman(m)
    assert res.modified and [t.name for t in res.tensors] == ["w_q"]
    coded = res.model
    assert M.count_ops(coded, "HuffmanDecode", M.ONNXZIP_DOMAIN) == 1
    assert M.domain_opset(coded, M.ONNXZIP_DOMAIN) == HO.FORMAT_VERSION
    assert "w_q" not in {t.name for t in coded.graph.initializer}
    plain = to_plain(coded)
    assert M.count_ops(plain, "HuffmanDecode") == 0 and M.domain_opset(plain, M.ONNXZIP_DOMAIN) is None
    decoded = initializers(plain)
    assert set(decoded) == set(original)  # payload and segment table gone, nothing else lost
    for name, arr in original.items():
        assert_bit_identical(decoded[name], arr)
    assert np.array_equal(run(coded, {"x": x})[0], ref)
    st = res.tensors[0]
    assert st.bytes_after < st.bytes_before
    assert st.extra["entropy_bits"] <= st.bits < st.extra["entropy_bits"] + 1
    assert st.extra["table_bytes"] == 8 and st.extra["segments"] == 1  # one (length, checksum) pair
    assert st.params_before == st.params_after == q.size


def test_kmeans_codes_round_trip():
    m = kmeans_model()
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    ref = run(m, {"x": x})[0]
    res = huffman(m)
    assert [t.name for t in res.tensors] == ["codes"] and res.tensors[0].op == "Cast"
    assert res.tensors[0].bits < 4  # 16 skewed clusters in uint8 codes
    assert np.array_equal(run(res.model, {"x": x})[0], ref)
    assert_bit_identical(initializers(to_plain(res.model))["codes"], initializers(kmeans_model())["codes"])


def test_uniform_stream_is_kept_raw_with_reason():
    q = np.random.default_rng(4).integers(-128, 128, (64, 48)).astype(np.int8)
    res = huffman(dq_model(q))
    assert not res.modified and not res.tensors
    (skip,) = res.skipped
    assert skip.name == "w_q" and "coding does not pay" in skip.reason and "raw" in skip.reason


def test_targets_other_ops_and_include():
    """Raw int8 initializers are coded when their consumer is named in `ops` or they match `include`."""
    b = peaked((128, 64), TensorProto.INT8, seed=5)
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "b"], ["y"], name="mmi"),
         helper.make_node("Gather", ["table", "ids"], ["e"], name="emb", axis=0)],
        "mmi",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 128]), helper.make_tensor_value_info("ids", TensorProto.INT64, ["M"])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 64]), helper.make_tensor_value_info("e", TensorProto.INT8, ["M", 64])],
        [numpy_helper.from_array(b, "b"), numpy_helper.from_array(peaked((64, 64), TensorProto.INT8, seed=6), "table")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    x = np.random.default_rng(7).integers(0, 256, (3, 128)).astype(np.uint8)
    ids = np.array([0, 5, 63], np.int64)
    ref = run(m, {"x": x, "ids": ids})
    # defaults: MatMulInteger's weight is a stream; a Gather table is not
    copy = onnx.ModelProto()
    copy.CopyFrom(m)
    assert [t.name for t in huffman(copy).tensors] == ["b"]
    copy.CopyFrom(m)
    assert [t.name for t in huffman(copy, ops=("Gather",)).tensors] == ["table"]
    copy.CopyFrom(m)
    res = huffman(copy, include=("tab*",))
    assert [t.name for t in res.tensors] == ["table"]
    for got, want in zip(run(res.model, {"x": x, "ids": ids}), ref, strict=True):
        assert np.array_equal(got, want)
    copy.CopyFrom(m)
    res = huffman(copy, exclude=("b",))
    assert not res.modified and res.skipped[0].reason == "excluded by the recipe"


def test_unsupported_width_and_graph_input_are_skipped():
    q16 = np.zeros((8, 8), np.int16)
    g = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="dq"),
         helper.make_node("DequantizeLinear", ["q8", "s"], ["w8"], name="dq8"),
         helper.make_node("Add", ["w", "w8"], ["y"], name="add")],
        "g",
        [helper.make_tensor_value_info("q8", TensorProto.INT8, [8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])],
        [numpy_helper.from_array(q16, "q"), numpy_helper.from_array(np.float32(0.5), "s"),
         numpy_helper.from_array(np.zeros((8, 8), np.int8), "q8")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    res = huffman(m)
    reasons = {s.name: s.reason for s in res.skipped}
    assert "8- and 4-bit integers only" in reasons["q"]
    assert "graph input" in reasons["q8"]
    assert not res.modified


def test_subgraph_streams(tmp_path: Path):
    """Streams owned by the main graph but read inside an If branch, and streams owned by a branch."""
    q_outer, q_inner = peaked((64, 32), TensorProto.INT8, 8), peaked((64, 32), TensorProto.INT8, 9)

    def branch(name: str, init: list) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("DequantizeLinear", [name, "s"], [f"w_{name}"], name=f"dq_{name}"),
             # Add, not MatMul: onnxruntime 1.32's DQ->MatMulNBits fusion fails on outer-scope weights
             helper.make_node("Add", ["x", f"w_{name}"], [f"y_{name}"], name=f"add_{name}")],
            f"b_{name}", [], [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [64, 32])], init,
        )

    g = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["sum"], name="sum", keepdims=0),
         helper.make_node("Greater", ["sum", "neg"], ["cond"], name="gt"),
         helper.make_node("If", ["cond"], ["y"], name="if",
                          then_branch=branch("q_in", [numpy_helper.from_array(q_inner, "q_in")]),
                          else_branch=branch("q_out", []))],
        "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 32])],
        [numpy_helper.from_array(q_outer, "q_out"), numpy_helper.from_array(np.float32(0.1), "s"),
         numpy_helper.from_array(np.float32(-1e30), "neg")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    res = huffman(m, segment_size=256)  # 8 segments a tensor
    assert {t.name for t in res.tensors} == {"q_in", "q_out"}
    x = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    plain = to_plain(res.model)
    dec = initializers(plain)
    assert_bit_identical(dec["q_out"], q_outer)
    assert_bit_identical(dec["q_in"], q_inner)
    assert np.array_equal(run(res.model, {"x": x})[0], run(m, {"x": x})[0])


def test_order_rule_and_recipe_keys():
    with pytest.raises(RecipeError) as e:
        parse_recipe("version: 1\npasses:\n  - huffman: {}\n  - cast-fp16: {}\n", "r.yaml")
    assert "must come before `huffman`" in e.value.message
    with pytest.raises(RecipeError) as e:
        parse_recipe("version: 1\npasses:\n  - huffman: {segment_size: 8}\n", "r.yaml")
    assert "out of range" in e.value.message


@pytest.mark.skipif("quantize" not in REGISTRY, reason="the quantize pass is not registered")
@pytest.mark.parametrize("body", ["{bits: 8}", "{bits: 4}", "{method: kmeans, bits: 4}"])
def test_after_quantize_pass_outputs_identical(body):
    """The `quantize` pass's streams, coded: the same outputs as the quantized model, bit for bit."""
    path = SAMPLES / "digits_mlp" / "model.onnx"
    feeds, _ = feeds_for(SAMPLES / "digits_mlp", 64)
    quant = run_pipeline(M.load_model(path), parse_recipe(f"version: 1\npasses:\n  - quantize: {body}\n")).model
    both = run_pipeline(M.load_model(path), parse_recipe(f"version: 1\npasses:\n  - quantize: {body}\n  - huffman: {{}}\n"))
    hres = both.steps[-1].result
    assert hres.tensors, hres.skipped
    assert np.array_equal(run(both.model, feeds)[0], run(quant, feeds)[0])
    ref = initializers(quant)
    for name, arr in initializers(to_plain(both.model)).items():
        assert_bit_identical(arr, ref[name])


def test_compress_cli_reports_stored_and_deployable(tmp_path: Path):
    src = tmp_path / "dq.onnx"
    onnx.save(dq_model(peaked((256, 128), TensorProto.INT8), k=256, n=128), src)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nname: huff\npasses:\n  - huffman: {}\n")
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    code, _, err = invoke("compress", str(src), "-r", str(recipe), "-o", str(out), "--report", str(rep), "-q")
    assert code == 0, err
    report = json.loads(rep.read_text())
    size = report["size"]
    assert size["stored_bytes"] == out.stat().st_size < size["deployable_bytes"]
    (t,) = report["passes"][0]["tensors"]
    assert {"entropy_bits", "bits", "table_bytes", "overhead_bytes", "bytes_before", "bytes_after"} <= set(t)
    again = tmp_path / "o2.onnx"
    assert invoke("compress", str(src), "-r", str(recipe), "-o", str(again), "-q")[0] == 0
    assert again.read_bytes() == out.read_bytes()  # deterministic
