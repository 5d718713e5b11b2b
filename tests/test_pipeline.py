"""The pipeline: passes run in order, every result is checked, failures name the pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import SAMPLES, invoke, make_mlp, run
from onnxzip import model as M
from onnxzip.errors import PassFailure
from onnxzip.passes import REGISTRY
from onnxzip.passes.base import Pass, PassConfig, PassResult
from onnxzip.passes.simplify import SimplifyConfig, SimplifyPass
from onnxzip.pipeline import run_pipeline
from onnxzip.recipe import parse_recipe


@dataclass(frozen=True, kw_only=True)
class _BreakConfig(PassConfig):
    pass


class _BreakPass(Pass):
    """Produces a graph that references a tensor nobody defines."""

    name, Config = "break", _BreakConfig

    def call(self, model):
        model.graph.node[0].input[0] = "nowhere"
        return PassResult(model, True)


class _CrashPass(Pass):
    name, Config = "crash", _BreakConfig

    def call(self, model):
        raise ZeroDivisionError("boom")


def test_invalid_graph_names_the_pass(monkeypatch):
    monkeypatch.setitem(REGISTRY, "break", _BreakPass)
    r = parse_recipe("version: 1\npasses: [cast-fp16, break]\n", "r.yaml")
    with pytest.raises(PassFailure) as ei:
        run_pipeline(make_mlp(), r)
    e = ei.value
    assert e.exit_code == 101
    assert "pass `break` produced an invalid model" in e.message
    assert any("it ran after: `cast-fp16`" in c for c in e.causes)


def test_crash_is_internal_error_via_cli(monkeypatch, tmp_path: Path, mlp_path: Path):
    monkeypatch.setitem(REGISTRY, "crash", _CrashPass)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses: [crash]\n")
    out = tmp_path / "o.onnx"
    code, _, stderr = invoke("compress", str(mlp_path), "-r", str(recipe), "-o", str(out))
    assert code == 101
    assert "pass `crash` crashed" in stderr and "ZeroDivisionError: boom" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()


def test_simplify_passes_through_what_onnxsim_cannot_handle():
    g = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    before = m.SerializeToString()
    res = SimplifyPass(SimplifyConfig()).call(m)
    assert not res.modified
    assert res.skipped and res.skipped[0].reason.startswith("onnxsim")
    assert res.model.SerializeToString() == before


def test_simplify_keeps_outputs(mlp_path: Path):
    m = M.load_model(mlp_path)
    res = SimplifyPass(SimplifyConfig(check_n=1)).call(m)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(run(res.model, {"x": x})[0], run(onnx.load(mlp_path), {"x": x})[0], rtol=1e-5, atol=1e-6)


def _conv_bn_dynamic() -> onnx.ModelProto:
    """x[N, 2, H, W] -> Conv -> BatchNormalization -> Relu: onnxsim folds the BN into the Conv."""
    rng = np.random.default_rng(0)
    t = lambda a, n: onnx.numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
         helper.make_node("Relu", ["n"], ["y"])],
        "convbn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [t(rng.standard_normal((3, 2, 3, 3)), "w"), t(rng.uniform(0.5, 2, 3), "s"), t(rng.standard_normal(3), "b"),
         t(rng.standard_normal(3), "m"), t(rng.uniform(0.5, 2, 3), "v")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key="author", value="me")
    return m


def test_simplify_handles_dynamic_input_dims(tmp_path: Path):
    """onnxsim refuses to check a model with dynamic dims unless given shapes: without
    calibration data the model is simplified unchecked (said in a note), with it the check
    runs on the data's shape at batch 1; either way the dims stay dynamic."""
    from onnxzip.data import CalibrationSource, NpzData
    from onnxzip.passes.base import PassContext

    m = _conv_bn_dynamic()
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 7)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    cal = CalibrationSource(NpzData(tmp_path / "c.npz", what="calibration"))
    for ctx, note in ((PassContext(), "numeric check skipped: input `x` float32[Nx2xHxW] has dynamic dims"),
                      (PassContext(calibration=cal), "numeric check on the calibration data's shapes: `x` 1x2x5x7")):
        res = SimplifyPass(SimplifyConfig(check_n=1), ctx).call(m)
        assert res.modified and not res.skipped
        assert note in " ".join(res.notes)
        assert [n.op_type for n in res.model.graph.node] == ["Conv", "Relu"]
        dims = [d.dim_param or d.dim_value for d in res.model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["N", 2, "H", "W"]
        other = np.random.default_rng(2).standard_normal((3, 2, 4, 9)).astype(np.float32)  # another size
        np.testing.assert_allclose(run(res.model, {"x": other})[0], run(m, {"x": other})[0], rtol=1e-4, atol=1e-5)
        # onnxsim's own bookkeeping is not carried into the file; the model's metadata is
        assert {e.key: e.value for e in res.model.metadata_props} == {"author": "me"}
        assert not res.model.graph.value_info  # no inferred shapes the input did not carry


def test_cast_fp16_reaches_weights_inside_if_branches(tmp_path: Path):
    src = SAMPLES / "if_subgraph" / "model.onnx"
    if not src.exists():
        pytest.skip("sample model not built")
    m = M.load_model(src)
    r = parse_recipe("version: 1\npasses: [cast-fp16]\n", "r.yaml")
    res = run_pipeline(m, r)
    sub = [s for s in M.walk(res.model) if s.parent is not None]
    assert sub, "the sample must have subgraphs"
    fp16 = [t.name for s in sub for t in s.graph.initializer if t.data_type == TensorProto.FLOAT16]
    assert fp16, "weights inside the If branches were not reached"
    stats = res.steps[0].result.tensors
    assert {st.name for st in stats} >= {n.removesuffix("_fp16") for n in fp16}


def test_no_target_warning(mlp_path: Path, tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses:\n  - cast-fp16: {include: ['nothing*']}\n")
    code, _, stderr = invoke("compress", str(mlp_path), "-r", str(recipe), "-o", str(tmp_path / "o.onnx"))
    assert code == 0
    assert "selected no tensor" in stderr and "nothing*" in stderr
