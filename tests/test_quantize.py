"""The `quantize` pass: representations onnxruntime accepts and fuses, round-trip error
bounds through the ONNX graph, exact zeros, presets on the sample models, determinism and
bad input through the CLI."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SAMPLES, assert_one_error, feeds_for, invoke, make_mlp, run
from onnxzip import compress
from onnxzip import model as M
from onnxzip.data import CalibrationSource, NpzData
from onnxzip.kernels.kmeans import kmeans_dequantize
from onnxzip.kernels.quant import dequantize_linear, quantize_linear
from onnxzip.passes.base import PassContext
from onnxzip.recipe import parse_recipe
from onnxzip.pipeline import run_pipeline

QUANT_PRESETS = ("int8-dynamic", "int8-static", "int4-weight-only", "kmeans-5bit", "deep-compression")


# --------------------------------------------------------------------------- helpers


def quantize(model: onnx.ModelProto, calibration=None, seed: int = 0, **keys):
    """Run the pass through the pipeline (so the pipeline's checker + ORT load check run too)."""
    body = json.dumps(keys) if keys else "{}"
    recipe = parse_recipe(f"version: 1\nname: t\nseed: {seed}\npasses:\n  - quantize: {body}\n")
    res = run_pipeline(model, recipe, context=PassContext(seed=seed, calibration=calibration))
    return res.model, res.steps[0].result


def optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime actually runs (ORT_ENABLE_ALL, CPU), via optimized_model_filepath."""
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(M.serialize(model), so, providers=["CPUExecutionProvider"])
        return onnx.load(os.path.join(d, "opt.onnx"))


def ops(model: onnx.ModelProto) -> dict[str, int]:
    return {k.split("::")[-1]: v for k, v in M.op_histogram(model).items()}


def tensors_from_ort(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """Values of graph tensors computed by onnxruntime with no optimization (the decoder
    subgraphs as written), on zero inputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    s = ort.InferenceSession(M.serialize(m), so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.zeros(shape, dtype=np.float32)
    return dict(zip(names, s.run(names, feeds), strict=False))


def decoded_name(model: onnx.ModelProto, stat) -> str:
    """The tensor that holds the decoded weight at run time."""
    if stat.extra.get("rewritten_as") == "MatMul":  # Gemm -> MatMul on W or W^T
        return f"{stat.name}_dequantized"
    return stat.name


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    "keys",
    [
        {},  # int8 per-channel symmetric
        {"symmetric": False},
        {"granularity": "per_tensor"},
        {"bits": 4, "granularity": "block", "block_size": 32},
        {"bits": 4, "granularity": "block", "block_size": 16, "symmetric": False},
        {"bits": 3, "granularity": "per_channel"},
        {"bits": 6, "clip": "mse"},
    ],
    ids=["int8", "uint8", "per_tensor", "int4_block", "uint4_block16", "int3", "int6_mse"],
)
def test_weight_only_round_trip_through_onnxruntime(keys):
    """The decoder subgraph, run by onnxruntime, reproduces kernels' dequantize bit for bit,
    within scale/2 of the original weight; the model still loads and runs."""
    src = make_mlp(k=64, h=96, n=10, seed=3)
    orig = {t.name: M.to_array(t) for t in src.graph.initializer}
    out, res = quantize(_copy(src), **keys)
    assert {s.name for s in res.tensors} == {"w1", "w2"}
    names = [decoded_name(out, s) for s in res.tensors]
    got = tensors_from_ort(out, names)
    for stat, name in zip(res.tensors, names, strict=False):
        w = orig[stat.name]
        if stat.extra.get("rewritten_as") == "MatMul":
            w = w.T  # make_mlp's Gemm has transB=1: the MatMul weight is W^T
        q, s, z = quantize_linear(w, keys.get("bits", 8), keys.get("symmetric", True), stat.extra.get("axis"), stat.extra.get("block_size"), keys.get("clip", "minmax"))
        deq = dequantize_linear(q, s, z, stat.extra.get("axis"), stat.extra.get("block_size"))
        np.testing.assert_array_equal(got[name], deq)
        half = dequantize_linear(np.ones(q.shape, np.int32), s, np.zeros(z.shape, np.int32), stat.extra.get("axis"), stat.extra.get("block_size")) / 2
        clipped = keys.get("clip") == "mse"
        if not clipped:
            assert np.all(np.abs(got[name] - w) <= half * (1 + 1e-6) + 1e-12)
        assert stat.bits == keys.get("bits", 8)
        assert stat.extra["sqnr_db"] > 5 * keys.get("bits", 8) - 12  # ~6 dB per bit, loosely
        assert stat.bytes_after < stat.bytes_before
    x = np.random.default_rng(0).standard_normal((7, 64)).astype(np.float32)
    ref = run(src, {"x": x})[0]
    # MatMulNBits also quantizes activations (onnxruntime's default accuracy_level 4)
    rel = np.linalg.norm(run(out, {"x": x})[0] - ref) / np.linalg.norm(ref)
    assert rel < {8: 0.03, 6: 0.06, 4: 0.25, 3: 0.5}[keys.get("bits", 8)], rel


def _copy(m: onnx.ModelProto) -> onnx.ModelProto:
    c = onnx.ModelProto()
    c.CopyFrom(m)
    return c


def conv_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2
    b = rng.standard_normal(16).astype(np.float32) * 0.1
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 6, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("keys", [{}, {"symmetric": False}, {"bits": 4, "granularity": "block", "block_size": 16}])
def test_conv_weight_only_is_folded_at_load(keys):
    """Conv weights use the Cast form: same values as kernels' dequantize, and onnxruntime
    folds it (no DequantizeLinear/Cast left in the optimized graph, Conv runs in float)."""
    src = conv_model()
    w = M.to_array(src.graph.initializer[0])
    out, res = quantize(_copy(src), **keys)
    (stat,) = res.tensors
    assert stat.extra["representation"].startswith("Cast")
    got = tensors_from_ort(out, ["w"])["w"]
    q, s, z = quantize_linear(w, keys.get("bits", 8), keys.get("symmetric", True), stat.extra.get("axis"), stat.extra.get("block_size"))
    np.testing.assert_array_equal(got, dequantize_linear(q, s, z, stat.extra.get("axis"), stat.extra.get("block_size")))
    opt = ops(optimized(out))
    assert "DequantizeLinear" not in opt and "Cast" not in opt and "Mul" not in opt
    x = np.random.default_rng(1).standard_normal((2, 8, 6, 6)).astype(np.float32)
    ref = run(src, {"x": x})[0]
    rel = np.linalg.norm(run(out, {"x": x})[0] - ref) / np.linalg.norm(ref)
    assert rel < (0.15 if keys.get("bits") == 4 else 0.02), rel


def pruned_mlp() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    m = make_mlp(k=64, h=96, n=10, seed=5)
    rng = np.random.default_rng(0)
    for t in m.graph.initializer:
        if t.name in ("w1", "w2"):
            a = M.to_array(t).copy()
            a[rng.random(a.shape) < 0.5] = 0.0
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    return m, {t.name: M.to_array(t) for t in m.graph.initializer}


@pytest.mark.parametrize(
    "keys",
    [
        {"symmetric": True},
        {"symmetric": False},
        {"bits": 4, "granularity": "block", "block_size": 32, "symmetric": False},
        {"method": "kmeans", "bits": 4},
        {"method": "kmeans", "bits": 3, "per_channel": True, "outliers": 0.02},
    ],
    ids=["int8", "uint8", "uint4_block", "kmeans", "kmeans_pc_outliers"],
)
def test_pruned_zeros_stay_exact(keys):
    src, orig = pruned_mlp()
    out, res = quantize(_copy(src), **keys)
    got = tensors_from_ort(out, [decoded_name(out, s) for s in res.tensors])
    for stat in res.tensors:
        w = orig[stat.name]
        d = got[decoded_name(out, stat)]
        if d.shape != w.shape:
            d = d.T
        assert np.all(d[w == 0] == 0.0)
        assert stat.extra["sparsity_before"] == pytest.approx(np.mean(w == 0))
        assert stat.sparsity >= stat.extra["sparsity_before"]  # kept (a tiny weight may round to 0 too)
        assert stat.sparsity == pytest.approx(np.mean(d == 0))


# --------------------------------------------------------------------------- MatMulNBits


def matmul_model(k: int, n: int = 48) -> onnx.ModelProto:
    w = np.random.default_rng(k).standard_normal((k, n)).astype(np.float32) * 0.1
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("k", [128, 80], ids=["K_multiple_of_block", "K_not_multiple"])
def test_int4_matmul_becomes_matmulnbits(k):
    """INT4 blocked DequantizeLinear (opset 21) feeding MatMul runs as MatMulNBits. A K that
    is not a multiple of the block (80 = 2.5 x 32) is allowed: ONNX pads the last block."""
    src = matmul_model(k)
    out, res = quantize(_copy(src), bits=4, granularity="block", block_size=32)
    assert M.domain_opset(out) == 21 and any("opset 17 -> 21" in n for n in res.notes)
    (stat,) = res.tensors
    q_init = next(t for t in out.graph.initializer if t.name.endswith("_quantized"))
    assert q_init.data_type == TensorProto.INT4
    assert stat.bytes_after < stat.bytes_before / 5
    assert ops(optimized(out)).get("MatMulNBits") == 1
    # matches a dense model holding the dequantized weight (with full-precision compute)
    w = M.to_array(src.graph.initializer[0])
    deq = dequantize_linear(*quantize_linear(w, 4, True, 0, 32), 0, 32)
    x = np.random.default_rng(1).standard_normal((5, k)).astype(np.float32)
    np.testing.assert_allclose(tensors_from_ort(out, ["w"])["w"], deq)
    np.testing.assert_allclose(run(out, {"x": x})[0], x @ deq, atol=0.1)  # MatMulNBits quantizes activations (accuracy_level 4)


def test_block_size_that_matmulnbits_cannot_take_is_folded():
    """block_size 48 (a multiple of 16, not a power of two): onnxruntime would run the
    DequantizeLinear at every inference, so the weight is stored in the folded Cast form."""
    src = matmul_model(80)
    out, res = quantize(_copy(src), bits=4, granularity="block", block_size=48)
    assert res.tensors[0].extra["representation"].startswith("Cast")
    assert ops(optimized(out)) == {"MatMul": 1}
    w = M.to_array(src.graph.initializer[0])
    np.testing.assert_array_equal(tensors_from_ort(out, ["w"])["w"], dequantize_linear(*quantize_linear(w, 4, True, 0, 48), 0, 48))


def test_int4_on_transformer_sample_uses_matmulnbits():
    model = M.load_model(SAMPLES / "transformer" / "model.onnx")
    out, res = quantize(model, bits=4, granularity="block", block_size=32, ops=["MatMul"], min_params=256)
    n_weights = len(res.tensors)
    assert n_weights == 13  # embed + 2 x (q, k, v, o, ff1, ff2)
    assert ops(optimized(out)).get("MatMulNBits") == n_weights
    reasons = {s.reason for s in res.skipped}
    assert any("computed at run time" in r for r in reasons)  # attention score MatMuls


def test_gemm_weight_only_becomes_matmul_and_unfusable_dq_is_folded():
    """digits_mlp: Gemm weights are rewritten as MatMul; where onnxruntime would not fuse the
    DequantizeLinear (MatMul+Add+Relu chains become FusedGemm first) the weight is stored in
    the folded Cast form: no DequantizeLinear survives in the graph onnxruntime runs."""
    model = M.load_model(SAMPLES / "digits_mlp" / "model.onnx")
    out, res = quantize(model, bits=4, granularity="block", block_size=32)
    assert len(res.tensors) == 3
    opt = ops(optimized(out))
    assert "DequantizeLinear" not in opt and "Gemm" not in opt
    assert opt.get("MatMulNBits", 0) >= 1
    reps = {s.extra["representation"] for s in res.tensors}
    assert any(r.startswith("Cast") for r in reps) and any(r.startswith("Dequantize") for r in reps)


# --------------------------------------------------------------------------- k-means


@pytest.mark.parametrize(
    "keys",
    [{"bits": 5}, {"bits": 4, "per_channel": True}, {"bits": 3, "outliers": 0.01, "init": "kmeans++"}],
    ids=["per_tensor", "per_channel", "outliers_kmeans++"],
)
def test_kmeans_folds_and_matches_dense(keys):
    src = make_mlp(k=64, h=128, n=10, seed=2)
    conv = conv_model(1)
    for model, feed in ((src, {"x": np.random.default_rng(0).standard_normal((6, 64)).astype(np.float32)}),
                        (conv, {"x": np.random.default_rng(0).standard_normal((2, 8, 6, 6)).astype(np.float32)})):
        orig = {t.name: M.to_array(t) for t in model.graph.initializer}
        out, res = quantize(_copy(model), method="kmeans", **keys)
        assert res.tensors
        opt = ops(optimized(out))
        assert "Gather" not in opt and "ScatterElements" not in opt and "Cast" not in opt  # folded
        dense = _copy(model)
        got = tensors_from_ort(out, [s.name for s in res.tensors])
        for stat in res.tensors:
            assert stat.bits == keys["bits"] and stat.extra["codebook_size"] == 2 ** keys["bits"]
            if keys.get("outliers"):
                assert stat.extra["outliers"] == round(keys["outliers"] * orig[stat.name].size)
            codes = numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == stat.name + "_codes"))
            assert codes.dtype == np.uint8 and codes.shape == orig[stat.name].shape and codes.max() < 2 ** keys["bits"]
            for t in dense.graph.initializer:
                if t.name == stat.name:
                    t.CopyFrom(numpy_helper.from_array(got[stat.name], stat.name))
            assert np.unique(got[stat.name]).size <= 2 ** keys["bits"] * stat.extra["codebooks"] + stat.extra["outliers"]
        np.testing.assert_allclose(run(out, feed)[0], run(dense, feed)[0], rtol=1e-5, atol=1e-5)


