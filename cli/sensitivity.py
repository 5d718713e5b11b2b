"""`onnxzip sensitivity MODEL --data eval.npz -r RECIPE`: what compressing each layer alone
costs in accuracy and saves in bytes."""

from __future__ import annotations

from pathlib import Path

import typer

from onnxzip.cli._common import out_console, say
from onnxzip.errors import UsageError
from onnxzip.metrics import BUILTIN_METRICS


def opt_candidates():
    return typer.Option(
        None, "--candidates",
        help="Candidate values of one pass key, PASS.KEY=V1,V2,... (repeatable; several keys of one pass: their product). "
        "Default: quantize.bits=8,6,5,4,3; prune.sparsity=0.3,0.5,0.7 (or the recipe's value +-0.2); factorize.rank_ratio=0.5,0.35,0.25.",
    )


def opt_task_metric():
    return typer.Option(None, "--task-metric", help="Task metric FILE.py:FUNCTION (runs that code; repeatable); its returned names can be used as --metric / --budget.")


def opt_subset(default: int = 256):
    return typer.Option(default, "--subset", min=1, help="Samples each per-layer variant is measured on (the first N of a fixed shuffle).")


def check_metric(metric: str, task_metrics: list[str] | None, recipe) -> None:
    """A metric name that no built-in or task metric can produce is a usage error up front."""
    if metric in BUILTIN_METRICS or metric == "accuracy_drop" or task_metrics or (recipe.evaluate or {}).get("metrics"):
        return
    from onnxzip.recipe import did_you_mean

    raise UsageError(f"unknown metric `{metric}`", hint=did_you_mean(metric, [*BUILTIN_METRICS, "accuracy_drop"]) + "; a task metric needs --task-metric FILE.py:FUNCTION")


def sensitivity_cmd(
    model: Path = typer.Argument(..., help="ONNX model file."),
    recipe: str = typer.Option(..., "--recipe", "-r", help="Base recipe (file or preset): its weight passes define the layers and the settings tried."),
    data: Path = typer.Option(..., "--data", help="Evaluation data: .npz with one array per model input (batch on axis 0) and optional `labels`."),
    metric: str = typer.Option("top1_agreement", "--metric", help="Model-level metric: top1_agreement, top1_accuracy, accuracy_drop, cosine, snr_db, max_abs_error, mean_abs_error, or a task metric's name."),
    task_metric: list[str] = opt_task_metric(),
    candidates: list[str] = opt_candidates(),
    subset: int = opt_subset(),
    samples: int = typer.Option(None, "--samples", min=1, help="Use at most the first N samples of --data."),
    calib: Path = typer.Option(None, "--calib", help="Calibration data for data-aware passes (overrides the recipe's `calibration.data`)."),
    threads: int = typer.Option(1, "--threads", min=0, help="onnxruntime intra-op threads (0: onnxruntime's default)."),
    batch: int = typer.Option(32, "--batch-size", min=1, help="Batch size of the accuracy runs."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON on stdout (instead of the table)."),
    plot: Path = typer.Option(None, "--plot", help="Write a plot of bytes saved vs metric lost per layer: .svg (no dependency) or .png (needs matplotlib: pip install 'onnxzip[plot]')."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Compress each targeted layer ALONE with each candidate setting (every other layer
    skipped by a per-node override) and measure the whole model on --data: the metric, the
    output noise-to-signal ratio and the stored bytes saved, per layer and setting.

    The passes before the first weight pass run once; variants are built in memory and
    measured on --subset samples. Exit codes: 0 ok, 2 bad input. Example:

        onnxzip sensitivity model.onnx --data eval.npz -r kmeans-5bit --plot sens.svg
    """
    from onnxzip.recipe import load_recipe
    from onnxzip.report import to_json
    from onnxzip.sensitivity import sensitivity, table_rows, write_plot

    r = load_recipe(recipe)
    check_metric(metric, task_metric, r)
    if plot is not None and not (plot.parent if str(plot.parent) else Path(".")).is_dir():
        raise UsageError(f"folder of `{plot}` does not exist", hint=f"create it first: mkdir -p {plot.parent}")
    say(f"sensitivity of {model} under recipe `{r.name}`, metric {metric}", quiet=quiet)
    result = sensitivity(
        model, r, data, metric=metric, candidates=candidates or (), task_metrics=task_metric or (), calib=calib,
        subset=subset, samples=samples, batch=batch, threads=threads, progress=lambda m: say(f"  {m}", quiet=quiet),
    )
    if plot is not None:
        write_plot(result, plot)
        say(f"wrote {plot}", quiet=quiet)
    if as_json:
        typer.echo(to_json(result.to_dict()), nl=False)
        return
    from rich.table import Table
    from rich.text import Text

    from onnxzip._format import fmt_bytes, fmt_duration

    cols, rows = table_rows(result)
    b = result.baseline
    title = (
        f"{model}: each layer alone under `{r.name}`, {metric} on {b.samples} samples "
        f"(baseline, every layer off: {fmt_bytes(b.bytes)}, {metric} {b.worst(metric):.4f})"
    )
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(cols):
        if i in (0, 3):
            t.add_column(c, justify="left", overflow="fold")
        else:
            t.add_column(c, justify="right", no_wrap=True)
    for row in rows:
        t.add_row(*(Text(c) for c in row))
    con = out_console()
    if not con.is_terminal:  # a file or a pipe: no terminal width to respect, keep rows whole
        from rich.console import Console

        con = Console(highlight=False, soft_wrap=True, emoji=False, width=160)
    con.print(t)
    con.print(f"saved: stored bytes against the baseline; lost: {metric} against the baseline; nsr: output noise-to-signal ratio", markup=False)
    n = sum(len(lr.options) for lr in result.layers)
    say(f"{n} variants of {len(result.layers)} layers in {fmt_duration(result.seconds)}", quiet=quiet)
