"""Shared test helpers: tiny inline models, onnxruntime runs, CLI invocation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"

os.environ.setdefault("NO_COLOR", "1")

# Property tests must give the same verdict on every run and machine (CI included).
try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("onnxzip", derandomize=True, deadline=None, print_blob=True)
    _hsettings.load_profile("onnxzip")
except ImportError:  # hypothesis is a dev dependency; tests that need it import it themselves
    pass


def make_mlp(k: int = 16, h: int = 32, n: int = 4, seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """x[N,k] -> MatMul+Add -> Relu -> Gemm -> y[N,n]: both weight op types, real shapes."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((k, h)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(h).astype(np.float32) * 0.1
    w2 = rng.standard_normal((n, h)).astype(np.float32) * 0.3
    b2 = rng.standard_normal(n).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["mm1"], name="fc1"),
        helper.make_node("Add", ["mm1", "b1"], ["a1"], name="fc1_bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [numpy_helper.from_array(a, nm) for a, nm in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def run(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of the model on onnxruntime CPU (decoding ai.onnxzip nodes if any)."""
    from onnxzip.runtime import InferenceSession

    return InferenceSession(model if isinstance(model, onnx.ModelProto) else str(model), providers=["cpu"]).run(None, feeds)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def feeds_for(model_dir: Path, n: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    data = load_npz(model_dir / "eval.npz")
    labels = data.pop("labels", None)
    if n is not None:
        data = {k: v[:n] for k, v in data.items()}
        labels = labels[:n] if labels is not None else None
    return data, labels


def cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real console script (as a module of this interpreter)."""
    e = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    if env:
        e.update(env)
    return subprocess.run(
        [sys.executable, "-c", "from onnxzip.cli import run; run()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=e,
        timeout=300,
    )


def invoke(*args: str):
    """Run the CLI in-process (fast); returns (exit_code, stdout, stderr)."""
    import contextlib
    import io

    from onnxzip.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    p = tmp_path / "mlp.onnx"
    onnx.save(make_mlp(), p)
    return p


def assert_one_error(stderr: str) -> None:
    """A user error: `error:` first, a `hint:`, no traceback."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    errs = [ln for ln in lines if ln.startswith("error:")]
    assert len(errs) == 1, stderr
    assert any(ln.startswith("hint:") for ln in lines), stderr
    assert "Traceback" not in stderr, stderr