def test_kmeans_codes_decode_like_the_kernel():
    src = make_mlp(k=64, h=128, n=10, seed=2)
    out, _res = quantize(_copy(src), method="kmeans", bits=4, per_channel=True)
    init = {t.name: t for t in out.graph.initializer}
    got = tensors_from_ort(out, ["w1"])["w1"]
    codes = numpy_helper.to_array(init["w1_codes"])
    cb = numpy_helper.to_array(init["w1_codebook"]).reshape(codes.shape[1], -1)  # MatMul: channels on axis 1
    np.testing.assert_array_equal(got, kmeans_dequantize(codes, cb, per_channel_axis=1))
    # the Huffman pass's convention: a plain uint8 initializer read by a Cast node
    readers = [n for n in out.graph.node if "w1_codes" in n.input]
    assert [n.op_type for n in readers] == ["Cast"]


# --------------------------------------------------------------------------- dynamic / static


def test_dynamic_matmul_gemm_and_conv_fallback():
    model = M.load_model(SAMPLES / "digits_cnn" / "model.onnx")
    out, res = quantize(model, activations="dynamic", min_params=256)
    modes = {s.name: (s.extra["mode"], s.extra.get("fallback", "")) for s in res.tensors}
    assert modes["fc.weight"] == ("dynamic", "")
    for conv in ("conv1.weight", "dw.weight", "pw.weight"):
        mode, why = modes[conv]
        assert mode == "weight-only" and "ConvInteger" in why
    assert ops(out).get("MatMulInteger") == 1 and ops(out).get("DynamicQuantizeLinear") == 1
    opt = ops(optimized(out))
    assert opt.get("DynamicQuantizeMatMul") == 1 and "ConvInteger" not in opt and "DequantizeLinear" not in opt
    # the int8 weight feeds MatMulInteger directly (input 1)
    readers = [n.op_type for n in out.graph.node if "fc.weight_quantized" in n.input]
    assert readers == ["MatMulInteger"]


