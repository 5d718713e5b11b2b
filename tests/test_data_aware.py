"""Calibration-aware compression on the sample models: GPTQ, Wanda, SparseGPT and bias
correction against their data-free twins at equal size, the shared statistics, errors."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import yaml
from conftest import SAMPLES, assert_one_error, feeds_for, invoke, run
from onnx import TensorProto, helper, numpy_helper

from onnxzip import model as M
from onnxzip.data import CalibrationSource, NpzData
from onnxzip.errors import DataError, RecipeError
from onnxzip.passes.base import PassContext
from onnxzip.pipeline import run_pipeline
from onnxzip.recipe import parse_recipe


def context(name: str | None = "transformer", path=None) -> PassContext:
    if name is None and path is None:
        return PassContext()
    src = NpzData(path or SAMPLES / name / "calib.npz", what="calibration")
    return PassContext(calibration=CalibrationSource(src, samples=128, batch=32))


@functools.lru_cache(maxsize=None)
def _sample_bytes(name: str) -> bytes:
    """The sample model as the presets see it: digits_cnn with its BatchNormalizations folded
    into the convs (`simplify`), so the layer statistics see the real output scale."""
    model = M.load_model(SAMPLES / name / "model.onnx")
    if name in FOLD:
        model = run_pipeline(model, parse_recipe(yaml.safe_dump({"version": 1, "passes": [{"simplify": {}}]})),
                             context=PassContext()).model
        assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    return M.serialize(model)


FOLD = {"digits_cnn"}


def sample(name: str) -> onnx.ModelProto:
    return onnx.load_from_string(_sample_bytes(name))


def compress(name: str, passes: list, ctx: PassContext | None = None, model: onnx.ModelProto | None = None):
    model = model if model is not None else sample(name)
    recipe = parse_recipe(yaml.safe_dump({"version": 1, "passes": passes}))
    return run_pipeline(model, recipe, context=ctx if ctx is not None else context(name))


@functools.lru_cache(maxsize=None)
def reference(name: str) -> np.ndarray:
    feeds, _ = feeds_for(SAMPLES / name)
    return run(M.load_model(SAMPLES / name / "model.onnx"), feeds)[0]


def logit_error(name: str, model: onnx.ModelProto) -> float:
    """Relative L2 error of the logits against fp32 on eval.npz."""
    feeds, _ = feeds_for(SAMPLES / name)
    ref = reference(name)
    out = run(model, feeds)[0]
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def stored(res) -> int:
    """Bytes of the tensors the last pass wrote (quantized: codes, scales, codebooks)."""
    return sum(t.bytes_after for t in res.steps[-1].result.tensors)


def zeros(res) -> int:
    """Zeros in the tensors the last pass wrote (pruned: what entropy coding then saves)."""
    return sum(round((t.sparsity or 0) * t.params_after) for t in res.steps[-1].result.tensors)


def pair(name, free: list, aware: list):
    a = compress(name, free, PassContext())
    b = compress(name, aware)
    return a, b, logit_error(name, a.model), logit_error(name, b.model)


# --------------------------------------------------------------------------- GPTQ


@pytest.mark.parametrize("name,factor", [("digits_mlp", 0.4), ("digits_cnn", 0.6), ("transformer", 0.6)])
def test_gptq_beats_rounding_int4_blocks(name, factor):
    """Measured error ratios gptq / rtn: digits_mlp 0.26, digits_cnn 0.47, transformer 0.45."""
    base = {"method": "linear", "bits": 4, "granularity": "block", "block_size": 16}
    a, b, e_rtn, e_gptq = pair(name, [{"quantize": base}], [{"quantize": {**base, "algorithm": "gptq"}}])
    assert stored(a) == stored(b)
    assert e_gptq < factor * e_rtn, (e_rtn, e_gptq)
    t = max(b.steps[-1].result.tensors, key=lambda t: t.params_before)
    assert t.extra["algorithm"] == "gptq" and t.extra["representation"].startswith(("DequantizeLinear", "Cast"))
    assert 0 < t.extra["rel_output_error"] < 1


@pytest.mark.parametrize("name,factor", [("digits_mlp", 0.4), ("digits_cnn", 0.8), ("transformer", 0.75)])
def test_gptq_beats_plain_kmeans_4bit(name, factor):
    """Measured: digits_mlp 0.29, digits_cnn 0.73, transformer 0.66."""
    base = {"method": "kmeans", "bits": 4}
    a, b, e_rtn, e_gptq = pair(name, [{"quantize": base}], [{"quantize": {**base, "algorithm": "gptq"}}])
    assert stored(a) == stored(b)
    assert e_gptq < factor * e_rtn, (e_rtn, e_gptq)


def test_gptq_on_convolutions_per_channel_and_grouped():
    """digits_cnn: a 3x3 conv, a depthwise conv (one Hessian per group), a 1x1 conv, a Gemm."""
    base = {"method": "linear", "bits": 4, "granularity": "per_channel", "include": ["conv1*", "dw*", "pw*"]}
    a, b, e_rtn, e_gptq = pair("digits_cnn", [{"quantize": base}], [{"quantize": {**base, "algorithm": "gptq"}}])
    assert stored(a) == stored(b)
    assert e_gptq < e_rtn
    assert all(t.extra["algorithm"] == "gptq" for t in b.steps[-1].result.tensors)


# --------------------------------------------------------------------------- pruning


P50 = {"sparsity": 0.5}
P24 = {"method": "n:m", "pattern": "2:4"}


@pytest.mark.parametrize(
    "name,prune,factor",
    [
        ("digits_mlp", P50, 0.8),  # measured 0.68
        ("transformer", P50, 0.9),  # 0.84
        ("digits_mlp", P24, 0.85),  # 0.74
        ("digits_cnn", P24, 0.95),  # 0.91 (pw and fc; conv1 and dw have 1 input channel per group: no 2:4 group)
        # 50 % of the whole digits_cnn: 0.975, a thin margin: conv1 reads one image channel, so
        # ||x_j|| is the same for its 9 taps (borders aside) and Wanda is magnitude there; the
        # depthwise conv likewise per group; those two layers alone cost more output error
        # than pw and fc together. Where the activation factor carries information:
        ("digits_cnn", P50, 0.99),
        ("digits_cnn", {**P50, "include": ["pw*", "fc*"]}, 0.9),  # 0.84
        # Not asserted: transformer 2:4 (wanda 0.600 vs magnitude 0.597). Wanda lowers the
        # layer output error in 13 of the 14 layers, but pruned alone the attention keys get
        # worse end to end (0.089 vs 0.061, 0.033 vs 0.021), and at 2:4 that cancels the gains.
        # Likely why: an error in k that is constant over the tokens does not change the
        # softmax, and the uncentered ||x_j|| counts exactly that mean part (scoring k with
        # the centered norm measured 0.071 and 0.029; not Wanda, so not done).
    ],
)
def test_wanda_beats_magnitude(name, prune, factor):
    a, b, e_mag, e_wanda = pair(name, [{"prune": prune}], [{"prune": {**prune, "algorithm": "wanda"}}])
    assert zeros(a) == zeros(b)  # the same number of zeros
    assert [t.sparsity for t in a.steps[-1].result.tensors] == [t.sparsity for t in b.steps[-1].result.tensors]
    assert e_wanda < factor * e_mag, (e_mag, e_wanda)


@pytest.mark.parametrize("name,factor", [("digits_mlp", 0.9), ("digits_cnn", 0.99), ("transformer", 0.85)])
def test_wanda_layer_groups_beat_per_row_groups(name, factor):
    """The default comparison group (the layer) against the paper's per-output rows, 50 %:
    measured digits_mlp 0.130 vs 0.168, digits_cnn 0.513 vs 0.531, transformer 0.318 vs 0.425."""
    ctx = context(name)
    row = compress(name, [{"prune": {**P50, "algorithm": "wanda", "wanda_group": "row"}}], ctx)
    layer = compress(name, [{"prune": {**P50, "algorithm": "wanda"}}], ctx)
    assert zeros(row) == zeros(layer)
    assert all(t.extra["wanda_group"] == "row" for t in row.steps[-1].result.tensors)
    assert all(t.extra["wanda_group"] == "layer" for t in layer.steps[-1].result.tensors)
    assert logit_error(name, layer.model) < factor * logit_error(name, row.model)


def test_wanda_row_groups_prune_every_output_row_alike():
    res = compress("digits_mlp", [{"prune": {**P50, "algorithm": "wanda", "wanda_group": "row", "include": ["fc1*", "fc2*"]}}])
    w = {t.name: M.to_array(t) for t in res.model.graph.initializer}
    assert ((w["fc1.weight"] == 0).sum(axis=1) == 32).all()  # Gemm transB: [out 256, in 64]
    assert ((w["fc2.weight"] == 0).sum(axis=0) == 128).all()  # MatMul: [in 256, out 128]


@pytest.mark.parametrize(
    "name,prune,factor",
    [
        ("digits_mlp", P50, 0.3),  # measured 0.16
        ("digits_cnn", P50, 0.9),  # 0.82
        ("transformer", P50, 0.6),  # 0.41
        ("digits_mlp", P24, 0.3),  # 0.15
        ("digits_cnn", P24, 0.5),  # 0.32
        ("transformer", P24, 0.6),  # 0.43
    ],
)
def test_sparsegpt_beats_magnitude(name, prune, factor):
    a, b, e_mag, e_sgpt = pair(name, [{"prune": prune}], [{"prune": {**prune, "algorithm": "sparsegpt"}}])
    assert zeros(a) == zeros(b)
    assert e_sgpt < factor * e_mag, (e_mag, e_sgpt)
    for t in b.steps[-1].result.tensors:
        assert t.extra["algorithm"] == "sparsegpt" and t.sparsity == pytest.approx(0.5, abs=0.01)


def test_sparsegpt_shares_a_grouped_conv_sparsity_exactly():
    res = compress("digits_cnn", [{"prune": {"sparsity": 0.5, "algorithm": "sparsegpt", "include": ["dw*"]}}])
    (t,) = res.steps[0].result.tensors
    assert t.sparsity == 0.5  # 288 of 576, shared between the 64 groups by OBS cost


# --------------------------------------------------------------------------- bias correction


@pytest.mark.parametrize(
    "name,passes,factor",
    [
        ("digits_mlp", [{"prune": P50}], 0.8),  # measured 0.71
        ("digits_cnn", [{"prune": P50}], 0.95),  # 0.91
        ("transformer", [{"prune": P50}], 0.88),  # 0.82
        ("digits_mlp", [{"quantize": {"method": "kmeans", "bits": 3}}], 0.8),  # 0.69
        ("digits_cnn", [{"quantize": {"method": "kmeans", "bits": 3}}], 0.85),  # 0.78
        ("transformer", [{"quantize": {"method": "kmeans", "bits": 3}}], 0.92),  # 0.87
    ],
)
def test_bias_correction_lowers_the_error(name, passes, factor):
    (pname, cfg), = passes[0].items()
    a, b, e_off, e_on = pair(name, passes, [{pname: {**cfg, "bias_correction": True}}])
    assert stored(a) == stored(b) and (pname != "prune" or zeros(a) == zeros(b))
    assert e_on < factor * e_off, (e_off, e_on)
    assert all("bias_correction" in t.extra for t in b.steps[-1].result.tensors)


def _single_layer(op: str, tmp_path, **kw):
    """x[N, 12] or [N, 3, 6, 6] -> one weight layer -> y, and calibration data with a mean."""
    rng = np.random.default_rng(0)
    inits = []
    if op == "Conv":
        w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
        x_shape, nodes = ["N", 3, 6, 6], [helper.make_node("Conv", ["x", "w"], ["y"], name="layer", pads=[1, 1, 1, 1])]
        data = rng.standard_normal((64, 3, 6, 6)).astype(np.float32) + 0.7
    else:
        w = rng.standard_normal((12, 7) if op != "Gemm" else (7, 12)).astype(np.float32)
        x_shape = ["N", 12]
        data = rng.standard_normal((64, 12)).astype(np.float32) + 0.7
        if op == "Gemm":
            nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="layer", transB=1, alpha=0.5)]
        elif kw.get("add"):
            nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="layer"), helper.make_node("Add", ["mm", "b"], ["y"], name="bias")]
            inits.append(numpy_helper.from_array(rng.standard_normal(7).astype(np.float32), "b"))
        else:
            nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="layer")]
    inits.append(numpy_helper.from_array(w, "w"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 6, 6] if op == "Conv" else ["N", 7])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "calib.npz"
    np.savez(path, x=data)
    return m, data, path


@pytest.mark.parametrize(
    "op,kw,where",
    [
        ("Gemm", {}, "new Gemm bias C"),
        ("Conv", {}, "new Conv bias B"),
        ("MatMul", {}, "new Add"),
        ("MatMul", {"add": True}, "bias of the following Add"),
    ],
)
@pytest.mark.parametrize("passes", ["prune", "quantize"])
def test_bias_correction_keeps_the_mean_output(tmp_path, op, kw, where, passes):
    m, data, path = _single_layer(op, tmp_path, **kw)
    before = run(m, {"x": data})[0]
    step = {"prune": {"sparsity": 0.6, "bias_correction": True}} if passes == "prune" else \
        {"quantize": {"method": "kmeans", "bits": 2, "bias_correction": True}}
    res = compress("", [step], context(path=path), model=m)
    (t,) = res.steps[0].result.tensors
    assert t.extra["bias_correction"] == where
    after = run(res.model, {"x": data})[0]
    assert [o.name for o in res.model.graph.output] == ["y"]
    axes = (0, 2, 3) if op == "Conv" else (0,)
    np.testing.assert_allclose(after.mean(axis=axes), before.mean(axis=axes), rtol=1e-4, atol=1e-4 * np.abs(before).mean())
    assert not np.allclose(after, before, atol=1e-3)  # the weights did change


# --------------------------------------------------------------------------- pipelines, cache


def test_deep_pipeline_runs_the_model_once_and_beats_the_data_free_one():
    free = [{"prune": {"sparsity": 0.5}}, {"quantize": {"method": "kmeans", "bits": 4}}]
    aware = [
        {"prune": {"sparsity": 0.5, "algorithm": "sparsegpt", "bias_correction": True}},
        {"quantize": {"method": "kmeans", "bits": 4, "algorithm": "gptq", "bias_correction": True}},
    ]
    ctx = context("transformer")
    a = compress("transformer", free, PassContext())
    b = compress("transformer", aware, ctx)
    assert len(ctx.stats_cache.runs) == 1
    assert any("reused from an earlier pass" in n for n in b.steps[1].result.notes)
    assert any("from the original model" in n for n in b.steps[0].result.notes)
    assert stored(a) == stored(b)
    for t in b.steps[1].result.tensors:  # the pruned zeros stay exact zeros
        assert t.sparsity >= 0.5 and t.extra["zero_code"] is True
    assert logit_error("transformer", b.model) < 0.5 * logit_error("transformer", a.model)


def test_factorize_uses_the_shared_statistics():
    """factorize (data_aware) then quantize (gptq): the factors' first input is the original
    layer input (statistics reused); the second reads a tensor factorize created, collected
    from the model as compressed so far."""
    ctx = context("transformer")
    res = compress("transformer", [
        {"factorize": {"rank": 16, "data_aware": True, "include": ["*ff1*"]}},
        {"quantize": {"bits": 8, "algorithm": "gptq", "include": ["*ff1*"]}},
    ], ctx)
    f, q = (s.result for s in res.steps)
    assert [t.extra["method"] for t in f.tensors] == ["weighted-svd", "weighted-svd"]
    assert len(ctx.stats_cache.runs) == 2
    assert any("compressed so far" in n and "2 more reused" in n for n in q.notes)
    assert all(t.extra["algorithm"] == "gptq" for t in q.tensors)


def test_weights_without_statistics_fall_back_and_say_why():
    """The If subgraph's weights cannot be fetched: rounded / magnitude-pruned, recorded."""
    ctx = context("digits_mlp")
    res = compress("if_subgraph", [
        {"prune": {"sparsity": 0.5, "algorithm": "sparsegpt"}},
        {"quantize": {"method": "kmeans", "bits": 4, "algorithm": "gptq"}},
    ], ctx)
    for step in res.steps:
        extras = {t.name: t.extra for t in step.result.tensors}
        assert any("subgraph" in e.get("fallback", "") for e in extras.values())
    assert logit_error("if_subgraph", res.model) < 0.5


