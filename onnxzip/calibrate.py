"""Calibration statistics measured on the user's data: activation ranges for static
quantization, and the layer-input statistics of data-aware compression.

**Layer statistics** (:func:`collect_stats`, :class:`StatsCache`, :func:`layer_stats`). For
each weight layer a data-aware pass targets, the rows ``x`` its weight multiplies (a
:class:`LayerView`): for MatMul/Gemm the input's last axis, every leading axis flattened
(Gemm ``transA`` transposes first); for Conv the im2col patches, ``C_in/group * prod(kernel)``
values ordered like the weight's ``[C_in/group, *kernel]`` (pads, strides, dilations and
``auto_pad`` applied; one set of statistics per group). Per view, streamed batch by batch:
the Gram matrix ``H = sum x x^T`` and the row sum (``E[x]`` = sum / rows). Patches are built
in chunks of at most ``PATCH_CHUNK`` values, so memory is the statistics plus one batch,
whatever the sample count. Products run in float32 (BLAS) and accumulate in float64.

Which model: the statistics come from the model as the first data-aware pass of a run sees
it, normally the original (the pipeline's first weight pass), and are reused by the later
passes for every layer input that still exists with the same view: a recipe ``prune
(sparsegpt) -> quantize (gptq)`` runs the model once, and both passes fit their layers to the
uncompressed model's activations. A later pass that needs an input the first run did not
collect (another target set, or a tensor a rewrite created) gets it from the model as it is
then, in one more run. Cache key: (model content hash, data file hash, samples, view).

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

import hashlib
import math
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import onnx
from onnx import helper

from onnxzip.errors import DataError

__all__ = [
    "METHODS",
    "Histogram",
    "LayerStats",
    "LayerView",
    "RangeCollector",
    "StatsCache",
    "StatsRun",
    "TensorRange",
    "collect_ranges",
    "collect_stats",
    "conv_patches",
    "layer_stats",
    "layer_view",
]

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


# --------------------------------------------------------------------------- layer statistics

# Most values one chunk of im2col patches (or of dense rows) may hold (float32: 4 MiB).
PATCH_CHUNK = 1 << 20
STAT_OPS = ("MatMul", "Gemm", "Conv")


@dataclass(frozen=True)
class LayerView:
    """How a weight layer reads its input ``tensor``: the rows whose statistics it needs."""

    tensor: str
    kind: str  # "dense" (MatMul/Gemm) or "conv"
    k: int  # values per row (per group for a grouped conv)
    groups: int = 1
    trans: bool = False  # Gemm transA
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    auto_pad: str = "NOTSET"

    def describe(self) -> str:
        if self.kind == "dense":
            return f"`{self.tensor}` rows of {self.k}" + (" (transposed)" if self.trans else "")
        kern = "x".join(map(str, self.kernel))
        grp = f", {self.groups} groups" if self.groups > 1 else ""
        return f"`{self.tensor}` {kern} patches of {self.k}{grp}"


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def layer_view(node: onnx.NodeProto, weight_dims: Sequence[int], input_index: int = 1) -> LayerView | str:
    """The statistics view of the input of ``node`` whose weight (input ``input_index``)
    has dims ``weight_dims``; a string saying why there is none otherwise."""
    op = node.op_type
    dims = [int(d) for d in weight_dims]
    if op not in STAT_OPS:
        return f"data-aware statistics cover MatMul, Gemm and Conv, not `{op}`"
    if input_index != 1 or not node.input or not node.input[0]:
        return f"the weight is input {input_index} of the `{op}`, not its second input"
    x = node.input[0]
    if op == "MatMul":
        if len(dims) != 2:
            return f"MatMul weight of rank {len(dims)}: statistics need a 2-D weight"
        return LayerView(x, "dense", dims[0])
    if op == "Gemm":
        if len(dims) != 2:
            return f"Gemm weight of shape {dims}"
        k = dims[1] if _attr(node, "transB", 0) else dims[0]
        return LayerView(x, "dense", k, trans=bool(_attr(node, "transA", 0)))
    if len(dims) < 3:
        return f"Conv weight of rank {len(dims)}"
    nd = len(dims) - 2
    kernel = tuple(dims[2:])
    group = int(_attr(node, "group", 1))
    strides = tuple(int(v) for v in _attr(node, "strides", [1] * nd))
    dil = tuple(int(v) for v in _attr(node, "dilations", [1] * nd))
    pads = tuple(int(v) for v in _attr(node, "pads", [0] * (2 * nd)))
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if len(strides) != nd or len(dil) != nd or len(pads) != 2 * nd or group < 1 or dims[0] % group:
        return "Conv attributes do not match its weight"
    k = dims[1] * int(np.prod(kernel))
    return LayerView(x, "conv", k, groups=group, kernel=kernel, strides=strides, dilations=dil, pads=pads, auto_pad=auto_pad)


def _conv_pads(view: LayerView, spatial: Sequence[int]) -> list[int]:
    nd = len(view.kernel)
    if view.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i, size in enumerate(spatial):
            out = -(-size // view.strides[i])
            total = max((out - 1) * view.strides[i] + (view.kernel[i] - 1) * view.dilations[i] + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, big) if view.auto_pad == "SAME_UPPER" else (big, small)
        return pads
    if view.auto_pad == "VALID":
        return [0] * (2 * nd)
    return list(view.pads)


def conv_patches(x: np.ndarray, view: LayerView, chunk: int = PATCH_CHUNK) -> Iterator[np.ndarray]:
    """The im2col rows of a Conv input ``x`` [B, C, *spatial] in chunks of at most ``chunk``
    values (at least one output row): float32 ``[M, C * prod(kernel)]``, columns ordered
    (channel, kernel offsets) like the weight ``[O, C/group, *kernel]`` flattened per group."""
    nd = len(view.kernel)
    x = np.asarray(x)
    if x.ndim != nd + 2:
        raise ValueError(f"Conv input has rank {x.ndim}, expected {nd + 2}")
    c = x.shape[1]
    if c != view.k // int(np.prod(view.kernel)) * view.groups:
        raise ValueError(f"Conv input has {c} channels, the weight expects {view.k // int(np.prod(view.kernel)) * view.groups}")
    pads = _conv_pads(view, x.shape[2:])
    if any(pads):
        x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    eff = [(view.kernel[i] - 1) * view.dilations[i] + 1 for i in range(nd)]
    if any(x.shape[2 + i] < eff[i] for i in range(nd)):
        raise ValueError("Conv input is smaller than the kernel")
    win = np.lib.stride_tricks.sliding_window_view(x, eff, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in view.strides) + tuple(slice(None, None, d) for d in view.dilations)
    v = np.moveaxis(win[sl], 1, 1 + nd)  # [B, *out, C, *kernel]
    out = v.shape[1: 1 + nd]
    width = c * int(np.prod(view.kernel))
    per_sample = int(np.prod(out)) * width
    if per_sample <= chunk:
        step = max(1, chunk // max(per_sample, 1))
        for b in range(0, v.shape[0], step):
            yield np.asarray(v[b: b + step], dtype=np.float32).reshape(-1, width)
        return
    per_row = max(1, int(np.prod(out[1:])) * width)
    rows = max(1, chunk // per_row)
    for b in range(v.shape[0]):
        for r in range(0, out[0], rows):
            yield np.asarray(v[b, r: r + rows], dtype=np.float32).reshape(-1, width)


@dataclass
class LayerStats:
    """Statistics of one :class:`LayerView` over the calibration rows: ``gram[g]`` = sum of
    x x^T (float64 [groups, k, k]), ``total[g]`` = sum of x (float64 [groups, k])."""

    view: LayerView
    gram: np.ndarray
    total: np.ndarray
    rows: int
    fourth: np.ndarray | None = None  # sum over rows of ||x||^4, per group (for the shrinkage)
    model_hash: str = ""

    @property
    def mean(self) -> np.ndarray:
        """E[x] per group, float64 [groups, k]."""
        return self.total / max(self.rows, 1)

    def shrinkage(self, g: int = 0) -> float:
        """Ledoit-Wolf shrinkage intensity (0..1) of the second-moment estimate S = H / n
        toward ``mu I`` (``mu = tr S / k``): ``min(b2, d2) / d2`` with
        ``d2 = ||S - mu I||^2`` and ``b2 = (sum ||x||^4 / n - ||S||^2) / n``. Near 0 with many
        rows per dimension; large when H comes from few rows (e.g. one pooled row per sample),
        where an unshrunk H lets OBS updates fit the calibration set."""
        n = self.rows
        if self.fourth is None or n < 2:
            return 0.0
        s = self.gram[g] / n
        k = s.shape[0]
        mu = float(np.trace(s)) / k
        fro = float(np.sum(s * s))
        d2 = fro - 2 * mu * float(np.trace(s)) + mu * mu * k
        if d2 <= 0:
            return 0.0
        b2 = max((float(self.fourth[g]) / n - fro) / n, 0.0)
        return min(b2, d2) / d2

    def hessian(self, g: int = 0, shrink: bool = True) -> np.ndarray:
        """H = sum x x^T of group ``g``, shrunk toward ``tr(H)/k I`` by :meth:`shrinkage`."""
        h = self.gram[g]
        a = self.shrinkage(g) if shrink else 0.0
        if a <= 0:
            return h
        out = h * (1.0 - a)
        out[np.diag_indices_from(out)] += a * float(np.trace(h)) / h.shape[0]
        return out

    @property
    def nbytes(self) -> int:
        return int(self.gram.nbytes + self.total.nbytes)


class _Accumulator:
    def __init__(self, view: LayerView):
        self.view = view
        self.gram = np.zeros((view.groups, view.k, view.k), dtype=np.float64)
        self.total = np.zeros((view.groups, view.k), dtype=np.float64)
        self.fourth = np.zeros(view.groups, dtype=np.float64)
        self.rows = 0

    def _add_rows(self, rows: np.ndarray) -> None:
        g, k = self.view.groups, self.view.k
        if g == 1:
            self.gram[0] += rows.T @ rows
            self.total[0] += rows.sum(axis=0, dtype=np.float64)
            norms = np.einsum("ij,ij->i", rows, rows).astype(np.float64)  # float32 products: no copy of rows
            self.fourth[0] += float(norms @ norms)
        else:
            r3 = rows.reshape(rows.shape[0], g, k).transpose(1, 0, 2)  # [g, M, k]
            self.gram += np.matmul(r3.transpose(0, 2, 1), r3)
            self.total += r3.sum(axis=1, dtype=np.float64)
            norms = np.einsum("gij,gij->gi", r3, r3).astype(np.float64)
            self.fourth += np.sum(norms * norms, axis=1)
        self.rows += rows.shape[0]

    def add(self, x: np.ndarray) -> None:
        v = self.view
        x = np.asarray(x)
        if v.kind == "dense":
            if v.trans:
                if x.ndim != 2:
                    raise ValueError(f"Gemm input has rank {x.ndim}, expected 2")
                x = x.T
            if x.ndim == 0 or x.shape[-1] != v.k:
                raise ValueError(f"input rows have {x.shape[-1] if x.ndim else 0} values, the weight expects {v.k}")
            rows = np.asarray(x, dtype=np.float32).reshape(-1, v.k)
            step = max(1, PATCH_CHUNK // max(v.k, 1))
            for i in range(0, rows.shape[0], step):
                self._add_rows(rows[i: i + step])
            return
        for chunk in conv_patches(x, v):
            self._add_rows(chunk)


@dataclass
class StatsRun:
    """One streaming run of the model over the calibration data."""

    stats: dict[LayerView, LayerStats]
    failed: dict[LayerView, str]
    seconds: float
    peak_bytes: int  # tracemalloc peak during the run (Python and numpy allocations)
    batches: int
    samples: int
    model_hash: str = ""

    @property
    def stats_bytes(self) -> int:
        return sum(s.nbytes for s in self.stats.values())

    def describe(self) -> str:
        return (
            f"calibration statistics: {len(self.stats)} layer input view(s) from {self.samples} samples "
            f"in {self.batches} batches, {self.seconds:.2f} s, statistics {self.stats_bytes / 2**20:.2f} MiB, "
            f"peak {self.peak_bytes / 2**20:.1f} MiB traced"
        )


def model_digest(model: onnx.ModelProto) -> str:
    """sha256 of the model's content (graph structure and tensor bytes), without serializing
    the whole model at once."""
    h = hashlib.sha256()
    g = model.graph
    for n in g.node:
        h.update(n.SerializeToString(deterministic=True))
    for vi in list(g.input) + list(g.output):
        h.update(vi.name.encode())
    for t in g.initializer:
        h.update(t.name.encode())
        h.update(np.asarray(list(t.dims), dtype=np.int64).tobytes())
        h.update(int(t.data_type).to_bytes(4, "little"))
        h.update(t.raw_data if t.HasField("raw_data") else t.SerializeToString(deterministic=True))
    return h.hexdigest()


def _data_digest(source: Any) -> str:
    path = getattr(getattr(source, "data", None), "path", None)
    h = hashlib.sha256()
    if path is not None:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(repr(id(source)).encode())
    return h.hexdigest()


def collect_stats(
    model: onnx.ModelProto,
    views: Iterable[LayerView],
    source: Any,
    *,
    progress: Callable[[str], None] | None = None,
) -> StatsRun:
    """Statistics of ``views`` (inputs of main-graph nodes) over the calibration data
    ``source`` (an :class:`onnxzip.data.CalibrationSource`), in one onnxruntime run.

    The needed tensors are exposed as graph outputs for the session only (the model is
    restored before returning). A view whose tensor does not match its shape lands in
    ``failed`` with the reason. Raises :class:`DataError` when the data yields no batch.
    """
    import onnxruntime  # noqa: F401  (imported before tracing: module objects are not statistics)

    from onnxzip.data import input_signature
    from onnxzip.runtime import session_from_model

    views = list(dict.fromkeys(views))
    t0 = time.perf_counter()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    if not tracing:
        tracemalloc.reset_peak()
    specs = input_signature(model)
    feed_names = {s.name for s in specs}
    fetch = list(dict.fromkeys(v.tensor for v in views if v.tensor not in feed_names))
    graph = model.graph
    n_out = len(graph.output)
    have = {o.name for o in graph.output}
    graph.output.extend([onnx.ValueInfoProto(name=n) for n in fetch if n not in have])
    try:
        sess = session_from_model(model, ["CPUExecutionProvider"], optimization="basic")
    finally:
        del graph.output[n_out:]
    acc = {v: _Accumulator(v) for v in views}
    failed: dict[LayerView, str] = {}
    batches = samples = 0
    try:
        for feeds in source.batches(specs):
            got = dict(zip(fetch, sess.run(fetch, feeds), strict=True)) if fetch else {}
            for v in views:
                if v in failed:
                    continue
                x = feeds[v.tensor] if v.tensor in feed_names else got[v.tensor]
                try:
                    acc[v].add(x)
                except ValueError as e:
                    failed[v] = str(e)
            first = next(iter(feeds.values()), None)
            batches += 1
            samples += int(first.shape[0]) if first is not None and first.ndim else 1
            if progress:
                progress(f"calibration statistics: batch {batches}")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not tracing:
            tracemalloc.stop()
    if batches == 0:
        raise DataError(
            "calibration data yields no batch for this model",
            hint="the model has a fixed batch size larger than the calibration sample count; give more samples",
        )
    stats = {v: LayerStats(v, a.gram, a.total, a.rows, a.fourth) for v, a in acc.items() if v not in failed}
    return StatsRun(stats, failed, time.perf_counter() - t0, max(peak, 0), batches, samples)


@dataclass
class StatsCache:
    """Layer statistics shared by the data-aware passes of one run (kept on the
    :class:`~onnxzip.passes.base.PassContext`). See the module docstring for which model
    the statistics come from."""

    entries: dict[tuple, LayerStats] = field(default_factory=dict)
    origin: str | None = None
    runs: list[StatsRun] = field(default_factory=list)
    _data: dict[int, str] = field(default_factory=dict)

    def get(
        self,
        model: onnx.ModelProto,
        views: Iterable[LayerView],
        source: Any,
        progress: Callable[[str], None] | None = None,
    ) -> tuple[dict[LayerView, LayerStats], dict[LayerView, str], list[str]]:
        """(statistics by view, views that failed with the reason, notes for the report)."""
        views = list(dict.fromkeys(views))
        if id(source) not in self._data:
            self._data[id(source)] = _data_digest(source)
        data = (self._data[id(source)], getattr(source, "samples", None))
        current = model_digest(model)
        if self.origin is None:
            self.origin = current
        out: dict[LayerView, LayerStats] = {}
        missing = []
        for v in views:
            hit = self.entries.get((self.origin, *data, v)) or self.entries.get((current, *data, v))
            if hit is not None:
                out[v] = hit
            else:
                missing.append(v)
        notes = []
        failed: dict[LayerView, str] = {}
        if views and not missing:
            notes.append(f"calibration statistics: {len(views)} layer input view(s) reused from an earlier pass (no model run)")
        if missing:
            run = collect_stats(model, missing, source, progress=progress)
            run.model_hash = current
            self.runs.append(run)
            for v, st in run.stats.items():
                st.model_hash = current
                self.entries[(current, *data, v)] = st
                out[v] = st
            failed.update(run.failed)
            which = "the original model" if current == self.origin else "the model as compressed so far (not collected by an earlier pass)"
            reused = len(views) - len(missing)
            notes.append(run.describe() + f", from {which}" + (f"; {reused} more reused" if reused else ""))
        return out, failed, notes


def layer_stats(
    context: Any, model: onnx.ModelProto, views: Iterable[LayerView]
) -> tuple[dict[LayerView, LayerStats], dict[LayerView, str], list[str]]:
    """:meth:`StatsCache.get` on the context's cache (created on first use) and calibration data."""
    if getattr(context, "stats_cache", None) is None:
        context.stats_cache = StatsCache()
    return context.stats_cache.get(model, views, context.calibration, progress=getattr(context, "progress", None))
