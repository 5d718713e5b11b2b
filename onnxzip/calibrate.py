"""Activation ranges for static quantization, measured on the user's calibration data.

:func:`collect_ranges` runs the model (unmodified) in onnxruntime with the requested
intermediate tensors added as graph outputs, batch by batch, and keeps per tensor only a
running min/max and, for ``percentile`` / ``entropy``, a fixed-size histogram: peak memory
depends on the batch size and the number of bins, never on the number of samples.

Histograms (:class:`Histogram`) use bins of a power-of-two width anchored at 0, so when a
batch falls outside the current window the width doubles and neighbouring bins merge
exactly (no interpolation): the final histogram is the same whatever the batch order.

Range methods, each giving ``[lo, hi]`` that always contains 0 (uint8 activations need 0
exactly representable):

* ``minmax``: the observed minimum and maximum;
* ``percentile``: the ``(100 - p)``-th and ``p``-th percentiles (``p`` = 99.99 clips 0.01 %
  on each tail), never beyond the observed range;
* ``entropy``: the clipping threshold T of |x| minimising KL(P || Q) between the histogram
  of the nonzero values and its quantized version (TensorRT's calibration; exact zeros,
  which quantize exactly, are left out), then ``[max(min, -T), min(max, T)]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import onnx

from onnxzip.errors import DataError

__all__ = ["METHODS", "Histogram", "RangeCollector", "TensorRange", "collect_ranges"]

METHODS = ("minmax", "percentile", "entropy")
DEFAULT_BINS = 2048
# Candidate thresholds tried by the entropy search (evenly spaced); bounds its cost.
_KL_CANDIDATES = 256


class Histogram:
    """Counts of values in bins ``[k * width, (k + 1) * width)`` for k in a window of at
    most ``bins`` consecutive integers; ``width`` is a power of two that doubles (merging
    bin pairs exactly) whenever new data would not fit."""

    def __init__(self, bins: int = DEFAULT_BINS):
        if bins < 16:
            raise ValueError("a histogram needs at least 16 bins")
        self.bins = int(bins)
        self.width: float | None = None
        self.start = 0  # absolute index of counts[0]
        self.counts = np.zeros(0, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def _coarsen(self) -> None:
        """Double the width: absolute bin a becomes a // 2."""
        assert self.width is not None
        self.width *= 2.0
        if self.counts.size == 0:
            return
        new_start = self.start // 2
        idx = (np.arange(self.counts.size) + self.start) // 2 - new_start
        self.counts = np.bincount(idx, weights=self.counts, minlength=int(idx[-1]) + 1).astype(np.int64)
        self.start = new_start

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        x = x[np.isfinite(x)]
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if self.width is None:
            # Start at or below the smallest power of two whose window fits the batch and let
            # the loop below double it: the width is then always the smallest that fits all
            # data seen, whatever the batching, so merged and streamed histograms agree.
            exp = math.floor(math.log2((hi - lo) / self.bins)) if hi > lo else -40
            self.width = 2.0 ** max(exp, -40)
        while True:
            a = math.floor(lo / self.width)
            b = math.floor(hi / self.width)
            if self.counts.size:
                a = min(a, self.start)
                b = max(b, self.start + self.counts.size - 1)
            if b - a + 1 <= self.bins:
                break
            self._coarsen()
        idx = np.floor(x / self.width).astype(np.int64) - a
        new = np.bincount(idx, minlength=b - a + 1).astype(np.int64)
        if self.counts.size:
            off = self.start - a
            new[off: off + self.counts.size] += self.counts
        self.counts, self.start = new, a

    def merge(self, other: "Histogram") -> None:
        """Add another histogram's counts (the coarser width wins)."""
        if other.width is None or other.counts.size == 0:
            return
        o = Histogram(other.bins)
        o.width, o.start, o.counts = other.width, other.start, other.counts.copy()
        if self.width is None:
            self.width, self.start, self.counts = o.width, o.start, o.counts
            return
        while o.width < self.width:
            o._coarsen()
        while self.width < o.width:
            self._coarsen()
        while True:
            a = min(self.start, o.start)
            b = max(self.start + self.counts.size, o.start + o.counts.size) - 1
            if b - a + 1 <= self.bins:
                break
            self._coarsen()
            o._coarsen()
        out = np.zeros(b - a + 1, dtype=np.int64)
        out[self.start - a: self.start - a + self.counts.size] += self.counts
        out[o.start - a: o.start - a + o.counts.size] += o.counts
        self.counts, self.start = out, a

    def edges(self) -> np.ndarray:
        """Bin edges (length counts.size + 1)."""
        w = self.width or 0.0
        return (np.arange(self.counts.size + 1) + self.start) * w

    def quantile(self, q: float, upper: bool) -> float:
        """The value below which a fraction ``q`` of the samples lie, as a bin edge (the
        upper edge of the bin holding it when ``upper``, else its lower edge)."""
        c = np.cumsum(self.counts)
        total = c[-1]
        k = int(np.searchsorted(c, q * total, side="left"))
        k = min(max(k, 0), self.counts.size - 1)
        e = self.edges()
        return float(e[k + 1] if upper else e[k])

    def magnitude(self) -> np.ndarray:
        """Counts of |x| in bins [j * width, (j + 1) * width), j >= 0 (exact fold at 0)."""
        ab = np.abs(np.arange(self.counts.size) + self.start)
        neg = (np.arange(self.counts.size) + self.start) < 0
        j = np.where(neg, ab - 1, ab)
        return np.bincount(j, weights=self.counts).astype(np.float64)


