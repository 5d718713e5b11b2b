"""onnxzip.executed_ops: onnxruntime's executed graph, its op counts, and the ops expected to
run slower than float, on tiny inline models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import make_mlp, run
from onnxzip import model as M
from onnxzip.executed_ops import NOISE_FLOOR, ExecutedOps, compare_models, describe, executed_ops, explain_latency, is_slower, optimized_graph


def _model(nodes, inits, x_shape, y_shape, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _conv_pair() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A float Conv, and the same Conv quantized dynamically as onnxruntime's quantize_dynamic
    writes it: DynamicQuantizeLinear on the input, ConvInteger, then a float rescale."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    float_model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], {"w": w}, [1, 3, 8, 8], [1, 8, 6, 6])
    ws = np.float32(np.abs(w).max() / 127)
    wq = (np.clip(np.round(w / ws), -127, 127) + 128).astype(np.uint8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="x_quant"),
        helper.make_node("ConvInteger", ["xq", "wq", "xz", "wz"], ["yi"], name="conv_int"),
        helper.make_node("Cast", ["yi"], ["yf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["xs", "ws"], ["s"], name="scale"),
        helper.make_node("Mul", ["yf", "s"], ["y"], name="rescale"),
    ]
    quant = _model(nodes, {"wq": wq, "wz": np.uint8(128), "ws": ws}, [1, 3, 8, 8], [1, 8, 6, 6])
    return float_model, quant


def _qdq_matmul(quantize_activation: bool) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """x[4,16] @ W[16,8]: float, and int8 QDQ (weights always; the activation too when asked)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    float_model = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], {"w": w}, [4, 16], [4, 8], opset=13)
    ws = np.float32(np.abs(w).max() / 127)
    inits = {"wq": np.clip(np.round(w / ws), -127, 127).astype(np.int8), "ws": ws, "wz": np.int8(0), "xs": np.float32(0.05), "xz": np.uint8(128)}
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], name="w_dq")]
    a = "x"
    if quantize_activation:
        nodes += [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="x_q"),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="x_dq")]
        a = "xd"
    nodes.append(helper.make_node("MatMul", [a, "wf"], ["y"], name="mm"))
    return float_model, _model(nodes, inits, [4, 16], [4, 8], opset=13)


def _ops(entry: dict, op: str) -> int:
    return sum(v for k, v in entry.items() if k.rsplit("::", 1)[-1] == op)


def test_conv_integer_is_a_finding():
    f, q = _conv_pair()
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert np.allclose(run(f, {"x": x})[0], run(q, {"x": x})[0], atol=0.2)  # the pair computes the same thing
    e = compare_models(f, q, batch=1)
    assert _ops(e["compressed"], "ConvInteger") == 1 and _ops(e["original"], "ConvInteger") == 0
    conv = [x for x in e["findings"] if x["op"] == "ConvInteger"]
    assert len(conv) == 1 and conv[0]["count"] == 1 and conv[0]["nodes"] == ["conv_int"]
    assert "slower than its float" in conv[0]["reason"] and "DynamicQuantizeLinear" in conv[0]["reason"]
    assert not any(x["op"] in ("DynamicQuantizeLinear", "Cast") for x in e["findings"])  # counted within the ConvInteger finding
    # ConvInteger is expected to cost at any batch
    assert any(x["op"] == "ConvInteger" for x in compare_models(f, q, batch=64)["findings"])


def test_qdq_static_matmul_findings_match_what_onnxruntime_executes():
    f, q = _qdq_matmul(quantize_activation=True)
    graph = optimized_graph(q)
    consts = {t.name for t in graph.graph.initializer}
    ql_on_activations = [n.name for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts]
    dq_left = [n.name for n in graph.graph.node if n.op_type == "DequantizeLinear"]
    e = compare_models(f, q, batch=4)
    by_op = {x["op"]: x for x in e["findings"]}
    assert ql_on_activations, "onnxruntime absorbed the activation QuantizeLinear: the test model no longer exercises it"
    assert by_op["QuantizeLinear"]["count"] == len(ql_on_activations) and by_op["QuantizeLinear"]["nodes"] == ql_on_activations
    assert "quantizes an activation" in by_op["QuantizeLinear"]["reason"]
    if dq_left:  # reported exactly when onnxruntime left it in the executed graph
        assert by_op["DequantizeLinear"]["count"] == len(dq_left)
    else:
        assert "DequantizeLinear" not in by_op
    assert _ops(e["compressed"], "MatMul") == 0  # the float MatMul became an integer kernel
    assert e["difference"]["MatMul"] == -1


