"""Recipes: YAML -> a typed, frozen :class:`Recipe`, validated completely before any model
is touched.

A recipe::

    version: 1
    name: int8-dynamic
    description: int8 weights, dynamic activations
    seed: 0
    defaults: {min_params: 1024}          # target selection shared by every weight pass
    calibration: {data: calib.npz, samples: 128, batch: 16}
    passes:
      - prune: {method: magnitude, sparsity: 0.5}
      - quantize: {method: kmeans, bits: 5}
    evaluate: {...}
    gates: {...}

Every error names the file, the line, the pass and the key, with the valid choices:
``recipe.yaml:7: pass `prune`: key `sparsty`: unknown key`` / ``hint: did you mean `sparsity`?``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from onnxzip.errors import RecipeError
from onnxzip.passes import ORDER_RULES, REGISTRY
from onnxzip.passes.base import TARGET_KEYS, ConfigIssue, PassConfig, TargetConfig

RECIPE_VERSION = 1
TOP_KEYS = ("version", "name", "description", "seed", "defaults", "calibration", "passes", "evaluate", "gates")


@dataclass(frozen=True)
class Calibration:
    """Recipe-level calibration data, shared by every data-aware pass."""

    data: str | None = None  # path, relative to the recipe file
    samples: int = 128
    batch: int = 16


@dataclass(frozen=True)
class PassStep:
    name: str
    config: PassConfig
    line: int = 0


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``passes`` run in order; ``evaluate``/``gates`` are validated,
    normalized mappings (see :func:`_evaluate`, :func:`_gates`) for the evaluation stage."""

    name: str
    passes: tuple[PassStep, ...]
    version: int = RECIPE_VERSION
    description: str = ""
    seed: int = 0
    defaults: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None
    evaluate: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # file path, or "preset:<name>"
    sha256: str = ""

    @property
    def base_dir(self) -> Path | None:
        if self.source and not self.source.startswith("preset:"):
            return Path(self.source).resolve().parent
        return None


# --------------------------------------------------------------------------- located YAML


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}