def test_data_aware_compression_is_deterministic():
    passes = [{"prune": {"method": "n:m", "pattern": "2:4", "algorithm": "sparsegpt", "bias_correction": True}},
              {"quantize": {"bits": 4, "granularity": "block", "algorithm": "gptq", "act_order": True}}]
    one = M.serialize(compress("digits_mlp", passes).model)
    two = M.serialize(compress("digits_mlp", passes).model)
    assert one == two


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "step,key",
    [
        ({"prune": {"algorithm": "wanda"}}, "algorithm"),
        ({"prune": {"method": "n:m", "bias_correction": True}}, "bias_correction"),
        ({"quantize": {"algorithm": "gptq"}}, "algorithm"),
        ({"quantize": {"method": "kmeans", "overrides": {"fc1*": {"bias_correction": True}}}}, "bias_correction"),
        ({"factorize": {"rank": 4, "bias_correction": True}}, "bias_correction"),
    ],
)
def test_data_aware_options_need_calibration_data(step, key):
    (pname,) = step
    with pytest.raises(DataError) as e:
        compress("digits_mlp", [step], PassContext())
    assert f"pass `{pname}`" in str(e.value) and f"key `{key}`" in str(e.value)
    assert "--calib" in e.value.hint and "calibration.data" in e.value.hint.replace(": {data", ".data")