def calib(name: str, samples: int = 128) -> CalibrationSource:
    return CalibrationSource(NpzData(SAMPLES / name / "calib.npz", what="calibration"), samples=samples, batch=32)


def test_static_cnn_runs_qlinearconv():
    model = M.load_model(SAMPLES / "digits_cnn" / "model.onnx")
    recipe = parse_recipe(
        "version: 1\nname: t\ndefaults: {min_params: 256}\npasses:\n  - simplify: {}\n  - quantize: {activations: static}\n"
    )
    res = run_pipeline(model, recipe, context=PassContext(calibration=calib("digits_cnn")))
    out, qres = res.model, res.steps[1].result
    opt = ops(optimized(out))
    assert opt.get("QLinearConv") == 3 and opt.get("QGemm") == 1
    assert "Conv" not in opt and "DequantizeLinear" not in opt  # int8 end to end
    for s in qres.tensors:
        assert s.extra["mode"] == "static"
        lo, hi = s.extra["activation_range"]
        assert lo <= 0.0 <= hi and hi > 0
    # int32 biases with scale = x_scale * w_scale (QLinearConv / QGemm's contract)
    biases = [t for t in out.graph.initializer if t.data_type == TensorProto.INT32]
    assert len(biases) == 4


def test_static_transformer_matmuls():
    model = M.load_model(SAMPLES / "transformer" / "model.onnx")
    out, _res = quantize(model, calibration=calib("transformer"), activations="static", min_params=256)
    opt = ops(optimized(out))
    assert opt.get("MatMulIntegerToFloat") == 13 and opt.get("QGemm") == 1


