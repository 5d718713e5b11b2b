"""`onnxzip unpack IN -o OUT`: decode ``ai.onnxzip`` nodes into plain ONNX that stock
onnxruntime (or any ONNX tool) loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from onnxzip.cli._common import say

from onnxzip import model as M
from onnxzip._format import fmt_bytes
from onnxzip.runtime import has_custom_nodes, to_plain


def unpack(
    model: Path = typer.Argument(..., help="onnxzip output (.onnx) holding ai.onnxzip nodes, e.g. Huffman-coded weights."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the plain ONNX model."),
    force: bool = typer.Option(False, "--force", help="Allow writing over the input model."),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No status line on stderr."),
) -> None:
    """Write MODEL as plain ONNX: every ai.onnxzip node (HuffmanDecode) is decoded into the
    initializer it stands for, checked against its checksums. The output is what
    `onnxzip.InferenceSession` runs; its size is the report's deployable size. Example:

        onnxzip unpack model.huff.onnx -o model.plain.onnx
    """
    M.check_output_path(output, input_path=model, force=force)
    src = M.load_model(model, prepare=False)
    decoded = sum(1 for _, n in M.iter_nodes(src) if (n.domain or "") == M.ONNXZIP_DOMAIN)
    plain = to_plain(src) if has_custom_nodes(src) else src
    del src
    files = M.save_model(plain, output, input_path=model, force=force)
    size_in = os.path.getsize(model)
    size_out = sum(os.path.getsize(f) for f in files)
    what = f"{decoded} ai.onnxzip nodes decoded" if decoded else "no ai.onnxzip nodes; written unchanged"
    say(f"wrote {output} ({what}; {fmt_bytes(size_in)} -> {fmt_bytes(size_out)})", quiet=quiet)
    if as_json:
        typer.echo(json.dumps({"input": str(model), "output": str(output), "files": [str(f) for f in files],
                               "decoded_nodes": decoded, "input_bytes": size_in, "output_bytes": size_out}, indent=2))
