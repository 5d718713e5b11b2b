"""k-means weight sharing rewrite for the quantize pass (private).

W ~= codebook[indices], written as::

    indices (uint8, W's shape) -> Cast(to=INT32) [-> Add(channel offset)] -> Gather(codebook)
        [-> Reshape(-1) -> ScatterElements(outlier positions, exact values) -> Reshape(W's shape)]

Per-channel codebooks are stored flat ([C * K]); a constant int32 offset c * K (shaped to
broadcast along the channel axis) turns each channel's indices into flat positions.
Outlier positions are int32 flat indices when the tensor has fewer than 2^31 elements.
onnxruntime constant-folds the whole chain when the session starts, so compute is the
float model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

from onnxzip import model as M
from onnxzip.kernels.gptq import gptq_codebook
from onnxzip.kernels.kmeans import kmeans_dequantize, kmeans_quantize
from onnxzip.kernels.prune import relative_error
from onnxzip.kernels.quant import sqnr_db
from onnxzip.passes._quant_graph import Calibrated, Edits, tensor
from onnxzip.passes._quant_linear import channel_axis
from onnxzip.passes.base import TensorStat, WeightRef

if TYPE_CHECKING:  # pragma: no cover
    from onnxzip.passes.quantize import QuantizeConfig


def kmeans_rewrite(
    ref: WeightRef, cfg: "QuantizeConfig", seed: int, names: M.NameGen, edits: Edits, calibrated: Calibrated | None = None
) -> TensorStat:
    """Replace ``ref``'s weight by its k-means decoder (output keeps the weight's name).

    With ``algorithm: gptq`` and statistics, the codebook is fitted as usual and the codes
    are then assigned by GPTQ (exact zeros stay code 0, outliers stay exact)."""
    w = ref.array().astype(np.float32, copy=False)
    axis = channel_axis(ref.node, w.ndim) if cfg.per_channel else None
    has_zero = bool((w == 0).any())
    idx, cb, (o_idx, o_val) = kmeans_quantize(
        w, cfg.bits, keep_zero=has_zero, per_channel_axis=axis, seed=seed, init=cfg.init, outliers=cfg.outliers
    )
    layer = calibrated.gptq_layer(ref, cfg) if calibrated is not None else None
    if layer is not None:
        idx, o_val = _gptq_codes(layer, w, cb, axis, has_zero, o_idx, cfg)
    base = ref.name
    owner = edits.of(ref.owner)
    tensors: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(a: np.ndarray, suffix: str) -> str:
        t = tensor(a, names(base + suffix))
        tensors.append(t)
        return t.name

    idx_name = init(idx.astype(np.uint8), "_codes")
    cur = names(base + "_codes_int32")
    nodes.append(helper.make_node("Cast", [idx_name], [cur], name=names(base + "_codes_cast"), to=onnx.TensorProto.INT32))
    if axis is not None:
        k = cb.shape[1]
        shape = [1] * w.ndim
        shape[axis] = cb.shape[0]
        off = (np.arange(cb.shape[0], dtype=np.int32) * np.int32(k)).reshape(shape)
        off_name = init(off, "_codebook_offsets")
        flat = names(base + "_codes_flat")
        nodes.append(helper.make_node("Add", [cur, off_name], [flat], name=names(base + "_codes_offset")))
        cur = flat
        cb_name = init(cb.reshape(-1).astype(np.float32), "_codebook")
    else:
        cb_name = init(cb.astype(np.float32), "_codebook")
    has_out = o_idx.size > 0
    gathered = names(base + "_gathered") if has_out else base
    nodes.append(helper.make_node("Gather", [cb_name, cur], [gathered], name=names(base + "_decode"), axis=0))
    if has_out:
        itype = np.int32 if w.size < 2**31 else np.int64
        oi = init(o_idx.astype(itype), "_outlier_index")
        ov = init(o_val.astype(np.float32), "_outlier_value")
        flat_shape = init(np.array([-1], dtype=np.int64), "_flat_shape")
        w_shape = init(np.array(w.shape, dtype=np.int64), "_shape")
        gf, gs = names(base + "_gathered_flat"), names(base + "_patched_flat")
        nodes += [
            helper.make_node("Reshape", [gathered, flat_shape], [gf], name=names(base + "_flatten")),
            helper.make_node("ScatterElements", [gf, oi, ov], [gs], name=names(base + "_outliers"), axis=0),
            helper.make_node("Reshape", [gs, w_shape], [base], name=names(base + "_unflatten")),
        ]
    M.remove_initializer(ref.owner.graph, ref.name)
    owner.head.extend(nodes)
    owner.inits.extend(tensors)

    w_hat = kmeans_dequantize(idx, cb, axis, (o_idx, o_val) if has_out else None)
    info: dict = {}
    if calibrated is not None:
        calibrated.finish(ref, cfg, w, w_hat, channel_axis(ref.node, w.ndim) or 0)
        info = calibrated.info(ref.name)
    return TensorStat(
        name=ref.name, node=ref.node.name, op=ref.node.op_type,
        bytes_before=M.tensor_nbytes(ref.tensor), bytes_after=sum(M.tensor_nbytes(t) for t in tensors),
        params_before=int(w.size), params_after=int(w.size),
        sparsity=float(np.mean(w_hat == 0)) if w.size else 0.0,
        bits=cfg.bits, rel_error=relative_error(w, w_hat),
        extra={
            "method": "kmeans",
            "codebooks": int(cb.shape[0]) if axis is not None else 1,
            "codebook_size": int(cb.shape[-1]),
            "zero_code": has_zero,
            "init": cfg.init,
            "centroid_min": float(cb.min()),
            "centroid_max": float(cb.max()),
            "outliers": int(o_idx.size),
            "sqnr_db": round(sqnr_db(w, w_hat), 3),
            "sparsity_before": float(np.mean(w == 0)) if w.size else 0.0,
            **info,
        },
    )


def _gptq_codes(layer, w: np.ndarray, cb: np.ndarray, axis: int | None, has_zero: bool, o_idx: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ assignment of ``w`` to the fitted codebook ``cb``: (uint8 codes in w's shape,
    the outliers' values, exact at their updated weights)."""
    oa = channel_axis(layer.ref.node, w.ndim) or 0
    w2d = layer.to2d(w, oa).astype(np.float64)
    keep = np.zeros(w.size, dtype=bool)
    keep[o_idx] = True
    keep2d = layer.to2d(keep.reshape(w.shape), oa)
    zero2d = (w2d == 0) if has_zero else None
    codes = np.empty(w2d.shape, dtype=np.int64)
    w_hat = np.empty(w2d.shape, dtype=np.float32)
    for sl, g in layer.rows(w2d.shape[0]):
        book = cb if axis is None else cb[sl]
        codes[sl], w_hat[sl] = gptq_codebook(
            w2d[sl], layer.hessian(g), book, zero_code=has_zero,
            zero_mask=None if zero2d is None else zero2d[sl], keep_mask=keep2d[sl] if o_idx.size else None,
            percdamp=cfg.percdamp, act_order=cfg.act_order, lazy_batch=cfg.lazy_batch,
        )
    idx = np.ascontiguousarray(layer.from2d(codes, w.shape, oa).astype(np.uint8))
    o_val = layer.from2d(w_hat, w.shape, oa).reshape(-1)[o_idx].astype(np.float32)
    return idx, o_val
