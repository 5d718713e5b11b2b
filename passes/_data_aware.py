"""Calibration-aware helpers shared by the weight passes (private).

* :func:`require_calibration`: the DataError a data-aware option raises without data;
* :func:`gather`: the layer statistics (:mod:`onnxzip.calibrate`) of the targeted weights,
  one model run for all of them, reused across passes through the context's cache;
* :class:`Layer`: a weight seen in the kernels' layout ``[R, K]`` (rows: output channels,
  columns: the reduction, ordered like the statistics' rows), per conv group;
* :func:`add_to_bias`: bias correction, adding ``delta`` to the layer's output per channel
  (Gemm ``C``, Conv ``B``, the constant of a following ``Add``, or a new ``Add``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxzip import model as M
from onnxzip.calibrate import LayerStats, LayerView, layer_stats, layer_view
from onnxzip.errors import DataError
from onnxzip.kernels.obs import bias_delta
from onnxzip.passes.base import WeightRef

CALIB_HINT = "pass `--calib FILE.npz` to `onnxzip compress`, or set `calibration: {data: FILE.npz}` in the recipe"


def require_calibration(context, pass_name: str, key: str, value: object) -> None:
    """Raise the DataError for a data-aware setting when the run has no calibration data."""
    if context.calibration is None:
        shown = str(value).lower() if isinstance(value, bool) else value
        raise DataError(
            f"pass `{pass_name}`: key `{key}`: `{key}: {shown}` needs calibration data",
            hint=CALIB_HINT,
        )


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def output_axis(node: onnx.NodeProto, ndim: int) -> int:
    """The weight's output-channel axis for the ops statistics cover (MatMul, Gemm, Conv)."""
    if node.op_type == "MatMul":
        return ndim - 1
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    return 0


@dataclass
class Layer:
    """One weight with its layer statistics."""

    ref: WeightRef
    view: LayerView
    stats: LayerStats

    @property
    def groups(self) -> int:
        return self.view.groups

    @property
    def alpha(self) -> float:
        return float(_attr(self.ref.node, "alpha", 1.0)) if self.ref.node.op_type == "Gemm" else 1.0

    def to2d(self, w: np.ndarray, oa: int | None = None) -> np.ndarray:
        """``w`` (the weight as stored, or transposed with output axis ``oa``) as [R, K]."""
        oa = output_axis(self.ref.node, w.ndim) if oa is None else oa
        return np.moveaxis(np.asarray(w), oa, 0).reshape(w.shape[oa], -1)

    @staticmethod
    def from2d(a: np.ndarray, shape: tuple[int, ...], oa: int) -> np.ndarray:
        moved = (shape[oa],) + tuple(d for i, d in enumerate(shape) if i != oa)
        return np.moveaxis(np.asarray(a).reshape(moved), 0, oa)

    def rows(self, r: int) -> list[tuple[slice, int]]:
        """(row slice, group) per conv group of an [r, K] weight."""
        per = r // self.groups
        return [(slice(g * per, (g + 1) * per), g) for g in range(self.groups)]

    def hessian(self, g: int = 0) -> np.ndarray:
        """H = X^T X of group ``g``, with the Ledoit-Wolf shrinkage of LayerStats.hessian."""
        return self.stats.hessian(g)

    def output_error(self, w2d: np.ndarray, w2d_new: np.ndarray) -> float:
        """||X (W - W')^T||_F / ||X W^T||_F over the calibration rows (from H)."""
        num = den = 0.0
        for sl, g in self.rows(w2d.shape[0]):
            h = self.hessian(g)
            a = np.asarray(w2d[sl], dtype=np.float64)
            e = a - np.asarray(w2d_new[sl], dtype=np.float64)
            num += float(np.sum((e @ h) * e))
            den += float(np.sum((a @ h) * a))
        return round(float(np.sqrt(max(num, 0.0) / den)), 6) if den > 0 else 0.0

    def delta(self, w2d: np.ndarray, w2d_new: np.ndarray) -> np.ndarray:
        """(W - W') E[x] per output channel (times Gemm's alpha), float64 [R]."""
        out = np.empty(w2d.shape[0], dtype=np.float64)
        mean = self.stats.mean
        for sl, g in self.rows(w2d.shape[0]):
            out[sl] = bias_delta(w2d[sl], w2d_new[sl], mean[g])
        return out * self.alpha


def gather(context, model: onnx.ModelProto, refs: list[WeightRef]) -> tuple[dict[str, Layer], dict[str, str], list[str]]:
    """Layers with statistics by weight name, the weights without (name -> reason), notes.

    Nodes inside subgraphs have none (their inputs cannot be fetched as graph outputs).
    """
    views: dict[str, LayerView] = {}
    none: dict[str, str] = {}
    for ref in refs:
        if ref.scope.parent is not None:
            none[ref.name] = "node is inside a subgraph; its input cannot be collected"
            continue
        found = ref.scope.lookup_initializer(ref.node.input[ref.input_index])
        dims = list(found[1].dims) if found else list(ref.tensor.dims)
        v = layer_view(ref.node, dims, ref.input_index)
        if isinstance(v, str):
            none[ref.name] = v
        else:
            views[ref.name] = v
    if not views:
        return {}, none, []
    stats, failed, notes = layer_stats(context, model, views.values())
    layers: dict[str, Layer] = {}
    by_name = {r.name: r for r in refs}
    for name, v in views.items():
        if v in stats:
            layers[name] = Layer(by_name[name], v, stats[v])
        else:
            none[name] = f"no statistics for {v.describe()}: {failed.get(v, 'not collected')}"
    return layers, none, notes


