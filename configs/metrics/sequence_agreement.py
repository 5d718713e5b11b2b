"""Task metric example: per-step argmax agreement for sequence outputs.

For an output of per-step class scores ``[N, T, C]`` (token logits, CTC frames, tagger
scores) it compares ``argmax`` over C at every step of every sequence:

- ``step_agreement``: fraction of steps whose argmax is the same in both models;
- ``sequence_exact_match``: fraction of sequences where every step agrees.

Padding is left out when the data's ``labels`` are ``[N, T]`` with ``IGNORE_INDEX`` (-100,
the usual convention) at padded steps; without labels every step counts. With labels it also
returns ``step_accuracy_drop``: original minus compressed per-step accuracy.

Use it from a recipe (the path is relative to the recipe; copy this file next to yours)::

    evaluate:
      data: eval.npz
      metrics: [sequence_agreement.py:step_agreement]
    gates:
      step_agreement: ">= 0.99"

A recipe that names a metric file runs that Python code: review it like any code you run.
"""

from __future__ import annotations

import numpy as np

OUTPUT: str | None = None  # output name; None: the first float output of rank >= 3
IGNORE_INDEX = -100


def _pick(outputs: dict[str, np.ndarray]) -> np.ndarray:
    if OUTPUT:
        return outputs[OUTPUT]
    for v in outputs.values():
        if v.ndim >= 3 and v.dtype.kind == "f":
            return v
    raise ValueError(f"no sequence output [N, T, C] among {sorted(outputs)}; set OUTPUT in sequence_agreement.py")


def step_agreement(original: dict[str, np.ndarray], compressed: dict[str, np.ndarray], labels: np.ndarray | None) -> dict[str, float]:
    """Per-step and per-sequence argmax agreement (padding excluded via labels)."""
    a = np.argmax(_pick(original), axis=-1)  # [N, T, ...]
    b = np.argmax(_pick(compressed), axis=-1)
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    mask = np.ones_like(a, dtype=bool)
    lab = None
    if labels is not None and labels.reshape(labels.shape[0], -1).shape == a.shape:
        lab = labels.reshape(a.shape)
        mask = lab != IGNORE_INDEX
    same = (a == b) | ~mask
    steps = int(mask.sum())
    out = {
        "step_agreement": float(((a == b) & mask).sum() / steps) if steps else 1.0,
        "sequence_exact_match": float(same.all(axis=1).mean()) if a.shape[0] else 1.0,
    }
    if lab is not None and steps:
        out["step_accuracy_drop"] = float((((a == lab) & mask).sum() - ((b == lab) & mask).sum()) / steps)
    return out
