"""The ``onnxzip`` command line: one module per command, this one wires them together.

Exit codes: 0 ok, 1 a gate failed, 2 usage/recipe/model/data error, 101 internal error.
"""

from __future__ import annotations

import sys
import traceback

import typer

try:  # typer >= 0.20 vendors click
    from typer.exceptions import Abort as _Abort
    from typer.exceptions import Exit as _Exit
    from typer.exceptions import TyperException as _ClickError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import Abort as _Abort
    from click.exceptions import ClickException as _ClickError
    from click.exceptions import Exit as _Exit

from onnxzip import __version__
from onnxzip.cli import compress as _compress
from onnxzip.cli import eval as _eval
from onnxzip.cli import inspect as _inspect
from onnxzip.cli import recipes as _recipes
from onnxzip.cli import sensitivity as _sensitivity
from onnxzip.cli import tune as _tune
from onnxzip.cli import unpack as _unpack
from onnxzip.cli import validate as _validate
from onnxzip.cli._common import debug_enabled, print_error
from onnxzip.errors import EXIT_INTERNAL, EXIT_USAGE, OnnxzipError

app = typer.Typer(
    name="onnxzip",
    help=(
        "Compress ONNX models with a recipe (pruning, quantization, low-rank factorization, "
        "Huffman weight coding) and measure the result on onnxruntime.\n\n"
        "Start with `onnxzip recipes` (the shipped presets), `onnxzip inspect MODEL`, then "
        "`onnxzip compress MODEL -r PRESET -o OUT.onnx`.\n\n"
        "Exit codes: 0 ok, 1 a gate failed, 2 usage/recipe/model/data error, 101 internal error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"onnxzip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """onnxzip: compress ONNX models, measured."""


app.command("compress")(_compress.compress)
app.command("eval")(_eval.eval_cmd)
app.command("validate")(_validate.validate)
app.command("inspect")(_inspect.inspect)
app.command("recipes")(_recipes.recipes)
app.command("unpack")(_unpack.unpack)
app.command("sensitivity")(_sensitivity.sensitivity_cmd)
app.command("tune")(_tune.tune_cmd)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: runs the app and maps every outcome to an exit code."""
    try:
        app(args=argv, prog_name="onnxzip", standalone_mode=False)
        return 0
    except _Exit as e:
        code = e.exit_code
    except _Abort:
        sys.stderr.write("error: interrupted\n")
        code = 130
    except _ClickError as e:  # usage errors: bad option, missing argument
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.stderr.write(e.format_message() + "\n")
            return EXIT_USAGE
        cmd = ""
        ctx = getattr(e, "ctx", None)
        if ctx is not None and ctx.command_path:
            cmd = ctx.command_path
        sys.stderr.write(f"error: {e.format_message()[:1].lower()}{e.format_message()[1:]}\n")
        sys.stderr.write(f"hint: run `{cmd or 'onnxzip'} --help` for usage\n")
        code = EXIT_USAGE
    except OnnxzipError as e:
        print_error(e)
        if debug_enabled() and e.__cause__ is not None:
            traceback.print_exception(e.__cause__)
        code = e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        code = 130
    except Exception as e:  # a bug: say so, keep the traceback behind ONNXZIP_DEBUG
        sys.stderr.write(f"error: internal error: {type(e).__name__}: {e}\n")
        if debug_enabled():
            traceback.print_exc()
        sys.stderr.write("hint: this is a bug in onnxzip; rerun with ONNXZIP_DEBUG=1 and report the traceback\n")
        code = EXIT_INTERNAL
    return code


def run() -> None:
    sys.exit(main())
