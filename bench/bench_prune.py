"""Benchmark of the `prune` pass (not part of the tests): ``python bench/bench_prune.py``.

(a) Structured channel pruning of sample_models/digits_cnn at 25% and 50%: CPU latency of the
    original and the pruned model measured in one process, A/B interleaved, one intra-op
    thread, batch 64, median of many runs, printed as a ratio; top-1 accuracy on the shipped
    eval set for the original and both pruned models.
(b) Magnitude pruning of a generated ~100 MB model (large MatMul weights), layer and global
    scope and 2:4: wall time of the pass alone and its peak memory, each measured in a fresh
    subprocess (peak RSS reset before the pass through /proc/self/clear_refs, VmHWM read after
    it, plus tracemalloc's peak of Python/numpy allocations), against the model's size.

Options: ``--runs N`` latency runs per model (default 300), ``--mb`` size of the generated
model (default 100), ``--skip-a`` / ``--skip-b``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


# --------------------------------------------------------------------------- (a) latency


def _prune_model(src: Path, body: str):
    from onnxzip import model as M
    from onnxzip.pipeline import run_pipeline
    from onnxzip.recipe import parse_recipe

    model = M.load_model(src)
    res = run_pipeline(model, parse_recipe("version: 1\npasses:\n  - prune: " + body + "\n"))
    return res.model, res.steps[0].result


def _session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench_channels(runs: int, batch: int = 64) -> None:
    import onnx

    src = SAMPLES / "digits_cnn" / "model.onnx"
    with np.load(SAMPLES / "digits_cnn" / "eval.npz", allow_pickle=False) as z:
        x_all, labels = z["input"], z["labels"]
    models = {"original": onnx.load(src)}
    for s in (0.25, 0.5):
        m, res = _prune_model(src, f"{{method: channel, sparsity: {s}}}")
        models[f"channel {int(s * 100)}%"] = m
        print(f"  channel {s:.0%}: " + "; ".join(res.notes))
    sessions = {k: _session(m) for k, m in models.items()}
    x = x_all[:batch]
    print(f"\n(a) digits_cnn, CPU, 1 thread, batch {batch}, {runs} interleaved runs per model")
    print(f"{'model':<14} {'top-1':>7} {'params':>8} {'p50 ms':>8} {'p90 ms':>8} {'vs orig':>8}")
    for s in sessions.values():  # warm-up
        for _ in range(20):
            s.run(None, {"input": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    for i in range(runs):
        for k in order if i % 2 == 0 else reversed(order):  # interleave, alternate order
            t0 = time.perf_counter()
            sessions[k].run(None, {"input": x})
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["original"])
    for k, m in models.items():
        logits = sessions[k].run(None, {"input": x_all})[0]
        acc = float((logits.argmax(-1) == labels).mean())
        params = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
        med = statistics.median(times[k])
        p90 = float(np.percentile(times[k], 90))
        print(f"{k:<14} {acc:>7.2%} {params:>8} {med * 1e3:>8.3f} {p90 * 1e3:>8.3f} {med / base:>7.3f}x")


# --------------------------------------------------------------------------- (b) memory/time

_CHILD = r"""
import json, os, sys, time, tracemalloc
from onnxzip import model as M
from onnxzip.passes.prune import PrunePass, PruneConfig

def rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1

path, cfg = sys.argv[1], json.loads(sys.argv[2])
imported = rss_kb("VmRSS")
model = M.load_model(path, check=False)
before = rss_kb("VmRSS")
load_peak = rss_kb("VmHWM")  # ru_maxrss would not do: Linux carries it over from the parent across exec
reset = True
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
except OSError:
    reset = False
tracemalloc.start()
t0 = time.perf_counter()
res = PrunePass(PruneConfig(**cfg)).call(model)
wall = time.perf_counter() - t0
_, py_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({
    "wall_s": wall,
    "rss_imports_kb": imported,
    "rss_before_kb": before,
    "hwm_kb": rss_kb("VmHWM"),
    "hwm_reset": reset,
    "load_hwm_kb": load_peak,
    "tracemalloc_peak": py_peak,
    "tensors": len(res.tensors),
    "sparsity": [t.sparsity for t in res.tensors],
}))
"""


def make_big_model(path: Path, mb: int) -> int:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = 2048
    layers = max(1, round(mb * 2**20 / (d * d * 4)))
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for i in range(layers):
        w = rng.standard_normal((d, d), dtype=np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        x = f"h{i}"
    g = helper.make_graph(
        nodes, "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", d])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return layers * d * d * 4


def bench_memory(mb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.onnx"
        weight_bytes = make_big_model(path, mb)
        size = path.stat().st_size
        print(f"\n(b) magnitude pruning of a generated model: {size / 2**20:.1f} MiB on disk "
              f"({weight_bytes // (2048 * 2048 * 4)} MatMul weights 2048x2048), {os.cpu_count()} CPUs")
        print(f"{'config':<60} {'pass s':>7} {'peak RSS +MiB':>14} {'x model':>8} {'numpy peak MiB':>15}")
        configs = [
            {"method": "magnitude", "sparsity": 0.5},
            {"method": "magnitude", "sparsity": 0.5, "scope": "global"},
            {"method": "n:m", "pattern": "2:4"},
        ]
        for cfg in configs:
            p = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(cfg)], check=False, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"{json.dumps(cfg):<60} failed: {p.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(p.stdout)
            extra_mib = (r["hwm_kb"] - r["rss_before_kb"]) / 1024 if r["hwm_reset"] else float("nan")
            achieved = sum(r["sparsity"]) / len(r["sparsity"])  # equal-sized tensors
            assert abs(achieved - 0.5) < 1e-6, r["sparsity"]
            print(f"{json.dumps(cfg):<60} {r['wall_s']:>7.2f} {extra_mib:>14.1f} {extra_mib * 2**20 / size:>7.2f}x "
                  f"{r['tracemalloc_peak'] / 2**20:>15.1f}")
        print(
            f"(last run, whole process: {r['rss_imports_kb'] / 1024:.0f} MiB after imports, "
            f"{r['rss_before_kb'] / 1024:.0f} MiB with the model loaded, peak while loading "
            f"{r['load_hwm_kb'] / 1024:.0f} MiB (file bytes + parsed proto), "
            f"peak during the pass {r['hwm_kb'] / 1024:.0f} MiB)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    args = ap.parse_args()
    if not args.skip_a:
        bench_channels(args.runs)
    if not args.skip_b:
        bench_memory(args.mb)


if __name__ == "__main__":
    main()
