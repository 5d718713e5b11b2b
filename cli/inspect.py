"""`onnxzip inspect MODEL`: what a model holds, and what a recipe would target in it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from onnxzip._format import fmt_bytes, fmt_pct
from onnxzip.cli._common import out_console
from onnxzip.model import load_model
from onnxzip.recipe import load_recipe
from onnxzip.summary import describe_model


def inspect(
    model: Path = typer.Argument(..., help="ONNX model file."),
    recipe: str = typer.Option(None, "--recipe", "-r", help="Also show which tensors this recipe (file or preset) would touch."),
    top: int = typer.Option(20, "--top", min=0, help="Show the N largest initializers (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON on stdout."),
) -> None:
    """Show a model's ops, opsets, inputs/outputs and largest initializers (shape, dtype,
    bytes, share of the model, sparsity), and with `-r` what each pass of a recipe targets."""
    r = load_recipe(recipe) if recipe else None  # recipe errors before the model is read
    m = load_model(model)
    info = describe_model(m, r)
    info["path"] = str(model)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    con = out_console()
    con.print(f"[bold]{model}[/bold]  ir {info['ir_version']}, opsets {info['opsets']}, {info['graphs']} graph(s)")
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            con.print(f"  {kind[:-1]:6} {v['name']}: {v['dtype']}{v['shape']}", markup=False)
    con.print("  ops: " + ", ".join(f"{k}x{v}" for k, v in info["ops"].items()), markup=False)
    t = Table(title=f"initializers: {info['initializer_count']}, {fmt_bytes(info['initializer_bytes'])}", title_justify="left")
    for col, just in (("name", "left"), ("graph", "left"), ("shape", "left"), ("dtype", "left"), ("bytes", "right"), ("share", "right"), ("sparsity", "right")):
        t.add_column(col, justify=just)
    rows = info["initializers"] if top == 0 else info["initializers"][:top]
    for d in rows:
        t.add_row(d["name"], d["graph"], "x".join(map(str, d["shape"])) or "scalar", d["dtype"], fmt_bytes(d["bytes"]), fmt_pct(d["share"]), fmt_pct(d["sparsity"]))
    con.print(t)
    for p in info.get("targets", []):
        if p["targets"] is None:
            con.print(f"pass {p['pass']}: {p['note']}")
            continue
        n = sum(x["params"] for x in p["targets"])
        con.print(f"pass {p['pass']}: targets {len(p['targets'])} tensors ({n} params), skips {len(p['skipped'])}")
        for x in p["targets"]:
            con.print(f"    + {x['name']} ({x['op']} `{x['node']}`, {x['params']} params)", markup=False)
        for s in p["skipped"]:
            con.print(f"    - {s['name']}: {s['reason']}", markup=False)
