"""Batch mode: a directory of models (good, corrupt, unloadable, gate-failing) compressed into a
mirrored tree with per-model reports, a summary, resume, shards and workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SAMPLES, assert_one_error, invoke, make_mlp
from onnxzip.batch import find_models, parse_shard, take_shard, worst_exit
from onnxzip.errors import UsageError

GOOD = ["a/digits_mlp.onnx", "b/ext/model.onnx", "c/cnn.onnx"]


def _relu_only(path: Path) -> None:
    """No weights at all: nothing to compress, so a size gate fails."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def _ort_cannot_load(path: Path) -> None:
    m = make_mlp()
    m.graph.initializer.append(numpy_helper.from_array(np.ones(4, np.int64), "ints"))
    m.graph.node.append(helper.make_node("Add", ["y", "ints"], ["y2"], name="bad_add"))
    m.graph.output[0].name = "y2"
    onnx.save(m, path)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "models"
    (src / "a").mkdir(parents=True)
    (src / "b" / "ext").mkdir(parents=True)
    (src / "c").mkdir()
    (src / "broken").mkdir()
    shutil.copy(SAMPLES / "digits_mlp" / "model.onnx", src / "a" / "digits_mlp.onnx")
    for f in ("model.onnx", "model.onnx.data"):
        shutil.copy(SAMPLES / "external_data" / f, src / "b" / "ext" / f)
    shutil.copy(SAMPLES / "digits_cnn" / "model.onnx", src / "c" / "cnn.onnx")
    (src / "broken" / "corrupt.onnx").write_bytes(b"\x08\x07garbage, not a protobuf model")
    _relu_only(src / "noweights.onnx")
    _ort_cannot_load(src / "ortfail.onnx")
    (src / "notes.txt").write_text("not a model")
    recipe = tmp_path / "cast.yaml"
    recipe.write_text("version: 1\nname: cast\npasses: [cast-fp16]\n")
    return src, recipe


def _batch(src: Path, recipe: Path, out: Path, *flags: str):
    return invoke("compress", str(src), "-r", str(recipe), "-o", str(out), "--min-compression", "1.5", *flags)


def _summary(out: Path, name: str = "summary.json") -> dict:
    return json.loads((out / name).read_text())


def test_worst_exit_ranking_and_shards():
    assert worst_exit([0, 1, 2, 0]) == 2
    assert worst_exit([1, 101, 2]) == 101
    assert worst_exit([]) == 0
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    paths = [Path(f"m{i}.onnx") for i in range(7)]
    parts = [take_shard(paths, (k, 3)) for k in (1, 2, 3)]
    assert sorted(p for part in parts for p in part) == paths and sum(len(p) for p in parts) == 7


def test_batch_mixed_directory(tree, tmp_path: Path):
    src, recipe = tree
    out = tmp_path / "out"
    md = tmp_path / "batch.md"
    code, stdout, err = _batch(src, recipe, out, "--json", "--markdown", str(md))
    assert code == 2, err  # worst of ok (0), gate failed (1), bad input (2)
    s = _summary(out)
    assert json.loads(stdout) == s
    status = {m["path"]: (m["status"], m["exit_code"]) for m in s["models"]}
    assert status == {
        "a/digits_mlp.onnx": ("ok", 0),
        "b/ext/model.onnx": ("ok", 0),
        "broken/corrupt.onnx": ("failed", 2),
        "c/cnn.onnx": ("ok", 0),
        "noweights.onnx": ("gate_failed", 1),
        "ortfail.onnx": ("failed", 2),
    }
    assert [m["path"] for m in s["models"]] == sorted(status)  # sorted by relative path
    assert s["exit_code"] == 2 and s["totals"]["ok"] == 3 and s["totals"]["gate_failed"] == 1 and s["totals"]["failed"] == 2
    by = {m["path"]: m for m in s["models"]}
    assert "not a valid ONNX file" in by["broken/corrupt.onnx"]["error"]
    assert "onnxruntime cannot load" in by["ortfail.onnx"]["error"]
    assert by["noweights.onnx"]["failed_gates"] == ["min_compression"]
    # the tree is mirrored; reports next to outputs; nothing for failures
    for rel in [*GOOD, "noweights.onnx"]:
        o = out / rel
        assert o.exists() and o.with_name(o.stem + ".report.json").exists(), rel
        rep = json.loads(o.with_name(o.stem + ".report.json").read_text())
        assert rep["output"]["sha256"] and rep["gates"]["results"][0]["name"] == "min_compression"
    assert not (out / "broken" / "corrupt.onnx").exists() and not (out / "ortfail.onnx").exists()
    # external data was loaded and re-saved with the model
    ext = onnx.load(out / "b" / "ext" / "model.onnx")
    assert len(ext.graph.initializer) > 0
    assert (src / "b" / "ext" / "model.onnx.data").exists()  # the input is untouched
    assert (out / "summary.md").read_text() == md.read_text()
    assert "| noweights.onnx | gate failed |" in md.read_text()
    # plain progress lines (stderr is not a terminal here), the table and one line per failure
    assert "[1/6]" in err and "[6/6]" in err and "ETA" in err
    assert "`broken/corrupt.onnx`: " in err and "`noweights.onnx`: gate failed: min_compression" in err
    assert_one_error(err)
    assert "error: 2 failed, 1 missed a gate of 6 models" in err


