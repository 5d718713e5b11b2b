"""End-to-end CLI: exit codes, files written, report contents, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SAMPLES, assert_one_error, cli, feeds_for, invoke, make_mlp, run


def test_compress_fp16_end_to_end(tmp_path: Path):
    mlp_path = tmp_path / "big_mlp.onnx"
    onnx.save(make_mlp(k=64, h=128, n=10), mlp_path)
    out = tmp_path / "out.onnx"
    rep = tmp_path / "report.json"
    md = tmp_path / "report.md"
    code, stdout, stderr = invoke("compress", str(mlp_path), "-r", "fp16", "-o", str(out), "--report", str(rep), "--markdown", str(md))
    assert code == 0, stderr
    assert out.exists() and rep.exists() and md.exists()
    report = json.loads(rep.read_text())
    assert report["schema"] == "onnxzip.report/1"
    size = report["size"]
    assert size["original_bytes"] == mlp_path.stat().st_size
    assert size["stored_bytes"] == out.stat().st_size
    assert size["ratio"] > 1.6  # weights dominate; fp16 halves them
    cast = report["passes"][1]
    assert cast["name"] == "cast-fp16" and cast["tensors_changed"] == 2
    assert all(t["bytes_after"] * 2 == t["bytes_before"] for t in cast["tensors"])
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    ref = run(onnx.load(mlp_path), {"x": x})[0]
    np.testing.assert_allclose(run(out, {"x": x})[0], ref, rtol=1e-2, atol=1e-2)
    assert "size:" in stderr and "wrote" in stderr
    assert stdout == ""  # data only with --json
    assert "| original |" in md.read_text()


def test_compress_json_on_stdout(tmp_path: Path, mlp_path: Path):
    code, stdout, _ = invoke("compress", str(mlp_path), "-r", "fp16", "-o", str(tmp_path / "o.onnx"), "--json", "-q")
    assert code == 0
    assert json.loads(stdout)["size"]["stored_bytes"] == (tmp_path / "o.onnx").stat().st_size


def test_compress_is_deterministic(tmp_path: Path, mlp_path: Path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert invoke("compress", str(mlp_path), "-r", "fp16", "-o", str(a), "-q")[0] == 0
    assert invoke("compress", str(mlp_path), "-r", "fp16", "-o", str(b), "-q")[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_console_script_runs(tmp_path: Path, mlp_path: Path):
    """Through a real subprocess, as a user's shell would."""
    p = cli("compress", str(mlp_path), "-r", "fp16", "-o", str(tmp_path / "o.onnx"))
    assert p.returncode == 0, p.stderr
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.startswith("onnxzip ")


