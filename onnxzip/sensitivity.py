"""Per-layer sensitivity: what compressing one layer alone costs in accuracy and saves in bytes.

The layers are the weights a recipe's weight passes target (``prune``, ``quantize``,
``factorize`` are the *knobs*; ``cast-fp16`` *follows*: a layer has it or not). For every
layer and every setting of a candidate grid, the layer alone is compressed -- the recipe
with per-node ``overrides``: the layer gets the setting, every other layer ``skip: true`` --
and the model is compared with the original on real data.

Grid (per layer: the product over the knob passes that target it, each pass also skippable,
plus ``off``: every pass skips the layer)::

    quantize   bits 8, 6, 5, 4, 3 (the recipe's method)
    prune      sparsity 0.3, 0.5, 0.7 (or the recipe's value and +-0.2), as `scope: layer`
    factorize  rank_ratio 0.5, 0.35, 0.25
    cast-fp16  the recipe's setting (only `off` removes it)

``--candidates PASS.KEY=V1,V2`` replaces a pass's list (several keys of one pass: their product).

Measured per setting: the model-level metric (top-1 agreement by default, cosine, SNR, a task
metric), the output noise-to-signal ratio ``sum (y - y')^2 / sum y^2`` (worst output; it adds
up over layers, which is what :mod:`onnxzip.tune` needs), and the stored bytes saved against
the *baseline*: the recipe with every layer off (what the recipe does to other tensors, e.g.
float16 biases, and passes such as ``simplify``). Every figure is measured, none estimated.

Fast path: the original outputs are computed once; the passes before the first weight pass
(``simplify``) run once; variants are built in memory with ``run_pipeline(check=False)`` and
measured on a subset of the data (``subset``). Variant recipes are rendered to YAML and parsed,
so a measured variant is exactly what that recipe text compresses to.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from onnxzip import model as M
from onnxzip.data import NpzData, input_signature
from onnxzip.errors import DataError, UsageError
from onnxzip.gates import Gate
from onnxzip.metrics import BUILTIN_METRICS, OutputStats, TaskMetric, load_metric, run_metric
from onnxzip.passes import REGISTRY
from onnxzip.passes.base import PassContext, TargetConfig
from onnxzip.pipeline import model_bytes, run_pipeline
from onnxzip.recipe import Recipe, coerce, config_fields, did_you_mean, parse_recipe

KNOB_PASSES = ("prune", "quantize", "factorize")
FOLLOWER_PASSES = ("cast-fp16",)
DEFAULT_BITS = (8, 6, 5, 4, 3)
DEFAULT_SPARSITY = (0.3, 0.5, 0.7)
DEFAULT_RANK_RATIO = (0.5, 0.35, 0.25)
DEFAULT_SUBSET = 256
DEFAULT_BATCH = 32

# Built-in metrics where larger is better; the others (errors, drops) are better small.
HIGHER_IS_BETTER = {"top1_agreement", "top1_accuracy", "cosine", "snr_db"}
LOWER_IS_BETTER = {"accuracy_drop", "max_abs_error", "mean_abs_error"}
_OUTPUT_METRICS = (*BUILTIN_METRICS, "accuracy_drop")


def higher_is_better(metric: str, op: str | None = None) -> bool:
    """Direction of a metric: built-ins by their meaning, task metrics by the budget's
    comparison (``>=``: higher is better), else assumed higher."""
    if metric in HIGHER_IS_BETTER:
        return True
    if metric in LOWER_IS_BETTER:
        return False
    return op not in ("<=", "<")


def glob_escape(name: str) -> str:
    """A glob matching exactly ``name`` (``[``, ``*``, ``?`` bracketed)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in name)


# --------------------------------------------------------------------------- grid


Items = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Knob:
    """The candidate overrides of one recipe step (``()`` is the step's own setting)."""

    step: int
    name: str  # pass name, or `name#i` when the recipe has the pass twice
    options: tuple[Items, ...]
    follower: bool = False


@dataclass(frozen=True)
class Setting:
    """One choice for one layer: per recipe step, override items or None (skip)."""

    steps: tuple[tuple[int, Items | None], ...]
    label: str

    @property
    def off(self) -> bool:
        return all(v is None for _, v in self.steps)

    def get(self, step: int) -> Items | None:
        return dict(self.steps).get(step)

    def to_dict(self, knobs: Mapping[int, Knob]) -> dict[str, Any]:
        return {knobs[s].name: (None if v is None else dict(v)) for s, v in self.steps}


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _label_items(items: Items) -> str:
    return ",".join(f"{k}={_fmt_value(v)}" for k, v in items if k not in ("scope", "max_layer_sparsity"))


