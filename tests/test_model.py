"""Model I/O: safe loading, constant lifting, subgraph walking, deterministic atomic saves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_mlp, run
from onnx import TensorProto, helper, numpy_helper

from onnxzip import model as M
from onnxzip.errors import ModelError, UsageError


def _save_external(model: onnx.ModelProto, path: Path, location: str) -> None:
    """Save with all tensors external at `location` (written by us: onnx refuses hostile paths)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    blob = bytearray()
    for t in m.graph.initializer:
        raw = t.raw_data or numpy_helper.from_array(numpy_helper.to_array(t)).raw_data
        off = len(blob)
        blob += raw
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(off)), ("length", str(len(raw)))):
            e = t.external_data.add()
            e.key, e.value = k, v
    path.write_bytes(m.SerializeToString())
    return bytes(blob)


def test_load_roundtrip_and_outputs(mlp_path: Path):
    m = M.load_model(mlp_path)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    ref = run(onnx.load(mlp_path), {"x": x})[0]
    np.testing.assert_allclose(run(m, {"x": x})[0], ref, rtol=0, atol=0)


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "is empty"),
        (b"this is not an onnx file at all \x00\xff\xfe", "not a valid ONNX file"),
    ],
)
def test_load_garbage(tmp_path: Path, content: bytes, needle: str):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelError) as ei:
        M.load_model(p)
    assert needle in ei.value.message
    assert ei.value.hint


def test_load_truncated(tmp_path: Path, mlp_path: Path):
    data = mlp_path.read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"not a valid ONNX file"):
        M.load_model(p)


def test_load_missing(tmp_path: Path):
    with pytest.raises(ModelError, match="not found"):
        M.load_model(tmp_path / "nope.onnx")


def test_load_checker_failure(tmp_path: Path):
    m = make_mlp()
    m.graph.node[0].input[1] = "does_not_exist"
    p = tmp_path / "invalid.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match=r"fails onnx\.checker"):
        M.load_model(p)


def test_external_data_loads(tmp_path: Path):
    m = make_mlp()
    blob = _save_external(m, tmp_path / "m.onnx", "m.onnx.data")
    (tmp_path / "m.onnx.data").write_bytes(blob)
    loaded = M.load_model(tmp_path / "m.onnx")
    assert all(t.data_location == TensorProto.DEFAULT for t in loaded.graph.initializer)
    x = np.ones((2, 16), np.float32)
    np.testing.assert_array_equal(run(loaded, {"x": x})[0], run(m, {"x": x})[0])


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "/etc/passwd"])
def test_external_data_escape_refused(tmp_path: Path, location: str):
    d = tmp_path / "model"
    d.mkdir()
    blob = _save_external(make_mlp(), d / "m.onnx", location)
    (tmp_path / "secret.bin").write_bytes(blob)
    with pytest.raises(ModelError) as ei:
        M.load_model(d / "m.onnx")
    assert "external data" in ei.value.message and ei.value.hint


def test_external_data_symlink_refused(tmp_path: Path):
    d = tmp_path / "model"
    d.mkdir()
    blob = _save_external(make_mlp(), d / "m.onnx", "w.data")
    (tmp_path / "outside.bin").write_bytes(blob)
    os.symlink(tmp_path / "outside.bin", d / "w.data")
    with pytest.raises(ModelError, match="link that resolves outside"):
        M.load_model(d / "m.onnx")


def test_external_data_truncated(tmp_path: Path):
    blob = _save_external(make_mlp(), tmp_path / "m.onnx", "m.data")
    (tmp_path / "m.data").write_bytes(blob[:10])
    with pytest.raises(ModelError, match="truncated"):
        M.load_model(tmp_path / "m.onnx")


def _if_model_with_constants() -> onnx.ModelProto:
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    then_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w_then"], value=numpy_helper.from_array(w, "w_then")),
            helper.make_node("MatMul", ["x", "w_then"], ["y_then"]),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, ["N", 3])],
    )
    else_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w_else"], value=numpy_helper.from_array(-w, "w_else")),
            helper.make_node("MatMul", ["x", "w_else"], ["y_else"]),
        ],
        "else",
        [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, ["N", 3])],
    )
    g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["thr"], value_float=-1e9),
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "thr"], ["cond"]),
            helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
        ],
        "ifmodel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_lift_constants_in_subgraphs(tmp_path: Path):
    m = _if_model_with_constants()
    p = tmp_path / "if.onnx"
    onnx.save(m, p)
    loaded = M.load_model(p)
    assert M.count_ops(loaded, "Constant") == 0
    scopes = list(M.walk(loaded))
    assert len(scopes) == 3  # main + then + else
    names = {t.name for s in scopes for t in s.graph.initializer}
    assert {"w_then", "w_else", "thr"} <= names
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(run(loaded, {"x": x})[0], run(m, {"x": x})[0])


