"""`onnxzip eval ORIGINAL [COMPRESSED]`: latency and accuracy on onnxruntime, gates.

Also home of the evaluation and gate options that `onnxzip compress` shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from onnxzip.cli._common import err_console, say
from onnxzip.errors import UsageError
from onnxzip.evaluate import evaluate_files, parse_input_shape
from onnxzip.gates import BUILTIN_GATES, Gate, GateValueError, describe, exit_code, failure, make_gate, parse_flag
from onnxzip.report import markdown, print_summary, to_json, write_json, write_text

# --------------------------------------------------------------------------- shared options
# Functions, so that each command gets its own OptionInfo objects.


def opt_data():
    return typer.Option(None, "--data", help="Evaluation data: .npz with one array per model input (batch on axis 0) and optional `labels`. Without it, inputs are generated from the input signature (flagged synthetic).")


def opt_providers():
    return typer.Option(None, "--providers", help="Execution providers to measure on, comma separated: cpu, cuda, tensorrt, ... or any installed onnxruntime EP name. Default: cpu.")


def opt_allow_fallback():
    return typer.Option(False, "--allow-fallback", help="Measure on CPU when a requested provider is not available (the report says so) instead of exiting 2.")


def opt_latency():
    return typer.Option(None, "--latency/--no-latency", help="Measure latency (interleaved original/compressed runs after warm-up).")


def opt_runs():
    return typer.Option(None, "--runs", min=1, help="Timed runs per model (default: about 2 s per model, 10 to 10000 runs).")


def opt_warmup():
    return typer.Option(None, "--warmup", min=0, help="Untimed runs per model before timing (default 5).")


def opt_threads():
    return typer.Option(None, "--threads", min=0, help="onnxruntime intra-op threads (default 1, recorded in the report; 0: onnxruntime's default).")


def opt_batch():
    return typer.Option(None, "--batch-size", min=1, help="Batch size for accuracy runs (default 32).")


def opt_latency_batch():
    return typer.Option(None, "--latency-batch", min=1, help="Batch size of the latency feed (default 1).")


def opt_samples():
    return typer.Option(None, "--samples", min=1, help="Use at most N samples of the data (generated inputs: make N; default 16).")


def opt_input_shape():
    return typer.Option(None, "--input-shape", help="Shape for generated inputs, NAME=1x3x224x224 (resolves symbolic dims; repeatable).")


def opt_metric():
    return typer.Option(None, "--metric", help="Task metric FILE.py:FUNCTION (runs that code; repeatable). Its returned names can be gated with --gate.")


def opt_per_layer():
    return typer.Option(False, "--per-layer", help="Report the relative error of every weight and (with --data) every intermediate tensor, worst first.")


def opt_min_compression():
    return typer.Option(None, "--min-compression", help="Gate: stored size ratio original/compressed >= X.")


def opt_max_accuracy_drop():
    return typer.Option(None, "--max-accuracy-drop", help="Gate: top-1 accuracy against labels may drop at most X (0.01 = 1 point). Needs labels.")


def opt_min_top1():
    return typer.Option(None, "--min-top1-agreement", help="Gate: argmax agreement with the original >= X, every class-score output.")


def opt_min_cosine():
    return typer.Option(None, "--min-cosine", help="Gate: mean per-sample cosine similarity >= X, every output.")


def opt_max_latency_ratio():
    return typer.Option(None, "--max-latency-ratio", help="Gate: compressed p50 / original p50 <= X, every provider.")


def opt_gate():
    return typer.Option(None, "--gate", help="Gate on any metric: 'NAME>=VALUE' (>=, <=, >, <, ==), e.g. 'snr_db>=30' or 'box_f1>=0.95' (repeatable).")


def opt_no_gates():
    return typer.Option(False, "--no-gates", help="Evaluate and report every gate, but never fail on them (exit 0).")


def opt_strict_gates():
    return typer.Option(False, "--strict-gates", help="A gate that cannot be evaluated (e.g. max_accuracy_drop without labels) fails instead of warning.")


def eval_overrides(
    *,
    data: Path | None = None,
    providers: str | None = None,
    allow_fallback: bool = False,
    latency: bool | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    batch: int | None = None,
    latency_batch: int | None = None,
    samples: int | None = None,
    input_shape: list[str] | None = None,
    metric: list[str] | None = None,
    per_layer: bool = False,
) -> dict[str, Any]:
    """Command-line evaluation options as :class:`EvalOptions` overrides (None: not given)."""
    shapes = dict(parse_input_shape(s) for s in input_shape or [])
    provs = tuple(p.strip() for p in providers.split(",") if p.strip()) if providers else None
    if providers is not None and not provs:
        raise UsageError("--providers is empty", hint="e.g. --providers cpu,cuda")
    for m in metric or []:
        if ":" not in m or not m.rsplit(":", 1)[0].endswith(".py"):
            raise UsageError(f"--metric `{m}` is not FILE.py:FUNCTION", hint="e.g. --metric my_metrics.py:box_f1")
    return {
        "data": data,
        "providers": provs,
        "allow_fallback": allow_fallback or None,
        "latency": latency,
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "batch": batch,
        "latency_batch": latency_batch,
        "samples": samples,
        "input_shapes": shapes or None,
        "metrics": tuple(metric) if metric else None,
        "per_layer": per_layer or None,
    }


def flag_gates(
    *,
    min_compression: float | None = None,
    max_accuracy_drop: float | None = None,
    min_top1_agreement: float | None = None,
    min_cosine: float | None = None,
    max_latency_ratio: float | None = None,
    gate: list[str] | None = None,
) -> list[Gate]:
    """Gates from flags (they replace the recipe's gates of the same name)."""
    out: list[Gate] = []
    named = {
        "min_compression": min_compression,
        "max_accuracy_drop": max_accuracy_drop,
        "min_top1_agreement": min_top1_agreement,
        "min_cosine": min_cosine,
        "max_latency_ratio": max_latency_ratio,
    }
    try:
        for name, value in named.items():
            if value is not None:
                out.append(make_gate(name, value, source="flag"))
        for text in gate or []:
            try:
                name, expr = parse_flag(text)
            except ValueError as e:
                raise UsageError(f"--gate {e}", hint="e.g. --gate 'snr_db>=30' (quote it in the shell)") from None
            if name in BUILTIN_GATES:
                raise UsageError(f"--gate `{text}` names the built-in gate `{name}`", hint=f"use --{name.replace('_', '-')} VALUE, or --gate with the metric `{BUILTIN_GATES[name].metric}`")
            out.append(make_gate(name, expr, source="flag"))
    except GateValueError as e:
        raise UsageError(e.message, hint=e.hint) from None
    return out


def check_writable(*paths: Path | None) -> None:
    for extra in paths:
        if extra is not None and not (extra.parent if str(extra.parent) else Path(".")).is_dir():
            raise UsageError(f"folder of `{extra}` does not exist", hint=f"create it first: mkdir -p {extra.parent}")


def emit(report: dict[str, Any], *, report_path: Path | None, markdown_path: Path | None, as_json: bool, quiet: bool, wrote: str | None = None) -> None:
    """Write the report files, print the summary and gate lines, print JSON, then raise
    :class:`GateFailed` (exit 1) when an enforced gate failed."""
    if report_path is not None:
        write_json(report, report_path)
    if markdown_path is not None:
        write_text(markdown(report), markdown_path)
    ev = report.get("evaluation")
    if not quiet:
        if ev and ev["data"]["synthetic"]:
            say(f"note: no --data: outputs compared on {ev['data']['samples']} generated inputs (synthetic: top-1 on them says little and top-1 gates are not evaluated; give --data for real accuracy)")
        print_summary(report, err_console())
        if wrote:
            say(wrote + (f" and {report_path}" if report_path else ""))
    gates = report.get("gates")
    if gates:
        for r in gates["results"]:
            if r["verdict"] == "not_evaluated":
                say(("error: " if gates["strict"] else "warning: ") + describe(r))
            elif r["verdict"] == "fail" and not gates["enforced"]:
                say(f"warning: {describe(r)} (not enforced: --no-gates)")
    if as_json:
        typer.echo(to_json(report), nl=False)
    if exit_code(gates):
        written = [str(p) for p in (report_path, markdown_path) if p is not None]
        if wrote:
            raise failure(gates)
        raise failure(gates, written=f"the report was written to {', '.join(written)}" if written else "nothing was written (use --report to keep the report)")


# --------------------------------------------------------------------------- the command


def eval_cmd(
    original: Path = typer.Argument(..., help="The reference model (.onnx)."),
    compressed: Path = typer.Argument(None, help="The model to compare with it, e.g. an onnxzip output. Without it, ORIGINAL is measured alone."),
    recipe: str = typer.Option(None, "--recipe", "-r", help="Take `evaluate:` and `gates:` from this recipe (file or preset); its passes are ignored."),
    data: Path = opt_data(),
    providers: str = opt_providers(),
    allow_fallback: bool = opt_allow_fallback(),
    latency: bool = opt_latency(),
    runs: int = opt_runs(),
    warmup: int = opt_warmup(),
    threads: int = opt_threads(),
    batch: int = opt_batch(),
    latency_batch: int = opt_latency_batch(),
    samples: int = opt_samples(),
    input_shape: list[str] = opt_input_shape(),
    metric: list[str] = opt_metric(),
    per_layer: bool = opt_per_layer(),
    min_compression: float = opt_min_compression(),
    max_accuracy_drop: float = opt_max_accuracy_drop(),
    min_top1_agreement: float = opt_min_top1(),
    min_cosine: float = opt_min_cosine(),
    max_latency_ratio: float = opt_max_latency_ratio(),
    gate: list[str] = opt_gate(),
    no_gates: bool = opt_no_gates(),
    strict_gates: bool = opt_strict_gates(),
    report: Path = typer.Option(None, "--report", help="Write the JSON report here."),
    markdown_path: Path = typer.Option(None, "--markdown", help="Write a Markdown summary (for a PR comment) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
) -> None:
    """Measure COMPRESSED against ORIGINAL on onnxruntime: latency per provider (interleaved,
    p50/p90/p99), accuracy on --data or generated inputs (top-1 agreement and accuracy,
    cosine, SNR, max abs error, task metrics), per-layer errors, and gates.

    Exit codes: 0 ok, 1 a gate failed (report still written), 2 bad input. Example:

        onnxzip eval model.onnx model.int8.onnx --data eval.npz --providers cpu,cuda --min-top1-agreement 0.99
    """
    from onnxzip.recipe import load_recipe

    r = load_recipe(recipe) if recipe else None
    check_writable(report, markdown_path)
    overrides = eval_overrides(
        data=data, providers=providers, allow_fallback=allow_fallback, latency=latency, runs=runs, warmup=warmup,
        threads=threads, batch=batch, latency_batch=latency_batch, samples=samples, input_shape=input_shape,
        metric=metric, per_layer=per_layer,
    )
    gates = flag_gates(
        min_compression=min_compression, max_accuracy_drop=max_accuracy_drop, min_top1_agreement=min_top1_agreement,
        min_cosine=min_cosine, max_latency_ratio=max_latency_ratio, gate=gate,
    )
    say(f"evaluating {original}" + (f" against {compressed}" if compressed else ""), quiet=quiet)
    rep = evaluate_files(
        original, compressed, recipe=r, overrides=overrides, gates=gates, enforce=not no_gates, strict=strict_gates,
        progress=(lambda m: say(f"  {m}", quiet=quiet)),
    )
    emit(rep, report_path=report, markdown_path=markdown_path, as_json=as_json, quiet=quiet)