def test_factorize_data_aware_still_falls_back_without_data():
    res = compress("digits_mlp", [{"factorize": {"rank": 8, "data_aware": True}}], PassContext())
    assert res.steps[0].result.modified and any("no calibration data" in w for w in res.steps[0].result.warnings)


def test_cli_without_calibration_data_exits_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses:\n  - prune: {sparsity: 0.5, algorithm: sparsegpt}\n")
    out = tmp_path / "out.onnx"
    code, _, err = invoke("compress", str(SAMPLES / "digits_mlp" / "model.onnx"), "-r", str(recipe), "-o", str(out))
    assert code == 2 and not out.exists()
    assert_one_error(err)
    assert "`prune`" in err and "`algorithm`" in err and "--calib" in err
    code, _, err = invoke("compress", str(SAMPLES / "digits_mlp" / "model.onnx"), "-r", str(recipe), "-o", str(out),
                          "--calib", str(SAMPLES / "digits_mlp" / "calib.npz"))
    assert code == 0, err
    assert out.exists()


@pytest.mark.parametrize(
    "step,key",
    [
        ({"prune": {"percdamp": 0.1}}, "percdamp"),
        ({"prune": {"method": "channel", "algorithm": "wanda"}}, "algorithm"),
        ({"prune": {"method": "channel", "bias_correction": True}}, "bias_correction"),
        ({"prune": {"scope": "global", "algorithm": "sparsegpt"}}, "scope"),
        ({"prune": {"wanda_group": "row"}}, "wanda_group"),
        ({"prune": {"wanda_group": "row", "algorithm": "sparsegpt"}}, "wanda_group"),
        ({"prune": {"method": "n:m", "wanda_group": "row", "algorithm": "wanda"}}, "wanda_group"),
        ({"quantize": {"act_order": True}}, "act_order"),
        ({"quantize": {"lazy_batch": 64, "algorithm": "rtn"}}, "lazy_batch"),
        ({"quantize": {"algorithm": "awq"}}, "algorithm"),
    ],
)
def test_recipe_rejects_misplaced_data_aware_keys(step, key):
    with pytest.raises(RecipeError) as e:
        parse_recipe(yaml.safe_dump({"version": 1, "passes": [step]}))
    assert f"key `{key}`" in str(e.value)