def test_static_inside_subgraph_falls_back_to_weight_only():
    model = M.load_model(SAMPLES / "if_subgraph" / "model.onnx")
    out, res = quantize(model, calibration=calib("digits_mlp"), activations="static", min_params=256)
    assert res.tensors
    assert all(s.extra["mode"] == "weight-only" and "subgraph" in s.extra["fallback"] for s in res.tensors)
    feeds, _ = feeds_for(SAMPLES / "if_subgraph", 50)
    a = run(model, feeds)[0].argmax(-1)
    b = run(out, feeds)[0].argmax(-1)
    assert np.mean(a == b) >= 0.98


# --------------------------------------------------------------------------- skips


def test_already_quantized_weights_are_skipped():
    model = M.load_model(SAMPLES / "digits_mlp" / "model.onnx")
    once, _ = quantize(model)
    _twice, res = quantize(once)
    assert not res.tensors and not res.modified
    reasons = [s.reason for s in res.skipped]
    assert reasons and all("already quantized" in r for r in reasons), reasons
    km, _ = quantize(M.load_model(SAMPLES / "digits_mlp" / "model.onnx"), method="kmeans", bits=4)
    _, res = quantize(km)
    assert all("already quantized (decoded by `Cast`)" in s.reason or "Gather" in s.reason for s in res.skipped)


