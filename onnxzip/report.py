"""The report: versioned JSON for machines, Markdown for pull requests, a table for people.

Key order is fixed and every figure is measured from the files and the run; timings are
the only fields that differ between two identical runs.
"""

from __future__ import annotations

import json
import os
import platform

import tempfile
from pathlib import Path
from typing import Any

from onnxzip import __version__
from onnxzip import model as M
from onnxzip._format import fmt_bytes, fmt_duration, fmt_pct, fmt_ratio

SCHEMA = "onnxzip.report/1"


def versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime

    return {
        "onnxzip": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def environment() -> dict[str, Any]:
    import onnxruntime

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "providers_available": onnxruntime.get_available_providers(),
    }


def build_report(*, model_path: Path, recipe, pipeline, original_bytes: int, loaded_bytes: int, output: Path, files: list[Path], seconds: float) -> dict[str, Any]:
    from onnxzip.runtime import has_custom_nodes, to_plain

    stored = sum(os.path.getsize(f) for f in files)
    model = pipeline.model
    deployable = stored
    if has_custom_nodes(model):
        plain = to_plain(model)
        deployable = plain.ByteSize() if M._data_bytes(plain) < M.EXTERNAL_THRESHOLD else M._data_bytes(plain)
    passes = []
    for step in pipeline.steps:
        r = step.result
        passes.append(
            {
                "name": step.name,
                "modified": r.modified,
                "bytes_after": step.bytes_after,
                "tensors_changed": len(r.tensors),
                "tensors": [t.to_dict() for t in r.tensors],
                "skipped_count": len(r.skipped),
                "skipped": [s.to_dict() for s in r.skipped],
                "notes": list(r.notes),
                "warnings": list(r.warnings),
                "seconds": round(step.seconds, 4),
            }
        )
    return {
        "schema": SCHEMA,
        "versions": versions(),
        "model": {
            "path": str(model_path),
            "sha256": M.model_hash(model_path),
        },
        "recipe": {
            "name": recipe.name,
            "source": recipe.source,
            "sha256": recipe.sha256,
            "seed": recipe.seed,
            "passes": [s.name for s in recipe.passes],
        },
        "output": {
            "path": str(output),
            "files": [str(f) for f in files],
            "sha256": M.model_hash(output),
        },
        "size": {
            "original_bytes": original_bytes,
            "stored_bytes": stored,
            "deployable_bytes": deployable,
            "ratio": round(original_bytes / stored, 4) if stored else None,
            "deployable_ratio": round(original_bytes / deployable, 4) if deployable else None,
        },
        "passes": passes,
        "environment": environment(),
        "timing": {"total_seconds": round(seconds, 4)},
    }


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write the report atomically (temp file + rename)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(to_json(report))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def markdown(report: dict[str, Any]) -> str:
    """A summary fit to paste into a pull request."""
    s = report["size"]
    lines = [
        f"### onnxzip: `{Path(report['model']['path']).name}` with recipe `{report['recipe']['name']}`",
        "",
        "| | bytes |",
        "|---|---:|",
        f"| original | {fmt_bytes(s['original_bytes'])} |",
        f"| stored | {fmt_bytes(s['stored_bytes'])} ({fmt_ratio(s['ratio'])} smaller) |",
    ]
    if s["deployable_bytes"] != s["stored_bytes"]:
        lines.append(f"| deployable (unpacked) | {fmt_bytes(s['deployable_bytes'])} |")
    lines += ["", "| pass | changed | skipped | size after | time |", "|---|---:|---:|---:|---:|"]
    for p in report["passes"]:
        lines.append(f"| {p['name']} | {p['tensors_changed']} | {p['skipped_count']} | {fmt_bytes(p['bytes_after'])} | {fmt_duration(p['seconds'])} |")
    lines.append("")
    lines.append(f"onnxzip {report['versions']['onnxzip']}, onnxruntime {report['versions']['onnxruntime']}")
    return "\n".join(lines) + "\n"


def print_summary(report: dict[str, Any], console) -> None:
    """The terminal table (stderr console)."""
    from rich.table import Table

    s = report["size"]
    t = Table(title=f"{Path(report['model']['path']).name} -> {Path(report['output']['path']).name}", title_justify="left")
    t.add_column("pass")
    t.add_column("changed", justify="right")
    t.add_column("skipped", justify="right")
    t.add_column("size after", justify="right")
    t.add_column("time", justify="right")
    for p in report["passes"]:
        t.add_row(p["name"], str(p["tensors_changed"]), str(p["skipped_count"]), fmt_bytes(p["bytes_after"]), fmt_duration(p["seconds"]))
    console.print(t)
    line = f"size: {fmt_bytes(s['original_bytes'])} -> {fmt_bytes(s['stored_bytes'])} ({fmt_ratio(s['ratio'])})"
    if s["deployable_bytes"] != s["stored_bytes"]:
        line += f", deployable {fmt_bytes(s['deployable_bytes'])}"
    console.print(line, highlight=False)
    for p in report["passes"]:
        for w in p["warnings"]:
            console.print(f"warning: pass `{p['name']}`: {w}", highlight=False, markup=False)


def sparsity_of(arr) -> float:
    import numpy as np

    return float(np.count_nonzero(arr == 0) / arr.size) if arr.size else 0.0


__all__ = ["SCHEMA", "build_report", "write_json", "to_json", "markdown", "print_summary", "versions"]