def parse_candidate_specs(specs: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
    """``["quantize.bits=8,4", "prune.sparsity=0.5"]`` -> {pass: {key: [values]}} (values
    read as YAML scalars). UsageError when malformed."""
    out: dict[str, dict[str, list[Any]]] = {}
    for spec in specs:
        head, eq, values = spec.partition("=")
        pname, dot, key = head.strip().partition(".")
        if not eq or not dot or not key or not values.strip():
            raise UsageError(f"--candidates `{spec}` is not PASS.KEY=V1,V2,...", hint="e.g. --candidates quantize.bits=8,6,4 --candidates prune.sparsity=0.3,0.5")
        if pname not in KNOB_PASSES:
            raise UsageError(f"--candidates `{spec}`: pass `{pname}` has no tunable setting", hint=did_you_mean(pname, KNOB_PASSES))
        vals = []
        for raw in values.split(","):
            raw = raw.strip()
            try:
                vals.append(yaml.safe_load(raw) if raw else raw)
            except yaml.YAMLError:
                vals.append(raw)
        out.setdefault(pname, {})[key.strip()] = vals
    return out


def _probe(cfg: TargetConfig, items: Items) -> None:
    """Raise ConfigIssue/TypeError when ``items`` as a per-node override of ``cfg`` is invalid."""
    probe = dataclasses.replace(cfg, overrides=(("\0", items),))
    probe.check()
    eff = probe.for_names("\0")
    if eff is not None:
        eff.check()


def _default_lists(name: str, cfg: Any) -> dict[str, list[Any]]:
    if name == "quantize":
        return {"bits": list(DEFAULT_BITS)}
    if name == "prune":
        if cfg.method == "n:m":
            return {}
        s = cfg.sparsity
        if any(abs(s - d) < 1e-9 for d in DEFAULT_SPARSITY):
            return {"sparsity": list(DEFAULT_SPARSITY)}
        return {"sparsity": sorted({round(min(0.95, max(0.05, s + d)), 4) for d in (-0.2, 0.0, 0.2)})}
    if name == "factorize":
        return {"rank_ratio": list(DEFAULT_RANK_RATIO)}
    return {}


def build_knobs(recipe: Recipe, first: int, candidates: Mapping[str, Mapping[str, list[Any]]] | None = None) -> list[Knob]:
    """The knobs of ``recipe.passes[first:]``: validated option lists for prune/quantize/
    factorize, the recipe's own setting for cast-fp16."""
    from onnxzip.recipe import _check_range

    candidates = candidates or {}
    counts: dict[str, int] = {}
    for s in recipe.passes:
        counts[s.name] = counts.get(s.name, 0) + 1
    used = set()
    knobs: list[Knob] = []
    for i, step in enumerate(recipe.passes):
        if i < first or not isinstance(step.config, TargetConfig):
            continue
        label = step.name if counts[step.name] == 1 else f"{step.name}#{i}"
        if step.name in FOLLOWER_PASSES:
            knobs.append(Knob(i, label, ((),), follower=True))
            continue
        if step.name not in KNOB_PASSES:
            continue
        cfg = step.config
        given = step.name in candidates
        lists = dict(candidates[step.name]) if given else _default_lists(step.name, cfg)
        used.add(step.name)
        fields = config_fields(type(cfg))
        import typing

        hints = typing.get_type_hints(type(cfg))
        typed: dict[str, list[Any]] = {}
        for key, values in lists.items():
            if key not in fields or key in ("ops", "include", "exclude", "min_params", "overrides"):
                allowed = [k for k in fields if k not in ("ops", "include", "exclude", "min_params", "overrides")]
                raise UsageError(f"--candidates: pass `{step.name}` has no tunable key `{key}`", hint=did_you_mean(key, allowed))
            out = []
            for v in values:
                try:
                    cv = coerce(v, hints[key])
                except ValueError as e:
                    raise UsageError(f"--candidates {step.name}.{key}: {e}", hint=fields[key].metadata.get("help")) from None
                bad = _check_range(cv, fields[key].metadata)
                if bad:
                    raise UsageError(f"--candidates {step.name}.{key}: {bad}", hint=fields[key].metadata.get("help"))
                if cv not in out:
                    out.append(cv)
            typed[key] = out
        options: list[Items] = []
        keys = list(typed)
        for combo in itertools.product(*(typed[k] for k in keys)):
            items = list(zip(keys, combo, strict=True))
            if step.name == "prune" and getattr(cfg, "scope", "layer") == "global" and cfg.method == "magnitude":
                # one threshold over all layers would couple their settings: rank per layer
                items.append(("scope", "layer"))
                if cfg.max_layer_sparsity is not None:
                    items.append(("max_layer_sparsity", None))
            it = tuple(items)
            try:
                _probe(cfg, it)
            except Exception as e:  # ConfigIssue, TypeError
                if given:
                    msg = getattr(e, "message", str(e))
                    raise UsageError(f"--candidates {step.name} {_label_items(it)}: {msg}", hint=getattr(e, "hint", None)) from None
                continue
            if it not in options:
                options.append(it)
        if not options:  # nothing to vary: the recipe's own setting, on or off
            options = [()]
        knobs.append(Knob(i, label, tuple(options)))
    for pname in candidates:
        if pname not in used:
            raise UsageError(f"--candidates names pass `{pname}`, which the recipe does not run", hint="the recipe's passes: " + ", ".join(f"`{s.name}`" for s in recipe.passes))
    return knobs


def layer_settings(layer: Layer, knobs: Mapping[int, Knob]) -> list[Setting]:
    """Every setting of one layer: the product of its knob steps' options (each also
    skipped), followers on, then `off` (every step skips the layer). Off comes first."""
    steps = [s for s in layer.steps if s in knobs]
    kn = [knobs[s] for s in steps if not knobs[s].follower]
    fol = [knobs[s] for s in steps if knobs[s].follower]
    off = Setting(tuple((s, None) for s in steps), "off")
    out = [off]
    seen = {off.steps}
    for combo in itertools.product(*([None, *k.options] for k in kn)):
        per = {k.step: c for k, c in zip(kn, combo, strict=True)}
        per.update({f.step: () for f in fol})
        st = tuple((s, per[s]) for s in steps)
        if st in seen:
            continue
        seen.add(st)
        parts = []
        for k, c in zip(kn, combo, strict=True):
            if c is None:
                continue
            lab = _label_items(c)
            parts.append(f"{k.name}:{lab}" if lab else k.name)
        if not parts:
            parts = [f"{f.name} only" for f in fol]
        out.append(Setting(st, " ".join(parts)))
    return out


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class Layer:
    """A weight the recipe's weight passes target, named by its initializer."""

    name: str
    node: str
    op: str
    params: int
    bytes: int
    steps: tuple[int, ...]  # recipe steps targeting it


def find_layers(model: onnx.ModelProto, recipe: Recipe, first: int, knobs: Sequence[Knob]) -> list[Layer]:
    """The layers of ``recipe.passes[first:]``'s knob and follower steps, in graph order."""
    steps = {k.step for k in knobs}
    found: dict[str, dict[str, Any]] = {}
    sizes = {t.name: M.tensor_nbytes(t) for t in M.iter_tensors(model)}
    for i, step in enumerate(recipe.passes):
        if i not in steps:
            continue
        for name, node, n in REGISTRY[step.name].targets(model, step.config, []):
            d = found.setdefault(name, {"node": node.name, "op": node.op_type, "params": n, "steps": []})
            d["steps"].append(i)
    return [Layer(k, d["node"], d["op"], d["params"], sizes.get(k, 0), tuple(d["steps"])) for k, d in found.items()]


# --------------------------------------------------------------------------- recipe text


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float):
        return round(v, 10)
    return v


