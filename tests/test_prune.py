"""The `prune` pass: magnitude (layer/global), N:M and structured channel pruning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from conftest import SAMPLES, assert_one_error, feeds_for, invoke, run
from onnx import TensorProto, helper, numpy_helper
from onnxzip.passes.prune import parse_pattern

from onnxzip import model as M
from onnxzip.pipeline import run_pipeline
from onnxzip.recipe import parse_recipe

# --------------------------------------------------------------------------- helpers


def prune(model: onnx.ModelProto, **cfg):
    """Run one validated `prune` step through the pipeline (checker + ORT session after it)."""
    recipe = parse_recipe(yaml.safe_dump({"version": 1, "passes": [{"prune": cfg}]}))
    res = run_pipeline(model, recipe)
    return res.model, res.steps[0].result


def init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def set_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype), name))


def dims(model: onnx.ModelProto, name: str) -> list[int]:
    return list(next(t for t in model.graph.initializer if t.name == name).dims)


def sample(name: str) -> onnx.ModelProto:
    return M.load_model(SAMPLES / name / "model.onnx")


def skip_reasons(result) -> dict[str, str]:
    return {s.name: s.reason for s in result.skipped}


def _model(nodes, inits: dict[str, np.ndarray], inputs, outputs, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def make_weights(seed: int = 0) -> onnx.ModelProto:
    """Four MatMuls with different sizes and scales, one with many tied magnitudes."""
    rng = np.random.default_rng(seed)
    ws = {
        "w1": rng.standard_normal((32, 48)),
        "w2": rng.standard_normal((48, 40)) * 4.0,
        "w3": np.sign(t := rng.standard_normal((40, 24))) * np.ceil(np.abs(t) * 2) / 2,  # ties, no zeros
        "w4": rng.standard_normal((24, 7)) * 0.1,
    }
    nodes, x = [], "x"
    for i, k in enumerate(ws, 1):
        nodes.append(helper.make_node("MatMul", [x, k], [f"h{i}"], name=f"mm{i}"))
        x = f"h{i}"
    return _model(nodes, ws, [("x", ["N", 32])], [("h4", ["N", 7])])


def expected_zeros(s: float, n: int) -> int:
    return min(n, math.floor(s * n + 0.5))


# --------------------------------------------------------------------------- magnitude


@pytest.mark.parametrize("s", [0.1, 0.5, 0.73, 0.95])
def test_magnitude_layer_hits_target_exactly(s: float):
    m = make_weights()
    orig = {f"w{i}": init(m, f"w{i}").copy() for i in range(1, 5)}
    out, res = prune(m, method="magnitude", sparsity=s)
    assert res.modified and len(res.tensors) == 4
    for name, w in orig.items():
        w2 = init(out, name)
        zeros = int(np.count_nonzero(w2 == 0))
        assert zeros == expected_zeros(s, w.size)  # within one element of s * n by construction
        assert abs(zeros - s * w.size) <= 1
        assert not np.signbit(w2[w2 == 0]).any()  # exact +0.0, entropy-coder friendly
        kept = w2 != 0
        np.testing.assert_array_equal(w2[kept], w[kept])  # survivors untouched
        assert np.abs(w[~kept]).max() <= np.abs(w[kept]).min()  # the smallest went
        stat = next(t for t in res.tensors if t.name == name)
        assert stat.sparsity == pytest.approx(zeros / w.size, abs=1e-6)
        assert stat.rel_error == pytest.approx(np.linalg.norm(w - w2) / np.linalg.norm(w), rel=1e-6)
        assert stat.bytes_before == stat.bytes_after == w.size * 4
        assert stat.extra["target_sparsity"] == s


def test_magnitude_keeps_dtype_fp16():
    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float16)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 8])],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    out, _ = prune(m, method="magnitude", sparsity=0.5)
    w2 = init(out, "w")
    assert w2.dtype == np.float16 and np.count_nonzero(w2 == 0) == 64
    np.testing.assert_array_equal(w2[w2 != 0], w[w2 != 0])


def test_magnitude_global_one_threshold_and_cap():
    m = make_weights()
    ws = {f"w{i}": init(m, f"w{i}").copy() for i in range(1, 5)}
    total = sum(w.size for w in ws.values())
    out, res = prune(make_weights(), method="magnitude", sparsity=0.6, scope="global")
    zeros = {k: int(np.count_nonzero(init(out, k) == 0)) for k in ws}
    assert sum(zeros.values()) == expected_zeros(0.6, total)
    # one threshold: every pruned magnitude is <= every kept magnitude, across tensors
    pruned = np.concatenate([np.abs(w[init(out, k) == 0]) for k, w in ws.items()])
    kept = np.concatenate([np.abs(w[init(out, k) != 0]) for k, w in ws.items()])
    assert pruned.max() <= kept.min()
    assert zeros["w4"] == ws["w4"].size  # the tiny-scale layer goes entirely without a cap
    assert zeros["w2"] < 0.6 * ws["w2"].size  # the large-scale layer keeps more

    out, res = prune(make_weights(), method="magnitude", sparsity=0.6, scope="global", max_layer_sparsity=0.7)
    zeros = {k: int(np.count_nonzero(init(out, k) == 0)) for k in ws}
    assert sum(zeros.values()) == expected_zeros(0.6, total)  # still exact overall
    for k, w in ws.items():
        assert zeros[k] <= math.floor(0.7 * w.size)
    assert zeros["w4"] == math.floor(0.7 * ws["w4"].size)
    assert any("global" in n and "target 0.6" in n for n in res.notes)


def test_overrides_and_keep_output_layers():
    out, res = prune(make_weights(), sparsity=0.5, overrides={"mm2": {"sparsity": 0.25}, "w3": {"skip": True}}, keep_output_layers=True)
    assert np.count_nonzero(init(out, "w1") == 0) == expected_zeros(0.5, 32 * 48)
    assert np.count_nonzero(init(out, "w2") == 0) == expected_zeros(0.25, 48 * 40)
    reasons = skip_reasons(res)
    assert np.count_nonzero(init(out, "w3") == 0) < 40 and "override" in reasons["w3"]
    assert np.count_nonzero(init(out, "w4") == 0) == 0 and "output layer" in reasons["w4"]


# --------------------------------------------------------------------------- N:M


def _nm_model(op: str, shape: tuple[int, ...], trans_b: int = 0) -> tuple[onnx.ModelProto, int]:
    rng = np.random.default_rng(3)
    w = rng.standard_normal(shape).astype(np.float32)
    if op == "MatMul":
        node = helper.make_node("MatMul", ["x", "w"], ["y"], name="op")
        return _model([node], {"w": w}, [("x", ["N", shape[0]])], [("y", ["N", shape[1]])]), 0
    if op == "Gemm":
        node = helper.make_node("Gemm", ["x", "w"], ["y"], name="op", transB=trans_b)
        k, n = (shape[1], shape[0]) if trans_b else shape
        return _model([node], {"w": w}, [("x", ["N", k])], [("y", ["N", n])]), 1 if trans_b else 0
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="op", pads=[1, 1, 1, 1])
    return _model([node], {"w": w}, [("x", ["N", shape[1], 6, 6])], [("y", ["N", shape[0], 6, 6])]), 1


@pytest.mark.parametrize(
    "op,shape,trans_b,pattern",
    [
        ("MatMul", (16, 6), 0, "2:4"),
        ("MatMul", (18, 5), 0, "2:4"),  # 18 = 4*4 + 2: remainder of 2 stays dense
        ("Gemm", (6, 16), 1, "2:4"),  # B[N, K]: groups along axis 1
        ("Gemm", (13, 6), 0, "1:4"),
        ("Conv", (4, 12, 3, 3), 0, "2:4"),  # groups along input channels
        ("Conv", (4, 10, 3, 3), 0, "3:8"),
    ],
)
def test_nm_pattern_holds_in_every_group(op, shape, trans_b, pattern):
    model, axis = _nm_model(op, shape, trans_b)
    w = init(model, "w").copy()
    n, m = parse_pattern(pattern)
    out, res = prune(model, method="n:m", pattern=pattern)
    w2 = np.moveaxis(init(out, "w"), axis, -1)
    wa = np.moveaxis(w, axis, -1)
    length = w2.shape[-1]
    full = length // m * m
    groups = w2[..., :full].reshape(-1, m)
    orig = wa[..., :full].reshape(-1, m)
    assert (np.count_nonzero(groups, axis=1) == n).all()
    # the kept ones are the n largest of their group
    for g, o in zip(groups, orig, strict=True):
        assert np.abs(o[g == 0]).max() <= np.abs(o[g != 0]).min()
    np.testing.assert_array_equal(w2[..., full:], wa[..., full:])  # remainder dense
    stat = res.tensors[0]
    assert stat.extra["pattern"] == pattern and stat.extra["axis"] == axis
    assert stat.extra["remainder"] == length - full
    assert stat.extra["target_sparsity"] == pytest.approx((m - n) / m)
    assert stat.sparsity == pytest.approx(np.count_nonzero(w2 == 0) / w2.size, abs=1e-6)
    if length - full:
        assert stat.extra["dense_remainder_params"] == (length - full) * w.size // length


def test_nm_skips_axis_shorter_than_m():
    _, res = prune(sample("digits_cnn"), method="n:m", pattern="2:4")
    reasons = skip_reasons(res)
    assert "no complete 2:4 group" in reasons["conv1.weight"]
    assert "no complete 2:4 group" in reasons["dw.weight"]  # depthwise: 1 input channel per group
    assert {t.name for t in res.tensors} == {"pw.weight", "fc.weight"}


# --------------------------------------------------------------------------- channel: sample models


def _accuracy(model, name: str) -> tuple[float, float]:
    feeds, labels = feeds_for(SAMPLES / name)
    ref = run(SAMPLES / name / "model.onnx", feeds)[0].argmax(-1)
    got = run(model, feeds)[0].argmax(-1)
    return float((got == labels).mean()), float((got == ref).mean())


def test_channel_digits_cnn_shapes_and_skips():
    out, res = prune(sample("digits_cnn"), method="channel", sparsity=0.25)
    onnx.checker.check_model(out, full_check=True)
    assert dims(out, "conv1.weight") == [48, 1, 3, 3]
    for p in ("weight", "bias", "running_mean", "running_var"):
        assert dims(out, f"bn1.{p}") == [48] and dims(out, f"bn2.{p}") == [48] and dims(out, f"bn3.{p}") == [128]
    assert dims(out, "dw.weight") == [48, 1, 3, 3]  # depthwise passes the removal through
    dw = next(n for n in out.graph.node if n.name == "dw/Conv")
    assert helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 48
    assert dims(out, "pw.weight") == [128, 48, 1, 1] and dims(out, "fc.weight") == [10, 2048]
    reasons = skip_reasons(res)
    assert reasons["pw.weight"] == "channel feeds a Flatten (`flatten/Flatten`)"
    assert reasons["fc.weight"] == "channel reaches graph output `logits`"
    assert "pruned through the layer before it" in reasons["dw.weight"]
    stat = {t.name: t for t in res.tensors}
    conv1 = stat["conv1.weight"]
    assert (conv1.extra["channels_before"], conv1.extra["channels_after"], conv1.sparsity) == (64, 48, 0.25)
    assert conv1.params_before == 576 and conv1.params_after == 432 and conv1.bytes_after == 432 * 4
    assert conv1.extra["flops_before"] == 2 * 576 * 64 and conv1.extra["flops_after"] == 2 * 432 * 64
    assert 0 < conv1.rel_error < 1
    assert stat["pw.weight"].extra["in_channels_after"] == 48
    assert any("16 of 64 channels removed" in n for n in res.notes)
    acc, agree = _accuracy(out, "digits_cnn")
    assert acc >= 0.97 and agree >= 0.97  # measured: 0.986 / 0.983


def test_channel_digits_mlp_shapes():
    out, res = prune(sample("digits_mlp"), method="channel", sparsity=0.25)
    onnx.checker.check_model(out, full_check=True)
    assert dims(out, "fc1.weight") == [192, 64] and dims(out, "fc1.bias") == [192]  # Gemm transB=1
    assert dims(out, "fc2.weight") == [192, 96] and dims(out, "fc2.bias") == [96]  # MatMul + Add
    assert dims(out, "fc3.weight") == [96, 10]  # Gemm transB=0: rows sliced, head kept
    assert skip_reasons(res)["fc3.weight"] == "channel reaches graph output `logits`"
    acc, agree = _accuracy(out, "digits_mlp")
    assert acc >= 0.94 and agree >= 0.95  # measured: 0.956 / 0.972


def test_channel_transformer_ffn_only():
    out, res = prune(sample("transformer"), method="channel", sparsity=0.25, round_to=8)
    onnx.checker.check_model(out, full_check=True)
    for layer in (0, 1):
        assert dims(out, f"layers.{layer}.ff1.weight") == [64, 96]
        assert dims(out, f"layers.{layer}.ff1.bias") == [96]
        assert dims(out, f"layers.{layer}.ff2.weight") == [96, 64]
        assert dims(out, f"layers.{layer}.attn.q.weight") == [64, 64]
    reasons = skip_reasons(res)
    assert reasons["layers.0.attn.q.weight"] == "channel feeds a Reshape (`layers.0.attn.q_split/Reshape`)"
    assert reasons["layers.0.ff2.weight"] == "channel feeds a residual Add (`layers.0.ffn.residual/Add`)"
    assert "LayerNormalization" in reasons["embed.weight"]
    acc, agree = _accuracy(out, "transformer")
    assert acc >= 0.95 and agree >= 0.97  # measured: 0.967 / 0.989


# --------------------------------------------------------------------------- channel: exactness


def _zero_channels(model, weight: str, axis: int, idx, per_channel=()):
    """Make channels ``idx`` of a layer dead: weight slices and per-channel params set to 0."""
    w = init(model, weight).copy()
    np.moveaxis(w, axis, 0)[idx] = 0
    set_init(model, weight, w)
    for name in per_channel:
        v = init(model, name).copy()
        v[idx] = 0
        set_init(model, name, v)


def test_channel_exact_when_removed_channels_are_dead_digits_cnn():
    m = sample("digits_cnn")
    idx = [1, 5, 6, 20, 33, 40, 41, 63]
    _zero_channels(m, "conv1.weight", 0, idx, ["bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"])
    feeds, _ = feeds_for(SAMPLES / "digits_cnn", 64)
    ref = run(m, feeds)[0]
    out, _ = prune(m, method="channel", sparsity=len(idx) / 64)
    assert dims(out, "conv1.weight") == [56, 1, 3, 3] and dims(out, "pw.weight") == [128, 56, 1, 1]
    np.testing.assert_allclose(run(out, feeds)[0], ref, rtol=1e-5, atol=1e-5)


def test_channel_exact_mlp_chain_and_transformer_ffn():
    m = sample("digits_mlp")
    _zero_channels(m, "fc1.weight", 0, list(range(0, 256, 4)), ["fc1.bias"])
    _zero_channels(m, "fc2.weight", 1, list(range(3, 128, 4)), ["fc2.bias"])
    feeds, _ = feeds_for(SAMPLES / "digits_mlp", 64)
    ref = run(m, feeds)[0]
    out, _ = prune(m, method="channel", sparsity=0.25)
    assert dims(out, "fc2.weight") == [192, 96]  # consumer of fc1 and producer itself
    np.testing.assert_allclose(run(out, feeds)[0], ref, rtol=1e-5, atol=1e-5)

    m = sample("transformer")
    _zero_channels(m, "layers.1.ff1.weight", 1, list(range(0, 128, 2)), ["layers.1.ff1.bias"])
    feeds, _ = feeds_for(SAMPLES / "transformer", 64)
    ref = run(m, feeds)[0]
    out, _ = prune(m, method="channel", sparsity=0.5, include=["layers.1.ff1*"])
    assert dims(out, "layers.1.ff2.weight") == [64, 64] and dims(out, "layers.0.ff2.weight") == [128, 64]
    np.testing.assert_allclose(run(out, feeds)[0], ref, rtol=1e-5, atol=1e-5)


def make_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv_a -> BN -> Relu -> conv_b -> Add[C,1,1] -> SiLU (x*sigmoid(x)) -> depthwise x2
    -> Relu -> conv_c 1x1 -> GlobalAveragePool -> y, with full value_info (fixed batch)."""
    rng = np.random.default_rng(seed)

    def r(*s):
        return rng.standard_normal(s).astype(np.float32) * 0.5

    inits = {
        "a.w": r(16, 3, 3, 3), "a.b": r(16),
        "bn.s": r(16) + 1, "bn.b": r(16), "bn.m": r(16), "bn.v": np.abs(r(16)) + 0.5,
        "b.w": r(16, 16, 3, 3), "b.bias": r(16, 1, 1),
        "dw.w": r(32, 1, 3, 3), "c.w": r(8, 32, 1, 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "a.w", "a.b"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "b.w"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b", "b.bias"], ["bb"], name="bias_b"),
        helper.make_node("Sigmoid", ["bb"], ["sg"], name="sig"),
        helper.make_node("Mul", ["bb", "sg"], ["silu"], name="silu"),
        helper.make_node("Conv", ["silu", "dw.w"], ["dw"], name="dw", group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["dw"], ["rd"], name="relu_d"),
        helper.make_node("Conv", ["rd", "c.w"], ["c"], name="conv_c"),
        helper.make_node("GlobalAveragePool", ["c"], ["y"], name="gap"),
    ]
    m = _model(nodes, inits, [("x", [2, 3, 8, 8])], [("y", [2, 8, 1, 1])])
    m = onnx.shape_inference.infer_shapes(m)
    assert len(m.graph.value_info) >= 8  # stale shapes must be dropped by the pass
    return m


def test_channel_consecutive_layers_silu_depthwise_multiplier_exact():
    m = make_cnn()
    _zero_channels(m, "a.w", 0, [0, 7, 8, 15], ["a.b", "bn.s", "bn.b"])
    _zero_channels(m, "b.w", 0, [2, 3, 10, 11], ["b.bias"])
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = run(m, {"x": x})[0]
    out, res = prune(m, method="channel", sparsity=0.25)
    assert dims(out, "a.w") == [12, 3, 3, 3] and dims(out, "bn.v") == [12]
    assert dims(out, "b.w") == [12, 12, 3, 3]  # consumer of conv_a and producer itself
    assert dims(out, "b.bias") == [12, 1, 1]
    assert dims(out, "dw.w") == [24, 1, 3, 3]  # channel multiplier 2: both outputs of a channel go
    assert dims(out, "c.w") == [8, 24, 1, 1]
    assert skip_reasons(res)["c.w"] == "channel reaches graph output `y`"
    assert {vi.name for vi in out.graph.value_info}.isdisjoint({"a", "bn", "ra", "b", "bb", "sg", "silu", "dw", "rd"})
    np.testing.assert_allclose(run(out, {"x": x})[0], ref, rtol=1e-5, atol=1e-5)


def test_channel_round_to_and_near_total_sparsity():
    out, res = prune(make_cnn(), method="channel", sparsity=0.99, round_to=8)
    assert dims(out, "a.w")[0] == 8 and dims(out, "b.w")[:2] == [8, 8]  # at least round_to kept
    out, res = prune(make_cnn(), method="channel", sparsity=0.99)
    assert dims(out, "a.w")[0] == 1 and dims(out, "c.w") == [8, 2, 1, 1]
    out, res = prune(make_cnn(), method="channel", sparsity=0.1, round_to=8)  # 16 -> 14 -> rounds up to 16
    assert not res.modified and "nothing to remove" in skip_reasons(res)["a.w"]


# --------------------------------------------------------------------------- channel: what it refuses


def _mlp_block(tail: list, extra_inits: dict | None = None, outputs=(("y", ["N", 8]),), inputs=(("x", ["N", 8]),)):
    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((8, 8)), "w2": rng.standard_normal((8, 8)), **(extra_inits or {})}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1")] + tail
    return _model(nodes, inits, list(inputs), list(outputs))


