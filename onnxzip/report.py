"""The report: versioned JSON for machines, Markdown for pull requests, a table for people.

Key order is fixed and every figure is measured from the files and the run; timings are
the only fields that differ between two identical runs (:func:`without_timings` drops them).

Schema ``onnxzip.report/1`` (top-level keys, in order):

``schema``, ``kind``
    ``"compress"`` (``onnxzip compress``) or ``"eval"`` (``onnxzip eval``).
``versions``
    onnxzip, onnx, onnxruntime, numpy, python.
``model``
    input path, sha256 of the .onnx file, and every file it is made of (external data) with
    bytes and sha256.
``recipe``, ``seed``
    recipe name, source, sha256, seed, pass names (``null`` for ``eval`` without a recipe).
``settings``
    the effective evaluation options and gates (recipe merged with flags).
``output``
    compressed model path, files, sha256.
``size``
    original / stored / deployable bytes and their ratios.
``passes``
    per pass: tensors changed (per-tensor stats), skipped (with reasons), notes, warnings, time.
``evaluation``
    ``null`` when not evaluated; else providers (requested, used, fallback), data (source,
    sha256 or ``synthetic: true``), latency per provider (with ``latency_ratio_noise``,
    ``slower`` and an ``explanation`` naming the ops when slower), ``executed_ops`` per provider
    (op counts of onnxruntime's optimized graphs, their difference, and ``findings``: added ops
    expected to run slower than float, each with op, count, nodes, reason), accuracy per
    provider and output, task metrics, per-layer errors.
``gates``
    ``null`` without gates; else enforced/strict, overall verdict, and per gate its metric,
    op, limit, value, subject (worst output / provider), verdict and reason.
``environment``
    platform, CPU model (/proc/cpuinfo), CPU count, evaluation threads, providers available.
``timing``
    wall times.

Numbers that JSON cannot hold (inf, nan) are written as the strings ``"inf"``, ``"-inf"``,
``"nan"``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from onnxzip import __version__
from onnxzip import model as M
from onnxzip._format import fmt_bytes, fmt_duration, fmt_float, fmt_pct, fmt_ratio

SCHEMA = "onnxzip.report/1"
TIMING_KEYS = ("seconds", "timing")


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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(threads: int | None = None) -> dict[str, Any]:
    import onnxruntime

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "providers_available": onnxruntime.get_available_providers(),
    }


def file_entries(paths: list[Path]) -> list[dict[str, Any]]:
    """Name, size and sha256 of each file of a model (the .onnx and its external data)."""
    return [{"name": Path(p).name, "bytes": os.path.getsize(p), "sha256": M.model_hash(p)} for p in paths if os.path.exists(p)]


def _passes(pipeline) -> list[dict[str, Any]]:
    out = []
    for step in pipeline.steps:
        r = step.result
        out.append(
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
    return out


def deployable_bytes(model, stored: int) -> int:
    """Bytes of the plain (Huffman-decoded) model; ``stored`` when nothing needs decoding."""
    from onnxzip.runtime import has_custom_nodes, to_plain

    if not has_custom_nodes(model):
        return stored
    plain = to_plain(model)
    return plain.ByteSize() if M._data_bytes(plain) < M.EXTERNAL_THRESHOLD else M._data_bytes(plain)


def _recipe(recipe) -> dict[str, Any] | None:
    if recipe is None:
        return None
    return {
        "name": recipe.name,
        "source": recipe.source,
        "sha256": recipe.sha256,
        "seed": recipe.seed,
        "passes": [s.name for s in recipe.passes],
    }


def build_report(
    *,
    model_path: Path,
    recipe,
    pipeline,
    original_bytes: int,
    loaded_bytes: int,
    output: Path | None,
    files: list[Path],
    seconds: float,
    input_files: list[Path] | None = None,
    settings: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    gates: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    kind: str = "compress",
    output_model=None,
) -> dict[str, Any]:
    """The report of a compression run (``pipeline`` None for ``onnxzip eval``, which passes
    the compared model as ``output_model`` for its deployable size)."""
    stored = sum(os.path.getsize(f) for f in files) if files else None
    model = pipeline.model if pipeline is not None else output_model
    deployable = (deployable_bytes(model, stored) if model is not None else stored) if stored is not None else None
    threads = evaluation.get("threads") if evaluation else None
    return {
        "schema": SCHEMA,
        "kind": kind,
        "versions": versions(),
        "model": {
            "path": str(model_path),
            "sha256": M.model_hash(model_path),
            "files": file_entries(input_files or [Path(model_path)]),
        },
        "recipe": _recipe(recipe),
        "seed": recipe.seed if recipe is not None else (evaluation or {}).get("seed", 0),
        "settings": settings,
        "output": {
            "path": str(output),
            "files": [str(f) for f in files],
            "sha256": M.model_hash(output),
        }
        if output is not None
        else None,
        "size": {
            "original_bytes": original_bytes,
            "stored_bytes": stored,
            "deployable_bytes": deployable,
            "ratio": round(original_bytes / stored, 4) if stored else None,
            "deployable_ratio": round(original_bytes / deployable, 4) if deployable else None,
        },
        "passes": _passes(pipeline) if pipeline is not None else [],
        "evaluation": evaluation,
        "gates": gates,
        "environment": environment(threads),
        "timing": {"total_seconds": round(seconds, 4), **({k: round(v, 4) for k, v in timing.items()} if timing else {})},
    }


def without_timings(report: dict[str, Any]) -> dict[str, Any]:
    """A copy without the fields that legitimately change between identical runs: every
    ``seconds``/``*_seconds`` key, ``timing``, the latency section, and the value and
    verdict of latency gates."""
    from onnxzip.gates import LATENCY_METRICS

    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in TIMING_KEYS and not k.endswith("_seconds")}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    r = strip(copy.deepcopy(report))
    ev = r.get("evaluation")
    if ev:
        ev.pop("latency", None)
    g = r.get("gates")
    if g:
        for res in g["results"]:
            if res["metric"] in LATENCY_METRICS:
                for k in ("value", "subject", "verdict"):
                    res.pop(k, None)
        if any(res["metric"] in LATENCY_METRICS for res in g["results"]):
            for k in ("verdict", "failed"):
                g.pop(k, None)
    return r


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write the report atomically (temp file + rename)."""
    write_text(to_json(report), path)


