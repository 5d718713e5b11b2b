"""Linear (affine) quantization rewrites for the quantize pass (private).

Three representations, chosen per node from what onnxruntime's CPU provider fuses
(measured with onnxruntime 1.32; see passes/quantize.py for the numbers):

* weight-only, MatMul (and Gemm rewritten as MatMul [+ Mul alpha] [+ Add bias]):
  ``DequantizeLinear(q, scale[, zero_point], axis, block_size) -> MatMul``; onnxruntime
  turns it into MatMulNBits (int8 and int4, every granularity).
* weight-only, any other consumer (Conv, ConvTranspose, Gather, batched MatMul):
  ``Cast(q) [-> Sub(zero_point)] -> Mul(scale)``, which onnxruntime constant-folds when the
  session starts (a DequantizeLinear there would run at every inference: onnxruntime keeps
  DQ nodes unfolded for its QDQ fusions); blocks reshape to (blocks, block_size) first.
  :meth:`LinearRewriter.finalize` moves any MatMul DequantizeLinear that onnxruntime's
  optimized graph still holds to this form.
* dynamic: ``DynamicQuantizeLinear(x) -> MatMulInteger(xq, Wq, x_zp[, w_zp]) -> Cast ->
  Mul(x_scale * w_scale) [-> Add bias]`` (fused to DynamicQuantizeMatMul, bias included).
* static: ``QuantizeLinear -> DequantizeLinear`` on the activation input (uint8, calibrated
  range), ``DequantizeLinear`` on the int8 weight, int32 bias ``DequantizeLinear`` (scale
  x_scale * w_scale) for Conv/Gemm, and Q/DQ on Conv outputs; onnxruntime fuses these into
  QLinearConv, QGemm and MatMulIntegerToFloat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

from onnxzip import model as M
from onnxzip.kernels.prune import relative_error
from onnxzip.kernels.gptq import gptq_linear
from onnxzip.kernels.quant import dequantize_linear, quantize_linear, sqnr_db
from onnxzip.passes._quant_graph import Calibrated, Edits, attr, int_tensor, reader_counts, tensor, unfused_dequantize_inputs
from onnxzip.passes.base import TensorStat, WeightRef

if TYPE_CHECKING:  # pragma: no cover
    from onnxzip.calibrate import TensorRange
    from onnxzip.passes.quantize import QuantizeConfig

FLOAT = onnx.TensorProto.FLOAT
INT32_MAX = 2**31 - 1

# Ops with a quantized CPU kernel in onnxruntime reachable from QDQ (static) or
# MatMulInteger (dynamic).
STATIC_OPS = ("MatMul", "Gemm", "Conv")
DYNAMIC_OPS = ("MatMul", "Gemm")


def channel_axis(node: onnx.NodeProto, ndim: int) -> int | None:
    """Output-channel axis of the weight (one scale per output channel)."""
    op = node.op_type
    if ndim < 2:
        return None
    if op == "MatMul":
        return ndim - 1
    if op == "Gemm":
        return 0 if attr(node, "transB", 0) else 1
    if op == "ConvTranspose":
        return 1 if attr(node, "group", 1) == 1 else 0
    return 0  # Conv, Gather (one scale per row)


def reduction_axis(node: onnx.NodeProto, ndim: int) -> int | None:
    """Axis that blocks run along (the dot-product axis)."""
    op = node.op_type
    if ndim < 2:
        return None
    if op == "MatMul":
        return ndim - 2
    if op == "Gemm":
        return 1 if attr(node, "transB", 0) else 0
    if op == "ConvTranspose":
        return 0
    if op == "Gather":
        return ndim - 1
    return 1  # Conv: input channels


def required_opset(cfg: "QuantizeConfig", node: onnx.NodeProto) -> int:
    """Default-domain opset the representation of this node needs."""
    if cfg.method == "kmeans":
        return 11 if cfg.outliers > 0 else 1
    if cfg.bits <= 4 or cfg.granularity == "block":
        return 21  # INT4/UINT4 tensors and blocked DequantizeLinear
    if cfg.activations == "dynamic" and node.op_type in DYNAMIC_OPS:
        return 11  # DynamicQuantizeLinear
    return 13  # per-axis DequantizeLinear


@dataclass
class _Q:
    """One quantized weight: codes, parameters and where they apply."""

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    block: int | None
    w: np.ndarray  # the float weight in the layout quantized

    def dequant(self) -> np.ndarray:
        return dequantize_linear(self.q, self.scale, self.zero_point, self.axis, self.block)


@dataclass
class _Fusable:
    """A weight-only DequantizeLinear meant for onnxruntime's MatMulNBits fusion."""

    scope: M.Scope
    out: str
    qz: _Q
    cfg: "QuantizeConfig"
    container: int
    tensors: list[onnx.TensorProto]
    stat: TensorStat