class _Doc:
    """Parsed YAML plus the line of every node, keyed by its path from the root."""

    def __init__(self, text: str, filename: str):
        self.filename = filename
        self.lines: dict[tuple, int] = {}
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                self.value = self._build(loader, node, ()) if node is not None else None
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 0
            problem = e.problem or e.context or "invalid YAML"
            raise RecipeError(f"{filename}:{line}: invalid YAML: {problem}", hint="check the indentation and quoting near that line") from None
        except yaml.YAMLError as e:
            raise RecipeError(f"{filename}: invalid YAML: {e}", hint="check the file is YAML text") from None

    def _build(self, loader: yaml.SafeLoader, node: yaml.Node, path: tuple) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if node.tag not in _PLAIN_TAGS:
            raise RecipeError(
                f"{self.filename}:{node.start_mark.line + 1}: invalid YAML: tag `{node.tag}` is not allowed",
                hint="recipes are plain YAML: mappings, lists, strings and numbers",
            )
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k, v in node.value:
                key = loader.construct_object(k, deep=True)
                if key in out:
                    raise RecipeError(f"{self.filename}:{k.start_mark.line + 1}: key `{key}` appears twice", hint="remove one of them")
                self.lines[path + (key,)] = k.start_mark.line + 1
                out[key] = self._build(loader, v, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(loader, v, path + (i,)) for i, v in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    def line(self, *path: Any) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    listed = ", ".join(f"`{c}`" for c in choices)
    if close:
        return f"did you mean `{close[0]}`? valid: {listed}"
    return f"valid: {listed}"


# --------------------------------------------------------------------------- typed values


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return "a list"
    return str(tp)


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(type(value), type(value).__name__)
    if value is None:
        return "nothing (null)"
    shown = repr(value) if not isinstance(value, (list, dict)) else ""
    return f"{kind} `{shown}`" if shown else kind


def coerce(value: Any, tp: Any) -> Any:
    """Convert a YAML value to the annotated type or raise ValueError with a message."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"expected {_type_name(tp)}, got {_describe(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {_describe(value)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) is type(choices[choices.index(value)]):
            return value
        raise ValueError(f"`{value}` is not allowed")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and args and args[-1] is Ellipsis:
            value = [value]  # `ops: MatMul` reads as `ops: [MatMul]`
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_describe(value)}")
        if args and args[-1] is Ellipsis:
            return tuple(coerce(v, args[0]) for v in value)
        return tuple(value)
    raise ValueError(f"unsupported type {tp}")  # pragma: no cover - config authoring error


def _check_range(value: Any, meta: typing.Mapping[str, Any]) -> str | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    lo, hi = meta.get("min"), meta.get("max")
    lo_ex, hi_ex = meta.get("min_exclusive", False), meta.get("max_exclusive", False)
    if lo is not None and (value < lo or (lo_ex and value == lo)):
        return f"{value} is out of range"
    if hi is not None and (value > hi or (hi_ex and value == hi)):
        return f"{value} is out of range"
    return None


def _range_text(meta: typing.Mapping[str, Any]) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    left = "(" if meta.get("min_exclusive") else "["
    right = ")" if meta.get("max_exclusive") else "]"
    if lo is not None and hi is not None:
        return f"the valid range is {left}{lo}, {hi}{right}"
    if lo is not None:
        return f"must be {'>' if meta.get('min_exclusive') else '>='} {lo}"
    return f"must be {'<' if meta.get('max_exclusive') else '<='} {hi}"


def config_fields(cls: type[PassConfig]) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------- validation


class _Validator:
    def __init__(self, doc: _Doc):
        self.doc = doc
        self.fn = doc.filename

    def fail(self, path: tuple, msg: str, hint: str | None = None, *, where: str = "") -> typing.NoReturn:
        raise RecipeError(f"{self.fn}:{self.doc.line(*path)}: {where}{msg}", hint=hint)

    def build_config(self, pass_name: str, cls: type[PassConfig], raw: dict, path: tuple, defaults: dict) -> PassConfig:
        where = f"pass `{pass_name}`: "
        fields = config_fields(cls)
        hints = _hints(cls)
        values: dict[str, Any] = {}
        if issubclass(cls, TargetConfig):
            for k, v in defaults.items():
                values[k] = coerce(v, hints[k])  # already validated by the defaults section
        for key, value in raw.items():
            kpath = path + (key,)
            if key not in fields:
                self.fail(kpath, f"key `{key}`: unknown key", did_you_mean(key, fields), where=where)
            if key == "overrides":
                values[key] = self.build_overrides(pass_name, cls, value, kpath)
                continue
            values[key] = self.value(value, hints[key], fields[key], kpath, where=f"{where}key `{key}`: ")
        try:
            cfg = cls(**values)
        except TypeError as e:  # pragma: no cover - config authoring error
            self.fail(path, str(e), where=where)
        try:
            cfg.check()
        except ConfigIssue as e:
            self.fail(path + (e.key,), f"key `{e.key}`: {e.message}", e.hint, where=where)
        for glob, items in getattr(cfg, "overrides", ()):
            changes = {k: val for k, val in items if k != "skip"}
            if not changes:
                continue
            try:
                dataclasses.replace(cfg, overrides=(), **changes).check()
            except ConfigIssue as e:
                self.fail(path + ("overrides", glob), f"key `overrides`: override `{glob}`: key `{e.key}`: {e.message}", e.hint, where=where)
        return cfg

    def value(self, value: Any, tp: Any, f: dataclasses.Field, path: tuple, *, where: str) -> Any:
        try:
            v = coerce(value, tp)
        except ValueError as e:
            hint = None
            if typing.get_origin(tp) is Literal:
                hint = did_you_mean(str(value), [str(a) for a in typing.get_args(tp)])
            else:
                hint = f"`{f.name}` takes {_type_name(tp)}: {f.metadata.get('help', '')}".rstrip(": ")
            self.fail(path, str(e), hint, where=where)
        bad = _check_range(v, f.metadata)
        if bad:
            self.fail(path, bad, _range_text(f.metadata), where=where)
        return v

    def build_overrides(self, pass_name: str, cls: type[PassConfig], raw: Any, path: tuple) -> tuple:
        where = f"pass `{pass_name}`: key `overrides`: "
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping from name globs to settings, got {_describe(raw)}", "example: `overrides: {\"head*\": {skip: true}}`", where=where)
        fields = config_fields(cls)
        hints = _hints(cls)
        allowed = [k for k in fields if k not in TARGET_KEYS] + ["skip"]
        out = []
        for glob, settings in raw.items():
            gpath = path + (glob,)
            if not isinstance(glob, str):
                self.fail(gpath, f"override key `{glob}` must be a name glob (string)", where=where)
            if settings is None:
                settings = {}
            if not isinstance(settings, dict):
                self.fail(gpath, f"override `{glob}` must be a mapping of settings, got {_describe(settings)}", where=where)
            items = []
            for k, v in settings.items():
                if k == "skip":
                    if not isinstance(v, bool):
                        self.fail(gpath + (k,), f"override `{glob}`: `skip` expects true or false", where=where)
                    items.append((k, v))
                    continue
                if k not in allowed:
                    self.fail(gpath + (k,), f"override `{glob}`: key `{k}` cannot be overridden", did_you_mean(k, allowed), where=where)
                items.append((k, self.value(v, hints[k], fields[k], gpath + (k,), where=f"{where}override `{glob}`: key `{k}`: ")))
            out.append((glob, tuple(items)))
        return tuple(out)


def _load_text(path: Path) -> str:
    if not path.exists():
        raise RecipeError(f"recipe `{path}` not found", hint="give a recipe file or a preset name; `onnxzip recipes` lists the presets")
    if path.is_dir():
        raise RecipeError(f"recipe `{path}` is a directory", hint="give a .yaml recipe file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"recipe `{path}` is not UTF-8 text", hint="a recipe is a YAML text file") from None
    except OSError as e:
        raise RecipeError(f"cannot read recipe `{path}`", causes=[e.strerror or str(e)], hint="check the file's permissions") from None


def parse_recipe(text: str, filename: str = "<recipe>", *, source: str | None = None) -> Recipe:
    """Validate recipe text completely; raise :class:`RecipeError` on the first problem."""
    doc = _Doc(text, filename)
    v = _Validator(doc)
    raw = doc.value
    if not isinstance(raw, dict):
        v.fail((), f"a recipe must be a mapping with `version` and `passes`, got {_describe(raw)}", "start from a preset: `onnxzip recipes`")
    for key in raw:
        if key not in TOP_KEYS:
            v.fail((key,), f"unknown top-level key `{key}`", did_you_mean(str(key), TOP_KEYS))
    version = raw.get("version")
    if version is None:
        v.fail((), "missing `version`", f"add `version: {RECIPE_VERSION}` at the top")
    if version != RECIPE_VERSION or isinstance(version, bool):
        v.fail(("version",), f"unsupported recipe version `{version}`", f"this onnxzip reads `version: {RECIPE_VERSION}`")
    name = raw.get("name", Path(filename).stem)
    if not isinstance(name, str):
        v.fail(("name",), f"`name` must be a string, got {_describe(name)}")
    description = raw.get("description", "") or ""
    if not isinstance(description, str):
        v.fail(("description",), f"`description` must be a string, got {_describe(description)}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        v.fail(("seed",), f"`seed` must be a non-negative integer, got {_describe(seed)}")

    defaults = _defaults(v, raw.get("defaults"))
    calibration = _calibration(v, raw.get("calibration"))
    evaluate = _evaluate(v, raw.get("evaluate"), _base_dir(source or filename))
    gates = _gates(v, raw.get("gates"), evaluate)

    steps = raw.get("passes")
    if steps is None:
        v.fail((), "missing `passes`", "add a list of passes, e.g. `passes: [{simplify: {}}]`")
    if not isinstance(steps, list):
        v.fail(("passes",), f"`passes` must be a list, got {_describe(steps)}", "each item is `- pass-name: {settings}`")
    if not steps:
        v.fail(("passes",), "the pass list is empty", "name at least one pass; valid: " + ", ".join(f"`{n}`" for n in REGISTRY))
    parsed: list[PassStep] = []
    for i, item in enumerate(steps):
        path = ("passes", i)
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            v.fail(path, "each pass must be a mapping with exactly one pass name, e.g. `- prune: {sparsity: 0.5}`")
        (pname, body), = item.items()
        if pname not in REGISTRY:
            v.fail(path, f"unknown pass `{pname}`", did_you_mean(str(pname), REGISTRY))
        if body is None:
            body = {}
        if not isinstance(body, dict):
            v.fail(path + (pname,), f"pass `{pname}`: settings must be a mapping, got {_describe(body)}")
        cls = REGISTRY[pname].Config
        cfg = v.build_config(pname, cls, body, path + (pname,), defaults)
        parsed.append(PassStep(pname, cfg, doc.line(*path)))
    _check_order(v, parsed)
    return Recipe(
        name=name,
        passes=tuple(parsed),
        version=version,
        description=description.strip(),
        seed=seed,
        defaults=defaults,
        calibration=calibration,
        evaluate=evaluate,
        gates=gates,
        source=source or filename,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def _base_dir(source: str) -> Path | None:
    if source.startswith("preset:"):
        return Path(str(resources.files("onnxzip.configs")))
    if source.startswith("<"):
        return None
    return Path(source).resolve().parent


_POSITIVE = ("samples", "batch", "runs", "latency_batch")
_NON_NEGATIVE = ("warmup", "threads")
_BOOLS = ("allow_fallback", "latency", "per_layer")


def _evaluate(v: _Validator, raw: Any, base_dir: Path | None) -> dict[str, Any]:
    """The ``evaluate:`` section, checked key by key and normalized (providers and metrics as
    lists, input shapes as lists of ints). Only keys the recipe sets are kept."""
    import re

    from onnxzip.evaluate import EVALUATE_KEYS
    from onnxzip.metrics import resolve_ref, split_ref

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        v.fail(("evaluate",), f"`evaluate` must be a mapping, got {_describe(raw)}", "example: `evaluate: {data: eval.npz, providers: [cpu]}`")
    out: dict[str, Any] = {}
    for k, value in raw.items():
        path = ("evaluate", k)
        where = f"evaluate: key `{k}`: "
        if k not in EVALUATE_KEYS:
            v.fail(path, f"evaluate: unknown key `{k}`", did_you_mean(str(k), EVALUATE_KEYS))
        hint = f"`{k}`: {EVALUATE_KEYS[k]}"
        if k in _BOOLS:
            if not isinstance(value, bool):
                v.fail(path, f"expected true or false, got {_describe(value)}", hint, where=where)
            out[k] = value
        elif k in _POSITIVE or k in _NON_NEGATIVE:
            lo = 1 if k in _POSITIVE else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                v.fail(path, f"expected an integer >= {lo}, got {_describe(value)}", hint, where=where)
            out[k] = value
        elif k == "data":
            if not isinstance(value, str) or not value:
                v.fail(path, f"expected a path, got {_describe(value)}", hint, where=where)
            out[k] = value
        elif k == "providers":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
                v.fail(path, f"expected a list of provider names, got {_describe(value)}", "e.g. `providers: [cpu, cuda]`", where=where)
            names = [x.strip() for x in items]
            for x in names:
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", x):
                    v.fail(path, f"`{x}` is not a provider name", "short names: `cpu`, `cuda`, `tensorrt`, ...; or an onnxruntime EP name such as `CUDAExecutionProvider`", where=where)
            out[k] = names
        elif k == "input_shapes":
            if not isinstance(value, dict):
                v.fail(path, f"expected a mapping of input name to shape, got {_describe(value)}", "e.g. `input_shapes: {input: 1x3x224x224}`", where=where)
            shapes = {}
            for name, shp in value.items():
                dims = None
                if isinstance(shp, str):
                    try:
                        dims = [int(d) for d in shp.lower().split("x")]
                    except ValueError:
                        dims = None
                elif isinstance(shp, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shp):
                    dims = list(shp)
                elif isinstance(shp, int) and not isinstance(shp, bool):
                    dims = [shp]
                if not dims or any(d < 1 for d in dims):
                    v.fail(path + (name,), f"shape of `{name}` must be positive sizes like `1x3x224x224`, got {_describe(shp)}", where="evaluate: key `input_shapes`: ")
                shapes[str(name)] = dims
            out[k] = shapes
        elif k == "metrics":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                v.fail(path, f"expected a list of `file.py:function`, got {_describe(value)}", "e.g. `metrics: [my_metrics.py:box_f1]` (paths relative to the recipe)", where=where)
            for i, ref in enumerate(items):
                try:
                    split_ref(ref)
                except ValueError as e:
                    v.fail(path + (i,), str(e), "write metrics as `path/to/file.py:function_name`, relative to the recipe", where=where)
                if base_dir is not None and not resolve_ref(ref, base_dir).is_file():
                    v.fail(path + (i,), f"file `{resolve_ref(ref, base_dir)}` not found", "metric paths are relative to the recipe file", where=where)
            out[k] = list(items)
    return out


def _gates(v: _Validator, raw: Any, evaluate: dict[str, Any]) -> dict[str, Any]:
    """The ``gates:`` section: built-in gates take a number in range, any other name a
    comparison string on a metric (built-in, or returned by ``evaluate.metrics``)."""
    from onnxzip.gates import BUILTIN_GATES, METRICS, GateValueError, make_gate

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        v.fail(("gates",), f"`gates` must be a mapping, got {_describe(raw)}", "example: `gates: {min_cosine: 0.99, min_compression: 2.0}`")
    out: dict[str, Any] = {}
    custom_metrics = bool(evaluate.get("metrics"))
    for k, value in raw.items():
        path = ("gates", k)
        if not isinstance(k, str):
            v.fail(path, f"gate name `{k}` must be a string")
        if k not in BUILTIN_GATES and k not in METRICS and not custom_metrics:
            v.fail(
                path,
                f"gates: unknown gate `{k}`",
                did_you_mean(k, list(BUILTIN_GATES) + list(METRICS)) + "; a task metric needs its function in `evaluate.metrics`",
            )
        if k not in BUILTIN_GATES and not k.isidentifier():
            v.fail(path, f"gates: `{k}` is not a metric name", "metric names are identifiers such as `box_f1`")
        try:
            make_gate(k, value)
        except GateValueError as e:
            v.fail(path, f"gates: {e.message}", e.hint)
        out[k] = float(value) if k in BUILTIN_GATES else value.strip()
    return out


def _mapping(v: _Validator, raw: dict, key: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        v.fail((key,), f"`{key}` must be a mapping, got {_describe(value)}")
    return value


def _defaults(v: _Validator, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        v.fail(("defaults",), f"`defaults` must be a mapping, got {_describe(raw)}")
    fields = config_fields(TargetConfig)
    hints = _hints(TargetConfig)
    allowed = [k for k in TARGET_KEYS if k != "overrides"]
    out = {}
    for k, value in raw.items():
        if k not in allowed:
            v.fail(("defaults", k), f"defaults: unknown key `{k}`", did_you_mean(str(k), allowed))
        out[k] = v.value(value, hints[k], fields[k], ("defaults", k), where=f"defaults: key `{k}`: ")
    return out


def _calibration(v: _Validator, raw: Any) -> Calibration | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        v.fail(("calibration",), f"`calibration` must be a mapping, got {_describe(raw)}", "example: `calibration: {data: calib.npz, samples: 128}`")
    allowed = [f.name for f in dataclasses.fields(Calibration)]
    for k in raw:
        if k not in allowed:
            v.fail(("calibration", k), f"calibration: unknown key `{k}`", did_you_mean(str(k), allowed))
    data = raw.get("data")
    if data is not None and not isinstance(data, str):
        v.fail(("calibration", "data"), f"calibration: `data` must be a path, got {_describe(data)}")
    out = {"data": data}
    for k in ("samples", "batch"):
        if k in raw:
            val = raw[k]
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                v.fail(("calibration", k), f"calibration: `{k}` must be a positive integer, got {_describe(val)}")
            out[k] = val
    return Calibration(**out)


def _check_order(v: _Validator, steps: list[PassStep]) -> None:
    positions: dict[str, list[int]] = {}
    for i, s in enumerate(steps):
        positions.setdefault(s.name, []).append(i)
    for rule in ORDER_RULES:
        first, then = positions.get(rule.first), positions.get(rule.then)
        if first and then and max(first) > min(then):
            v.fail(
                ("passes", max(first)),
                f"pass `{rule.first}` must come before `{rule.then}`: {rule.why}",
                f"move `{rule.first}` above `{rule.then}` in `passes`",
            )


# --------------------------------------------------------------------------- loading


def preset_names() -> list[str]:
    """Names of the recipes shipped in onnxzip.configs."""
    root = resources.files("onnxzip.configs")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    return resources.files("onnxzip.configs").joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def load_recipe(ref: str | Path) -> Recipe:
    """Load a recipe from a file path or a preset name (a file of that name wins)."""
    p = Path(ref)
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in str(ref) or "\\" in str(ref):
        return parse_recipe(_load_text(p), str(p), source=str(p))
    names = preset_names()
    if str(ref) in names:
        return parse_recipe(preset_text(str(ref)), f"{ref}.yaml", source=f"preset:{ref}")
    raise RecipeError(f"no recipe file or preset named `{ref}`", hint=did_you_mean(str(ref), names))


def config_doc(cls: type[PassConfig]) -> list[dict[str, str]]:
    """Key, type, default and help of every field of a pass config (for help and docs)."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        extra = ""
        if f.metadata.get("min") is not None or f.metadata.get("max") is not None:
            extra = f"; {_range_text(f.metadata)}"
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = list(default)
        out.append({"key": f.name, "type": _type_name(hints[f.name]), "default": repr(default), "help": f.metadata.get("help", "") + extra})
    return out


def recipe_summary(r: Recipe) -> dict[str, Any]:
    """The validated recipe as plain data (every default filled in)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return {
        "version": r.version,
        "name": r.name,
        "description": r.description,
        "seed": r.seed,
        "source": r.source,
        "sha256": r.sha256,
        "defaults": r.defaults,
        "calibration": dataclasses.asdict(r.calibration) if r.calibration else None,
        "passes": [{s.name: {k: plain(v) for k, v in dataclasses.asdict(s.config).items()}} for s in r.passes],
        "evaluate": r.evaluate,
        "gates": r.gates,
    }
