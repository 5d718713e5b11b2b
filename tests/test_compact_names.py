"""compact-names: short tensor ids, the same numerics, the interface and node names kept."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SAMPLES, feeds_for, invoke, run
from onnx import TensorProto, helper, numpy_helper

from onnxzip import model as M
from onnxzip.errors import RecipeError
from onnxzip.pipeline import run_pipeline
from onnxzip.recipe import load_recipe, parse_recipe

CNN = SAMPLES / "digits_cnn"


def _names(m: onnx.ModelProto) -> set[str]:
    out = set()
    for scope in M.walk(m):
        g = scope.graph
        out |= {t.name for t in g.initializer} | {x for n in g.node for x in (*n.input, *n.output) if x}
    return out


def test_deep_compression_output_same_numerics_interface_and_node_names(tmp_path: Path):
    r = load_recipe("deep-compression")
    assert r.passes[-1].name == "compact-names"
    src = M.load_model(CNN / "model.onnx")
    full = run_pipeline(M.load_model(CNN / "model.onnx"), r)
    long = run_pipeline(M.load_model(CNN / "model.onnx"), dataclasses.replace(r, passes=r.passes[:-1])).model
    short = full.model
    assert [v.name for v in short.graph.input] == [v.name for v in src.graph.input]
    assert [v.name for v in short.graph.output] == [v.name for v in src.graph.output]
    assert [n.name for n in short.graph.node] == [n.name for n in long.graph.node]
    assert [n.op_type for n in short.graph.node] == [n.op_type for n in long.graph.node]
    keep = {v.name for v in (*src.graph.input, *src.graph.output)}
    assert all(len(n) <= 4 or n in keep for n in _names(short)), sorted(_names(short))[-5:]
    assert short.ByteSize() < long.ByteSize() - 500
    assert any("renamed" in note for note in full.steps[-1].result.notes)
    feeds, _ = feeds_for(CNN, 64)
    assert np.array_equal(run(short, feeds)[0], run(long, feeds)[0])
    # deterministic: the same bytes again
    again = run_pipeline(M.load_model(CNN / "model.onnx"), r).model
    assert again.SerializeToString(deterministic=True) == short.SerializeToString(deterministic=True)


def test_outer_scope_names_in_subgraphs_stay_bound():
    """An If branch reads a main-graph tensor by name: one mapping renames both sides."""
    def branch(tag: str, k: float) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Mul", ["a_rather_long_intermediate_name", f"k_{tag}_constant_factor"], [f"y_{tag}_branch_output"], name=f"mul_{tag}")],
            f"b_{tag}", [], [helper.make_tensor_value_info(f"y_{tag}_branch_output", TensorProto.FLOAT, [4])],
            [numpy_helper.from_array(np.full(4, k, np.float32), f"k_{tag}_constant_factor")],
        )

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a_rather_long_intermediate_name"], name="relu"),
         helper.make_node("ReduceSum", ["x"], ["sum_of_the_input_values"], name="sum", keepdims=0),
         helper.make_node("Greater", ["sum_of_the_input_values", "zero_threshold"], ["cond_flag"], name="gt"),
         helper.make_node("If", ["cond_flag"], ["y"], name="if", then_branch=branch("then", 2.0), else_branch=branch("else", -3.0))],
        "main", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.float32(0.0), "zero_threshold")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    res = run_pipeline(m, parse_recipe("version: 1\npasses:\n  - compact-names: {}\n"))
    out = res.model
    onnx.checker.check_model(out)
    assert max(len(n) for n in _names(out) - {"x", "y"}) <= 4
    for x in (np.array([1, 2, 3, 4], np.float32), np.array([-1, -2, 0, 1], np.float32)):
        assert np.array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])


def test_short_names_and_existing_ids_do_not_collide():
    # names "0" and "1" exist already: the ids handed out skip them
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["0"], name="a"),
         helper.make_node("Neg", ["0"], ["a_long_name_number_one"], name="b"),
         helper.make_node("Abs", ["a_long_name_number_one"], ["1"], name="c"),
         helper.make_node("Sigmoid", ["1"], ["another_long_name_here"], name="d"),
         helper.make_node("Relu", ["another_long_name_here"], ["y"], name="e")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out = run_pipeline(m, parse_recipe("version: 1\npasses:\n  - compact-names: {}\n")).model
    outs = [n.output[0] for n in out.graph.node]
    assert outs[0] == "0" and outs[2] == "1" and len(set(outs)) == 5 and outs[-1] == "y"
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    assert np.array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])


def test_must_come_after_the_weight_passes():
    with pytest.raises(RecipeError) as e:
        parse_recipe("version: 1\npasses:\n  - compact-names: {}\n  - huffman: {}\n", "r.yaml")
    assert "must come before `compact-names`" in e.value.message


def test_per_layer_report_still_matches_weights_and_activations(tmp_path: Path):
    """--per-layer finds each weight and activation through the node that uses or makes it."""
    counts = {}
    for label, recipe in (("short", "deep-compression"), ("long", None)):
        if recipe is None:
            text = (Path(__file__).resolve().parents[1] / "configs" / "deep-compression.yaml").read_text()
            recipe = str(tmp_path / "long.yaml")
            Path(recipe).write_text(text.replace("  - compact-names:", "#  - compact-names:"))
        rep = tmp_path / f"{label}.json"
        code, _, err = invoke("compress", str(CNN / "model.onnx"), "-r", recipe, "-o", str(tmp_path / f"{label}.onnx"),
                              "--data", str(CNN / "eval.npz"), "--per-layer", "--no-latency", "--no-gates", "--report", str(rep), "-q")
        assert code == 0, err
        pl = json.loads(rep.read_text())["evaluation"]["per_layer"]
        counts[label] = (len(pl["weights"]), len(pl["activations"]), {w["name"]: w["rel_error"] for w in pl["weights"]})
    assert counts["short"][0] == counts["long"][0] > 0
    assert counts["short"][1] == counts["long"][1] > 0
    assert counts["short"][2] == counts["long"][2]
