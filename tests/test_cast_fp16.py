"""cast-fp16: weights (or every float tensor) stored as float16, restored by a Cast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from conftest import SAMPLES, feeds_for, make_mlp, run
from onnxzip import model as M
from onnxzip.pipeline import run_pipeline
from onnxzip.recipe import parse_recipe


def _run(model: onnx.ModelProto, text: str):
    return run_pipeline(model, parse_recipe(text, "r.yaml"))


def test_weights_only_by_default():
    res = _run(make_mlp(), "version: 1\npasses: [cast-fp16]\n")
    kinds = {t.name: t.data_type for t in res.model.graph.initializer}
    assert kinds["w1_fp16"] == TensorProto.FLOAT16 and kinds["w2_fp16"] == TensorProto.FLOAT16
    assert kinds["b1"] == TensorProto.FLOAT and kinds["b2"] == TensorProto.FLOAT
    assert M.count_ops(res.model, "Cast") == 2


def test_all_float_takes_biases_and_keeps_quant_scales():
    text = """version: 1
passes:
  - quantize: {method: linear, bits: 8, granularity: per_channel}
  - cast-fp16: {all_float: true, min_params: 1}
"""
    res = _run(make_mlp(k=64, h=128, n=10), text)
    by_name = {t.name: t for s in M.walk(res.model) for t in s.graph.initializer}
    assert by_name["b1_fp16"].data_type == TensorProto.FLOAT16
    stats = res.steps[1].result
    reasons = {s.name: s.reason for s in stats.skipped}
    assert any("scale" in r for r in reasons.values()), reasons
    for s in M.walk(res.model):
        for n in s.graph.node:
            if n.op_type == "DequantizeLinear":
                assert by_name[n.input[1]].data_type == TensorProto.FLOAT


def test_all_float_on_kmeans_cnn_keeps_top1(tmp_path: Path):
    d = SAMPLES / "digits_cnn"
    text = """version: 1
passes:
  - quantize: {method: kmeans, bits: 5}
  - cast-fp16: {all_float: true, min_params: 1}
"""
    src = M.load_model(d / "model.onnx")
    res = _run(src, text)
    # every float32 tensor left is one where float16 + its Cast would have grown the file
    left = {t.name for s in M.walk(res.model) for t in s.graph.initializer if t.data_type == TensorProto.FLOAT}
    reasons = {s.name: s.reason for s in res.steps[1].result.skipped}
    assert left and all("Cast node" in reasons[n] for n in left), (left, reasons)
    assert all(M.numel(t) <= 64 for s in M.walk(res.model) for t in s.graph.initializer if t.name in left)
    feeds, _ = feeds_for(d, 200)
    ref = run(d / "model.onnx", feeds)[0].argmax(-1)
    got = run(res.model, feeds)[0].argmax(-1)
    assert np.mean(got == ref) >= 0.99


def test_all_float_honours_per_tensor_overrides():
    # a tuned recipe leaves a layer float32 with `skip: true`; all_float must obey it as the
    # weights-only mode does, matching the tensor's name or its consumer's
    text = """version: 1
passes:
  - cast-fp16:
      all_float: true
      min_params: 1
      overrides:
        w1: {skip: true}
        fc2: {skip: true}
"""
    res = _run(make_mlp(k=64, h=128, n=10), text)
    kinds = {t.name: t.data_type for t in res.model.graph.initializer}
    assert kinds["w1"] == TensorProto.FLOAT  # by the tensor's name
    assert kinds["w2"] == TensorProto.FLOAT and kinds["b2"] == TensorProto.FLOAT  # by the consumer fc2
    assert kinds["b1_fp16"] == TensorProto.FLOAT16  # no override: cast
    reasons = {s.name: s.reason for s in res.steps[0].result.skipped}
    assert reasons == {n: "skipped by an override" for n in ("w1", "w2", "b2")}
    assert M.count_ops(res.model, "Cast") == 1


def test_never_grows_the_file():
    # a 10-float bias saves 20 bytes as float16; its Cast node costs more: kept float32.
    # Each tensor that is cast makes the file smaller.
    text = "version: 1\npasses:\n  - cast-fp16: {all_float: true, min_params: 1}\n"
    for k, h, n in [(4, 4, 2), (64, 128, 10)]:
        src = make_mlp(k=k, h=h, n=n)
        res = _run(src, text)
        assert res.model.ByteSize() <= src.ByteSize()
        stats = res.steps[0].result
        assert {t.name for t in stats.tensors}.isdisjoint(s.name for s in stats.skipped)
        assert all("Cast node" in s.reason for s in stats.skipped), stats.skipped
    assert {t.name for t in stats.tensors} == {"w1", "w2", "b1"}  # b2 (10 floats) stays float32
