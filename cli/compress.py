"""`onnxzip compress MODEL|DIR -r RECIPE -o OUT`: run a recipe, write the model(s) and the
report(s), judge the gates."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from onnxzip._format import fmt_duration, fmt_ratio
from onnxzip.cli._common import err_console, say
from onnxzip.cli.eval import (
    check_writable,
    emit,
    eval_overrides,
    flag_gates,
    opt_allow_fallback,
    opt_batch,
    opt_data,
    opt_gate,
    opt_input_shape,
    opt_latency,
    opt_latency_batch,
    opt_max_accuracy_drop,
    opt_max_latency_ratio,
    opt_metric,
    opt_min_compression,
    opt_min_cosine,
    opt_min_top1,
    opt_no_gates,
    opt_per_layer,
    opt_providers,
    opt_runs,
    opt_samples,
    opt_strict_gates,
    opt_threads,
    opt_warmup,
)
from onnxzip.compress import compress as run_compress
from onnxzip.errors import UsageError
from onnxzip.recipe import load_recipe


def compress(
    model: Path = typer.Argument(..., help="ONNX model file, or a directory: every *.onnx below it (batch mode)."),
    recipe: str = typer.Option(..., "--recipe", "-r", help="Recipe file (.yaml) or preset name (see `onnxzip recipes`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the compressed model (.onnx); in batch mode, the output folder."),
    calib: Path = typer.Option(None, "--calib", help="Calibration data (.npz keyed by input name) for data-aware passes; overrides the recipe's `calibration.data`."),
    report: Path = typer.Option(None, "--report", help="Write the JSON report here (batch mode: one per model, next to each output)."),
    markdown_path: Path = typer.Option(None, "--markdown", help="Write a Markdown summary (for a PR comment) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report (batch mode: the summary) on stdout."),
    force: bool = typer.Option(False, "--force", help="Allow writing over the input model; in batch mode, recompress models that are up to date."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
    evaluate: bool = typer.Option(None, "--eval/--no-eval", help="Evaluate the result (default: when the recipe has `evaluate:`, evaluation flags are given, or a gate needs it)."),
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
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Batch mode: models compressed in parallel (processes)."),
    shard: str = typer.Option(None, "--shard", help="Batch mode: take shard K of N (K/N, from 1) of the models sorted by path."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Batch mode: stop at the first model that fails or misses a gate."),
) -> None:
    """Compress MODEL with RECIPE into OUTPUT; report sizes per pass and tensor, and (when
    asked or when a gate needs it) latency and accuracy against the original.

    The recipe is validated before the model is read; the output is written atomically and
    only when every pass succeeds. A failed gate still writes the output and the report,
    names the gate on stderr and exits 1. Examples:

        onnxzip compress model.onnx -r fp16 -o model.fp16.onnx --report report.json

        onnxzip compress model.onnx -r int8-dynamic -o m8.onnx --data eval.npz --min-top1-agreement 0.99

        onnxzip compress models/ -r fp16 -o out/ --workers 4
    """
    r = load_recipe(recipe)
    overrides = eval_overrides(
        data=data, providers=providers, allow_fallback=allow_fallback, latency=latency, runs=runs, warmup=warmup,
        threads=threads, batch=batch, latency_batch=latency_batch, samples=samples, input_shape=input_shape,
        metric=metric, per_layer=per_layer,
    )
    gates = flag_gates(
        min_compression=min_compression, max_accuracy_drop=max_accuracy_drop, min_top1_agreement=min_top1_agreement,
        min_cosine=min_cosine, max_latency_ratio=max_latency_ratio, gate=gate,
    )
    if model.is_dir():
        _batch(model, recipe, output, overrides, gates, evaluate=evaluate, no_gates=no_gates, strict_gates=strict_gates, calib=calib,
               report=report, markdown_path=markdown_path, as_json=as_json, force=force, quiet=quiet, workers=workers, shard=shard, fail_fast=fail_fast)
        return
    for flag, value in (("--workers", workers != 1), ("--shard", shard is not None), ("--fail-fast", fail_fast)):
        if value:
            raise UsageError(f"{flag} is for batch mode (a directory of models)", hint=f"give a directory as MODEL, or drop {flag}")
    check_writable(report, markdown_path)
    say(f"compressing {model} with recipe `{r.name}` ({len(r.passes)} passes)", quiet=quiet)

    def on_step(i: int, n: int, name: str) -> None:
        say(f"  [{i + 1}/{n}] {name}", quiet=quiet)

    result = run_compress(
        model, r, output, force=force, on_step=on_step, calib=calib, evaluate=evaluate, eval_overrides=overrides,
        gates=gates, enforce_gates=not no_gates, strict_gates=strict_gates, progress=lambda m: say(f"  {m}", quiet=quiet),
    )
    emit(result.report, report_path=report, markdown_path=markdown_path, as_json=as_json, quiet=quiet, wrote=f"wrote {output}")


# --------------------------------------------------------------------------- batch mode


class _PlainEvents:
    """One line per finished model (stderr is not a terminal, or NO_COLOR-style logs)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def begin(self, total: int, skipped: int) -> None:
        say(f"{total} models" + (f", {skipped} up to date (skipped; --force recompresses)" if skipped else ""), quiet=self.quiet)

    def started(self, rel: str) -> None:
        say(f"  compressing {rel}", quiet=self.quiet)  # in CI logs, shows which model is slow

    def finished(self, o: dict[str, Any], done: int, total: int, elapsed: float) -> None:
        from onnxzip.batch import first_error_line, status_text

        if o["status"] == "skipped":
            return
        eta = f", ETA {fmt_duration(elapsed / done * (total - done))}" if 0 < done < total else ""
        detail = fmt_ratio(o["ratio"]) if o["ratio"] else first_error_line(o)
        say(f"[{done}/{total}] {o['path']}: {status_text(o)}, {detail} ({fmt_duration(o['seconds'])}; elapsed {fmt_duration(elapsed)}{eta})", quiet=self.quiet)

    def end(self) -> None:
        pass