def _bad_recipe(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


BAD_RECIPES = {
    "yaml_syntax": "version: 1\npasses: [simplify\n",
    "not_mapping": "just a string\n",
    "unknown_pass": "version: 1\npasses: [quantise]\n",
    "misspelled_key": "version: 1\npasses:\n  - cast-fp16: {min_param: 3}\n",
    "wrong_type": "version: 1\npasses:\n  - cast-fp16: {min_params: lots}\n",
    "empty_passes": "version: 1\npasses: []\n",
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipe_exit_2_no_output(tmp_path: Path, mlp_path: Path, case: str):
    out = tmp_path / "o.onnx"
    code, _, stderr = invoke("compress", str(mlp_path), "-r", str(_bad_recipe(tmp_path, BAD_RECIPES[case])), "-o", str(out))
    assert code == 2
    assert_one_error(stderr)
    assert "r.yaml" in stderr
    assert not out.exists()
    code, _, stderr = invoke("validate", str(tmp_path / "r.yaml"))
    assert code == 2
    assert_one_error(stderr)


def _files(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.rglob("*")}


@pytest.mark.parametrize(
    "case",
    ["missing", "not_onnx", "truncated", "checker", "escaping_external", "output_is_input", "unwritable_output", "output_folder_missing"],
)
def test_bad_model_or_output_exit_2(tmp_path: Path, mlp_path: Path, case: str):
    model, out = mlp_path, tmp_path / "o.onnx"
    if case == "missing":
        model = tmp_path / "missing.onnx"
    elif case == "not_onnx":
        model = tmp_path / "x.onnx"
        model.write_text("hello, I am a text file")
    elif case == "truncated":
        model = tmp_path / "t.onnx"
        model.write_bytes(mlp_path.read_bytes()[:300])
    elif case == "checker":
        m = onnx.load(mlp_path)
        m.graph.node[0].op_type = "NoSuchOp"
        model = tmp_path / "c.onnx"
        model.write_bytes(m.SerializeToString())
    elif case == "escaping_external":
        m = onnx.load(mlp_path)
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", "../../etc/passwd"
        model = tmp_path / "e.onnx"
        model.write_bytes(m.SerializeToString())
    elif case == "output_is_input":
        out = mlp_path
    elif case == "unwritable_output":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "o.onnx"
    elif case == "output_folder_missing":
        out = tmp_path / "no" / "such" / "o.onnx"
    before = _files(tmp_path)
    input_bytes = mlp_path.read_bytes()
    code, _, stderr = invoke("compress", str(model), "-r", "fp16", "-o", str(out))
    assert code == 2, stderr
    assert_one_error(stderr)
    assert _files(tmp_path) == before  # nothing written, not even a temp file
    assert mlp_path.read_bytes() == input_bytes


def test_usage_error_exit_2():
    code, _, stderr = invoke("compress", "--no-such-flag")
    assert code == 2
    assert stderr.startswith("error:") and "hint:" in stderr


def test_validate_presets_and_recipes_list():
    code, stdout, _ = invoke("recipes", "--json")
    assert code == 0
    names = [r["name"] for r in json.loads(stdout)]
    assert "fp16" in names
    for name in names:
        code, _, stderr = invoke("validate", name)
        assert code == 0, stderr
        assert "is valid" in stderr
    code, stdout, _ = invoke("recipes", "--passes", "--json")
    assert {p["name"] for p in json.loads(stdout)} >= {"simplify", "cast-fp16"}
    code, stdout, _ = invoke("recipes", "--show", "fp16")
    assert code == 0 and "cast-fp16" in stdout


def test_inspect_json_and_targets(mlp_path: Path):
    code, stdout, stderr = invoke("inspect", str(mlp_path), "-r", "fp16", "--json")
    assert code == 0, stderr
    info = json.loads(stdout)
    assert info["ops"] == {"Add": 1, "Gemm": 1, "MatMul": 1, "Relu": 1}
    assert info["inputs"][0] == {"name": "x", "dtype": "float", "shape": ["N", 16]}
    biggest = info["initializers"][0]
    assert biggest["name"] == "w1" and biggest["bytes"] == 16 * 32 * 4
    assert abs(sum(d["share"] for d in info["initializers"]) - 1) < 1e-9
    cast = next(t for t in info["targets"] if t["pass"] == "cast-fp16")
    assert {t["name"] for t in cast["targets"]} == {"w1", "w2"}


def test_inspect_table(mlp_path: Path):
    code, stdout, _ = invoke("inspect", str(mlp_path))
    assert code == 0
    assert "w1" in stdout and "16x32" in stdout and "MatMulx1" in stdout


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "transformer", "const_weights", "if_subgraph", "external_data"])
def test_fp16_on_sample_models(tmp_path: Path, name: str):
    """Each shipped sample compresses with the fp16 preset to a smaller model with the same top-1."""
    d = SAMPLES / name
    if not (d / "model.onnx").exists():
        pytest.skip(f"sample model {name} not built")
    out = tmp_path / f"{name}.onnx"
    code, _, stderr = invoke("compress", str(d / "model.onnx"), "-r", "fp16", "-o", str(out), "-q")
    assert code == 0, stderr
    from onnxzip.compress import files_size, model_files

    assert out.stat().st_size < 0.65 * files_size(model_files(d / "model.onnx"))
    feeds, _ = feeds_for(d, 200)
    ref = run(d / "model.onnx", feeds)[0]
    got = run(out, feeds)[0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-2 * float(np.abs(ref).max()))
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.99
