"""Activation range collection: streaming histograms, range methods, running the model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import SAMPLES
from onnxzip import model as M
from onnxzip.calibrate import Histogram, RangeCollector, collect_ranges
from onnxzip.data import CalibrationSource, NpzData
from onnxzip.errors import DataError

# --------------------------------------------------------------------------- histogram


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=60),
        min_size=1, max_size=8,
    )
)
def test_histogram_is_exact_whatever_the_batching(batches):
    """Bins are power-of-two wide and anchored at 0, so growing the window merges bins
    exactly: every value stays inside its bin, counts add up, and merging per-batch
    histograms equals streaming them."""
    h = Histogram(64)
    parts = []
    for b in batches:
        h.add(np.array(b, dtype=np.float32))
        p = Histogram(64)
        p.add(np.array(b, dtype=np.float32))
        parts.append(p)
    allv = np.concatenate([np.array(b, dtype=np.float32) for b in batches]).astype(np.float64)
    assert h.total == allv.size
    assert h.counts.size <= 64
    edges = h.edges()
    assert edges[0] <= allv.min() and allv.max() < edges[-1]
    expect = np.histogram(allv, bins=edges)[0]
    # np.histogram's last bin is closed; ours is half-open: only an exact edge can differ
    if not np.isin(allv, edges[-1:]).any():
        np.testing.assert_array_equal(h.counts, expect)
    merged = Histogram(64)
    for p in reversed(parts):
        merged.merge(p)
    assert merged.width == h.width and merged.start == h.start
    np.testing.assert_array_equal(merged.counts, h.counts)


def test_histogram_memory_is_bounded():
    h = Histogram(128)
    rng = np.random.default_rng(0)
    for i in range(200):  # ever larger ranges, many samples
        h.add(rng.standard_normal(1000) * (1 + i))
        assert h.counts.size <= 128
    assert h.total == 200_000


def test_percentile_and_quantile():
    x = np.linspace(0.0, 1.0, 100_001)
    c = RangeCollector(["t"], method="percentile", percentile=99.0)
    for part in np.array_split(x, 7):
        c.update("t", part)
    r = c.ranges()["t"]
    w = c.hist["t"].width
    assert r.lo == 0.0  # 0 always inside the range
    assert abs(r.hi - 0.99) <= 2 * w
    full = RangeCollector(["t"], method="percentile", percentile=100.0)
    full.update("t", x - 0.25)
    r = full.ranges()["t"]
    assert (r.lo, r.hi) == (-0.25, 0.75)  # p = 100 is the observed range


def test_entropy_clips_outliers_not_the_bulk():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(200_000), [40.0, -40.0] * 10])
    c = RangeCollector(["t"], method="entropy")
    for part in np.array_split(x, 5):
        c.update("t", part)
    r = c.ranges()["t"]
    assert r.max == 40.0 and r.min == -40.0
    assert 3.0 < r.hi < 20.0 and -20.0 < r.lo < -3.0  # clipped well below the rare outliers, above the bulk


def test_entropy_ignores_the_relu_zero_spike():
    """Half the values exactly 0 (a ReLU output) must not push the threshold to its minimum."""
    x = np.maximum(np.random.default_rng(2).laplace(size=200_000), 0)
    c = RangeCollector(["t"], method="entropy")
    c.update("t", x)
    r = c.ranges()["t"]
    assert r.hi > np.percentile(x, 99.9)


def test_minmax_ranges_contain_zero():
    c = RangeCollector(["a", "b", "never"], method="minmax")
    c.update("a", np.array([2.0, 3.0]))
    c.update("b", np.array([-5.0, -1.0]))
    out = c.ranges()
    assert (out["a"].lo, out["a"].hi) == (0.0, 3.0)
    assert (out["b"].lo, out["b"].hi) == (-5.0, 0.0)
    assert "never" not in out


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown calibration method"):
        RangeCollector(["a"], method="kl")
    with pytest.raises(ValueError, match="percentile"):
        RangeCollector(["a"], method="percentile", percentile=0)


# --------------------------------------------------------------------------- running the model


def tiny_model() -> onnx.ModelProto:
    w = np.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]], dtype=np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_collect_ranges_matches_numpy_for_any_batch(tmp_path, batch):
    x = np.random.default_rng(2).standard_normal((50, 2)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    src = CalibrationSource(NpzData(tmp_path / "c.npz"), samples=50, batch=batch)
    model = tiny_model()
    h = x @ M.to_array(model.graph.initializer[0])
    r = collect_ranges(model, ["x", "h", "y"], src, method="minmax")
    assert r["h"].min == pytest.approx(h.min()) and r["h"].max == pytest.approx(h.max())
    assert r["y"].lo == 0.0 and r["y"].hi == pytest.approx(max(h.max(), 0))
    assert r["x"].count == x.size
    p = collect_ranges(model, ["h"], src, method="percentile", percentile=99.0)
    assert p["h"].lo >= h.min() and p["h"].hi <= h.max()
    assert len(model.graph.output) == 1  # the caller's model is untouched


def test_collect_ranges_on_a_sample_model_respects_the_sample_limit():
    folder = SAMPLES / "digits_cnn"
    model = M.load_model(folder / "model.onnx")
    src = CalibrationSource(NpzData(folder / "calib.npz"), samples=40, batch=16)
    r = collect_ranges(model, ["relu1", "relu3", "flatten"], src)
    assert r["relu1"].lo == 0.0 and r["relu1"].hi > 0
    assert r["relu1"].count == 40 * 64 * 8 * 8  # 40 samples, not the file's 128


def test_no_batch_is_a_data_error(tmp_path):
    """A fixed batch dimension larger than the sample limit yields nothing: say so."""
    m = tiny_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    np.savez(tmp_path / "c.npz", x=np.zeros((16, 2), np.float32))
    src = CalibrationSource(NpzData(tmp_path / "c.npz"), samples=4, batch=2)
    with pytest.raises(DataError, match="no batch"):
        collect_ranges(m, ["h"], src)
