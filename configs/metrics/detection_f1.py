"""Task metric example: detection F1 of the compressed model against the original's boxes.

The original model's detections are the reference ("ground truth"); the compressed model's
detections are matched to them greedily, highest score first, each to the unmatched reference
box of the same class with the highest IoU, if that IoU is at least ``IOU_THRESHOLD``.
Precision = matched / compressed detections, recall = matched / reference detections, summed
over the whole evaluation set; F1 is their harmonic mean.

Expected outputs (names below; ``None`` finds them by shape):

- boxes   float [N, K, 4]  (x1, y1, x2, y2), K detection slots per image
- scores  float [N, K]     detections below ``SCORE_THRESHOLD`` are ignored (padding slots)
- classes int   [N, K]     optional; without it every box has the same class

Use it from a recipe (the path is relative to the recipe; copy this file next to yours)::

    evaluate:
      data: eval.npz
      metrics: [detection_f1.py:box_f1]
    gates:
      box_f1: ">= 0.95"

A recipe that names a metric file runs that Python code: review it like any code you run.
"""

from __future__ import annotations

import numpy as np

BOXES: str | None = None
SCORES: str | None = None
CLASSES: str | None = None
SCORE_THRESHOLD = 0.5
IOU_THRESHOLD = 0.5


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [A, 4] with every box in ``b`` [B, 4] (x1, y1, x2, y2)."""
    a = a.astype(np.float64)[:, None, :]
    b = b.astype(np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _find(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    boxes = outputs[BOXES] if BOXES else next((v for v in outputs.values() if v.ndim == 3 and v.shape[-1] == 4), None)
    if boxes is None:
        raise ValueError(f"no boxes output [N, K, 4] among {sorted(outputs)}; set BOXES in detection_f1.py")
    lead = boxes.shape[:2]
    scores = outputs[SCORES] if SCORES else next((v for v in outputs.values() if v.shape == lead and v.dtype.kind == "f"), None)
    if scores is None:
        raise ValueError(f"no scores output [N, K] among {sorted(outputs)}; set SCORES in detection_f1.py")
    classes = outputs[CLASSES] if CLASSES else next((v for v in outputs.values() if v.shape == lead and v.dtype.kind in "iu"), None)
    return boxes, scores, classes


def match_image(ref_boxes, ref_classes, boxes, scores, classes, iou_threshold: float = IOU_THRESHOLD) -> int:
    """Greedy matches between one image's candidate and reference detections."""
    if len(ref_boxes) == 0 or len(boxes) == 0:
        return 0
    iou = iou_matrix(boxes, ref_boxes)
    iou[classes[:, None] != ref_classes[None, :]] = 0.0
    taken = np.zeros(len(ref_boxes), dtype=bool)
    matched = 0
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            taken[j] = True
            matched += 1
    return matched


def box_f1(original: dict[str, np.ndarray], compressed: dict[str, np.ndarray], labels: np.ndarray | None) -> dict[str, float]:
    """F1, precision and recall of the compressed model's detections against the original's."""
    rb, rs, rc = _find(original)
    cb, cs, cc = _find(compressed)
    matched = n_ref = n_cand = 0
    for i in range(rb.shape[0]):
        rk, ck = rs[i] >= SCORE_THRESHOLD, cs[i] >= SCORE_THRESHOLD
        ref_cls = rc[i][rk] if rc is not None else np.zeros(int(rk.sum()), dtype=np.int64)
        cand_cls = cc[i][ck] if cc is not None else np.zeros(int(ck.sum()), dtype=np.int64)
        matched += match_image(rb[i][rk], ref_cls, cb[i][ck], cs[i][ck], cand_cls)
        n_ref += int(rk.sum())
        n_cand += int(ck.sum())
    precision = matched / n_cand if n_cand else (1.0 if n_ref == 0 else 0.0)
    recall = matched / n_ref if n_ref else (1.0 if n_cand == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"box_f1": f1, "box_precision": precision, "box_recall": recall}