def test_scope_lookup_reaches_outer_initializer():
    m = make_mlp()
    scope = next(M.walk(m))
    found = scope.lookup_initializer("w1")
    assert found is not None and found[1].name == "w1"
    assert scope.lookup_initializer("x") is None


def test_unnamed_nodes_get_names(tmp_path: Path):
    m = make_mlp()
    for n in m.graph.node:
        n.name = ""
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    loaded = M.load_model(p)
    names = [n.name for n in loaded.graph.node]
    assert all(names) and len(set(names)) == len(names)


def test_save_deterministic_and_atomic(tmp_path: Path, mlp_path: Path):
    m = M.load_model(mlp_path)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    M.save_model(m, a)
    M.save_model(m, b)
    assert a.read_bytes() == b.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_save_refuses_input_path(mlp_path: Path):
    m = M.load_model(mlp_path)
    before = mlp_path.read_bytes()
    with pytest.raises(UsageError, match="is the input model"):
        M.save_model(m, mlp_path, input_path=mlp_path)
    assert mlp_path.read_bytes() == before
    M.save_model(m, mlp_path, input_path=mlp_path, force=True)  # explicit force is allowed


def test_save_bad_folder(tmp_path: Path, mlp_path: Path):
    m = M.load_model(mlp_path)
    with pytest.raises(UsageError, match="does not exist"):
        M.save_model(m, tmp_path / "missing" / "x.onnx")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        M.save_model(m, blocker / "x.onnx")


def test_save_external_roundtrip(tmp_path: Path, mlp_path: Path):
    m = M.load_model(mlp_path)
    files = M.save_model(m, tmp_path / "ext.onnx", external=True)
    assert [f.name for f in files] == ["ext.onnx.data", "ext.onnx"]
    raw = onnx.load(tmp_path / "ext.onnx", load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in raw.graph.initializer)
    # the in-memory model is restored after saving
    assert all(t.data_location == TensorProto.DEFAULT for t in m.graph.initializer)
    x = np.ones((1, 16), np.float32)
    np.testing.assert_array_equal(run(M.load_model(tmp_path / "ext.onnx"), {"x": x})[0], run(m, {"x": x})[0])


def test_helpers(mlp_path: Path):
    m = M.load_model(mlp_path)
    assert M.count_ops(m, "MatMul") == 1 and M.count_ops(m, "Gemm") == 1
    M.replace_initializer(m.graph, "w1", np.zeros((16, 32), np.float32))
    assert not M.to_array(next(t for t in m.graph.initializer if t.name == "w1")).any()
    gen = M.NameGen(m)
    assert gen("w1") == "w1_1" and gen("w1") == "w1_2"


@pytest.mark.slow
def test_over_2gb_model_saves_with_external_data(tmp_path: Path):
    """A model just over protobuf's 2 GB limit saves through external data and reloads."""
    n = 2**28 + 256  # two tensors of just over 1 GiB each
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "w0"], ["s"]), helper.make_node("Add", ["s", "w1"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for i in range(2):  # appended in place: make_graph would serialize (and fail) over 2 GB
        w = np.zeros(n, dtype=np.float32)
        w[:: 1_000_003] = i + 1
        t = m.graph.initializer.add()
        t.name, t.data_type = f"w{i}", TensorProto.FLOAT
        t.dims.append(n)
        t.raw_data = w.tobytes()
        del w
    files = M.save_model(m, tmp_path / "big.onnx")
    assert [f.name for f in files] == ["big.onnx.data", "big.onnx"]
    assert files[0].stat().st_size > 2**31 and files[1].stat().st_size < 10_000
    del m
    back = M.load_model(tmp_path / "big.onnx", check=True)
    w1 = M.to_array(back.graph.initializer[1])
    assert w1.shape == (n,) and w1[0] == 2.0 and w1[1] == 0.0 and int(np.count_nonzero(w1)) == len(range(0, n, 1_000_003))