class LinearRewriter:
    """Plans and records the rewrites of one quantize pass run (method linear)."""

    def __init__(self, model: onnx.ModelProto, names: M.NameGen, edits: Edits, ranges: dict[str, "TensorRange"] | None,
                 static_inputs: set[tuple[str, str]] | None = None, calibrated: "Calibrated | None" = None):
        self.model = model
        self.readers = reader_counts(model)  # of the model as given: original names only
        self.static_inputs = static_inputs or set()
        self.names = names
        self.edits = edits
        self.ranges = ranges or {}
        self.stats: list[TensorStat] = []
        self.replaced: list[tuple[M.Scope, str]] = []
        self.notes: set[str] = set()
        self.warnings: set[str] = set()
        self._dql: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._act_dq: dict[tuple[str, str], str] = {}
        self._fusable: list[_Fusable] = []
        self.calibrated = calibrated
        self._ref: WeightRef | None = None

    # ----------------------------------------------------------------- dispatch

    def rewrite(self, ref: WeightRef, cfg: "QuantizeConfig") -> None:
        self._ref = ref
        w = ref.array()
        mode = cfg.activations
        why = ""
        if mode == "dynamic":
            why = self._dynamic_blocker(ref, w)
            if not why:
                return self._dynamic(ref, cfg, w)
        elif mode == "static":
            why = self._static_blocker(ref, w)
            if not why:
                return self._static(ref, cfg, w)
        self._weight_only(ref, cfg, w, fallback=why)

    def _dynamic_blocker(self, ref: WeightRef, w: np.ndarray) -> str:
        node = ref.node
        if node.op_type not in DYNAMIC_OPS:
            if node.op_type == "Conv":
                return "Conv compute stays float in dynamic mode (ConvInteger is slower than float Conv on onnxruntime CPU)"
            return f"onnxruntime has no dynamically quantized `{node.op_type}`"
        return self._int8_matmul_blocker(ref, w)

    def _int8_matmul_blocker(self, ref: WeightRef, w: np.ndarray) -> str:
        node = ref.node
        if w.ndim != 2:
            return f"weight has rank {w.ndim}; integer MatMul kernels need a 2-D weight"
        if node.op_type == "MatMul" and ref.input_index != 1:
            return "weight is the MatMul's first input"
        if node.op_type == "Gemm" and attr(node, "transA", 0):
            return "Gemm with transA=1"
        if self.readers.get(ref.name, 0) > 1:
            return "weight is shared by several nodes"
        return ""

    def _static_blocker(self, ref: WeightRef, w: np.ndarray) -> str:
        node = ref.node
        if ref.scope.path:
            return "node is inside a subgraph; its activations cannot be calibrated"
        if node.op_type not in STATIC_OPS:
            return f"onnxruntime has no quantized CPU kernel for `{node.op_type}`"
        if node.op_type == "Conv":
            if w.ndim < 3:
                return "Conv weight of rank < 3"
        elif node.op_type == "MatMul" and (w.ndim != 2 or ref.input_index != 1):
            return "QLinearMatMul needs a 2-D weight as the second input"
        if node.input[0] not in self.ranges:
            return f"no calibrated range for activation `{node.input[0]}`"
        return ""

    # ----------------------------------------------------------------- helpers

    def _quantize(self, w: np.ndarray, cfg: "QuantizeConfig", axis: int | None, block: int | None, oa: int | None = None) -> _Q:
        """Quantize ``w`` (output-channel axis ``oa``) with scales along ``axis`` / ``block``:
        rounding, or GPTQ when the weight has statistics; then the data-aware bookkeeping
        (output error, bias correction) before any node is planned."""
        ref = self._ref
        layer = self.calibrated.gptq_layer(ref, cfg) if (self.calibrated and ref is not None and oa is not None) else None
        if layer is not None:
            qz = self._gptq(layer, w, cfg, axis, block, oa)
        else:
            q, s, z = quantize_linear(w, cfg.bits, cfg.symmetric, axis=axis, block_size=block, clip=cfg.clip)
            qz = _Q(q, s, z, axis, block, w)
        if self.calibrated and ref is not None and oa is not None:
            self.calibrated.finish(ref, cfg, w, qz.dequant(), oa)
        return qz

    def _gptq(self, layer, w: np.ndarray, cfg: "QuantizeConfig", axis: int | None, block: int | None, oa: int) -> _Q:
        """GPTQ in the layer's [out, in] view, with the parameter layout quantize_linear
        gives for (axis, block): each (output row, parameter group) has its own scale."""
        w2d = layer.to2d(w, oa).astype(np.float64)
        r, k = w2d.shape
        if axis is None:  # one scale for the tensor: fixed up front
            _, s0, z0 = quantize_linear(w, cfg.bits, cfg.symmetric, clip=cfg.clip)
            col_group = np.zeros(k, dtype=np.intp)
            fixed = (np.full((r, 1), float(s0)), np.full((r, 1), float(z0)))
            pidx = None
        else:
            pshape = list(w.shape)
            if block is None:
                pshape = [w.shape[axis]]
                bshape = [1] * w.ndim
                bshape[axis] = w.shape[axis]
                expanded = np.broadcast_to(np.arange(w.shape[axis]).reshape(bshape), w.shape)
            else:
                pshape[axis] = -(-w.shape[axis] // block)
                p = np.arange(int(np.prod(pshape))).reshape(pshape)
                expanded = np.take(np.repeat(p, block, axis=axis), np.arange(w.shape[axis]), axis=axis)
            e2d = layer.to2d(expanded, oa)
            _, first, col_group = np.unique(e2d[0], return_index=True, return_inverse=True)
            pidx = e2d[:, first]  # [R, G]: the flat parameter index of (row, group)
            if not np.array_equal(e2d, pidx[:, col_group]):  # pragma: no cover - layouts above always agree
                raise AssertionError("parameter groups differ between rows")
            fixed = None
        q2d = np.empty((r, k), dtype=np.int8 if cfg.symmetric else np.uint8)
        g_count = int(col_group.max()) + 1
        s2d = np.empty((r, g_count), dtype=np.float32)
        z2d = np.empty((r, g_count), dtype=q2d.dtype)
        for sl, g in layer.rows(r):
            q2d[sl], s2d[sl], z2d[sl], _ = gptq_linear(
                w2d[sl], layer.hessian(g), cfg.bits, cfg.symmetric, col_group,
                params=None if fixed is None else (fixed[0][sl], fixed[1][sl]),
                clip=cfg.clip, percdamp=cfg.percdamp, act_order=cfg.act_order, lazy_batch=cfg.lazy_batch,
            )
        q = np.ascontiguousarray(layer.from2d(q2d, w.shape, oa))
        if pidx is None:
            scale = np.array(s2d[0, 0], dtype=np.float32)
            zp = np.array(z2d[0, 0], dtype=q2d.dtype)
        else:
            scale = np.empty(int(np.prod(pshape)), dtype=np.float32)
            zp = np.empty(int(np.prod(pshape)), dtype=q2d.dtype)
            scale[pidx.reshape(-1)] = s2d.reshape(-1)
            zp[pidx.reshape(-1)] = z2d.reshape(-1)
            scale, zp = scale.reshape(pshape), zp.reshape(pshape)
        return _Q(q, scale, zp, axis, block, w)

    def _layout(self, node: onnx.NodeProto, ndim: int, cfg: "QuantizeConfig") -> tuple[int | None, int | None]:
        if cfg.granularity == "per_tensor" or ndim < 2:
            return None, None
        if cfg.granularity == "per_channel":
            return channel_axis(node, ndim), None
        return reduction_axis(node, ndim), cfg.block

    def _stat(self, ref: WeightRef, cfg: "QuantizeConfig", qz: _Q, new: list[onnx.TensorProto], mode: str, extra: dict | None = None) -> None:
        w, w_hat = qz.w, qz.dequant()
        s = np.asarray(qz.scale, dtype=np.float64)
        info = {
            "method": "linear",
            "mode": mode,
            "granularity": "per_tensor" if qz.axis is None else ("block" if qz.block else "per_channel"),
            "axis": qz.axis,
            "block_size": qz.block,
            "symmetric": cfg.symmetric,
            "clip": cfg.clip,
            "scale_min": float(s.min()),
            "scale_max": float(s.max()),
            "scales": int(s.size),
            "sqnr_db": round(sqnr_db(w, w_hat), 3),
            "sparsity_before": float(np.mean(w == 0)) if w.size else 0.0,
        }
        if extra:
            info.update(extra)
        if self.calibrated is not None:
            info.update(self.calibrated.info(ref.name))
        info = {k: v for k, v in info.items() if v is not None}
        self.stats.append(
            TensorStat(
                name=ref.name, node=ref.node.name, op=ref.node.op_type,
                bytes_before=M.tensor_nbytes(ref.tensor), bytes_after=sum(M.tensor_nbytes(t) for t in new),
                params_before=int(w.size), params_after=int(w.size),
                sparsity=float(np.mean(w_hat == 0)) if w_hat.size else 0.0,
                bits=cfg.bits, rel_error=relative_error(w, w_hat), extra=info,
            )
        )

    def _param_tensors(self, base: str, qz: _Q, cfg: "QuantizeConfig", container: int, zero_point: bool = False) -> tuple[list[onnx.TensorProto], list[str]]:
        """Initializers q, scale[, zero_point] and the DequantizeLinear inputs naming them."""
        qt = int_tensor(qz.q, self.names(base + "_quantized"), container)
        st = tensor(qz.scale.astype(np.float32), self.names(base + "_scale"))
        tensors, inputs = [qt, st], [qt.name, st.name]
        if zero_point or not cfg.symmetric:
            zt = int_tensor(qz.zero_point, self.names(base + "_zero_point"), container)
            tensors.append(zt)
            inputs.append(zt.name)
        return tensors, inputs

    def _dq_node(self, inputs: list[str], out: str, qz: _Q) -> onnx.NodeProto:
        kw = {}
        if qz.axis is not None:
            kw["axis"] = qz.axis
        if qz.block:
            kw["block_size"] = qz.block
        return helper.make_node("DequantizeLinear", inputs, [out], name=self.names(out + "_dequantize"), **kw)

    def _bcast(self, p: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
        if axis is None:
            return p.reshape(())
        shape = [1] * ndim
        shape[axis] = p.size
        return p.reshape(shape)

    # ----------------------------------------------------------------- weight-only

    def _weight_only(self, ref: WeightRef, cfg: "QuantizeConfig", w: np.ndarray, fallback: str = "") -> None:
        node = ref.node
        container = 4 if cfg.bits <= 4 else 8
        owner = self.edits.of(ref.owner)
        if node.op_type == "MatMul" and w.ndim == 2 and ref.input_index == 1:
            form = "dq"
        elif node.op_type == "Gemm" and w.ndim == 2 and not attr(node, "transA", 0) and self.readers.get(ref.name, 0) == 1:
            form = "gemm"
        else:
            form = "cast"
        if form == "gemm":
            w_eff = np.ascontiguousarray(w.T) if attr(node, "transB", 0) else w
            axis, block = {"per_tensor": (None, None), "per_channel": (1, None), "block": (0, cfg.block)}[cfg.granularity]
        else:
            w_eff = w
            axis, block = self._layout(node, w.ndim, cfg)
        qz = self._quantize(w_eff, cfg, axis, block, 1 if form == "gemm" else channel_axis(node, w.ndim))
        extra: dict = {"fallback": fallback} if fallback else {}
        if form == "cast":
            nodes, tensors = self._cast_decoder(ref.name, qz, cfg, container, ref.name)
            owner.head.extend(nodes)
            extra["representation"] = "Cast+Mul (folded when the session starts)"
        else:
            tensors, inputs = self._param_tensors(ref.name, qz, cfg, container)
            out = ref.name if form == "dq" else self.names(ref.name + "_dequantized")
            owner.head.append(self._dq_node(inputs, out, qz))
            if form == "gemm":
                self._gemm_as_matmul(ref, out)
                extra["rewritten_as"] = "MatMul"
            extra["representation"] = "DequantizeLinear (onnxruntime: MatMulNBits)"
        owner.inits.extend(tensors)
        if form == "gemm":
            self.replaced.append((ref.owner, ref.name))
        else:
            M.remove_initializer(ref.owner.graph, ref.name)  # the decoder now produces this name
        self._stat(ref, cfg, qz, tensors, "weight-only", extra)
        if form != "cast":
            self._fusable.append(_Fusable(ref.owner, out, qz, cfg, container, tensors, self.stats[-1]))

    def _cast_decoder(self, base: str, qz: _Q, cfg: "QuantizeConfig", container: int, out: str, q_name: str | None = None):
        """``Cast(q) [-> Sub(zero_point)] -> Mul(scale)`` producing ``out``; blocks are
        handled by reshaping the block axis into (blocks, block_size), padding a short last
        block. Returns (nodes, new initializers); ``q_name`` reuses an existing q tensor."""
        q, nd = qz.q, qz.q.ndim
        tensors: list[onnx.TensorProto] = []
        if q_name is None:
            qt = int_tensor(q, self.names(base + "_quantized"), container)
            tensors.append(qt)
            q_name = qt.name
        nodes: list[onnx.NodeProto] = []

        def node(op: str, inputs: list[str], suffix: str, out_name: str | None = None, **kw) -> str:
            o = out_name or self.names(f"{base}_{suffix}")
            nodes.append(helper.make_node(op, inputs, [o], name=self.names(f"{base}_{suffix}_node"), **kw))
            return o

        def const(a: np.ndarray, suffix: str) -> str:
            t = tensor(a, self.names(f"{base}_{suffix}"))
            tensors.append(t)
            return t.name

        def zero_point(z: np.ndarray) -> str:
            # stored in q's integer type (as small as q's own scale overhead), cast at load
            t = int_tensor(z, self.names(f"{base}_zero_point"), container)
            tensors.append(t)
            return node("Cast", [t.name], "zero_point_cast", to=FLOAT)

        cur = node("Cast", [q_name], "cast", to=FLOAT)
        scale = qz.scale.astype(np.float32)
        if qz.block is None:
            if not cfg.symmetric:
                cur = node("Sub", [cur, zero_point(self._bcast(qz.zero_point, nd, qz.axis))], "centered")
            node("Mul", [cur, const(self._bcast(scale, nd, qz.axis), "scale")], "rescale", out_name=out)
            return nodes, tensors
        a, b, shape = qz.axis, qz.block, list(q.shape)
        nb = -(-shape[a] // b)
        padded = shape[:a] + [nb * b] + shape[a + 1:]
        if nb * b != shape[a]:
            pads = np.zeros(2 * nd, dtype=np.int64)
            pads[nd + a] = nb * b - shape[a]
            cur = node("Pad", [cur, const(pads, "pads")], "padded")
        split = shape[:a] + [nb, b] + shape[a + 1:]
        cur = node("Reshape", [cur, const(np.array(split, dtype=np.int64), "blocks_shape")], "blocks")
        pshape = shape[:a] + [nb, 1] + shape[a + 1:]
        if not cfg.symmetric:
            cur = node("Sub", [cur, zero_point(qz.zero_point.reshape(pshape))], "centered")
        cur = node("Mul", [cur, const(scale.reshape(pshape), "scale")], "rescale")
        if nb * b == shape[a]:
            node("Reshape", [cur, const(np.array(shape, dtype=np.int64), "shape")], "unblocked", out_name=out)
        else:
            cur = node("Reshape", [cur, const(np.array(padded, dtype=np.int64), "padded_shape")], "unblocked")
            node(
                "Slice", [cur, const(np.array([0], dtype=np.int64), "starts"), const(np.array([shape[a]], dtype=np.int64), "ends"),
                          const(np.array([a], dtype=np.int64), "axes")], "sliced", out_name=out,
            )
        return nodes, tensors

    def finalize(self) -> None:
        """After the edits: any DequantizeLinear onnxruntime did not fuse (it would run at
        every inference) becomes the folded Cast form."""
        if not self._fusable:
            return
        left = unfused_dequantize_inputs(self.model)
        if not left:
            return
        for f in self._fusable:
            q_name = f.tensors[0].name
            if q_name not in left:
                continue
            g = f.scope.graph
            keep = [n for n in g.node if not (n.op_type == "DequantizeLinear" and n.output[0] == f.out)]
            del g.node[:]
            nodes, tensors = self._cast_decoder(f.out, f.qz, f.cfg, f.container, f.out, q_name=q_name)
            g.node.extend(nodes + keep)
            for t in f.tensors[1:]:
                M.remove_initializer(g, t.name)
            g.initializer.extend(tensors)
            f.stat.bytes_after = sum(M.tensor_nbytes(t) for t in [f.tensors[0]] + tensors)
            f.stat.extra["representation"] = "Cast+Mul (folded when the session starts)"
            self.notes.add(
                "weight-only: DequantizeLinear weights onnxruntime does not fuse into MatMulNBits (e.g. MatMul+Add+Relu "
                "chains it turns into FusedGemm first) are stored in the folded Cast form"
            )

    def _gemm_as_matmul(self, ref: WeightRef, w_name: str) -> None:
        """Gemm(A, B, C) -> MatMul(A, B') [* alpha] [+ beta * C], B' = B or B^T (already
        folded into ``w_name``)."""
        node, g = ref.node, self.edits.of(ref.scope)
        y = node.output[0]
        alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
        c = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        base = node.name or y
        mm_out = y if (alpha == 1.0 and not c) else self.names(y + "_matmul")
        nodes = [helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=self.names(base + "_matmul"))]
        cur = mm_out
        if alpha != 1.0:
            a = g.add_init(tensor(np.array(alpha, dtype=np.float32), self.names(base + "_alpha")))
            nxt = y if not c else self.names(y + "_scaled")
            nodes.append(helper.make_node("Mul", [cur, a], [nxt], name=self.names(base + "_alpha_mul")))
            cur = nxt
        if c:
            if beta != 1.0:
                found = ref.scope.lookup_initializer(c)
                if found is not None and found[1].data_type == FLOAT:
                    c = g.add_init(tensor(M.to_array(found[1]) * np.float32(beta), self.names(c + "_beta")))
                    self.replaced.append((found[0], found[1].name))
                else:
                    b = g.add_init(tensor(np.array(beta, dtype=np.float32), self.names(base + "_beta")))
                    cb = self.names(c + "_beta")
                    nodes.append(helper.make_node("Mul", [c, b], [cb], name=self.names(base + "_beta_mul")))
                    c = cb
            nodes.append(helper.make_node("Add", [cur, c], [y], name=self.names(base + "_bias")))
        g.replace[y] = nodes

    # ----------------------------------------------------------------- dynamic

    def _dynamic(self, ref: WeightRef, cfg: "QuantizeConfig", w: np.ndarray) -> None:
        node, g = ref.node, self.edits.of(ref.scope)
        transposed = node.op_type == "Gemm" and attr(node, "transB", 0)
        w_eff = np.ascontiguousarray(w.T) if transposed else w  # [K, N]
        axis = 1 if cfg.granularity == "per_channel" else None
        qz = self._quantize(w_eff, cfg, axis, None, 1)
        x, y = node.input[0], node.output[0]
        base = node.name or y
        key = (ref.scope.path, x)
        if key not in self._dql:
            xq, xs, xz = (self.names(f"{x}_{s}") for s in ("quantized", "scale", "zero_point"))
            g.before.setdefault(y, []).append(
                helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xz], name=self.names(x + "_dynamic_quantize"))
            )
            self._dql[key] = (xq, xs, xz)
        xq, xs, xz = self._dql[key]
        alpha = float(attr(node, "alpha", 1.0)) if node.op_type == "Gemm" else 1.0
        qt = tensor(qz.q, self.names(ref.name + "_quantized"))
        st = tensor((qz.scale * np.float32(alpha)).astype(np.float32), self.names(ref.name + "_scale"))
        tensors = [qt, st]
        mmi_in = [xq, qt.name, xz]
        if not cfg.symmetric:
            zt = tensor(qz.zero_point, self.names(ref.name + "_zero_point"))
            tensors.append(zt)
            mmi_in.append(zt.name)
        g.inits.extend(tensors)
        yi, yf, sc = (self.names(f"{y}_{s}") for s in ("int32", "float", "rescale"))
        c = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else ""
        y_mm = self.names(y + "_matmul") if c else y
        nodes = [
            helper.make_node("MatMulInteger", mmi_in, [yi], name=self.names(base + "_matmul_integer")),
            helper.make_node("Cast", [yi], [yf], name=self.names(base + "_cast"), to=FLOAT),
            helper.make_node("Mul", [xs, st.name], [sc], name=self.names(base + "_scale_mul")),
            helper.make_node("Mul", [yf, sc], [y_mm], name=self.names(base + "_rescale")),
        ]
        if c:
            beta = float(attr(node, "beta", 1.0))
            if beta != 1.0:
                b = g.add_init(tensor(np.array(beta, dtype=np.float32), self.names(base + "_beta")))
                cb = self.names(c + "_beta")
                nodes.append(helper.make_node("Mul", [c, b], [cb], name=self.names(base + "_beta_mul")))
                c = cb
            nodes.append(helper.make_node("Add", [y_mm, c], [y], name=self.names(base + "_bias")))
        g.replace[y] = nodes
        self.replaced.append((ref.owner, ref.name))
        self.notes.add(
            "dynamic: MatMul/Gemm run as DynamicQuantizeLinear + MatMulInteger (onnxruntime fuses them into DynamicQuantizeMatMul)"
        )
        self._stat(ref, cfg, qz, tensors, "dynamic", {"rewritten_as": "MatMulInteger"} if node.op_type == "Gemm" else None)

    # ----------------------------------------------------------------- static

    def _act_params(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        r = self.ranges[name]
        _, s, z = quantize_linear(np.array([r.lo, r.hi], dtype=np.float32), 8, symmetric=False)
        return s.astype(np.float32), z.astype(np.uint8)

    def _act_qdq(self, scope: M.Scope, x: str, anchor: str) -> tuple[str, np.ndarray]:
        """The dequantized name of activation ``x`` (Q/DQ inserted once per tensor)."""
        key = (scope.path, x)
        s, z = self._act_params(x)
        if key in self._act_dq:
            return self._act_dq[key], s
        g = self.edits.of(scope)
        st = g.add_init(tensor(s, self.names(x + "_scale")))
        zt = g.add_init(tensor(z, self.names(x + "_zero_point")))
        xq, xd = self.names(x + "_quantized"), self.names(x + "_dequantized")
        g.before.setdefault(anchor, []).extend([
            helper.make_node("QuantizeLinear", [x, st, zt], [xq], name=self.names(x + "_quantize")),
            helper.make_node("DequantizeLinear", [xq, st, zt], [xd], name=self.names(x + "_dequantize")),
        ])
        self._act_dq[key] = xd
        return xd, s

    def _static(self, ref: WeightRef, cfg: "QuantizeConfig", w: np.ndarray) -> None:
        node, g, owner = ref.node, self.edits.of(ref.scope), self.edits.of(ref.owner)
        axis = channel_axis(node, w.ndim) if cfg.granularity == "per_channel" else None
        qz = self._quantize(w, cfg, axis, None, channel_axis(node, w.ndim))
        y = node.output[0]  # after _quantize: bias correction may have renamed it
        tensors, inputs = self._param_tensors(ref.name, qz, cfg, 8, zero_point=True)
        owner.head.append(self._dq_node(inputs, ref.name, qz))
        owner.inits.extend(tensors)
        M.remove_initializer(ref.owner.graph, ref.name)

        x = node.input[0]
        xd, xs = self._act_qdq(ref.scope, x, y)
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.input[0] = xd
        extra: dict = {"activation": x, "activation_range": [self.ranges[x].lo, self.ranges[x].hi]}
        # int32 bias with scale x_scale * w_scale: what QLinearConv / QGemm consume.
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
            found = ref.scope.lookup_initializer(node.input[2])
            n_out = w.shape[channel_axis(node, w.ndim) or 0]
            if found is not None and found[1].data_type == FLOAT and M.numel(found[1]) == n_out and len(found[1].dims) == 1:
                b = M.to_array(found[1]).astype(np.float64) * float(attr(node, "beta", 1.0))
                bs = (xs * qz.scale).astype(np.float32).reshape(-1)
                if bs.size == 1:
                    bs = np.full(n_out, bs[0], dtype=np.float32)
                bq = np.clip(np.rint(b / bs.astype(np.float64)), -INT32_MAX, INT32_MAX).astype(np.int32)
                bqt = g.add_init(tensor(bq, self.names(node.input[2] + "_quantized")))
                bst = g.add_init(tensor(bs, self.names(node.input[2] + "_scale")))
                bd = self.names(node.input[2] + "_dequantized")
                g.before.setdefault(y, []).append(
                    helper.make_node("DequantizeLinear", [bqt, bst], [bd], name=self.names(bd + "_node"), axis=0)
                )
                new.input[2] = bd
                if node.op_type == "Gemm":
                    for a in new.attribute:
                        if a.name == "beta":
                            a.f = 1.0
                self.replaced.append((found[0], found[1].name))
                extra["bias"] = "int32"
            else:
                self.warnings.add(f"`{node.name}`: bias is not a constant 1-D float tensor; kept float (onnxruntime will not fuse the node)")
        if node.op_type == "Conv":
            # QLinearConv needs a quantized output. Where the Conv (through Relus, which
            # onnxruntime folds into the output range) feeds another statically quantized
            # node, that node's input Q provides it; elsewhere add Q/DQ at the chain's end.
            end, last = conv_output_end(ref.scope.graph, node)
            if any(n.op_type == "BatchNormalization" for n in ref.scope.graph.node if end in n.input):
                self.warnings.add(
                    "static Conv feeding BatchNormalization: fold the BatchNormalization into the Conv first "
                    "(the `simplify` pass), else it runs in float between dequantize and quantize"
                )
            if (ref.scope.path, end) in self.static_inputs:
                extra["output"] = f"quantized by the input of the next node (`{end}`)"
            elif end in self.ranges:
                ys, yz = self._act_params(end)
                yst = g.add_init(tensor(ys, self.names(end + "_scale")))
                yzt = g.add_init(tensor(yz, self.names(end + "_zero_point")))
                yf, yq = self.names(end + "_float"), self.names(end + "_quantized")
                if last is node:
                    new.output[0] = yf
                else:
                    relu = onnx.NodeProto()
                    relu.CopyFrom(last)
                    relu.output[0] = yf
                    g.replace[end] = [relu]
                g.after.setdefault(end, []).extend([
                    helper.make_node("QuantizeLinear", [yf, yst, yzt], [yq], name=self.names(end + "_quantize")),
                    helper.make_node("DequantizeLinear", [yq, yst, yzt], [end], name=self.names(end + "_dequantize")),
                ])
                self._act_dq[(ref.scope.path, end)] = end  # consumers reuse this Q/DQ pair
                extra["output_range"] = [self.ranges[end].lo, self.ranges[end].hi]
            else:
                self.warnings.add(f"`{node.name}`: no calibrated range for the Conv output; QLinearConv will not be used")
        g.replace[y] = [new]
        self.notes.add("static: QuantizeLinear/DequantizeLinear on activations (uint8) and int8 weights, for onnxruntime's QLinearConv / QGemm / MatMulIntegerToFloat")
        self._stat(ref, cfg, qz, tensors, "static", extra)


def static_tensors(refs: list[tuple[WeightRef, "QuantizeConfig"]]) -> list[str]:
    """Activation tensors a static run needs ranges for: targeted nodes' inputs, Conv outputs."""
    names: list[str] = []
    for ref, cfg in refs:
        if cfg.method != "linear" or cfg.activations != "static" or ref.scope.path:
            continue
        node = ref.node
        if node.op_type not in STATIC_OPS:
            continue
        names.append(node.input[0])
        if node.op_type == "Conv":
            names.append(conv_output_end(ref.scope.graph, node)[0])
    return list(dict.fromkeys(names))


def static_inputs(refs: list[tuple[WeightRef, "QuantizeConfig"]]) -> set[tuple[str, str]]:
    """(graph path, tensor) of every activation a static run puts Q/DQ on."""
    return {
        (ref.scope.path, ref.node.input[0]) for ref, cfg in refs
        if cfg.method == "linear" and cfg.activations == "static" and not ref.scope.path and ref.node.op_type in STATIC_OPS
    }


def conv_output_end(graph: onnx.GraphProto, node: onnx.NodeProto) -> tuple[str, onnx.NodeProto]:
    """The tensor at the end of the Relu chain after ``node`` (each link the only reader of
    the previous tensor, not a graph output), and the node producing it."""
    outputs = {o.name for o in graph.output}
    cur, last = node.output[0], node
    while cur not in outputs:
        readers = M.consumers(graph, cur)
        if len(readers) != 1 or readers[0].op_type != "Relu" or (readers[0].domain or "") not in ("", "ai.onnx"):
            break
        last = readers[0]
        cur = last.output[0]
    return cur, last
