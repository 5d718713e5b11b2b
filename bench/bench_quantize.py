"""Quantization presets against onnxruntime's own quantizers, on the sample models.

For each model: the fp32 original, every onnxzip quantization preset (compressed through the
library, as `onnxzip compress` does) and onnxruntime's quantize_dynamic (per channel),
quantize_static (QDQ, per channel, the same calibration data) and MatMulNBitsQuantizer
(4 bit, block 32; models with MatMul only). Reported side by side from ONE run:

* size: stored bytes (model file + external data) and fp32 bytes / variant bytes;
* latency: median of many single-threaded runs at batch ``--batch``, all variants timed in
  the same process, interleaved call by call so load from elsewhere hits them alike;
  ratio to fp32;
* top-1 agreement with fp32 and top-1 accuracy on the model's eval.npz.

A quantizer that fails on a model is reported as failed; the run goes on.

    python bench/bench_quantize.py                       # all three models, batch 1
    python bench/bench_quantize.py --models transformer --batch 32 --out table.md

Not part of the test run (needs onnxruntime.quantization, which imports onnx_ir for
MatMulNBitsQuantizer: `pip install onnx-ir`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from _calib_reader import CalibReader  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
PRESETS = ("int8-dynamic", "int8-static", "int4-weight-only", "kmeans-5bit", "deep-compression")
# onnxzip preset -> the onnxruntime quantizer it is compared with
PEERS = {"int8-dynamic": "ort-dynamic", "int8-static": "ort-static", "int4-weight-only": "ort-matmulnbits"}


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


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


# --------------------------------------------------------------------------- variants


def onnxzip_variant(model: Path, preset: str, out: Path, calib: Path) -> Path:
    from onnxzip import compress

    compress(model, preset, out, calib=calib if preset == "int8-static" else None)
    return out


def ort_dynamic(model: Path, out: Path, calib: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(model), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out


def ort_static(model: Path, out: Path, calib: Path) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    data = {k: v for k, v in load_npz(calib).items() if k != "labels"}
    quantize_static(
        str(model), str(out), CalibReader(data), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    return out


def ort_matmulnbits(model: Path, out: Path, calib: Path) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    proto = onnx.load(str(model))
    if not any(n.op_type == "MatMul" for n in proto.graph.node):
        raise RuntimeError("model has no MatMul")
    q = MatMulNBitsQuantizer(proto, bits=4, block_size=32)
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


ORT_VARIANTS = {"ort-dynamic": ort_dynamic, "ort-static": ort_static, "ort-matmulnbits": ort_matmulnbits}


# --------------------------------------------------------------------------- measuring


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    from onnxzip.runtime import session_from_model  # decodes ai.onnxzip nodes, if any

    if any((n.domain or "") == "ai.onnxzip" for n in onnx.load(str(path), load_external_data=False).graph.node):
        from onnxzip import model as M

        return session_from_model(M.load_model(path, prepare=False), ["CPUExecutionProvider"], threads=threads)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def latencies(sessions: dict[str, ort.InferenceSession], feed: dict[str, np.ndarray], runs: int, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():  # warm-up
        for _ in range(20):
            s.run(None, feed)
    # One call per variant in turn, so a burst of load from elsewhere hits all variants
    # alike; rounds only regroup the calls (kept for the --rounds knob).
    items = list(sessions.items())
    for r in range(rounds):
        order = items if r % 2 == 0 else items[::-1]
        for _ in range(runs):
            for k, s in order:
                t = time.perf_counter()
                s.run(None, feed)
                times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_model(name: str, args) -> list[dict]:
    folder = SAMPLES / name
    model, calib = folder / "model.onnx", folder / "calib.npz"
    ev = load_npz(folder / "eval.npz")
    labels = ev.pop("labels", None)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        paths: dict[str, Path] = {"fp32": model}
        for preset in PRESETS:
            try:
                paths[preset] = onnxzip_variant(model, preset, Path(d) / f"{preset}.onnx", calib)
            except Exception as e:  # report, go on
                rows.append({"variant": preset, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
                if args.verbose:
                    traceback.print_exc()
        for key, fn in ORT_VARIANTS.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    paths[key] = fn(model, Path(d) / f"{key}.onnx", calib)
            except Exception as e:
                rows.append({"variant": key, "error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"})
                if args.verbose:
                    traceback.print_exc()
        sessions = {}
        for k, p in paths.items():
            try:
                sessions[k] = session(p)
            except Exception as e:
                rows.append({"variant": k, "error": f"session: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"})
        ref = sessions["fp32"].run(None, ev)[0].argmax(-1)
        feed = {k: v[: args.batch] for k, v in ev.items()}
        lat = latencies(sessions, feed, args.runs, args.rounds)
        size0 = file_bytes(model)
        for k, s in sessions.items():
            top1 = s.run(None, ev)[0].argmax(-1)
            size = file_bytes(paths[k])
            rows.append({
                "variant": k,
                "bytes": size,
                "size_ratio": size0 / size,
                "latency_us": lat[k] * 1e6,
                "latency_ratio": lat[k] / lat["fp32"],
                "agreement": float(np.mean(top1 == ref)),
                "accuracy": float(np.mean(top1 == labels)) if labels is not None else None,
            })
    order = ["fp32", *PRESETS, *ORT_VARIANTS]
    rows.sort(key=lambda r: (order.index(r["variant"]) if r["variant"] in order else 99, "error" in r))
    return rows


def render(name: str, rows: list[dict], args) -> str:
    out = [f"### {name} (batch {args.batch}, 1 thread, median of {args.runs * args.rounds} runs)", "",
           "| variant | bytes | size x | latency us | latency vs fp32 | top-1 agreement | accuracy |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        acc = f"{r['accuracy'] * 100:.2f}%" if r["accuracy"] is not None else "-"
        out.append(
            f"| {r['variant']} | {r['bytes']:,} | {r['size_ratio']:.2f} | {r['latency_us']:.1f} | "
            f"{r['latency_ratio']:.2f} | {r['agreement'] * 100:.2f}% | {acc} |"
        )
    by = {r["variant"]: r for r in rows if "error" not in r}
    checks = []
    for mine, peer in PEERS.items():
        if mine in by and peer in by:
            a, b = by[mine], by[peer]
            ok = a["bytes"] <= b["bytes"] and a["agreement"] >= b["agreement"]
            checks.append(
                f"- {mine} vs {peer}: {a['bytes']:,} vs {b['bytes']:,} bytes, agreement "
                f"{a['agreement'] * 100:.2f}% vs {b['agreement'] * 100:.2f}%, latency x{a['latency_ratio']:.2f} vs "
                f"x{b['latency_ratio']:.2f}: {'ok' if ok else 'MISSED'}"
            )
        elif mine in by:
            checks.append(f"- {mine}: no {peer} result to compare")
    return "\n".join(out + [""] + checks + [""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="digits_mlp,digits_cnn,transformer")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=200, help="timed runs per variant per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, help="also write the Markdown tables here")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)  # onnxruntime.quantization logs a lot
    os.environ.setdefault("NO_COLOR", "1")
    text = [f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, CPU threads 1", ""]
    for name in args.models.split(","):
        rows = bench_model(name.strip(), args)
        block = render(name.strip(), rows, args)
        print(block, flush=True)
        text.append(block)
    if args.out:
        args.out.write_text("\n".join(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
