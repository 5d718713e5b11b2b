"""Gates: parsing, judging constructed reports, recipe validation, and every gate passing and
failing through the CLI with the right exit code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import SAMPLES, assert_one_error, invoke
from onnxzip.errors import RecipeError
from onnxzip.gates import (
    Gate,
    GateValueError,
    evaluate_gates,
    exit_code,
    make_gate,
    merge,
    parse_expression,
    parse_flag,
)
from onnxzip.recipe import parse_recipe

MLP = SAMPLES / "digits_mlp"


# --------------------------------------------------------------------------- parsing


def test_parse_expression_and_flag():
    assert parse_expression(">= 0.95") == (">=", 0.95)
    assert parse_expression("<1e-3") == ("<", 1e-3)
    assert parse_expression("== -2") == ("==", -2.0)
    for bad in ("0.95", "=> 1", ">= x", 0.95):
        with pytest.raises(ValueError):
            parse_expression(bad)
    assert parse_flag("box_f1>=0.95") == ("box_f1", ">= 0.95")
    assert parse_flag("box_f1: <= 3") == ("box_f1", "<= 3")
    with pytest.raises(ValueError):
        parse_flag(">= 3")


def test_make_gate_ranges_and_kinds():
    g = make_gate("min_cosine", 0.99)
    assert (g.metric, g.op, g.limit, g.custom) == ("cosine", ">=", 0.99, False)
    assert make_gate("max_latency_ratio", 1.2).needs_latency()
    assert not make_gate("min_compression", 2).needs_evaluation()
    for name, value in (("min_cosine", 1.5), ("max_accuracy_drop", -0.1), ("min_top1_agreement", "high"), ("box_f1", 0.9)):
        with pytest.raises(GateValueError):
            make_gate(name, value)
    c = make_gate("box_f1", ">= 0.9")
    assert (c.metric, c.op, c.limit, c.custom) == ("box_f1", ">=", 0.9, True)


def test_flags_replace_recipe_gates_of_the_same_name():
    recipe = [make_gate("min_cosine", 0.999), make_gate("min_compression", 2)]
    flags = [make_gate("min_cosine", 0.5, source="flag"), make_gate("snr_db", ">= 20", source="flag")]
    got = {g.name: g for g in merge(recipe, flags)}
    assert got["min_cosine"].limit == 0.5 and got["min_cosine"].source == "flag"
    assert set(got) == {"min_cosine", "min_compression", "snr_db"}


# --------------------------------------------------------------------------- judging


def _report(*, synthetic=False, labels=True, latency=True, outputs=None, providers=("CPUExecutionProvider",)):
    outs = outputs or {
        "logits": {"top1_agreement": 0.98, "cosine": 0.995, "snr_db": 30.0, "max_abs_error": 0.1, "mean_abs_error": 0.01,
                   "top1_accuracy_original": 0.97, "top1_accuracy": 0.95, "accuracy_drop": 0.02},
        "embedding": {"cosine": 0.9, "snr_db": 12.0, "max_abs_error": 0.5, "mean_abs_error": 0.05},
    }
    return {
        "size": {"ratio": 3.0, "deployable_ratio": 2.0},
        "evaluation": {
            "data": {"synthetic": synthetic, "labels": labels},
            "accuracy": {p: {"outputs": outs, "metrics": {"box_f1": 0.93}} for p in providers},
            "latency": {p: {"latency_ratio": 1.25 if "CUDA" in p else 0.8, "speedup": 0.8 if "CUDA" in p else 1.25} for p in providers} if latency else None,
        },
    }


def _judge(gates, report, **kw):
    return evaluate_gates([make_gate(k, v) for k, v in gates.items()], report, **kw)


def test_worst_value_over_outputs_and_providers():
    rep = _report(providers=("CPUExecutionProvider", "CUDAExecutionProvider"))
    s = _judge({"min_cosine": 0.95, "max_latency_ratio": 1.1, "min_compression": 2.5, "max_abs_error": "<= 1"}, rep)
    by = {r["name"]: r for r in s["results"]}
    assert by["min_cosine"]["value"] == 0.9 and by["min_cosine"]["subject"].startswith("embedding")
    assert by["min_cosine"]["verdict"] == "fail"
    assert by["max_latency_ratio"]["value"] == 1.25 and by["max_latency_ratio"]["subject"] == "CUDAExecutionProvider"
    assert by["max_latency_ratio"]["verdict"] == "fail"
    assert by["min_compression"]["verdict"] == "pass"
    assert by["max_abs_error"]["value"] == 0.5 and by["max_abs_error"]["verdict"] == "pass"
    assert s["verdict"] == "fail" and s["failed"] == ["min_cosine", "max_latency_ratio"]
    assert exit_code(s) == 1


def test_pass_and_custom_metric():
    s = _judge({"min_top1_agreement": 0.97, "max_accuracy_drop": 0.03, "box_f1": ">= 0.9", "speedup": "> 1"}, _report())
    assert s["verdict"] == "pass" and exit_code(s) == 0
    assert {r["name"]: r["value"] for r in s["results"]} == {"min_top1_agreement": 0.98, "max_accuracy_drop": 0.02, "box_f1": 0.93, "speedup": 1.25}


def test_not_evaluated_is_reported_not_passed():
    s = _judge({"max_accuracy_drop": 0.01, "max_latency_ratio": 2, "box_f2": ">= 1"}, _report(labels=False, latency=False, outputs={"y": {"cosine": 1.0}}))
    by = {r["name"]: r for r in s["results"]}
    assert all(r["verdict"] == "not_evaluated" for r in s["results"])
    assert "labels" in by["max_accuracy_drop"]["reason"]
    assert "latency" in by["max_latency_ratio"]["reason"]
    assert "box_f1" in by["box_f2"]["reason"]  # did you mean
    assert s["verdict"] == "incomplete" and exit_code(s) == 0
    strict = _judge({"max_accuracy_drop": 0.01}, _report(labels=False), strict=True)
    assert strict["verdict"] == "fail" and exit_code(strict) == 1


def test_top1_gates_not_evaluated_on_generated_inputs():
    s = _judge({"min_top1_agreement": 0.5, "min_cosine": 0.5}, _report(synthetic=True))
    by = {r["name"]: r for r in s["results"]}
    assert by["min_top1_agreement"]["verdict"] == "not_evaluated" and "generated" in by["min_top1_agreement"]["reason"]
    assert by["min_cosine"]["verdict"] == "pass" and by["min_cosine"]["reason"] == "measured on generated inputs"


def test_nan_never_passes_and_not_enforced():
    rep = _report(outputs={"y": {"cosine": math.nan}})
    s = _judge({"min_cosine": -1.0}, rep)
    assert s["results"][0]["verdict"] == "fail"
    s = _judge({"min_cosine": 0.5}, rep, enforce=False)
    assert s["verdict"] == "fail" and exit_code(s) == 0


def test_no_evaluation_only_size_gates_judged():
    s = evaluate_gates([make_gate("min_compression", 2), make_gate("min_cosine", 0.9)], {"size": {"ratio": 2.5}, "evaluation": None})
    assert [r["verdict"] for r in s["results"]] == ["pass", "not_evaluated"]


# --------------------------------------------------------------------------- recipe validation


@pytest.mark.parametrize(
    ("gates", "line_msg"),
    [
        ("  min_cosin: 0.9\n", "did you mean `min_cosine`"),
        ("  min_cosine: 1.5\n", "out of range"),
        ("  snr_db: 30\n", "needs a comparison"),
        ("  box_f1: '>= 0.9'\n", "evaluate.metrics"),
        ("  min_compression: lots\n", "takes a number"),
    ],
)
def test_recipe_gate_errors_name_file_and_line(gates: str, line_msg: str):
    text = "version: 1\npasses: [cast-fp16]\ngates:\n" + gates
    with pytest.raises(RecipeError) as e:
        parse_recipe(text, "r.yaml")
    msg = e.value.render()
    assert "r.yaml:4:" in msg and line_msg in msg


def test_recipe_evaluate_errors_name_file_and_line():
    bad = {
        "  runz: 3\n": "did you mean `runs`",
        "  threads: -1\n": "integer >= 0",
        "  providers: [cpu, 'no such']\n": "not a provider name",
        "  metrics: [missing.py:f]\n": "not found",
        "  input_shapes: {x: 1xq}\n": "positive sizes",
        "  latency: maybe\n": "true or false",
    }
    for body, msg in bad.items():
        with pytest.raises(RecipeError) as e:
            parse_recipe("version: 1\npasses: [cast-fp16]\nevaluate:\n" + body, "r.yaml")
        assert "r.yaml:4:" in e.value.render() and msg in e.value.render(), body


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def degraded(tmp_path_factory) -> Path:
    """digits_mlp with noise on its weights: measurably worse, same interface."""
    m = onnx.load(MLP / "model.onnx")
    rng = np.random.default_rng(0)
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim == 2:
            t.CopyFrom(numpy_helper.from_array((a + 0.6 * a.std() * rng.standard_normal(a.shape)).astype(a.dtype), t.name))
    p = tmp_path_factory.mktemp("deg") / "degraded.onnx"
    onnx.save(m, p)
    return p


def _eval(degraded: Path, *flags: str, data: Path = MLP / "eval.npz"):
    return invoke("eval", str(MLP / "model.onnx"), str(degraded), "--data", str(data), "--no-latency", *flags)


def test_degraded_model_is_measurably_worse(degraded: Path, tmp_path: Path):
    rep = tmp_path / "r.json"
    code, _, err = _eval(degraded, "--report", str(rep))
    assert code == 0, err
    m = json.loads(rep.read_text())["evaluation"]["accuracy"]["CPUExecutionProvider"]["outputs"]["logits"]
    assert 0.5 < m["top1_agreement"] < 0.99 and m["accuracy_drop"] > 0.01 and 0.5 < m["cosine"] < 0.999


@pytest.mark.parametrize(
    ("flag", "passing", "failing"),
    [
        ("--max-accuracy-drop", "0.5", "0.01"),
        ("--min-top1-agreement", "0.5", "0.99"),
        ("--min-cosine", "0.5", "0.999"),
        ("--gate", "snr_db>=1", "snr_db>=60"),
    ],
)
def test_accuracy_gates_pass_and_fail(degraded: Path, tmp_path: Path, flag: str, passing: str, failing: str):
    code, _, err = _eval(degraded, flag, passing)
    assert code == 0, err
    assert "error:" not in err
    rep = tmp_path / "r.json"
    code, stdout, err = _eval(degraded, flag, failing, "--report", str(rep), "--json")
    assert code == 1, err
    assert_one_error(err)
    name = flag.removeprefix("--").replace("-", "_") if flag != "--gate" else "snr_db"
    assert f"gate `{name}` failed" in err
    assert json.loads(rep.read_text())["gates"]["failed"] == [name]  # the report is still written
    assert json.loads(stdout)["gates"]["verdict"] == "fail"


def test_latency_gate_pass_and_fail(degraded: Path):
    code, _, err = invoke("eval", str(MLP / "model.onnx"), str(degraded), "--runs", "5", "--warmup", "1", "--max-latency-ratio", "1000")
    assert code == 0, err
    code, _, err = invoke("eval", str(MLP / "model.onnx"), str(degraded), "--runs", "5", "--warmup", "1", "--max-latency-ratio", "0.000001")
    assert code == 1 and "gate `max_latency_ratio` failed" in err


def test_min_compression_through_compress(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses: [cast-fp16]\n")
    out, rep, md = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "r.md"
    code, _, err = invoke("compress", str(MLP / "model.onnx"), "-r", str(recipe), "-o", str(out), "--min-compression", "1.5", "-q")
    assert code == 0, err
    out.unlink()
    code, _, err = invoke("compress", str(MLP / "model.onnx"), "-r", str(recipe), "-o", str(out), "--min-compression", "3",
                          "--report", str(rep), "--markdown", str(md), "-q")
    assert code == 1
    assert_one_error(err)
    assert "gate `min_compression` failed" in err and "written" in err
    assert out.exists() and rep.exists() and "FAIL" in md.read_text()
    g = json.loads(rep.read_text())["gates"]
    assert g["results"][0]["value"] < 3 and g["results"][0]["verdict"] == "fail"
    assert json.loads(rep.read_text())["evaluation"] is None  # a size gate needs no evaluation


def test_recipe_gate_overridden_by_flag_and_no_gates(tmp_path: Path, degraded: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses: [cast-fp16]\ngates:\n  min_cosine: 0.9999\n")
    code, _, err = _eval(degraded, "-r", str(recipe))
    assert code == 1 and "min_cosine" in err
    code, _, err = _eval(degraded, "-r", str(recipe), "--min-cosine", "0.5")
    assert code == 0, err
    rep = tmp_path / "rep.json"
    code, _, err = _eval(degraded, "-r", str(recipe), "--no-gates", "--report", str(rep))
    assert code == 0 and "not enforced" in err
    g = json.loads(rep.read_text())["gates"]
    assert g["enforced"] is False and g["verdict"] == "fail"


def test_gate_without_labels_warns_and_strict_fails(tmp_path: Path, degraded: Path):
    with np.load(MLP / "eval.npz") as z:
        np.savez(tmp_path / "nolabels.npz", input=z["input"][:50])
    code, _, err = _eval(degraded, "--max-accuracy-drop", "0.5", data=tmp_path / "nolabels.npz")
    assert code == 0
    assert "warning: gate `max_accuracy_drop`" in err and "not evaluated" in err and "labels" in err
    code, _, err = _eval(degraded, "--max-accuracy-drop", "0.5", "--strict-gates", data=tmp_path / "nolabels.npz")
    assert code == 1 and "not evaluated" in err


def test_task_metric_gate_from_recipe(tmp_path: Path, degraded: Path):
    (tmp_path / "my_metrics.py").write_text(
        "import numpy as np\n"
        "def agree(original, compressed, labels):\n"
        "    a, b = original['logits'].argmax(-1), compressed['logits'].argmax(-1)\n"
        "    return {'my_agreement': float((a == b).mean()), 'n': float(len(a))}\n"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses: [cast-fp16]\nevaluate:\n  metrics: [my_metrics.py:agree]\ngates:\n  my_agreement: '>= 0.99'\n  n: '== 360'\n")
    rep = tmp_path / "rep.json"
    code, _, err = _eval(degraded, "-r", str(recipe), "--report", str(rep))
    assert code == 1 and "gate `my_agreement` failed" in err
    r = json.loads(rep.read_text())
    assert r["evaluation"]["accuracy"]["CPUExecutionProvider"]["metrics"]["n"] == 360.0
    assert [x["verdict"] for x in r["gates"]["results"]] == ["fail", "pass"]
    code, _, err = _eval(degraded, "-r", str(recipe), "--gate", "my_agreement>=0.5")
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (("--min-cosine", "3"), "out of range"),
        (("--gate", "snr_db"), "NAME>=VALUE"),
        (("--gate", "min_cosine>=0.5"), "built-in gate"),
        (("--gate", "snr_db>=lots"), "not a comparison"),
    ],
)
def test_bad_gate_flags_exit_2(degraded: Path, args: tuple[str, ...], msg: str):
    code, _, err = _eval(degraded, *args)
    assert code == 2
    assert_one_error(err)
    assert msg in err


def test_gate_flags_validated_before_any_work(tmp_path: Path):
    out = tmp_path / "o.onnx"
    code, _, err = invoke("compress", str(MLP / "model.onnx"), "-r", "fp16", "-o", str(out), "--min-top1-agreement", "2")
    assert code == 2 and not out.exists()
    assert_one_error(err)


def test_failed_gate_in_library_does_not_raise(tmp_path: Path):
    from onnxzip import compress

    res = compress(MLP / "model.onnx", parse_recipe("version: 1\npasses: [cast-fp16]\n", "r.yaml"), tmp_path / "o.onnx", gates=[Gate("min_compression", "compression", ">=", 9.0)])
    assert res.exit_code == 1 and res.gates["failed"] == ["min_compression"]
    assert (tmp_path / "o.onnx").exists()
