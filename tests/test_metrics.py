"""Metrics on constructed outputs: each built-in, the streaming accumulator, task-metric
loading and checking, and the two worked examples under configs/metrics/."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from onnxzip.errors import RecipeError
from onnxzip.metrics import (
    OutputStats,
    cosine,
    load_metric,
    looks_like_scores,
    max_abs_error,
    mean_abs_error,
    relative_error,
    run_metric,
    snr_db,
    top1_accuracy,
    top1_agreement,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "configs" / "metrics"


def test_top1_agreement_and_accuracy():
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    b = np.array([[0.8, 0.2], [0.1, 0.9], [0.4, 0.6], [0.3, 0.7]], np.float32)  # third flips
    assert top1_agreement(a, b) == 0.75
    labels = np.array([0, 1, 1, 1])
    assert top1_accuracy(a, labels) == 0.75
    assert top1_accuracy(b, labels) == 1.0
    assert top1_accuracy(b, labels[:, None]) == 1.0  # [N, 1] labels read as [N]


def test_looks_like_scores():
    assert looks_like_scores(np.zeros((4, 10), np.float32))
    assert looks_like_scores(np.zeros((2, 7, 5), np.float16))
    assert not looks_like_scores(np.zeros((4, 1), np.float32))  # a regression output
    assert not looks_like_scores(np.zeros((4, 10), np.int64))  # ids, not scores


def test_cosine_cases():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert cosine(x, x) == pytest.approx(1.0)
    assert cosine(x, -x) == pytest.approx(-1.0)
    assert cosine(x, x[:, ::-1]) == pytest.approx(0.0)  # orthogonal per sample
    # mean over samples: one identical (1), one orthogonal (0)
    y = np.array([[1.0, 0.0], [2.0, 0.0]])
    assert cosine(x, y) == pytest.approx(0.5)
    z = np.zeros((2, 2))
    assert cosine(z, z) == 1.0  # both silent: the same output
    assert cosine(z, x) == 0.0


def test_snr_and_errors_exact():
    a = np.array([3.0, 4.0])  # signal energy 25
    b = a + np.array([0.5, 0.0])  # noise energy 0.25 -> 20 dB
    assert snr_db(a, b) == pytest.approx(20.0)
    assert snr_db(a, a) == math.inf
    assert max_abs_error(a, b) == 0.5
    assert mean_abs_error(a, b) == 0.25
    assert relative_error(a, b) == pytest.approx(0.5 / 5.0)
    assert relative_error(np.zeros(2), np.zeros(2)) == 0.0
    assert relative_error(np.zeros(2), np.ones(2)) == math.inf


def test_output_stats_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 10)).astype(np.float32)
    b = a + 0.05 * rng.standard_normal(a.shape).astype(np.float32)
    labels = rng.integers(0, 10, 37)
    s = OutputStats("y")
    for i, j in ((0, 5), (5, 6), (6, 30), (30, 37)):  # uneven batches
        s.update(a[i:j], b[i:j], labels[i:j])
    r = s.result()
    assert r["samples"] == 37 and r["class_scores"] is True
    assert r["top1_agreement"] == pytest.approx(top1_agreement(a, b))
    assert r["cosine"] == pytest.approx(cosine(a, b))
    assert r["snr_db"] == pytest.approx(snr_db(a, b), rel=1e-6)
    assert r["max_abs_error"] == pytest.approx(max_abs_error(a, b))
    assert r["mean_abs_error"] == pytest.approx(mean_abs_error(a, b))
    assert r["top1_accuracy_original"] == pytest.approx(top1_accuracy(a, labels))
    assert r["top1_accuracy"] == pytest.approx(top1_accuracy(b, labels))
    assert r["accuracy_drop"] == pytest.approx(r["top1_accuracy_original"] - r["top1_accuracy"])
    assert r["nonfinite"] == 0


def test_output_stats_shape_change_compares_as_nan():
    s = OutputStats("y")
    s.update(np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32))
    r = s.result()
    assert "differs" in r["mismatch"]
    assert math.isnan(r["cosine"]) and math.isnan(r["top1_agreement"])


def test_output_stats_counts_nonfinite_and_labels_shape():
    s = OutputStats("y")
    a = np.ones((3, 4), np.float32)
    b = a.copy()
    b[1, 2] = np.inf
    s.update(a, b, labels=np.zeros((3, 7), np.int64))  # labels that do not fit: no accuracy
    r = s.result()
    assert r["nonfinite"] == 1
    assert "top1_accuracy" not in r


# --------------------------------------------------------------------------- task metrics


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.py"
    p.write_text(text)
    return p


def test_load_metric_errors(tmp_path: Path):
    with pytest.raises(RecipeError, match="not found"):
        load_metric("nope.py:f", tmp_path)
    _write(tmp_path, "def box_f1(a, b, c):\n    return {}\n")
    with pytest.raises(RecipeError, match="no function `box_f2`") as e:
        load_metric("m.py:box_f2", tmp_path)
    assert "box_f1" in e.value.hint
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(RecipeError, match="importing") as e:
        load_metric("bad.py:f", tmp_path)
    assert "boom" in e.value.causes[0]
    with pytest.raises(RecipeError, match=r"file\.py:function"):
        load_metric("m.py", tmp_path)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("return 3", "not a dict"),
        ("return {'x': 'high'}", "not a number"),
        ("return {'cosine': 1.0}", "built-in"),
        ("return {'two words': 1.0}", "identifier"),
        ("raise ValueError('bad shapes')", "raised ValueError"),
    ],
)
def test_run_metric_checks_what_it_returns(tmp_path: Path, body: str, match: str):
    _write(tmp_path, f"def f(a, b, labels):\n    {body}\n")
    m = load_metric("m.py:f", tmp_path)
    with pytest.raises(RecipeError, match=match):
        run_metric(m, {}, {}, None)


def test_run_metric_sorted_floats(tmp_path: Path):
    _write(tmp_path, "import numpy as np\ndef f(a, b, labels):\n    return {'z': np.float32(1.5), 'a': 2}\n")
    assert run_metric(load_metric("m.py:f", tmp_path), {}, {}, None) == {"a": 2.0, "z": 1.5}


# --------------------------------------------------------------------------- worked examples


def _dets(boxes, scores, classes=None):
    out = {"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32)}
    if classes is not None:
        out["classes"] = np.asarray(classes, np.int64)
    return out


def test_detection_f1_example():
    f = load_metric("detection_f1.py:box_f1", EXAMPLES).fn
    ref = _dets(
        [[[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 1, 1]], [[5, 5, 15, 15], [0, 0, 0, 0], [0, 0, 0, 0]]],
        [[0.9, 0.8, 0.1], [0.7, 0.0, 0.0]],  # third box of image 0 is below the threshold (padding)
        [[1, 2, 0], [1, 0, 0]],
    )
    assert f(ref, ref, None) == {"box_f1": 1.0, "box_precision": 1.0, "box_recall": 1.0}
    # candidate: image 0 second box moved far away (IoU 0), image 1 box slightly shifted (IoU 0.68)
    cand = _dets(
        [[[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 1, 1]], [[6, 6, 16, 16], [0, 0, 0, 0], [0, 0, 0, 0]]],
        [[0.9, 0.8, 0.1], [0.7, 0.0, 0.0]],
        [[1, 2, 0], [1, 0, 0]],
    )
    r = f(ref, cand, None)
    assert r["box_precision"] == pytest.approx(2 / 3) and r["box_recall"] == pytest.approx(2 / 3)
    assert r["box_f1"] == pytest.approx(2 / 3)
    # same boxes, wrong class on image 1: that match is lost
    wrong = _dets(ref["boxes"], ref["scores"], [[1, 2, 0], [3, 0, 0]])
    assert f(ref, wrong, None)["box_recall"] == pytest.approx(2 / 3)
    # an extra confident detection lowers precision only
    extra = _dets(ref["boxes"], [[0.9, 0.8, 0.95], [0.7, 0.0, 0.0]], ref["classes"])
    r = f(ref, extra, None)
    assert r["box_recall"] == 1.0 and r["box_precision"] == pytest.approx(3 / 4)


def test_detection_f1_iou_matrix():
    from importlib import util

    spec = util.spec_from_file_location("det_example", EXAMPLES / "detection_f1.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    iou = mod.iou_matrix(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]))
    np.testing.assert_allclose(iou, [[1 / 7, 1.0, 0.0]])


def test_sequence_agreement_example():
    f = load_metric("sequence_agreement.py:step_agreement", EXAMPLES).fn
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 5, 3)).astype(np.float32)  # 4 sequences, 5 steps, 3 classes
    b = a.copy()
    # flip step 2 of sequence 0 and step 4 of sequence 3
    for n, t in ((0, 2), (3, 4)):
        b[n, t] = -a[n, t]
    r = f({"logits": a}, {"logits": b}, None)
    assert r["step_agreement"] == pytest.approx(18 / 20)
    assert r["sequence_exact_match"] == pytest.approx(2 / 4)
    # step 4 of sequence 3 is padding: only one disagreement among 19 real steps
    labels = np.argmax(a, -1)
    labels[3, 4] = -100
    r = f({"logits": a}, {"logits": b}, labels)
    assert r["step_agreement"] == pytest.approx(18 / 19)
    assert r["sequence_exact_match"] == pytest.approx(3 / 4)
    assert r["step_accuracy_drop"] == pytest.approx(1 / 19)  # original matches labels everywhere
