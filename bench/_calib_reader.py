"""onnxruntime's CalibrationDataReader over the same calib.npz onnxzip uses (shared by the
bench scripts that run onnxruntime's quantize_static)."""

from __future__ import annotations

import numpy as np


class CalibReader:
    """Feeds ``data`` (arrays keyed by input name, batch on axis 0) in slices of ``batch``."""

    def __init__(self, data: dict[str, np.ndarray], batch: int = 32):
        self.data, self.batch, self.i = data, batch, 0
        self.n = len(next(iter(data.values())))

    def get_next(self):
        if self.i >= self.n:
            return None
        feed = {k: v[self.i: self.i + self.batch] for k, v in self.data.items()}
        self.i += self.batch
        return feed

    def rewind(self):
        self.i = 0
