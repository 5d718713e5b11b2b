"""The shipped sample models: valid, runnable, accurate, and really shaped as their names say.

Needs only onnx, onnxruntime and numpy (no torch, no scikit-learn): the models are rebuilt by
``sample_models/build.py``, these tests check what is committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"

# Measured by build.py (see sample_models/README.md) minus a margin of ~2 points (7 of 360).
MIN_ACCURACY = {
    "digits_mlp": 0.95,
    "digits_cnn": 0.965,
    "transformer": 0.95,
    "const_weights": 0.95,
    "if_subgraph": 0.95,
    "external_data": 0.95,
}
WITH_CALIB = ("digits_mlp", "digits_cnn", "transformer")
N_EVAL = 360
N_CALIB = 128


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _graph_inputs(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    inits = {t.name for t in model.graph.initializer}
    return {i.name: i.type for i in model.graph.input if i.name not in inits}


def _float_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Float initializers and Constant values of this graph only (not its subgraphs)."""
    out = [t for t in graph.initializer if t.data_type == TensorProto.FLOAT]
    for node in graph.node:
        if node.op_type == "Constant":
            out += [a.t for a in node.attribute if a.name == "value"]
    return out


def _size(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64))


_logits_cache: dict[str, np.ndarray] = {}


def _logits(name: str) -> np.ndarray:
    if name not in _logits_cache:
        data = _npz(SAMPLES / name / "eval.npz")
        _logits_cache[name] = _session(SAMPLES / name / "model.onnx").run(
            ["logits"], {"input": data["input"]}
        )[0]
    return _logits_cache[name]


@pytest.mark.parametrize("name", sorted(MIN_ACCURACY))
def test_model_is_valid_and_accurate(name: str) -> None:
    path = SAMPLES / name / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    assert model.opset_import[0].version == 17 and model.ir_version in (8, 9)
    assert [o.name for o in model.graph.output] == ["logits"]

    data = _npz(SAMPLES / name / "eval.npz")
    inputs = _graph_inputs(model)
    assert set(data) == set(inputs) | {"labels"}
    assert data["labels"].dtype == np.int64 and data["labels"].shape == (N_EVAL,)
    for key, typ in inputs.items():
        arr = data[key]
        assert arr.dtype == helper.tensor_dtype_to_np_dtype(typ.tensor_type.elem_type)
        dims = typ.tensor_type.shape.dim
        assert dims[0].dim_param == "N" and arr.shape[0] == N_EVAL
        assert arr.shape[1:] == tuple(d.dim_value for d in dims[1:])

    logits = _logits(name)
    assert logits.shape == (N_EVAL, 10) and np.isfinite(logits).all()
    accuracy = float(np.mean(logits.argmax(axis=1) == data["labels"]))
    assert accuracy >= MIN_ACCURACY[name], f"{name}: top-1 {accuracy:.4f}"


@pytest.mark.parametrize("name", WITH_CALIB)
def test_calibration_data_matches_inputs(name: str) -> None:
    calib = _npz(SAMPLES / name / "calib.npz")
    evals = _npz(SAMPLES / name / "eval.npz")
    assert set(calib) == set(evals)
    for key in calib:
        assert calib[key].dtype == evals[key].dtype
        assert calib[key].shape == (N_CALIB, *evals[key].shape[1:])
    # Drawn from the train split: no calibration sample is also an eval sample.
    flat_eval = {row.tobytes() for row in evals["input"].reshape(N_EVAL, -1)}
    dupes = sum(row.tobytes() in flat_eval for row in calib["input"].reshape(N_CALIB, -1))
    assert dupes == 0


def _op_counts(graph: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_op_coverage() -> None:
    """The op spellings the compression passes must meet are really there."""
    mlp = _op_counts(onnx.load(str(SAMPLES / "digits_mlp" / "model.onnx")).graph)
    assert mlp["Gemm"] == 2 and mlp["MatMul"] == 1 and mlp["Add"] == 1

    cnn = onnx.load(str(SAMPLES / "digits_cnn" / "model.onnx")).graph
    ops = _op_counts(cnn)
    assert ops["Conv"] == 3 and ops["BatchNormalization"] == 3 and ops["Gemm"] == 1
    groups = [
        helper.get_attribute_value(a) for n in cnn.node if n.op_type == "Conv"
        for a in n.attribute if a.name == "group"
    ]
    assert groups == [64]

    tf = _op_counts(onnx.load(str(SAMPLES / "transformer" / "model.onnx")).graph)
    assert tf["LayerNormalization"] == 5 and tf["Softmax"] == 2
    assert tf["MatMul"] == 2 * (4 + 2 + 2) + 1  # q/k/v/o, two attention matmuls, ffn; embed


def test_const_weights_has_no_initializers() -> None:
    model = onnx.load(str(SAMPLES / "const_weights" / "model.onnx"))
    assert len(model.graph.initializer) == 0
    consts = [n for n in model.graph.node if n.op_type == "Constant"]
    assert len(consts) == 6
    assert sum(_size(t) for t in _float_tensors(model.graph)) == 50826
    np.testing.assert_array_equal(_logits("const_weights"), _logits("digits_mlp"))


def test_if_subgraph_holds_weights_in_branches() -> None:
    model = onnx.load(str(SAMPLES / "if_subgraph" / "model.onnx"))
    ifs = [n for n in model.graph.node if n.op_type == "If"]
    assert len(ifs) == 1
    # Outside the branches only the scalar threshold of the condition.
    assert all(_size(t) <= 1 for t in _float_tensors(model.graph))
    # The condition is computed from the input, not a constant that could be folded away.
    producers = {o: n for n in model.graph.node for o in n.output}
    assert producers[ifs[0].input[0]].op_type == "Greater"

    branches = {a.name: a.g for a in ifs[0].attribute}
    then_b, else_b = branches["then_branch"], branches["else_branch"]
    assert sum(_size(t) for t in then_b.initializer) == 50826  # the digits_mlp weights
    assert not any(n.op_type == "Constant" for n in then_b.node)
    assert len(else_b.initializer) == 0  # the else-branch keeps its weights as Constant nodes
    assert sum(_size(t) for t in _float_tensors(else_b)) == 64 * 10 + 10
    np.testing.assert_array_equal(_logits("if_subgraph"), _logits("digits_mlp"))


def test_external_data_is_external_and_relative() -> None:
    folder = SAMPLES / "external_data"
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    assert len(model.graph.initializer) == 6
    for t in model.graph.initializer:
        assert t.data_location == TensorProto.EXTERNAL and not t.raw_data
        assert {e.key: e.value for e in t.external_data}["location"] == "model.onnx.data"
    assert (folder / "model.onnx").stat().st_size < 2048
    assert (folder / "model.onnx.data").stat().st_size >= 50826 * 4
    np.testing.assert_array_equal(_logits("external_data"), _logits("digits_mlp"))
