"""Benchmark of batch mode (not part of the tests): ``python bench/bench_batch.py``.

Compresses the sample_models directory (6 models) with one recipe several ways and reports
the wall time of each (median of ``--repeats`` runs, default 3, the modes interleaved in each
run), every run into a fresh output folder so that nothing is skipped as up to date. What a
user runs, as shell commands (each pays Python's and onnxruntime's imports):

- ``cli one by one``: ``onnxzip compress MODEL -r RECIPE -o OUT`` once per model, in turn;
- ``cli dir -j1`` / ``cli dir -jN``: one ``onnxzip compress DIR -r RECIPE -o OUT --workers 1|N``.

And in this process, warm (imports paid once before timing):

- ``library``: ``onnxzip.compress()`` called for each model in turn in this process (warm:
  imports and onnxsim loaded once before timing);
- ``batch -j1``: ``onnxzip.batch.compress_dir(workers=1)`` (in-process, plus the summary);
- ``batch -jN``: ``compress_dir(workers=N)`` (default 2): a spawned process pool, each worker
  paying its own imports.

Ratios are sequential time / parallel time (> 1: the pool is faster). The outputs of the pool
are checked to be byte-identical to the sequential ones. Options: ``--recipe`` (default
``fp16``, whose gates make every model evaluated on generated inputs), ``--workers``,
``--repeats``, ``--models DIR``, ``--json``; ``--generated N --mb X`` benchmarks N generated
MLPs of about X MB each instead (the sample models take ~0.1 s each, too little for a pool
to pay off).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _generate(folder: Path, n: int, mb: float) -> None:
    """N MLPs x[N,K] -> (MatMul+Add+Relu) x 4 -> y[N,16], about ``mb`` MB of float weights each."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = int((mb * 2**20 / 4 / 4) ** 0.5)
    for i in range(n):
        rng = np.random.default_rng(i)
        nodes, inits, prev = [], [], "x"
        for layer in range(4):
            out_dim = 16 if layer == 3 else width
            w = (rng.standard_normal((width, out_dim)) / np.sqrt(width)).astype(np.float32)
            b = np.zeros(out_dim, np.float32)
            inits += [numpy_helper.from_array(w, f"w{layer}"), numpy_helper.from_array(b, f"b{layer}")]
            nodes += [helper.make_node("MatMul", [prev, f"w{layer}"], [f"m{layer}"], name=f"fc{layer}"), helper.make_node("Add", [f"m{layer}", f"b{layer}"], [f"a{layer}"], name=f"bias{layer}")]
            prev = f"a{layer}"
            if layer < 3:
                nodes.append(helper.make_node("Relu", [prev], [f"r{layer}"], name=f"relu{layer}"))
                prev = f"r{layer}"
        nodes[-1].output[0] = "y"
        g = helper.make_graph(nodes, f"mlp{i}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        (folder / f"m{i}").mkdir()
        onnx.save(m, folder / f"m{i}" / "model.onnx")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="fp16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", type=Path, default=ROOT / "sample_models")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--generated", type=int, default=0, help="benchmark N generated models instead of --models")
    ap.add_argument("--mb", type=float, default=16.0, help="size of each generated model")
    args = ap.parse_args(argv)
    gen_dir = None
    if args.generated:
        gen_dir = tempfile.TemporaryDirectory()
        args.models = Path(gen_dir.name)
        _generate(args.models, args.generated, args.mb)

    from onnxzip import compress
    from onnxzip.batch import compress_dir, find_models
    from onnxzip.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    models = find_models(args.models)
    print(f"{len(models)} models in {args.models}, recipe `{recipe.name}`, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up: imports, onnxsim, onnxruntime's first session
        compress(args.models / models[0], recipe, tmp / "warm.onnx")
        runs: dict[str, list[float]] = {"cli one by one": [], "cli dir -j1": [], f"cli dir -j{args.workers}": [],
                                        "library": [], "batch -j1": [], f"batch -j{args.workers}": []}
        exe = shutil.which("onnxzip") or str(Path(sys.executable).with_name("onnxzip"))

        def cli(*a: str) -> None:
            subprocess.run([exe, "compress", *a, "-r", args.recipe, "-q"], check=False, stdout=subprocess.DEVNULL)

        for r in range(args.repeats):
            one = tmp / f"cli1-{r}"

            def one_by_one(one: Path = one) -> None:
                for rel in models:
                    (one / rel).parent.mkdir(parents=True, exist_ok=True)
                    cli(str(args.models / rel), "-o", str(one / rel))

            runs["cli one by one"].append(_time(one_by_one))
            runs["cli dir -j1"].append(_time(lambda r=r: cli(str(args.models), "-o", str(tmp / f"clid1-{r}"), "--workers", "1")))
            runs[f"cli dir -j{args.workers}"].append(_time(lambda r=r: cli(str(args.models), "-o", str(tmp / f"clidn-{r}"), "--workers", str(args.workers))))
            for rel in models:
                a, b = one / rel, tmp / f"clidn-{r}" / rel
                if a.exists() != b.exists() or (a.exists() and a.read_bytes() != b.read_bytes()):
                    raise SystemExit(f"cli outputs differ for {rel}")
            lib_out = tmp / f"lib{r}"

            def library(lib_out: Path = lib_out) -> None:
                for rel in models:
                    out = lib_out / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    compress(args.models / rel, recipe, out)

            runs["library"].append(_time(library))
            seq = tmp / f"seq{r}"
            res1 = None

            def batch1(seq: Path = seq) -> None:
                nonlocal res1
                res1 = compress_dir(args.models, args.recipe, seq, workers=1)

            runs["batch -j1"].append(_time(batch1))
            par = tmp / f"par{r}"
            resn = None

            def batchn(par: Path = par) -> None:
                nonlocal resn
                resn = compress_dir(args.models, args.recipe, par, workers=args.workers)

            runs[f"batch -j{args.workers}"].append(_time(batchn))
            assert res1.exit_code == resn.exit_code, (res1.exit_code, resn.exit_code)
            for rel in models:
                if (seq / rel).exists() and (seq / rel).read_bytes() != (par / rel).read_bytes():
                    raise SystemExit(f"outputs differ for {rel}")
            print(f"run {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in runs.items()}
    par_key = f"batch -j{args.workers}"
    result = {
        "models": len(models),
        "source": f"{args.generated} generated MLPs of ~{args.mb:g} MB" if args.generated else str(args.models),
        "recipe": recipe.name,
        "workers": args.workers,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "load_average_after": round(os.getloadavg()[0], 2),
        "seconds": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "ratio_cli_one_by_one_over_cli_dir_parallel": round(med["cli one by one"] / med[f"cli dir -j{args.workers}"], 3),
        "ratio_cli_dir_j1_over_cli_dir_parallel": round(med["cli dir -j1"] / med[f"cli dir -j{args.workers}"], 3),
        "ratio_library_over_parallel": round(med["library"] / med[par_key], 3),
        "ratio_j1_over_parallel": round(med["batch -j1"] / med[par_key], 3),
        "exit_code": res1.exit_code if res1 else None,
    }
    print(f"\n{'mode':<16}{'median':>10}   runs", file=sys.stderr)
    for k, v in med.items():
        print(f"{k:<16}{v:>9.2f}s   {', '.join(f'{x:.2f}' for x in runs[k])}", file=sys.stderr)
    print(f"speed-up of cli dir -j{args.workers}: {result['ratio_cli_one_by_one_over_cli_dir_parallel']:.2f}x vs cli one by one, "
          f"{result['ratio_cli_dir_j1_over_cli_dir_parallel']:.2f}x vs cli dir -j1", file=sys.stderr)
    print(f"speed-up of {par_key}: {result['ratio_library_over_parallel']:.2f}x vs the library loop, {result['ratio_j1_over_parallel']:.2f}x vs -j1", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    if gen_dir is not None:
        gen_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
