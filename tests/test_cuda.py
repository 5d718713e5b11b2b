"""CUDA: compressed sample models give the same top-1 on CUDAExecutionProvider as on CPU,
and the report records that CUDA really ran. Skipped where onnxruntime has no CUDA provider
(install the `cuda` extra: pip install 'onnxzip[cuda]')."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from conftest import SAMPLES, feeds_for, invoke

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="onnxruntime's CUDAExecutionProvider is not available (needs onnxruntime-gpu and an NVIDIA GPU)",
    ),
]

MODELS = ["digits_mlp", "digits_cnn", "transformer", "if_subgraph"]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cuda")
    recipe = d / "cast.yaml"
    recipe.write_text("version: 1\npasses: [cast-fp16]\n")
    out = {}
    for name in MODELS:
        o = d / f"{name}.onnx"
        code, _, err = invoke("compress", str(SAMPLES / name / "model.onnx"), "-r", str(recipe), "-o", str(o), "-q")
        assert code == 0, err
        out[name] = o
    return out


@pytest.mark.parametrize("name", MODELS)
def test_same_top1_on_cuda_as_on_cpu(compressed: dict[str, Path], name: str):
    from onnxzip.runtime import InferenceSession

    feeds, _ = feeds_for(SAMPLES / name)
    cpu = InferenceSession(str(compressed[name]), providers=["cpu"])
    gpu = InferenceSession(str(compressed[name]), providers=["cuda"])
    assert gpu.get_providers()[0] == "CUDAExecutionProvider"
    a, b = cpu.run(None, feeds)[0], gpu.run(None, feeds)[0]
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.995
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-2 * float(np.abs(a).max()))


def test_eval_report_records_cuda(compressed: dict[str, Path], tmp_path: Path):
    rep = tmp_path / "r.json"
    d = SAMPLES / "digits_cnn"
    code, _, err = invoke("eval", str(d / "model.onnx"), str(compressed["digits_cnn"]), "--providers", "cpu,cuda", "--data", str(d / "eval.npz"),
                          "--runs", "20", "--min-top1-agreement", "0.99", "--report", str(rep))
    assert code == 0, err
    r = json.loads(rep.read_text())
    cuda = next(p for p in r["evaluation"]["providers"] if p["requested"] == "cuda")
    assert cuda["used"]["compressed"][0] == "CUDAExecutionProvider" and cuda["fallback"] is None
    assert set(r["evaluation"]["latency"]) == {"CPUExecutionProvider", "CUDAExecutionProvider"}
    acc = r["evaluation"]["accuracy"]
    assert acc["CUDAExecutionProvider"]["outputs"]["logits"]["top1_accuracy"] == pytest.approx(
        acc["CPUExecutionProvider"]["outputs"]["logits"]["top1_accuracy"], abs=2 / 360
    )
