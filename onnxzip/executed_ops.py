"""What onnxruntime actually executes, and which of it is expected to cost time.

A compressed model is not run as written: onnxruntime fuses ``DequantizeLinear -> MatMul``
into integer kernels, folds constants and BatchNormalization, and lays Conv out in its own
blocked format. Whether a compressed model can be faster than its original depends on that
executed graph, not on the file. This module gets it (``SessionOptions.optimized_model_filepath``
at ``ORT_ENABLE_ALL``, one thread, written to a temporary folder, weights written apart and
never read back), counts its op types (``domain::Op`` for non-default domains), and compares
the compressed model's executed graph with the original's.

The comparison yields *findings*: ops the compressed model executes more of than the original
and that are expected to run slower than the float computation they replace (ConvInteger,
dynamic activation quantization at small batch, DequantizeLinear left at run time,
QuantizeLinear on activations, codebook Gather, unfolded BatchNormalization, added Transpose
or Cast, MatMulNBits). They are static expectations from the graph, not measurements: the
evaluation pairs them with the measured latency (:func:`explain_latency`).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

DEFAULT_DOMAINS = ("", "ai.onnx")
SMALL_BATCH = 8  # dynamic activation quantization is expected to cost more than it saves up to here
MAX_NODE_NAMES = 5
NOISE_FLOOR = 0.05  # slower means beyond this ratio when the measurement gives no better noise figure

# Op types that stand for the same computation whatever the domain (com.microsoft variants).
_INTEGER_KERNELS = {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
                    "DynamicQuantizeMatMul", "QLinearAdd", "QLinearMul", "QAttention", "QEmbedLayerNormalization",
                    "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool",
                    "QLinearSoftmax", "QLinearWhere", "QLinearReduceMean", "QuantizeLinear", "DequantizeLinear"}


def qualified(node: onnx.NodeProto) -> str:
    """``Op`` in the default domain, else ``domain::Op``."""
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


def _bare(op: str) -> str:
    return op.rsplit("::", 1)[-1]


@dataclass
class ExecutedOps:
    """The op types of one executed graph, their node names, and the nodes that fall in a
    cost class (:data:`REASONS` keys) that op counts alone cannot tell (a DequantizeLinear
    left at run time, a QuantizeLinear on an activation, a Gather on a constant codebook)."""

    counts: dict[str, int]
    nodes: dict[str, list[str]] = field(default_factory=dict)  # op type -> node names, graph order
    classes: dict[str, list[str]] = field(default_factory=dict)  # cost class -> node names

    def count(self, op: str) -> int:
        """Nodes of ``op`` in any domain (``QGemm`` and ``com.microsoft::QGemm`` alike)."""
        return sum(v for k, v in self.counts.items() if _bare(k) == op)

    def names(self, op: str) -> list[str]:
        return [n for k, v in self.nodes.items() if _bare(k) == op for n in v]

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "nodes": {k: list(v) for k, v in self.nodes.items()}, "classes": {k: list(v) for k, v in self.classes.items()}}

    @classmethod
    def from_graph(cls, model: onnx.ModelProto) -> ExecutedOps:
        """Read an executed (optimized) graph: the main graph's nodes; subgraph nodes count
        too (an If branch runs on some calls)."""
        g = model.graph
        consts = {t.name for t in g.initializer}
        producers = {o: n for n in g.node for o in n.output if o}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)

        def constant(name: str) -> bool:  # an initializer, or a Cast/Reshape/Identity of one
            seen = 0
            while name not in consts:
                p = producers.get(name)
                if p is None or p.op_type not in ("Cast", "Reshape", "Identity", "Unsqueeze", "Squeeze") or seen > 4:
                    return False
                name, seen = p.input[0], seen + 1
            return True

        counts: Counter[str] = Counter()
        nodes: dict[str, list[str]] = {}
        classes: dict[str, list[str]] = {}
        for n in _all_nodes(model):
            op = qualified(n)
            counts[op] += 1
            nodes.setdefault(op, []).append(n.name or f"<{n.op_type} #{counts[op]}>")
        for n in g.node:
            name = n.name or f"<{n.op_type}>"
            if n.op_type == "DequantizeLinear":
                users = consumers.get(n.output[0], [])
                if not users or any(_bare(qualified(u)) not in _INTEGER_KERNELS for u in users):
                    classes.setdefault("dequantize_at_run_time", []).append(name)
            elif n.op_type == "QuantizeLinear" and n.input and not constant(n.input[0]):
                classes.setdefault("quantize_activation", []).append(name)
            elif n.op_type == "Gather" and len(n.input) > 1 and constant(n.input[0]) and constant(n.input[1]):
                classes.setdefault("codebook_gather", []).append(name)
            elif n.op_type == "Cast":
                src = producers.get(n.input[0]) if n.input else None
                if src is None or src.op_type not in ("ConvInteger", "MatMulInteger"):  # those Casts are part of the integer op's rescale
                    classes.setdefault("cast", []).append(name)
                    if next((a.i for a in n.attribute if a.name == "to"), 0) == onnx.TensorProto.FLOAT16:
                        classes.setdefault("cast_to_float16", []).append(name)
            elif n.op_type == "MatMulNBits":  # onnxruntime also turns int8 DequantizeLinear -> MatMul into it
                bits = next((a.i for a in n.attribute if a.name == "bits"), 4)
                classes.setdefault(f"matmulnbits_{bits}bit", []).append(name)
        ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return cls(ordered, nodes, classes)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ExecutedOps:
        """Read an optimized model file (weights not loaded)."""
        return cls.from_graph(onnx.load(str(path), load_external_data=False))


def _all_nodes(model: onnx.ModelProto):
    stack = [model.graph]
    while stack:
        g = stack.pop()
        for n in g.node:
            yield n
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    stack.append(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(a.graphs)


def optimized_graph(model: onnx.ModelProto, providers: Sequence[str] = ("CPUExecutionProvider",), *, threads: int = 1) -> onnx.ModelProto:
    """The graph onnxruntime executes for ``model`` (plain ONNX; Huffman nodes are decoded
    first) on ``providers``: ORT_ENABLE_ALL, ``threads`` intra-op threads, written to a
    temporary folder that is removed before returning. Weights go to a side file that is not
    read back, so the result has the graph and small initializers only; models over 2 GB are
    passed to onnxruntime through external data. Raises what onnxruntime raises."""
    import onnxruntime as ort

    from onnxzip import model as M
    from onnxzip.runtime import to_plain

    plain = to_plain(model)
    with tempfile.TemporaryDirectory(prefix="onnxzip-executed-") as d:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(d) / "executed.onnx")
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", "executed.weights")
        opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        if M._data_bytes(plain) >= M.EXTERNAL_THRESHOLD:
            src = Path(d) / "in" / "model.onnx"
            src.parent.mkdir()
            M._write(plain, src, external=True)
            ort.InferenceSession(str(src), opts, providers=list(providers))
        else:
            ort.InferenceSession(M.serialize(plain), opts, providers=list(providers))
        return onnx.load(str(Path(d) / "executed.onnx"), load_external_data=False)


def executed_ops(model: onnx.ModelProto, providers: Sequence[str] = ("CPUExecutionProvider",), *, threads: int = 1) -> ExecutedOps:
    """Op counts, node names and cost classes of the graph onnxruntime executes."""
    return ExecutedOps.from_graph(optimized_graph(model, providers, threads=threads))


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One op type the compressed model executes more of than the original, with why it is
    expected to cost time on this provider. ``count`` is how many more."""

    op: str
    count: int
    nodes: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "count": self.count, "nodes": list(self.nodes), "reason": self.reason}

    def line(self) -> str:
        shown = ", ".join(self.nodes[:3]) + (", ..." if self.count > 3 else "")
        return f"{self.count} {self.op}" + (f" ({shown})" if shown else "") + f": {self.reason}"


