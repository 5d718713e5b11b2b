"""`onnxzip tune` against uniform compression at the same accuracy budget.

For each model (the sample transformer; magika with its real inputs when the bench cache has
it, see `bench/models.py`):

* every shipped preset, compressed through the library as `onnxzip compress` does (with the
  model's calib.npz as `--calib`, for the presets that calibrate), and measured on the same two
  splits tune uses;
* every *uniform* setting of tune's own grid: all layers at the same setting of the base
  recipe (e.g. all at `prune:sparsity=0.6 quantize:bits=4`), built by the same machinery;
* `onnxzip tune` from the base recipe (wall time included).

A variant *meets the budget* when it holds on the choose split AND on the held-out split,
the rule tune itself obeys. The table gives stored bytes, the budget metric on both splits,
and the ratio of the best uniform variant meeting the budget to the tuned size.

    python bench/bench_tune.py                                  # transformer + magika if cached
    python bench/bench_tune.py --models transformer --budget 'top1_agreement>=0.99'
    python bench/bench_tune.py --recipe deep-compression --json out.json
    python bench/bench_tune.py --candidates quantize.bits=8,6,5,4,3,2 --candidates prune.sparsity=0.3,0.5,0.7,0.9

Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _models(names: list[str]) -> dict[str, tuple[Path, Path, Path | None]]:
    out: dict[str, tuple[Path, Path, Path | None]] = {}
    for n in names:
        if (SAMPLES / n / "model.onnx").exists():
            d = SAMPLES / n
            out[n] = (d / "model.onnx", d / "eval.npz", d / "calib.npz" if (d / "calib.npz").exists() else None)
            continue
        try:
            from models import CacheMissing, available_models
        except ImportError:
            print(f"skip {n}: bench/models.py not importable", file=sys.stderr)
            continue
        try:
            e = available_models(only=[n])[n]
        except (CacheMissing, KeyError, ValueError) as err:
            print(f"skip {n}: {err}", file=sys.stderr)
            continue
        out[n] = (e.path, e.eval_npz, e.calib_npz)
    return out


def bench_model(name: str, model: Path, data: Path, calib: Path | None, recipe: str, budget: str, holdout: float, time_limit: float | None, candidates: list[str], log) -> dict:
    from onnxzip import model as M
    from onnxzip.compress import compress, files_size
    from onnxzip.pipeline import model_bytes
    from onnxzip.recipe import load_recipe, preset_names
    from onnxzip.sensitivity import Workbench, parse_candidate_specs
    from onnxzip.tune import parse_budget, tune

    gate = parse_budget(budget)
    base = load_recipe(recipe)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        tmpd = Path(tmp)
        # tune first: its wall time is measured cold (nothing cached)
        t0, c0 = time.perf_counter(), time.process_time()
        res = tune(
            model, base, data, [gate], tmpd / "tuned.yaml", model_out=tmpd / "tuned.onnx", holdout=holdout, time_limit=time_limit,
            candidates=candidates, progress=lambda m: log(f"    {m}"),
        )
        tune_s, tune_cpu = time.perf_counter() - t0, time.process_time() - c0
        # the same splits and machinery for the baselines
        bench = Workbench(model, base, data, holdout=holdout, out_dir=tmpd, candidates=parse_candidate_specs(candidates))

        def judge(label: str, kind: str, mdl, stored: int) -> dict:
            c = bench.measure_model(mdl, "choose")
            h = bench.measure_model(mdl, "holdout")
            ok = c.passes([gate]) and h.passes([gate])
            row = {"variant": label, "kind": kind, "bytes": stored, "choose": c.worst(gate.metric, gate.op), "holdout": h.worst(gate.metric, gate.op), "meets": ok}
            log(f"  {label}: {stored} bytes, {gate.metric} {row['choose']:.4f} / {row['holdout']:.4f}: {'meets' if ok else 'misses'}")
            return row

        for p in preset_names():
            out = tmpd / f"{p}.onnx"
            try:
                r = compress(model, p, out, evaluate=False, enforce_gates=False, calib=calib)
            except Exception as e:  # a preset that cannot run on this model
                log(f"  preset {p}: failed: {str(e).splitlines()[0]}")
                rows.append({"variant": p, "kind": "preset", "bytes": None, "meets": False, "error": str(e).splitlines()[0]})
                continue
            rows.append(judge(p, "preset", M.load_model(out), files_size(r.files)))
        # uniform settings of tune's grid: the labels every layer has
        common = None
        for L in bench.layers:
            labels = {s.label for s in bench.settings[L.name]}
            common = labels if common is None else common & labels
        for label in sorted(common or ()):
            if label == "off":
                continue
            assign = {L.name: next(s for s in bench.settings[L.name] if s.label == label) for L in bench.layers}
            v = bench.build(assign)
            rows.append(judge(f"uniform {label}", "uniform", v.model, model_bytes(v.model)))
    ok = [r for r in rows if r["meets"]]
    best_preset = min((r for r in ok if r["kind"] == "preset"), key=lambda r: r["bytes"], default=None)
    best_uniform = min(ok, key=lambda r: r["bytes"], default=None)
    tuned = {
        "bytes": res.stored_bytes,
        "choose": res.choose.worst(gate.metric, gate.op),
        "holdout": res.holdout.worst(gate.metric, gate.op) if res.holdout else None,
        "seconds": tune_s,
        "cpu_seconds": tune_cpu,  # this process's CPU time: comparable when the machine is shared
        "trials": len(res.trials),
        "variants": sum(len(lr.options) for lr in res.sensitivity.layers) if res.sensitivity else 0,
        "sweep_seconds": res.sensitivity.seconds if res.sensitivity else None,
        "layers": [{"name": d["name"], "setting": d["setting"]} for d in res.layers],
    }
    return {
        "model": name,
        "original_bytes": res.original_bytes,
        "budget": budget,
        "recipe": recipe,
        "candidates": candidates,
        "tuned": tuned,
        "rows": rows,
        "best_preset": best_preset,
        "best_uniform": best_uniform,
        "gain_vs_preset": best_preset["bytes"] / res.stored_bytes if best_preset else None,
        "gain_vs_uniform": best_uniform["bytes"] / res.stored_bytes if best_uniform else None,
    }


def _kib(n) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def render(results: list[dict]) -> str:
    lines = []
    for r in results:
        t = r["tuned"]
        grid = " ".join(f"--candidates {c}" for c in r["candidates"]) or "the default grid"
        lines.append(f"### {r['model']} (budget `{r['budget']}`, base recipe `{r['recipe']}`, {grid}, original {_kib(r['original_bytes'])})")
        lines.append("")
        lines.append("| variant | stored | choose | held out | meets |")
        lines.append("|---|---:|---:|---:|---|")
        lines.append(f"| **tuned** | **{_kib(t['bytes'])}** | {t['choose']:.4f} | {t['holdout']:.4f} | yes |")
        for row in sorted(r["rows"], key=lambda x: (x["bytes"] is None, x["bytes"] or 0)):
            if row.get("error"):
                lines.append(f"| {row['variant']} | failed | | | {row['error'][:60]} |")
                continue
            lines.append(f"| {row['variant']} | {_kib(row['bytes'])} | {row['choose']:.4f} | {row['holdout']:.4f} | {'yes' if row['meets'] else 'no'} |")
        bp, bu = r["best_preset"], r["best_uniform"]
        lines.append("")
        lines.append(
            f"tune: {t['seconds']:.1f} s wall, {t['cpu_seconds']:.1f} s CPU ({t['variants']} per-layer variants in {t['sweep_seconds']:.1f} s, {t['trials']} end-to-end trials). "
            f"Best preset meeting the budget: {bp['variant'] + ' ' + _kib(bp['bytes']) if bp else 'none'}"
            + (f" -> tuned is {r['gain_vs_preset']:.2f}x smaller" if r["gain_vs_preset"] else "")
            + f". Best uniform variant (presets and grid): {bu['variant'] + ' ' + _kib(bu['bytes']) if bu else 'none'}"
            + (f" -> {r['gain_vs_uniform']:.2f}x." if r["gain_vs_uniform"] else ".")
        )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="transformer,magika", help="comma separated: sample model folders or bench cache names")
    ap.add_argument("--recipe", default="deep-compression", help="tune's base recipe (file or preset)")
    ap.add_argument("--budget", default="top1_agreement>=0.99")
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--candidates", action="append", default=[], help="tune's grid, PASS.KEY=V1,V2 (repeatable), as `onnxzip tune --candidates`")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)

    def log(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    results = []
    for name, (model, data, calib) in _models([s.strip() for s in args.models.split(",") if s.strip()]).items():
        log(f"{name}: {model}")
        results.append(bench_model(name, model, data, calib, args.recipe, args.budget, args.holdout, args.time_limit, args.candidates, log))
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"(cpu count {os.cpu_count()}; onnxruntime threads 1 per session)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