BLOCKED = {
    "residual": (
        [helper.make_node("Add", ["h", "x"], ["r"], name="res"), helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")],
        "channel feeds a residual Add (`res`)",
    ),
    "concat": (
        [helper.make_node("Concat", ["h", "x"], ["c"], name="cat", axis=1), helper.make_node("MatMul", ["c", "w3"], ["y"], name="fc2")],
        "channel feeds a Concat (`cat`)",
    ),
    "graph_output": (
        [helper.make_node("Relu", ["h"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")],
        "channel reaches graph output `r`",
    ),
    "unsupported_consumer": (
        [
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
            helper.make_node("Softmax", ["r"], ["p"], name="soft"),
        ],
        "channel feeds a Softmax (`soft`), which normalizes across channels",
    ),
    "reshape": (
        [helper.make_node("Reshape", ["h", "shape"], ["y"], name="rs")],
        "channel feeds a Reshape (`rs`)",
    ),
}


@pytest.mark.parametrize("case", sorted(BLOCKED))
def test_channel_skips_unsafe_producers_untouched(case: str):
    tail, reason = BLOCKED[case]
    extra = {"w3": np.ones((16, 8)), "shape": np.array([-1, 8])}
    outputs = [("y", ["N", 8])] + ([("r", ["N", 8])] if case == "graph_output" else []) + ([("p", ["N", 8])] if case == "unsupported_consumer" else [])
    m = _mlp_block(tail, extra, outputs=outputs)
    if case == "reshape":  # keep the int64 shape tensor
        m.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.array([-1, 8], dtype=np.int64), "shape"))
    before = M.serialize(m)
    out, res = prune(m, method="channel", sparsity=0.5, include=["fc1"])
    assert skip_reasons(res) == {"w1": reason}
    assert not res.modified and M.serialize(out) == before


def test_channel_multiple_consumers_and_shared_weight_copy_on_write():
    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((8, 12)), "w2": rng.standard_normal((12, 4)), "w3": rng.standard_normal((12, 4))}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y1"], name="fc2"),
        helper.make_node("MatMul", ["r", "w3"], ["y2"], name="fc3"),
        helper.make_node("MatMul", ["x2", "w2"], ["y3"], name="fc4"),  # shares w2 with another input
    ]
    m = _model(nodes, inits, [("x", ["N", 8]), ("x2", ["N", 12])], [("y1", ["N", 4]), ("y2", ["N", 4]), ("y3", ["N", 4])])
    feeds = {"x": rng.standard_normal((5, 8)).astype(np.float32), "x2": rng.standard_normal((5, 12)).astype(np.float32)}
    ref = run(m, feeds)
    out, _ = prune(m, method="channel", sparsity=0.25, include=["fc1"])
    assert dims(out, "w1") == [8, 9] and dims(out, "w3") == [9, 4]
    assert dims(out, "w2") == [12, 4]  # fc4 still reads the original
    fc2 = next(n for n in out.graph.node if n.name == "fc2")
    assert fc2.input[1] != "w2" and dims(out, fc2.input[1]) == [9, 4]
    got = run(out, feeds)
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-6)  # untouched path, bit-for-bit modulo kernels


