"""onnxzip.data: .npz files checked against a model's inputs; every problem is exit 2 naming
the input, what the model expects and what the file holds."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import SAMPLES, assert_one_error, invoke, make_mlp
from onnxzip.data import InputSpec, NpzData, input_signature
from onnxzip.errors import DataError

MLP = SAMPLES / "digits_mlp"


def _npz(tmp_path: Path, name: str = "d.npz", **arrays) -> Path:
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_input_signature():
    specs = input_signature(make_mlp())
    assert specs == [InputSpec("x", np.dtype(np.float32), ("N", 16))]
    assert specs[0].describe() == "float32[Nx16]"


# --------------------------------------------------------------------------- file problems


def test_file_problems(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        NpzData(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="is a directory"):
        NpzData(tmp_path)
    (tmp_path / "t.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"not an \.npz archive") as e:
        NpzData(tmp_path / "t.npz")
    assert "numpy.savez" in e.value.hint
    np.save(tmp_path / "plain.npy", np.zeros(3))  # .npy, not .npz
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        NpzData(tmp_path / "plain.npy")


def test_object_arrays_refused_without_pickle(tmp_path: Path):
    p = _npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object))
    d = NpzData(p)
    with pytest.raises(DataError, match="without pickle"):
        d.array("x")


def test_damaged_member(tmp_path: Path):
    p = _npz(tmp_path, x=np.zeros((4, 16), np.float32))
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("x.npy")
    start = info.header_offset + 30 + len(info.filename) + 10
    raw[start : start + 40] = b"\xff" * 40  # corrupt the npy header inside the archive
    p.write_bytes(bytes(raw))
    d = NpzData(p)
    with pytest.raises(DataError, match=r"damaged|cannot"):
        d.array("x")


# --------------------------------------------------------------------------- contents vs model


SPECS = [InputSpec("x", np.dtype(np.float32), ("N", 16))]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y": np.zeros((4, 16), np.float32)}, "no array for input `x`"),
        ({"x": np.zeros((4, 16), np.float32), "z": np.zeros(4)}, "array `z`, which is not a model input"),
        ({"x": np.zeros((4, 16), np.float64)}, "dtype float64, the model expects float32"),
        ({"x": np.zeros((4, 15), np.float32)}, "shape float32[4x15], the model expects float32[Nx16]"),
        ({"x": np.zeros((16,), np.float32)}, "shape float32[16]"),
        ({"x": np.zeros((0, 16), np.float32)}, "holds no samples"),
        ({"x": np.zeros((4, 16), np.float32), "labels": np.zeros(3, np.int64)}, "`labels` has 3 entries for 4 samples"),
        ({"x": np.zeros((4, 16), np.float32), "labels": np.zeros(4, np.float32)}, "`labels` has dtype float32"),
    ],
)
def test_contents_checked_against_inputs(tmp_path: Path, arrays: dict, match: str):
    d = NpzData(_npz(tmp_path, **arrays))
    with pytest.raises(DataError, match=match.replace("[", r"\[").replace("]", r"\]")):
        d.validate(SPECS)


def test_inputs_disagree_on_count(tmp_path: Path):
    specs = [InputSpec("a", np.dtype(np.float32), ("N", 2)), InputSpec("b", np.dtype(np.float32), ("N", 2))]
    d = NpzData(_npz(tmp_path, a=np.zeros((4, 2), np.float32), b=np.zeros((5, 2), np.float32)))
    with pytest.raises(DataError, match="disagree on the sample count"):
        d.validate(specs)


def test_batches_labels_and_limits(tmp_path: Path):
    x = np.arange(10 * 16, dtype=np.float32).reshape(10, 16)
    labels = np.arange(10)
    d = NpzData(_npz(tmp_path, x=x, labels=labels))
    assert d.validate(SPECS) == 10
    got = list(d.labeled_batches(SPECS, 4, limit=9))
    assert [f["x"].shape[0] for f, _ in got] == [4, 4, 1]
    assert np.concatenate([lab for _, lab in got]).tolist() == list(range(9))
    np.testing.assert_array_equal(np.concatenate([f["x"] for f, _ in got]), x[:9])


def test_fixed_batch_dim_takes_whole_batches(tmp_path: Path):
    specs = [InputSpec("x", np.dtype(np.float32), (4, 16))]
    d = NpzData(_npz(tmp_path, x=np.zeros((10, 16), np.float32), labels=np.zeros(10, np.int64)))
    assert d.validate(specs) == 10
    assert [f["x"].shape[0] for f in d.batches(specs, 32)] == [4, 4]  # the remainder of 2 is dropped
    small = NpzData(_npz(tmp_path, "s.npz", x=np.zeros((3, 16), np.float32)))
    with pytest.raises(DataError, match="expects float32"):
        small.validate(specs)


def test_model_input_named_labels_is_data_not_labels(tmp_path: Path):
    specs = [InputSpec("x", np.dtype(np.float32), ("N", 2)), InputSpec("labels", np.dtype(np.int64), ("N",))]
    d = NpzData(_npz(tmp_path, x=np.zeros((3, 2), np.float32), labels=np.zeros(3, np.int64)))
    assert d.validate(specs) == 3
    assert d.labels is None
    assert next(iter(d.batches(specs, 8)))["labels"].shape == (3,)


def test_scalar_input(tmp_path: Path):
    specs = [InputSpec("t", np.dtype(np.float32), ())]
    d = NpzData(_npz(tmp_path, t=np.array(0.5, np.float32)))
    assert d.validate(specs) == 1
    assert [f["t"].shape for f in d.batches(specs, 8)] == [()]


# --------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing", ["evaluation data file", "not found"]),
        ("not_npz", ["is not an .npz archive"]),
        ("wrong_name", ["no array for input `input`", "arrays in the file: `pixels`"]),
        ("dtype", ["input `input` has dtype float64, the model expects float32", "expected float32[Nx64], found float64[10x64]"]),
        ("shape", ["input `input` has shape float32[10x63], the model expects float32[Nx64]"]),
        ("labels_length", ["`labels` has 9 entries for 10 samples"]),
        ("labels_dtype", ["`labels` has dtype float32"]),
    ],
)
@pytest.mark.parametrize("command", ["compress", "eval"])
def test_data_errors_exit_2_naming_input_expected_found(tmp_path: Path, case: str, expect: list[str], command: str):
    x = np.zeros((10, 64), np.float32)
    p = tmp_path / "d.npz"
    if case == "not_npz":
        p.write_text("1,2,3\n")
    elif case == "wrong_name":
        np.savez(p, pixels=x)
    elif case == "dtype":
        np.savez(p, input=x.astype(np.float64))
    elif case == "shape":
        np.savez(p, input=x[:, :63])
    elif case == "labels_length":
        np.savez(p, input=x, labels=np.zeros(9, np.int64))
    elif case == "labels_dtype":
        np.savez(p, input=x, labels=np.zeros(10, np.float32))
    out = tmp_path / "o.onnx"
    if command == "compress":
        args = ("compress", str(MLP / "model.onnx"), "-r", "fp16", "-o", str(out), "--data", str(p))
    else:
        args = ("eval", str(MLP / "model.onnx"), "--data", str(p))
    code, _, err = invoke(*args)
    assert code == 2, err
    assert_one_error(err)
    for piece in expect:
        assert piece in err, (piece, err)
    assert not out.exists()  # checked before any compression


def test_data_checked_against_model_before_compressing(tmp_path: Path):
    """A data error is found before the (slow) passes run and writes nothing."""
    m = make_mlp()
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    m.graph.node.insert(0, helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
    m.graph.node[1].input[0] = "xf"
    onnx.checker.check_model(m)
    mp = tmp_path / "m.onnx"
    onnx.save(m, mp)
    code, _, err = invoke("compress", str(mp), "-r", "fp16", "-o", str(tmp_path / "o.onnx"), "--data", str(_npz(tmp_path, x=np.zeros((3, 16), np.float32))))
    assert code == 2 and "the model expects float64" in err and "simplify" not in err
