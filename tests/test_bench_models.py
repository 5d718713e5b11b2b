"""bench/models.py: the real-model benchmark cache. Never downloads anything.

The first group needs no cache (helpers, the missing-cache message). The second checks the
prepared models and runs only where ``python bench/models.py`` has filled the cache
(``$ONNXZIP_BENCH_CACHE`` or ~/.cache/onnxzip-bench); otherwise it is skipped.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, file: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


M = _load("bench_models", "models.py")
inp = M.inp


# --------------------------------------------------------------------------- no cache needed


def test_missing_cache_names_the_command(tmp_path):
    with pytest.raises(M.CacheMissing) as e:
        M.available_models(tmp_path)
    msg = str(e.value)
    assert "python bench/models.py" in msg and f"--cache {tmp_path.resolve()}" in msg
    assert "not fetched" in msg
    with pytest.raises(M.CacheMissing, match="--only ocr_cls"):
        M.available_models(tmp_path, only="ocr_cls")
    assert set(M.missing_models(tmp_path)) == set(M.SPECS)
    assert list(tmp_path.iterdir()) == []  # looking changes nothing


def test_unknown_model_name():
    with pytest.raises(ValueError, match="valid: magika"):
        M._parse_only("magika,nope")


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(M.CACHE_ENV, str(tmp_path))
    assert M.cache_dir() == tmp_path.resolve()
    assert M.cache_dir(tmp_path / "x") == (tmp_path / "x").resolve()


def test_resize_linear_geometry():
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert np.array_equal(inp.resize_linear(img, 6, 4), img)
    up = inp.resize_linear(img, 12, 8)
    assert up.shape == (8, 12, 3) and up.dtype == np.uint8
    flat = np.full((5, 7, 3), 77, dtype=np.uint8)  # a constant image stays constant
    assert (inp.resize_linear(flat, 19, 3) == 77).all()
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (2, 1))  # 16 columns, 0..240
    half = inp.resize_linear(ramp, 8, 2)  # pixel centres fall between pairs: their mean
    assert half[0].tolist() == [8, 40, 72, 104, 136, 168, 200, 232]


def test_resize_linear_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(3, 120, 2))
        th, tw = (int(v) for v in rng.integers(3, 200, 2))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert np.array_equal(inp.resize_linear(img, tw, th), cv2.resize(img, (tw, th)))


def test_ocr_preprocessing_shapes_and_range():
    rng = np.random.default_rng(1)
    line = rng.integers(0, 256, (30, 400, 3), dtype=np.uint8)  # ratio > 4: squeezed to 192
    x = inp.cls_preprocess(line, (3, 48, 192))
    assert x.shape == (3, 48, 192) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    short = inp.cls_preprocess(line[:, :40], (3, 48, 192))  # 40/30*48 = 64 columns, zero pad after
    assert (short[:, :, 64:] == 0).all() and (short[:, :, :64] != 0).any()
    r = inp.rec_preprocess(line[:, :150], (3, 48, 320), 320 / 48)
    assert r.shape == (3, 48, 320)
    page = rng.integers(0, 256, (500, 900, 3), dtype=np.uint8)
    d = inp.det_preprocess(page, 736, "min", [0.5] * 3, [0.5] * 3)
    assert d.shape == (3, 736, 1312) and d.dtype == np.float32  # 736/500*900 = 1324.8 -> 1312


def test_metrics_on_known_outputs():
    charset = ["blank", "a", "b", " "]
    probs = np.zeros((1, 6, 4), dtype=np.float32)
    for t, k in enumerate([1, 1, 0, 1, 2, 3]):
        probs[0, t, k] = 1
    assert inp.ctc_decode(probs, charset) == ["aab "]
    assert inp.rec_metrics(probs, np.array(["aab"]), charset)["line_accuracy"] == 1.0
    prob = np.zeros((1, 1, 40, 60), dtype=np.float32)
    prob[0, 0, 12:18, 10:50] = 0.9
    boxes = np.array([[0, 8, 10, 52, 20], [0, 5, 30, 30, 38]], dtype=np.int32)
    m = inp.det_metrics(prob, boxes)
    assert m["line_recall"] == 0.5 and m["pixel_precision"] == 1.0
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    c = inp.classification_metrics(logits, np.array([1, 0, 0]), ["0", "180"])
    assert c["top1_accuracy"] == pytest.approx(2 / 3) and c["predicted_labels"] == {"180": 2, "0": 1}


# --------------------------------------------------------------------------- prepared cache


def _ready(name: str):
    try:
        return M.available_models(only=name)[name]
    except M.CacheMissing as e:
        pytest.skip(f"benchmark cache not prepared: {e}")


@pytest.mark.parametrize("name", list(M.SPECS))
def test_prepared_model_matches_its_data(name):
    import onnx

    from onnxzip.data import NpzData, input_signature

    e = _ready(name)
    assert e.kind == M.SPECS[name].kind
    assert M._sha256(e.path) == M.SPECS[name].sha256  # byte-identical to the wheel's file
    specs = input_signature(onnx.load(str(e.path), load_external_data=False))
    n_eval = NpzData(e.eval_npz).validate(specs)
    n_calib = NpzData(e.calib_npz).validate(specs)
    assert n_eval == e.manifest["n_eval"] and n_calib == e.manifest["n_calib"] and n_calib > 0
    with np.load(e.eval_npz) as ev, np.load(e.calib_npz) as ca:
        a, b = ev[specs[0].name], ca[specs[0].name]
        flat = {hash(r.tobytes()) for r in a.reshape(len(a), -1)}
        assert not any(hash(r.tobytes()) in flat for r in b.reshape(len(b), -1)), "calib overlaps eval"


@pytest.mark.slow  # magika: ~20 ms a sample on 2 cores, ~17 s for the eval set
@pytest.mark.parametrize("name", ["magika", "ocr_cls"])
def test_fp32_figure_reproduces(name):
    e = _ready(name)
    out = M.run_model(e.path, e.eval_npz, batch=64)
    s = M.score(e, out)
    assert s["top1_accuracy"] == pytest.approx(e.manifest["sanity"]["top1_accuracy"])
    assert s["top1_accuracy"] > 0.9