# --------------------------------------------------------------------------- CLI: bad input, warnings, reports


def _recipe(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\npasses:\n  - prune: " + body + "\n")
    return p


@pytest.mark.parametrize(
    "body,needle",
    [
        ("{sparsity: 1.0}", "key `sparsity`: 1.0 is out of range"),
        ("{sparsity: -0.2}", "key `sparsity`: -0.2 is out of range"),
        ("{method: channel, sparsity: 1.5}", "out of range"),
        ('{method: "n:m", pattern: "2-4"}', "`2-4` is not an N:M pattern"),
        ('{method: "n:m", pattern: "4:2"}', "needs 0 < N < M"),
        ('{method: "n:m", pattern: "0:4"}', "needs 0 < N < M"),
        ("{method: \"n:m\", pattern: 2:4}", "expected a string, got integer `124`"),
        ("{method: magnitude, pattern: \"4:8\"}", "key `pattern`: applies to method `n:m`"),
        ("{method: channel, scope: global}", "key `scope`: applies to method `magnitude`"),
        ("{sparsity: 0.8, scope: global, max_layer_sparsity: 0.5}", "global target is unreachable"),
        ("{method: chanel}", "did you mean `channel`?"),
    ],
)
def test_bad_prune_recipe_exit_2(tmp_path: Path, mlp_path: Path, body: str, needle: str):
    out = tmp_path / "o.onnx"
    code, _, stderr = invoke("compress", str(mlp_path), "-r", str(_recipe(tmp_path, body)), "-o", str(out))
    assert code == 2, stderr
    assert_one_error(stderr)
    assert needle in stderr and "pass `prune`" in stderr
    assert not out.exists()


def test_channel_nothing_prunable_exit_0_output_equals_input(tmp_path: Path):
    tail, _ = BLOCKED["residual"]
    model_path = tmp_path / "res.onnx"
    onnx.save(_mlp_block(tail, {"w2": np.ones((8, 8))}), model_path)
    out, rep = tmp_path / "o.onnx", tmp_path / "rep.json"
    code, _, stderr = invoke("compress", str(model_path), "-r", str(_recipe(tmp_path, "{method: channel, sparsity: 0.5}")), "-o", str(out), "--report", str(rep))
    assert code == 0, stderr
    assert M.serialize(onnx.load(out)) == M.serialize(onnx.load(model_path))
    step = json.loads(rep.read_text())["passes"][0]
    assert step["modified"] is False and step["tensors_changed"] == 0
    assert {"name": "w1", "reason": "channel feeds a residual Add (`res`)"} in step["skipped"]
    assert any("no layer pruned" in n for n in step["notes"])


def test_selector_matching_nothing_warns(tmp_path: Path, mlp_path: Path):
    out = tmp_path / "o.onnx"
    code, _, stderr = invoke("compress", str(mlp_path), "-r", str(_recipe(tmp_path, "{include: [\"nomatch*\"]}")), "-o", str(out))
    assert code == 0, stderr
    assert "warning: pass `prune`: selected no tensor" in stderr and "nomatch*" in stderr


@pytest.mark.parametrize("preset", ["prune-50", "prune-2of4", "prune-channels-25"])
def test_presets_deterministic(tmp_path: Path, preset: str):
    src = SAMPLES / "digits_cnn" / "model.onnx"
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert invoke("compress", str(src), "-r", preset, "-o", str(a), "-q")[0] == 0
    assert invoke("compress", str(src), "-r", preset, "-o", str(b), "-q")[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_prune50_preset_keeps_digits_mlp_accuracy(tmp_path: Path):
    out, rep = tmp_path / "o.onnx", tmp_path / "rep.json"
    code, _, stderr = invoke("compress", str(SAMPLES / "digits_mlp" / "model.onnx"), "-r", "prune-50", "-o", str(out), "--report", str(rep))
    assert code == 0, stderr
    step = json.loads(rep.read_text())["passes"][0]
    assert {t["name"]: t["sparsity"] for t in step["tensors"]} == {"fc1.weight": 0.5, "fc2.weight": 0.5}
    assert {"name": "fc3.weight", "reason": "output layer kept dense (`keep_output_layers`)"} in step["skipped"]
    acc, agree = _accuracy(out, "digits_mlp")
    # measured: top-1 0.969 (original 0.972), agreement with the original 0.992
    assert agree >= 0.98 and acc >= 0.96


def test_if_subgraph_weights_pruned_and_heads_found_inside_branches():
    out, res = prune(sample("if_subgraph"), sparsity=0.5, keep_output_layers=True)
    assert {t.name for t in res.tensors} == {"then/fc1.weight", "then/fc2.weight"}
    reasons = skip_reasons(res)
    assert "output layer" in reasons["then/fc3.weight"] and "output layer" in reasons["else/fc.weight"]
    out, res = prune(sample("if_subgraph"), method="channel", sparsity=0.25)
    assert {t.name: t.params_after for t in res.tensors} == {
        "then/fc1.weight": 192 * 64, "then/fc2.weight": 192 * 96, "then/fc3.weight": 96 * 10
    }
    assert skip_reasons(res)["then/fc3.weight"] == "channel reaches graph output `then/logits`"
    acc, agree = _accuracy(out, "if_subgraph")
    assert acc >= 0.94 and agree >= 0.95  # measured: 0.964 / 0.981


def test_gather_tables_nonfloat_and_nan_weights():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 16)).astype(np.float32)
    bad = rng.standard_normal((16, 4)).astype(np.float32)
    bad[3, 1] = np.nan
    g = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["e"], name="lookup"),
            helper.make_node("Gather", ["codes", "ids"], ["c"], name="lookup_int"),
            helper.make_node("MatMul", ["e", "bad"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]), helper.make_tensor_value_info("c", TensorProto.INT64, ["N"])],
        [
            numpy_helper.from_array(table, "emb"),
            numpy_helper.from_array(np.arange(50, dtype=np.int64), "codes"),
            numpy_helper.from_array(bad, "bad"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    out, res = prune(m, ops=["Gather", "MatMul"], sparsity=0.25)
    assert np.count_nonzero(init(out, "emb") == 0) == 200
    reasons = skip_reasons(res)
    assert reasons["codes"] == "weight is int64, not float (already quantized?)"
    assert reasons["bad"] == "weight contains nan or inf"
    _, res = prune(m, ops=["Gather"], method="n:m", pattern="2:4")
    assert skip_reasons(res)["emb"] == "an embedding table has no reduction axis for N:M"
    _, res = prune(m, ops=["Gather"], method="channel")
    assert "not `Gather`" in skip_reasons(res)["emb"] and not res.modified