# --------------------------------------------------------------------------- bias correction


def _readers(model: onnx.ModelProto, name: str) -> int:
    return sum(1 for _, n in M.iter_nodes(model) for i in n.input if i == name)


def _write_const(model: onnx.ModelProto, scope: M.Scope, node: onnx.NodeProto, index: int, array: np.ndarray, names: M.NameGen) -> None:
    """Store ``array`` as input ``index`` of ``node``: in place when only this node reads the
    initializer, else as a fresh initializer for this node."""
    name = node.input[index]
    owner, tensor = scope.lookup_initializer(name)  # type: ignore[misc]
    if _readers(model, name) <= 1 and not any(i.name == name for i in owner.graph.input):
        tensor.CopyFrom(M.make_tensor(array, name))
        return
    new = names(name + "_corrected")
    scope.graph.initializer.append(M.make_tensor(array, new))
    node.input[index] = new


def _float_const(scope: M.Scope, name: str) -> np.ndarray | None:
    found = scope.lookup_initializer(name)
    if found is None or found[1].data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        return None
    return M.to_array(found[1])


def add_to_bias(model: onnx.ModelProto, scope: M.Scope, node: onnx.NodeProto, delta: np.ndarray, dtype: np.dtype, names: M.NameGen) -> str:
    """Add ``delta`` [R] to every output channel of ``node`` (MatMul/Gemm: the last axis;
    Conv: axis 1). Returns where it went."""
    r = delta.shape[0]
    op = node.op_type
    y = node.output[0]
    if op == "Gemm":
        beta = float(_attr(node, "beta", 1.0))
        has_c = len(node.input) > 2 and bool(node.input[2])
        if has_c and beta != 0.0:
            c = _float_const(scope, node.input[2])
            if c is not None and ((c.ndim <= 1 and c.size in (1, r)) or (c.ndim == 2 and c.shape[1] in (1, r))):
                new = c.astype(np.float64) + (delta / beta).reshape((1, r) if c.ndim == 2 else (r,))
                _write_const(model, scope, node, 2, new.astype(c.dtype), names)
                return "Gemm bias C"
        elif not has_c:
            b = names((node.name or y) + "_bias_correction")
            scope.graph.initializer.append(M.make_tensor((delta / (beta or 1.0)).astype(dtype), b))
            if len(node.input) > 2:
                node.input[2] = b
            else:
                node.input.append(b)
            if beta == 0.0:
                for a in node.attribute:
                    if a.name == "beta":
                        a.f = 1.0
            return "new Gemm bias C"
    elif op == "Conv":
        if len(node.input) > 2 and node.input[2]:
            b = _float_const(scope, node.input[2])
            if b is not None and b.shape == (r,):
                _write_const(model, scope, node, 2, (b.astype(np.float64) + delta).astype(b.dtype), names)
                return "Conv bias B"
        else:
            b = names((node.name or y) + "_bias_correction")
            scope.graph.initializer.append(M.make_tensor(delta.astype(dtype), b))
            node.input.append(b)
            return "new Conv bias B"
    elif op == "MatMul":
        readers = M.consumers(scope.graph, y)
        exposed = any(o.name == y for o in scope.graph.output) or any(M.is_used_in_subgraph(n, y) for n in scope.graph.node)
        if len(readers) == 1 and readers[0].op_type == "Add" and not exposed and len(readers[0].input) == 2:
            add = readers[0]
            idx = 1 if add.input[0] == y else 0
            c = _float_const(scope, add.input[idx])
            if c is not None and c.ndim >= 1 and c.shape[-1] == r and int(np.prod(c.shape)) == r:
                _write_const(model, scope, add, idx, (c.astype(np.float64) + delta.reshape(c.shape)).astype(c.dtype), names)
                return "bias of the following Add"
    # A new Add after the node: the node's output is renamed, the Add produces the old name.
    before = names(y + "_uncorrected")
    b = names((node.name or y) + "_bias_correction")
    shape: tuple[int, ...] = (r,)
    if op == "Conv":
        found = scope.lookup_initializer(node.input[1])
        spatial = len(found[1].dims) - 2 if found else len(_attr(node, "kernel_shape", [0, 0]))
        shape = (r,) + (1,) * spatial
    scope.graph.initializer.append(M.make_tensor(delta.reshape(shape).astype(dtype), b))
    node.output[0] = before
    add = helper.make_node("Add", [before, b], [y], name=names((node.name or y) + "_bias_correction"))
    g = scope.graph
    idx = next(i for i, n in enumerate(g.node) if n is node or (n.output and n.output[0] == before))
    g.node.insert(idx + 1, add)
    return "new Add"
