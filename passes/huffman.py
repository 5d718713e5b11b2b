"""`huffman`: entropy-code integer weight streams into ``ai.onnxzip::HuffmanDecode`` nodes.

Rewrites: each targeted int8/uint8/int4/uint4 initializer T becomes a HuffmanDecode node
(in the graph that owns T) whose output is named T, reading two initializers: T's values
(one byte symbol each) Huffman-coded as independent raw DEFLATE segments (one dynamic-Huffman
block each, optimal length-limited canonical code of the segment's histogram), and a uint32
table of segment byte lengths and checksums (node format: :mod:`onnxzip._huffman_op`).
Lossless: ``onnxzip.runtime`` and ``onnxzip unpack`` restore T bit for bit. Stored size per
value: about the entropy of the value histogram (the order-0 entropy H bits <= achieved bits
< H + 1), plus a 15-140 byte DEFLATE header and 8 bytes of table per segment (256K-1M values).

Targets: integer initializers read by ``DequantizeLinear`` (input 0: quantized weights),
``Cast`` (input 0: k-means codebook indices, weight-only Cast+Mul), ``MatMulInteger`` and
``ConvInteger`` (input 1: dynamic-quantization weights) by default. ``ops`` replaces that
list; for consumers not named above (e.g. ``Gather``) any 8/4-bit integer initializer
they read is coded. ``include`` globs select integer initializers by their own name or a
consumer's name, whatever the op.

Skips, with the reason: tensors where coding does not pay (coded size with overhead >= raw
size; e.g. uniform values), other integer widths, initializers that are also graph inputs.
Huffman must be the last weight pass (see ORDER_RULES).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import ClassVar

import onnx

from onnxzip import _huffman_op as HO
from onnxzip import model as M
from onnxzip.passes.base import Pass, PassResult, Skip, TargetConfig, TensorStat, no_target_warning, opt

# Which input of a consumer carries the weight stream; ops not listed: any integer input.
STREAM_INPUTS = {"DequantizeLinear": (0,), "Cast": (0,), "MatMulInteger": (1,), "ConvInteger": (1,)}
_DEFAULT_DOMAINS = ("", "ai.onnx", "com.microsoft")
INTEGER_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
    onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32, onnx.TensorProto.UINT32,
    onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.INT2, onnx.TensorProto.UINT2,
}


@dataclass(frozen=True, kw_only=True)
class HuffmanConfig(TargetConfig):
    segment_size: int | None = opt(
        None,
        "values per independently decoded DEFLATE segment (a 15-140 byte header each); default: per "
        "tensor, 256K..1M so that large tensors have at least 16 segments to decode in parallel",
        min=256, max=1 << 24,
    )

    DEFAULT_OPS: ClassVar[tuple[str, ...]] = ("DequantizeLinear", "Cast", "MatMulInteger", "ConvInteger")


@dataclass
class _Target:
    scope: M.Scope  # the graph owning the initializer
    tensor: onnx.TensorProto
    node: onnx.NodeProto  # first consumer, for the report


class HuffmanPass(Pass):
    name = "huffman"
    summary = "entropy-code integer weight streams (quantized values, codebook indices) into HuffmanDecode nodes"
    Config = HuffmanConfig

    @classmethod
    def targets(cls, model: onnx.ModelProto, config, skipped: list[Skip]) -> list[tuple[str, onnx.NodeProto, int]]:
        return [(t.tensor.name, t.node, M.numel(t.tensor)) for t in select_streams(model, config, skipped)]

    def call(self, model: onnx.ModelProto) -> PassResult:
        cfg: HuffmanConfig = self.config  # type: ignore[assignment]
        skipped: list[Skip] = []
        stats: list[TensorStat] = []
        names = M.NameGen(model)
        targets = select_streams(model, cfg, skipped)
        inserted: dict[str, int] = {}  # graph path -> decode nodes placed at its top so far
        for tg in targets:
            t = tg.tensor
            c = cfg.for_names(tg.node.name, t.name)
            if c is None:
                skipped.append(Skip(t.name, "skipped by an override"))
                continue
            raw = M.tensor_nbytes(t)
            enc = HO.encode_tensor(M.to_array(t), t.data_type, segment_size=c.segment_size)  # type: ignore[attr-defined]
            node, inits = HO.make_node(
                enc,
                t.name,
                names(t.name + ".huff"),
                names(t.name + ".huff_segments"),
                names(t.name + "/HuffmanDecode"),
            )
            payload, table = len(inits[0].raw_data), len(inits[1].raw_data)
            headers = payload - enc.stream.data_bits // 8  # DEFLATE block headers, end codes, padding
            overhead = node.ByteSize() + table + headers
            coded = payload + node.ByteSize() + table
            if coded >= raw:
                skipped.append(
                    Skip(t.name, f"coding does not pay: {coded} bytes coded (incl. {overhead} overhead) >= {raw} raw "
                                 f"(entropy {enc.entropy_bits:.2f} bits/value)")
                )
                continue
            name = t.name
            g = tg.scope.graph
            _delete_initializer(g, name)
            g.initializer.extend(inits)
            at = inserted.get(tg.scope.path, 0)
            g.node.insert(at, node)  # inputs are initializers: the top of the graph is always valid
            inserted[tg.scope.path] = at + 1
            stats.append(
                TensorStat(
                    name=name, node=tg.node.name, op=tg.node.op_type,
                    bytes_before=raw, bytes_after=coded,
                    params_before=enc.stream.count, params_after=enc.stream.count,
                    bits=round(enc.achieved_bits, 4),
                    extra={
                        "dtype": HO.dtype_name(t.data_type),
                        "entropy_bits": round(enc.entropy_bits, 4),
                        "stored_bits": round(8 * coded / enc.stream.count, 4),
                        "table_bytes": table,
                        "overhead_bytes": overhead,
                        "segments": enc.stream.n_segments,
                    },
                )
            )
        if stats:
            M.ensure_opset(model, M.ONNXZIP_DOMAIN, HO.FORMAT_VERSION)
        warnings = [] if stats or skipped else [no_target_warning(cfg)]
        notes = []
        if stats:
            before, after = sum(s.bytes_before for s in stats), sum(s.bytes_after for s in stats)
            notes.append(f"{len(stats)} streams coded: {before} -> {after} bytes")
        return PassResult(model, bool(stats), tensors=stats, skipped=skipped, notes=notes, warnings=warnings)


def _delete_initializer(graph: onnx.GraphProto, name: str) -> None:
    # In place: M.remove_initializer rebuilds (copies) the whole list, once per tensor here.
    for i, t in enumerate(graph.initializer):
        if t.name == name:
            del graph.initializer[i]
            return


def _matches(globs: tuple[str, ...], *names: str) -> bool:
    return any(n and fnmatch.fnmatchcase(n, g) for g in globs for n in names)


def select_streams(model: onnx.ModelProto, cfg: HuffmanConfig, skipped: list[Skip]) -> list[_Target]:
    """The integer initializers the pass would code, each once, in graph order, with the
    ones it leaves alone (and why) appended to ``skipped``. ``onnxzip inspect`` can list
    targets with it: the generic select_weights looks for float weights."""
    ops = set(cfg.target_ops)
    seen: set[tuple[str, str]] = set()
    out: list[_Target] = []
    for scope, node in M.iter_nodes(model):
        if (node.domain or "") == M.ONNXZIP_DOMAIN:
            continue
        known_domain = (node.domain or "") in _DEFAULT_DOMAINS
        for i, name in enumerate(node.input):
            if not name:
                continue
            by_op = known_domain and node.op_type in ops and i in STREAM_INPUTS.get(node.op_type, (i,))
            by_name = bool(cfg.include) and _matches(cfg.include, node.name, name)
            if cfg.include:
                if not by_name:
                    continue
            elif not by_op:
                continue
            found = scope.lookup_initializer(name)
            if found is None:
                continue
            owner, t = found
            key = (owner.path, name)
            if key in seen:
                continue
            seen.add(key)
            if t.data_type not in INTEGER_TYPES:
                continue  # e.g. a float Cast input or a DequantizeLinear scale: not a stream
            if _matches(cfg.exclude, node.name, name):
                skipped.append(Skip(name, "excluded by the recipe"))
                continue
            if t.data_type not in HO.SUPPORTED:
                skipped.append(Skip(name, f"{HO.dtype_name(t.data_type)} stream: huffman codes 8- and 4-bit integers only"))
                continue
            if any(v.name == name for v in owner.graph.input):
                skipped.append(Skip(name, "initializer is also a graph input (a caller may override it)"))
                continue
            if t.data_location == onnx.TensorProto.EXTERNAL:
                skipped.append(Skip(name, "external data not loaded"))
                continue
            n = M.numel(t)
            if n < cfg.min_params:
                skipped.append(Skip(name, f"{n} values < min_params {cfg.min_params}"))
                continue
            if n == 0:
                skipped.append(Skip(name, "empty tensor"))
                continue
            out.append(_Target(owner, t, node))
    return out


__all__ = ["HuffmanConfig", "HuffmanPass", "select_streams"]
