"""The pass contract: a frozen typed ``Config``, ``call(model) -> PassResult``, and the
target selection every weight pass shares.

A pass rewrites the model in place or returns a new one; it never checks the graph
itself (the pipeline does, after every pass) and never raises for a node it cannot
handle: it records a :class:`Skip` with the reason instead.
"""

from __future__ import annotations

import abc
import dataclasses
import fnmatch
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from onnxzip import model as M

log = logging.getLogger("onnxzip.passes")

# Which input of a node holds its weight, per op type.
WEIGHT_INPUT = {
    "MatMul": 1,
    "Gemm": 1,
    "Conv": 1,
    "ConvTranspose": 1,
    "Gather": 0,
}

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


class ConfigIssue(ValueError):
    """Raised by a config's ``check`` for a value that types alone cannot reject."""

    def __init__(self, key: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.key, self.message, self.hint = key, message, hint


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A config field with its help text and validation metadata (min, max, ...)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults (configs are frozen)")
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True, kw_only=True)
class PassConfig:
    """Base of every pass config. Subclasses add their own fields with :func:`opt`."""

    def check(self) -> None:
        """Cross-field validation; raise :class:`ConfigIssue`."""


@dataclass(frozen=True, kw_only=True)
class TargetConfig(PassConfig):
    """Target selection shared by the weight passes (and the recipe's ``defaults``)."""

    ops: tuple[str, ...] = opt((), "op types whose weights the pass touches (empty: the pass's default set)")
    include: tuple[str, ...] = opt((), "globs on node or initializer names; only matches are touched")
    exclude: tuple[str, ...] = opt((), "globs on node or initializer names to leave alone")
    min_params: int = opt(0, "skip weights with fewer elements than this", min=0)
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = opt(
        (), "per-node settings: a mapping from a name glob to keys of this pass (or `skip: true`)"
    )

    DEFAULT_OPS: ClassVar[tuple[str, ...]] = ("MatMul", "Gemm", "Conv")

    @property
    def target_ops(self) -> tuple[str, ...]:
        return self.ops or self.DEFAULT_OPS

    def for_names(self, *names: str) -> TargetConfig | None:
        """This config with the first matching override applied; None when it says skip."""
        for glob, items in self.overrides:
            if any(n and fnmatch.fnmatchcase(n, glob) for n in names):
                d = dict(items)
                if d.pop("skip", False):
                    return None
                return dataclasses.replace(self, overrides=(), **d) if d else self
        return self

    def variants(self) -> list[TargetConfig]:
        """This config and every config an override can produce (to see what any node
        may need, e.g. whether some layer asks for calibration data)."""
        out = [self]
        for _, items in self.overrides:
            d = dict(items)
            if d.pop("skip", False) or not d:
                continue
            out.append(dataclasses.replace(self, overrides=(), **d))
        return out


TARGET_KEYS = tuple(f.name for f in dataclasses.fields(TargetConfig))


@dataclass
class TensorStat:
    """What a pass did to one tensor. Fields that do not apply stay None."""

    name: str
    node: str = ""
    op: str = ""
    bytes_before: int = 0
    bytes_after: int = 0
    params_before: int = 0
    params_after: int = 0
    sparsity: float | None = None
    bits: float | None = None
    rank: int | None = None
    rel_error: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        d = {k: v for k, v in d.items() if v is not None}
        d.update(extra)
        return d


@dataclass
class Skip:
    """A node or tensor the pass left alone, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


@dataclass
class PassResult:
    model: onnx.ModelProto
    modified: bool
    tensors: list[TensorStat] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class PassContext:
    """What the pipeline hands every pass besides its config."""

    seed: int = 0
    recipe_dir: Path | None = None
    calibration: Any = None  # onnxzip.calibrate data source, when the recipe has one
    progress: Callable[[str], None] | None = None
    # onnxzip.calibrate.StatsCache: layer statistics shared by the data-aware passes of one
    # run, so a recipe with several of them runs the model once (created on first use).
    stats_cache: Any = None

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded from the recipe seed and ``salt`` (e.g. a tensor name), so
        results do not depend on the order in which tensors are visited."""
        import zlib

        return np.random.default_rng([self.seed, zlib.crc32(salt.encode())])


