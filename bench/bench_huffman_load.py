"""Load time of a Huffman-coded model (decode + session creation) vs its unpacked twin.

Not part of the test run. For each model: the plain int8 DequantizeLinear model is coded with
the `huffman` pass, unpacked again with `onnxzip unpack`'s code path, and loaded N times each
way in this process (file cache warm, median reported):

- `huffman`: ``onnxzip.InferenceSession(coded file)``: parse, decode (raw DEFLATE segments on a
  thread pool), session (decoded 8-bit tensors handed over as OrtValues, not serialized);
- `unpacked`: ``onnxzip.InferenceSession(unpacked file)``: parse (to look for ai.onnxzip
  nodes), then onnxruntime loads the file itself;
- `stock`: ``onnxruntime.InferenceSession(unpacked file)`` (what a user without onnxzip runs);
- `parse+decode`: the part of `huffman` before onnxruntime.

The target is huffman / unpacked <= 1.5x. Models: a generated MLP of ``--layers`` int8 weights
of ``--dim`` x ``--dim`` (default 12 x 2048 x 2048 = 50.3M values, Gaussian weights quantized
per channel, entropy ~6.9 bits), and the sample models after `quantize` (int8 and 4-bit
k-means). Usage::

    python bench/bench_huffman_load.py [--runs 5] [--layers 12] [--dim 2048] [--threads N] [--skip-samples]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def generated_model(layers: int, dim: int, seed: int = 0) -> onnx.ModelProto:
    """x[N, dim] -> (DequantizeLinear(q_i, s_i, axis=1) -> MatMul -> Relu) x layers."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = "x"
    for i in range(layers):
        w = rng.standard_normal((dim, dim), dtype=np.float32)
        scale = (np.abs(w).max(axis=0) / 127.0).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        inits += [numpy_helper.from_array(q, f"w{i}_q"), numpy_helper.from_array(scale, f"w{i}_s")]
        nodes += [
            helper.make_node("DequantizeLinear", [f"w{i}_q", f"w{i}_s"], [f"w{i}"], name=f"dq{i}", axis=1),
            helper.make_node("MatMul", [cur, f"w{i}"], [f"h{i}"], name=f"mm{i}"),
            helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        cur = f"r{i}"
    g = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", dim])], inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench")
    m.ir_version = 8
    return m


def interleaved_medians(fns: dict, runs: int) -> dict[str, tuple[float, float]]:
    """Run every function once per round, ``runs`` rounds (so that load on the machine hits
    all of them alike); (median, min) seconds per function."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def bench(label: str, plain_path: Path, folder: Path, runs: int, threads: int | None) -> dict:
    import onnxruntime as ort

    from onnxzip import _huffman_op as HO
    from onnxzip import model as M
    from onnxzip.passes.huffman import HuffmanConfig, HuffmanPass
    from onnxzip.runtime import InferenceSession, to_plain

    model = M.load_model(plain_path)
    res = HuffmanPass(HuffmanConfig()).call(model)
    coded = folder / f"{label}.huff.onnx"
    M.save_model(res.model, coded)
    unpacked = folder / f"{label}.unpacked.onnx"
    M.save_model(to_plain(M.load_model(coded, prepare=False)), unpacked)
    values = sum(t.params_before for t in res.tensors)
    bits = 8 * sum(t.bytes_after for t in res.tensors) / values if values else float("nan")
    entropy = sum(t.extra["entropy_bits"] * t.params_before for t in res.tensors) / values if values else float("nan")

    def decode_only() -> None:  # what InferenceSession does before onnxruntime: parse, decode
        m = M.load_model(coded, check=False, prepare=False)
        for scope in M.walk(m):
            for n in scope.graph.node:
                if n.domain == M.ONNXZIP_DOMAIN:
                    HO.decode_node(n, scope, threads=threads)

    so = ort.SessionOptions()
    so.log_severity_level = 3
    t = interleaved_medians(
        {
            "huffman": lambda: InferenceSession(coded, providers=["cpu"]),
            "unpacked": lambda: InferenceSession(unpacked, providers=["cpu"]),
            "stock": lambda: ort.InferenceSession(str(unpacked), so, providers=["CPUExecutionProvider"]),
            "decode": decode_only,
        },
        runs,
    )
    return {
        "model": label,
        "coded_values": values,
        "streams": len(res.tensors),
        "entropy_bits": entropy,
        "coded_bits": bits,
        "coded_mb": coded.stat().st_size / 1e6,
        "unpacked_mb": unpacked.stat().st_size / 1e6,
        "times": t,
    }


def quantized_sample(name: str, body: str, folder: Path) -> Path:
    from onnxzip import model as M
    from onnxzip.pipeline import run_pipeline
    from onnxzip.recipe import parse_recipe

    recipe = parse_recipe(f"version: 1\npasses:\n  - quantize: {body}\n")
    out = run_pipeline(M.load_model(ROOT / "sample_models" / name / "model.onnx"), recipe).model
    path = folder / f"{name}.q.onnx"
    M.save_model(out, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="decoder threads (default: the runtime's choice)")
    ap.add_argument("--skip-samples", action="store_true")
    args = ap.parse_args()
    import onnxruntime

    print(f"cpus {os.cpu_count()}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, runs {args.runs}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        gen = folder / "generated.onnx"
        onnx.save(generated_model(args.layers, args.dim), gen)
        rows.append(bench(f"generated-{args.layers}x{args.dim}x{args.dim}-int8", gen, folder, args.runs, args.threads))
        if not args.skip_samples:
            for name in ("digits_mlp", "digits_cnn", "transformer"):
                for tag, body in (("int8", "{bits: 8}"), ("kmeans4", "{method: kmeans, bits: 4}")):
                    rows.append(bench(f"{name}-{tag}", quantized_sample(name, body, folder), folder, args.runs, args.threads))
    print(f"median (min) seconds over {args.runs} interleaved runs; ratio = median huffman / median unpacked")
    head = (f"{'model':<34} {'values':>9} {'H bits':>6} {'bits':>5} {'coded MB':>8} {'plain MB':>8} "
            f"{'huffman s':>17} {'unpacked s':>17} {'stock s':>17} {'parse+decode s':>17} {'ratio':>6} {'vs stock':>8}")
    print(head)
    for r in rows:
        t = r["times"]
        cell = {k: f"{v[0]:.4f} ({v[1]:.4f})" for k, v in t.items()}
        print(
            f"{r['model']:<34} {r['coded_values']:>9} {r['entropy_bits']:>6.2f} {r['coded_bits']:>5.2f} {r['coded_mb']:>8.3f} "
            f"{r['unpacked_mb']:>8.3f} {cell['huffman']:>17} {cell['unpacked']:>17} {cell['stock']:>17} {cell['decode']:>17} "
            f"{t['huffman'][0] / t['unpacked'][0]:>5.2f}x {t['huffman'][0] / t['stock'][0]:>7.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
