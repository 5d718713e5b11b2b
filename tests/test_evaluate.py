"""Evaluation: providers, latency, accuracy on data and on generated inputs, per-layer errors,
and the report (schema, determinism, Markdown)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SAMPLES, assert_one_error, invoke, make_mlp
from onnxzip.data import input_signature
from onnxzip.evaluate import MAX_RUNS, MIN_RUNS, measure_latency, synthetic_batches
from onnxzip.report import markdown, to_json, without_timings

MLP = SAMPLES / "digits_mlp"
CNN = SAMPLES / "digits_cnn"
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture
def cast_recipe(tmp_path: Path) -> Path:
    p = tmp_path / "cast.yaml"
    p.write_text("version: 1\nname: cast\npasses: [cast-fp16]\n")
    return p


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- latency


class _FakeSession:
    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log

    def run(self, _names, _feeds):
        self.log.append(self.name)


def test_latency_runs_are_interleaved_after_warmup():
    log: list[str] = []
    times, runs = measure_latency([_FakeSession("A", log), _FakeSession("B", log)], {}, runs=3, warmup=2)
    assert runs == 3 and [len(t) for t in times] == [3, 3]
    assert log == ["A", "B", "A", "B"] + ["A", "B", "B", "A", "A", "B"]  # warm-up, then A B / B A alternating


def test_default_run_count_is_bounded():
    log: list[str] = []
    _, runs = measure_latency([_FakeSession("A", log)], {}, runs=None, warmup=1, target_seconds=1e-9)
    assert runs == MIN_RUNS
    log.clear()
    _, runs = measure_latency([_FakeSession("A", log)], {}, runs=None, warmup=1, target_seconds=1e6)
    assert runs == MAX_RUNS


def test_latency_section_through_eval(tmp_path: Path):
    rep = tmp_path / "r.json"
    code, _, err = invoke("eval", str(MLP / "model.onnx"), str(MLP / "model.onnx"), "--runs", "7", "--warmup", "2",
                          "--latency-batch", "4", "--threads", "1", "--report", str(rep), "--samples", "8")
    assert code == 0, err
    r = _json(rep)
    lat = r["evaluation"]["latency"]["CPUExecutionProvider"]
    assert (lat["runs"], lat["warmup"], lat["batch"], lat["threads"]) == (7, 2, 4, 1)
    for side in ("original", "compressed"):
        s = lat[side]
        assert 0 < s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
        assert s["session_seconds"] > 0
    assert lat["speedup"] == pytest.approx(lat["original"]["p50_ms"] / lat["compressed"]["p50_ms"], rel=1e-3)
    assert r["evaluation"]["providers"][0]["used"] == {"original": ["CPUExecutionProvider"], "compressed": ["CPUExecutionProvider"]}
    assert r["environment"]["threads"] == 1 and r["environment"]["cpu"]
    assert "latency" in err and "p50" in err


# --------------------------------------------------------------------------- providers


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here: the missing-provider path cannot be exercised")
def test_missing_cuda_exit_2_with_hint_unless_fallback(tmp_path: Path):
    code, _, err = invoke("eval", str(MLP / "model.onnx"), "--providers", "cpu,cuda", "--no-latency")
    assert code == 2
    assert_one_error(err)
    assert "cuda" in err and "onnxzip[cuda]" in err and "--allow-fallback" in err
    rep, md = tmp_path / "r.json", tmp_path / "r.md"
    code, _, err = invoke("eval", str(MLP / "model.onnx"), str(MLP / "model.onnx"), "--providers", "cuda", "--allow-fallback",
                          "--runs", "3", "--report", str(rep), "--markdown", str(md), "--samples", "8")
    assert code == 0, err
    p = _json(rep)["evaluation"]["providers"][0]
    assert p["requested"] == "cuda" and p["provider"] == "CUDAExecutionProvider"
    assert p["used"]["original"] == ["CPUExecutionProvider"] and "not available" in p["fallback"]
    assert "measured on CPUExecutionProvider" in err and "not available" in md.read_text()


def test_unknown_provider_exit_2():
    code, _, err = invoke("eval", str(MLP / "model.onnx"), "--providers", "warpdrive")
    assert code == 2
    assert_one_error(err)
    assert "warpdrive" in err and "CPUExecutionProvider" in err


# --------------------------------------------------------------------------- accuracy


def test_accuracy_on_data_with_labels(tmp_path: Path):
    rep = tmp_path / "r.json"
    code, _, err = invoke("eval", str(MLP / "model.onnx"), str(MLP / "model.onnx"), "--data", str(MLP / "eval.npz"),
                          "--no-latency", "--batch-size", "50", "--report", str(rep))
    assert code == 0, err
    r = _json(rep)
    ev = r["evaluation"]
    assert ev["data"]["synthetic"] is False and ev["data"]["samples"] == 360 and ev["data"]["labels"] is True
    assert ev["latency"] is None
    m = ev["accuracy"]["CPUExecutionProvider"]["outputs"]["logits"]
    assert m["top1_agreement"] == 1.0 and m["cosine"] == pytest.approx(1.0) and m["max_abs_error"] == 0.0
    assert m["snr_db"] == "inf"  # JSON has no infinity: written as a string
    assert m["top1_accuracy_original"] == m["top1_accuracy"] == pytest.approx(350 / 360)
    assert m["accuracy_drop"] == 0.0


def test_single_model_eval_measures_it_alone(tmp_path: Path):
    rep = tmp_path / "r.json"
    code, _, err = invoke("eval", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "--runs", "3", "--report", str(rep))
    assert code == 0, err
    r = _json(rep)
    assert r["kind"] == "eval" and r["output"] is None
    m = r["evaluation"]["accuracy"]["CPUExecutionProvider"]["outputs"]["logits"]
    assert m["top1_accuracy_original"] > 0.96 and "top1_agreement" not in m
    assert "compressed" not in r["evaluation"]["latency"]["CPUExecutionProvider"]


def test_generated_inputs_flagged_synthetic(tmp_path: Path, cast_recipe: Path):
    rep = tmp_path / "r.json"
    code, _, err = invoke("compress", str(CNN / "model.onnx"), "-r", str(cast_recipe), "-o", str(tmp_path / "o.onnx"),
                          "--eval", "--no-latency", "--report", str(rep))
    assert code == 0, err
    d = _json(rep)["evaluation"]["data"]
    assert d["synthetic"] is True and d["source"] == "generated" and d["shapes"] == {"input": [1, 1, 8, 8]}
    assert d["assumed_dims"] == ["input[0] (`N` batch dim) = 1"]
    assert "generated inputs" in err and "synthetic" in err
    m = _json(rep)["evaluation"]["accuracy"]["CPUExecutionProvider"]["outputs"]["logits"]
    assert m["cosine"] > 0.999
    code, _, err = invoke("eval", str(CNN / "model.onnx"), str(tmp_path / "o.onnx"), "--input-shape", "input=4x1x8x8",
                          "--samples", "8", "--no-latency", "--report", str(rep))
    assert code == 0, err
    d = _json(rep)["evaluation"]["data"]
    assert d["shapes"] == {"input": [4, 1, 8, 8]} and d["assumed_dims"] == [] and d["samples"] == 8


@pytest.mark.parametrize(
    ("shape", "msg"),
    [("input=1x1x8", "expects float32[Nx1x8x8]"), ("input=1x2x8x8", "expects float32[Nx1x8x8]"), ("image=1x1x8x8", "not a model input"), ("input=1xx8", "NAME=DxDxD")],
)
def test_bad_input_shape_exit_2(shape: str, msg: str):
    code, _, err = invoke("eval", str(CNN / "model.onnx"), "--input-shape", shape, "--no-latency")
    assert code == 2
    assert_one_error(err)
    assert msg in err


def _token_model() -> onnx.ModelProto:
    """ids[N, T] -> Gather(table[50, 8]) * Cast(mask[N, T]) -> ReduceSum -> y[N, 8]."""
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32), "table")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "neg1"], ["m3"]),
        helper.make_node("Mul", ["emb", "m3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes"], ["y"], keepdims=0),
    ]
    neg1 = numpy_helper.from_array(np.array([-1], np.int64), "neg1")
    g = helper.make_graph(
        nodes, "tok",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "T"]), helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [table, axes, neg1],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_generated_integer_inputs_are_valid():
    m = _token_model()
    feeds, info = synthetic_batches(m, input_signature(m), {"ids": (2, 7)}, samples=6, seed=0)
    assert len(feeds) == 3 and info["shapes"] == {"ids": [2, 7], "attention_mask": [2, 7]}  # `T` bound from ids
    ids = np.concatenate([f["ids"] for f in feeds])
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 5
    assert all((f["attention_mask"] == 1).all() for f in feeds)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, feeds[0])[0].shape == (2, 8)
    _, info = synthetic_batches(m, input_signature(m), {}, samples=1, seed=0)
    assert info["assumed_dims"] == ["ids[0] (`batch` batch dim) = 1", "ids[1] (`T` size dim) = 1"]


def test_compressed_model_with_other_inputs_exit_2(tmp_path: Path):
    code, _, err = invoke("eval", str(MLP / "model.onnx"), str(CNN / "model.onnx"), "--no-latency")
    assert code == 2
    assert_one_error(err)
    assert "same inputs" in err


def test_model_onnxruntime_cannot_load_is_exit_2(tmp_path: Path, cast_recipe: Path):
    m = make_mlp()
    m.graph.initializer.append(numpy_helper.from_array(np.ones(4, np.int64), "ints"))
    m.graph.node.append(helper.make_node("Add", ["y", "ints"], ["y2"], name="bad_add"))  # float + int64
    m.graph.output[0].name = "y2"
    p = tmp_path / "bad.onnx"
    onnx.save(m, p)
    out = tmp_path / "o.onnx"
    code, _, err = invoke("compress", str(p), "-r", str(cast_recipe), "-o", str(out))
    assert code == 2, err
    assert_one_error(err)
    assert "onnxruntime cannot load" in err and not out.exists()


# --------------------------------------------------------------------------- per layer


def test_per_layer_weights_and_activations(tmp_path: Path, cast_recipe: Path):
    rep = tmp_path / "r.json"
    code, _, err = invoke("compress", str(MLP / "model.onnx"), "-r", str(cast_recipe), "-o", str(tmp_path / "o.onnx"),
                          "--data", str(MLP / "eval.npz"), "--per-layer", "--no-latency", "--report", str(rep))
    assert code == 0, err
    pl = _json(rep)["evaluation"]["per_layer"]
    names = [w["name"] for w in pl["weights"]]
    assert {"fc1.weight", "fc2.weight", "fc3.weight"} <= set(names)
    errs = [w["rel_error"] for w in pl["weights"]]
    assert errs == sorted(errs, reverse=True)  # worst first
    assert 1e-5 < errs[0] < 1e-3  # fp16 rounding: about 2^-12
    assert all(w["matched_by"] == "name" for w in pl["weights"])  # the Cast output keeps the name
    acts = pl["activations"]
    assert acts and [a["rel_error"] for a in acts] == sorted((a["rel_error"] for a in acts), reverse=True)
    assert {"Gemm", "Relu"} <= {a["op"] for a in acts}
    assert "worst weights" in err


def test_per_layer_reports_unmatched_weights(tmp_path: Path):
    a = make_mlp()
    b = make_mlp(seed=0)
    # b: w1 replaced by a renamed, factorized pair (two MatMuls), as a low-rank pass would do
    w1 = numpy_helper.to_array(next(t for t in b.graph.initializer if t.name == "w1"))
    u, s, vt = np.linalg.svd(w1, full_matrices=False)
    b.graph.initializer.remove(next(t for t in b.graph.initializer if t.name == "w1"))
    b.graph.initializer.extend([numpy_helper.from_array((u[:, :4] * s[:4]).astype(np.float32), "w1_a"), numpy_helper.from_array(vt[:4].astype(np.float32), "w1_b")])
    b.graph.node.remove(b.graph.node[0])
    b.graph.node.insert(0, helper.make_node("MatMul", ["x", "w1_a"], ["t"], name="fc1_a"))
    b.graph.node.insert(1, helper.make_node("MatMul", ["t", "w1_b"], ["mm1"], name="fc1_b"))
    pa, pb = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(a, pa)
    onnx.save(b, pb)
    x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    rep = tmp_path / "r.json"
    code, _, err = invoke("eval", str(pa), str(pb), "--per-layer", "--data", str(tmp_path / "d.npz"), "--no-latency", "--report", str(rep))
    assert code == 0, err
    pl = _json(rep)["evaluation"]["per_layer"]
    assert [u["name"] for u in pl["weights_unmatched"]] == ["w1"]
    assert {w["name"] for w in pl["weights"]} == {"b1", "w2", "b2"}
    acts = {x["name"]: x for x in pl["activations"]}
    assert acts["mm1"]["rel_error"] > 0.1  # rank 4 of 16: a real error, found by name
    code, _, _ = invoke("eval", str(pa), str(pb), "--per-layer", "--no-latency", "--report", str(rep))
    pl = _json(rep)["evaluation"]["per_layer"]
    assert pl["activations"] is None and "real data" in pl["activations_note"]


# --------------------------------------------------------------------------- recipe-driven evaluation


def test_recipe_evaluate_section_paths_relative_to_recipe(tmp_path: Path):
    d = tmp_path / "recipes"
    d.mkdir()
    shutil.copy(MLP / "eval.npz", d / "eval.npz")
    r = d / "r.yaml"
    r.write_text("version: 1\npasses: [cast-fp16]\nevaluate:\n  data: eval.npz\n  samples: 100\n  latency: false\ngates:\n  min_top1_agreement: 0.99\n")
    rep = tmp_path / "rep.json"
    code, _, err = invoke("compress", str(MLP / "model.onnx"), "-r", str(r), "-o", str(tmp_path / "o.onnx"), "--report", str(rep), "-q")
    assert code == 0, err
    rj = _json(rep)
    assert rj["evaluation"]["data"]["samples"] == 100 and rj["evaluation"]["data"]["source"] == str(d / "eval.npz")
    assert rj["gates"]["verdict"] == "pass" and rj["settings"]["evaluate"]["latency"] is False


def test_compress_without_gates_or_eval_flags_does_not_evaluate(tmp_path: Path, cast_recipe: Path):
    rep = tmp_path / "r.json"
    code, _, err = invoke("compress", str(MLP / "model.onnx"), "-r", str(cast_recipe), "-o", str(tmp_path / "o.onnx"), "--report", str(rep))
    assert code == 0, err
    r = _json(rep)
    assert r["evaluation"] is None and r["gates"] is None and "evaluating" not in err


# --------------------------------------------------------------------------- report


def test_report_schema_and_determinism(tmp_path: Path, cast_recipe: Path):
    reports = []
    for i in range(2):
        rep = tmp_path / f"r{i}.json"
        code, _, err = invoke("compress", str(MLP / "model.onnx"), "-r", str(cast_recipe), "-o", str(tmp_path / "o.onnx"),
                              "--data", str(MLP / "eval.npz"), "--runs", "3", "--warmup", "1", "--per-layer",
                              "--min-cosine", "0.99", "--max-latency-ratio", "100", "--report", str(rep), "-q", "--force")
        assert code == 0, err
        reports.append(_json(rep))
        (tmp_path / "o.onnx").unlink()
    a, b = reports
    assert list(a) == ["schema", "kind", "versions", "model", "recipe", "seed", "settings", "output", "size", "passes",
                       "evaluation", "gates", "environment", "timing"]
    assert a["schema"] == "onnxzip.report/1" and a["kind"] == "compress"
    assert a["model"]["files"][0]["sha256"] == a["model"]["sha256"]
    assert a["evaluation"]["latency"] and a["timing"]["total_seconds"] > 0
    assert a != b  # timings differ...
    assert without_timings(a) == without_timings(b)  # ...and nothing else
    assert "latency" not in without_timings(a)["evaluation"]
    assert without_timings(a)["evaluation"]["executed_ops"]["CPUExecutionProvider"]["original"]  # deterministic: kept
    assert without_timings(a)["gates"]["results"][0]["verdict"] == "pass"  # accuracy gates stay
    assert json.loads(to_json(a)) == a  # the JSON round-trips (after the inf -> "inf" mapping)


def test_markdown_fit_for_a_pr(tmp_path: Path, cast_recipe: Path):
    rep = tmp_path / "r.json"
    md = tmp_path / "r.md"
    code, _, err = invoke("compress", str(MLP / "model.onnx"), "-r", str(cast_recipe), "-o", str(tmp_path / "o.onnx"),
                          "--data", str(MLP / "eval.npz"), "--runs", "3", "--min-cosine", "0.99", "--report", str(rep), "--markdown", str(md))
    assert code == 0, err
    text = md.read_text()
    assert text == markdown(_json(rep)) or text.startswith("### onnxzip:")
    for piece in ("| original |", "| cast-fp16 |", "top-1 agreement", "| CPU | logits | 100.00%", "speedup", "| min_cosine | >= 0.99 |", "all gates passed"):
        assert piece in text, piece


def test_per_layer_reaches_weights_inside_subgraphs(tmp_path: Path, cast_recipe: Path):
    d = SAMPLES / "if_subgraph"
    rep = tmp_path / "r.json"
    code, _, err = invoke("compress", str(d / "model.onnx"), "-r", str(cast_recipe), "-o", str(tmp_path / "o.onnx"),
                          "--per-layer", "--no-latency", "--report", str(rep), "-q")
    assert code == 0, err
    pl = _json(rep)["evaluation"]["per_layer"]
    inner = [w for w in pl["weights"] if " (in " in w["name"]]
    assert len(inner) >= 4 and pl["weights_unmatched"] == []
    assert all(w["rel_error"] < 1e-3 for w in inner)


# --------------------------------------------------------------------------- executed ops


TRANSFORMER = SAMPLES / "transformer"


def test_int8_static_transformer_report_has_executed_ops(tmp_path: Path):
    rep, md = tmp_path / "r.json", tmp_path / "r.md"
    code, _, err = invoke("compress", str(TRANSFORMER / "model.onnx"), "-r", "int8-static", "-o", str(tmp_path / "o.onnx"),
                          "--data", str(TRANSFORMER / "eval.npz"), "--calib", str(TRANSFORMER / "calib.npz"), "--samples", "32",
                          "--runs", "40", "--report", str(rep), "--markdown", str(md))
    assert code == 0, err
    ev = _json(rep)["evaluation"]
    x = ev["executed_ops"]["CPUExecutionProvider"]
    assert set(x) == {"original", "compressed", "difference", "findings", "batch"} and x["batch"] == 1
    assert x["original"].get("QuantizeLinear", 0) == 0 and x["compressed"]["QuantizeLinear"] > 0
    assert x["difference"]["QuantizeLinear"] == x["compressed"]["QuantizeLinear"]
    q = next(f for f in x["findings"] if f["op"] == "QuantizeLinear")
    assert q["count"] == x["compressed"]["QuantizeLinear"] and 0 < len(q["nodes"]) <= 5 and "activation" in q["reason"]
    lat = ev["latency"]["CPUExecutionProvider"]
    assert lat["slower"] == (lat["latency_ratio"] > 1 + max(0.05, lat["latency_ratio_noise"] or 0))
    assert (lat["explanation"] is None) == (not lat["slower"])
    if lat["slower"]:
        assert "QuantizeLinear" in lat["explanation"]
    assert f"{q['count']} QuantizeLinear (" in err and "Traceback" not in err
    assert f"{q['count']} QuantizeLinear (" in md.read_text()


def test_executed_ops_recorded_without_latency(tmp_path: Path):
    rep = tmp_path / "r.json"
    code, _, err = invoke("eval", str(MLP / "model.onnx"), str(MLP / "model.onnx"), "--no-latency", "--samples", "8", "--report", str(rep))
    assert code == 0, err
    ev = _json(rep)["evaluation"]
    assert ev["latency"] is None
    x = ev["executed_ops"]["CPUExecutionProvider"]
    assert x["findings"] == [] and x["difference"] == {} and x["original"] == x["compressed"] and x["original"]
    assert "slower" not in err


def test_single_model_has_no_executed_ops(tmp_path: Path):
    rep = tmp_path / "r.json"
    code, _, err = invoke("eval", str(MLP / "model.onnx"), "--no-latency", "--samples", "8", "--report", str(rep))
    assert code == 0, err
    assert _json(rep)["evaluation"]["executed_ops"] is None


def _report_with(executed: dict, latency: dict | None) -> dict:
    return {
        "schema": "onnxzip.report/1", "kind": "eval", "versions": {"onnxzip": "0", "onnxruntime": "0"},
        "model": {"path": "a.onnx"}, "output": {"path": "b.onnx"}, "recipe": None, "passes": [],
        "size": {"original_bytes": 10, "stored_bytes": 5, "deployable_bytes": 5, "ratio": 2.0, "deployable_ratio": 2.0},
        "evaluation": {"providers": [], "data": {"synthetic": True, "samples": 1}, "accuracy": {}, "per_layer": None,
                       "latency": latency, "executed_ops": {"CPUExecutionProvider": executed}},
        "gates": None, "environment": {"cpu": "x"},
    }


_QL = {"op": "QuantizeLinear", "count": 4, "nodes": ["q0", "q1", "q2", "q3"], "reason": "quantizes an activation on every call"}


def _lat(ratio: float, slower: bool) -> dict:
    return {"CPUExecutionProvider": {"latency_ratio": ratio, "latency_ratio_noise": 0.01, "slower": slower}}


def test_slowdown_section_in_summary_and_markdown():
    from rich.console import Console

    from onnxzip.report import print_summary, slowdown_lines

    same = {"original": {"MatMul": 1}, "compressed": {"MatMul": 1}, "difference": {}, "findings": []}
    costly = {"original": {"MatMul": 1}, "compressed": {"QuantizeLinear": 4}, "difference": {"QuantizeLinear": 4, "MatMul": -1}, "findings": [_QL]}
    assert slowdown_lines(_report_with(same, _lat(1.0, False))) == []
    lines = slowdown_lines(_report_with(costly, _lat(1.13, True)))
    assert lines == ["slower than the original on CPU: p50 x1.13 (noise allowance 5%):",
                     "  4 QuantizeLinear (q0, q1, q2, ...): quantizes an activation on every call"]
    lines = slowdown_lines(_report_with(costly, None))  # not timed: the static expectation alone
    assert lines[0].startswith("ops expected to be slower than float on CPU") and "4 QuantizeLinear" in lines[1]
    lines = slowdown_lines(_report_with(costly, _lat(0.96, False)))  # timed and not slower: said so, ops still named
    assert "measured p50 x0.96, not slower here" in lines[0] and "4 QuantizeLinear" in lines[1]
    lines = slowdown_lines(_report_with(same, _lat(1.2, True)))
    assert len(lines) == 1 and "same executed ops" in lines[0]
    r = _report_with(costly, None)
    r["evaluation"]["latency"] = None
    text = markdown(r)
    assert "- ops expected to be slower than float on CPU" in text and "  - 4 QuantizeLinear (q0, q1, q2, ...)" in text
    console = Console(record=True, width=300, no_color=True)
    print_summary(_report_with(costly, None), console)
    assert "4 QuantizeLinear (q0, q1, q2, ...): quantizes an activation" in console.export_text()
