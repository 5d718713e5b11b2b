"""`quantize`: linear int8/int4 quantization (weight-only, dynamic, static) and k-means
weight sharing.

``method: linear`` -- affine codes ``q = clip(round(w / s) + z)``, ``w ~= (q - z) * s``, one
(s, z) per tensor, per output channel or per block of ``block_size`` along the reduction
axis (``clip: mse`` searches the clipping range that minimises the squared error).
``activations`` picks the representation (all standard ONNX; measured on onnxruntime 1.32 CPU):

* ``none`` (weight-only): ``DequantizeLinear(q, s, z, axis, block_size)`` feeding MatMul,
  which onnxruntime fuses into MatMulNBits (int8 and int4, every granularity); a Gemm with
  a constant weight is rewritten as MatMul [+ Mul alpha] [+ Add bias] for the same fusion.
  Other consumers (Conv, ConvTranspose, Gather) get ``Cast(q) -> Mul(s)``, folded when the
  session starts: a DequantizeLinear there would stay in the graph and run at every
  inference (1.6x slower Conv, 2.2x slower Gemm measured). The pass checks onnxruntime's
  optimized graph and moves any DequantizeLinear it left unfused (e.g. MatMul+Add+Relu,
  which becomes FusedGemm first; block sizes MatMulNBits cannot take) to the Cast form.
  bits <= 4 use INT4/UINT4 tensors (opset 21); bits 5..8 int8/uint8. Note: onnxruntime
  gives fused MatMulNBits the session's ``session.qdq_matmulnbits_accuracy_level``
  (default 4: int8 activations inside the kernel).
* ``dynamic``: int8 weights, activations quantized per inference:
  ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul [-> Add]``, which onnxruntime
  fuses into DynamicQuantizeMatMul with its bias. The QDQ spelling fuses to the same kernel
  for a bare MatMul but is 7x slower when a bias Add follows a 2-D MatMul (onnxruntime
  folds MatMul+Add into a Gemm first and no longer fuses). Conv stays float compute with
  weight-only int8 storage (ConvInteger made CNNs 3.7-17x slower).
* ``static``: QuantizeLinear/DequantizeLinear on activations (uint8, ranges from the
  calibration data: minmax, percentile or entropy), int8 weights, int32 biases and Q/DQ on
  Conv outputs, so onnxruntime runs QLinearConv, QGemm and MatMulIntegerToFloat.

``method: kmeans`` -- ``2^bits`` shared values per tensor (or per output channel) by 1-D
k-means; uint8 codes -> Cast -> Gather(codebook), outliers patched exactly by
ScatterElements; folded when the session starts.

``algorithm: gptq`` (both methods; needs calibration data) quantizes each MatMul/Gemm/Conv
weight column by column along the reduction axis, in the layer's [out, in] view, so that the
layer's outputs on the calibration inputs stay close (GPTQ, Frantar et al. 2022): with H =
X^T X of the layer input (damped by ``percdamp`` of its mean diagonal) and U the upper
Cholesky factor of H^-1, column j is rounded (linear: to its group's grid, the group's scale
chosen when its first column is reached; k-means: to the nearest centroid of the codebook
fitted first, exact zeros kept as code 0) and its error e_j = (w_j - q_j) / U_jj is removed
from the later columns (w -= e_j U_j,:), lazily in blocks of ``lazy_batch`` columns;
``act_order`` visits the columns by decreasing H_jj (linear groups then fix their scales from
the original weights). The output representation is the same as ``rtn``'s. Weights without
statistics (Gather, ConvTranspose, nodes in subgraphs, batched weights) are rounded,
recorded as ``fallback``. ``bias_correction: true`` then adds E[x](W - W_q) to the layer's
bias (Gemm C, Conv B, a following Add's constant, or a new Add).

Preserves: exact zeros (symmetric and asymmetric grids represent 0 exactly; k-means
reserves code 0 for zeros), the graph's inputs and outputs. Skips (with the reason):
non-float32 weights, weights already decoded from integers (a DequantizeLinear or k-means
decoder), weights that are also graph inputs, and nodes a representation cannot serve
(they fall back to weight-only, recorded in the tensor's ``fallback``).

The default-domain opset is raised with onnx's version converter when a representation
needs it (13 for per-channel DequantizeLinear, 21 for int4 and blocks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import onnx

from onnxzip import model as M
from onnxzip.errors import DataError
from onnxzip.passes._data_aware import Layer, gather, require_calibration
from onnxzip.passes._quant_graph import Calibrated, Edits, already_quantized, check_loads, remove_if_unused, upgrade_opset
from onnxzip.passes._quant_kmeans import kmeans_rewrite
from onnxzip.passes._quant_linear import LinearRewriter, required_opset, static_inputs, static_tensors
from onnxzip.passes.base import (
    ConfigIssue,
    Pass,
    PassResult,
    Skip,
    TargetConfig,
    WEIGHT_INPUT,
    TensorStat,
    WeightRef,
    no_target_warning,
    opt,
    select_weights,
)

# Keys that only mean something for one method (checked when set to a non-default value).
LINEAR_KEYS = ("symmetric", "granularity", "block_size", "clip", "activations", "calibration_method", "percentile")
KMEANS_KEYS = ("per_channel", "init", "outliers")
GPTQ_KEYS = ("percdamp", "act_order", "lazy_batch")
DEFAULT_BLOCK = 32


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig(TargetConfig):
    method: Literal["linear", "kmeans"] = opt(
        "linear", "`linear`: affine int codes with scales (int8/int4); `kmeans`: shared values from a codebook"
    )
    bits: int = opt(8, "bits per weight (linear: 8 or 4 for runtime kernels, 2..8 for storage; kmeans: 2..8)", min=2, max=8)
    symmetric: bool = opt(True, "linear: signed codes centred on 0 (zero point 0); false: unsigned codes with a zero point")
    granularity: Literal["per_tensor", "per_channel", "block"] = opt(
        "per_channel", "linear: one scale per tensor, per output channel, or per block of `block_size` along the reduction axis"
    )
    block_size: int | None = opt(
        None,
        f"linear, granularity block: elements per block along the reduction axis, a multiple of 16 (default {DEFAULT_BLOCK}); "
        "a short last block is padded. MatMulNBits needs a power of two: other sizes are stored in the folded Cast form",
        min=16,
    )
    clip: Literal["minmax", "mse"] = opt("minmax", "linear: scale from the full range, or the clipped range with the least squared error")
    activations: Literal["none", "dynamic", "static"] = opt(
        "none", "linear: `none` weight-only; `dynamic` int8 activations per inference (MatMul/Gemm); `static` calibrated int8 activations"
    )
    calibration_method: Literal["minmax", "percentile", "entropy"] = opt(
        "minmax", "linear, activations static: activation range from min/max, a percentile, or minimal KL divergence"
    )
    percentile: float = opt(99.99, "calibration_method percentile: the percentile kept on each side", min=90.0, max=100.0)
    per_channel: bool = opt(False, "kmeans: one codebook per output channel instead of one per tensor")
    init: Literal["kmeans++", "linear"] = opt("linear", "kmeans: initial centroids spaced over the range, or k-means++ seeded by the recipe seed")
    outliers: float = opt(0.0, "kmeans: fraction of largest-magnitude weights kept exact in a side table", min=0.0, max=0.05)
    algorithm: Literal["rtn", "gptq"] = opt(
        "rtn",
        "`rtn`: round every weight to its nearest level; `gptq`: quantize column by column, moving each column's "
        "error onto the columns not yet quantized so the layer's outputs on the calibration data stay close (needs calibration data)",
    )
    percdamp: float = opt(0.01, "gptq: damping added to H = X^T X, as a fraction of its mean diagonal", min=0.0, max=1.0)
    act_order: bool = opt(False, "gptq: quantize the columns with the largest inputs (H_jj) first")
    lazy_batch: int = opt(128, "gptq: columns per lazy update block (speed; the result barely changes)", min=1)
    bias_correction: bool = opt(
        False, "add E[x](W - W_q) to the layer's bias so its mean output is kept (needs calibration data)"
    )

    DEFAULT_OPS: ClassVar[tuple[str, ...]] = ("MatMul", "Gemm", "Conv")

    @property
    def block(self) -> int:
        return self.block_size or DEFAULT_BLOCK

    def check(self) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(QuantizeConfig)}
        self._check_effective([k for k in LINEAR_KEYS + KMEANS_KEYS + GPTQ_KEYS if getattr(self, k) != defaults[k]])
        for glob, items in self.overrides:
            d = dict(items)
            d.pop("skip", None)
            if not d:
                continue
            eff = dataclasses.replace(self, overrides=(), **d)
            try:
                eff._check_effective([k for k in d if k in LINEAR_KEYS + KMEANS_KEYS + GPTQ_KEYS])
            except ConfigIssue as e:
                raise ConfigIssue("overrides", f"override `{glob}`: key `{e.key}`: {e.message}", e.hint) from None

    def _check_effective(self, given: list[str]) -> None:
        for key in given:
            if key in GPTQ_KEYS and self.algorithm != "gptq":
                raise ConfigIssue(key, f"applies to `algorithm: gptq`, not `{self.algorithm}`", f"set `algorithm: gptq`, or remove `{key}`")
            if self.method == "kmeans" and key in LINEAR_KEYS:
                raise ConfigIssue(key, "applies to `method: linear`, not `kmeans`", f"remove `{key}`, or set `method: linear`")
            if self.method == "linear" and key in KMEANS_KEYS:
                hint = "use `granularity: per_channel` for linear" if key == "per_channel" else f"remove `{key}`, or set `method: kmeans`"
                raise ConfigIssue(key, "applies to `method: kmeans`, not `linear`", hint)
        if self.method != "linear":
            return
        if self.block_size is not None:
            if self.granularity != "block":
                raise ConfigIssue(
                    "block_size", f"applies to `granularity: block`, not `{self.granularity}`",
                    "set `granularity: block`, or remove `block_size`",
                )
            if self.block_size % 16:
                raise ConfigIssue(
                    "block_size", f"{self.block_size} is not a multiple of 16",
                    f"use {max(16, self.block_size // 16 * 16)} or {(self.block_size // 16 + 1) * 16} (onnxruntime's MatMulNBits needs 16, 32, 64, ...)",
                )
        if self.activations != "none":
            if self.bits != 8:
                raise ConfigIssue(
                    "bits", f"`activations: {self.activations}` quantizes to int8, so bits must be 8, got {self.bits}",
                    f"set `bits: 8`, or `activations: none` for {self.bits}-bit weight-only",
                )
            if self.granularity == "block":
                raise ConfigIssue(
                    "granularity", f"block granularity is weight-only, not for `activations: {self.activations}`",
                    "use `granularity: per_channel`, or `activations: none`",
                )
        for key in ("calibration_method", "percentile"):
            if key in given and self.activations != "static":
                raise ConfigIssue(key, f"applies to `activations: static`, not `{self.activations}`", "set `activations: static`, or remove it")
        if "percentile" in given and self.calibration_method != "percentile":
            raise ConfigIssue(
                "percentile", f"applies to `calibration_method: percentile`, not `{self.calibration_method}`",
                "set `calibration_method: percentile`, or remove `percentile`",
            )


class QuantizePass(Pass):
    name = "quantize"
    summary = "int8/int4 linear quantization (weight-only, dynamic, static) or k-means weight sharing"
    Config = QuantizeConfig

    def call(self, model: onnx.ModelProto) -> PassResult:
        cfg: QuantizeConfig = self.config  # type: ignore[assignment]
        for c in cfg.variants():
            if c.algorithm == "gptq":
                require_calibration(self.context, "quantize", "algorithm", "gptq")
            if c.bias_correction:
                require_calibration(self.context, "quantize", "bias_correction", True)
        wants_static = any(c.method == "linear" and c.activations == "static" for c in cfg.variants())
        if wants_static and self.context.calibration is None:
            raise DataError(
                "static quantization needs calibration data",
                hint="pass `--calib FILE.npz` to `onnxzip compress`, or set `calibration: {data: FILE.npz}` in the recipe "
                "(or use `activations: dynamic`, which needs none)",
            )
        skipped: list[Skip] = []
        notes: list[str] = []
        refs = self._targets(model, cfg, skipped)
        if not refs:
            return PassResult(model, False, skipped=skipped, warnings=[] if skipped else [no_target_warning(cfg)])

        # Layer statistics before any rewrite (and before an opset upgrade replaces the model).
        aware = [r for r, c in refs if c.algorithm == "gptq" or c.bias_correction]
        found: dict[str, Layer] = {}
        no_stats: dict[str, str] = {}
        if aware:
            found, no_stats, stat_notes = gather(self.context, model, aware)
            notes.extend(stat_notes)

        ranges = None
        if wants_static:
            names = static_tensors([(r, c) for r, c in refs])
            if names:
                ranges = self._calibrate(model, names, next(c for c in cfg.variants() if c.activations == "static"))

        need = max(required_opset(c, r.node) for r, c in refs)
        have = M.domain_opset(model) or 1
        if need > have:
            try:
                upgraded = upgrade_opset(model, need)
                check_loads(upgraded)
            except Exception as e:  # the converter raises bare RuntimeErrors from C++
                msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                reason = f"needs opset {need} (model has {have}) and onnx's version converter failed: {msg}"
                skipped.extend(Skip(r.name, reason) for r, _ in refs)
                return PassResult(model, False, skipped=skipped)
            notes.append(f"default-domain opset {have} -> {need} (onnx version converter)")
            model = upgraded
            skipped = []
            refs = self._targets(model, cfg, skipped)

        names = M.NameGen(model)
        edits = Edits()
        # Statistics belong to weights; after an opset upgrade the refs are new objects.
        layers = {r.name: Layer(r, found[r.name].view, found[r.name].stats) for r, _ in refs if r.name in found}
        calibrated = Calibrated(model, names, layers, no_stats)
        linear = LinearRewriter(
            model, names, edits, ranges, static_inputs([(r, c) for r, c in refs if r.node.input[0] in (ranges or {})]),
            calibrated=calibrated,
        )
        stats: list[TensorStat] = linear.stats  # one list, in graph order
        for ref, c in refs:
            if c.method == "kmeans":
                seed = int(self.context.rng(ref.name).integers(0, 2**31 - 1))
                stats.append(kmeans_rewrite(ref, c, seed, names, edits, calibrated))
            else:
                linear.rewrite(ref, c)
        edits.apply()
        remove_if_unused(model, linear.replaced)
        linear.finalize()
        notes.extend(sorted(linear.notes))
        return PassResult(model, bool(stats), tensors=stats, skipped=skipped, notes=notes, warnings=sorted(linear.warnings))

    def _targets(self, model: onnx.ModelProto, cfg: QuantizeConfig, skipped: list[Skip]) -> list[tuple[WeightRef, QuantizeConfig]]:
        found: list[Skip] = []
        out = []
        for ref in select_weights(model, cfg, found):
            c: QuantizeConfig = ref.config  # type: ignore[assignment]
            if ref.tensor.data_type != onnx.TensorProto.FLOAT:
                dt = onnx.TensorProto.DataType.Name(ref.tensor.data_type).lower()
                found.append(Skip(ref.name, f"weight is {dt}; quantize reads float32 weights (run it before cast-fp16)"))
                continue
            if M.numel(ref.tensor) == 0 or len(ref.tensor.dims) == 0:
                found.append(Skip(ref.name, "weight is a scalar or empty"))
                continue
            if any(i.name == ref.name for i in ref.owner.graph.input):
                found.append(Skip(ref.name, "weight is also a graph input (callers may override it)"))
                continue
            w = ref.array()
            if not np.isfinite(w).all():
                found.append(Skip(ref.name, "weight holds nan or inf"))
                continue
            out.append((ref, c))
        # A weight computed from an integer initializer is quantized already: say so
        # instead of the generic "computed at run time".
        by_name = {n.name: (s, n) for s, n in M.iter_nodes(model) if n.name}
        for sk in found:
            if sk.reason.startswith("weight is computed at run time") and sk.name in by_name:
                scope, node = by_name[sk.name]
                idx = WEIGHT_INPUT.get(node.op_type, 1)
                op = already_quantized(scope, node.input[idx]) if idx < len(node.input) else None
                if op:
                    sk.reason = f"weight is already quantized (decoded by `{op}`)"
        skipped.extend(found)
        return out

    def _calibrate(self, model: onnx.ModelProto, names: list[str], cfg: QuantizeConfig):
        from onnxzip.calibrate import collect_ranges

        return collect_ranges(
            model, names, self.context.calibration,
            method=cfg.calibration_method, percentile=cfg.percentile, progress=self.context.progress,
        )