def test_non_float_weights_are_skipped():
    table = np.arange(400, dtype=np.int32).reshape(40, 10)
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], name="embed")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 10])],
        [numpy_helper.from_array(table, "table")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    _out, res = quantize(m, ops=["Gather"])
    assert not res.modified
    assert [s.reason for s in res.skipped] == ["weight is int32, not float (already quantized?)"]


def test_opset_upgrade_failure_skips_with_reason(monkeypatch):
    import onnxzip.passes.quantize as Q

    def boom(model, version):
        raise RuntimeError("No Adapter From Version $17 for Foo")

    monkeypatch.setattr(Q, "upgrade_opset", boom)
    src = make_mlp(k=64, h=96, n=10)
    out, res = quantize(_copy(src), bits=4, granularity="block")
    assert not res.modified and M.domain_opset(out) == 17
    assert all("needs opset 21" in s.reason and "No Adapter" in s.reason for s in res.skipped)


def test_per_channel_upgrades_old_opset():
    src = make_mlp(k=64, h=96, n=10, opset=11)
    out, res = quantize(_copy(src), ops=["Conv", "MatMul"])  # MatMul: DequantizeLinear, axis needs 13
    assert M.domain_opset(out) == 13 and res.modified
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    ref = run(src, {"x": x})[0]
    assert np.linalg.norm(run(out, {"x": x})[0] - ref) / np.linalg.norm(ref) < 0.03


# --------------------------------------------------------------------------- presets


THRESHOLDS = {  # top-1 agreement with fp32 on eval.npz (360 samples); measured 96.4 .. 100 %
    "int8-dynamic": 0.99,
    "int8-static": 0.99,
    "int4-weight-only": 0.985,
    "kmeans-5bit": 0.99,
    "deep-compression": 0.95,
}


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "transformer"])
def test_presets_keep_top1_agreement(tmp_path: Path, name: str):
    folder = SAMPLES / name
    feeds, _ = feeds_for(folder)
    ref = run(folder / "model.onnx", feeds)[0].argmax(-1)
    size0 = (folder / "model.onnx").stat().st_size
    for preset in QUANT_PRESETS:
        out = tmp_path / f"{preset}.onnx"
        res = compress(folder / "model.onnx", preset, out, calib=folder / "calib.npz" if preset == "int8-static" else None)
        got = run(out, feeds)[0].argmax(-1)
        agree = float(np.mean(got == ref))
        assert agree >= THRESHOLDS[preset], f"{name} {preset}: agreement {agree:.4f}"
        ratio = size0 / out.stat().st_size
        assert ratio > (1.9 if preset == "int4-weight-only" and name == "digits_cnn" else 2.5), f"{name} {preset}: size ratio {ratio:.2f}"
        assert "quantize" in [p["name"] for p in res.report["passes"]]


def test_compress_is_deterministic(tmp_path: Path):
    folder = SAMPLES / "digits_cnn"
    for preset, extra in (("int8-static", {"calib": folder / "calib.npz"}), ("kmeans-5bit", {})):
        a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
        compress(folder / "model.onnx", preset, a, **extra)
        compress(folder / "model.onnx", preset, b, **extra)
        assert a.read_bytes() == b.read_bytes(), preset


