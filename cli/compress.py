"""`onnxzip compress MODEL -r RECIPE -o OUT`: run a recipe, write the model and the report."""

from __future__ import annotations

from pathlib import Path

import typer

from onnxzip.cli._common import err_console, say
from onnxzip.compress import compress as run_compress
from onnxzip.errors import UsageError
from onnxzip.recipe import load_recipe
from onnxzip.report import markdown, print_summary, to_json, write_json


def compress(
    model: Path = typer.Argument(..., help="ONNX model file to compress."),
    recipe: str = typer.Option(..., "--recipe", "-r", help="Recipe file (.yaml) or preset name (see `onnxzip recipes`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the compressed model (.onnx)."),
    calib: Path = typer.Option(None, "--calib", help="Calibration data (.npz keyed by input name) for data-aware passes; overrides the recipe's `calibration.data`."),
    report: Path = typer.Option(None, "--report", help="Write the JSON report here."),
    markdown_path: Path = typer.Option(None, "--markdown", help="Write a Markdown summary (for a PR comment) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report on stdout."),
    force: bool = typer.Option(False, "--force", help="Allow writing over the input model."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
) -> None:
    """Compress MODEL with RECIPE into OUTPUT and report sizes per pass and tensor.

    The recipe is validated before the model is read; the output is written atomically and
    only when every pass succeeds. Example:

        onnxzip compress model.onnx -r fp16 -o model.fp16.onnx --report report.json
    """
    r = load_recipe(recipe)
    if model.is_dir():
        raise UsageError(
            f"`{model}` is a directory; batch mode is not available in this version",
            hint="compress the models one by one: onnxzip compress DIR/x.onnx -r RECIPE -o OUT/x.onnx",
        )
    for extra in (report, markdown_path):
        if extra is not None and not (extra.parent if str(extra.parent) else Path(".")).is_dir():
            raise UsageError(f"folder of `{extra}` does not exist", hint=f"create it first: mkdir -p {extra.parent}")
    say(f"compressing {model} with recipe `{r.name}` ({len(r.passes)} passes)", quiet=quiet)

    def on_step(i: int, n: int, name: str) -> None:
        say(f"  [{i + 1}/{n}] {name}", quiet=quiet)

    result = run_compress(model, r, output, force=force, on_step=on_step, calib=calib)
    rep = result.report
    if report is not None:
        write_json(rep, report)
    if markdown_path is not None:
        markdown_path.write_text(markdown(rep), encoding="utf-8")
    if not quiet:
        print_summary(rep, err_console())
        say(f"wrote {output}" + (f" and {report}" if report else ""))
    if as_json:
        typer.echo(to_json(rep), nl=False)