def _cpu(provider: str) -> bool:
    return provider in ("", "CPUExecutionProvider") or "CPU" in provider


def _reasons(provider: str, batch: int | None, comp: ExecutedOps) -> dict[str, str]:
    """Why each class of op is expected to cost time (worded as expectations)."""
    cpu = _cpu(provider)
    at = f"at batch {batch}" if batch else "at small batch"
    elsewhere = "" if cpu else f"; {_short(provider)} may have no kernel for it, which would place it on CPU with copies either side"
    widths = sorted({int(k.removeprefix("matmulnbits_").removesuffix("bit")) for k in comp.classes if k.startswith("matmulnbits_")})
    bits = "/".join(map(str, widths)) or "4"
    nhwc = " (onnxruntime runs QLinearConv in NHWC and transposes around it)" if comp.count("QLinearConv") else ""
    return {
        "ConvInteger": (
            "onnxruntime's CPU ConvInteger (im2col + integer GEMM, then a float rescale, no fused bias or activation) "
            "is expected to be slower than its float NCHWc Conv, and each one needs a DynamicQuantizeLinear pass over its input"
            if cpu else "integer Conv with a run-time activation quantization; expected slower than the provider's float Conv" + elsewhere
        ),
        "DynamicQuantizeMatMul": (
            f"finds the activation's range and quantizes it on every call; {at} the GEMM has few rows, so that overhead "
            "can outweigh what the int8 GEMM saves" + elsewhere
        ),
        "DynamicQuantizeLinear": f"finds an activation's range and quantizes it on every call; {at} that overhead can outweigh what the integer GEMM saves" + elsewhere,
        "dequantize_at_run_time": "dequantizes to float on every call and feeds a float op (not fused into an integer kernel): extra work on top of the float op",
        "quantize_activation": "quantizes an activation on every call; onnxruntime did not absorb it into the op before it",
        "codebook_gather": "looks weights up in a codebook on every call instead of once at session start",
        "BatchNormalization": "runs unfused: the original has it folded into the Conv before it, which onnxruntime cannot do for a quantized Conv",
        "Transpose": "added layout change run on every call" + nhwc,
        "cast": "added type conversion run on every call"
        + (" (onnxruntime's CPU provider lacks float16 kernels for many ops and runs them in float32 between Casts)" if cpu and comp.classes.get("cast_to_float16") else ""),
        "MatMulNBits": f"dequantizes {bits}-bit weights inside the GEMM on every call; expected to be slower than a float MatMul except when memory-bound (large weights, small batch)"
        if cpu else f"{bits}-bit weights dequantized inside the GEMM" + elsewhere,
        "Gather": "added Gather run on every call (a codebook lookup that was not folded at session start)",
    }


