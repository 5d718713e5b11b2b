"""`onnxzip recipes`: the shipped presets, one line each."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from onnxzip.cli._common import out_console
from onnxzip.passes import REGISTRY
from onnxzip.recipe import load_recipe, preset_names


def recipes(
    as_json: bool = typer.Option(False, "--json", help="Print the presets as JSON on stdout."),
    passes: bool = typer.Option(False, "--passes", help="List the passes a recipe can use, with their keys."),
    show: str = typer.Option(None, "--show", metavar="NAME", help="Print the YAML of one preset (copy it to start your own)."),
) -> None:
    """List the shipped recipe presets (usable as `-r NAME`) or the available passes."""
    from onnxzip.recipe import config_doc, preset_text

    if show:
        load_recipe(show)  # clear error for an unknown name
        typer.echo(preset_text(show), nl=False)
        return
    if passes:
        rows = [{"name": n, "summary": cls.summary, "keys": config_doc(cls.Config)} for n, cls in REGISTRY.items()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        con = out_console()
        for row in rows:
            con.print(f"[bold]{row['name']}[/bold]: {row['summary']}")
            for k in row["keys"]:
                con.print(f"    {k['key']} ({k['type']}, default {k['default']}): {k['help']}", markup=False)
        return
    rows = []
    for name in preset_names():
        r = load_recipe(name)
        rows.append({"name": name, "description": r.description, "passes": [s.name for s in r.passes]})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="onnxzip presets (use with -r NAME)", title_justify="left")
    t.add_column("preset")
    t.add_column("passes")
    t.add_column("description")
    for row in rows:
        t.add_row(row["name"], " -> ".join(row["passes"]), _first_sentence(row["description"]))
    out_console().print(t)


def _first_sentence(text: str) -> str:
    """The table shows the gist; `--show NAME` or `--json` give the whole description."""
    head = text.split(": ")[0].split(". ")[0].strip()
    return head if head.endswith(".") else head + "."