def test_resume_skips_up_to_date_models(tree, tmp_path: Path):
    src, recipe = tree
    out = tmp_path / "out"
    assert _batch(src, recipe, out, "-q")[0] == 2
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.onnx")}
    code, _, err = _batch(src, recipe, out)
    assert code == 2  # the gate failure and the failures still count
    s = _summary(out)
    status = {m["path"]: m["status"] for m in s["models"]}
    assert [p for p, st in status.items() if st == "skipped"] == ["a/digits_mlp.onnx", "b/ext/model.onnx", "c/cnn.onnx", "noweights.onnx"]
    assert status["broken/corrupt.onnx"] == status["ortfail.onnx"] == "failed"  # failures are retried
    assert {m["path"]: m["exit_code"] for m in s["models"]}["noweights.onnx"] == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.onnx")} == before  # nothing rewritten
    assert "up to date" in err
    # a changed input is recompressed
    shutil.copy(SAMPLES / "transformer" / "model.onnx", src / "c" / "cnn.onnx")
    _batch(src, recipe, out, "-q")
    assert {m["path"]: m["status"] for m in _summary(out)["models"]}["c/cnn.onnx"] == "ok"
    # other settings (a different gate) or --force: recompressed
    code, _, _ = invoke("compress", str(src), "-r", str(recipe), "-o", str(out), "--min-compression", "1.2", "-q")
    assert code == 2
    assert all(m["status"] != "skipped" for m in _summary(out)["models"])
    code, _, _ = invoke("compress", str(src), "-r", str(recipe), "-o", str(out), "--min-compression", "1.2", "-q", "--force")
    assert all(m["status"] != "skipped" for m in _summary(out)["models"])


def test_shards_partition_the_models(tree, tmp_path: Path):
    src, recipe = tree
    out = tmp_path / "out"
    seen = []
    for k in (1, 2, 3):
        _batch(src, recipe, out, "--shard", f"{k}/3", "-q")
        s = _summary(out, f"summary-{k}-of-3.json")
        assert s["shard"] == f"{k}/3"
        seen.append([m["path"] for m in s["models"]])
    assert sorted(p for part in seen for p in part) == [p.as_posix() for p in find_models(src)]
    assert all(len(set(a) & set(b)) == 0 for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert not (out / "summary.json").exists()


def test_workers_give_the_same_outputs(tree, tmp_path: Path):
    src, recipe = tree
    for p in (src / "broken", src / "ortfail.onnx", src / "noweights.onnx"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    one, two = tmp_path / "one", tmp_path / "two"
    code1, _, err1 = _batch(src, recipe, one, "-q")
    code2, _, err2 = _batch(src, recipe, two, "--workers", "2", "-q")
    assert code1 == code2 == 0, (err1, err2)
    for rel in GOOD:
        assert (one / rel).read_bytes() == (two / rel).read_bytes()
    strip = lambda s: [{k: v for k, v in m.items() if k != "seconds"} for m in s["models"]]  # noqa: E731
    assert strip(_summary(one)) == strip(_summary(two))


def test_fail_fast_stops_at_the_first_failure(tree, tmp_path: Path):
    src, recipe = tree
    out = tmp_path / "out"
    code, _, _ = _batch(src, recipe, out, "--fail-fast", "-q")
    assert code == 2
    status = {m["path"]: m["status"] for m in _summary(out)["models"]}
    assert status["broken/corrupt.onnx"] == "failed"
    assert [p for p, st in status.items() if st == "not_run"] == ["c/cnn.onnx", "noweights.onnx", "ortfail.onnx"]


def test_per_model_data_and_a_bad_data_file(tree, tmp_path: Path):
    src, recipe = tree
    shutil.copy(SAMPLES / "digits_mlp" / "eval.npz", src / "a" / "eval.npz")
    np.savez(src / "c" / "eval.npz", input=np.zeros((5, 64), np.float32))  # wrong shape for the CNN
    out = tmp_path / "out"
    code, _, _ = invoke("compress", str(src), "-r", str(recipe), "-o", str(out), "--data", "eval.npz", "--no-latency", "-q")
    assert code == 2
    by = {m["path"]: m for m in _summary(out)["models"]}
    assert by["a/digits_mlp.onnx"]["data"] == "eval.npz" and by["a/digits_mlp.onnx"]["status"] == "ok"
    assert by["b/ext/model.onnx"]["data"] == "synthetic"
    assert by["c/cnn.onnx"]["status"] == "failed" and "input `input` has shape float32[5x64], the model expects float32[Nx1x8x8]" in by["c/cnn.onnx"]["error"]
    rep = json.loads((out / "a" / "digits_mlp.report.json").read_text())
    assert rep["evaluation"]["data"]["samples"] == 360


@pytest.mark.parametrize("case", ["inside", "same", "empty", "report_flag", "no_data_anywhere", "bad_shard"])
def test_bad_batch_usage_exit_2(tree, tmp_path: Path, case: str):
    src, recipe = tree
    args = ["compress", str(src), "-r", str(recipe), "-o", str(tmp_path / "out")]
    if case == "inside":
        args[5] = str(src / "out")
    elif case == "same":
        args[5] = str(src)
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args[1] = str(tmp_path / "empty")
    elif case == "report_flag":
        args += ["--report", str(tmp_path / "r.json")]
    elif case == "no_data_anywhere":
        args += ["--data", "eval.npz"]
    elif case == "bad_shard":
        args += ["--shard", "3/2"]
    code, _, err = invoke(*args)
    assert code == 2, err
    assert_one_error(err)
    assert not (src / "out").exists() and not (tmp_path / "out" / "summary.json").exists()
    if case == "empty":
        assert "no .onnx models" in err


def test_batch_flags_on_a_single_model_exit_2(tmp_path: Path):
    code, _, err = invoke("compress", str(SAMPLES / "digits_mlp" / "model.onnx"), "-r", "fp16", "-o", str(tmp_path / "o.onnx"), "--workers", "2")
    assert code == 2
    assert_one_error(err)
    assert "batch mode" in err
