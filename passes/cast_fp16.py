"""`cast-fp16`: store float32 weights as float16, restored by a Cast at session start.

Rewrites: each targeted float32 initializer W becomes a float16 initializer W' plus a
``Cast(to=FLOAT)`` node producing the original name, placed in the graph that owns W (so
weights inside If/Loop/Scan bodies work too). onnxruntime folds the Cast when the session
starts, so compute stays float32 and only the file shrinks (2x on the weights).
With ``all_float`` every float32 initializer is a candidate (biases, normalization
parameters, k-means codebooks), except quantization scales and zero points.
Error: |W - fp32(fp16(W))| <= 2^-11 |W| for normal values. Skips: weights whose values
overflow float16 (|w| > 65504), non-float32 weights, tensors below ``min_params``, tensors
so small that float16 plus the Cast node would take more bytes than float32, and
tensors a per-node override skips (``all_float`` too: overrides match the tensor's name or
its first consumer's).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
from onnx import helper

from onnxzip import model as M
from onnxzip.kernels.prune import relative_error
from onnxzip.passes.base import Pass, PassResult, Skip, TargetConfig, TensorStat, no_target_warning, opt, select_weights

FP16_MAX = 65504.0


@dataclass(frozen=True, kw_only=True)
class CastFp16Config(TargetConfig):
    all_float: bool = opt(
        False,
        "every float32 initializer of at least min_params elements (biases, norms, codebooks), "
        "not only the weights of `ops`; quantization scales and zero points are left alone",
    )

    DEFAULT_OPS: ClassVar[tuple[str, ...]] = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather")


# Inputs whose exact float32 value matters to onnxruntime's QDQ fusions.
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


@dataclass
class _Ref:
    owner: M.Scope
    tensor: onnx.TensorProto
    node: onnx.NodeProto

    def array(self) -> np.ndarray:
        return M.to_array(self.tensor)


def _all_float(model: onnx.ModelProto, cfg: CastFp16Config, skipped: list[Skip]) -> list[_Ref]:
    """Every float32 initializer the config selects by name and size, with a consumer."""
    consumer: dict[tuple[str, str], onnx.NodeProto] = {}
    quant_inputs: set[str] = set()
    for scope, node in M.iter_nodes(model):
        for name in node.input:
            found = scope.lookup_initializer(name) if name else None
            if found is not None:
                consumer.setdefault((found[0].path, name), node)
                if node.op_type in _QUANT_OPS:
                    quant_inputs.add(name)
    refs = []
    for scope in M.walk(model):
        for t in scope.graph.initializer:
            node = consumer.get((scope.path, t.name))
            if node is None or t.data_type != onnx.TensorProto.FLOAT:
                continue
            names = (t.name, node.name)
            if any(fnmatch.fnmatchcase(n, g) for g in cfg.exclude for n in names):
                skipped.append(Skip(t.name, "excluded by the recipe"))
                continue
            if cfg.include and not any(fnmatch.fnmatchcase(n, g) for g in cfg.include for n in names):
                continue
            # a per-node `skip: true` holds here as for the weights of `ops` (a tuned recipe keeps
            # the layers it leaves off float32 with it)
            if cfg.for_names(node.name, t.name) is None:
                skipped.append(Skip(t.name, "skipped by an override"))
            elif t.name in quant_inputs:
                skipped.append(Skip(t.name, "quantization scale or zero point: kept float32"))
            elif M.numel(t) < cfg.min_params:
                skipped.append(Skip(t.name, f"{M.numel(t)} params < min_params {cfg.min_params}"))
            else:
                refs.append(_Ref(scope, t, node))
    return refs


def _serialized(msg: onnx.TensorProto | onnx.NodeProto) -> int:
    """Bytes ``msg`` takes inside its graph: the message plus its field tag and length prefix."""
    n = msg.ByteSize()
    return n + 1 + max(1, (n.bit_length() + 6) // 7)


class CastFp16Pass(Pass):
    name = "cast-fp16"
    summary = "store float32 weights as float16 (Cast back at load; halves weight bytes)"
    Config = CastFp16Config

    def call(self, model: onnx.ModelProto) -> PassResult:
        cfg: CastFp16Config = self.config  # type: ignore[assignment]
        skipped: list[Skip] = []
        stats: list[TensorStat] = []
        names = M.NameGen(model)
        refs = _all_float(model, cfg, skipped) if cfg.all_float else list(select_weights(model, cfg, skipped))
        selected = bool(refs)
        for ref in refs:
            t = ref.tensor
            if t.data_type != onnx.TensorProto.FLOAT:
                skipped.append(Skip(t.name, "weight is not float32"))
                continue
            w = ref.array()
            if w.size and float(np.max(np.abs(w))) > FP16_MAX:
                skipped.append(Skip(t.name, "values overflow float16 (|w| > 65504)"))
                continue
            h = w.astype(np.float16)
            old_name = t.name
            new_name = names(t.name + "_fp16")
            before = M.tensor_nbytes(t)
            half = M.make_tensor(h, new_name)
            cast = helper.make_node("Cast", [new_name], [old_name], name=names(old_name + "_cast"), to=onnx.TensorProto.FLOAT)
            # a small tensor saves fewer bytes than its Cast node adds to the graph
            grown, kept = _serialized(half) + _serialized(cast), _serialized(t)
            if grown >= kept:
                skipped.append(Skip(old_name, f"float16 and its Cast node take {grown} bytes, float32 {kept}: kept float32"))
                continue
            t.CopyFrom(half)
            ref.owner.graph.node.insert(0, cast)
            stats.append(
                TensorStat(
                    name=old_name, node=ref.node.name, op=ref.node.op_type,
                    bytes_before=before, bytes_after=M.tensor_nbytes(t),
                    params_before=w.size, params_after=w.size, bits=16,
                    rel_error=relative_error(w, h.astype(np.float32)),
                )
            )
        warnings = [] if stats or selected else [no_target_warning(cfg)]
        return PassResult(model, bool(stats), tensors=stats, skipped=skipped, warnings=warnings)