class Pass(abc.ABC):
    """Base class: subclasses set ``name``, ``Config``, ``summary`` and implement ``call``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Config: ClassVar[type[PassConfig]] = PassConfig

    def __init__(self, config: PassConfig, context: PassContext | None = None):
        self.config = config
        self.context = context or PassContext()

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult:
        """Rewrite ``model`` (in place or into a new proto) and say what changed."""

    @classmethod
    def targets(cls, model: onnx.ModelProto, config: PassConfig, skipped: list[Skip]) -> list[tuple[str, onnx.NodeProto, int]]:
        """(tensor name, consuming node, element count) for each tensor the pass would touch,
        without changing anything (for `onnxzip inspect -r`). Passes whose targets are not
        float weights override it."""
        if not isinstance(config, TargetConfig):
            return []
        refs = drop_output_layers(model, list(select_weights(model, config, skipped)), skipped)
        return [(r.name, r.node, M.numel(r.tensor)) for r in refs]


# --------------------------------------------------------------------------- targets


@dataclass
class WeightRef:
    """A weight initializer as seen from one consuming node."""

    scope: M.Scope  # scope of the consuming node
    node: onnx.NodeProto
    input_index: int
    owner: M.Scope  # scope holding the initializer (may be an outer graph)
    tensor: onnx.TensorProto
    config: TargetConfig  # the pass config with per-node overrides applied

    @property
    def name(self) -> str:
        return self.tensor.name

    def array(self) -> np.ndarray:
        return M.to_array(self.tensor)


def select_weights(
    model: onnx.ModelProto,
    config: TargetConfig,
    skipped: list[Skip],
    *,
    weight_input: dict[str, int] | None = None,
    float_only: bool = True,
) -> Iterator[WeightRef]:
    """The weights the config targets, each at most once, in graph order.

    Nodes of a targeted op whose weight is not a constant initializer, is not float, is
    too small or is excluded are recorded in ``skipped`` with the reason. A weight shared
    by several nodes is yielded for its first consumer only, with the others named in the
    skip list, since rewriting it for one consumer changes it for all.
    """
    weight_input = weight_input or WEIGHT_INPUT
    ops = set(config.target_ops)
    seen: dict[str, str] = {}
    for scope, node in M.iter_nodes(model):
        if node.op_type not in ops or (node.domain or "") not in ("", "ai.onnx"):
            continue
        idx = weight_input.get(node.op_type)
        if idx is None or idx >= len(node.input) or not node.input[idx]:
            skipped.append(Skip(node.name, f"no weight input known for op `{node.op_type}`"))
            continue
        wname = node.input[idx]
        found = scope.lookup_initializer(wname)
        if found is None:
            skipped.append(Skip(node.name, "weight is computed at run time, not a constant initializer"))
            continue
        owner, tensor = found
        if any(fnmatch.fnmatchcase(n, g) for g in config.exclude for n in (node.name, wname) if n):
            skipped.append(Skip(wname, "excluded by the recipe"))
            continue
        if config.include and not any(
            fnmatch.fnmatchcase(n, g) for g in config.include for n in (node.name, wname) if n
        ):
            continue  # not selected: not worth a line per node in the report
        cfg = config.for_names(node.name, wname)
        if cfg is None:
            skipped.append(Skip(wname, "skipped by an override"))
            continue
        if float_only and tensor.data_type not in FLOAT_TYPES:
            dtype = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
            skipped.append(Skip(wname, f"weight is {dtype}, not float (already quantized?)"))
            continue
        n = M.numel(tensor)
        if n < cfg.min_params:
            skipped.append(Skip(wname, f"{n} params < min_params {cfg.min_params}"))
            continue
        if wname in seen:
            skipped.append(Skip(wname, f"shared with node `{seen[wname]}`; rewritten once"))
            continue
        seen[wname] = node.name
        yield WeightRef(scope, node, idx, owner, tensor, cfg)


def no_target_warning(config: TargetConfig) -> str:
    parts = [f"ops {list(config.target_ops)}"]
    if config.include:
        parts.append(f"include {list(config.include)}")
    if config.exclude:
        parts.append(f"exclude {list(config.exclude)}")
    if config.min_params:
        parts.append(f"min_params {config.min_params}")
    return "selected no tensor (" + ", ".join(parts) + ")"


# Ops whose constant weight makes a node a "layer" for `keep_output_layers`.
LAYER_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def output_layers(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """(scope path, node name) of the weight layers (Conv/ConvTranspose/MatMul/Gemm with a
    constant weight) that reach a model output without passing through another weight layer:
    the model's heads. Walks into If/Loop/Scan bodies whose outputs lead to a model output."""
    scopes = list(M.walk(model))
    heads: set[tuple[str, str]] = set()

    def visit(scope: M.Scope, starts: list[str]) -> None:
        producers = {o: n for n in scope.graph.node for o in n.output if o}
        seen: set[str] = set()
        stack = list(starts)
        while stack:
            name = stack.pop()
            if name in seen or name not in producers:
                continue
            seen.add(name)
            node = producers[name]
            if node.op_type in LAYER_OPS and len(node.input) > 1 and scope.lookup_initializer(node.input[1]):
                heads.add((scope.path, node.name))
                continue
            for sub in scopes:
                if sub.parent is scope and sub.owner is not None and sub.owner.name == node.name:
                    visit(sub, [o.name for o in sub.graph.output])
            stack.extend(i for i in node.input if i)

    visit(scopes[0], [o.name for o in scopes[0].graph.output])
    return heads


def drop_output_layers(model: onnx.ModelProto, refs: list[WeightRef], skipped: list[Skip]) -> list[WeightRef]:
    """``refs`` without the output layers whose (per-node) config sets ``keep_output_layers``,
    each recorded in ``skipped``. Configs without that key keep every ref."""
    if not any(getattr(r.config, "keep_output_layers", False) for r in refs):
        return refs
    heads = output_layers(model)
    out = []
    for r in refs:
        if getattr(r.config, "keep_output_layers", False) and (r.scope.path, r.node.name) in heads:
            skipped.append(Skip(r.name, "output layer kept dense (`keep_output_layers`)"))
        else:
            out.append(r)
    return out