def _rel(path: str | Path, base_dir: Path | None, out_dir: Path) -> str:
    """A path as the new recipe must spell it: absolute stays absolute, relative (to the
    old recipe's folder, or the working directory) becomes relative to ``out_dir``."""
    p = Path(path)
    if p.is_absolute():
        return str(p)
    p = (base_dir / p) if base_dir is not None else p
    try:
        return os.path.relpath(p.resolve(), out_dir.resolve())
    except ValueError:  # another drive (Windows)
        return str(p.resolve())


def _config_doc(cfg: Any, recipe_defaults: Mapping[str, Any], overrides: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.name == "overrides":
            continue
        v = getattr(cfg, f.name)
        default = recipe_defaults.get(f.name, f.default) if isinstance(cfg, TargetConfig) else f.default
        if isinstance(default, list):
            default = tuple(default)
        if v != default:
            out[f.name] = _plain(v)
    if overrides:
        out["overrides"] = {g: d for g, d in overrides}
    return out


def _factorized_before(recipe: Recipe, step: int, layer: Layer) -> bool:
    return any(recipe.passes[s].name == "factorize" for s in layer.steps if s < step)


def render_recipe(
    base: Recipe,
    layers: Sequence[Layer],
    assignment: Mapping[str, Setting],
    *,
    out_dir: Path,
    name: str | None = None,
    description: str | None = None,
    gates: Mapping[str, Any] | None = None,
    calib: str | Path | None = None,
    header: Sequence[str] = (),
) -> str:
    """``base`` as YAML text, with an explicit override for every layer in ``assignment``
    (layers absent from it are off), placed before the recipe's own overrides. Relative
    paths are rewritten to hold from ``out_dir``."""
    base_dir = _recipe_dir(base)
    doc: dict[str, Any] = {"version": base.version, "name": name or base.name}
    desc = description if description is not None else base.description
    if desc:
        doc["description"] = desc
    doc["seed"] = base.seed
    if base.defaults:
        doc["defaults"] = {k: _plain(v) for k, v in base.defaults.items()}
    cal = base.calibration
    if cal is not None or calib is not None:
        c: dict[str, Any] = {}
        if calib is not None:
            c["data"] = _rel(calib, None, out_dir)
        elif cal is not None and cal.data:
            c["data"] = _rel(cal.data, base_dir, out_dir)
        if cal is not None:
            if cal.samples != 128:
                c["samples"] = cal.samples
            if cal.batch != 16:
                c["batch"] = cal.batch
        doc["calibration"] = c
    passes = []
    for i, step in enumerate(base.passes):
        cfg = step.config
        ovr: list[tuple[str, dict[str, Any]]] = []
        if isinstance(cfg, TargetConfig):
            tuned_globs: set[str] = set()
            for layer in layers:
                if i not in layer.steps:
                    continue
                setting = assignment.get(layer.name)
                items = setting.get(i) if setting is not None else None
                globs = [glob_escape(layer.name)]
                if _factorized_before(base, i, layer):
                    globs += [glob_escape(layer.name + "_lr_a"), glob_escape(layer.name + "_lr_b")]
                if items is None:  # cast-fp16 `all_float` obeys it too
                    body: dict[str, Any] = {"skip": True}
                else:
                    body = {}
                    for glob, base_items in cfg.overrides:  # the recipe's own per-node keys stay
                        if any(n and fnmatch.fnmatchcase(n, glob) for n in (layer.node, layer.name)):
                            body.update({k: _plain(v) for k, v in base_items if k != "skip" and v is not None})
                            break
                    body.update({k: _plain(v) for k, v in items})
                if not body and items == () and not any(g == o for g in globs for o, _ in cfg.overrides):
                    continue  # the pass's own setting: no override needed
                for g in globs:
                    ovr.append((g, dict(body)))
                    tuned_globs.add(g)
            for glob, base_items in cfg.overrides:
                if glob in tuned_globs:
                    continue
                ovr.append((glob, {k: _plain(v) for k, v in base_items if not (v is None and step.name == "factorize")}))
        d = _config_doc(cfg, base.defaults, ovr)
        passes.append({step.name: d})
    doc["passes"] = passes
    if base.evaluate:
        ev = dict(base.evaluate)
        if "data" in ev:
            ev["data"] = _rel(ev["data"], base_dir, out_dir)
        if "metrics" in ev:
            ev["metrics"] = [_rel(m.rsplit(":", 1)[0], base_dir, out_dir) + ":" + m.rsplit(":", 1)[1] for m in ev["metrics"]]
        doc["evaluate"] = ev
    g = dict(base.gates)
    g.update(gates or {})
    if g:
        doc["gates"] = g
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100, allow_unicode=True)
    head = "".join(f"# {h}\n" if h else "#\n" for h in header)
    return head + body


def _recipe_dir(recipe: Recipe) -> Path | None:
    from onnxzip.evaluate import recipe_dir

    return recipe_dir(recipe)


# --------------------------------------------------------------------------- data and metrics


