"""`onnxzip validate RECIPE`: check a recipe completely without touching a model."""

from __future__ import annotations

import json

import typer

from onnxzip.cli._common import say
from onnxzip.recipe import load_recipe, recipe_summary


def validate(
    recipe: str = typer.Argument(..., help="Recipe file (.yaml) or preset name (see `onnxzip recipes`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the validated recipe (defaults filled in) as JSON on stdout."),
) -> None:
    """Validate a recipe: syntax, pass names, keys, types, ranges and pass order.

    Exits 0 when the recipe is valid, 2 with `file:line: pass: key: problem` otherwise.
    """
    r = load_recipe(recipe)
    if as_json:
        typer.echo(json.dumps(recipe_summary(r), indent=2))
    say(f"ok: recipe `{r.name}` is valid ({len(r.passes)} passes: {', '.join(s.name for s in r.passes)})")