def _kl_threshold(mag: np.ndarray, width: float, levels: int) -> float:
    """TensorRT entropy calibration on a magnitude histogram: the threshold (a multiple of
    ``width``) minimising KL(P || Q), Q being P squeezed into ``levels`` bins and expanded."""
    n = mag.size
    if n <= levels:
        return n * width
    cands = np.unique(np.linspace(levels, n, min(_KL_CANDIDATES, n - levels + 1)).astype(np.int64))
    best, best_i = math.inf, n
    for i in cands:
        p = mag[:i].copy()
        p[-1] += mag[i:].sum()  # outliers clip into the last bin
        nz = p > 0
        if not nz.any():
            continue
        # Q: the first i bins merged into `levels` groups; each group's mass spread evenly
        # over its nonzero bins.
        grp = (np.arange(i) * levels) // i
        mass = np.bincount(grp, weights=mag[:i], minlength=levels)
        cnt = np.bincount(grp, weights=(mag[:i] > 0).astype(np.float64), minlength=levels)
        q = np.where(mag[:i] > 0, mass[grp] / np.maximum(cnt[grp], 1), 0.0)
        pn = p / p.sum()
        qs = q.sum()
        if qs <= 0:
            continue
        qn = q / qs
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(nz, pn * np.log(pn / np.where(qn > 0, qn, 1e-12)), 0.0)
        kl = float(terms.sum())
        if kl < best:
            best, best_i = kl, int(i)
    return best_i * width


@dataclass
class TensorRange:
    """The observed statistics of one tensor and the range chosen for quantizing it."""

    name: str
    min: float
    max: float
    lo: float
    hi: float
    count: int

    def to_dict(self) -> dict[str, float | int | str]:
        return {"name": self.name, "min": self.min, "max": self.max, "lo": self.lo, "hi": self.hi, "count": self.count}


class RangeCollector:
    """Streaming statistics for a set of tensors: feed batches with :meth:`update`, read
    the ranges with :meth:`ranges`."""

    def __init__(self, names: Iterable[str], method: str = "minmax", percentile: float = 99.99, bins: int = DEFAULT_BINS):
        if method not in METHODS:
            raise ValueError(f"unknown calibration method `{method}`; valid: {', '.join(METHODS)}")
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"`percentile` must be in (0, 100], got {percentile}")
        self.method = method
        self.percentile = float(percentile)
        self.names = list(dict.fromkeys(names))
        self.min = {n: math.inf for n in self.names}
        self.max = {n: -math.inf for n in self.names}
        self.count = {n: 0 for n in self.names}
        self.zeros = {n: 0 for n in self.names}
        self.hist = {n: Histogram(bins) for n in self.names} if method != "minmax" else {}

    def update(self, name: str, value: np.ndarray) -> None:
        a = np.asarray(value)
        if a.size == 0:
            return
        if not np.isfinite(a).all():
            a = a[np.isfinite(a)]
            if a.size == 0:
                return
        self.min[name] = min(self.min[name], float(a.min()))
        self.max[name] = max(self.max[name], float(a.max()))
        self.count[name] += int(a.size)
        if self.hist:
            self.zeros[name] += int(np.count_nonzero(a == 0))
            self.hist[name].add(a)

    def ranges(self) -> dict[str, TensorRange]:
        out = {}
        for n in self.names:
            if self.count[n] == 0:
                continue
            mn, mx = self.min[n], self.max[n]
            lo, hi = mn, mx
            if self.method == "percentile":
                h = self.hist[n]
                q = self.percentile / 100.0
                hi = min(mx, h.quantile(q, upper=True))
                lo = max(mn, h.quantile(1.0 - q, upper=False))
            elif self.method == "entropy":
                h = self.hist[n]
                levels = 256 if mn >= 0 else 128
                mag = h.magnitude()
                # Exact zeros (ReLU outputs: often half the values) quantize exactly; left
                # in, their spike makes every merged-bin Q look bad and the search clip hard.
                if mag.size:
                    mag[0] -= self.zeros[n]
                t = _kl_threshold(mag, h.width or 0.0, levels)
                lo, hi = max(mn, -t), min(mx, t)
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            out[n] = TensorRange(n, mn, mx, lo, hi, self.count[n])
        return out


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    # An output with only a name is enough: onnxruntime infers its type.
    m.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in have])
    return m


def collect_ranges(
    model: onnx.ModelProto,
    names: Iterable[str],
    source,
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    bins: int = DEFAULT_BINS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, TensorRange]:
    """Ranges of tensors ``names`` of the main graph of ``model`` over the calibration data
    ``source`` (an :class:`onnxzip.data.CalibrationSource`), computed by ``method``.

    The model is run as given (a copy with the tensors added as outputs), on onnxruntime's
    CPU provider with basic optimizations. Raises :class:`DataError` when the data yields
    no batch.
    """
    from onnxzip.data import input_signature
    from onnxzip.runtime import session_from_model

    names = list(dict.fromkeys(names))
    collector = RangeCollector(names, method, percentile, bins)
    if not names:
        return {}
    sess = session_from_model(_with_outputs(model, names), ["CPUExecutionProvider"], optimization="basic")
    out_names = [o.name for o in sess.get_outputs()]
    wanted = [n for n in out_names if n in collector.min]
    specs = input_signature(model)
    batches = 0
    for feeds in source.batches(specs):
        values = sess.run(wanted, feeds)
        for n, v in zip(wanted, values, strict=False):
            if np.issubdtype(np.asarray(v).dtype, np.floating):
                collector.update(n, v)
        batches += 1
        if progress:
            progress(f"calibration batch {batches}")
    if batches == 0:
        raise DataError(
            "calibration data yields no batch for this model",
            hint="the model has a fixed batch size larger than the calibration sample count; give more samples",
        )
    return collector.ranges()
