"""Layer statistics for data-aware compression (onnxzip.calibrate): views, im2col Gram
matrices, streaming collection, the cache shared by passes, time and memory."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import SAMPLES, make_mlp
from onnx import TensorProto, helper, numpy_helper

import onnxzip.calibrate as C
from onnxzip import model as M
from onnxzip.calibrate import LayerView, StatsCache, collect_stats, conv_patches, layer_stats, layer_view
from onnxzip.data import CalibrationSource, NpzData, input_signature
from onnxzip.errors import DataError
from onnxzip.passes.base import PassContext
from onnxzip.runtime import session_from_model


def conv_model(c_in, c_out, kernel, shape, **attrs) -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(0)
    group = attrs.get("group", 1)
    w = rng.standard_normal((c_out, c_in // group, *kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)
    g = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, w


def npz_source(tmp_path, arrays: dict[str, np.ndarray], samples=128, batch=16) -> CalibrationSource:
    p = tmp_path / "calib.npz"
    np.savez(p, **arrays)
    return CalibrationSource(NpzData(p, what="calibration"), samples=samples, batch=batch)


# --------------------------------------------------------------------------- views


@pytest.mark.parametrize(
    "c_in,c_out,kernel,shape,attrs",
    [
        (3, 4, (3, 3), (7, 6), {}),
        (3, 4, (3, 2), (9, 8), {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]}),
        (4, 6, (3, 3), (6, 6), {"group": 2, "pads": [1, 1, 1, 1]}),
        (5, 5, (3, 3), (6, 7), {"group": 5, "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        (2, 3, (4, 4), (7, 7), {"auto_pad": "SAME_LOWER"}),
        (3, 4, (5,), (20,), {"strides": [3], "pads": [2, 1]}),
        (256, 8, (5, 1), (12, 1), {}),  # magika's shape of kernel
    ],
)
def test_conv_patches_reproduce_the_conv(c_in, c_out, kernel, shape, attrs):
    """patches @ W^T (per group) equals onnxruntime's Conv output: the columns are ordered
    like the weight, every pad/stride/dilation/auto_pad is applied."""
    m, w = conv_model(c_in, c_out, kernel, shape, **attrs)
    view = layer_view(m.graph.node[0], w.shape)
    assert isinstance(view, LayerView) and view.k == (c_in // view.groups) * int(np.prod(kernel))
    x = np.random.default_rng(1).standard_normal((3, c_in, *shape)).astype(np.float32)
    y = session_from_model(m).run(None, {"x": x})[0]
    p = np.concatenate(list(conv_patches(x, view, chunk=97)))  # tiny chunks: many pieces
    g = view.groups
    per = c_out // g
    w2d = w.reshape(c_out, -1)
    out = np.concatenate([p[:, i * view.k:(i + 1) * view.k] @ w2d[i * per:(i + 1) * per].T for i in range(g)], axis=1)
    expect = np.moveaxis(y, 1, -1).reshape(-1, c_out)
    np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-4)


def test_layer_view_reasons():
    mm = helper.make_node("MatMul", ["x", "w"], ["y"])
    assert layer_view(mm, [8, 4]) == LayerView("x", "dense", 8)
    assert "rank 3" in layer_view(mm, [2, 8, 4])
    assert "input 0" in layer_view(mm, [8, 4], input_index=0)
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"], transA=1, transB=1)
    assert layer_view(gemm, [4, 8]) == LayerView("x", "dense", 8, trans=True)
    assert "ConvTranspose" in layer_view(helper.make_node("ConvTranspose", ["x", "w"], ["y"]), [3, 4, 3, 3])


# --------------------------------------------------------------------------- collection


def _fetch(model: onnx.ModelProto, names: list[str], feeds: dict) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    return session_from_model(m, optimization="basic").run(names, feeds)


def test_collect_stats_matches_numpy_and_restores_the_model(tmp_path):
    model = make_mlp(k=16, h=32, n=4)
    x = np.random.default_rng(2).standard_normal((50, 16)).astype(np.float32)
    src = npz_source(tmp_path, {"x": x}, samples=40, batch=7)
    before = model.SerializeToString()
    views = [layer_view(model.graph.node[0], [16, 32]), layer_view(model.graph.node[3], [4, 32])]
    run = collect_stats(model, views, src)
    assert model.SerializeToString() == before  # outputs added for the session only
    r1 = _fetch(model, ["r1"], {"x": x[:40]})[0].astype(np.float64)
    xs = x[:40].astype(np.float64)
    for v, rows in zip(views, [xs, r1], strict=True):
        st = run.stats[v]
        assert st.rows == 40
        np.testing.assert_allclose(st.gram[0], rows.T @ rows, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(st.mean[0], rows.mean(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(st.fourth[0], np.sum(np.sum(rows * rows, axis=1) ** 2), rtol=1e-5)
    assert run.batches == 6 and run.samples == 40 and run.seconds > 0 and run.peak_bytes > 0


def test_statistics_do_not_depend_on_batching_or_chunking(tmp_path, monkeypatch):
    m, w = conv_model(3, 4, (3, 3), (8, 8), pads=[1, 1, 1, 1])
    x = np.random.default_rng(3).standard_normal((24, 3, 8, 8)).astype(np.float32)
    view = layer_view(m.graph.node[0], w.shape)
    a = collect_stats(m, [view], npz_source(tmp_path, {"x": x}, batch=24)).stats[view]
    monkeypatch.setattr(C, "PATCH_CHUNK", 50)
    b = collect_stats(m, [view], npz_source(tmp_path, {"x": x}, batch=5)).stats[view]
    assert a.rows == b.rows == 24 * 64
    # float32 products, float64 sums: equal to float32 rounding of the largest entries
    np.testing.assert_allclose(a.gram, b.gram, rtol=1e-5, atol=1e-5 * np.abs(a.gram).max())
    np.testing.assert_allclose(a.total, b.total, rtol=1e-5, atol=1e-5 * np.abs(a.total).max())


def test_gemm_trans_a_and_batched_matmul_rows(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)  # fixed batch 6: one sample is a 6x3 matrix
    view = layer_view(nodes[0], w.shape)
    src = npz_source(tmp_path, {"x": x.reshape(24, 3)}, batch=6)
    st = collect_stats(m, [view], src).stats[view]
    rows = x.reshape(24, 3)
    blocks = [rows[i:i + 6].T for i in range(0, 24, 6)]  # transA: rows of x^T
    expect = sum(b.T @ b for b in blocks)
    np.testing.assert_allclose(st.gram[0], expect, rtol=1e-5)
    assert st.rows == 12

    # a MatMul over [N, T, K] flattens every leading axis
    mm = helper.make_node("MatMul", ["t", "w2"], ["z"])
    g2 = helper.make_graph([mm], "g", [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 5, 6])],
                           [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w2")])
    m2 = helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)])
    t = rng.standard_normal((7, 5, 6)).astype(np.float32)
    v2 = layer_view(mm, w.shape)
    st2 = collect_stats(m2, [v2], npz_source(tmp_path, {"t": t}, batch=3)).stats[v2]
    flat = t.reshape(-1, 6).astype(np.float64)
    assert st2.rows == 35
    np.testing.assert_allclose(st2.gram[0], flat.T @ flat, rtol=1e-5)


def test_a_view_that_does_not_fit_its_tensor_is_reported(tmp_path):
    model = make_mlp(k=16)
    bad = LayerView("x", "dense", 9)
    run = collect_stats(model, [bad], npz_source(tmp_path, {"x": np.zeros((4, 16), np.float32)}))
    assert bad in run.failed and "9" in run.failed[bad] and not run.stats


def test_too_few_samples_for_a_fixed_batch_is_a_data_error(tmp_path):
    model = make_mlp(k=16)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8  # fixed batch of 8
    src = npz_source(tmp_path, {"x": np.zeros((4, 16), np.float32)})
    with pytest.raises(DataError, match="expects float32"):
        collect_stats(model, [LayerView("x", "dense", 16)], src)


def test_memory_is_bounded_by_the_statistics_not_the_samples(tmp_path):
    """Streaming: 8x the samples, about the same traced peak."""
    model = M.load_model(SAMPLES / "digits_mlp" / "model.onnx")
    views = [v for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
             for v in [layer_view(n, next(t.dims for t in model.graph.initializer if t.name == n.input[1]))]]
    x = np.random.default_rng(5).random((1024, 64)).astype(np.float32)
    peaks = {}
    for n in (128, 1024):
        src = npz_source(tmp_path, {"input": x[:n]}, samples=n, batch=32)
        src.data.validate(input_signature(model))  # the file's arrays are loaded before the run, as compress does
        run = collect_stats(model, views, src)
        assert run.samples == n
        peaks[n] = run.peak_bytes
    assert peaks[1024] < 1.3 * peaks[128] + 256 * 1024


def test_transformer_calibration_time_and_memory():
    """128 samples of the transformer sample: well under a minute, peak traced memory under
    twice the model plus the statistics."""
    path = SAMPLES / "transformer" / "model.onnx"
    model = M.load_model(path)
    inits = {t.name: t for t in model.graph.initializer}
    views = [v for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits
             for v in [layer_view(n, inits[n.input[1]].dims)] if isinstance(v, LayerView)]
    src = CalibrationSource(NpzData(SAMPLES / "transformer" / "calib.npz", what="calibration"), samples=128, batch=16)
    src.data.validate(input_signature(model))
    run = collect_stats(model, views, src)
    assert run.samples == 128 and len(run.stats) == len(set(views)) >= 6
    assert run.seconds < 60
    assert run.peak_bytes < 2 * path.stat().st_size + run.stats_bytes


# --------------------------------------------------------------------------- cache


def test_cache_runs_the_model_once_per_new_view(tmp_path):
    model = make_mlp(k=16, h=32, n=4)
    x = np.random.default_rng(6).standard_normal((32, 16)).astype(np.float32)
    ctx = PassContext(calibration=npz_source(tmp_path, {"x": x}))
    a = layer_view(model.graph.node[0], [16, 32])
    b = layer_view(model.graph.node[3], [4, 32])
    s1, _, notes1 = layer_stats(ctx, model, [a])
    s2, _, notes2 = layer_stats(ctx, model, [a])
    assert s2[a] is s1[a] and len(ctx.stats_cache.runs) == 1 and "reused" in notes2[0]
    assert "from the original model" in notes1[0]
    # the model changes (as a pass would change it): known views still hit, a new one runs
    t = next(t for t in model.graph.initializer if t.name == "w1")
    t.CopyFrom(numpy_helper.from_array(np.zeros((16, 32), np.float32), "w1"))
    s3, _, notes3 = layer_stats(ctx, model, [a, b])
    assert s3[a] is s1[a] and len(ctx.stats_cache.runs) == 2
    assert list(ctx.stats_cache.runs[1].stats) == [b]
    assert "compressed so far" in notes3[0] and "1 more reused" in notes3[0]
    # another data file: a new key
    ctx.calibration = npz_source(tmp_path / "..", {"x": x[:16]}, samples=16)
    layer_stats(ctx, model, [a])
    assert len(ctx.stats_cache.runs) == 3


def test_shrinkage_grows_when_rows_are_few():
    rng = np.random.default_rng(7)
    k = 64
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    values = {}
    for n in (32, 20000):
        x = rng.standard_normal((n, k)) @ mix
        acc = C._Accumulator(LayerView("x", "dense", k))
        acc.add(x.astype(np.float32))
        st = C.LayerStats(acc.view, acc.gram, acc.total, acc.rows, acc.fourth)
        values[n] = st.shrinkage()
        h = st.hessian()
        assert np.trace(h) == pytest.approx(np.trace(st.gram[0]))
    assert values[20000] < 0.05 < values[32] <= 1.0


def test_stats_cache_is_created_on_the_context(tmp_path):
    ctx = PassContext(calibration=npz_source(tmp_path, {"x": np.ones((4, 16), np.float32)}))
    assert ctx.stats_cache is None
    layer_stats(ctx, make_mlp(k=16), [LayerView("x", "dense", 16)])
    assert isinstance(ctx.stats_cache, StatsCache)
