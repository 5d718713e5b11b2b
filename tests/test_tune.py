"""`onnxzip tune`: the budget holds on held-out data, the recipe reproduces the file byte
for byte, impossible budgets exit 1 with the best figure, the knapsack is exact."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SAMPLES, assert_one_error, invoke, load_npz, run

from onnxzip import model as M
from onnxzip.tune import Option, budget_gates, knapsack, parse_budget

CNN = SAMPLES / "digits_cnn"
# A small grid keeps the test fast; deep-compression exercises simplify (run once), prune with
# a global scope turned per layer, k-means, cast-fp16 `all_float` and Huffman coding.
GRID = ("--candidates", "quantize.bits=8,4,3", "--candidates", "prune.sparsity=0.5,0.8")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    out, model_out = d / "tuned.yaml", d / "tuned.onnx"
    code, stdout, stderr = invoke(
        "tune", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "deep-compression",
        "--budget", "top1_agreement>=0.99", "-o", str(out), "--model-out", str(model_out), "--json", *GRID,
    )
    assert code == 0, stderr
    return {"dir": d, "recipe": out, "model": model_out, "result": json.loads(stdout), "stderr": stderr}


def _holdout_indices(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    # the documented split: a permutation seeded by (recipe seed, sample count); the first part is held out
    perm = np.random.default_rng([seed, n]).permutation(n)
    return np.sort(perm[: round(fraction * n)])


def test_budget_holds_on_the_held_out_split(tuned):
    res = tuned["result"]
    assert res["kind"] == "tune" and res["budget"] == [{"metric": "top1_agreement", "op": ">=", "limit": 0.99}]
    assert res["result"]["holdout"]["samples"] == 108 and res["result"]["choose"]["samples"] == 252
    assert res["result"]["holdout"]["top1_agreement"] >= 0.99
    assert res["result"]["choose"]["top1_agreement"] >= 0.99
    # measured again here, independently of tune's code: argmax agreement on the held-out samples
    feeds = load_npz(CNN / "eval.npz")
    idx = _holdout_indices(360, 0.3)
    x = {"input": feeds["input"][idx]}
    a = np.argmax(run(M.load_model(CNN / "model.onnx"), x)[0], -1)
    b = np.argmax(run(tuned["model"], x)[0], -1)
    assert np.mean(a == b) >= 0.99
    assert np.mean(a == b) == pytest.approx(res["result"]["holdout"]["top1_agreement"])


def test_tuned_model_is_smaller_than_the_mildest_setting(tuned):
    res = tuned["result"]
    assert res["result"]["bytes"] == tuned["model"].stat().st_size
    assert res["result"]["bytes"] < res["mildest"]["bytes"] / 3  # the CNN compresses well within 0.99
    assert res["result"]["ratio"] > 3
    assert {L["name"] for L in res["layers"]} and all(L["setting"] for L in res["layers"])


def test_compress_with_the_tuned_recipe_reproduces_the_file(tuned):
    again = tuned["dir"] / "again.onnx"
    code, _, stderr = invoke("compress", str(CNN / "model.onnx"), "-r", str(tuned["recipe"]), "-o", str(again), "-q", "--no-eval")
    assert code == 0, stderr
    assert again.read_bytes() == tuned["model"].read_bytes()
    assert M.model_hash(again) == tuned["result"]["model_sha256"]
    assert f"sha256 {tuned['result']['model_sha256']}" in tuned["recipe"].read_text()


def test_tuned_recipe_validates_and_carries_its_provenance(tuned):
    code, _, stderr = invoke("validate", str(tuned["recipe"]))
    assert code == 0, stderr
    text = tuned["recipe"].read_text()
    header = [ln for ln in text.splitlines() if ln.startswith("#")]
    joined = "\n".join(header)
    for needle in ("budget: top1_agreement >= 0.99", "data: eval.npz (sha256 ", "base recipe: deep-compression", "onnxzip 0.1.0", "held out"):
        assert needle in joined
    assert M.model_hash(CNN / "eval.npz") in joined
    doc = yaml.safe_load(text)
    assert doc["gates"]["min_top1_agreement"] == 0.99
    quant = next(p["quantize"] for p in doc["passes"] if "quantize" in p)
    names = {L["name"] for L in tuned["result"]["layers"]}
    # every layer has an explicit override in the weight passes that target it
    assert names <= set(quant["overrides"])
    assert all(v.get("skip") or "bits" in v for v in quant["overrides"].values())


def test_tune_is_deterministic(tuned, tmp_path: Path):
    out = tmp_path / "t2.yaml"
    code, _, stderr = invoke(
        "tune", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "deep-compression",
        "--budget", "top1_agreement>=0.99", "-o", str(out), "-q", *GRID,
    )
    assert code == 0, stderr
    assert out.read_text() == tuned["recipe"].read_text()


def test_impossible_budget_exits_1_with_the_best_figure(tmp_path: Path):
    out = tmp_path / "t.yaml"
    code, stdout, stderr = invoke(
        "tune", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "kmeans-5bit",
        "--budget", "top1_agreement>1", "-o", str(out), "--candidates", "quantize.bits=4",
    )
    assert code == 1, stderr
    assert "cannot be met" in stderr
    assert "top1_agreement = 1 on the choose split, 1 held out" in stderr  # the best achievable figure
    assert_one_error(stderr)
    assert not out.exists() and stdout == ""


def test_time_limit_returns_a_recipe_that_meets_the_budget(tmp_path: Path):
    from onnxzip.tune import tune

    out = tmp_path / "t.yaml"
    # a limit already spent when the sweep starts: the best verified choice is every layer off
    res = tune(CNN / "model.onnx", "kmeans-5bit", CNN / "eval.npz", "cosine>=0.999", out, time_limit=1e-3)
    assert res.timed_out
    assert res.holdout.worst("cosine") >= 0.999 and res.choose.worst("cosine") >= 0.999
    assert res.stored_bytes <= res.mildest["bytes"]
    assert "(stopped by the time limit)" in out.read_text()
    code, stdout, stderr = invoke(
        "tune", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "kmeans-5bit",
        "--budget", "cosine>=0.999", "-o", str(tmp_path / "t2.yaml"), "--time-limit", "1", "--json",
    )
    assert code == 0, stderr
    assert json.loads(stdout)["result"]["holdout"]["cosine"] >= 0.999


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--budget", "top1_agreement>=0.99", "--objective", "speed"], "objective"),
        (["--budget", "compression>=4"], "minimizes rather than bounds"),
        (["--budget", "top1 agreement"], "--budget"),
        (["--budget", "box_f1>=0.9"], "not measured"),
        (["--budget", "top1_agreement>=0.99", "--holdout", "0.99"], "holdout"),
    ],
)
def test_usage_errors_exit_2(args: list[str], msg: str, tmp_path: Path):
    code, _, stderr = invoke("tune", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "kmeans-5bit", "-o", str(tmp_path / "t.yaml"), *args)
    assert code == 2, stderr
    assert msg in stderr


def test_parse_budget_forms():
    g = parse_budget("top1_agreement>=0.99")
    assert (g.metric, g.op, g.limit) == ("top1_agreement", ">=", 0.99)
    g = parse_budget("min_cosine=0.995")
    assert (g.metric, g.op, g.limit) == ("cosine", ">=", 0.995)
    g = parse_budget("accuracy_drop<=0.01")
    assert budget_gates([g]) == {"max_accuracy_drop": 0.01}
    assert budget_gates([parse_budget("snr_db>=30")]) == {"snr_db": ">= 30"}


def test_knapsack_is_exact_on_small_problems():
    rng = np.random.default_rng(0)
    for _ in range(30):
        layers = []
        for _ in range(4):
            extra = [Option(None, float(rng.integers(1, 100)), float(rng.integers(1, 50))) for _ in range(int(rng.integers(1, 4)))]
            layers.append([Option(None, 0.0, 0.0), *extra])
        cap = float(rng.integers(10, 120))
        picks = knapsack(layers, cap, resolution=int(cap))  # integer costs: exact at one unit per bucket
        best = max(
            (sum(layers[i][j].value for i, j in enumerate(c)), c)
            for c in itertools.product(*(range(len(o)) for o in layers))
            if sum(layers[i][j].cost for i, j in enumerate(c)) <= cap
        )
        assert sum(layers[i][j].value for i, j in enumerate(picks)) == best[0]
        assert sum(layers[i][j].cost for i, j in enumerate(picks)) <= cap


def test_relative_paths_and_task_metric_budget_survive_another_folder(tmp_path: Path):
    src, dst = tmp_path / "recipes", tmp_path / "out" / "deep"
    src.mkdir()
    dst.mkdir(parents=True)
    (src / "agree.py").write_text(
        "import numpy as np\n"
        "def agree(original, compressed, labels):\n"
        "    return {'my_agree': float(np.mean(np.argmax(original['logits'], -1) == np.argmax(compressed['logits'], -1)))}\n"
    )
    (src / "base.yaml").write_text(
        "version: 1\nname: base\nevaluate: {metrics: [agree.py:agree], latency: false}\n"
        "passes:\n  - quantize: {method: kmeans, bits: 5, min_params: 256}\n"
    )
    out, model_out = dst / "tuned.yaml", dst / "tuned.onnx"
    code, stdout, stderr = invoke(
        "tune", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", str(src / "base.yaml"),
        "--budget", "my_agree>=0.99", "-o", str(out), "--model-out", str(model_out), "--candidates", "quantize.bits=8,3", "--json",
    )
    assert code == 0, stderr
    res = json.loads(stdout)
    assert res["result"]["holdout"]["my_agree"] >= 0.99
    doc = yaml.safe_load(out.read_text())
    assert doc["evaluate"]["metrics"] == ["../../recipes/agree.py:agree"]  # still the same file, from the new folder
    assert doc["gates"]["my_agree"] == ">= 0.99"  # the recipe names the metric's code, so the budget is a gate
    code, _, stderr = invoke("validate", str(out))
    assert code == 0, stderr
    again = tmp_path / "again.onnx"
    code, _, stderr = invoke("compress", str(CNN / "model.onnx"), "-r", str(out), "-o", str(again), "--no-eval", "-q")
    assert code == 0, stderr
    assert again.read_bytes() == model_out.read_bytes()


def test_latency_objective_reports_measured_latency(tmp_path: Path):
    mlp = SAMPLES / "digits_mlp"
    code, stdout, stderr = invoke(
        "tune", str(mlp / "model.onnx"), "--data", str(mlp / "eval.npz"), "-r", "int8-dynamic",
        "--budget", "top1_agreement>=0.99", "-o", str(tmp_path / "t.yaml"), "--objective", "latency", "--json",
    )
    assert code == 0, stderr
    res = json.loads(stdout)
    assert res["objective"] == "latency"
    assert res["result"]["latency_ms"] > 0 and res["result"]["original_latency_ms"] > 0
    assert res["result"]["holdout"]["top1_agreement"] >= 0.99
    # a setting is chosen only for the time it saves alone; none that slows the model down
    assert all(L["setting"] == "off" or L["saved_alone"] > 0 for L in res["layers"])