@dataclass
class Measurement:
    """One model measured against the original on one split of the data."""

    bytes: int
    samples: int
    values: dict[str, list[float]]  # metric -> per output (task metrics: one value)
    nsr: float  # worst float output's noise-to-signal ratio
    latency_ms: float | None = None
    seconds: float = 0.0

    def worst(self, metric: str, op: str | None = None) -> float:
        vals = self.values.get(metric)
        if not vals:
            return float("nan")
        if any(math.isnan(v) for v in vals):
            return float("nan")
        return min(vals) if higher_is_better(metric, op) else max(vals)

    def passes(self, budgets: Sequence[Gate]) -> bool:
        from onnxzip.gates import _compare

        return all(_compare(self.worst(g.metric, g.op), g.op, g.limit) for g in budgets)

    def summary(self, metrics: Sequence[str]) -> dict[str, Any]:
        d: dict[str, Any] = {"samples": self.samples}
        for m in metrics:
            d[m] = self.worst(m)
        d["nsr"] = self.nsr
        if self.latency_ms is not None:
            d["latency_ms"] = self.latency_ms
        return d


def _nsr(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    noise = float(np.sum((a64 - b64) ** 2))
    signal = float(np.sum(a64 * a64))
    if math.isnan(noise):
        return float("inf")
    if signal == 0:
        return 0.0 if noise == 0 else float("inf")
    return noise / signal


def compare_outputs(orig: Mapping[str, np.ndarray], comp: Mapping[str, np.ndarray], labels: np.ndarray | None, task_metrics: Sequence[TaskMetric] = ()) -> tuple[dict[str, list[float]], float]:
    """Metric values per output (worst taken later) and the worst noise-to-signal ratio."""
    values: dict[str, list[float]] = {}
    nsr = 0.0
    for n, a in orig.items():
        b = comp.get(n)
        st = OutputStats(n)
        st.update(a, b, labels)
        r = st.result()
        for key in _OUTPUT_METRICS:
            if key in r and not isinstance(r[key], str):
                values.setdefault(key, []).append(float(r[key]))
        if a.dtype.kind == "f":
            if b is None or b.shape != a.shape:
                nsr = float("inf")
            else:
                nsr = max(nsr, _nsr(a, b))
    for tm in task_metrics:
        for k, v in run_metric(tm, dict(orig), dict(comp), labels).items():
            values.setdefault(k, []).append(v)
    return values, nsr


class EvalSet:
    """The evaluation data in memory, split deterministically, with the original model's
    outputs computed once."""

    def __init__(self, path: str | Path, model: onnx.ModelProto, *, samples: int | None = None, holdout: float = 0.0, subset: int | None = DEFAULT_SUBSET, seed: int = 0, batch: int = DEFAULT_BATCH, threads: int = 1):
        self.path = Path(path)
        data = NpzData(self.path)
        self.specs = input_signature(model)
        count = data.validate(self.specs)
        n = min(count, samples) if samples else count
        self.arrays = {s.name: np.ascontiguousarray(data.array(s.name)[:n]) for s in self.specs}
        labels = data.labels
        self.labels = labels[:n] if labels is not None else None
        data.close()
        self.n = n
        self.batch = batch
        self.threads = threads
        fixed = self.specs[0].shape[0] if self.specs and self.specs[0].shape and isinstance(self.specs[0].shape[0], int) else None
        self.fixed = fixed
        if not 0.0 <= holdout < 1.0:
            raise UsageError(f"--holdout {holdout} is out of range", hint="a fraction in [0, 1), e.g. 0.3")
        perm = np.random.default_rng([seed, n]).permutation(n)
        n_hold = round(holdout * n)
        if holdout > 0:
            n_hold = min(max(n_hold, 1), n - 1)
        if holdout > 0 and n < 2:
            raise DataError(f"data file `{self.path}` holds {n} sample; a held-out split needs at least 2", hint="give more samples, or --holdout 0")
        self.splits: dict[str, np.ndarray] = {
            "holdout": np.sort(perm[:n_hold]),
            "choose": np.sort(perm[n_hold:]),
        }
        self.splits["subset"] = np.sort(perm[n_hold:][: subset or n])
        self.splits["all"] = np.arange(n)
        sess = self.session(model, "original")
        self.names = [o.name for o in sess.get_outputs()]
        self.original = self.run(sess, self.splits["all"])

    def size(self, split: str) -> int:
        return len(self.splits[split])

    def session(self, model: onnx.ModelProto, what: str = "compressed") -> Any:
        from onnxzip.evaluate import ProviderPlan, _session_or_fail

        sess, _ = _session_or_fail(model, ProviderPlan("cpu", "CPUExecutionProvider", ("CPUExecutionProvider",)), self.threads, what)
        return sess

    def run(self, sess: Any, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for the samples ``idx`` (a fixed batch dim: padded last batch)."""
        step = self.fixed or self.batch
        names = [o.name for o in sess.get_outputs()]
        got: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for i in range(0, len(idx), step):
            sel = idx[i : i + step]
            keep = len(sel)
            if self.fixed and keep < self.fixed:
                sel = np.concatenate([sel, np.repeat(sel[-1:], self.fixed - keep)])
            feeds = {k: v[sel] for k, v in self.arrays.items()}
            for n, o in zip(names, sess.run(None, feeds), strict=True):
                got[n].append(o[:keep] if o.ndim and o.shape[0] == len(sel) else o)
        return {n: (np.concatenate(v) if v and v[0].ndim else (v[0] if v else np.zeros(0))) for n, v in got.items()}

    def measure(self, model: onnx.ModelProto, split: str, *, task_metrics: Sequence[TaskMetric] = (), latency: bool = False, sess: Any = None) -> Measurement:
        t0 = time.perf_counter()
        sess = sess or self.session(model)
        idx = self.splits[split]
        comp = self.run(sess, idx)
        orig = {n: (a[idx] if a.ndim and a.shape[0] == self.n else a) for n, a in self.original.items()}
        labels = self.labels[idx] if self.labels is not None else None
        values, nsr = compare_outputs(orig, comp, labels, task_metrics)
        lat = latency_ms(sess, {k: v[: (self.fixed or 1)] for k, v in self.arrays.items()}) if latency else None
        return Measurement(model_bytes(model), len(idx), values, nsr, lat, time.perf_counter() - t0)


def latency_ms(sess: Any, feeds: Mapping[str, np.ndarray], *, runs: int = 40, warmup: int = 5) -> float:
    """Median wall time of one run, in ms."""
    for _ in range(warmup):
        sess.run(None, dict(feeds))
    ts = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        sess.run(None, dict(feeds))
        ts.append(time.perf_counter_ns() - t)
    return float(np.median(ts)) / 1e6


def load_task_metrics(recipe: Recipe | None, refs: Sequence[str] = ()) -> list[TaskMetric]:
    """The recipe's ``evaluate.metrics`` (relative to the recipe) and ``refs`` (to the cwd)."""
    out = [load_metric(ref, _recipe_dir(recipe)) for ref in ((recipe.evaluate or {}).get("metrics", []) if recipe is not None else [])]
    out += [load_metric(ref, Path.cwd()) for ref in refs]
    return out


# --------------------------------------------------------------------------- the workbench


@dataclass
class Variant:
    text: str
    model: onnx.ModelProto


class Workbench:
    """Builds and measures per-layer variants of one model under one base recipe.

    The passes before the first weight pass run once (``prefix``); every variant starts
    from a copy of that model and runs the remaining passes without the pipeline's checks.
    """

    def __init__(
        self,
        model_path: str | Path,
        recipe: Recipe,
        data: str | Path,
        *,
        candidates: Mapping[str, Mapping[str, list[Any]]] | None = None,
        task_metrics: Sequence[str] = (),
        calib: str | Path | None = None,
        samples: int | None = None,
        holdout: float = 0.0,
        subset: int | None = DEFAULT_SUBSET,
        batch: int = DEFAULT_BATCH,
        threads: int = 1,
        out_dir: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ):
        from onnxzip.compress import calibration_source, files_size, model_files
        from onnxzip.evaluate import check_runs

        self.say = progress or (lambda m: None)
        self.model_path = Path(model_path)
        self.recipe = recipe
        self.calib = calib
        self.out_dir = (out_dir or Path.cwd()).resolve()
        self.tasks = load_task_metrics(recipe, task_metrics)
        self.calibration = calibration_source(recipe, calib)
        self.original = M.load_model(self.model_path)
        check_runs(self.original)
        if self.calibration is not None:
            self.calibration.data.validate(input_signature(self.original))
        self.original_bytes = files_size(model_files(self.model_path))
        self.first = next((i for i, s in enumerate(recipe.passes) if isinstance(s.config, TargetConfig)), len(recipe.passes))
        self.knobs = build_knobs(recipe, self.first, candidates)
        self.knob_by_step = {k.step: k for k in self.knobs}
        if not self.knobs:
            raise UsageError(
                f"recipe `{recipe.name}` has no weight pass to tune",
                hint="tune and sensitivity vary `prune`, `quantize`, `factorize` and `cast-fp16` per layer; e.g. -r kmeans-5bit",
            )
        t0 = time.perf_counter()
        self.data = EvalSet(data, self.original, samples=samples, holdout=holdout, subset=subset, seed=recipe.seed, batch=batch, threads=threads)
        self.prefix = self.original
        if self.first:
            prefix_recipe = dataclasses.replace(recipe, passes=recipe.passes[: self.first])
            m = onnx.ModelProto()
            m.CopyFrom(self.original)
            self.say("running " + ", ".join(f"`{s.name}`" for s in prefix_recipe.passes) + " once (the passes before the first weight pass)")
            self.prefix = run_pipeline(m, prefix_recipe, context=self._context(), check=False).model
        self.layers = find_layers(self.prefix, recipe, self.first, self.knobs)
        if not self.layers:
            raise UsageError(
                f"recipe `{recipe.name}` targets no weight of `{self.model_path}`",
                hint=f"`onnxzip inspect {self.model_path} -r RECIPE` shows what a recipe targets",
            )
        self.settings = {layer.name: layer_settings(layer, self.knob_by_step) for layer in self.layers}
        self.setup_seconds = time.perf_counter() - t0
        self.builds = 0

    def _context(self) -> PassContext:
        # A fresh context a run: the calibration statistics cache belongs to one model.
        return PassContext(seed=self.recipe.seed, recipe_dir=self.recipe.base_dir, calibration=self.calibration)

    def off(self, layer: Layer) -> Setting:
        return self.settings[layer.name][0]

    def text(self, assignment: Mapping[str, Setting], **kw: Any) -> str:
        return render_recipe(self.recipe, self.layers, assignment, out_dir=self.out_dir, calib=self.calib, **kw)

    def parse(self, text: str, filename: str = "tuned.yaml") -> Recipe:
        path = self.out_dir / filename
        return parse_recipe(text, str(path), source=str(path))

    def build(self, assignment: Mapping[str, Setting]) -> Variant:
        """The model ``assignment`` gives (absent layers: off), built in memory."""
        text = self.text(assignment)
        recipe = self.parse(text)
        m = onnx.ModelProto()
        m.CopyFrom(self.prefix)
        rest = dataclasses.replace(recipe, passes=recipe.passes[self.first :])
        log = logging.getLogger("onnxzip.pipeline")
        level = log.level
        log.setLevel(logging.ERROR)  # "selected no tensor" is the rule here, not news
        try:
            model = run_pipeline(m, rest, context=self._context(), check=False).model
        finally:
            log.setLevel(level)
        self.builds += 1
        return Variant(text, model)

    def measure(self, assignment: Mapping[str, Setting], split: str, *, latency: bool = False) -> Measurement:
        v = self.build(assignment)
        return self.data.measure(v.model, split, task_metrics=self.tasks, latency=latency)

    def measure_model(self, model: onnx.ModelProto, split: str, *, latency: bool = False) -> Measurement:
        return self.data.measure(model, split, task_metrics=self.tasks, latency=latency)


# --------------------------------------------------------------------------- the sweep


# How a key's value orders settings from mild to harsh (others must be equal to compare).
_MILDER_WHEN_HIGH = {"bits", "rank", "rank_ratio", "energy"}
_MILDER_WHEN_LOW = {"sparsity"}
_CONSTANT = {"scope", "max_layer_sparsity"}


def _harshness(items: Items | None) -> dict[str, Any] | None:
    """Per key, a value that grows with harshness (None: the pass skips the layer)."""
    if items is None:
        return None
    out: dict[str, Any] = {}
    for k, v in items:
        if k in _CONSTANT:
            continue
        if k in _MILDER_WHEN_HIGH and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = -float(v)
        elif k in _MILDER_WHEN_LOW and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
        else:
            out[k] = ("=", v)
    return out


def at_least_as_harsh(a: Setting, b: Setting) -> bool:
    """Whether ``a`` compresses the layer at least as hard as ``b`` in every pass."""
    steps_a = dict(a.steps)
    for step, items_b in b.steps:
        hb, ha = _harshness(items_b), _harshness(steps_a.get(step))
        if hb is None:
            continue
        if ha is None or set(ha) != set(hb):
            return False
        for k, vb in hb.items():
            va = ha[k]
            if isinstance(vb, tuple) or isinstance(va, tuple):
                if va != vb:
                    return False
            elif va < vb:
                return False
    return True


def clearly_misses(m: Measurement, baseline: Measurement, budgets: Sequence[Gate]) -> bool:
    """Whether ``m`` misses a budget by more than the baseline's room under it: for
    ``top1_agreement >= 0.99`` with a baseline of 1.0, below 0.98. A miss by one or two
    samples is noise on a small subset; such settings stay candidates for the end-to-end
    search, which judges them on the whole choose split."""
    for g in budgets:
        v, b = m.worst(g.metric, g.op), baseline.worst(g.metric, g.op)
        if math.isnan(v):
            return True
        if math.isnan(b) or math.isinf(b):
            room = 0.0
        else:
            room = max(0.0, (b - g.limit) if g.op in (">=", ">") else (g.limit - b) if g.op in ("<=", "<") else 0.0)
        miss = (g.limit - v) if g.op in (">=", ">") else (v - g.limit) if g.op in ("<=", "<") else (0.0 if v == g.limit else math.inf)
        if miss > room:
            return True
    return False


def _mild_first(settings: Sequence[Setting]) -> list[int]:
    """Indices of ``settings[1:]`` in an order where a setting comes after every milder one."""
    ranks: dict[str, list[float]] = {}
    for s in settings:
        for _, items in s.steps:
            for k, v in (_harshness(items) or {}).items():
                if not isinstance(v, tuple):
                    ranks.setdefault(k, []).append(v)
    order = {k: sorted(set(v)) for k, v in ranks.items()}

    def score(s: Setting) -> float:
        total = 0.0
        for _, items in s.steps:
            h = _harshness(items)
            if h is None:
                continue
            total += 1 + sum(order[k].index(v) for k, v in h.items() if not isinstance(v, tuple))
        return total

    return sorted(range(1, len(settings)), key=lambda i: (score(settings[i]), i))



@dataclass
class OptionResult:
    setting: Setting
    measurement: Measurement | None
    error: str | None = None
    skipped: bool = False


@dataclass
class LayerResult:
    layer: Layer
    options: list[OptionResult] = field(default_factory=list)
    complete: bool = True


@dataclass
class SensitivityResult:
    """The sweep: a baseline (every layer off) and each layer's options, on one split."""

    bench: Workbench
    metric: str
    higher: bool
    split: str
    baseline: Measurement
    layers: list[LayerResult]
    seconds: float
    latency: bool = False

    def saved(self, m: Measurement) -> int:
        return self.baseline.bytes - m.bytes

    def lost(self, m: Measurement) -> float:
        a, b = self.baseline.worst(self.metric), m.worst(self.metric)
        return (a - b) if self.higher else (b - a)

    def to_dict(self) -> dict[str, Any]:
        from onnxzip import __version__

        b = self.bench
        model_total = model_bytes(b.prefix)
        layers = []
        for lr in self.layers:
            opts = []
            for o in lr.options:
                d: dict[str, Any] = {"setting": o.setting.label, "passes": o.setting.to_dict(b.knob_by_step)}
                if o.measurement is None:
                    d["skipped" if o.skipped else "error"] = o.error
                else:
                    m = o.measurement
                    d.update(
                        {
                            "bytes": m.bytes,
                            "bytes_saved": self.saved(m),
                            "metric": m.worst(self.metric),
                            "metric_lost": self.lost(m),
                            "nsr": m.nsr,
                            "metrics": {k: m.worst(k) for k in sorted(m.values)},
                        }
                    )
                    if m.latency_ms is not None:
                        d["latency_ms"] = m.latency_ms
                opts.append(d)
            L = lr.layer
            layers.append(
                {
                    "name": L.name,
                    "node": L.node,
                    "op": L.op,
                    "params": L.params,
                    "bytes": L.bytes,
                    "share": L.bytes / model_total if model_total else None,
                    "passes": [b.knob_by_step[s].name for s in L.steps],
                    "complete": lr.complete,
                    "options": opts,
                }
            )
        return {
            "kind": "sensitivity",
            "onnxzip_version": __version__,
            "model": {"path": str(b.model_path), "sha256": M.model_hash(b.model_path), "bytes": b.original_bytes},
            "recipe": {"name": b.recipe.name, "source": b.recipe.source, "sha256": b.recipe.sha256},
            "data": {"path": str(b.data.path), "sha256": M.model_hash(b.data.path), "samples": b.data.n, "split": self.split, "measured_on": b.data.size(self.split)},
            "metric": {"name": self.metric, "higher_is_better": self.higher},
            "baseline": {
                "note": "every layer off: only what the recipe does besides the tuned layers",
                "bytes": self.baseline.bytes,
                "metric": self.baseline.worst(self.metric),
                "nsr": self.baseline.nsr,
            },
            "knobs": [{"pass": k.name, "step": k.step, "options": [dict(o) for o in k.options], "follower": k.follower} for k in b.knobs],
            "layers": layers,
            "variants": sum(len(lr.options) for lr in self.layers),
            "seconds": self.seconds,
        }


def sweep(
    bench: Workbench,
    *,
    metric: str = "top1_agreement",
    higher: bool | None = None,
    split: str = "subset",
    latency: bool = False,
    deadline: float | None = None,
    budgets: Sequence[Gate] = (),
    progress: Callable[[str], None] | None = None,
) -> SensitivityResult:
    """Compress each layer alone with each of its settings and measure on ``split``.

    Layers go largest first, so a ``deadline`` (``time.perf_counter()`` value) that cuts
    the sweep short leaves the small ones unmeasured (``complete: false``). Settings go
    mildest first; with ``budgets``, a setting at least as harsh in every pass as one that
    already misses them clearly (:func:`clearly_misses`) is not measured (``skipped``): more
    sparsity or fewer bits on top of a clear failure does not come back within budget, and
    this cuts sweeps of deep grids by half or more."""
    say = progress or (lambda m: None)
    t0 = time.perf_counter()
    hib = higher_is_better(metric) if higher is None else higher
    off_all: dict[str, Setting] = {}
    baseline = bench.measure(off_all, split, latency=latency)
    if metric not in baseline.values:
        known = sorted(baseline.values)
        raise UsageError(
            f"metric `{metric}` is not measured on this model and data",
            causes=[f"measured: {', '.join(f'`{k}`' for k in known)}"],
            hint="top-1 metrics need an output of class scores (float, last dim > 1), top1_accuracy labels; "
            "choose one with --metric, or give a task metric with --task-metric FILE.py:FUNCTION",
        )
    order = sorted(range(len(bench.layers)), key=lambda i: (-bench.layers[i].bytes, i))
    results: list[LayerResult | None] = [None] * len(bench.layers)
    total = sum(len(bench.settings[L.name]) - 1 for L in bench.layers)
    done = skipped = 0
    for pos, i in enumerate(order):
        layer = bench.layers[i]
        lr = LayerResult(layer)
        settings = bench.settings[layer.name]
        got: dict[int, OptionResult] = {0: OptionResult(settings[0], baseline)}  # off: the baseline itself
        failing: list[Setting] = []
        for k in _mild_first(settings):
            s = settings[k]
            if deadline is not None and time.perf_counter() > deadline:
                lr.complete = False
                break
            if budgets and any(at_least_as_harsh(s, f) for f in failing):
                got[k] = OptionResult(s, None, "not measured: a milder setting of this layer already misses the budget clearly", skipped=True)
                skipped += 1
                continue
            try:
                m = bench.measure({layer.name: s}, split, latency=latency)
                got[k] = OptionResult(s, m)
                if budgets and clearly_misses(m, baseline, budgets):
                    failing.append(s)
            except Exception as e:  # a setting the pass cannot apply to this layer
                from onnxzip.errors import OnnxzipError

                msg = e.message if isinstance(e, OnnxzipError) else f"{type(e).__name__}: {e}"
                got[k] = OptionResult(s, None, msg.splitlines()[0])
            done += 1
        lr.options = [got[k] for k in sorted(got)]
        results[i] = lr
        ok = [o for o in lr.options[1:] if o.measurement is not None and (not budgets or o.measurement.passes(budgets))]
        from onnxzip._format import fmt_bytes

        if ok:
            best = max(ok, key=lambda o: (baseline.bytes - o.measurement.bytes))
            what = f"most saved{' within the budget' if budgets else ''}: {fmt_bytes(baseline.bytes - best.measurement.bytes)} ({best.setting.label}, {metric} {best.measurement.worst(metric):.4f})"
        else:
            what = "no setting keeps the budget" if budgets else "no setting could be measured"
        say(f"sweep {pos + 1}/{len(order)}: {layer.name} ({layer.params} params): {what} [{done + skipped}/{total} variants, {time.perf_counter() - t0:.0f} s]")
        if deadline is not None and time.perf_counter() > deadline:
            for j in order[pos + 1 :]:
                L = bench.layers[j]
                results[j] = LayerResult(L, [OptionResult(bench.settings[L.name][0], baseline)], complete=False)
            say(f"sweep: time limit reached after {pos + 1} of {len(order)} layers; the others stay off")
            break
    return SensitivityResult(bench, metric, hib, split, baseline, [r for r in results if r is not None], time.perf_counter() - t0, latency)


# --------------------------------------------------------------------------- rendering


def table_rows(result: SensitivityResult) -> tuple[list[str], list[list[str]]]:
    """(columns, rows): one row per layer and setting, the layer named on its first row."""
    from onnxzip._format import fmt_bytes, fmt_pct

    total = model_bytes(result.bench.prefix)
    cols = ["layer", "params", "share", "setting", "saved", result.metric, "lost", "nsr"]
    rows = []
    for lr in result.layers:
        first = True
        for o in lr.options:
            m = o.measurement
            head = [lr.layer.name, str(lr.layer.params), fmt_pct(lr.layer.bytes / total if total else None)] if first else ["", "", ""]
            first = False
            if m is None:
                rows.append([*head, o.setting.label, "skipped" if o.skipped else "error", "", "", "" if o.skipped else (o.error or "")])
                continue
            rows.append([*head, o.setting.label, fmt_bytes(result.saved(m)), f"{m.worst(result.metric):.4f}", f"{result.lost(m):+.4f}", f"{m.nsr:.2e}"])
    return cols, rows


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def render_svg(result: SensitivityResult, *, width: int = 900, height: int = 560) -> str:
    """Bytes saved (x) against metric lost (y), one polyline of settings per layer, as a
    self-contained SVG (no dependency)."""
    from onnxzip._format import fmt_bytes

    pts: list[tuple[int, float, float, str]] = []  # layer index, saved, lost, label
    for li, lr in enumerate(result.layers):
        for o in lr.options:
            if o.measurement is not None:
                lost = result.lost(o.measurement)
                if math.isfinite(lost):
                    pts.append((li, float(result.saved(o.measurement)), lost, o.setting.label))
    left, right, top, bottom = 80, 250, 40, 60
    pw, ph = width - left - right, height - top - bottom
    xs = [p[1] for p in pts] or [0.0]
    ys = [p[2] for p in pts] or [0.0]
    x0, x1 = min(0.0, min(xs)), max(xs) or 1.0
    y0, y1 = min(0.0, min(ys)), max(ys) or 1.0
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y1 = y0 + 1e-3

    def X(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def Y(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">{_esc(result.bench.model_path.name)}: bytes saved vs {_esc(result.metric)} lost, each layer alone ({_esc(result.bench.recipe.name)})</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
    ]
    for k in range(6):
        xv = x0 + (x1 - x0) * k / 5
        yv = y0 + (y1 - y0) * k / 5
        out.append(f'<line x1="{X(xv):.1f}" y1="{top + ph}" x2="{X(xv):.1f}" y2="{top + ph + 5}" stroke="black"/>')
        out.append(f'<text x="{X(xv):.1f}" y="{top + ph + 18}" text-anchor="middle">{_esc(fmt_bytes(xv))}</text>')
        out.append(f'<line x1="{left - 5}" y1="{Y(yv):.1f}" x2="{left}" y2="{Y(yv):.1f}" stroke="black"/>')
        out.append(f'<text x="{left - 8}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
        out.append(f'<line x1="{left}" y1="{Y(yv):.1f}" x2="{left + pw}" y2="{Y(yv):.1f}" stroke="#eee"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 15}" text-anchor="middle">stored bytes saved (against every layer off)</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 18 {top + ph / 2})">{_esc(result.metric)} lost</text>')
    for li, lr in enumerate(result.layers):
        color = _PALETTE[li % len(_PALETTE)]
        mine = sorted((p for p in pts if p[0] == li), key=lambda p: p[1])
        if len(mine) > 1:
            path = " ".join(f"{X(p[1]):.1f},{Y(p[2]):.1f}" for p in mine)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-opacity="0.5"/>')
        out += [
            f'<circle cx="{X(p[1]):.1f}" cy="{Y(p[2]):.1f}" r="3.5" fill="{color}"><title>{_esc(lr.layer.name)}: {_esc(p[3])}: '
            f"saved {_esc(fmt_bytes(p[1]))}, lost {p[2]:.4g}</title></circle>"
            for p in mine
        ]
        ly = top + 14 * li
        if ly < height - 20:
            out.append(f'<rect x="{width - right + 15}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
            name = lr.layer.name if len(lr.layer.name) <= 34 else "..." + lr.layer.name[-31:]
            out.append(f'<text x="{width - right + 30}" y="{ly}">{_esc(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_plot(result: SensitivityResult, path: str | Path) -> None:
    """SVG written by hand; PNG (and other raster formats) with matplotlib (``pip install
    'onnxzip[plot]'``)."""
    from onnxzip.report import write_text

    path = Path(path)
    if path.suffix.lower() == ".svg":
        write_text(render_svg(result), path)
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(f"--plot `{path}`: a {path.suffix or 'non-SVG'} plot needs matplotlib", hint="write an .svg (no dependency), or pip install 'onnxzip[plot]'") from None
    fig, ax = plt.subplots(figsize=(9, 5.6))
    for lr in result.layers:
        pts = sorted((result.saved(o.measurement), result.lost(o.measurement)) for o in lr.options if o.measurement is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lr.layer.name, alpha=0.8)
    ax.set_xlabel("stored bytes saved (against every layer off)")
    ax.set_ylabel(f"{result.metric} lost")
    ax.set_title(f"{result.bench.model_path.name}: each layer alone ({result.bench.recipe.name})")
    if len(result.layers) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def sensitivity(
    model_path: str | Path,
    recipe: Recipe | str | Path,
    data: str | Path,
    *,
    metric: str = "top1_agreement",
    candidates: Sequence[str] | Mapping[str, Mapping[str, list[Any]]] = (),
    task_metrics: Sequence[str] = (),
    calib: str | Path | None = None,
    subset: int | None = DEFAULT_SUBSET,
    samples: int | None = None,
    batch: int = DEFAULT_BATCH,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> SensitivityResult:
    """Sweep every targeted layer of ``model_path`` over the candidate settings of
    ``recipe`` on the first ``subset`` samples of ``data`` (in a fixed shuffled order)."""
    from onnxzip.recipe import load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    cands = parse_candidate_specs(candidates) if not isinstance(candidates, Mapping) else candidates
    bench = Workbench(model_path, recipe, data, candidates=cands, task_metrics=task_metrics, calib=calib, samples=samples, subset=subset, batch=batch, threads=threads, progress=progress)
    return sweep(bench, metric=metric, progress=progress)


__all__ = [
    "EvalSet",
    "Knob",
    "Layer",
    "Measurement",
    "SensitivityResult",
    "Setting",
    "Workbench",
    "build_knobs",
    "compare_outputs",
    "find_layers",
    "glob_escape",
    "higher_is_better",
    "layer_settings",
    "parse_candidate_specs",
    "render_recipe",
    "render_svg",
    "sensitivity",
    "sweep",
    "write_plot",
]