def write_text(text: str, path: str | Path) -> None:
    """Write a text file atomically (temp file + rename)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return "nan" if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(_finite(report), indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n"


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return _finite(o.item())
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# --------------------------------------------------------------------------- text renderings


def _num(x: Any, digits: int = 4) -> str:
    if isinstance(x, str):
        return x
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return fmt_float(x, digits)


def _ms(x: float | None) -> str:
    return fmt_duration(x / 1e3) if isinstance(x, (int, float)) else "-"


def _pct(x: Any) -> str:
    if isinstance(x, float) and math.isfinite(x):
        return fmt_pct(x, 2)
    return _num(x)


def _verdict(v: str) -> str:
    return {"pass": "pass", "fail": "FAIL", "not_evaluated": "not evaluated"}.get(v, v)


def accuracy_rows(report: dict[str, Any]) -> list[list[str]]:
    """provider, output, top-1 agreement, accuracy (orig -> comp), cosine, SNR, max abs error."""
    ev = report.get("evaluation") or {}
    rows = []
    for prov, acc in (ev.get("accuracy") or {}).items():
        for name, m in acc["outputs"].items():
            accuracy = "-"
            if "top1_accuracy_original" in m:
                accuracy = fmt_pct(m["top1_accuracy_original"], 2)
                if "top1_accuracy" in m:
                    accuracy += f" -> {fmt_pct(m['top1_accuracy'], 2)}"
            agree = fmt_pct(m["top1_agreement"], 2) if isinstance(m.get("top1_agreement"), float) and not math.isnan(m["top1_agreement"]) else _num(m.get("top1_agreement"))
            rows.append([_short(prov), name, agree, accuracy, _num(m.get("cosine"), 6), _num(m.get("snr_db"), 1), _num(m.get("max_abs_error"), 5)])
    return rows


def latency_rows(report: dict[str, Any]) -> list[list[str]]:
    """provider, original p50/p90/p99, compressed p50/p90/p99, speedup, session times."""
    ev = report.get("evaluation") or {}
    rows = []
    for prov, lat in (ev.get("latency") or {}).items():
        a, b = lat["original"], lat.get("compressed") or {}
        rows.append(
            [
                _short(prov),
                f"{_ms(a['p50_ms'])} / {_ms(a['p90_ms'])} / {_ms(a['p99_ms'])}",
                f"{_ms(b.get('p50_ms'))} / {_ms(b.get('p90_ms'))} / {_ms(b.get('p99_ms'))}" if b else "-",
                fmt_ratio(lat.get("speedup")) if b else "-",
                f"{fmt_duration(a['session_seconds'])} / {fmt_duration(b['session_seconds'])}" if b else fmt_duration(a["session_seconds"]),
                f"{lat['runs']} x batch {lat['batch']}, {lat['threads'] or 'default'} thr",
            ]
        )
    return rows


def slowdown_lines(report: dict[str, Any]) -> list[str]:
    """Plain lines, per provider: whether the compressed model measured slower than the
    original (beyond the noise) and the added ops expected to run slower than float, one a
    line; the reasons when it is slower without such ops; nothing when there is nothing to say."""
    from onnxzip.executed_ops import describe

    ev = report.get("evaluation") or {}
    latency = ev.get("latency") or {}
    out: list[str] = []
    for prov, entry in (ev.get("executed_ops") or {}).items():
        lat = latency.get(prov) or {}
        slower = bool(lat.get("slower"))
        if entry.get("error"):
            if slower:
                out.append(f"slower than the original on {_short(prov)}: p50 x{lat['latency_ratio']:.2f}; executed ops unknown ({entry['error']})")
            continue
        found = entry.get("findings") or []
        if slower:
            noise = max(0.05, lat.get("latency_ratio_noise") or 0.0)
            head = f"slower than the original on {_short(prov)}: p50 x{lat['latency_ratio']:.2f} (noise allowance {noise:.0%})"
            out.append(head + (":" if found else f"; {describe(entry)}"))
        if found:
            if not slower:
                measured = f"; measured p50 x{lat['latency_ratio']:.2f}, not slower here" if lat.get("latency_ratio") is not None else ""
                out.append(f"ops expected to be slower than float on {_short(prov)} (added in the executed graph{measured}):")
            for f in found:
                nodes = ", ".join(f["nodes"][:3]) + (", ..." if f["count"] > 3 else "")
                out.append(f"  {f['count']} {f['op']}" + (f" ({nodes})" if nodes else "") + f": {f['reason']}")
    return out


def _short(provider: str) -> str:
    return provider.removesuffix("ExecutionProvider")


def gate_rows(report: dict[str, Any]) -> list[list[str]]:
    g = report.get("gates") or {}
    rows = []
    for r in g.get("results", []):
        value = _num(r["value"], 4) if r["value"] is not None else "-"
        where = (r.get("subject") or "").replace("ExecutionProvider", "") if r["verdict"] != "not_evaluated" else (r.get("reason") or "")
        rows.append([r["name"], f"{r['op']} {r['limit']:.12g}", value, _verdict(r["verdict"]), where])
    return rows


def _title(report: dict[str, Any]) -> str:
    name = Path(report["model"]["path"]).name
    if report.get("kind") == "eval":
        return f"onnxzip eval: `{name}` vs `{Path(report['output']['path']).name}`"
    return f"onnxzip: `{name}` with recipe `{report['recipe']['name']}`"


def markdown(report: dict[str, Any]) -> str:
    """A summary fit to paste into a pull request."""
    s = report["size"]
    lines = [
        f"### {_title(report)}",
        "",
    ]
    g = report.get("gates")
    if g and g.get("results"):
        word = {"pass": "all gates passed", "fail": "**gates failed**", "incomplete": "gates passed, some not evaluated"}[g["verdict"]]
        lines += [f"Result: {word}" + ("" if g["enforced"] else " (not enforced: --no-gates)"), ""]
    lines += [
        "| | bytes |",
        "|---|---:|",
        f"| original | {fmt_bytes(s['original_bytes'])} |",
        f"| stored | {fmt_bytes(s['stored_bytes'])} ({fmt_ratio(s['ratio'])} smaller) |",
    ]
    if s["deployable_bytes"] != s["stored_bytes"]:
        lines.append(f"| deployable (unpacked) | {fmt_bytes(s['deployable_bytes'])} ({fmt_ratio(s['deployable_ratio'])}) |")
    if report["passes"]:
        lines += ["", "| pass | changed | skipped | size after | time |", "|---|---:|---:|---:|---:|"]
        for p in report["passes"]:
            lines.append(f"| {p['name']} | {p['tensors_changed']} | {p['skipped_count']} | {fmt_bytes(p['bytes_after'])} | {fmt_duration(p['seconds'])} |")
    ev = report.get("evaluation")
    if ev:
        d = ev["data"]
        src = "generated inputs (synthetic)" if d["synthetic"] else f"`{Path(d['source']).name}`"
        lines += ["", f"Evaluated on {src}, {d['samples']} samples" + (", with labels" if d.get("labels") else "") + "."]
        for p in ev["providers"]:
            if p.get("fallback"):
                lines.append(f"Note: {p['fallback']}.")
        rows = accuracy_rows(report)
        if rows:
            lines += ["", "| provider | output | top-1 agreement | top-1 accuracy | cosine | SNR dB | max abs err |", "|---|---|---:|---:|---:|---:|---:|"]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        for prov, acc in (ev.get("accuracy") or {}).items():
            for k, v in (acc.get("metrics") or {}).items():
                lines.append(f"- `{k}` on {_short(prov)}: {_num(v)}")
        rows = latency_rows(report)
        if rows:
            lines += ["", "| provider | original p50 / p90 / p99 | compressed p50 / p90 / p99 | speedup | session start | runs |", "|---|---:|---:|---:|---:|---|"]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        slow = slowdown_lines(report)
        if slow:
            lines.append("")
            lines += [f"  - {t.strip()}" if t.startswith("  ") else f"- {t}" for t in slow]
        pl = ev.get("per_layer")
        if pl:
            if pl["weights"]:
                lines += ["", "<details><summary>worst weights (relative error)</summary>", "", "| weight | shape | rel. error |", "|---|---|---:|"]
                lines += [f"| `{w['name']}` | {'x'.join(map(str, w['shape']))} | {_num(w['rel_error'], 6)} |" for w in pl["weights"][:10]]
                lines += ["", "</details>"]
            if pl.get("activations"):
                lines += ["", "<details><summary>worst intermediate tensors (relative error)</summary>", "", "| tensor | op | rel. error |", "|---|---|---:|"]
                lines += [f"| `{a['name']}` | {a['op']} | {_num(a['rel_error'], 6)} |" for a in pl["activations"][:10]]
                lines += ["", "</details>"]
    rows = gate_rows(report)
    if rows:
        lines += ["", "| gate | limit | value | verdict | where / why |", "|---|---:|---:|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append(f"onnxzip {report['versions']['onnxzip']}, onnxruntime {report['versions']['onnxruntime']}, {report['environment']['cpu']}")
    return "\n".join(lines) + "\n"


def print_summary(report: dict[str, Any], console) -> None:
    """The terminal tables (stderr console)."""
    from rich.table import Table

    s = report["size"]
    if report["passes"]:
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
    ev = report.get("evaluation")
    if ev:
        d = ev["data"]
        src = "generated inputs (synthetic: no --data)" if d["synthetic"] else str(d["source"])
        console.print(f"evaluated on {src}: {d['samples']} samples" + (", labels" if d.get("labels") else ""), highlight=False, markup=False)
        for a in d.get("assumed_dims") or []:
            console.print(f"  assumed {a} (set it with --input-shape)", highlight=False, markup=False)
        for p in ev["providers"]:
            if p.get("fallback"):
                console.print(f"note: {p['fallback']}", highlight=False, markup=False)
        rows = []
        for prov, acc in (ev.get("accuracy") or {}).items():
            for name, m in acc["outputs"].items():
                rows.append([_short(prov), name, _pct(m.get("top1_agreement")), _pct(m.get("top1_accuracy_original")), _pct(m.get("top1_accuracy")), _num(m.get("cosine"), 6), _num(m.get("snr_db"), 1), _num(m.get("max_abs_error"), 5)])
        _table(console, "accuracy (acc: top-1 vs labels, original / compressed)", ["provider", "output", "agree", "acc orig", "acc comp", "cosine", "SNR dB", "max err"], rows, right_from=2)
        for prov, acc in (ev.get("accuracy") or {}).items():
            for k, v in (acc.get("metrics") or {}).items():
                console.print(f"metric {k} ({_short(prov)}): {_num(v)}", highlight=False, markup=False)
        rows = []
        for prov, lat in (ev.get("latency") or {}).items():
            a, b = lat["original"], lat.get("compressed") or {}
            rows.append([_short(prov), _ms(a["p50_ms"]), _ms(b.get("p50_ms")), _ms(a["p99_ms"]), _ms(b.get("p99_ms")), fmt_ratio(lat.get("speedup")) if b else "-",
                         fmt_duration(a["session_seconds"]), fmt_duration(b.get("session_seconds")) if b else "-"])
        _table(console, "latency (p50 / p99 per run, session start incl. decoding)", ["provider", "p50 orig", "p50 comp", "p99 orig", "p99 comp", "speedup", "start orig", "start comp"], rows, right_from=1)
        for prov, lat in (ev.get("latency") or {}).items():
            console.print(f"  {_short(prov)}: {lat['runs']} runs after {lat['warmup']} warm-up, batch {lat['batch']}, {lat['threads'] or 'default'} thread(s)", highlight=False, markup=False)
        for text in slowdown_lines(report):
            console.print(text, highlight=False, markup=False)
        pl = ev.get("per_layer")
        if pl:
            rows = [[w["name"], "x".join(map(str, w["shape"])), _num(w["rel_error"], 6)] for w in pl["weights"][:10]]
            _table(console, "worst weights", ["weight", "shape", "rel. error"], rows, right_from=2)
            if pl["weights_unmatched"]:
                console.print(f"{len(pl['weights_unmatched'])} weight(s) could not be matched (see the report's per_layer.weights_unmatched)", highlight=False)
            rows = [[a["name"], a["op"], _num(a["rel_error"], 6)] for a in (pl.get("activations") or [])[:10]]
            _table(console, "worst intermediate tensors", ["tensor", "op", "rel. error"], rows, right_from=2)
    rows = gate_rows(report)
    if rows:
        rows = [r[:4] + ([r[4]] if report["gates"]["results"][i]["verdict"] != "not_evaluated" else ["(see warning)"]) for i, r in enumerate(rows)]
        _table(console, "gates" + ("" if report["gates"]["enforced"] else " (not enforced)"), ["gate", "limit", "value", "verdict", "worst at"], rows, right_from=1, right_to=3)


def _table(console, title: str, cols: list[str], rows: list[list[str]], *, right_from: int = 1, right_to: int | None = None) -> None:
    if not rows:
        return
    from rich.table import Table

    from rich.text import Text

    t = Table(title=title, title_justify="left")
    for i, c in enumerate(cols):
        right = i >= right_from and (right_to is None or i < right_to)
        t.add_column(c, justify="right" if right else "left")
    for r in rows:
        t.add_row(*(Text(str(c)) for c in r))  # Text: names like `w[0]` are not markup
    console.print(t)


__all__ = [
    "SCHEMA",
    "build_report",
    "environment",
    "markdown",
    "print_summary",
    "to_json",
    "versions",
    "without_timings",
    "write_json",
    "write_text",
]