def test_kmeans_seed_is_the_recipe_seed():
    src = make_mlp(k=64, h=128, n=10, seed=4)
    a, _ = quantize(_copy(src), seed=1, method="kmeans", bits=3, init="kmeans++")
    b, _ = quantize(_copy(src), seed=1, method="kmeans", bits=3, init="kmeans++")
    c, _ = quantize(_copy(src), seed=2, method="kmeans", bits=3, init="kmeans++")
    assert M.serialize(a) == M.serialize(b)
    assert M.serialize(a) != M.serialize(c)


# --------------------------------------------------------------------------- bad input (CLI)


def write_recipe(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(f"version: 1\nname: t\npasses:\n  - quantize: {body}\n")
    return p


@pytest.mark.parametrize(
    "body, key, hint",
    [
        ("{bits: 9}", "bits", "[2, 8]"),
        ("{bits: 1, method: kmeans}", "bits", "[2, 8]"),
        ("{granularity: block, block_size: 24}", "block_size", "multiple of 16"),
        ("{granularity: block, block_size: 8}", "block_size", ">= 16"),
        ("{granularity: per_tensor, block_size: 32}", "block_size", "granularity: block"),
        ("{method: kmeans, symmetric: false}", "symmetric", "method: linear"),
        ("{method: kmeans, granularity: block}", "granularity", "method: linear"),
        ("{outliers: 0.01}", "outliers", "method: kmeans"),
        ("{per_channel: true}", "per_channel", "granularity: per_channel"),
        ("{method: kmeans, outliers: 0.1}", "outliers", "[0.0, 0.05]"),
        ("{activations: dynamic, bits: 4}", "bits", "bits: 8"),
        ("{activations: static, granularity: block}", "granularity", "per_channel"),
        ("{calibration_method: entropy}", "calibration_method", "activations: static"),
        ("{activations: static, percentile: 99.9}", "percentile", "calibration_method: percentile"),
        ("{activations: staticc}", "activations", "did you mean `static`"),
        ("{overrides: {'fc*': {method: kmeans, clip: mse}}}", "overrides", "method: linear"),
    ],
)
def test_bad_config_is_a_recipe_error(tmp_path: Path, body: str, key: str, hint: str):
    code, _out, err = invoke("validate", str(write_recipe(tmp_path, body)))
    assert code == 2, err
    assert_one_error(err)
    first = err.splitlines()[0]
    assert "pass `quantize`" in first and f"`{key}`" in first and "r.yaml:" in first, err
    assert hint in err, err


def test_presets_validate():
    for p in QUANT_PRESETS:
        code, _, err = invoke("validate", p)
        assert code == 0, (p, err)


def test_static_without_calibration_data(tmp_path: Path):
    out = tmp_path / "o.onnx"
    code, _, err = invoke("compress", str(SAMPLES / "digits_mlp" / "model.onnx"), "-r", "int8-static", "-o", str(out), "-q")
    assert code == 2
    assert_one_error(err)
    assert "error: static quantization needs calibration data" in err and "--calib" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"pixels": np.zeros((4, 64), np.float32)}, "has no array for input `input`"),
        ({"input": np.zeros((4, 1, 8, 8), np.float32)}, "has shape float32[4x1x8x8]"),
        ({"input": np.zeros((4, 64), np.float64)}, "has dtype float64"),
    ],
    ids=["names", "shape", "dtype"],
)
def test_calibration_data_that_does_not_match_the_model(tmp_path: Path, arrays, message):
    bad = tmp_path / "calib.npz"
    np.savez(bad, **arrays)
    out = tmp_path / "o.onnx"
    code, _, err = invoke("compress", str(SAMPLES / "digits_mlp" / "model.onnx"), "-r", "int8-static", "-o", str(out), "--calib", str(bad), "-q")
    assert code == 2, err
    assert_one_error(err)
    assert message in err, err
    assert not out.exists()


def test_static_compress_with_calib_via_cli(tmp_path: Path):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    folder = SAMPLES / "digits_mlp"
    code, _, err = invoke("compress", str(folder / "model.onnx"), "-r", "int8-static", "-o", str(out), "--calib", str(folder / "calib.npz"), "--report", str(rep), "-q")
    assert code == 0, err
    report = json.loads(rep.read_text())
    q = next(p for p in report["passes"] if p["name"] == "quantize")
    assert q["tensors_changed"] == 3
    t = q["tensors"][0]
    for key in ("bits", "sqnr_db", "bytes_before", "bytes_after", "sparsity", "sparsity_before", "scale_min", "activation_range"):
        assert key in t, key
