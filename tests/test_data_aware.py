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


def compress(name: str, passes: list, ctx: PassContext | None = None, model: onnx.ModelProto | None = None):
    model = model if model is not None else M.load_model(SAMPLES / name / "model.onnx")
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


@pytest.mark.parametrize("name", ["transformer", "digits_mlp"])
def test_gptq_beats_rounding_int4_blocks(name):
    base = {"method": "linear", "bits": 4, "granularity": "block", "block_size": 16}
    a, b, e_rtn, e_gptq = pair(name, [{"quantize": base}], [{"quantize": {**base, "algorithm": "gptq"}}])
    assert stored(a) == stored(b)
    assert e_gptq < 0.7 * e_rtn, (e_rtn, e_gptq)
    t = b.steps[0].result.tensors[0]
    assert t.extra["algorithm"] == "gptq" and t.extra["representation"].startswith(("DequantizeLinear", "Cast"))
    assert 0 < t.extra["rel_output_error"] < 1


@pytest.mark.parametrize("name", ["transformer", "digits_mlp"])
def test_gptq_beats_plain_kmeans_4bit(name):
    base = {"method": "kmeans", "bits": 4}
    a, b, e_rtn, e_gptq = pair(name, [{"quantize": base}], [{"quantize": {**base, "algorithm": "gptq"}}])
    assert stored(a) == stored(b)
    assert e_gptq < 0.8 * e_rtn, (e_rtn, e_gptq)


def test_gptq_on_convolutions_per_channel_and_grouped():
    """digits_cnn: a 3x3 conv, a depthwise conv (one Hessian per group), a 1x1 conv, a Gemm."""
    base = {"method": "linear", "bits": 4, "granularity": "per_channel", "include": ["conv1*", "dw*", "pw*"]}
    a, b, e_rtn, e_gptq = pair("digits_cnn", [{"quantize": base}], [{"quantize": {**base, "algorithm": "gptq"}}])
    assert stored(a) == stored(b)
    assert e_gptq < e_rtn
    assert all(t.extra["algorithm"] == "gptq" for t in b.steps[0].result.tensors)


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize(
    "name,prune,factor",
    [
        ("digits_mlp", {"sparsity": 0.5}, 0.95),
        ("digits_mlp", {"method": "n:m", "pattern": "2:4"}, 0.85),
    ],
)
def test_wanda_beats_magnitude(name, prune, factor):
    a, b, e_mag, e_wanda = pair(name, [{"prune": prune}], [{"prune": {**prune, "algorithm": "wanda"}}])
    assert zeros(a) == zeros(b)  # the same number of zeros
    assert e_wanda < factor * e_mag, (e_mag, e_wanda)


@pytest.mark.parametrize(
    "name,prune",
    [
        ("transformer", {"sparsity": 0.5}),
        ("transformer", {"method": "n:m", "pattern": "2:4"}),
        ("digits_mlp", {"sparsity": 0.5}),
        ("digits_cnn", {"method": "n:m", "pattern": "2:4"}),
    ],
)
def test_sparsegpt_beats_magnitude(name, prune):
    a, b, e_mag, e_sgpt = pair(name, [{"prune": prune}], [{"prune": {**prune, "algorithm": "sparsegpt"}}])
    assert zeros(a) == zeros(b)
    assert e_sgpt < 0.6 * e_mag, (e_mag, e_sgpt)
    for t in b.steps[0].result.tensors:
        assert t.extra["algorithm"] == "sparsegpt" and t.sparsity == pytest.approx(0.5, abs=0.01)


def test_sparsegpt_shares_a_grouped_conv_sparsity_exactly():
    res = compress("digits_cnn", [{"prune": {"sparsity": 0.5, "algorithm": "sparsegpt", "include": ["dw*"]}}])
    (t,) = res.steps[0].result.tensors
    assert t.sparsity == 0.5  # 288 of 576, shared between the 64 groups by OBS cost


# --------------------------------------------------------------------------- bias correction


@pytest.mark.parametrize(
    "name,passes",
    [
        ("transformer", [{"prune": {"sparsity": 0.5}}]),
        ("digits_cnn", [{"prune": {"sparsity": 0.5}}]),
        ("digits_mlp", [{"quantize": {"method": "kmeans", "bits": 3}}]),
    ],
)
def test_bias_correction_lowers_the_error(name, passes):
    (pname, cfg), = passes[0].items()
    a, b, e_off, e_on = pair(name, passes, [{pname: {**cfg, "bias_correction": True}}])
    assert stored(a) == stored(b) and (pname != "prune" or zeros(a) == zeros(b))
    assert e_on < 0.92 * e_off, (e_off, e_on)
    assert all("bias_correction" in t.extra for t in b.steps[0].result.tensors)


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
        ({"quantize": {"act_order": True}}, "act_order"),
        ({"quantize": {"lazy_batch": 64, "algorithm": "rtn"}}, "lazy_batch"),
        ({"quantize": {"algorithm": "awq"}}, "algorithm"),
    ],
)
def test_recipe_rejects_misplaced_data_aware_keys(step, key):
    with pytest.raises(RecipeError) as e:
        parse_recipe(yaml.safe_dump({"version": 1, "passes": [step]}))
    assert f"key `{key}`" in str(e.value)
