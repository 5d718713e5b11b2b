"""Graph plumbing shared by the quantize pass's linear and k-means rewriters (private).

Edits are collected per graph and applied at once (:class:`GraphEdit`), anchored on the
first output name of existing nodes, so positions never go stale while a pass walks the
model. Also: the default-domain opset upgrade, 4-bit tensor protos, and the "is this weight
already quantized?" check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxzip import model as M
from onnxzip.kernels.quant import pack_int4

# Ops whose output is a decoded weight when their input traces back to an integer initializer.
_DECODE_OPS = {"DequantizeLinear", "Cast", "Gather", "Mul", "Sub", "Add", "Reshape", "ScatterElements", "ScatterND", "Transpose"}


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


@dataclass
class GraphEdit:
    """Pending changes to one graph: nodes at the top (weight decoders that read only
    initializers), nodes before / instead of / after an anchor node, new initializers."""

    graph: onnx.GraphProto
    head: list[onnx.NodeProto] = field(default_factory=list)
    before: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    replace: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    after: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    inits: list[onnx.TensorProto] = field(default_factory=list)

    def add_init(self, tensor: onnx.TensorProto) -> str:
        self.inits.append(tensor)
        return tensor.name

    def apply(self) -> None:
        out = list(self.head)
        for n in list(self.graph.node):
            key = n.output[0] if len(n.output) else None
            out.extend(self.before.get(key, ()))
            if key in self.replace:
                out.extend(self.replace[key])
            else:
                out.append(n)
            out.extend(self.after.get(key, ()))
        del self.graph.node[:]
        self.graph.node.extend(out)
        self.graph.initializer.extend(self.inits)


class Edits:
    """GraphEdit per graph (keyed by scope path), applied together."""

    def __init__(self) -> None:
        self._by_path: dict[str, GraphEdit] = {}

    def of(self, scope: M.Scope) -> GraphEdit:
        e = self._by_path.get(scope.path)
        if e is None:
            e = self._by_path[scope.path] = GraphEdit(scope.graph)
        return e

    def apply(self) -> None:
        for e in self._by_path.values():
            e.apply()


def tensor(array: np.ndarray, name: str) -> onnx.TensorProto:
    """An initializer with raw data that keeps 0-d arrays 0-d (per-tensor scales and zero
    points must be scalars for onnxruntime's QDQ fusions; M.make_tensor turns them 1-D)."""
    return numpy_helper.from_array(np.array(array, order="C"), name)


def int_tensor(q: np.ndarray, name: str, container: int) -> onnx.TensorProto:
    """An integer initializer: INT4/UINT4 (two values a byte, ONNX's packing) when
    ``container`` is 4, else the array's own int8/uint8/int32 type."""
    if container == 4:
        signed = q.dtype == np.int8
        dt = onnx.TensorProto.INT4 if signed else onnx.TensorProto.UINT4
        return helper.make_tensor(name, dt, list(q.shape), pack_int4(q, signed=signed).tobytes(), raw=True)
    return tensor(q, name)


def used_names(model: onnx.ModelProto) -> set[str]:
    used: set[str] = set()
    for scope in M.walk(model):
        for n in scope.graph.node:
            used.update(n.input)
        used.update(o.name for o in scope.graph.output)
    return used


def remove_if_unused(model: onnx.ModelProto, candidates: list[tuple[M.Scope, str]]) -> None:
    """Drop the initializers the pass replaced once nothing reads them any more."""
    if not candidates:
        return
    used = used_names(model)
    for scope, name in candidates:
        if name not in used:
            M.remove_initializer(scope.graph, name)


def reader_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> number of node inputs (any graph) reading it: a shared weight has
    more than one."""
    counts: dict[str, int] = {}
    for _, n in M.iter_nodes(model):
        for i in n.input:
            if i:
                counts[i] = counts.get(i, 0) + 1
    return counts


def already_quantized(scope: M.Scope, name: str, depth: int = 6) -> str | None:
    """The op that decodes ``name`` from an integer initializer (DequantizeLinear, a k-means
    Gather, a Cast), when it is such a decoded weight; else None."""
    graph_chain: list[tuple[M.Scope, str]] = [(scope, name)]
    for _ in range(depth):
        if not graph_chain:
            return None
        nxt = []
        for sc, nm in graph_chain:
            prod = M.producer(sc.graph, nm)
            if prod is None:
                continue
            if prod.op_type not in _DECODE_OPS or (prod.domain or "") not in ("", "ai.onnx"):
                continue
            if prod.op_type == "DequantizeLinear":
                return "DequantizeLinear"
            for inp in prod.input:
                if not inp:
                    continue
                found = sc.lookup_initializer(inp)
                if found is not None and found[1].data_type in _INT_TYPES and prod.op_type in ("Cast", "Gather"):
                    return prod.op_type
                nxt.append((sc, inp))
        graph_chain = nxt
    return None


_INT_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
    onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
}


def upgrade_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``model`` with its default-domain opset raised to ``version`` by onnx's version
    converter (unchanged when already there), IR version raised to match, names kept.
    Raises on failure (the caller turns that into skips)."""
    current = M.domain_opset(model) or 1
    if current >= version:
        return model
    from onnx import version_converter

    out = version_converter.convert_version(model, version)
    min_ir = helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True)
    out.ir_version = max(out.ir_version, model.ir_version, min_ir)
    # The converter rebuilds nodes; keep the names recipes and reports refer to.
    if len(out.graph.node) == len(model.graph.node):
        for a, b in zip(out.graph.node, model.graph.node, strict=False):
            if not a.name and b.name:
                a.name = b.name
    return out


