"""`onnxzip tune MODEL --data eval.npz -r BASE --budget 'top1_agreement>=0.99' -o tuned.yaml`:
per-layer settings for the smallest model inside an accuracy budget, written as a recipe."""

from __future__ import annotations

from pathlib import Path

import typer

from onnxzip.cli._common import err_console, say
from onnxzip.cli.sensitivity import opt_candidates, opt_subset, opt_task_metric
from onnxzip.errors import UsageError


def tune_cmd(
    model: Path = typer.Argument(..., help="ONNX model file."),
    recipe: str = typer.Option(..., "--recipe", "-r", help="Base recipe (file or preset): its weight passes are tuned per layer; its other passes run as they are."),
    data: Path = typer.Option(..., "--data", help="Evaluation data: .npz with one array per model input (batch on axis 0) and optional `labels`."),
    budget: list[str] = typer.Option(..., "--budget", help="Accuracy budget, METRIC>=VALUE (>=, <=, >, <), e.g. 'top1_agreement>=0.99', 'cosine>=0.995', 'accuracy_drop<=0.01' (repeatable: all must hold)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the tuned recipe (.yaml)."),
    model_out: Path = typer.Option(None, "--model-out", help="Also write the tuned model here (the file `onnxzip compress -r TUNED` reproduces)."),
    holdout: float = typer.Option(0.3, "--holdout", min=0.0, max=0.95, help="Fraction of the samples (fixed shuffle, seeded by the recipe seed) never used for choosing; the budget must hold on it too."),
    objective: str = typer.Option("size", "--objective", help="What to minimize: size (stored bytes) or latency (CPU, batch 1; noisy on tiny models)."),
    candidates: list[str] = opt_candidates(),
    subset: int = opt_subset(),
    task_metric: list[str] = opt_task_metric(),
    time_limit: float = typer.Option(None, "--time-limit", min=1, help="Stop searching after about this many seconds and use the best verified choice so far (the final compress and check still run)."),
    samples: int = typer.Option(None, "--samples", min=1, help="Use at most the first N samples of --data."),
    calib: Path = typer.Option(None, "--calib", help="Calibration data for data-aware passes (recorded in the tuned recipe)."),
    threads: int = typer.Option(1, "--threads", min=0, help="onnxruntime intra-op threads (0: onnxruntime's default)."),
    batch: int = typer.Option(32, "--batch-size", min=1, help="Batch size of the accuracy runs."),
    as_json: bool = typer.Option(False, "--json", help="Print the result (choice per layer, sizes, metrics, search trace) as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
) -> None:
    """Choose a setting for every layer the base recipe targets so that the stored size
    (or latency) is smallest while the budget holds on the choose split AND on the
    held-out split, then write it as a recipe with explicit per-node overrides.

    Exit codes: 0 written; 1 the budget cannot be met even with every layer uncompressed
    (the best figure is printed, nothing is written); 2 bad input. Example:

        onnxzip tune model.onnx --data eval.npz -r deep-compression --budget 'top1_agreement>=0.99' -o tuned.yaml
        onnxzip compress model.onnx -r tuned.yaml -o model.tuned.onnx     # the same bytes tune measured
    """
    from rich.table import Table
    from rich.text import Text

    from onnxzip._format import fmt_bytes, fmt_duration, fmt_ratio
    from onnxzip.recipe import load_recipe
    from onnxzip.report import to_json
    from onnxzip.tune import OBJECTIVES, parse_budget, tune

    if objective not in OBJECTIVES:
        from onnxzip.recipe import did_you_mean

        raise UsageError(f"--objective `{objective}` is not known", hint=did_you_mean(objective, OBJECTIVES))
    gates = [parse_budget(b) for b in budget]
    r = load_recipe(recipe)
    if output.suffix.lower() not in (".yaml", ".yml"):
        raise UsageError(f"--output `{output}` is not a .yaml file", hint="the tuned recipe is YAML, e.g. -o tuned.yaml")
    say(f"tuning {model} from recipe `{r.name}` for the smallest {'stored size' if objective == 'size' else 'latency'}", quiet=quiet)
    res = tune(
        model, r, data, gates, output, model_out=model_out, holdout=holdout, subset=subset, objective=objective,
        candidates=candidates or (), task_metrics=task_metric or (), calib=calib, samples=samples, batch=batch,
        threads=threads, time_limit=time_limit, progress=lambda m: say(f"  {m}", quiet=quiet),
    )
    if not quiet:
        t = Table(title=f"tuned: {len(res.layers)} layers", title_justify="left")
        for i, c in enumerate(("layer", "params", "setting", "saved alone", "noise alone")):
            if i in (1, 3, 4):
                t.add_column(c, justify="right", no_wrap=True)
            else:
                t.add_column(c, justify="left", overflow="fold")
        for d in res.layers:
            t.add_row(Text(d["name"]), str(d["params"]), Text(d["setting"]), fmt_bytes(d["saved_alone"]) if objective == "size" else f"{d['saved_alone']:.4f} ms", f"{d['nsr_alone']:.2e}")
        err_console().print(t)
        for note in res.notes:
            say(f"note: {note}")
        for g in res.budgets:
            held = f", {res.holdout.worst(g.metric, g.op):.4f} on {res.holdout.samples} held-out samples" if res.holdout else ""
            say(f"{g.metric}: {res.choose.worst(g.metric, g.op):.4f} on {res.choose.samples} choose samples{held} (budget {g.op} {g.limit:.12g})")
        say(
            f"stored {fmt_bytes(res.stored_bytes)} ({fmt_ratio(res.original_bytes / res.stored_bytes if res.stored_bytes else None)} smaller than "
            f"{fmt_bytes(res.original_bytes)}); {len(res.trials)} trials in {fmt_duration(res.seconds)}" + (" (time limit reached)" if res.timed_out else "")
        )
        if res.choose.latency_ms is not None and res.original_latency_ms is not None:
            say(f"latency {res.choose.latency_ms:.4f} ms (original {res.original_latency_ms:.4f} ms)")
        say(f"wrote {output}" + (f" and {model_out}" if model_out else "") + f"; reproduce with: onnxzip compress {model} -r {output} -o OUT.onnx")
    if as_json:
        typer.echo(to_json(res.to_dict()), nl=False)
