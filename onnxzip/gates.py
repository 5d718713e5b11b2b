"""CI gates: limits on the report's numbers that decide the exit code.

Gates come from the recipe's ``gates:`` mapping and from command-line flags (a flag replaces
the recipe's gate of the same name)::

    gates:
      min_compression: 3.0          # size ratio original / stored          >= 3.0
      max_accuracy_drop: 0.01       # top-1 accuracy (labels) may drop      <= 1 point
      min_top1_agreement: 0.99      # argmax agrees with the original       >= 99 %
      min_cosine: 0.995             # mean per-sample cosine similarity     >= 0.995
      max_latency_ratio: 1.1        # compressed p50 / original p50, each provider
      box_f1: ">= 0.95"             # any metric by name, with a comparison

A gate's value is the *worst* one it sees: over every output (for output metrics) and every
execution provider. Verdicts:

``pass`` / ``fail``
    the value was measured and compared with the limit (NaN never passes).
``not_evaluated``
    the value does not exist for this run: ``max_accuracy_drop`` without labels, top-1 gates
    on generated inputs (argmax of random inputs says little), latency gates with latency
    off, a task metric that returned no such name. Not a silent pass: it is reported with
    its reason and printed as a warning; with ``strict`` (``--strict-gates``) it fails.

A failed gate leaves the outputs and reports written and makes the command exit 1;
``--no-gates`` still computes and reports every gate but never fails.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from onnxzip.errors import EXIT_GATE, OnnxzipError

OPS = (">=", "<=", ">", "<", "==")


@dataclass(frozen=True)
class GateKind:
    """A named built-in gate: the metric it limits, the comparison, the valid limit range."""

    metric: str
    op: str
    help: str
    lo: float | None = None
    hi: float | None = None


BUILTIN_GATES: dict[str, GateKind] = {
    "min_compression": GateKind("compression", ">=", "stored size ratio, original / compressed", lo=0.0),
    "max_accuracy_drop": GateKind("accuracy_drop", "<=", "top-1 accuracy drop against labels (0.01 = 1 point)", lo=0.0, hi=1.0),
    "min_top1_agreement": GateKind("top1_agreement", ">=", "fraction of samples whose argmax matches the original", lo=0.0, hi=1.0),
    "min_cosine": GateKind("cosine", ">=", "mean per-sample cosine similarity of each output", lo=-1.0, hi=1.0),
    "max_latency_ratio": GateKind("latency_ratio", "<=", "compressed p50 / original p50 latency, per provider", lo=0.0),
}

# Metrics a gate expression may name (besides task metrics): where they come from.
METRICS: dict[str, str] = {
    "compression": "size ratio original / stored",
    "deployable_compression": "size ratio original / deployable (Huffman decoded)",
    "top1_agreement": "argmax agreement with the original, per output",
    "top1_accuracy": "compressed top-1 accuracy against labels",
    "accuracy_drop": "original minus compressed top-1 accuracy",
    "cosine": "mean per-sample cosine similarity, per output",
    "snr_db": "signal-to-noise ratio in dB, per output",
    "max_abs_error": "largest absolute difference, per output",
    "mean_abs_error": "mean absolute difference, per output",
    "latency_ratio": "compressed p50 / original p50, per provider",
    "speedup": "original p50 / compressed p50, per provider",
}

SIZE_METRICS = ("compression", "deployable_compression")
LATENCY_METRICS = ("latency_ratio", "speedup")
TOP1_METRICS = ("top1_agreement", "top1_accuracy", "accuracy_drop")

_EXPR = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf)\s*$")
_FLAG = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|>|<|:)\s*(.+?)\s*$")


class GateFailed(OnnxzipError):
    """One or more gates failed (exit 1); outputs and reports were written."""

    exit_code = EXIT_GATE


@dataclass(frozen=True)
class Gate:
    """One gate: ``metric op limit``; ``name`` is the recipe/flag key it came from."""

    name: str
    metric: str
    op: str
    limit: float
    source: str = "recipe"  # or "flag"

    @property
    def custom(self) -> bool:
        return self.name not in BUILTIN_GATES

    @property
    def text(self) -> str:
        return f"{self.metric} {self.op} {_num(self.limit)}"

    def needs_evaluation(self) -> bool:
        return self.metric not in SIZE_METRICS

    def needs_latency(self) -> bool:
        return self.metric in LATENCY_METRICS


def _num(x: float) -> str:
    return f"{x:.12g}"


def parse_expression(text: Any) -> tuple[str, float]:
    """``">= 0.95"`` -> (``">="``, 0.95); ValueError with a message otherwise."""
    if not isinstance(text, str):
        raise ValueError("a custom gate needs a comparison as a string, e.g. `\">= 0.95\"`")
    m = _EXPR.match(text)
    if not m:
        raise ValueError(f"`{text}` is not a comparison like `>= 0.95` (operators: {', '.join(OPS)})")
    return m.group(1), float(m.group(2))


def make_gate(name: str, value: Any, *, source: str = "recipe", custom_ok: bool = True) -> Gate:
    """Build a gate from a recipe entry or flag; ValueError (message, hint) when invalid."""
    if name in BUILTIN_GATES:
        kind = BUILTIN_GATES[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GateValueError(f"gate `{name}` takes a number, got `{value}`", f"`{name}`: {kind.help}, e.g. `{name}: {_example(name)}`")
        v = float(value)
        if math.isnan(v) or (kind.lo is not None and v < kind.lo) or (kind.hi is not None and v > kind.hi):
            rng = f"[{_num(kind.lo) if kind.lo is not None else '-inf'}, {_num(kind.hi) if kind.hi is not None else 'inf'}]"
            raise GateValueError(f"gate `{name}`: {_num(v)} is out of range", f"the valid range is {rng}")
        return Gate(name, kind.metric, kind.op, v, source)
    if not custom_ok:
        raise GateValueError(f"unknown gate `{name}`", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise GateValueError(f"gate `{name}` needs a comparison, got the number `{value}`", f"write `{name}: \">= {value}\"` (operators: {', '.join(OPS)})")
    try:
        op, limit = parse_expression(value)
    except ValueError as e:
        raise GateValueError(f"gate `{name}`: {e}", "quote the comparison in YAML: `box_f1: \">= 0.95\"`") from None
    return Gate(name, name, op, limit, source)


def _example(name: str) -> str:
    return {"min_compression": "2.0", "max_accuracy_drop": "0.01", "min_top1_agreement": "0.99", "min_cosine": "0.99", "max_latency_ratio": "1.1"}[name]


class GateValueError(ValueError):
    def __init__(self, message: str, hint: str | None):
        super().__init__(message)
        self.message, self.hint = message, hint


def parse_flag(text: str) -> tuple[str, str]:
    """``"box_f1>=0.95"`` or ``"box_f1: >= 0.95"`` -> (``"box_f1"``, ``">= 0.95"``)."""
    m = _FLAG.match(text)
    if not m:
        raise ValueError(f"`{text}` is not `NAME>=VALUE`")
    name, op, rest = m.groups()
    return name, (rest if op == ":" else f"{op} {rest}")


def gates_from_mapping(mapping: Mapping[str, Any], *, source: str = "recipe") -> list[Gate]:
    """Gates from a validated mapping (the recipe's ``gates:``), in mapping order."""
    return [make_gate(str(k), v, source=source) for k, v in mapping.items()]


def merge(recipe_gates: Iterable[Gate], flag_gates: Iterable[Gate]) -> list[Gate]:
    """Recipe gates with flags replacing those of the same name; flag-only gates appended."""
    out: dict[str, Gate] = {g.name: g for g in recipe_gates}
    for g in flag_gates:
        out[g.name] = g
    return list(out.values())


def _compare(value: float, op: str, limit: float) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return {">=": value >= limit, "<=": value <= limit, ">": value > limit, "<": value < limit, "==": value == limit}[op]


def _worst(op: str, values: list[tuple[str, float]]) -> tuple[str, float]:
    """The value that is hardest on the gate: lowest for >=/>, highest for <=/<."""
    nan = [(s, v) for s, v in values if isinstance(v, float) and math.isnan(v)]
    if nan:
        return nan[0]
    if op in (">=", ">"):
        return min(values, key=lambda sv: sv[1])
    if op in ("<=", "<"):
        return max(values, key=lambda sv: sv[1])
    bad = [(s, v) for s, v in values if v != values[0][1]]
    return bad[0] if bad else values[0]


# --------------------------------------------------------------------------- measured values


def metric_values(report: Mapping[str, Any]) -> tuple[dict[str, list[tuple[str, float]]], dict[str, str]]:
    """Every gateable number in a report, as metric -> [(subject, value)], plus why a metric
    family is missing (metric -> reason)."""
    values: dict[str, list[tuple[str, float]]] = {}
    missing: dict[str, str] = {}
    size = report.get("size") or {}
    if size.get("ratio") is not None:
        values["compression"] = [("stored size", size["ratio"])]
    if size.get("deployable_ratio") is not None:
        values["deployable_compression"] = [("deployable size", size["deployable_ratio"])]
    ev = report.get("evaluation")
    if not ev:
        reason = "the run was not evaluated (give --data, or enable evaluation)"
        for m in METRICS:
            if m not in SIZE_METRICS:
                missing[m] = reason
        return values, missing
    synthetic = bool((ev.get("data") or {}).get("synthetic"))
    labeled = bool((ev.get("data") or {}).get("labels"))
    for prov, acc in (ev.get("accuracy") or {}).items():
        for out_name, m in (acc.get("outputs") or {}).items():
            subject = f"{out_name} on {prov}"
            for key in ("top1_agreement", "top1_accuracy", "accuracy_drop", "cosine", "snr_db", "max_abs_error", "mean_abs_error"):
                if key in m:
                    if synthetic and key in TOP1_METRICS:
                        continue
                    values.setdefault(key, []).append((subject, _f(m[key])))
        for key, v in (acc.get("metrics") or {}).items():
            values.setdefault(key, []).append((prov, _f(v)))
    for prov, lat in (ev.get("latency") or {}).items():
        if "latency_ratio" in lat:
            values.setdefault("latency_ratio", []).append((prov, _f(lat["latency_ratio"])))
            values.setdefault("speedup", []).append((prov, _f(lat["speedup"])))
    if not ev.get("latency"):
        for m in LATENCY_METRICS:
            missing[m] = "latency was not measured (it is off with --no-latency or `evaluate.latency: false`)"
    if synthetic:
        for m in TOP1_METRICS:
            missing[m] = "top-1 on generated inputs is not meaningful; give real data with --data"
    else:
        if not labeled:
            missing.setdefault("top1_accuracy", "the data has no `labels` array")
            missing.setdefault("accuracy_drop", "the data has no `labels` array")
        else:
            missing.setdefault("top1_accuracy", "no output has class scores matching the labels' shape")
            missing.setdefault("accuracy_drop", "no output has class scores matching the labels' shape")
        missing.setdefault("top1_agreement", "no output looks like class scores (float, last dim > 1)")
    return values, missing


def _f(v: Any) -> float:
    if isinstance(v, str):  # non-finite numbers are stored as strings in JSON
        return float(v)
    return float(v)


def evaluate_gates(gates: list[Gate], report: Mapping[str, Any], *, enforce: bool = True, strict: bool = False) -> dict[str, Any]:
    """Judge ``gates`` against the numbers in ``report``; returns the report's ``gates`` section."""
    values, missing = metric_values(report)
    synthetic = bool(((report.get("evaluation") or {}).get("data") or {}).get("synthetic"))
    results = []
    for g in gates:
        entry: dict[str, Any] = {
            "name": g.name,
            "metric": g.metric,
            "op": g.op,
            "limit": g.limit,
            "value": None,
            "subject": None,
            "verdict": "not_evaluated",
            "reason": None,
            "source": g.source,
        }
        got = values.get(g.metric)
        if got:
            subject, value = _worst(g.op, got)
            entry["value"], entry["subject"] = value, subject
            entry["verdict"] = "pass" if _compare(value, g.op, g.limit) else "fail"
            if synthetic and g.metric not in SIZE_METRICS:
                entry["reason"] = "measured on generated inputs"
        else:
            entry["reason"] = missing.get(g.metric) or _unknown_reason(g.metric, values)
        results.append(entry)
    failed = [r["name"] for r in results if r["verdict"] == "fail"]
    unevaluated = [r["name"] for r in results if r["verdict"] == "not_evaluated"]
    if failed or (strict and unevaluated):
        verdict = "fail"
    elif unevaluated:
        verdict = "incomplete"
    else:
        verdict = "pass"
    return {
        "enforced": enforce,
        "strict": strict,
        "verdict": verdict,
        "failed": failed,
        "not_evaluated": unevaluated,
        "results": results,
    }


def _unknown_reason(metric: str, values: Mapping[str, Any]) -> str:
    from onnxzip.recipe import did_you_mean

    known = sorted(set(values) | set(METRICS))
    return f"no metric named `{metric}` was measured ({did_you_mean(metric, known)})"


def describe(result: Mapping[str, Any]) -> str:
    """One line for a gate result: ``min_cosine: cosine 0.9812 >= 0.99 failed (logits on CPU...)``."""
    r = result
    if r["verdict"] == "not_evaluated":
        return f"gate `{r['name']}` ({r['metric']} {r['op']} {_num(r['limit'])}) not evaluated: {r['reason']}"
    v = r["value"]
    shown = f"{v:.6g}" if isinstance(v, float) else str(v)
    word = "passed" if r["verdict"] == "pass" else "failed"
    where = f" ({r['subject']})" if r.get("subject") else ""
    return f"gate `{r['name']}` {word}: {r['metric']} = {shown}, limit {r['op']} {_num(r['limit'])}{where}"


def exit_code(section: Mapping[str, Any] | None) -> int:
    """0 or 1 for a report's ``gates`` section (not enforced: always 0)."""
    if not section or not section.get("enforced"):
        return 0
    return EXIT_GATE if section.get("verdict") == "fail" else 0


def failure(section: Mapping[str, Any], *, written: str = "the compressed model and the report were written") -> GateFailed:
    """The error to raise for a failed gates section (names every failing gate)."""
    bad = [r for r in section["results"] if r["verdict"] == "fail" or (section.get("strict") and r["verdict"] == "not_evaluated")]
    first = bad[0]
    msg = describe(first).removeprefix("gate ")
    msg = f"{len(bad)} gates failed; first: {msg}" if len(bad) > 1 else f"gate {msg}"
    return GateFailed(
        msg,
        causes=[describe(r) for r in bad[1:]],
        hint=f"{written}; relax the gate, change the recipe, or pass --no-gates to report without failing",
    )


__all__ = [
    "BUILTIN_GATES",
    "METRICS",
    "Gate",
    "GateFailed",
    "describe",
    "evaluate_gates",
    "exit_code",
    "failure",
    "gates_from_mapping",
    "make_gate",
    "merge",
    "metric_values",
    "parse_expression",
    "parse_flag",
]
