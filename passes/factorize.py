"""`factorize`: low-rank factorization of dense and convolution weights.

Rewrites:

- ``MatMul(X, W)`` with a constant 2-D ``W[K, N]``: W ~= A[K, r] B[r, N] (truncated SVD,
  singular values split evenly: A = U_r sqrt(S_r), B = sqrt(S_r) V_r^T) becomes
  ``MatMul(MatMul(X, A), B)``.
- ``Gemm(X, W, C; alpha, beta, transA, transB)``: the effective weight alpha * op(W) [K, N]
  is factorized; the first op is ``MatMul(X, A)`` (after a ``Transpose`` when transA=1), the
  second a ``Gemm(mid, B, C; beta)`` keeping the bias (or a ``MatMul`` without bias).
- ``Conv`` (group 1), ``method: svd`` (channel SVD): W[Co, Ci, k...] viewed as [Co, Ci*k...]
  = U S V^T; a k x k conv Ci -> r (the original strides, pads, dilations, auto_pad) followed
  by a 1x1 conv r -> Co carrying the bias.
- ``Conv`` 2-D (group 1), ``method: spatial`` (Jaderberg et al. 2014, scheme 2): W[o, c, y, x]
  ~= sum_k H[o, k, x] V[k, c, y], the truncated SVD of W rearranged as M[(c, y), (o, x)]
  ([Ci*kh, Co*kw]); a kh x 1 conv Ci -> r with the vertical stride/pads/dilation, then a
  1 x kw conv r -> Co with the horizontal ones and the bias. Both factorizations are exact at
  full rank. ``method`` only chooses the Conv scheme: dense weights always use SVD.

Rank: exactly one of ``rank`` (taken as given, capped at full rank), ``rank_ratio`` (the
factors hold at most that share of the parameters) or ``energy`` (smallest r keeping that
share of sum s_i^2); computed ranks are rounded up to a multiple of ``round_to``. A weight
is factorized only when r (K + N) < K N ``max_param_ratio``.

``data_aware: true`` minimizes the layer's output error ||X (W - A B)||_F on calibration
inputs instead of the weight error (weighted SVD on the Gram matrix H = X^T X of each
MatMul/Gemm input, from :mod:`onnxzip.calibrate`'s layer statistics, shared with and cached
for the other data-aware passes of the run); Conv weights and nodes inside subgraphs keep
plain SVD. Without calibration data it falls back to plain SVD with a warning.
``bias_correction: true`` (MatMul/Gemm; needs calibration data) adds E[x](W - A B) to the
layer's bias (the Gemm's C, a following Add's constant, or a new Add).

Preserves: outputs at full rank (to float rounding), output names, biases.
Skips (with the reason): grouped/depthwise convs, weights that are not 2-D (dense),
factorizations that would not save enough parameters, spatial on 1-wide kernels,
ops other than MatMul/Gemm/Conv.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from onnx import helper

from onnxzip import model as M
from onnxzip.errors import RecipeError
from onnxzip.kernels import svd as K
from onnxzip.passes._data_aware import Layer, add_to_bias, gather, require_calibration
from onnxzip.passes.base import (
    ConfigIssue,
    Pass,
    PassResult,
    Skip,
    TargetConfig,
    TensorStat,
    WeightRef,
    no_target_warning,
    opt,
    select_weights,
)

RANK_KEYS = ("rank", "rank_ratio", "energy")
DENSE_OPS = ("MatMul", "Gemm")


@dataclass(frozen=True, kw_only=True)
class FactorizeConfig(TargetConfig):
    method: Literal["svd", "spatial"] = opt(
        "svd",
        "Conv scheme: `svd` (k x k conv to r channels, then 1x1) or `spatial` (k x 1 then 1 x k); dense weights always use SVD",
    )
    rank: int | None = opt(None, "absolute rank r (capped at full rank); exclusive with `rank_ratio` and `energy`", min=1)
    rank_ratio: float | None = opt(
        None, "rank whose factors hold at most this share of the weight's parameters", min=0, min_exclusive=True, max=1
    )
    energy: float | None = opt(
        None, "smallest rank keeping this share of the squared singular values", min=0, min_exclusive=True, max=1
    )
    round_to: int = opt(8, "round computed ranks up to a multiple of this (not applied to `rank`)", min=1, max=4096)
    max_param_ratio: float = opt(
        0.8, "factorize only when the factors hold fewer than this share of the original parameters", min=0, min_exclusive=True
    )
    data_aware: bool = opt(False, "minimize output error on the calibration data (MatMul/Gemm) instead of weight error")
    damp: float = opt(0.01, "data_aware: damping added to the Gram matrix, relative to its mean diagonal", min=0)
    bias_correction: bool = opt(
        False, "MatMul/Gemm: add E[x](W - A B) to the bias so the layer's mean output is kept (needs calibration data)"
    )

    def __post_init__(self) -> None:
        # A per-node override that names a rank key replaces the base's rank choice
        # rather than adding a second, conflicting one.
        fixed = []
        for glob, items in self.overrides:
            keys = {k for k, _ in items}
            if keys & set(RANK_KEYS):
                items = tuple(items) + tuple((k, None) for k in RANK_KEYS if k not in keys)
            fixed.append((glob, items))
        object.__setattr__(self, "overrides", tuple(fixed))

    def check(self) -> None:
        given = [k for k in RANK_KEYS if getattr(self, k) is not None]
        if not given:
            raise ConfigIssue(
                "energy",
                "no rank choice: set one of `rank`, `rank_ratio` or `energy`",
                hint="e.g. `energy: 0.9` keeps 90% of each weight's spectral energy",
            )
        if len(given) > 1:
            raise ConfigIssue(given[1], f"`{given[0]}` and `{given[1]}` are exclusive", hint="set exactly one of `rank`, `rank_ratio`, `energy`")
        for glob, items in self.overrides:
            set_keys = [k for k, v in items if k in RANK_KEYS and v is not None]
            if len(set_keys) > 1:
                raise ConfigIssue(
                    "overrides",
                    f"override `{glob}`: `{set_keys[0]}` and `{set_keys[1]}` are exclusive",
                    hint="set exactly one of `rank`, `rank_ratio`, `energy`",
                )

    DEFAULT_OPS: ClassVar[tuple[str, ...]] = ("MatMul", "Gemm", "Conv")


@dataclass
class _Plan:
    """One rewrite, computed before the graph is touched."""

    ref: WeightRef
    nodes: list[onnx.NodeProto]  # replaces ref.node, in order
    inits: list[onnx.TensorProto]  # added to the node's graph
    stat: TensorStat
    delta: np.ndarray | None = None  # bias correction to add to the final node's output


class FactorizePass(Pass):
    name = "factorize"
    summary = "low-rank factorization: MatMul/Gemm W -> A.B (SVD, optionally data-aware), Conv channel or spatial SVD"
    Config = FactorizeConfig

    def call(self, model: onnx.ModelProto) -> PassResult:
        cfg: FactorizeConfig = self.config  # type: ignore[assignment]
        try:
            cfg.check()
        except ConfigIssue as e:
            raise RecipeError(f"pass `factorize`: key `{e.key}`: {e.message}", hint=e.hint) from None
        variants = [cfg] + [dataclasses.replace(cfg, overrides=(), **dict(i)) for _, i in cfg.overrides if dict(i) and not dict(i).get("skip")]
        if any(c.bias_correction for c in variants):
            require_calibration(self.context, "factorize", "bias_correction", True)
        skipped: list[Skip] = []
        warnings: list[str] = []
        notes: list[str] = []
        refs = list(select_weights(model, cfg, skipped))
        names = M.NameGen(model)

        layers: dict[str, Layer] = {}
        aware = [r for r in refs if (r.config.data_aware or r.config.bias_correction) and r.node.op_type in DENSE_OPS]
        if aware:
            layers, msg, stat_notes = _collect(model, aware, self.context)
            notes.extend(stat_notes)
            if msg:
                warnings.append(msg)
        if any(r.scope.parent is not None for r in aware) and self.context.calibration is not None:
            notes.append("data_aware: nodes inside If/Loop/Scan bodies were factorized with plain SVD")
        if any(r.config.data_aware and r.node.op_type == "Conv" for r in refs):
            notes.append("data_aware covers MatMul/Gemm only: Conv weights were factorized with plain SVD")

        shapes = _known_shapes(model) if any(r.node.op_type == "Conv" for r in refs) else {}
        plans: list[_Plan] = []
        for ref in refs:
            c: FactorizeConfig = ref.config  # type: ignore[assignment]
            op = ref.node.op_type
            if op in DENSE_OPS:
                plan = _plan_dense(ref, c, names, layers.get(ref.name), skipped)
            elif op == "Conv":
                plan = _plan_conv(ref, c, names, shapes, skipped)
            else:
                skipped.append(Skip(ref.name, f"factorize handles MatMul, Gemm and Conv, not `{op}`"))
                plan = None
            if plan is not None:
                plans.append(plan)

        _apply(model, plans)
        for p in plans:
            if p.delta is not None:
                final = next(n for n in p.ref.scope.graph.node if n.output and n.output[0] == p.ref.node.output[0])
                p.stat.extra["bias_correction"] = add_to_bias(model, p.ref.scope, final, p.delta, p.ref.array().dtype, names)
            elif p.ref.config.bias_correction and p.ref.node.op_type in DENSE_OPS:  # type: ignore[attr-defined]
                p.stat.extra["bias_correction"] = "skipped: no statistics for this layer"
        if plans:
            notes.append(
                f"{len(plans)} weights factorized: params {sum(p.stat.params_before for p in plans)} -> "
                f"{sum(p.stat.params_after for p in plans)}"
            )
        if not refs and not skipped:
            warnings.append(no_target_warning(cfg))
        return PassResult(model, bool(plans), tensors=[p.stat for p in plans], skipped=skipped, notes=notes, warnings=warnings)


# --------------------------------------------------------------------------- rank


def _choose_rank(c: FactorizeConfig, shape: tuple[int, int], w2d: np.ndarray | None) -> tuple[int, np.ndarray | None]:
    """The rank for a [K, N] matrix, and its singular values when they had to be computed."""
    max_rank = min(shape)
    if c.rank is not None:
        return min(c.rank, max_rank), None
    if c.rank_ratio is not None:
        return K.round_rank(K.rank_from_ratio(shape, c.rank_ratio), c.round_to, max_rank), None
    s = K.singular_values(w2d)
    return K.round_rank(K.rank_for_energy(s, c.energy), c.round_to, max_rank), s


def _pays(r: int, k: int, n: int, c: FactorizeConfig) -> str | None:
    """None when rank r is worth it for a [k, n] matrix, else the reason it is not."""
    after, before = r * (k + n), k * n
    if after < before * c.max_param_ratio:
        return None
    return (
        f"rank {r} keeps {after} of {before} params ({after / before:.2f}x), "
        f"not below max_param_ratio {c.max_param_ratio:g}"
    )


def _energy_kept(w2d: np.ndarray, a: np.ndarray, b: np.ndarray, s: np.ndarray | None, r: int) -> tuple[float, float]:
    """(share of squared singular values kept, relative Frobenius error of A.B)."""
    w = w2d.astype(np.float64)
    err = w - a.astype(np.float64) @ b.astype(np.float64)
    total = float(np.sum(w * w))
    rel = float(np.sqrt(np.sum(err * err) / total)) if total > 0 else 0.0
    if s is not None:
        sq = np.square(s)
        energy = float(np.sum(sq[:r]) / np.sum(sq)) if np.sum(sq) > 0 else 1.0
    else:  # plain truncated SVD: the residual is exactly the dropped energy
        energy = max(0.0, 1.0 - rel * rel)
    return energy, rel


# --------------------------------------------------------------------------- dense


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _plan_dense(ref: WeightRef, c: FactorizeConfig, names: M.NameGen, layer: Layer | None, skipped: list[Skip]) -> _Plan | None:
    node = ref.node
    w = ref.array()
    if w.ndim != 2:
        skipped.append(Skip(ref.name, f"weight is {w.ndim}-D; factorize handles 2-D MatMul/Gemm weights"))
        return None
    gemm = node.op_type == "Gemm"
    alpha, beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
    trans_a, trans_b = int(_attr(node, "transA", 0)), int(_attr(node, "transB", 0))
    weff = w.T if (gemm and trans_b) else w
    if gemm and alpha != 1.0:
        weff = weff * np.asarray(alpha, dtype=w.dtype)  # alpha X W = X (alpha W)
    k, n = weff.shape
    r, s = _choose_rank(c, (k, n), weff)
    why = _pays(r, k, n, c)
    if why:
        skipped.append(Skip(ref.name, why))
        return None

    x_name = node.input[0]
    gram = layer.hessian(0) if (layer is not None and c.data_aware) else None
    if gram is not None and gram.shape != (k, k):
        gram = None
    if gram is not None:
        a, b = K.weighted_svd(weff, gram, r, damp=c.damp)
        method = "weighted-svd"
    else:
        a, b = K.truncated_svd(weff, r)
        method = "svd"
    a, b = a.astype(w.dtype), b.astype(w.dtype)
    energy: float | None
    energy, rel = _energy_kept(weff, a, b, s, r)
    if method != "svd" and s is None:
        energy = None  # weighted factors keep no prefix of W's spectrum; no residual identity

    g_nodes: list[onnx.NodeProto] = []
    a_name, b_name = names(ref.name + "_lr_a"), names(ref.name + "_lr_b")
    mid = names(node.output[0] + "_lr")
    src = x_name
    if gemm and trans_a:
        src = names(x_name + "_T")
        g_nodes.append(helper.make_node("Transpose", [x_name], [src], name=names(node.name + "_lr_t"), perm=[1, 0]))
    g_nodes.append(helper.make_node("MatMul", [src, a_name], [mid], name=names(node.name + "_lr_a")))
    bias = node.input[2] if gemm and len(node.input) > 2 and node.input[2] else ""
    if bias:
        g_nodes.append(helper.make_node("Gemm", [mid, b_name, bias], [node.output[0]], name=node.name, beta=beta))
    else:
        g_nodes.append(helper.make_node("MatMul", [mid, b_name], [node.output[0]], name=node.name))

    extra: dict[str, Any] = {
        "method": method,
        "energy": None if energy is None else round(energy, 6),
        "flops_before": 2 * k * n,
        "flops_after": 2 * r * (k + n),
        "flops_unit": "per input row",
    }
    if gram is not None:
        extra["rel_output_error"] = _output_error(weff, a, b, gram)
    stat = TensorStat(
        name=ref.name,
        node=node.name,
        op=node.op_type,
        bytes_before=M.tensor_nbytes(ref.tensor),
        bytes_after=a.nbytes + b.nbytes,
        params_before=w.size,
        params_after=a.size + b.size,
        rank=r,
        rel_error=rel,
        extra={k_: v for k_, v in extra.items() if v is not None},
    )
    delta = None
    if c.bias_correction and layer is not None and layer.stats.mean.shape == (1, k):
        # weff already carries alpha; the factors replace alpha * op(W)
        delta = (weff.astype(np.float64) - a.astype(np.float64) @ b.astype(np.float64)).T @ layer.stats.mean[0]
    return _Plan(ref, g_nodes, [M.make_tensor(a, a_name), M.make_tensor(b, b_name)], stat, delta)


def _output_error(w: np.ndarray, a: np.ndarray, b: np.ndarray, gram: np.ndarray) -> float:
    """||X (W - A B)||_F / ||X W||_F on the calibration inputs, from H = X^T X."""
    w64 = w.astype(np.float64)
    e = w64 - a.astype(np.float64) @ b.astype(np.float64)
    num = float(np.sum(e * (gram @ e)))
    den = float(np.sum(w64 * (gram @ w64)))
    return round(float(np.sqrt(max(num, 0.0) / den)), 6) if den > 0 else 0.0


# --------------------------------------------------------------------------- conv


def _conv_out(size: int | None, k: int, s: int, d: int, p0: int, p1: int, auto_pad: str) -> int | None:
    if size is None:
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return -(-size // s)
    if auto_pad == "VALID":
        p0 = p1 = 0
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def _plan_conv(ref: WeightRef, c: FactorizeConfig, names: M.NameGen, shapes: dict[str, tuple], skipped: list[Skip]) -> _Plan | None:
    node = ref.node
    w = ref.array()
    group = int(_attr(node, "group", 1))
    if group != 1:
        kind = "depthwise" if w.ndim >= 2 and w.shape[1] == 1 and group == w.shape[0] else "grouped"
        skipped.append(Skip(ref.name, f"{kind} convolution (group={group}): channel factorization would mix groups"))
        return None
    if w.ndim < 3:
        skipped.append(Skip(ref.name, f"Conv weight is {w.ndim}-D"))
        return None
    co, ci, kdims = w.shape[0], w.shape[1], tuple(w.shape[2:])
    nd = len(kdims)
    strides = list(_attr(node, "strides", [1] * nd))
    dil = list(_attr(node, "dilations", [1] * nd))
    pads = list(_attr(node, "pads", [0] * (2 * nd)))
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    in_shape = shapes.get(node.input[0])
    spatial_in = list(in_shape[2:]) if in_shape and len(in_shape) == nd + 2 else [None] * nd
    out_sp = [_conv_out(spatial_in[i], kdims[i], strides[i], dil[i], pads[i], pads[i + nd], auto_pad) for i in range(nd)]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    a_name, b_name = names(ref.name + "_lr_a"), names(ref.name + "_lr_b")
    mid = names(node.output[0] + "_lr")
    x = node.input[0]
    passthrough = {a.name: a for a in node.attribute}

    def prod(v: list[int | None]) -> int | None:
        return None if any(d is None for d in v) else int(np.prod(v, dtype=np.int64))

    if c.method == "spatial":
        if nd != 2:
            skipped.append(Skip(ref.name, f"spatial factorization needs a 2-D conv, this one is {nd}-D"))
            return None
        kh, kw = kdims
        if kh == 1 or kw == 1:
            skipped.append(Skip(ref.name, f"kernel {kh}x{kw} is already 1-D in one axis; spatial factorization saves nothing"))
            return None
        # M[(c, y), (o, x)] = W[o, c, y, x]
        mat = w.transpose(1, 2, 0, 3).reshape(ci * kh, co * kw)
        r, s = _choose_rank(c, mat.shape, mat)
        why = _pays(r, *mat.shape, c)
        if why:
            skipped.append(Skip(ref.name, why))
            return None
        a, b = K.truncated_svd(mat, r)  # a [(c, y), r], b [r, (o, x)]
        a, b = a.astype(w.dtype), b.astype(w.dtype)
        energy, rel = _energy_kept(mat, a, b, s, r)
        w1 = a.reshape(ci, kh, r).transpose(2, 0, 1)[..., None]  # [r, Ci, kh, 1]
        w2 = b.reshape(r, co, kw).transpose(1, 0, 2)[:, :, None, :]  # [Co, r, 1, kw]
        common = {"auto_pad": auto_pad} if auto_pad != "NOTSET" else {}
        pads1 = {} if common else {"pads": [pads[0], 0, pads[2], 0]}
        pads2 = {} if common else {"pads": [0, pads[1], 0, pads[3]]}
        n1 = helper.make_node(
            "Conv", [x, a_name], [mid], name=names(node.name + "_lr_a"),
            kernel_shape=[kh, 1], strides=[strides[0], 1], dilations=[dil[0], 1], **pads1, **common,
        )
        n2 = helper.make_node(
            "Conv", [mid, b_name] + ([bias] if bias else []), [node.output[0]], name=node.name,
            kernel_shape=[1, kw], strides=[1, strides[1]], dilations=[1, dil[1]], **pads2, **common,
        )
        # vertical conv keeps the input width; horizontal conv produces the final output
        mid_sp = [out_sp[0], spatial_in[1]]
        macs_after = (None if prod(mid_sp) is None or prod(out_sp) is None
                      else r * ci * kh * prod(mid_sp) + co * r * kw * prod(out_sp))
        method = "spatial"
    else:
        mat = w.reshape(co, ci * int(np.prod(kdims)))
        r, s = _choose_rank(c, mat.shape, mat)
        why = _pays(r, *mat.shape, c)
        if why:
            skipped.append(Skip(ref.name, why))
            return None
        a, b = K.truncated_svd(mat, r)  # a [Co, r], b [r, Ci*k...]
        a, b = a.astype(w.dtype), b.astype(w.dtype)
        energy, rel = _energy_kept(mat, a, b, s, r)
        w1 = b.reshape((r, ci) + kdims)
        w2 = a.reshape((co, r) + (1,) * nd)
        n1 = helper.make_node("Conv", [x, a_name], [mid], name=names(node.name + "_lr_a"))
        n1.attribute.extend(passthrough[k_] for k_ in sorted(passthrough))  # same geometry
        n2 = helper.make_node("Conv", [mid, b_name] + ([bias] if bias else []), [node.output[0]], name=node.name, kernel_shape=[1] * nd)
        macs_after = None if prod(out_sp) is None else r * (ci * int(np.prod(kdims)) + co) * prod(out_sp)
        method = "svd"
    macs_before = None if prod(out_sp) is None else co * ci * int(np.prod(kdims)) * prod(out_sp)
    extra: dict[str, Any] = {"method": method, "energy": round(energy, 6)}
    if macs_before is not None and macs_after is not None:
        extra.update(flops_before=2 * macs_before, flops_after=2 * macs_after, flops_unit="per sample")
    stat = TensorStat(
        name=ref.name,
        node=node.name,
        op="Conv",
        bytes_before=M.tensor_nbytes(ref.tensor),
        bytes_after=w1.nbytes + w2.nbytes,
        params_before=w.size,
        params_after=w1.size + w2.size,
        rank=r,
        rel_error=rel,
        extra=extra,
    )
    return _Plan(ref, [n1, n2], [M.make_tensor(np.ascontiguousarray(w1), a_name), M.make_tensor(np.ascontiguousarray(w2), b_name)], stat)


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Best-effort static shapes of tensors (for FLOP counts), from ONNX shape inference."""
    if M._data_bytes(model) >= M.EXTERNAL_THRESHOLD:
        return {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is advisory here
        return {}
    out: dict[str, tuple] = {}
    for scope in M.walk(inferred):
        g = scope.graph
        for v in list(g.input) + list(g.value_info) + list(g.output):
            tt = v.type.tensor_type
            if tt.HasField("shape"):
                out[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return out


# --------------------------------------------------------------------------- data


def _collect(model: onnx.ModelProto, refs: list[WeightRef], context) -> tuple[dict[str, Layer], str | None, list[str]]:
    """Layer statistics (H = X^T X, E[x]) of the MatMul/Gemm inputs in ``refs`` from the
    shared, cached collection of :mod:`onnxzip.calibrate`; the layers by weight name, a
    warning when data-aware factorization falls back to plain SVD, and notes."""
    if getattr(context, "calibration", None) is None:
        return {}, "data_aware: no calibration data (recipe `calibration.data` or `--calib`); used plain SVD", []
    try:
        layers, _, notes = gather(context, model, refs)
    except Exception as e:  # the data or a runtime quirk; plain SVD still works
        from onnxzip.errors import OnnxzipError

        if isinstance(e, OnnxzipError):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return {}, f"data_aware: collecting activations failed ({msg}); used plain SVD", []
    return layers, None, notes


# --------------------------------------------------------------------------- rewrite


def _apply(model: onnx.ModelProto, plans: list[_Plan]) -> None:
    """Replace each planned node by its factorized nodes, add the factors, drop dead weights."""
    for p in plans:
        g = p.ref.scope.graph
        out0 = p.ref.node.output[0]
        idx = next(i for i, n in enumerate(g.node) if n.output and n.output[0] == out0)
        g.node[idx].CopyFrom(p.nodes[-1])
        for extra in reversed(p.nodes[:-1]):
            g.node.insert(idx, extra)
        g.initializer.extend(p.inits)
    for p in plans:
        _drop_if_unused(model, p.ref.owner.graph, p.ref.name)


def _drop_if_unused(model: onnx.ModelProto, graph: onnx.GraphProto, name: str) -> None:
    for scope in M.walk(model):
        if any(name in n.input for n in scope.graph.node) or any(o.name == name for o in scope.graph.output):
            return
    for i, t in enumerate(graph.initializer):  # in place: no copy of the other weights
        if t.name == name:
            del graph.initializer[i]
            break
    keep = [v for v in graph.input if v.name != name]
    if len(keep) != len(graph.input):
        del graph.input[:]
        graph.input.extend(keep)


__all__ = ["FactorizeConfig", "FactorizePass"]
