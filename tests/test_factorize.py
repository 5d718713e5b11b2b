"""`factorize`: exactness at full rank, rank choice, skip reasons, Conv schemes, data-aware SVD."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SAMPLES, feeds_for, invoke, make_mlp, run
from onnxzip import model as M
from onnxzip.data import CalibrationSource, NpzData
from onnxzip.errors import RecipeError
from onnxzip.passes.base import PassContext
from onnxzip.passes.factorize import FactorizeConfig, FactorizePass
from onnxzip.pipeline import verify
from onnxzip.recipe import parse_recipe

FULL = {"rank": 10_000, "max_param_ratio": 100.0}  # full rank, even where it adds parameters


def factorize(model: onnx.ModelProto, context: PassContext | None = None, **cfg):
    res = FactorizePass(FactorizeConfig(**cfg), context).call(model)
    if res.modified:
        verify(res.model)  # what the pipeline checks after every pass
    return res


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- dense


def test_full_rank_reproduces_mlp():
    m = make_mlp(k=16, h=32, n=4)
    x = _rand(5, 16, seed=1)
    ref = run(m, {"x": x})[0]
    res = factorize(m, **FULL)
    assert {t.name for t in res.tensors} == {"w1", "w2"}
    assert M.count_ops(res.model, "MatMul") == 3  # fc1 -> 2 MatMul; fc2 (Gemm with bias) -> MatMul + Gemm
    assert M.count_ops(res.model, "Gemm") == 1
    np.testing.assert_allclose(run(res.model, {"x": x})[0], ref, atol=1e-4, rtol=1e-4)
    names = {t.name for t in res.model.graph.initializer}
    assert "w1" not in names and "w2" not in names and "b2" in names  # bias kept on the second op
    st = {t.name: t for t in res.tensors}["w1"]
    assert st.rank == 16 and st.rel_error < 1e-6 and st.extra["energy"] == pytest.approx(1.0)
    assert st.params_before == 16 * 32 and st.params_after == 16 * (16 + 32)
    assert st.extra["flops_before"] == 2 * 16 * 32 and st.extra["flops_after"] == 2 * 16 * 48


@pytest.mark.parametrize(
    "attrs, bias",
    [
        ({"transB": 1}, True),
        ({"transB": 0}, True),
        ({"transB": 1, "alpha": 0.5, "beta": 2.0}, True),
        ({"transA": 1, "transB": 1}, True),
        ({"transB": 1, "alpha": 3.0}, False),
    ],
)
def test_gemm_variants_full_rank(attrs, bias):
    k, n = 12, 20
    w = _rand(n, k, seed=2) if attrs.get("transB") else _rand(k, n, seed=2)
    inits = {"w": w}
    ins = ["x", "w"]
    if bias:
        inits["c"] = _rand(n, seed=3)
        ins.append("c")
    xshape = [k, "N"] if attrs.get("transA") else ["N", k]
    m = _model(
        [helper.make_node("Gemm", ins, ["y"], name="fc", **attrs)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, xshape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        inits,
    )
    x = _rand(*([k, 6] if attrs.get("transA") else [6, k]), seed=4)
    ref = run(m, {"x": x})[0]
    res = factorize(m, **FULL)
    assert len(res.tensors) == 1 and res.tensors[0].rank == k
    np.testing.assert_allclose(run(res.model, {"x": x})[0], ref, atol=1e-4, rtol=1e-4)
    assert M.count_ops(res.model, "Gemm") == (1 if bias else 0)
    assert M.count_ops(res.model, "Transpose") == (1 if attrs.get("transA") else 0)


def test_batched_matmul_input_and_low_rank_error_matches_spectrum():
    """A 3-D activation times a 2-D weight; at rank r the weight error is the dropped energy."""
    m = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3, 40])],
        {"w": _rand(24, 40, seed=5)},
    )
    w = numpy_helper.to_array(m.graph.initializer[0]).astype(np.float64)
    x = _rand(2, 3, 24, seed=6)
    res = factorize(m, rank=6)
    st = res.tensors[0]
    s = np.linalg.svd(w, compute_uv=False)
    assert st.rank == 6
    assert st.rel_error == pytest.approx(np.sqrt(np.sum(s[6:] ** 2) / np.sum(s**2)), rel=1e-4)
    assert st.extra["energy"] == pytest.approx(np.sum(s[:6] ** 2) / np.sum(s**2), rel=1e-4)
    a = numpy_helper.to_array(next(t for t in res.model.graph.initializer if t.name.endswith("_lr_a")))
    b = numpy_helper.to_array(next(t for t in res.model.graph.initializer if t.name.endswith("_lr_b")))
    assert a.shape == (24, 6) and b.shape == (6, 40)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], x @ (a @ b), atol=1e-4, rtol=1e-4)


def _spectrum_model(s: np.ndarray, k: int = 64, n: int = 48) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    u, _ = np.linalg.qr(rng.standard_normal((k, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = (u[:, : len(s)] * s) @ v[:, : len(s)].T
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        {"w": w.astype(np.float32)},
    )


def test_energy_rank_is_minimal():
    s = 0.8 ** np.arange(48)
    cum = np.cumsum(s**2) / np.sum(s**2)
    for energy in (0.5, 0.9, 0.99):
        want = int(np.searchsorted(cum, energy) + 1)
        res = factorize(_spectrum_model(s), energy=energy, round_to=1)
        st = res.tensors[0]
        assert st.rank == want, energy
        assert st.extra["energy"] >= energy > cum[want - 2]  # rank - 1 would not keep enough
    # round_to rounds up to a multiple
    res = factorize(_spectrum_model(s), energy=0.9, round_to=8)
    want = int(np.searchsorted(cum, 0.9) + 1)
    assert res.tensors[0].rank == -(-want // 8) * 8


def test_rank_ratio_bounds_parameters():
    res = factorize(_spectrum_model(0.9 ** np.arange(48)), rank_ratio=0.25, round_to=1)
    st = res.tensors[0]
    assert st.params_after <= 0.25 * st.params_before
    assert st.rank == int(0.25 * 64 * 48 / (64 + 48))


def test_skip_reasons():
    m = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="big"),
            helper.make_node("MatMul", ["h", "w3"], ["y"], name="batched"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 8])],
        {"w": _rand(8, 8), "w3": _rand(2, 8, 8)},
    )
    res = factorize(m, energy=0.99)
    reasons = {s.name: s.reason for s in res.skipped}
    assert not res.modified
    assert "not below max_param_ratio 0.8" in reasons["w"]
    assert "3-D" in reasons["w3"]


def test_depthwise_and_grouped_convs_are_skipped():
    m = _model(
        [
            helper.make_node("Conv", ["x", "dw"], ["h"], name="dw", group=4, pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["h", "gw"], ["y"], name="grouped", group=2),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])],
        {"dw": _rand(4, 1, 3, 3), "gw": _rand(8, 2, 3, 3)},
    )
    res = factorize(m, **FULL)
    reasons = {s.name: s.reason for s in res.skipped}
    assert "depthwise convolution (group=4)" in reasons["dw"]
    assert "grouped convolution (group=2)" in reasons["gw"]
    assert not res.modified


# --------------------------------------------------------------------------- conv

CONV_GEOMETRIES = [
    {},
    {"strides": [2, 1], "pads": [1, 0, 2, 1]},
    {"strides": [1, 2], "pads": [0, 2, 1, 0], "dilations": [2, 1]},
    {"dilations": [1, 2], "pads": [2, 1, 0, 1], "strides": [2, 2]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 1]},
    {"auto_pad": "SAME_LOWER", "strides": [1, 2]},
    {"auto_pad": "VALID", "strides": [1, 3]},
]


def _conv_model(attrs: dict, kh: int = 3, kw: int = 5, ci: int = 3, co: int = 6, bias: bool = True) -> onnx.ModelProto:
    inits = {"w": _rand(co, ci, kh, kw, seed=8)}
    ins = ["x", "w"]
    if bias:
        inits["b"] = _rand(co, seed=9)
        ins.append("b")
    return _model(
        [helper.make_node("Conv", ins, ["y"], name="conv", **attrs)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, ci, 11, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C", "H", "W"])],
        inits,
    )


@pytest.mark.parametrize("method", ["svd", "spatial"])
@pytest.mark.parametrize("attrs", CONV_GEOMETRIES, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "plain")
def test_conv_full_rank_reproduces(method, attrs):
    m = _conv_model(attrs)
    x = _rand(2, 3, 11, 13, seed=10)
    ref = run(m, {"x": x})[0]
    res = factorize(m, method=method, **FULL)
    assert res.modified, res.skipped
    assert M.count_ops(res.model, "Conv") == 2
    out = run(res.model, {"x": x})[0]
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    convs = [n for n in res.model.graph.node if n.op_type == "Conv"]
    assert len(convs[0].input) == 2 and convs[1].input[2] == "b"  # bias on the second conv
    st = res.tensors[0]
    assert st.extra["method"] == method and st.rel_error < 1e-5
    assert st.extra["flops_unit"] == "per sample" and st.extra["flops_before"] > 0
    if method == "spatial":
        shapes = [list(numpy_helper.to_array(t).shape) for t in res.model.graph.initializer if t.name.startswith("w_lr")]
        assert shapes == [[9, 3, 3, 1], [6, 9, 1, 5]]  # r = min(Ci*kh, Co*kw) = 9


def test_conv_low_rank_and_spatial_skips():
    m = _conv_model({"pads": [1, 2, 1, 2]}, ci=16, co=32, bias=False)
    res = factorize(m, method="svd", rank=4)
    st = res.tensors[0]
    assert st.rank == 4 and st.params_after == 4 * (16 * 15 + 32) and 0 < st.rel_error < 1
    assert st.extra["flops_after"] < st.extra["flops_before"]
    one = _conv_model({}, kh=1, kw=3)
    res = factorize(one, method="spatial", **FULL)
    assert "already 1-D" in res.skipped[0].reason and not res.modified


def test_sample_cnn_full_rank_both_methods():
    feeds, _ = feeds_for(SAMPLES / "digits_cnn", 32)
    base = M.load_model(SAMPLES / "digits_cnn" / "model.onnx")
    ref = run(base, feeds)[0]
    for method in ("svd", "spatial"):
        res = factorize(M.load_model(SAMPLES / "digits_cnn" / "model.onnx"), method=method, ops=("Conv",), **FULL)
        assert any("depthwise" in s.reason for s in res.skipped)
        np.testing.assert_allclose(run(res.model, feeds)[0], ref, atol=1e-4, rtol=1e-4)


def test_subgraph_weights_are_factorized():
    feeds, _ = feeds_for(SAMPLES / "if_subgraph", 16)
    base = M.load_model(SAMPLES / "if_subgraph" / "model.onnx")
    ref = run(base, feeds)[0]
    res = factorize(base, **FULL)
    assert {t.node for t in res.tensors} >= {"then/fc2/MatMul", "else/logits/Gemm"}
    np.testing.assert_allclose(run(res.model, feeds)[0], ref, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- data-aware


def _calib(name: str) -> PassContext:
    return PassContext(calibration=CalibrationSource(NpzData(SAMPLES / name / "calib.npz", what="calibration"), samples=128, batch=32))


def test_data_aware_beats_plain_svd_on_transformer():
    feeds, _ = feeds_for(SAMPLES / "transformer", 200)
    path = SAMPLES / "transformer" / "model.onnx"
    ref = run(M.load_model(path), feeds)[0]
    errors = {}
    for aware in (False, True):
        res = factorize(M.load_model(path), _calib("transformer"), rank=16, data_aware=aware)
        assert not res.warnings
        methods = {t.extra["method"] for t in res.tensors}
        assert methods == {"weighted-svd" if aware else "svd"}
        assert all(t.rank == 16 for t in res.tensors)
        out = run(res.model, feeds)[0]
        errors[aware] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
        if aware:  # the per-layer output error on the calibration data is reported
            assert all(0 <= t.extra["rel_output_error"] < t.rel_error for t in res.tensors)
    assert errors[True] < 0.5 * errors[False], errors


def test_data_aware_without_calibration_falls_back_with_warning():
    m = make_mlp()
    x = _rand(3, 16)
    res = factorize(m, rank=4, data_aware=True, round_to=1)
    assert res.modified and any("no calibration data" in w for w in res.warnings)
    assert {t.extra["method"] for t in res.tensors} == {"svd"}
    assert run(res.model, {"x": x})[0].shape == (3, 4)


# --------------------------------------------------------------------------- recipe


@pytest.mark.parametrize(
    "body, msg",
    [
        ("{method: svd}", "no rank choice"),
        ("{rank: 4, energy: 0.9}", "`rank` and `energy` are exclusive"),
        ("{energy: 1.5}", "out of range"),
        ("{energy: 0.9, method: tucker}", "is not allowed"),
        ("{energy: 0.9, overrides: {'fc*': {rank: 2, rank_ratio: 0.1}}}", "are exclusive"),
    ],
)
def test_recipe_validation(body, msg):
    with pytest.raises(RecipeError) as e:
        parse_recipe(f"version: 1\npasses:\n  - factorize: {body}\n", "r.yaml")
    assert msg in e.value.message and "r.yaml:3" in e.value.message


def test_override_rank_replaces_energy():
    r = parse_recipe("version: 1\npasses:\n  - factorize: {energy: 0.9, round_to: 1, overrides: {fc1: {rank: 3}}}\n")
    cfg = r.passes[0].config
    res = FactorizePass(cfg).call(make_mlp(k=16, h=32, n=4))
    by_node = {t.node: t for t in res.tensors}
    assert by_node["fc1"].rank == 3


def test_lowrank_preset_end_to_end(tmp_path: Path):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    src = SAMPLES / "digits_mlp" / "model.onnx"
    code, _, err = invoke("compress", str(src), "-r", "lowrank-90", "-o", str(out), "--report", str(rep), "-q")
    assert code == 0, err
    report = json.loads(rep.read_text())
    fact = report["passes"][-1]
    assert fact["name"] == "factorize" and fact["tensors_changed"] >= 1
    assert all(t["energy"] >= 0.9 and t["rank"] % 8 == 0 for t in fact["tensors"])
    assert report["size"]["stored_bytes"] < report["size"]["original_bytes"]
    feeds, labels = feeds_for(SAMPLES / "digits_mlp")
    acc = float((run(out, feeds)[0].argmax(1) == labels).mean())
    assert acc > 0.85