_CLASS_OPS = {"dequantize_at_run_time": "DequantizeLinear", "quantize_activation": "QuantizeLinear", "codebook_gather": "Gather", "cast": "Cast"}
_COUNTED_OPS = ("ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "MatMulNBits", "BatchNormalization", "Transpose")


def findings(original: ExecutedOps, compressed: ExecutedOps, *, provider: str = "CPUExecutionProvider", batch: int | None = None) -> list[Finding]:
    """Ops the compressed executed graph has more of than the original's and that are
    expected to run slower than float. Dynamic activation quantization counts only at a
    batch up to :data:`SMALL_BATCH` (or an unknown batch)."""
    why = _reasons(provider, batch, compressed)
    out: list[Finding] = []
    small = batch is None or batch <= SMALL_BATCH

    def added_names(names: list[str], before: list[str]) -> tuple[str, ...]:
        old = set(before)
        new = [n for n in names if n not in old] or names
        return tuple(new[:MAX_NODE_NAMES])

    for op in _COUNTED_OPS:
        if op in ("DynamicQuantizeMatMul", "DynamicQuantizeLinear") and not small:
            continue
        if op == "DynamicQuantizeLinear" and compressed.count("ConvInteger"):
            continue  # part of the ConvInteger finding
        extra = compressed.count(op) - original.count(op)
        if extra > 0:
            out.append(Finding(op, extra, added_names(compressed.names(op), original.names(op)), why[op]))
    for cls, op in _CLASS_OPS.items():
        extra = len(compressed.classes.get(cls, [])) - len(original.classes.get(cls, []))
        if extra > 0:
            out.append(Finding(op, extra, added_names(compressed.classes[cls], original.classes.get(cls, [])), why[cls]))
    extra_gather = compressed.count("Gather") - original.count("Gather") - max(0, len(compressed.classes.get("codebook_gather", [])) - len(original.classes.get("codebook_gather", [])))
    if extra_gather > 0:
        out.append(Finding("Gather", extra_gather, added_names(compressed.names("Gather"), original.names("Gather")), why["Gather"]))
    return out


def difference(original: ExecutedOps, compressed: ExecutedOps) -> dict[str, int]:
    """Compressed minus original count per op type (zeros left out), largest change first."""
    d = {k: compressed.counts.get(k, 0) - original.counts.get(k, 0) for k in set(original.counts) | set(compressed.counts)}
    return dict(sorted(((k, v) for k, v in d.items() if v), key=lambda kv: (-abs(kv[1]), kv[0])))


def compare(original: ExecutedOps, compressed: ExecutedOps, *, provider: str = "CPUExecutionProvider", batch: int | None = None) -> dict[str, Any]:
    """The report's ``executed_ops`` entry: both op counts, their difference and the findings."""
    return {
        "original": dict(original.counts),
        "compressed": dict(compressed.counts),
        "difference": difference(original, compressed),
        "findings": [f.to_dict() for f in findings(original, compressed, provider=provider, batch=batch)],
        "batch": batch,
    }


def compare_models(original: onnx.ModelProto, compressed: onnx.ModelProto, providers: Sequence[str] = ("CPUExecutionProvider",), *, batch: int | None = None) -> dict[str, Any]:
    """:func:`compare` on the executed graphs of two models (one session each, 1 thread)."""
    return compare(executed_ops(original, providers), executed_ops(compressed, providers), provider=providers[0], batch=batch)


def _short(provider: str) -> str:
    return provider.removesuffix("ExecutionProvider")


def describe(entry: Mapping[str, Any], baseline: str = "the original") -> str:
    """One paragraph: the executed-op difference and why each added op is expected to cost
    time; says so when the executed ops are the same or nothing costly was added."""
    diff = entry.get("difference") or {}
    shown = ", ".join(f"{k} {'+' if v > 0 else ''}{v}" for k, v in list(diff.items())[:10])
    why = [f"{f['count']} {f['op']}" + (f" ({', '.join(f['nodes'][:3])}{', ...' if f['count'] > 3 else ''})" if f.get("nodes") else "") + f": {f['reason']}"
           for f in entry.get("findings") or []]
    comp = entry.get("compressed") or {}
    if not why and any(_bare(k) == "QLinearConv" for k in comp):
        why.append("integer kernels (QLinearConv) are not expected to beat the float Conv at this size on this CPU")
    if not diff:
        why.append(f"same executed ops as {baseline}: timing noise or weight layout")
    elif not why:
        why.append("no op expected to cost time was added: timing noise or weight layout")
    return f"executed-op difference vs {baseline}: {shown or 'none'}. " + "; ".join(why)


def is_slower(p50_original: float | None, p50_compressed: float | None, noise: float | None = None) -> bool:
    """Compressed median slower than the original's by more than ``noise`` (a ratio, at least
    :data:`NOISE_FLOOR`)."""
    if not p50_original or not p50_compressed:
        return False
    return p50_compressed / p50_original > 1 + max(NOISE_FLOOR, noise or 0.0)


def explain_latency(p50_original: float | None, p50_compressed: float | None, entry: Mapping[str, Any] | None, noise: float | None = None) -> str | None:
    """Why the compressed model is slower, or None when it is not (beyond the noise)."""
    if not is_slower(p50_original, p50_compressed, noise):
        return None
    tol = max(NOISE_FLOOR, noise or 0.0)
    head = f"compressed p50 is {p50_compressed / p50_original:.2f}x the original's (noise allowance {tol:.0%})"
    if entry is None or entry.get("error"):
        return head + "; executed ops unknown" + (f": {entry['error']}" if entry and entry.get("error") else "")
    return head + "; " + describe(entry)


__all__ = [
    "ExecutedOps",
    "Finding",
    "compare",
    "compare_models",
    "describe",
    "difference",
    "executed_ops",
    "explain_latency",
    "findings",
    "is_slower",
    "optimized_graph",
    "qualified",
]
