"""Calibration-aware compression against its data-free twin, side by side, from ONE run.

For each model (the sample models ``digits_cnn`` and ``transformer``, and ``magika`` when the
bench cache holds it, see ``bench/models.py``), every variant is compressed through the
library (``run_pipeline``, the pipeline ``onnxzip compress`` runs, with the model's
``calib.npz``: ``--samples`` samples) and measured on its ``eval.npz``:

* quantization, rounding (``rtn``) vs ``gptq``: int4 weight-only (blocks of 32), k-means 4
  and 5 bit;
* pruning, ``magnitude`` vs ``wanda`` vs ``sparsegpt``: 50 % unstructured and 2:4; at 50 %
  also Wanda with the paper's per-output-row comparison groups (``wanda_group: row``; the
  default compares the whole layer);
* the deep pipeline "prune 50 % + k-means 5 bit + huffman": data-free (magnitude, rtn) vs
  data-aware (sparsegpt + gptq k-means, both with bias correction).

Columns: top-1 agreement with the fp32 model, top-1 accuracy against the labels, relative
L2 error of the outputs, stored bytes of the written file and its deflate (zlib -9) size
(pruned zeros only pay off once entropy-coded), and the compression seconds. Twins have the
same size by construction (same bits, same sparsity). ``digits_cnn`` runs ``simplify`` first
in every variant (folds its BatchNormalization into the convs, as the presets do), so the
layer statistics see the real output scale. After the tables: the calibration runs (time,
traced peak memory, statistics size).

    python bench/bench_data_aware.py                         # digits_cnn, transformer, magika if cached
    python bench/bench_data_aware.py --models magika --samples 128 --json out.json

Not part of the test run. magika needs ``python bench/models.py --only magika`` once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnxzip import model as M  # noqa: E402
from onnxzip.data import CalibrationSource, NpzData  # noqa: E402
from onnxzip.passes.base import PassContext  # noqa: E402
from onnxzip.pipeline import run_pipeline  # noqa: E402
from onnxzip.recipe import parse_recipe  # noqa: E402
from onnxzip.runtime import InferenceSession  # noqa: E402

INT4 = {"bits": 4, "granularity": "block", "block_size": 32}
KM4 = {"method": "kmeans", "bits": 4}
KM5 = {"method": "kmeans", "bits": 5}
P50 = {"sparsity": 0.5}
P24 = {"method": "n:m", "pattern": "2:4"}
GPTQ = {"algorithm": "gptq"}

# (group, variant, passes)
VARIANTS: list[tuple[str, str, list[dict]]] = [
    ("int4 block 32", "rtn", [{"quantize": INT4}]),
    ("int4 block 32", "gptq", [{"quantize": {**INT4, **GPTQ}}]),
    ("k-means 4 bit", "rtn", [{"quantize": KM4}]),
    ("k-means 4 bit", "gptq", [{"quantize": {**KM4, **GPTQ}}]),
    ("k-means 5 bit", "rtn", [{"quantize": KM5}]),
    ("k-means 5 bit", "gptq", [{"quantize": {**KM5, **GPTQ}}]),
    ("prune 50%", "magnitude", [{"prune": P50}]),
    ("prune 50%", "wanda", [{"prune": {**P50, "algorithm": "wanda"}}]),
    ("prune 50%", "wanda (row groups)", [{"prune": {**P50, "algorithm": "wanda", "wanda_group": "row"}}]),
    ("prune 50%", "sparsegpt", [{"prune": {**P50, "algorithm": "sparsegpt"}}]),
    ("prune 2:4", "magnitude", [{"prune": P24}]),
    ("prune 2:4", "wanda", [{"prune": {**P24, "algorithm": "wanda"}}]),
    ("prune 2:4", "sparsegpt", [{"prune": {**P24, "algorithm": "sparsegpt"}}]),
    ("prune 50% + k-means 5 + huffman", "data-free", [{"prune": P50}, {"quantize": KM5}, {"huffman": {}}]),
    ("prune 50% + k-means 5 + huffman", "data-aware", [
        {"prune": {**P50, "algorithm": "sparsegpt", "bias_correction": True}},
        {"quantize": {**KM5, **GPTQ, "bias_correction": True}},
        {"huffman": {}},
    ]),
]
PREFIX = {"digits_cnn": [{"simplify": {}}]}


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def outputs(model_or_path, data: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    sess = InferenceSession(model_or_path, providers=["cpu"])
    names = [i.name for i in sess.get_inputs()]
    n = len(data[names[0]])
    return np.concatenate([sess.run(None, {k: data[k][i:i + batch] for k in names})[0] for i in range(0, n, batch)])


def models(selected: list[str], cache: str | None) -> dict[str, tuple[Path, Path, Path]]:
    out = {}
    for name in selected:
        if name == "magika":
            try:
                from models import CacheMissing, available_models  # bench/models.py
            except ImportError as e:
                print(f"skipping magika: bench/models.py is not available ({e})", file=sys.stderr)
                continue
            try:
                e = available_models(cache, only=["magika"])["magika"]
            except (CacheMissing, KeyError, ValueError) as err:
                print(f"skipping magika: {err}", file=sys.stderr)
                continue
            out[name] = (Path(e.path), Path(e.eval_npz), Path(e.calib_npz))
        else:
            d = SAMPLES / name
            out[name] = (d / "model.onnx", d / "eval.npz", d / "calib.npz")
    return out


def bench_model(name: str, path: Path, eval_npz: Path, calib_npz: Path, samples: int, batch: int, tmp: Path,
                groups: set[str] | None = None) -> dict:
    data = load_npz(eval_npz)
    labels = data.pop("labels", None)
    ref = outputs(str(path), data)
    rows = []
    runs = []
    for group, variant, passes in VARIANTS:
        if groups is not None and group not in groups:
            continue
        model = M.load_model(path)
        ctx = PassContext(calibration=CalibrationSource(NpzData(calib_npz, what="calibration"), samples=samples, batch=batch))
        recipe = parse_recipe(yaml.safe_dump({"version": 1, "passes": PREFIX.get(name, []) + passes}))
        t0 = time.perf_counter()
        res = run_pipeline(model, recipe, context=ctx)
        seconds = time.perf_counter() - t0
        out = tmp / f"{name}-{len(rows)}.onnx"
        files = M.save_model(res.model, out)
        raw = b"".join(f.read_bytes() for f in files)
        y = outputs(str(out), data)
        row = {
            "group": group, "variant": variant,
            "agreement": float(np.mean(y.argmax(-1) == ref.argmax(-1))),
            "accuracy": float(np.mean(y.argmax(-1) == labels)) if labels is not None else None,
            "rel_error": float(np.linalg.norm(y - ref) / np.linalg.norm(ref)),
            "bytes": len(raw), "deflate": len(zlib.compress(raw, 9)), "seconds": seconds,
        }
        rows.append(row)
        if ctx.stats_cache is not None:
            runs.extend(
                {"variant": f"{group} / {variant}", "views": len(r.stats), "samples": r.samples,
                 "seconds": r.seconds, "peak_mib": r.peak_bytes / 2**20, "stats_mib": r.stats_bytes / 2**20}
                for r in ctx.stats_cache.runs
            )
        print(f"  {name}: {group} / {variant}: agreement {row['agreement']:.4f}, {seconds:.1f} s", file=sys.stderr)
    fp32 = {"bytes": path.stat().st_size, "accuracy": float(np.mean(ref.argmax(-1) == labels)) if labels is not None else None}
    return {"model": name, "fp32": fp32, "rows": rows, "calibration_runs": runs, "samples": samples}


def table(r: dict) -> str:
    fp = r["fp32"]
    acc = f", fp32 top-1 accuracy {fp['accuracy']:.2%}" if fp["accuracy"] is not None else ""
    lines = [
        f"### {r['model']} (fp32 {fp['bytes']:,} bytes{acc}; calibration: {r['samples']} samples)",
        "",
        "| variant | method | top-1 agreement | top-1 accuracy | rel. L2 error | stored bytes | deflate bytes | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        acc = f"{row['accuracy']:.2%}" if row["accuracy"] is not None else "-"
        lines.append(
            f"| {row['group']} | {row['variant']} | {row['agreement']:.2%} | {acc} | {row['rel_error']:.4f} | "
            f"{row['bytes']:,} | {row['deflate']:,} | {row['seconds']:.1f} |"
        )
    if r["calibration_runs"]:
        worst = max(r["calibration_runs"], key=lambda x: x["seconds"])
        peak = max(x["peak_mib"] for x in r["calibration_runs"])
        lines += ["", f"Calibration runs: {len(r['calibration_runs'])}; slowest {worst['seconds']:.2f} s "
                      f"({worst['views']} views, {worst['samples']} samples, statistics {worst['stats_mib']:.2f} MiB); "
                      f"largest traced peak {peak:.1f} MiB."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="digits_cnn,transformer,magika", help="comma-separated: digits_cnn, transformer, digits_mlp, magika")
    ap.add_argument("--cache", default=None, help="bench model cache (default: bench/models.py's)")
    ap.add_argument("--samples", type=int, default=128, help="calibration samples")
    ap.add_argument("--batch", type=int, default=16, help="calibration batch")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--only", default=None, help="comma-separated variant groups to run, e.g. \"prune 50%%,prune 2:4\" (default: all)")
    args = ap.parse_args(argv)
    selected = [s.strip() for s in args.models.split(",") if s.strip()]
    groups = None
    if args.only:
        groups = {g.strip() for g in args.only.split(",") if g.strip()}
        unknown = groups - {g for g, _, _ in VARIANTS}
        if unknown:
            ap.error(f"unknown variant group(s) {sorted(unknown)}; valid: {sorted({g for g, _, _ in VARIANTS})}")
    results = []
    with tempfile.TemporaryDirectory() as d:
        for name, (path, ev, cal) in models(selected, args.cache).items():
            print(f"{name}: {sum(groups is None or g in groups for g, _, _ in VARIANTS)} variants", file=sys.stderr)
            results.append(bench_model(name, path, ev, cal, args.samples, args.batch, Path(d), groups))
    for r in results:
        print(table(r))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
