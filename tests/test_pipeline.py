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