class _LiveEvents(_PlainEvents):
    """A rich progress bar on a terminal: models done, the ones in flight, elapsed and ETA."""

    def __init__(self, quiet: bool):
        super().__init__(quiet)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err_console(), transient=False,
        )
        self.running: list[str] = []
        self.task = None

    def begin(self, total: int, skipped: int) -> None:
        super().begin(total, skipped)
        self.progress.start()
        self.task = self.progress.add_task("starting", total=total, completed=skipped)

    def started(self, rel: str) -> None:
        self.running.append(rel)
        self.progress.update(self.task, description=", ".join(self.running[-2:]))

    def finished(self, o: dict[str, Any], done: int, total: int, elapsed: float) -> None:
        if o["path"] in self.running:
            self.running.remove(o["path"])
        if o["status"] != "skipped":
            from onnxzip.batch import first_error_line, status_text

            detail = fmt_ratio(o["ratio"]) if o["ratio"] else first_error_line(o)
            self.progress.console.print(f"{o['path']}: {status_text(o)}, {detail}", markup=False, highlight=False)
            self.progress.update(self.task, advance=1, description=", ".join(self.running[-2:]) or "done")

    def end(self) -> None:
        self.progress.stop()


def _batch(in_dir: Path, recipe: str, out_dir: Path, overrides: dict, gates: list, *, evaluate, no_gates: bool, strict_gates: bool, calib,
           report, markdown_path, as_json: bool, force: bool, quiet: bool, workers: int, shard: str | None, fail_fast: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from onnxzip.batch import BatchFailed, compress_dir, first_error_line, parse_shard, summary_markdown, summary_rows
    from onnxzip.gates import EXIT_GATE
    from onnxzip.report import to_json, write_text

    if report is not None:
        raise UsageError("--report is for one model; batch mode writes `<name>.report.json` next to each output", hint="drop --report; the aggregate is OUTDIR/summary.json")
    check_writable(markdown_path)
    sh = parse_shard(shard)
    events = _LiveEvents(quiet) if (sys.stderr.isatty() and not quiet) else _PlainEvents(quiet)
    t0 = time.perf_counter()
    res = compress_dir(
        in_dir, recipe, out_dir, workers=workers, shard=sh, force=force, fail_fast=fail_fast, evaluate=evaluate,
        eval_overrides=overrides, gates=gates, enforce_gates=not no_gates, strict_gates=strict_gates, calib=calib, events=events,
    )
    s = res.summary
    if markdown_path is not None:
        write_text(summary_markdown(s), markdown_path)
    if not quiet:
        t = Table(title=f"{s['totals']['models']} models, {fmt_duration(time.perf_counter() - t0)}", title_justify="left")
        for i, c in enumerate(("model", "status", "stored", "ratio", "gates", "time")):
            right = i in (2, 3, 5)
            t.add_column(c, justify="right" if right else "left", no_wrap=right, overflow="fold")
        for row in summary_rows(s):
            t.add_row(*(Text(c) for c in row[:2] + row[3:]))  # the original size is in summary.md
        err_console().print(t)
        tot = s["totals"]
        say(f"{tot['ok']} ok, {tot['gate_failed']} gate failed, {tot['failed']} failed, {tot['skipped']} skipped" + (f", {tot['not_run']} not run" if tot["not_run"] else "")
            + f"; summary in {out_dir / ('summary.json' if sh is None else f'summary-{sh[0]}-of-{sh[1]}.json')}")
    for m in s["models"]:
        if m["status"] == "failed":
            say(f"  `{m['path']}`: {first_error_line(m)}")
        elif m["exit_code"] == EXIT_GATE:
            say(f"  `{m['path']}`: gate failed: {', '.join(m['failed_gates']) or 'strict gates not evaluated'}")
    if as_json:
        typer.echo(to_json(s), nl=False)
    if res.exit_code:
        raise BatchFailed(s)