def check_loads(model: onnx.ModelProto) -> None:
    """onnx.checker and an onnxruntime CPU session must accept ``model`` (raises if not)."""
    from onnxzip.runtime import session_from_model

    M.check_model(model, what="the opset-upgraded model")
    session_from_model(model, ["CPUExecutionProvider"], optimization="basic")


def unfused_dequantize_inputs(model: onnx.ModelProto) -> set[str] | None:
    """Names read (as input 0) by DequantizeLinear nodes that survive onnxruntime's full CPU
    optimization of ``model``: weights it did not fuse into a quantized kernel and will
    dequantize at every inference. None when the optimized model cannot be inspected."""
    import os
    import tempfile

    from onnxzip.runtime import session_from_model

    if M._data_bytes(model) >= M.EXTERNAL_THRESHOLD:
        return None
    try:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "optimized.onnx")
            session_from_model(model, ["CPUExecutionProvider"], optimization="all", optimized_path=path)
            opt = onnx.load(path, load_external_data=False)
    except Exception:  # an optimizer that cannot serialize its result: keep what we have
        return None
    return {n.input[0] for _, n in M.iter_nodes(opt) if n.op_type == "DequantizeLinear" and n.input}


class Calibrated:
    """The layer statistics of one quantize run (by weight name) and what the data-aware
    steps did to each weight, for its TensorStat."""

    def __init__(self, model: onnx.ModelProto, names: M.NameGen, layers: dict, no_stats: dict[str, str]):
        self.model = model
        self.names = names
        self.layers = layers  # weight name -> passes._data_aware.Layer
        self.no_stats = no_stats
        self._info: dict[str, dict] = {}

    def gptq_layer(self, ref, cfg):
        """The Layer to run GPTQ on, or None (rtn; the reason is recorded)."""
        if cfg.algorithm != "gptq":
            return None
        layer = self.layers.get(ref.name)
        if layer is None:
            self._info.setdefault(ref.name, {}).update(
                algorithm="rtn", fallback=f"gptq needs statistics: {self.no_stats.get(ref.name, 'none')}"
            )
            return None
        self._info.setdefault(ref.name, {}).update(algorithm="gptq", percdamp=cfg.percdamp, act_order=cfg.act_order)
        return layer

    def finish(self, ref, cfg, w: np.ndarray, w_hat: np.ndarray, oa: int) -> None:
        """After quantizing ``w`` (output axis ``oa``) to ``w_hat``: the output error on the
        calibration inputs and, when asked, the bias correction (a graph edit, made before
        the node's rewrite reads its bias)."""
        from onnxzip.passes._data_aware import add_to_bias

        layer = self.layers.get(ref.name)
        info = self._info.setdefault(ref.name, {})
        if layer is None:
            if cfg.bias_correction:
                info["bias_correction"] = f"skipped: {self.no_stats.get(ref.name, 'no statistics')}"
            return
        a = layer.to2d(w, oa).astype(np.float64)
        b = layer.to2d(w_hat, oa).astype(np.float64)
        info["rel_output_error"] = layer.output_error(a, b)
        if cfg.bias_correction:
            info["bias_correction"] = add_to_bias(self.model, ref.scope, ref.node, layer.delta(a, b), np.dtype(np.float32), self.names)

    def info(self, name: str) -> dict:
        return self._info.pop(name, {})
