"""onnxzip presets against peers on the real benchmark models, side by side, from ONE run.

    python bench/compare.py                                  # full run: writes bench/results.md + README block
    python bench/compare.py --quick --only magika            # development loop (subsets, short timings; writes nothing)
    python bench/compare.py --recipe tuned=my-recipe.yaml    # extra rows for your own (e.g. tuned) recipes

For every model prepared by ``bench/models.py`` (magika, ocr_det, ocr_cls, ocr_rec; cached,
never downloaded here) and on the same inputs (``eval.npz``; calibration from ``calib.npz``):

* onnxzip presets: int8-dynamic, int8-static, int4-weight-only, kmeans-5bit, deep-compression
  (plus the same recipe without its ``huffman`` pass), lowrank-90, prune-channels-25, and
  any ``--recipe NAME=path.yaml``. A preset that changes no weight is reported as
  ``n/a: reason``; one that raises is reported with its error line. The harness never stops.
* peers: onnxruntime ``quantize_dynamic`` (per channel), ``quantize_static`` (QDQ, per channel,
  the same calib.npz), ``MatMulNBitsQuantizer`` (4 bit, block 32; models with MatMul only);
  onnxsim's own data-free compression functions (``prune_magnitude_cpp`` global 60% +
  ``apply_kmeans_quantization_cpp``, 16 centroids); ``zstd -19`` of the fp32 file, of the
  onnxsim output and of onnxzip's pre-Huffman deep-compression file.
* per row: stored bytes, ratio to fp32, CPU latency ratio to fp32 at 1 and 2 threads (batch 1,
  median of interleaved runs: one call per variant in turn, rotating order), top-1 agreement and
  cosine similarity with fp32 over the eval outputs (ocr_det: pixel agreement of the probability
  map > the model's threshold, mask IoU), the task figure from ``bench/models.py``'s ``score()``,
  compression wall time and load time (session creation, Huffman/zstd decoding included).
* a targets section computed from the numbers (met / MISSED with the measured gap), where the
  deep-compression bytes go, Huffman against zstd per coded stream, and which ops onnxruntime
  executed for every variant slower than fp32.

A full run writes ``bench/results.md`` and the README block between the
``bench/compare.py:results`` markers; ``--quick`` and ``--only`` runs write nothing unless
``--write`` is given. ``--json PATH`` dumps every measured number.

Needs the benchmark cache (``python bench/models.py``), onnxruntime's quantization tools
(``pip install onnx-ir``), ``zstandard``, and onnxsim (an onnxzip dependency).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxzip.executed_ops import ExecutedOps
from onnxzip.executed_ops import compare as executed_compare
from onnxzip.executed_ops import describe as executed_describe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402  (bench/models.py)
from _calib_reader import CalibReader  # noqa: E402

PRESETS = ("int8-dynamic", "int8-static", "int4-weight-only", "kmeans-5bit", "deep-compression", "deep-compression-calib", "lowrank-90", "prune-channels-25")
PRE_HUFFMAN = "deep-compression-pre-huffman"
# onnxzip preset -> the onnxruntime quantizer it is held against
PEER_OF = {"int8-dynamic": "ort-dynamic", "int8-static": "ort-static", "int4-weight-only": "ort-matmulnbits"}
ZSTD_LEVEL = 19
MIN_TOLERANCE = 0.03  # latency ratios within 3% (or the measured noise floor, if larger) count as equal
TUNE_BUDGET = "top1_agreement>=0.99"
DC_FAMILY = ("deep-compression", "deep-compression-calib", "tuned")  # rows judged against targets 1 and 2
ONNXSIM_SPARSITY = 0.6  # the same global magnitude sparsity as the deep-compression preset
QUICK_EVAL = {"magika": 96, "ocr_cls": 64, "ocr_det": 2, "ocr_rec": 16}
QUICK_CALIB = {"magika": 32, "ocr_cls": 32, "ocr_det": 2, "ocr_rec": 16}
README_START = "<!-- bench/compare.py:results:start -->"
README_END = "<!-- bench/compare.py:results:end -->"
AGREE_NAME = {
    "classification": "top-1 agreement",
    "text-recognition": "top-1 agreement per CTC step",
    "text-detection": "pixel agreement of prob > thresh",
}


def log(msg: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def first_line(e: BaseException, limit: int = 300) -> str:
    """One line for a table cell: onnxzip errors give message + causes, others type + text."""
    if hasattr(e, "render") and hasattr(e, "message"):
        text = "; ".join([e.message, *getattr(e, "causes", [])])
    else:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        text = f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    text = re.sub(r"\s+", " ", text).replace("|", "/")
    return text[:limit] + ("..." if len(text) > limit else "")


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    key: str
    group: str  # baseline | onnxzip | tuned | peer | zstd
    label: str
    how: str = ""
    path: Path | None = None  # the ONNX file that runs (None: runs as `runs_as`)
    stored: int | None = None  # bytes as stored (zstd rows: the compressed blob)
    compress_s: float | None = None
    status: str = "ok"  # ok | n/a | failed
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    runs_as: str | None = None  # zstd rows: the row whose (decompressed) model runs
    decode_s: float = 0.0  # zstd rows: decompression time
    load_s: float | None = None
    agree: float | None = None
    cosine: float | None = None
    cosine_min: float | None = None
    iou: float | None = None
    task: dict | None = None
    out_sha: str | None = None
    eval_s: float | None = None
    latency: dict[int, float] = field(default_factory=dict)  # threads -> seconds (median)
    ops: dict[str, int] | None = None  # ops onnxruntime executed (optimized graph, 1 thread)
    executed: Any = field(default=None, repr=False)  # onnxzip.executed_ops.ExecutedOps of that graph (for explain_ops)
    report: dict | None = None  # onnxzip compression report (trimmed)
    by_kind: dict[str, int] | None = None  # initializer bytes by dtype + graph

    @property
    def runnable(self) -> bool:
        return self.status == "ok" and self.path is not None and self.runs_as is None


def file_bytes(path: Path) -> int:
    total = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    seen = set()
    for t in proto.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location" and kv.value not in seen:
                seen.add(kv.value)
                total += (path.parent / kv.value).stat().st_size
    return total


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------- onnxzip variants


def onnxzip_row(key: str, label: str, model: Path, recipe, out: Path, calib: Path, group: str = "onnxzip") -> Row:
    import onnxzip

    row = Row(key, group, label, how=f"onnxzip.compress(model, {getattr(recipe, 'name', recipe)!r}, calib=calib.npz)")
    t0 = time.perf_counter()
    try:
        res = onnxzip.compress(model, recipe, out, force=True, calib=calib)
    except Exception as e:  # a failure is a finding: record it, go on
        row.compress_s = time.perf_counter() - t0
        row.status, row.reason = "failed", first_line(e)
        if os.environ.get("ONNXZIP_DEBUG"):
            traceback.print_exc()
        return row
    row.compress_s = time.perf_counter() - t0
    row.path = out
    row.stored = sum(p.stat().st_size for p in res.files)
    changed = {s.name: len(s.result.tensors) for s in res.pipeline.steps if s.result.modified and s.name != "simplify"}
    warns = [f"{s.name}: {w}" for s in res.pipeline.steps for w in s.result.warnings]
    row.notes += warns
    row.report = {
        "passes": [
            {
                "name": p["name"], "modified": p["modified"], "bytes_after": p["bytes_after"],
                "tensors_changed": p.get("tensors_changed"),
                "tensors": [{k: t.get(k) for k in ("name", "op", "params_before", "bytes_after", "sparsity", "bits", "rel_error", "rank")} for t in p.get("tensors", [])],
                "skipped": p.get("skipped", [])[:10], "warnings": p.get("warnings", []),
            }
            for p in res.report.get("passes", [])
        ],
        "size": res.report.get("size"),
    }
    if not any(changed.values()):
        skips = [f"{s.name}: {k.reason}" for s in res.pipeline.steps if s.name != "simplify" for k in s.result.skipped[:2]]
        row.status = "n/a"
        row.reason = "changes no weight (" + "; ".join((warns or skips or ["no pass rewrote a tensor"])[:2]) + ")"
    else:
        row.notes.insert(0, "tensors rewritten: " + ", ".join(f"{k} {v}" for k, v in changed.items() if v))
    return row


def tuned_row(name: str, model: Path, calib: Path, d: Path, args) -> Row:
    """`onnxzip tune` on the calibration split (never on eval.npz, which the row is then
    measured on), base deep-compression, budget top-1 agreement >= 99% on the
    tune's choose AND held-out parts; the tuned recipe is then compressed like any row."""
    key, label = "tuned", f"onnxzip tuned (deep-compression, {TUNE_BUDGET} on calib.npz)"
    out = d / "tuned.yaml"
    cmd = [str(Path(sys.executable).with_name("onnxzip")), "tune", str(model), "-r", "deep-compression", "--data", str(calib),
           "--calib", str(calib), "--budget", TUNE_BUDGET, "-o", str(out), "--time-limit", str(args.tune_time_limit), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    tune_s = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        msg = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
        return Row(key, "tuned", label, status="failed", reason=f"onnxzip tune exit {proc.returncode}: {msg}", compress_s=tune_s)
    row = onnxzip_row(key, label, model, out, d / "tuned.onnx", calib, group="tuned")
    row.notes.append(f"tune took {tune_s:.0f} s (--time-limit {args.tune_time_limit:g})")
    row.how = "onnxzip tune " + " ".join(cmd[2:])
    return row


# --------------------------------------------------------------------------- peers


def lift_constants(proto: onnx.ModelProto) -> int:
    """Constant nodes (top graph) -> initializers, in place; returns how many."""
    keep, n = [], 0
    for node in proto.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            proto.graph.initializer.append(t)
            n += 1
        else:
            keep.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    return n


def default_opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


@dataclass
class PeerInputs:
    """The inputs the onnxruntime quantizers are tried on, best first, with how each was made."""

    candidates: list[tuple[str, Path]]
    prep_s: float
    notes: list[str]


def prepare_peer_inputs(model: Path, d: Path) -> PeerInputs:
    """onnxruntime's documented preparation: weights as initializers (its quantizers skip Constant
    nodes: 'Expected ... to be an initializer'), opset >= 13 (per-channel QDQ needs
    DequantizeLinear's axis), then ``quant_pre_process`` (shape inference, BatchNorm folding).
    A quantizer is tried on these inputs in order, falling back to the next when it raises or
    writes a model onnxruntime cannot load."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    t0 = time.perf_counter()
    notes: list[str] = []
    cands: list[tuple[str, Path]] = []
    proto = onnx.load(str(model))
    steps = []
    n = lift_constants(proto)
    if n:
        steps.append(f"{n} Constant nodes lifted to initializers")
    op = default_opset(proto)
    if op < 13:
        try:
            from onnx import version_converter

            proto = version_converter.convert_version(proto, 13)
            steps.append(f"opset {op} -> 13")
        except Exception as e:
            notes.append(f"opset conversion failed: {first_line(e, 120)}")
    lifted = d / "peer_input.lifted.onnx"
    onnx.save(proto, str(lifted))
    pre = d / "peer_input.pre.onnx"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(lifted), str(pre), skip_symbolic_shape=True)
        cands.append(("+".join([*steps, "quant_pre_process"]), pre))
    except Exception as e:
        notes.append(f"quant_pre_process failed: {first_line(e, 120)}")
    if steps:
        cands.append(("+".join(steps), lifted))
    cands.append(("the original file", model))
    return PeerInputs(cands, time.perf_counter() - t0, notes)


def calib_batch(data: dict[str, np.ndarray]) -> int:
    """onnxruntime's calibration runs an augmented model that keeps every intermediate tensor
    alive; batch so that one call holds about 200k input elements (ocr_rec at batch 32 peaked
    at 13 GB on the dev machine; ocr_det runs one page at a time). Min/max ranges do not
    depend on the batching."""
    per = max(int(np.prod(v.shape[1:])) for v in data.values())
    return int(max(1, min(32, 200_000 // per)))


def ort_loads(path: Path) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def peer_row(key: str, label: str, how: str, fn: Callable[[Path, Path], None], inputs: PeerInputs, out: Path) -> Row:
    """Run ``fn(input, out)`` on the candidate inputs in order; the first that gives a loadable
    model wins. Compression time = input preparation + every attempt."""
    row = Row(key, "peer", label, how=how)
    t0 = time.perf_counter()
    tried = []
    for what, src in inputs.candidates:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(src, out)
            ort_loads(out)
        except NotApplicable as e:
            row.status, row.reason = "n/a", str(e)
            row.compress_s = time.perf_counter() - t0
            return row
        except Exception as e:
            tried.append(f"on {what}: {first_line(e, 160)}")
            if os.environ.get("ONNXZIP_DEBUG"):
                traceback.print_exc()
            continue
        row.compress_s = time.perf_counter() - t0 + inputs.prep_s
        row.path, row.stored = out, file_bytes(out)
        row.notes.append(f"input: {what}")
        row.notes += [f"failed {t}" for t in tried]
        return row
    row.compress_s = time.perf_counter() - t0 + inputs.prep_s
    row.status, row.reason = "failed", " / ".join(tried)
    return row


class NotApplicable(Exception):
    pass


def ort_dynamic(src: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8)


def make_ort_static(calib: dict[str, np.ndarray]) -> Callable[[Path, Path], None]:
    def run(src: Path, out: Path) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        quantize_static(
            str(src), str(out), CalibReader(calib, calib_batch(calib)), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )

    return run


def ort_matmulnbits(src: Path, out: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    proto = onnx.load(str(src))
    n = sum(node.op_type == "MatMul" for node in proto.graph.node)
    if not n:
        raise NotApplicable("the model has no MatMul")
    q = MatMulNBitsQuantizer(proto, bits=4, block_size=32)
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=False)
    done = sum(node.op_type == "MatMulNBits" for node in onnx.load(str(out), load_external_data=False).graph.node)
    if not done:
        raise NotApplicable(f"MatMulNBitsQuantizer quantized none of the {n} MatMul (weights not constant 2-D initializers)")


def onnxsim_row(model: Path, out: Path) -> Row:
    """onnxsim's own data-free Deep-Compression-style functions: simplify (folds BatchNorm),
    prune_magnitude_cpp (global magnitude pruning, same sparsity as deep-compression), then
    apply_kmeans_quantization_cpp (16-centroid codebook per MatMul/Gemm weight, folded back into
    a float32 initializer), then simplify again to drop the initializers those two leave
    unused. The file stays float32: its gain shows once entropy-coded (the zstd row)."""
    row = Row("onnxsim-prune-kmeans", "peer", "onnxsim prune 60% + k-means 16",
              how=f"onnxsim.simplify; prune_magnitude_cpp(sparsity={ONNXSIM_SPARSITY}, global_sparsity=True); apply_kmeans_quantization_cpp; simplify")
    t0 = time.perf_counter()
    try:
        import onnxsim
        from onnxsim.onnx_simplifier import apply_kmeans_quantization_cpp, prune_magnitude_cpp

        with contextlib.redirect_stdout(io.StringIO()):
            m, ok = onnxsim.simplify(onnx.load(str(model)), initializers_as_constants=False)
            m = prune_magnitude_cpp(m, sparsity=ONNXSIM_SPARSITY, global_sparsity=True)
            m = apply_kmeans_quantization_cpp(m)
            m, ok2 = onnxsim.simplify(m, initializers_as_constants=False)
        onnx.save(m, str(out))
        ort_loads(out)
    except Exception as e:
        row.compress_s = time.perf_counter() - t0
        row.status, row.reason = "failed", first_line(e)
        return row
    row.compress_s = time.perf_counter() - t0
    row.path, row.stored = out, file_bytes(out)
    row.notes.append(f"onnxsim {getattr(onnxsim, '__version__', '?')}; k-means covers MatMul/Gemm only, Conv weights stay float32 (pruned)")
    if not (ok and ok2):
        row.notes.append("onnxsim's own check reported a mismatch")
    return row


def zstd_row(key: str, label: str, source: Row) -> Row:
    import zstandard

    row = Row(key, "zstd", label, how=f"zstandard level {ZSTD_LEVEL} of the {source.label} file", runs_as=source.key)
    if source.status != "ok" or source.path is None:
        row.status, row.reason = "n/a", f"no {source.label} file ({source.status}: {source.reason})"
        return row
    data = source.path.read_bytes()
    t0 = time.perf_counter()
    blob = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    row.compress_s = time.perf_counter() - t0 + (source.compress_s or 0.0)
    t1 = time.perf_counter()
    assert zstandard.ZstdDecompressor().decompress(blob) == data
    row.decode_s = time.perf_counter() - t1
    row.stored = len(blob)
    row.notes.append(f"runs as {source.label} after decompression ({row.decode_s * 1e3:.0f} ms)")
    if source.compress_s:
        row.notes.append(f"compress time includes {source.label}'s {source.compress_s:.1f} s")
    return row


# --------------------------------------------------------------------------- running


def has_onnxzip_nodes(path: Path) -> bool:
    proto = onnx.load(str(path), load_external_data=False)
    return any((n.domain or "") == "ai.onnxzip" for n in proto.graph.node)


def session_options(threads: int, optimized: Path | None = None):
    """CPU session options: ``threads`` intra-op threads, one inter-op thread, and thread-pool
    spinning off. Spinning is onnxruntime's default, but with many sessions timed in turn
    each pool keeps spinning after its call and steals the cores from the next session (on the
    2-core dev machine fp32 magika measured 61 ms at 2 threads interleaved, 7 ms alone)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return so


def make_session(path: Path, threads: int, optimized: Path | None = None):
    """A CPU session; Huffman-coded files are decoded by onnxzip.runtime.to_plain first (what
    onnxzip.InferenceSession does), so load time includes the decoding."""
    import onnxruntime as ort

    so = session_options(threads, optimized)
    if has_onnxzip_nodes(path):
        from onnxzip import model as M
        from onnxzip.runtime import to_plain

        plain = to_plain(M.load_model(path, prepare=False))
        return ort.InferenceSession(plain.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_eval(sess, inputs: dict[str, np.ndarray], batch: int) -> np.ndarray:
    n = len(next(iter(inputs.values())))
    outs = [sess.run(None, {k: v[i: i + batch] for k, v in inputs.items()})[0] for i in range(0, n, batch)]
    return np.concatenate(outs)


def cosines(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    a = out.reshape(len(out), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(den > 0, num / np.where(den > 0, den, 1), np.where(np.abs(a).sum(1) + np.abs(b).sum(1) == 0, 1.0, 0.0))
    return c


def compare_outputs(kind: str, out: np.ndarray, ref: np.ndarray, thresh: float) -> dict:
    c = cosines(out, ref)
    res = {"cosine": float(np.mean(c)), "cosine_min": float(np.min(c))}
    if kind == "text-detection":
        a, b = out > thresh, ref > thresh
        res["agree"] = float(np.mean(a == b))
        inter, union = np.logical_and(a, b).sum(), np.logical_or(a, b).sum()
        res["iou"] = float(inter / union) if union else 1.0
    else:  # classification [N, C]; recognition [N, T, C]: argmax per sample / per step
        res["agree"] = float(np.mean(out.argmax(-1) == ref.argmax(-1)))
    return res


def task_text(kind: str, s: dict | None) -> str:
    if not s:
        return ""
    if kind == "classification":
        return f"top-1 {100 * s['top1_accuracy']:.1f}%" if "top1_accuracy" in s else "no labels"
    if kind == "text-detection":
        return f"recall {100 * s['line_recall']:.1f}%, precision {100 * s['pixel_precision']:.1f}%"
    if kind == "text-recognition":
        return f"line {100 * s['line_accuracy']:.1f}%, char {100 * s['char_accuracy']:.1f}%"
    return json.dumps(s)


def task_value(kind: str, s: dict | None) -> float | None:
    """The one task number targets compare (higher is better)."""
    if not s:
        return None
    key = {"classification": "top1_accuracy", "text-detection": "line_recall", "text-recognition": "line_accuracy"}[kind]
    return s.get(key)


def latencies(sessions: dict[str, object], feed: dict[str, np.ndarray], budget_s: float, min_runs: int, max_runs: int,
              failed: dict[str, str]) -> tuple[dict[str, float], int]:
    """Median latency per session. Every round runs each session once, in an order rotated (and
    reversed every other round) so drift and cache effects from the previous model spread
    evenly; the number of rounds fits ``budget_s`` from the warm-up's timings."""
    est = {}
    for k, s in list(sessions.items()):
        try:
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                s.run(None, feed)
                ts.append(time.perf_counter() - t)
            est[k] = float(np.median(ts))
        except Exception as e:
            failed[k] = first_line(e)
            del sessions[k]
    keys = list(sessions)
    if not keys:
        return {}, 0
    runs = int(min(max_runs, max(min_runs, budget_s / max(sum(est.values()), 1e-9))))
    times: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(runs):
        off = i % len(keys)
        order = keys[off:] + keys[:off]
        if i % 2:
            order = order[::-1]
        for k in order:
            t = time.perf_counter()
            sessions[k].run(None, feed)
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}, runs


def op_histogram(path: Path) -> dict[str, int]:
    """Op counts of an optimized model file (onnxzip.executed_ops: ``domain::Op`` outside the default domain)."""
    return ExecutedOps.from_file(path).counts


# --------------------------------------------------------------------------- one model


@dataclass
class ModelRun:
    name: str
    kind: str
    entry: object
    rows: list[Row]
    n_eval: int
    n_calib: int
    thresh: float | None
    latency_info: dict[int, dict]  # threads -> runs, control_ratio (noise floor), tolerance
    timings: dict[str, float]
    analysis: dict
    errors: list[str]


def subset_entry(entry, n_eval: int, n_calib: int, d: Path):
    """Entry (and calib file) restricted to the first samples, for --quick."""
    ev = load_npz(entry.eval_npz)
    total = len(next(iter(ev.values())))
    cal_path = entry.calib_npz
    if n_calib:
        cal = load_npz(entry.calib_npz)
        cal_path = d / "calib.sub.npz"
        np.savez(cal_path, **{k: v[:n_calib] for k, v in cal.items()})
    if n_eval >= total:
        return dataclasses.replace(entry, calib_npz=cal_path)
    ev_path = d / "eval.sub.npz"
    np.savez(ev_path, **{k: v[:n_eval] for k, v in ev.items()})
    truth = entry.truth
    if truth is not None:
        t = load_npz(truth)
        if "boxes" in t:
            t["boxes"] = t["boxes"][t["boxes"][:, 0] < n_eval]
        if "text" in t:
            t["text"] = t["text"][:n_eval]
        truth = d / "truth.sub.npz"
        np.savez(truth, **t)
    return dataclasses.replace(entry, eval_npz=ev_path, calib_npz=cal_path, truth=truth)


def bench_model(name: str, entry, args, work: Path) -> ModelRun:
    from onnxzip.recipe import load_recipe

    t_start = time.perf_counter()
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    if args.quick:
        entry = subset_entry(entry, QUICK_EVAL[name], QUICK_CALIB[name], d)
    model, calib = entry.path, entry.calib_npz
    kind = entry.kind
    thresh = entry.manifest.get("postprocess", {}).get("thresh") if kind == "text-detection" else None
    ev_all = load_npz(entry.eval_npz)
    cal_all = load_npz(calib)
    errors: list[str] = []

    # ---- build every variant
    rows: list[Row] = [Row("fp32", "baseline", "fp32 (original)", how="the file from the wheel", path=model,
                           stored=file_bytes(model), compress_s=0.0)]
    by: dict[str, Row] = {}

    def add(row: Row) -> Row:
        rows.append(row)
        by[row.key] = row
        state = row.status + (f" ({row.reason[:140]})" if row.reason else "")
        log(f"{name}: {row.label}: {state}; {row.stored if row.stored is not None else '-'} bytes; {row.compress_s or 0:.1f} s")
        return row

    by["fp32"] = rows[0]
    t0 = time.perf_counter()
    for preset in PRESETS:
        add(onnxzip_row(preset, f"onnxzip {preset}", model, preset, d / f"{preset}.onnx", calib))
        if preset == "deep-compression":
            try:
                rec = load_recipe(preset)
                if any(st.name == "huffman" for st in rec.passes):
                    pre = dataclasses.replace(rec, passes=tuple(st for st in rec.passes if st.name != "huffman"), name=f"{rec.name} without huffman")
                    add(onnxzip_row(PRE_HUFFMAN, "onnxzip deep-compression, pre-Huffman", model, pre, d / f"{PRE_HUFFMAN}.onnx", calib))
                else:
                    errors.append("deep-compression has no huffman pass: no pre-Huffman row")
            except Exception as e:
                add(Row(PRE_HUFFMAN, "onnxzip", "onnxzip deep-compression, pre-Huffman", status="failed", reason=first_line(e)))
    if name in args.tune:
        add(tuned_row(name, model, calib, d, args))
    for tname, tpath in args.recipe:
        try:
            rec = load_recipe(tpath)
            add(onnxzip_row(f"tuned:{tname}", f"tuned {tname}", model, rec, d / f"tuned-{re.sub(r'[^A-Za-z0-9_.-]', '_', tname)}.onnx", calib, group="tuned"))
        except Exception as e:
            add(Row(f"tuned:{tname}", "tuned", f"tuned {tname}", status="failed", reason=first_line(e)))
    t_onnxzip = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        inputs = prepare_peer_inputs(model, d)
        errors += [f"peer input: {n}" for n in inputs.notes]
        calib_inputs = {k: v for k, v in cal_all.items() if k != "labels"}
        add(peer_row("ort-dynamic", "onnxruntime quantize_dynamic", "quantize_dynamic(per_channel=True, weight_type=QInt8)", ort_dynamic, inputs, d / "ort-dynamic.onnx"))
        add(peer_row("ort-static", "onnxruntime quantize_static", f"quantize_static(QDQ, per_channel=True, QUInt8 activations, QInt8 weights, calib.npz in batches of {calib_batch(calib_inputs)})",
                     make_ort_static(calib_inputs), inputs, d / "ort-static.onnx"))
        nbits_inputs = PeerInputs([c for c in inputs.candidates if "quant_pre_process" not in c[0]], inputs.prep_s, [])
        add(peer_row("ort-matmulnbits", "onnxruntime MatMulNBits 4-bit", "MatMulNBitsQuantizer(bits=4, block_size=32)", ort_matmulnbits, nbits_inputs, d / "ort-matmulnbits.onnx"))
    except Exception as e:
        errors.append(f"onnxruntime peers: {first_line(e)}")
        for k in ("ort-dynamic", "ort-static", "ort-matmulnbits"):
            if k not in by:
                add(Row(k, "peer", k, status="failed", reason=first_line(e)))
    add(onnxsim_row(model, d / "onnxsim.onnx"))
    add(zstd_row("zstd-fp32", "zstd -19 of fp32", by["fp32"]))
    add(zstd_row("zstd-onnxsim", "zstd -19 of onnxsim prune+k-means", by["onnxsim-prune-kmeans"]))
    if PRE_HUFFMAN in by:
        add(zstd_row("zstd-pre-huffman", "zstd -19 of onnxzip pre-Huffman", by[PRE_HUFFMAN]))
    t_peers = time.perf_counter() - t0

    # ---- accuracy: every runnable variant over eval.npz (2 threads, batch --eval-batch)
    t0 = time.perf_counter()
    feed_names = None
    inputs_ev = {k: v for k, v in ev_all.items() if k != "labels"}
    ref = None
    sessions2: dict[str, object] = {}
    for row in rows:
        if not row.runnable:
            continue
        try:
            t = time.perf_counter()
            sess = make_session(row.path, threads=args.threads[-1])
            row.load_s = time.perf_counter() - t
            if feed_names is None:
                feed_names = [i.name for i in sess.get_inputs()]
            t = time.perf_counter()
            out = run_eval(sess, {k: inputs_ev[k] for k in feed_names}, args.eval_batch)
            row.eval_s = time.perf_counter() - t
        except Exception as e:
            row.status, row.reason = "failed", "run: " + first_line(e)
            log(f"{name}: {row.label}: {row.reason}")
            continue
        sessions2[row.key] = sess
        row.out_sha = hashlib.sha1(np.ascontiguousarray(out).tobytes()).hexdigest()[:12]
        if ref is None:
            ref = out
        try:
            cmp = compare_outputs(kind, out, ref, thresh or 0.3)
            row.agree, row.cosine, row.cosine_min, row.iou = cmp["agree"], cmp["cosine"], cmp["cosine_min"], cmp.get("iou")
            row.task = models.score(entry, out)
            row.task.pop("predicted_labels", None)
        except Exception as e:
            row.notes.append("scoring failed: " + first_line(e))
        log(f"{name}: evaluated {row.label}: agree {row.agree}, cosine {row.cosine}, {task_text(kind, row.task)} ({row.eval_s:.1f} s)")
        del out
    for row in rows:  # zstd rows run as their source
        if row.runs_as and row.status == "ok":
            src = by.get(row.runs_as)
            if src is None or src.status != "ok":
                row.status, row.reason = "n/a", f"{row.runs_as} did not run"
                continue
            for f in ("agree", "cosine", "cosine_min", "iou", "task", "out_sha", "eval_s"):
                setattr(row, f, getattr(src, f))
            row.load_s = (src.load_s or 0.0) + row.decode_s
    t_eval = time.perf_counter() - t0

    # ---- latency, batch 1, interleaved, at each thread count
    t0 = time.perf_counter()
    feed = {k: inputs_ev[k][:1] for k in (feed_names or [])}
    lat_info: dict[int, dict] = {}
    for threads in sorted(args.threads, reverse=True):
        if threads == args.threads[-1]:
            sessions = sessions2
        else:
            sessions = {}
            for row in rows:
                if row.runnable:
                    try:
                        sessions[row.key] = make_session(row.path, threads, optimized=d / f"{row.key.replace(':', '_')}.opt.onnx")
                    except Exception as e:
                        row.notes.append(f"{threads}-thread session failed: {first_line(e)}")
        if "fp32" in sessions:  # a second fp32 session: the noise floor of the interleaved timing
            with contextlib.suppress(Exception):
                sessions["fp32-control"] = make_session(model, threads)
        failed: dict[str, str] = {}
        med, runs = latencies(sessions, feed, args.latency_budget, args.min_runs, args.max_runs, failed)
        info = {"runs": runs, "sessions": len(sessions), "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
        for row in rows:
            if row.key in med:
                row.latency[threads] = med[row.key]
            if row.key in failed:
                row.notes.append(f"latency at {threads} threads failed: {failed[row.key]}")
        if "fp32-control" in med and med.get("fp32"):
            info["control_ratio"] = med["fp32-control"] / med["fp32"]
        info["tolerance"] = max(MIN_TOLERANCE, abs(info.get("control_ratio", 1.0) - 1.0))
        lat_info[threads] = info
        log(f"{name}: latency at {threads} thread(s): {runs} interleaved rounds of {len(sessions)} sessions; control x{info.get('control_ratio', float('nan')):.3f}")
        sessions.clear()
    sessions2.clear()
    for row in rows:
        if row.runs_as and row.runs_as in by:
            row.latency = dict(by[row.runs_as].latency)
        opt = d / f"{row.key.replace(':', '_')}.opt.onnx"
        if opt.exists():
            with contextlib.suppress(Exception):
                row.executed = ExecutedOps.from_file(opt)  # counts, node names and cost classes, for explain_ops
                row.ops = row.executed.counts
    t_lat = time.perf_counter() - t0

    # ---- why deep-compression loses accuracy (when it misses 99% agreement): ablations
    t0 = time.perf_counter()
    diagnostics: list[dict] = []
    dc = by.get("deep-compression")
    used_min = (time.perf_counter() - args.t0) / 60
    wants = args.diagnose and dc is not None and dc.status == "ok" and dc.agree is not None and dc.agree < 0.99 and ref is not None
    if wants and used_min > args.diagnose_deadline:
        errors.append(f"deep-compression ablations skipped: the run had used {used_min:.0f} min, over --diagnose-deadline {args.diagnose_deadline:g}")
    elif wants:
        try:
            diagnostics = diagnose(dc, model, calib, d, kind, entry, {k: inputs_ev[k] for k in feed_names}, ref, thresh, args)
        except Exception as e:
            errors.append(f"deep-compression diagnostics failed: {first_line(e)}")
    t_diag = time.perf_counter() - t0

    for row in rows:
        if row.status == "ok" and row.path is not None and row.runs_as is None:
            with contextlib.suppress(Exception):
                row.by_kind = dtype_bytes(row.path)
    analysis = {}
    try:
        analysis = analyse(by, d)
    except Exception as e:
        errors.append(f"byte analysis failed: {first_line(e)}")
    analysis["diagnostics"] = diagnostics
    return ModelRun(
        name, kind, entry, rows, len(next(iter(inputs_ev.values()))), len(next(iter(cal_all.values()))), thresh, lat_info,
        {"onnxzip_compress": t_onnxzip, "peers_compress": t_peers, "eval": t_eval, "latency": t_lat, "diagnostics": t_diag,
         "total": time.perf_counter() - t_start},
        analysis, errors,
    )


def diagnose(dc: Row, model: Path, calib: Path, d: Path, kind: str, entry, inputs: dict[str, np.ndarray], ref: np.ndarray,
             thresh: float | None, args) -> list[dict]:
    """Accuracy of deep-compression with one step or one tensor left out (Huffman coding is
    lossless, so it is dropped here): which part of the pipeline costs the agreement."""
    from onnxzip.recipe import load_recipe

    base = load_recipe("deep-compression")
    steps = [s for s in base.passes if s.name != "huffman"]
    variants: list[tuple[str, list]] = [
        (f"without `{drop}`", [s for s in steps if s.name != drop])
        for drop in ("prune", "quantize", "cast-fp16") if any(s.name == drop for s in steps)
    ]
    prune = next((st for st in steps if st.name == "prune"), None)
    if prune is not None and getattr(prune.config, "scope", None) == "global":
        variants.append(("with `prune` per layer (`scope: layer`, same sparsity) instead of global",
                         [dataclasses.replace(st, config=dataclasses.replace(st.config, scope="layer")) if st is prune else st for st in steps]))
    size: dict[str, int] = {}
    damage: dict[str, float] = {}
    for p in (dc.report or {}).get("passes", []):
        for t in p["tensors"] if p["name"] in ("prune", "quantize") else []:
            size[t["name"]] = max(size.get(t["name"], 0), t.get("params_before") or 0)
            if p["name"] == "prune" and t.get("rel_error") is not None:
                damage[t["name"]] = t["rel_error"]
    picks = [n for n, _ in sorted(size.items(), key=lambda kv: -kv[1])[: args.diagnose_tensors]]
    picks += [n for n, _ in sorted(damage.items(), key=lambda kv: -kv[1]) if n not in picks][: args.diagnose_tensors]
    for tname in picks:
        glob = tname.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")
        excl = [dataclasses.replace(st, config=dataclasses.replace(st.config, exclude=(*st.config.exclude, glob)))
                if st.name in ("prune", "quantize") and hasattr(st.config, "exclude") else st for st in steps]
        why = f"pruning error {damage[tname]:.2f}" if tname in damage else "not pruned"
        variants.append((f"`{tname}` ({size[tname]:,} params, {why}) left float", excl))
    out = []
    for i, (what, passes) in enumerate(variants):
        rec = dataclasses.replace(base, passes=tuple(passes), name=f"deep-compression {what}")
        path = d / f"diag-{i}.onnx"
        res: dict = {"what": what}
        try:
            import onnxzip

            t = time.perf_counter()
            onnxzip.compress(model, rec, path, force=True, calib=calib)
            res["compress_s"] = time.perf_counter() - t
            res["stored"] = path.stat().st_size
            sess = make_session(path, threads=args.threads[-1])
            o = run_eval(sess, inputs, args.eval_batch)
            del sess
            res.update(compare_outputs(kind, o, ref, thresh or 0.3))
            sc = models.score(entry, o)
            res["task"] = task_text(kind, sc)
        except Exception as e:
            res["error"] = first_line(e)
        log(f"diagnose: deep-compression {what}: agree {res.get('agree')}")
        out.append(res)
    return out


# --------------------------------------------------------------------------- analysis


def entropy_bits(a: np.ndarray) -> float:
    _, counts = np.unique(a, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _roles(proto: onnx.ModelProto) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    """Name-free roles of the main graph's initializers (compact-names leaves ids, not
    `_codes` / `_codebook` suffixes): "codebook" (reaches a Gather's data input through
    Casts), "codes" (reaches its indices through Cast/Add), "payload" / "segments" (inputs of
    an ai.onnxzip node); and each tensor's first consumer as (node name, input index)."""
    consumer: dict[str, tuple[str, int]] = {}
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in proto.graph.node:
        for i, x in enumerate(n.input):
            if x:
                consumer.setdefault(x, (n.name, i))
                users.setdefault(x, []).append((n, i))
    roles: dict[str, str] = {}

    def reaches_gather(name: str, depth: int = 0) -> str | None:
        for n, i in users.get(name, []):
            if n.op_type == "Gather":
                return "codebook" if i == 0 else "codes"
            if n.op_type in ("Cast", "Add") and depth < 3:
                r = reaches_gather(n.output[0], depth + 1)
                if r:
                    return r
        return None

    for t in proto.graph.initializer:
        first = users.get(t.name, [])
        if first and (first[0][0].domain or "") == "ai.onnxzip":
            roles[t.name] = "payload" if first[0][1] == 0 else "segments"
        elif (r := reaches_gather(t.name)) is not None:
            roles[t.name] = r
    return roles, consumer


def analyse(by: dict[str, Row], d: Path) -> dict:
    """Where deep-compression's bytes go, and Huffman against zstd per coded stream."""
    import zstandard
    from onnx import numpy_helper

    dc, pre = by.get("deep-compression"), by.get(PRE_HUFFMAN)
    if not dc or dc.status != "ok" or dc.path is None:
        return {}
    proto = onnx.load(str(dc.path))
    roles, consumer = _roles(proto)
    streams = [n for n in proto.graph.node if (n.domain or "") == "ai.onnxzip"]
    cats: Counter = Counter()
    tensor_bytes = 0
    for t in proto.graph.initializer:
        nb = len(t.raw_data) if t.raw_data else numpy_helper.to_array(t).nbytes
        tensor_bytes += nb
        dt = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name
        role = roles.get(t.name)
        if role == "payload":
            cats["Huffman bitstreams"] += nb
        elif role == "segments":
            cats["Huffman segment tables (length, CRC)"] += nb
        elif role == "codebook":
            cats[f"k-means codebooks ({dt})"] += nb
        else:
            cats[f"other tensors ({dt})"] += nb
    attrs = sum(len(a.s) for n in streams for a in n.attribute if a.type == onnx.AttributeProto.STRING)
    cats["Huffman code tables (node attributes)"] += attrs
    cats["graph structure, names, metadata"] += max(0, dc.stored - tensor_bytes - attrs) if dc.stored else 0
    out = {"bytes": dict(cats.most_common()), "stored": dc.stored, "streams": []}
    pre_at: dict[tuple[str, int], onnx.TensorProto] = {}  # pre-Huffman initializers by consumer slot
    if pre and pre.status == "ok" and pre.path is not None:
        pre_proto = onnx.load(str(pre.path))
        pre_roles, pre_consumer = _roles(pre_proto)
        pre_at = {pre_consumer[t.name]: t for t in pre_proto.graph.initializer if t.name in pre_consumer}
        pre_cats: Counter = Counter()
        for t in pre_proto.graph.initializer:
            nb = len(t.raw_data) if t.raw_data else numpy_helper.to_array(t).nbytes
            dt = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name
            role = pre_roles.get(t.name)
            pre_cats[f"k-means codes ({dt})" if role == "codes" else ("k-means codebooks" if role == "codebook" else f"other tensors ({dt})")] += nb
        out["pre_bytes"] = dict(pre_cats.most_common())
    zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    init_bytes = {t.name: len(t.raw_data) for t in proto.graph.initializer}
    for n in streams:
        slot = consumer.get(n.output[0])
        hb = init_bytes.get(n.input[0], 0)
        # named by the node that reads the stream (node names survive compact-names)
        s = {"tensor": slot[0].removesuffix("_codes_cast") if slot else n.output[0], "huffman_bytes": hb, "table_bytes": sum(init_bytes.get(i, 0) for i in n.input[1:])}
        if slot in pre_at:
            a = numpy_helper.to_array(pre_at[slot])
            _, counts = np.unique(a, return_counts=True)
            s.update({
                "symbols": int(a.size), "distinct": len(counts), "zero_fraction": float(counts.max() / a.size),
                "entropy_bits": entropy_bits(a), "huffman_bits": hb * 8 / a.size, "raw_bytes": int(a.nbytes),
                "zstd_bytes": len(zc.compress(np.ascontiguousarray(a).tobytes())),
            })
            s["zstd_bits"] = s["zstd_bytes"] * 8 / a.size
        out["streams"].append(s)
    out["streams"].sort(key=lambda s: -s["huffman_bytes"])
    if dc.path:
        out["zstd_of_huffman_file"] = len(zc.compress(dc.path.read_bytes()))
    z = by.get("zstd-pre-huffman")
    coded = [s for s in out["streams"] if "zstd_bytes" in s]
    if z is not None and z.stored and coded and len(coded) == len(out["streams"]):
        h_streams = sum(s["huffman_bytes"] + s["table_bytes"] for s in coded) + attrs
        z_streams = sum(s["zstd_bytes"] for s in coded)
        out["gap"] = {
            "huffman_streams": h_streams, "zstd_streams": z_streams,
            "huffman_rest": dc.stored - h_streams, "zstd_rest": z.stored - z_streams,
            "huffman_total": dc.stored, "zstd_total": z.stored,
        }
    return out


# --------------------------------------------------------------------------- targets


@dataclass
class Verdict:
    target: str  # short name, the same for every model
    model: str
    met: bool | None  # None: cannot be judged (a row missing)
    text: str  # every measured figure behind the verdict
    short: str = ""  # the gap in a few words (README)


TARGETS = {
    "t1": "deep-compression >= 10x smaller than fp32 at >= 99% top-1 agreement (stated for magika)",
    "t2": "deep-compression smaller than every peer row, at equal or better agreement",
    "t3d": "int8-dynamic no larger and no less accurate than onnxruntime quantize_dynamic, not slower than fp32",
    "t3s": "int8-static no larger and no less accurate than onnxruntime quantize_static, not slower than fp32",
    "t4": "deep-compression (Huffman) no larger than zstd -19 of the same pre-Huffman model",
}


def pct(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{nd}f}%"


def dtype_bytes(path: Path | None) -> dict[str, int]:
    """Initializer bytes by dtype, plus the rest of the file (graph, names)."""
    if path is None:
        return {}
    proto = onnx.load(str(path))
    c: Counter = Counter()
    for t in proto.graph.initializer:
        c[onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name] += len(t.raw_data) if t.raw_data else onnx.numpy_helper.to_array(t).nbytes
    c["graph and names"] = path.stat().st_size - sum(c.values())
    return dict(c.most_common())


def units(mr: "ModelRun", points: float, what: str) -> str:
    """A gap in points as a count of samples (or CTC steps), so small gaps read as what they are."""
    if what == "agree":
        n = mr.n_eval * (40 if mr.kind == "text-recognition" else 1)
        unit = "CTC steps" if mr.kind == "text-recognition" else "samples"
        if mr.kind == "text-detection":
            return ""
    else:
        if mr.kind == "text-detection":
            return ""
        n, unit = mr.n_eval, ("lines" if mr.kind == "text-recognition" else "samples")
    return f" = {round(points * n):,} of {n:,} {unit}"


def judge(runs: list[ModelRun]) -> list[Verdict]:
    out: list[Verdict] = []
    for mr in runs:
        by = {r.key: r for r in mr.rows}
        fp = by["fp32"]
        ok = lambda r: r is not None and r.status == "ok" and r.stored is not None and r.agree is not None  # noqa: E731
        # 1-2 for the preset, and for its data-aware and tuned forms when the run has them
        for dkey in DC_FAMILY:
            dc = by.get(dkey)
            if dc is None and dkey != "deep-compression":
                continue
            tag = "" if dkey == "deep-compression" else f"{dc.label}: "
            # 1. deep-compression >= 10x at >= 99% top-1 agreement (the stated target is magika's)
            if not ok(dc):
                why = f"no deep-compression result ({dc.status + ': ' + dc.reason if dc else 'missing'})"
                out.append(Verdict(TARGETS["t1"], mr.name, None, tag + why, "no result"))
            else:
                ratio = fp.stored / dc.stored
                parts = [f"{ratio:.2f}x ({'met' if ratio >= 10 else f'short by {10 - ratio:.2f}x; 10x would be {fp.stored // 10:,} bytes, is {dc.stored:,}'})",
                         f"agreement {pct(dc.agree)} ({'met' if dc.agree >= 0.99 else f'short by {100 * (0.99 - dc.agree):.2f} points' + units(mr, 0.99 - dc.agree, 'agree')})"]
                if mr.name != "magika":
                    parts.append("the target is stated for magika; shown for reference")
                short = f"{ratio:.1f}x at {pct(dc.agree, 1)}"
                out.append(Verdict(TARGETS["t1"], mr.name, ratio >= 10 and dc.agree >= 0.99, tag + "; ".join(parts), (tag and dkey + ": ") + short))
            # 2. deep-compression smaller than every peer row at equal or better agreement
            if ok(dc):
                lines, less, larger, n = [], [], [], 0
                for r in mr.rows:
                    if r.group not in ("peer", "zstd") or not ok(r):
                        continue
                    n += 1
                    smaller = dc.stored < r.stored
                    better = dc.agree >= r.agree
                    bits = [f"{dc.stored:,} vs {r.stored:,} B" + ("" if smaller else f" (LARGER by {dc.stored - r.stored:,} B, x{dc.stored / r.stored:.2f})"),
                            f"agreement {pct(dc.agree)} vs {pct(r.agree)}" + ("" if better else f" (LOWER by {100 * (r.agree - dc.agree):.2f} points)")]
                    if not better:
                        less.append(r.label)
                    if not smaller:
                        larger.append(r.label)
                    lines.append(f"{r.label}: " + ", ".join(bits) + (": ok" if smaller and better else ": MISSED"))
                missed = set(less) | set(larger)
                short = (f"beats {n - len(missed)} of {n}" + (f"; less accurate than {len(less)}" if less else "")
                         + (f"; larger than {', '.join(larger)}" if larger else ""))
                out.append(Verdict(TARGETS["t2"], mr.name, (not missed) if n else None, tag + ("<br>".join(lines) or "no peer row measured"), (tag and dkey + ": ") + short))
        # 3. int8 presets vs onnxruntime's own quantizers
        for tk_, mine, peer in (("t3d", "int8-dynamic", "ort-dynamic"), ("t3s", "int8-static", "ort-static")):
            a, b = by.get(mine), by.get(peer)
            if not ok(a):
                out.append(Verdict(TARGETS[tk_], mr.name, None, f"{mine}: {a.status + ': ' + a.reason if a else 'missing'}", "no result"))
                continue
            parts, gaps, met = [], [], True
            if ok(b):
                sz = a.stored <= b.stored
                ag = a.agree >= b.agree
                cs = (a.cosine or 0) >= (b.cosine or 0)
                tv_a, tv_b = task_value(mr.kind, a.task), task_value(mr.kind, b.task)
                tk = tv_a is None or tv_b is None or tv_a >= tv_b
                met &= sz and ag and tk
                parts.append(f"size {a.stored:,} vs {b.stored:,} B" + ("" if sz else f" (LARGER by {a.stored - b.stored:,} B, +{100 * (a.stored / b.stored - 1):.1f}%)"))
                if not sz:
                    gaps.append(f"{100 * (a.stored / b.stored - 1):+.1f}% bytes")
                    da, db = a.by_kind or {}, b.by_kind or {}
                    parts.append("bytes by kind, onnxzip vs onnxruntime: " + ", ".join(f"{k} {da.get(k, 0):,} vs {db.get(k, 0):,}" for k in dict.fromkeys([*da, *db])))
                parts.append(f"agreement {pct(a.agree)} vs {pct(b.agree)}" + ("" if ag else f" (LOWER by {100 * (b.agree - a.agree):.2f} points{units(mr, b.agree - a.agree, 'agree')})"))
                if not ag:
                    gaps.append(f"agreement {100 * (a.agree - b.agree):+.2f} pts")
                parts.append(f"cosine {a.cosine:.4f} vs {b.cosine:.4f}" + ("" if cs else " (lower)"))
                if tv_a is not None and tv_b is not None:
                    parts.append(f"task {pct(tv_a, 1)} vs {pct(tv_b, 1)}" + ("" if tk else f" (LOWER by {100 * (tv_b - tv_a):.1f} points{units(mr, tv_b - tv_a, 'task')})"))
                    if not tk:
                        gaps.append(f"task {100 * (tv_a - tv_b):+.1f} pts")
            else:
                parts.append(f"no {peer} result ({b.status + ': ' + b.reason[:160] if b else 'missing'}): nothing to compare")
                gaps.append(f"no {peer} result")
            for th in sorted(a.latency):
                base = fp.latency.get(th)
                if base:
                    r = a.latency[th] / base
                    slow = is_slower(mr, a, fp, th)
                    met &= not slow
                    tol = mr.latency_info.get(th, {}).get("tolerance", MIN_TOLERANCE)
                    parts.append(f"latency at {th}t x{r:.2f} fp32" + (f" (SLOWER by {100 * (r - 1):.0f}%, beyond the {100 * tol:.0f}% noise tolerance; see 'Slower than fp32' under {mr.name})" if slow else ""))
                    if slow:
                        gaps.append(f"x{r:.2f} fp32 latency at {th}t")
            out.append(Verdict(TARGETS[tk_], mr.name, met if ok(b) else (None if met else False), "; ".join(parts), "; ".join(gaps)))
        # 4. Huffman no larger than zstd -19 of the same pre-Huffman model
        z, dc = by.get("zstd-pre-huffman"), by.get("deep-compression")  # the preset whose pre-Huffman file z is
        if dc and dc.stored and z and z.stored:
            met = dc.stored <= z.stored
            gap = f"{100 * (dc.stored / z.stored - 1):+.1f}%"
            out.append(Verdict(TARGETS["t4"], mr.name, met, f"{dc.stored:,} vs {z.stored:,} B" + ("" if met else f" (LARGER by {dc.stored - z.stored:,} B, {gap})"),
                               f"{dc.stored:,} vs {z.stored:,} B ({gap})"))
        else:
            out.append(Verdict(TARGETS["t4"], mr.name, None, "a row is missing", "no result"))
    return out


# --------------------------------------------------------------------------- rendering


def is_slower(mr: "ModelRun", r: Row, fp: Row, t: int) -> bool:
    a, b = r.latency.get(t), fp.latency.get(t)
    tol = mr.latency_info.get(t, {}).get("tolerance", MIN_TOLERANCE)
    return bool(a and b and a / b > 1 + tol)


def fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.2f}" if s < 0.1 else f"{s * 1e3:.0f}"


def explain_ops(row: Row, fp: Row) -> str:
    """What onnxruntime executed for a variant that is slower than fp32 (its optimized graph
    at 1 thread against fp32's), with what each added op is expected to cost on CPU
    (onnxzip.executed_ops, the same wording as onnxzip's report; the latency feed is batch 1)."""
    a, b = getattr(fp, "executed", None), getattr(row, "executed", None)
    if a is None or b is None:
        return "(no optimized graph recorded)"
    return executed_describe(executed_compare(a, b, provider="CPUExecutionProvider", batch=1), baseline="fp32")


def model_table(mr: ModelRun, threads: list[int]) -> list[str]:
    fp = next(r for r in mr.rows if r.key == "fp32")
    ag = AGREE_NAME[mr.kind]
    head = ["variant", "stored bytes", "x smaller", *[f"latency {t}t ms (x fp32)" for t in threads], ag, "cosine (min)", "task (score())", "compress s", "load s", "notes"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
    for r in mr.rows:
        if r.status != "ok":
            cells = [r.label, fmt_bytes(r.stored), f"{fp.stored / r.stored:.2f}" if r.stored else "-"] + ["-"] * len(threads) + ["-", "-", "-",
                     f"{r.compress_s:.1f}" if r.compress_s is not None else "-", "-", f"**{r.status}**: {r.reason}"]
            out.append("| " + " | ".join(cells) + " |")
            continue
        lat = []
        for t in threads:
            v, b = r.latency.get(t), fp.latency.get(t)
            lat.append(f"{fmt_ms(v)} (x{v / b:.2f})" if v and b else "-")
        notes = list(r.notes)
        if r.iou is not None:
            notes.insert(0, f"mask IoU {r.iou:.4f}")
        cells = [
            r.label, fmt_bytes(r.stored), f"{fp.stored / r.stored:.2f}" if r.stored else "-", *lat,
            pct(r.agree), "-" if r.cosine is None else f"{r.cosine:.5f} ({r.cosine_min:.4f})", task_text(mr.kind, r.task),
            "-" if r.compress_s is None else f"{r.compress_s:.1f}", "-" if r.load_s is None else f"{r.load_s:.2f}", "; ".join(notes).replace("|", "/"),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def render_results(runs: list[ModelRun], verdicts: list[Verdict], env: dict, args, wall: float) -> str:
    threads = sorted(args.threads)
    L = [
        "# onnxzip against peers on real models",
        "",
        f"Produced by `{env['command']}` in one process on {env['date']} ({wall / 60:.1f} min wall time). "
        "Do not edit by hand: run the command again.",
        "",
        f"* machine: {env['cpu']}, {env['cores']} logical cores, {env['memory']}; {env['os']}",
        "* versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"* mode: {'QUICK (subsets, short timings: not for quoting)' if args.quick else 'full'}; eval batch {args.eval_batch}; "
        f"latency: batch 1, {'/'.join(map(str, threads))} thread(s), median of interleaved rounds (budget {args.latency_budget:.0f} s per model and thread count, {args.min_runs}-{args.max_runs} rounds)",
        "",
        "## How to read this",
        "",
        "* **stored bytes**: the file as written (model + external data). For `zstd` rows the compressed blob; "
        "they run as the named file once decompressed, so their accuracy and latency are that file's.",
        "* **x smaller**: fp32 bytes / stored bytes. **latency**: median ms per call, batch 1, with the ratio to the fp32 "
        "row measured in the same interleaved loop. A second fp32 session timed in the same loop gives the noise floor "
        "(listed under each model).",
        "* **agreement** with the fp32 outputs on eval.npz: classifiers, top-1 per sample; ocr_rec, top-1 per CTC step "
        "(40 per line); ocr_det, share of pixels on the same side of the model's threshold (most pixels are background, "
        "so the mask IoU in the notes is the sharper figure). **cosine**: mean over samples of the cosine similarity of "
        "the whole output (min in brackets).",
        "* **task**: `score()` of bench/models.py: top-1 accuracy against labels; line recall and pixel precision "
        "against the drawn boxes; line and character accuracy after CTC decoding (character accuracy is 1 - edit distance / "
        "length, so it goes below zero when a model emits more wrong characters than the line has).",
        "* **compress s**: wall time of the compression call (onnxzip includes its per-pass checks; onnxruntime rows "
        "include the input preparation and any failed attempt). **load s**: session creation at 2 threads, including "
        "Huffman or zstd decoding.",
        "* **n/a**: the preset or peer changes no weight of this model (reason given). **failed**: it raised; the "
        "error line is given.",
        "",
        "Peers: onnxruntime's quantizers are run on the input their documentation asks for: Constant nodes lifted to "
        "initializers (they skip weights held in Constant nodes), opset >= 13 (per-channel QDQ needs DequantizeLinear's "
        "`axis`), then `quant_pre_process`; when a quantizer fails on that input it is tried on the less prepared one "
        "(noted per row). onnxsim (this environment's build) exposes data-free compression functions: "
        "`prune_magnitude_cpp` (magnitude pruning, global option) and `apply_kmeans_quantization_cpp` (per-layer k-means, "
        "16 centroids, MatMul/Gemm weights only, folded back into float32 initializers, so the file only shrinks once "
        "entropy-coded). They are chained like deep-compression's data-free steps (simplify, prune 60% global, "
        "k-means 4-bit) and given zstd -19, the generic coder, for the entropy-coding step.",
        "",
    ]
    L += ["## Targets", "", "| target | model | verdict | measured |", "|---|---|---|---|"]
    for v in verdicts:
        verdict = "met" if v.met else ("**MISSED**" if v.met is False else "not judged")
        L.append(f"| {v.target} | {v.model} | {verdict} | {v.text} |")
    L.append("")
    for mr in runs:
        fp = next(r for r in mr.rows if r.key == "fp32")
        L += [f"## {mr.name}", ""]
        L.append(
            f"{mr.entry.manifest.get('about', '')}. {fp.stored:,} bytes fp32; {mr.n_eval} eval samples, {mr.n_calib} calibration samples; "
            f"fp32 task figure: {task_text(mr.kind, fp.task)}. Latency rounds and noise floor (second fp32 session in the same loop): "
            + "; ".join(f"{t}t: {mr.latency_info[t]['runs']} rounds, control x{mr.latency_info[t].get('control_ratio', float('nan')):.3f}, "
                        f"1-min load average {mr.latency_info[t].get('loadavg') or 0:.1f} after"
                        for t in threads if t in mr.latency_info) + "."
        )
        L.append("")
        L += model_table(mr, threads)
        L.append("")
        L.append("Timings (s): " + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in mr.timings.items()))
        if mr.errors:
            L.append("")
            L += [f"* {e}" for e in mr.errors]
        L.append("")
        slow = [r for r in mr.rows if r.status == "ok" and r.runs_as is None and r.key != "fp32" and any(is_slower(mr, r, fp, t) for t in threads)]
        if slow:
            L += ["Slower than fp32 beyond the noise tolerance (what onnxruntime executed, from its optimized graph at 1 thread):", ""]
            for r in slow:
                ratios = ", ".join(f"x{r.latency[t] / fp.latency[t]:.2f} at {t}t" for t in threads if r.latency.get(t) and fp.latency.get(t))
                L.append(f"* {r.label} ({ratios}): {explain_ops(r, fp)}")
            L.append("")
        a = mr.analysis
        if a:
            L += ["Where deep-compression's bytes go (" + fmt_bytes(a.get("stored")) + " B stored):", ""]
            L.append("| part | bytes | share |")
            L.append("|---|---:|---:|")
            for k, v in a["bytes"].items():
                L.append(f"| {k} | {v:,} | {100 * v / max(1, a.get('stored') or 1):.1f}% |")
            L.append("")
            if a.get("streams"):
                L += ["Huffman against zstd -19 on each coded stream (bits per weight; the pre-Huffman file stores each 4-bit code in a byte):", "",
                      "| tensor | symbols | distinct | most common share | entropy (order 0) | Huffman | + segment table | zstd -19 of the codes |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
                for s in a["streams"][:12]:
                    if "symbols" not in s:
                        continue
                    L.append(f"| `{s['tensor'][-60:]}` | {s['symbols']:,} | {s['distinct']} | {100 * s['zero_fraction']:.1f}% | {s['entropy_bits']:.3f} | "
                             f"{s['huffman_bits']:.3f} | {(s['huffman_bytes'] + s['table_bytes']) * 8 / s['symbols']:.3f} | {s['zstd_bits']:.3f} |")
                if len(a["streams"]) > 12:
                    L.append(f"| ({len(a['streams']) - 12} smaller streams) | | | | | | | |")
                L.append("")
            if a.get("gap"):
                g = a["gap"]
                L.append(
                    f"Huffman file against zstd -19 of the pre-Huffman file, {g['huffman_total']:,} vs {g['zstd_total']:,} B: the coded weight streams "
                    f"(bitstreams + segment tables) take {g['huffman_streams']:,} B against {g['zstd_streams']:,} B when each code array "
                    f"is zstd'ed alone ({g['huffman_streams'] - g['zstd_streams']:+,} B); everything else in the file (graph, names, float16 tensors, "
                    f"uncoded small tensors) is stored raw, {g['huffman_rest']:,} B, where zstd packs it into about {g['zstd_rest']:,} B "
                    f"({g['huffman_rest'] - g['zstd_rest']:+,} B).")
                L.append("")
            if "zstd_of_huffman_file" in a:
                L.append(f"zstd -19 of the Huffman-coded file itself: {a['zstd_of_huffman_file']:,} B (from {a['stored']:,}).")
                L.append("")
        dcr = next((r for r in mr.rows if r.key == "deep-compression"), None)
        if dcr and dcr.report:
            errs = [(p["name"], t) for p in dcr.report["passes"] if p["name"] in ("prune", "quantize") for t in p["tensors"] if t.get("rel_error") is not None]
            errs.sort(key=lambda x: -(x[1]["rel_error"] or 0))
            if errs:
                L.append("Largest relative weight errors in deep-compression (per pass, ||W' - W|| / ||W||): "
                         + "; ".join(f"{p} `{t['name'][-48:]}` ({t.get('op')}, {t.get('params_before') or 0:,} params) {t['rel_error']:.3f}" for p, t in errs[:6]) + ".")
                L.append("")
        diags = (mr.analysis or {}).get("diagnostics") or []
        if diags and dcr is not None:
            L += [f"Where deep-compression loses agreement ({pct(dcr.agree)} with everything on): the same recipe with one step, or one tensor, left out "
                  "(Huffman dropped: it is lossless):", "",
                  f"| deep-compression ... | bytes (pre-Huffman) | {AGREE_NAME[mr.kind]} | cosine | task |", "|---|---:|---:|---:|---|"]
            for dg in diags:
                if "error" in dg:
                    L.append(f"| {dg['what']} | - | failed: {dg['error']} | | |")
                else:
                    L.append(f"| {dg['what']} | {dg.get('stored', 0):,} | {pct(dg['agree'])} | {dg['cosine']:.5f} | {dg.get('task', '')} |")
            L.append("")
    L += ["## Timings", "", "| model | onnxzip compress s | peers compress s | eval s | latency s | diagnostics s | total s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for mr in runs:
        t = mr.timings
        L.append(f"| {mr.name} | {t['onnxzip_compress']:.0f} | {t['peers_compress']:.0f} | {t['eval']:.0f} | {t['latency']:.0f} | {t.get('diagnostics', 0):.0f} | {t['total']:.0f} |")
    L.append(f"| all | | | | | | {wall:.0f} |")
    L.append("")
    return "\n".join(L)


def render_readme_block(runs: list[ModelRun], verdicts: list[Verdict], env: dict, args, wall: float) -> str:
    keys: list[tuple[str, str]] = []
    for mr in runs:
        for r in mr.rows:
            if (r.key, r.label) not in keys and r.key != "fp32":
                keys.append((r.key, r.label))
    L = [
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores) with onnxzip {env['versions'].get('onnxzip')}, "
        f"onnxruntime {env['versions'].get('onnxruntime')}{' (QUICK run: subsets, not for quoting)' if args.quick else ''}; "
        f"`python bench/compare.py`, {wall / 60:.0f} min. Each cell: size reduction vs fp32 / agreement with fp32 "
        "(top-1; ocr_rec per CTC step; ocr_det pixels) / latency vs fp32 at 1 thread, batch 1. "
        "Full tables, method, and analysis: [bench/results.md](bench/results.md).",
        "",
        "| variant | " + " | ".join(f"{mr.name} ({next(r for r in mr.rows if r.key == 'fp32').stored / 1e6:.2f} MB)" for mr in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for key, label in keys:
        cells = []
        for mr in runs:
            fp = next(r for r in mr.rows if r.key == "fp32")
            r = next((x for x in mr.rows if x.key == key), None)
            if r is None:
                cells.append("")
            elif r.status != "ok":
                cells.append(r.status)
            else:
                lat = r.latency.get(1)
                cells.append(f"{fp.stored / r.stored:.1f}x / {pct(r.agree, 1)} / " + (f"x{lat / fp.latency[1]:.2f}" if lat and fp.latency.get(1) else "-"))
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L += ["", "Targets (computed from the same run; the gaps behind each verdict are in bench/results.md):", "",
          "| target | " + " | ".join(mr.name for mr in runs) + " |", "|---|" + "---|" * len(runs)]
    for key, title in TARGETS.items():
        cells = []
        for mr in runs:
            # the preset's verdict, then its data-aware and tuned forms' (t1, t2), one a line
            parts = []
            for v in (x for x in verdicts if x.target == title and x.model == mr.name):
                word = "met" if v.met else ("**MISSED**" if v.met is False else "not judged")
                parts.append(f"{word}" + (f": {v.short}" if v.short and (v.met is not True or key in ('t1', 't4')) else ""))
            cells.append("<br>".join(parts))
        L.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(L)


def write_readme(block: str) -> bool:
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    i, j = text.find(README_START), text.find(README_END)
    if i < 0 or j < i:
        log("README.md has no bench/compare.py markers; not written")
        return False
    new = text[: i + len(README_START)] + "\n" + block.strip() + "\n" + text[j:]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
    return True


def environment(argv: list[str]) -> dict:
    import onnxruntime

    import onnxzip

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GiB RAM"
    versions = {"onnxzip": onnxzip.__version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                "numpy": np.__version__, "python": platform.python_version()}
    for mod in ("onnxsim", "zstandard"):
        with contextlib.suppress(Exception):
            versions[mod] = __import__(mod).__version__
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": f"{platform.system()} {platform.release()}",
        "versions": versions, "command": "python bench/compare.py" + ("" if not argv else " " + " ".join(argv)),
    }


# --------------------------------------------------------------------------- main


def parse_recipe_arg(s: str) -> tuple[str, str]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected NAME=path.yaml, got `{s}`")
    name, path = s.split("=", 1)
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=path.yaml, got `{s}`")
    return name, path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="bench/compare.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--only", help=f"comma-separated models (default: all of {','.join(models.SPECS)})")
    p.add_argument("--quick", action="store_true", help="subsets of eval/calib and short latency loops; writes nothing unless --write")
    p.add_argument("--recipe", action="append", type=parse_recipe_arg, default=[], metavar="NAME=PATH",
                   help="an extra onnxzip recipe row (repeatable), e.g. a tuned recipe")
    p.add_argument("--tune", default="magika", help="models that get an `onnxzip tune` row (comma-separated, default magika; '' for none): "
                   f"base deep-compression, budget {TUNE_BUDGET}, tuned on calib.npz")
    p.add_argument("--tune-time-limit", type=float, default=240.0, help="tune's --time-limit per model in seconds (default 240)")
    p.add_argument("--cache", help="benchmark cache (default $ONNXZIP_BENCH_CACHE or ~/.cache/onnxzip-bench)")
    p.add_argument("--threads", default="1,2", help="thread counts for latency (default 1,2; the last also runs the eval)")
    p.add_argument("--eval-batch", type=int, default=1,
                   help="eval batch (default 1: dynamic activation quantization takes its range over the whole batch, so a larger batch makes one sample's output depend on its neighbours)")
    p.add_argument("--latency-budget", type=float, help="seconds of timed runs per model and thread count (default 25; quick 1.5)")
    p.add_argument("--min-runs", type=int, help="fewest interleaved rounds (default 10; quick 3)")
    p.add_argument("--max-runs", type=int, default=400, help="most interleaved rounds (default 400)")
    p.add_argument("--no-diagnose", dest="diagnose", action="store_false",
                   help="skip the ablations run when deep-compression misses 99%% agreement (by default: without each step, and with each of the largest tensors left float)")
    p.add_argument("--diagnose-tensors", type=int, default=2,
                   help="how many of the largest, and of the most damaged by pruning, tensors to leave float one at a time (default 2 + 2)")
    p.add_argument("--diagnose-deadline", type=float, default=20.0,
                   help="skip the ablations of the models still to come once the run has used this many minutes (default 20), to keep a full run under 30 min")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md", help="results file (default bench/results.md)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="write results.md and the README block even for --quick / --only runs")
    g.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--json", type=Path, help="also dump every number as JSON here")
    p.add_argument("--keep", type=Path, help="keep the compressed files in this folder (default: a temp folder, removed)")
    args = p.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not args.threads or any(t < 1 for t in args.threads):
        p.error("--threads needs positive integers")
    args.threads = sorted(set(args.threads))
    args.tune = {t.strip() for t in args.tune.split(",") if t.strip()}
    if args.latency_budget is None:
        args.latency_budget = 1.5 if args.quick else 25.0
    if args.min_runs is None:
        args.min_runs = 3 if args.quick else 10
    for name, path in args.recipe:
        if not Path(path).exists():
            p.error(f"--recipe {name}={path}: no such file")

    logging.disable(logging.WARNING)  # onnxruntime.quantization and the pipeline log a lot; warnings are collected per row
    os.environ.setdefault("NO_COLOR", "1")
    try:
        entries = models.available_models(args.cache, only=args.only)
    except (models.CacheMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.t0 = time.perf_counter()
    env = environment(argv)
    log(f"{env['cpu']}, {env['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="onnxzip-compare-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    runs: list[ModelRun] = []
    try:
        for name, entry in entries.items():
            log(f"== {name}")
            try:
                runs.append(bench_model(name, entry, args, work))
            except Exception as e:  # a model-level failure is reported, the others go on
                log(f"{name}: FAILED: {first_line(e)}")
                traceback.print_exc()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t_all
    verdicts = judge(runs)
    text = render_results(runs, verdicts, env, args, wall)
    print(text)
    block = render_readme_block(runs, verdicts, env, args, wall)
    partial = args.quick or bool(args.only)
    if args.write or (not partial and not args.no_write):
        args.out.write_text(text, encoding="utf-8")
        log(f"wrote {args.out}")
        if write_readme(block):
            log("rewrote the README results block")
    else:
        log("quick/partial run: results.md and README not written (use --write)")
    if args.json:
        payload = {"environment": env, "wall_s": wall, "targets": [dataclasses.asdict(v) for v in verdicts], "models": []}
        for mr in runs:
            rows = []
            for r in mr.rows:
                d = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "executed"}
                d["path"] = str(r.path) if r.path else None
                d["latency"] = {str(k): v for k, v in r.latency.items()}
                rows.append(d)
            payload["models"].append({"name": mr.name, "kind": mr.kind, "n_eval": mr.n_eval, "n_calib": mr.n_calib,
                                      "latency_info": {str(k): v for k, v in mr.latency_info.items()}, "timings": mr.timings,
                                      "analysis": mr.analysis, "errors": mr.errors, "rows": rows})
        args.json.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    log(f"done in {wall / 60:.1f} min")
    return 0 if runs else 1


if __name__ == "__main__":
    sys.exit(main())