def test_weight_only_dequantize_left_at_run_time_is_a_finding():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    ws = np.float32(np.abs(w).max() / 127)
    f = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], {"w": w}, [1, 3, 8, 8], [1, 8, 6, 6])
    q = _model([helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], name="w_dq"), helper.make_node("Conv", ["x", "wf"], ["y"], name="conv")],
               {"wq": np.clip(np.round(w / ws), -127, 127).astype(np.int8), "ws": ws, "wz": np.int8(0)}, [1, 3, 8, 8], [1, 8, 6, 6])
    e = compare_models(f, q, batch=1)
    dq = [x for x in e["findings"] if x["op"] == "DequantizeLinear"]
    assert _ops(e["compressed"], "DequantizeLinear") == 1  # onnxruntime does not fold a weight DequantizeLinear into a float Conv
    assert len(dq) == 1 and dq[0]["nodes"] == ["w_dq"] and "feeds a float op" in dq[0]["reason"]


def test_int8_weight_only_matmul_runs_as_matmulnbits():
    f, q = _qdq_matmul(quantize_activation=False)
    e = compare_models(f, q, batch=4)
    n_bits = _ops(e["compressed"], "MatMulNBits")
    found = [x for x in e["findings"] if x["op"] == "MatMulNBits"]
    assert len(found) == (1 if n_bits else 0)  # what onnxruntime executes decides
    if n_bits:
        assert found[0]["nodes"] == ["mm"] and "8-bit weights" in found[0]["reason"]
    else:
        assert any(x["op"] == "DequantizeLinear" for x in e["findings"])


def test_float_model_against_itself_has_no_findings():
    m = make_mlp()
    e = compare_models(m, m, batch=1)
    assert e["difference"] == {} and e["findings"] == []
    assert e["original"] == e["compressed"] and sum(e["original"].values()) >= 2
    assert "same executed ops as the original" in describe(e)
    assert "same executed ops" in explain_latency(1.0, 1.5, e)


def test_dynamic_quantization_counts_only_at_small_batch():
    orig = ExecutedOps({"MatMul": 2}, {"MatMul": ["a", "b"]})
    comp = ExecutedOps({"com.microsoft::DynamicQuantizeMatMul": 2}, {"com.microsoft::DynamicQuantizeMatMul": ["a_q", "b_q"]})
    from onnxzip.executed_ops import findings

    small = findings(orig, comp, batch=1)
    assert [(x.op, x.count, x.nodes) for x in small] == [("DynamicQuantizeMatMul", 2, ("a_q", "b_q"))]
    assert "at batch 1" in small[0].reason
    assert findings(orig, comp, batch=256) == []


def test_unfolded_batchnorm_and_added_transposes():
    orig = ExecutedOps({"Conv": 2, "Transpose": 1}, {"Conv": ["c1", "c2"], "Transpose": ["t0"]})
    comp = ExecutedOps({"com.microsoft::QLinearConv": 2, "BatchNormalization": 2, "Transpose": 3},
                       {"com.microsoft::QLinearConv": ["c1", "c2"], "BatchNormalization": ["bn1", "bn2"], "Transpose": ["t0", "t1", "t2"]})
    from onnxzip.executed_ops import findings

    got = {x.op: x for x in findings(orig, comp, batch=1)}
    assert got["BatchNormalization"].count == 2 and "folded" in got["BatchNormalization"].reason
    assert got["Transpose"].count == 2 and got["Transpose"].nodes == ("t1", "t2") and "NHWC" in got["Transpose"].reason


def test_explanation_names_the_ops_only_when_slower_beyond_noise():
    f, q = _qdq_matmul(quantize_activation=True)
    e = compare_models(f, q, batch=4)
    text = explain_latency(0.100, 0.113, e)
    assert text is not None and "1.13x" in text and "QuantizeLinear" in text and "x_q" in text
    assert explain_latency(0.100, 0.100 * (1 + NOISE_FLOOR / 2), e) is None  # within the noise floor
    assert explain_latency(0.100, 0.113, e, noise=0.2) is None  # the measurement was noisier than the gap
    assert explain_latency(0.100, 0.080, e) is None  # faster
    assert not is_slower(None, 0.1) and is_slower(0.1, 0.2)
    assert "unknown" in explain_latency(0.1, 0.2, {"error": "no graph"})


def test_external_data_model_and_temp_files_cleaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    m = make_mlp(k=64, h=128)
    path = tmp_path / "ext" / "m.onnx"
    path.parent.mkdir()
    onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    loaded = M.load_model(path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    got = executed_ops(loaded)
    assert got.counts == executed_ops(make_mlp(k=64, h=128)).counts and sum(got.counts.values()) >= 2  # the same graph as when inline
    assert list((tmp_path / "tmp").iterdir()) == []  # the optimized graph's folder is gone
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.data", "m.onnx"]  # nothing written next to the model
