"""Measure a compressed model against its original on onnxruntime: latency, accuracy, and
(optionally) per-layer errors.

Providers
    ``providers=("cpu", "cuda")`` runs everything once per provider (short names map to
    onnxruntime's, any installed EP name passes through). A provider that is not available
    is a usage error (exit 2) unless ``allow_fallback``, which measures on CPU and says so.
    Each section records the providers the sessions actually used (``get_providers()``).
Latency
    both sessions in one process, after ``warmup`` runs each, timed interleaved
    (A B, B A, A B, ...) so drift hits both alike; ``runs`` defaults to enough for about
    2 s per model (10 to 10,000 runs). p50/p90/p99/mean/min in ms, speedup as the ratio of
    medians. Session creation is timed separately and includes Huffman decoding. When the
    compressed median is slower by more than the noise (the spread of the ratio across blocks
    of runs, at least 5%), ``explanation`` names the ops that are expected to cost the time.
Executed ops
    for a compressed model, on every provider (timed or not): the op types onnxruntime
    executes for each model after its graph optimizations, their difference, and the added
    ops expected to run slower than float (:mod:`onnxzip.executed_ops`). Deterministic.
Accuracy
    the user's ``.npz`` streamed in batches (:class:`~onnxzip.data.NpzData`), or, without one,
    inputs generated from the input signature (``synthetic: true`` in the report): floats
    standard normal, integer indices of a ``Gather`` below its table size, ``*mask*`` inputs
    ones, other integers 0/1. Unresolved symbolic dims default to 1 (``input_shapes``
    overrides) and are listed in the report. Metrics: :mod:`onnxzip.metrics`.
Per layer
    relative error of every float weight (matched by name, else by consuming node and input
    slot, after folding Cast/DequantizeLinear chains) and, with real data, of every
    intermediate tensor both graphs produce under the same name (run with onnxruntime's graph
    optimizations off so that the named tensors are the ones computed).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxzip import executed_ops as X
from onnxzip import model as M
from onnxzip.data import InputSpec, NpzData, input_signature
from onnxzip.errors import DataError, ModelError, UsageError
from onnxzip.gates import Gate, gates_from_mapping, merge
from onnxzip.metrics import OutputStats, TaskMetric, load_metric, relative_error, run_metric

DEFAULT_WARMUP = 5
MIN_RUNS, MAX_RUNS = 10, 10_000
TARGET_SECONDS = 2.0  # per model, when `runs` is not given
SYNTHETIC_SAMPLES = 16
PER_LAYER_SAMPLES = 64
BATCH_DIM_NAMES = {"n", "b", "bs", "batch", "batch_size", "batchsize", "batch_dim"}

# Recipe `evaluate:` keys -> (type description, checker). The recipe validator reads this.
EVALUATE_KEYS: dict[str, str] = {
    "providers": "a list of execution providers (`cpu`, `cuda`, or an onnxruntime EP name)",
    "allow_fallback": "true to measure on CPU when a requested provider is missing",
    "data": "evaluation data (.npz keyed by input name, optional `labels`), relative to the recipe",
    "samples": "use at most this many samples of the data (generated inputs: how many to make)",
    "batch": "batch size for accuracy runs",
    "input_shapes": "shapes for generated inputs, e.g. `{input: 1x3x224x224}`",
    "latency": "false to skip latency measurement",
    "runs": "timed runs per model (default: about 2 s per model)",
    "warmup": "untimed runs per model before timing",
    "threads": "onnxruntime intra-op threads (0: onnxruntime's default)",
    "latency_batch": "batch size of the latency feed",
    "metrics": "task metrics, `file.py:function` (code the recipe runs)",
    "per_layer": "true to report per-weight and per-tensor errors",
}


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate. ``latency=None`` lets the caller decide (see :func:`resolve_latency`)."""

    providers: tuple[str, ...] = ("cpu",)
    allow_fallback: bool = False
    data: Path | None = None
    samples: int | None = None
    batch: int = 32
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    latency: bool | None = None
    runs: int | None = None
    warmup: int = DEFAULT_WARMUP
    threads: int = 1
    latency_batch: int = 1
    metrics: tuple[str, ...] = ()
    metrics_dir: Path | None = None  # base of relative metric paths (the recipe's folder)
    per_layer: bool = False
    seed: int = 0

    def settings(self) -> dict[str, Any]:
        """The options as plain data (for reports and batch resume checks)."""
        return {
            "providers": list(self.providers),
            "allow_fallback": self.allow_fallback,
            "data": str(self.data) if self.data else None,
            "samples": self.samples,
            "batch": self.batch,
            "input_shapes": {k: list(v) for k, v in sorted(self.input_shapes.items())},
            "latency": self.latency,
            "runs": self.runs,
            "warmup": self.warmup,
            "threads": self.threads,
            "latency_batch": self.latency_batch,
            "metrics": list(self.metrics),
            "per_layer": self.per_layer,
            "seed": self.seed,
        }


def recipe_dir(recipe: Any) -> Path | None:
    """Folder that the recipe's relative paths start from (presets: the shipped configs)."""
    if recipe is None:
        return None
    if recipe.base_dir is not None:
        return recipe.base_dir
    if recipe.source and str(recipe.source).startswith("preset:"):
        from importlib import resources

        return Path(str(resources.files("onnxzip.configs")))
    return None


def options_from_recipe(recipe: Any, **overrides: Any) -> EvalOptions:
    """Options from the recipe's validated ``evaluate:`` mapping, then ``overrides`` (flags;
    None values are ignored)."""
    ev = dict(getattr(recipe, "evaluate", None) or {})
    base = recipe_dir(recipe)
    kw: dict[str, Any] = {"seed": getattr(recipe, "seed", 0), "metrics_dir": base}
    for k, v in ev.items():
        if k == "providers":
            kw[k] = tuple(v)
        elif k == "data":
            p = Path(v)
            kw[k] = p if p.is_absolute() or base is None else base / p
        elif k == "input_shapes":
            kw[k] = {n: tuple(s) for n, s in v.items()}
        elif k == "metrics":
            kw[k] = tuple(v)
        else:
            kw[k] = v
    for k, v in overrides.items():
        if v is None:
            continue
        if k == "metrics":  # flag metrics add to the recipe's, relative to the working directory
            kw["metrics"] = tuple(kw.get("metrics", ())) + tuple(str(Path(m.rsplit(":", 1)[0]).resolve()) + ":" + m.rsplit(":", 1)[1] for m in v)
        elif k == "input_shapes":
            kw[k] = {**kw.get(k, {}), **v}
        else:
            kw[k] = v
    return EvalOptions(**kw)


# Evaluation options that, given on their own, ask for an evaluation.
_EVAL_TRIGGERS = ("providers", "data", "metrics", "per_layer", "runs", "input_shapes", "samples", "allow_fallback")


@dataclass(frozen=True)
class EvalPlan:
    """What a run will measure and judge: options (None: no evaluation) and gates."""

    options: EvalOptions | None
    gates: tuple[Gate, ...] = ()
    enforce: bool = True
    strict: bool = False

    def settings(self) -> dict[str, Any]:
        return {
            "evaluate": self.options.settings() if self.options else None,
            "gates": [{"name": g.name, "metric": g.metric, "op": g.op, "limit": g.limit, "source": g.source} for g in self.gates],
            "enforce_gates": self.enforce,
            "strict_gates": self.strict,
        }


def plan_evaluation(
    recipe: Any,
    *,
    evaluate: bool | None = None,
    overrides: Mapping[str, Any] | None = None,
    gates: Sequence[Gate] = (),
    enforce: bool = True,
    strict: bool = False,
    latency_default: bool | None = None,
) -> EvalPlan:
    """Decide what to measure: the recipe's ``evaluate:`` and ``gates:``, then flags.

    ``evaluate`` True forces an evaluation, False forbids it (gates that need one are then
    reported as not evaluated), None decides from the recipe, the overrides and the gates.
    Latency follows ``overrides['latency']``, then the recipe, then ``latency_default``,
    then: on when evaluation was asked for, else only when a latency gate needs it."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None and v not in ((), {}, [])}
    recipe_gates = gates_from_mapping(recipe.gates) if recipe is not None else []
    all_gates = tuple(merge(recipe_gates, gates))
    recipe_eval = bool(getattr(recipe, "evaluate", None))
    asked = bool(evaluate) or recipe_eval or any(k in overrides for k in _EVAL_TRIGGERS) or overrides.get("latency") is True
    needed = any(g.needs_evaluation() for g in all_gates)
    if evaluate is False or not (asked or needed):
        return EvalPlan(None, all_gates, enforce, strict)
    options = options_from_recipe(recipe, **overrides)
    if options.latency is None:
        if latency_default is not None:
            lat = latency_default
        else:
            lat = asked or any(g.needs_latency() for g in all_gates)
        options = replace(options, latency=lat)
    return EvalPlan(options, all_gates, enforce, strict)


# --------------------------------------------------------------------------- providers


@dataclass(frozen=True)
class ProviderPlan:
    """One requested provider: the ORT provider list to use and why it differs, if it does."""

    requested: str
    name: str
    providers: tuple[str, ...]
    fallback: str | None = None


def plan_providers(names: Sequence[str], allow_fallback: bool = False) -> list[ProviderPlan]:
    """Resolve provider names; a missing one is a UsageError unless ``allow_fallback``."""
    import onnxruntime as ort

    from onnxzip.runtime import PROVIDER_ALIASES

    available = ort.get_available_providers()
    plans: list[ProviderPlan] = []
    seen = set()
    for raw in names or ("cpu",):
        n = raw.strip()
        if not n:
            continue
        full = PROVIDER_ALIASES.get(n.lower(), n)
        if full in seen:
            continue
        seen.add(full)
        if full in available:
            provs = (full,) if full == "CPUExecutionProvider" else (full, "CPUExecutionProvider")
            plans.append(ProviderPlan(n, full, provs))
            continue
        if not allow_fallback:
            known = ", ".join(f"`{k}`" for k in PROVIDER_ALIASES)
            if full == "CUDAExecutionProvider":
                hint = "install the `cuda` extra: pip install 'onnxzip[cuda]' (onnxruntime-gpu); or pass --allow-fallback to measure on CPU"
            else:
                hint = f"available here: {', '.join(available)}; short names: {known}; --allow-fallback measures on CPU instead"
            raise UsageError(f"execution provider `{n}` ({full}) is not available", hint=hint)
        plans.append(ProviderPlan(n, full, ("CPUExecutionProvider",), f"{full} is not available here; measured on CPUExecutionProvider"))
    if not plans:
        raise UsageError("no execution provider given", hint="e.g. --providers cpu or --providers cpu,cuda")
    return plans


# --------------------------------------------------------------------------- inputs


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"input=1x3x224x224"`` -> (``"input"``, (1, 3, 224, 224)); ``"1x64"`` -> (``""``, (1, 64))."""
    name, _, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
    except ValueError:
        raise UsageError(f"input shape `{text}` is not NAME=DxDxD", hint="e.g. --input-shape input=1x3x224x224") from None
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f"input shape `{text}` has a dimension below 1", hint="every dimension must be a positive integer")
    return name.strip(), shape


def _bind_shapes(specs: list[InputSpec], shapes: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Concrete shapes for every input: user shapes first, then symbolic dims bound
    consistently across inputs, then 1 for whatever is left (listed as assumed)."""
    shapes = dict(shapes)
    if "" in shapes:
        if len(specs) != 1:
            raise UsageError(
                "an --input-shape without a name needs a model with one input",
                hint=f"name it: {' '.join(f'--input-shape {s.name}=...' for s in specs)}",
            )
        shapes[specs[0].name] = shapes.pop("")
    names = {s.name for s in specs}
    for n in shapes:
        if n not in names:
            from onnxzip.recipe import did_you_mean

            raise UsageError(f"--input-shape names `{n}`, which is not a model input", hint=did_you_mean(n, sorted(names)))
    params: dict[str, int] = {}
    out: dict[str, tuple[int, ...]] = {}
    for s in specs:
        if s.name not in shapes:
            continue
        given = shapes[s.name]
        if len(given) != len(s.shape) or any(isinstance(d, int) and d != g for d, g in zip(s.shape, given, strict=True)):
            raise UsageError(
                f"input shape for `{s.name}` is {'x'.join(map(str, given))}, the model expects {s.describe()}",
                hint="give one positive size per dimension; fixed dimensions must match the model",
            )
        for d, g in zip(s.shape, given, strict=True):
            if isinstance(d, str):
                params.setdefault(d, g)
        out[s.name] = given
    assumed: list[str] = []
    for s in specs:
        if s.name in out:
            continue
        dims = []
        for i, d in enumerate(s.shape):
            if isinstance(d, int):
                dims.append(d)
            elif isinstance(d, str) and d in params:
                dims.append(params[d])
            else:
                label = f"`{d}`" if d else "unnamed"
                kind = "batch" if i == 0 or (isinstance(d, str) and d.lower() in BATCH_DIM_NAMES) else "size"
                assumed.append(f"{s.name}[{i}] ({label} {kind} dim) = 1")
                if isinstance(d, str):
                    params[d] = 1
                dims.append(1)
        out[s.name] = tuple(dims)
    return out, assumed


def _gather_bound(model: onnx.ModelProto, name: str) -> int | None:
    """Size of the table a Gather indexes with input ``name`` (for valid token ids)."""
    inits = {t.name: t for t in model.graph.initializer}
    bound = None
    for n in model.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == name and n.input[0] in inits:
            t = inits[n.input[0]]
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            if t.dims:
                size = int(t.dims[axis if axis >= 0 else axis + len(t.dims)])
                bound = size if bound is None else min(bound, size)
    return bound


def synthetic_batches(model: onnx.ModelProto, specs: list[InputSpec], shapes: Mapping[str, tuple[int, ...]], *, samples: int, seed: int) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Generated feeds from the input signature, and the report's description of them."""
    bound, assumed = _bind_shapes(specs, shapes)
    rng = np.random.default_rng([seed, 0x0E7A1])
    batch = max(1, bound[specs[0].name][0] if specs and bound[specs[0].name] else 1)
    n_batches = max(1, math.ceil(samples / batch))
    feeds: list[dict[str, np.ndarray]] = []
    for _ in range(n_batches):
        f = {}
        for s in specs:
            shape = bound[s.name]
            kind = s.dtype.kind
            if kind == "f":
                a = rng.standard_normal(shape).astype(s.dtype)
            elif kind in "iu":
                g = _gather_bound(model, s.name)
                if g:
                    a = rng.integers(0, g, size=shape).astype(s.dtype)
                elif "mask" in s.name.lower():
                    a = np.ones(shape, dtype=s.dtype)
                else:
                    a = rng.integers(0, 2, size=shape).astype(s.dtype)
            elif kind == "b":
                a = np.ones(shape, dtype=bool)
            else:
                raise DataError(
                    f"cannot generate values for input `{s.name}` ({s.describe()})",
                    hint="give evaluation data with --data (an .npz keyed by input name)",
                )
            f[s.name] = a
        feeds.append(f)
    info = {
        "source": "generated",
        "synthetic": True,
        "samples": n_batches * batch,
        "labels": False,
        "shapes": {s.name: list(bound[s.name]) for s in specs},
        "assumed_dims": assumed,
    }
    return feeds, info


# --------------------------------------------------------------------------- sessions


def _session(model: onnx.ModelProto, plan: ProviderPlan, threads: int, optimization: str = "all") -> tuple[Any, float]:
    from onnxzip.runtime import session_from_model

    t0 = time.perf_counter()
    sess = session_from_model(model, plan.providers, threads=threads or None, optimization=optimization)
    return sess, time.perf_counter() - t0


def _check_used(sess: Any, plan: ProviderPlan, allow_fallback: bool, what: str) -> str | None:
    used = sess.get_providers()
    if plan.name in used or plan.fallback:
        return plan.fallback
    msg = f"{plan.name} is listed as available but the {what} session runs on {', '.join(used)}"
    if allow_fallback:
        return msg
    raise UsageError(
        f"execution provider `{plan.requested}` could not be initialised for the {what} model",
        causes=[msg],
        hint="check the CUDA/cuDNN libraries onnxruntime-gpu needs (see its requirements page), or pass --allow-fallback",
    )


def _run(sess: Any, feeds: dict[str, np.ndarray], what: str, provider: str) -> list[np.ndarray]:
    try:
        return sess.run(None, feeds)
    except Exception as e:
        shapes = ", ".join(f"`{k}` {v.dtype.name}[{'x'.join(map(str, v.shape))}]" for k, v in feeds.items())
        raise DataError(
            f"onnxruntime failed to run the {what} model on {provider}",
            causes=[str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, f"inputs: {shapes}"],
            hint="check the data's shapes against `onnxzip inspect MODEL`, or give --input-shape for generated inputs",
        ) from None


def _ratio_noise(ns_a: Sequence[int], ns_b: Sequence[int], blocks: int = 5) -> float | None:
    """How much the compressed/original ratio of medians moves between blocks of consecutive
    runs: half the spread of the per-block ratios, relative to the overall ratio (None with
    fewer than two runs a block). Drift and bursts of load show up here, not in the medians."""
    n = min(len(ns_a), len(ns_b))
    size = n // blocks
    if size < 2:
        return None
    a, b = np.asarray(ns_a[:n], dtype=np.float64), np.asarray(ns_b[:n], dtype=np.float64)
    overall = float(np.median(b) / np.median(a))
    ratios = [float(np.median(b[i * size:(i + 1) * size]) / np.median(a[i * size:(i + 1) * size])) for i in range(blocks)]
    return round((max(ratios) - min(ratios)) / 2 / overall, 4) if overall else None


def _executed_ops(original: onnx.ModelProto, compressed: onnx.ModelProto, plan: ProviderPlan, batch: int) -> dict[str, Any]:
    """The report's ``executed_ops`` entry for one provider; ``{"error": ...}`` when
    onnxruntime cannot write its optimized graph (e.g. a provider that compiles the graph)."""
    try:
        return X.compare_models(original, compressed, plan.providers, batch=batch)
    except Exception as e:  # onnxruntime raises its own types; the evaluation goes on without this section
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return {"error": f"onnxruntime's optimized graph could not be read: {first[:300]}"}


def _stats_ms(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 6),
        "p90_ms": round(float(np.percentile(a, 90)), 6),
        "p99_ms": round(float(np.percentile(a, 99)), 6),
        "mean_ms": round(float(a.mean()), 6),
        "min_ms": round(float(a.min()), 6),
    }


def measure_latency(sessions: Sequence[Any], feeds: dict[str, np.ndarray], *, runs: int | None, warmup: int, target_seconds: float = TARGET_SECONDS) -> tuple[list[list[int]], int]:
    """Interleaved timings (ns) of each session on ``feeds``; returns (timings, runs)."""
    last = [0.0] * len(sessions)
    for _ in range(max(1, warmup)):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter_ns()
            s.run(None, feeds)
            last[i] = (time.perf_counter_ns() - t0) / 1e9
    if runs is None:
        fastest = max(min(last), 1e-7)
        runs = int(min(MAX_RUNS, max(MIN_RUNS, math.ceil(target_seconds / fastest))))
    times: list[list[int]] = [[] for _ in sessions]
    order = list(range(len(sessions)))
    for r in range(runs):
        seq = order if r % 2 == 0 else order[::-1]
        for i in seq:
            s = sessions[i]
            t0 = time.perf_counter_ns()
            s.run(None, feeds)
            times[i].append(time.perf_counter_ns() - t0)
    return times, runs


# --------------------------------------------------------------------------- evaluator


class Evaluator:
    """Checks everything it can before a model is touched (providers, data file, metric code),
    then measures. ``progress`` gets short status lines."""

    def __init__(self, options: EvalOptions, *, progress: Callable[[str], None] | None = None):
        self.options = options
        self.progress = progress or (lambda _msg: None)
        self.plans = plan_providers(options.providers, options.allow_fallback)
        self.data = NpzData(options.data, what="evaluation data") if options.data else None
        self.metrics: list[TaskMetric] = [load_metric(ref, options.metrics_dir) for ref in options.metrics]

    def check_model(self, model: onnx.ModelProto) -> None:
        """Validate the data (or the input shapes) against the model's inputs."""
        specs = input_signature(model)
        if self.data is not None:
            self.data.validate(specs)
        else:
            _bind_shapes(specs, self.options.input_shapes)

    def _batches(self, model: onnx.ModelProto, specs: list[InputSpec]) -> tuple[Callable[[], Iterator[tuple[dict, np.ndarray | None]]], dict[str, Any]]:
        o = self.options
        if self.data is not None:
            count = self.data.validate(specs)
            used = min(count, o.samples) if o.samples else count
            info = {
                "source": str(self.data.path),
                "sha256": M.model_hash(self.data.path),
                "synthetic": False,
                "samples": used,
                "labels": self.data.labels is not None,
            }
            fixed = specs[0].shape[0] if specs and specs[0].shape and isinstance(specs[0].shape[0], int) else None
            if fixed and used % fixed:
                info["samples"] = used - used % fixed
                info["dropped"] = used % fixed
            return (lambda: self.data.labeled_batches(specs, o.batch, used)), info
        feeds, info = synthetic_batches(model, specs, o.input_shapes, samples=o.samples or SYNTHETIC_SAMPLES, seed=o.seed)
        return (lambda: iter([(f, None) for f in feeds])), info

    def _latency_batch(self, specs: list[InputSpec]) -> int:
        """Batch of the latency feed: the model's fixed batch dimension, else ``latency_batch``."""
        fixed = specs[0].shape[0] if specs and specs[0].shape and isinstance(specs[0].shape[0], int) else None
        return fixed or self.options.latency_batch

    def _latency_feed(self, model: onnx.ModelProto, specs: list[InputSpec]) -> dict[str, np.ndarray]:
        o = self.options
        n = self._latency_batch(specs)
        if self.data is not None:
            feed = next(iter(self.data.batches(specs, n, n)), {})
            got = next(iter(feed.values())).shape[0] if feed and next(iter(feed.values())).ndim else n
            if got >= n:
                return feed
            reps = math.ceil(n / got)  # fewer samples than the latency batch: repeat them
            return {k: np.concatenate([v] * reps)[:n] for k, v in feed.items()}
        shapes = dict(o.input_shapes)
        base, _ = _bind_shapes(specs, shapes)
        first = specs[0].name if specs else None
        if first and base[first] and not isinstance(specs[0].shape[0], int) and first not in shapes and "" not in shapes:
            shapes[first] = (n,) + base[first][1:]
        feeds, _ = synthetic_batches(model, specs, shapes, samples=1, seed=o.seed + 1)
        return feeds[0]

    def run(self, original: onnx.ModelProto, compressed: onnx.ModelProto | None) -> dict[str, Any]:
        """The report's ``evaluation`` section. ``compressed`` None measures ``original`` alone."""
        o = self.options
        t_start = time.perf_counter()
        specs = input_signature(original)
        make_batches, data_info = self._batches(original, specs)
        latency_on = bool(o.latency)
        providers_out, latency, accuracy = [], {}, {}
        executed: dict[str, dict[str, Any]] = {}
        plain: list[onnx.ModelProto] = []  # the compressed model decoded once, for every provider
        for plan in self.plans:
            self.progress(f"evaluating on {plan.name}" + (f" ({plan.fallback})" if plan.fallback else ""))
            sa, ta = _session_or_fail(original, plan, o.threads, "original")
            used_a = sa.get_providers()
            fb = _check_used(sa, plan, o.allow_fallback, "original")
            sb = tb = used_b = None
            if compressed is not None:
                sb, tb = _session_or_fail(compressed, plan, o.threads, "compressed")
                used_b = sb.get_providers()
                fb = _check_used(sb, plan, o.allow_fallback, "compressed") or fb
            providers_out.append(
                {
                    "requested": plan.requested,
                    "provider": plan.name,
                    "used": {"original": used_a, **({"compressed": used_b} if used_b is not None else {})},
                    "fallback": fb,
                }
            )
            accuracy[plan.name] = self._accuracy(sa, sb, make_batches, plan.name)
            if compressed is not None:
                self.progress(f"executed ops on {plan.name}")
                if not plain:
                    from onnxzip.runtime import to_plain

                    plain.append(to_plain(compressed))
                executed[plan.name] = _executed_ops(original, plain[0], plan, self._latency_batch(specs))
            if latency_on:
                feed = self._latency_feed(original, specs)
                sessions = [sa] + ([sb] if sb is not None else [])
                for i, s in enumerate(sessions):
                    _run(s, feed, ("original", "compressed")[i], plan.name)
                times, runs = measure_latency(sessions, feed, runs=o.runs, warmup=o.warmup)
                entry: dict[str, Any] = {
                    "batch": int(next(iter(feed.values())).shape[0]) if feed and next(iter(feed.values())).ndim else 1,
                    "threads": o.threads,
                    "runs": runs,
                    "warmup": max(1, o.warmup),
                    "original": {"session_seconds": round(ta, 6), **_stats_ms(times[0])},
                }
                if sb is not None:
                    entry["compressed"] = {"session_seconds": round(tb, 6), **_stats_ms(times[1])}
                    p50a, p50b = entry["original"]["p50_ms"], entry["compressed"]["p50_ms"]
                    entry["latency_ratio"] = round(p50b / p50a, 4) if p50a else None
                    entry["speedup"] = round(p50a / p50b, 4) if p50b else None
                    entry["latency_ratio_noise"] = _ratio_noise(times[0], times[1])
                    entry["slower"] = X.is_slower(p50a, p50b, entry["latency_ratio_noise"])
                    entry["explanation"] = X.explain_latency(p50a, p50b, executed.get(plan.name), entry["latency_ratio_noise"])
                latency[plan.name] = entry
        per_layer = None
        if o.per_layer and compressed is not None:
            self.progress("per-layer errors")
            per_layer = per_layer_errors(original, compressed, make_batches if not data_info["synthetic"] else None)
        return {
            "providers": providers_out,
            "threads": o.threads,
            "seed": o.seed,
            "data": data_info,
            "latency": latency or None,
            "executed_ops": executed or None,
            "accuracy": accuracy,
            "metrics": list(o.metrics),
            "per_layer": per_layer,
            "seconds": round(time.perf_counter() - t_start, 4),
        }

    def _accuracy(self, sa: Any, sb: Any | None, make_batches: Callable, provider: str) -> dict[str, Any]:
        names_a = [x.name for x in sa.get_outputs()]
        names_b = [x.name for x in sb.get_outputs()] if sb is not None else []
        stats = {n: OutputStats(n) for n in names_a}
        keep = bool(self.metrics) and sb is not None
        got_a: dict[str, list[np.ndarray]] = {n: [] for n in names_a}
        got_b: dict[str, list[np.ndarray]] = {n: [] for n in names_b}
        all_labels: list[np.ndarray] = []
        samples = 0
        for feeds, labels in make_batches():
            oa = dict(zip(names_a, _run(sa, feeds, "original", provider), strict=True))
            ob = dict(zip(names_b, _run(sb, feeds, "compressed", provider), strict=True)) if sb is not None else {}
            samples += next(iter(feeds.values())).shape[0] if feeds and next(iter(feeds.values())).ndim else 1
            for n in names_a:
                if sb is not None and n not in ob:
                    stats[n].update(oa[n], None, labels)
                    stats[n].mismatch = "the compressed model has no output of this name"
                    continue
                stats[n].update(oa[n], ob.get(n), labels)
            if keep:
                for n in names_a:
                    got_a[n].append(oa[n])
                for n in names_b:
                    got_b[n].append(ob[n])
                if labels is not None:
                    all_labels.append(labels)
        out: dict[str, Any] = {"samples": samples, "outputs": {n: s.result() for n, s in stats.items()}}
        if keep:
            orig = {n: _concat(v) for n, v in got_a.items()}
            comp = {n: _concat(v) for n, v in got_b.items()}
            labels = np.concatenate(all_labels) if all_labels else None
            metrics: dict[str, float] = {}
            for m in self.metrics:
                for k, v in run_metric(m, orig, comp, labels).items():
                    if k in metrics:
                        raise DataError(f"metric name `{k}` is returned by two metric functions", hint="rename one of them")
                    metrics[k] = v
            out["metrics"] = dict(sorted(metrics.items()))
        return out


def _session_or_fail(model: onnx.ModelProto, plan: ProviderPlan, threads: int, what: str) -> tuple[Any, float]:
    try:
        return _session(model, plan, threads)
    except Exception as e:
        if isinstance(e, (DataError, ModelError, UsageError)):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"onnxruntime cannot load the {what} model on {plan.name}",
            causes=[first],
            hint="the model uses an op or type this onnxruntime build does not support; `onnxzip inspect` lists its ops",
        ) from None


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    if not arrays:
        return np.zeros((0,))
    if arrays[0].ndim == 0:
        return np.stack(arrays)
    return np.concatenate(arrays, axis=0)


def check_runs(model: onnx.ModelProto, what: str = "input") -> None:
    """Fail with a ModelError (exit 2) when onnxruntime's CPU provider cannot load ``model``."""
    _session_or_fail(model, ProviderPlan("cpu", "CPUExecutionProvider", ("CPUExecutionProvider",)), 1, what)


def evaluate_files(
    original: str | Path,
    compressed: str | Path | None = None,
    *,
    recipe: Any = None,
    overrides: Mapping[str, Any] | None = None,
    gates: Sequence[Gate] = (),
    enforce: bool = True,
    strict: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``onnxzip eval``: measure ``compressed`` against ``original`` (or ``original`` alone)
    and return a report of kind ``"eval"`` with its gates judged. Latency is on unless the
    recipe or ``overrides`` turn it off."""
    from onnxzip.gates import evaluate_gates
    from onnxzip.report import build_report

    t0 = time.perf_counter()
    plan = plan_evaluation(recipe, evaluate=True, overrides=overrides, gates=gates, enforce=enforce, strict=strict, latency_default=True)
    assert plan.options is not None
    ev = Evaluator(plan.options, progress=progress)
    a = M.load_model(original)
    ev.check_model(a)
    b = None
    if compressed is not None:
        b = M.load_model(compressed)
        sa, sb = input_signature(a), input_signature(b)
        def same(x: InputSpec, y: InputSpec) -> bool:
            return (x.name, x.dtype, len(x.shape)) == (y.name, y.dtype, len(y.shape)) and all(
                not (isinstance(p, int) and isinstance(q, int)) or p == q for p, q in zip(x.shape, y.shape, strict=True)
            )

        if len(sa) != len(sb) or not all(same(x, y) for x, y in zip(sa, sb, strict=True)):
            raise ModelError(
                f"`{compressed}` does not take the same inputs as `{original}`",
                causes=[f"original: {', '.join(f'{s.name} {s.describe()}' for s in sa)}", f"compressed: {', '.join(f'{s.name} {s.describe()}' for s in sb)}"],
                hint="compare a compressed model with the model it was made from",
            )
    evaluation = ev.run(a, b)
    del a
    from onnxzip.compress import files_size, model_files

    in_files = model_files(original)
    out_files = model_files(compressed) if compressed is not None else []
    report = build_report(
        model_path=Path(original),
        recipe=recipe,
        pipeline=None,
        original_bytes=files_size(in_files),
        loaded_bytes=0,
        output=Path(compressed) if compressed is not None else None,
        files=out_files,
        seconds=time.perf_counter() - t0,
        input_files=in_files,
        settings=plan.settings(),
        evaluation=evaluation,
        kind="eval",
        output_model=b,
    )
    if plan.gates:
        report["gates"] = evaluate_gates(list(plan.gates), report, enforce=plan.enforce, strict=plan.strict)
    return report


# --------------------------------------------------------------------------- per layer


def _float_type(t: int) -> bool:
    return t in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def _key(scope: M.Scope, name: str) -> str:
    """A weight's name in reports: plain in the main graph, ``name (in If.then_branch)`` inside."""
    return name if not scope.path else f"{name} (in {scope.path})"


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {}
    for scope in M.walk(model):
        for t in scope.graph.initializer:
            if t.data_location != onnx.TensorProto.EXTERNAL:
                out[_key(scope, t.name)] = M.to_array(t)
    return out


def _const_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values of tensors computed from initializers alone (Cast, DequantizeLinear, Gather on a
    codebook, ...): the weights as a session sees them. Every graph, keyed like :func:`_key`."""
    from onnxzip.runtime import session_from_model

    out: dict[str, np.ndarray] = {}
    for scope in M.walk(model):
        g = scope.graph
        visible: dict[str, onnx.TensorProto] = {}
        s: M.Scope | None = scope
        while s is not None:  # inner names shadow outer ones
            for t in s.graph.initializer:
                visible.setdefault(t.name, t)
            s = s.parent
        local_inputs = {i.name for i in g.input}
        known = {n for n in visible if n not in local_inputs or n in {t.name for t in g.initializer}}
        const_nodes, produced = [], []
        for n in g.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
                continue
            if n.input and all((not i) or i in known for i in n.input):
                const_nodes.append(n)
                known.update(o for o in n.output if o)
                produced.extend(o for o in n.output if o)
        if not produced:
            continue
        used = {i for n in const_nodes for i in n.input}
        sub = onnx.helper.make_graph(
            const_nodes,
            "consts",
            [],
            [onnx.helper.make_empty_tensor_value_info(n) for n in produced],
            [visible[n] for n in sorted(used) if n in visible],
        )
        m = onnx.helper.make_model(sub, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version
        try:
            vals = session_from_model(m, ["CPUExecutionProvider"], optimization="none").run(None, {})
        except Exception:  # an op onnxruntime cannot fold alone: those weights stay unmatched
            continue
        out.update({_key(scope, n): v for n, v in zip(produced, vals, strict=True)})
    return out


def per_layer_errors(original: onnx.ModelProto, compressed: onnx.ModelProto, make_batches: Callable | None) -> dict[str, Any]:
    """Relative errors per weight and (with data) per named intermediate tensor, worst first."""
    from onnxzip.runtime import to_plain

    comp = to_plain(compressed)
    orig_w = _initializers(original)
    comp_w = _initializers(comp)
    comp_const = _const_values(comp)
    orig_const = _const_values(original)
    # consumer slots of each original weight: (graph path, node name, input index)
    slots: dict[str, list[tuple[str, str, int]]] = {}
    for scope in M.walk(original):
        for n in scope.graph.node:
            for i, name in enumerate(n.input):
                slots.setdefault(_key(scope, name), []).append((scope.path, n.name, i))
    comp_nodes = {(scope.path, n.name): (scope, n) for scope in M.walk(comp) for n in scope.graph.node}
    weights, unmatched = [], []
    for key, a in orig_w.items():
        if a.dtype.kind != "f" or a.size < 2:
            continue
        ref = a
        b, how = None, None
        if key in comp_w and comp_w[key].dtype.kind == "f":
            b, how = comp_w[key], "name"
        elif key in comp_const:
            b, how = comp_const[key], "name"
        else:
            for path, node_name, idx in slots.get(key, []):
                hit = comp_nodes.get((path, node_name))
                if hit is not None and idx < len(hit[1].input):
                    src = _key(hit[0], hit[1].input[idx])
                    cand = comp_w.get(src) if src in comp_w else comp_const.get(src)
                    if cand is not None and cand.dtype.kind == "f":
                        b, how = cand, "consumer"
                        break
        if b is None:
            unmatched.append({"name": key, "shape": list(a.shape), "reason": "no float tensor of this name or in the same input of the same node in the compressed model (factorized, removed or kept as integers)"})
            continue
        if tuple(b.shape) != tuple(ref.shape):
            unmatched.append({"name": key, "shape": list(a.shape), "reason": f"shape changed to {list(b.shape)} (structured pruning or factorization)"})
            continue
        weights.append(
            {
                "name": key,
                "shape": list(a.shape),
                "matched_by": how,
                "rel_error": relative_error(ref, b),
                "max_abs_error": float(np.max(np.abs(ref.astype(np.float64) - b.astype(np.float64)))),
            }
        )
    weights.sort(key=lambda d: (-_sortable(d["rel_error"]), d["name"]))
    out: dict[str, Any] = {"weights": weights, "weights_unmatched": unmatched, "activations": None, "activations_note": None}
    if make_batches is None:
        out["activations_note"] = "intermediate tensors are compared only on real data (--data)"
        return out
    out["activations"] = _activation_errors(original, comp, make_batches, {k for k in (*orig_const, *comp_const) if " (in " not in k})
    out["activations_note"] = f"onnxruntime graph optimizations off; first {PER_LAYER_SAMPLES} samples at most"
    return out


def _sortable(x: float) -> float:
    return float("inf") if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _activation_errors(original: onnx.ModelProto, compressed: onnx.ModelProto, make_batches: Callable, consts: set[str]) -> list[dict[str, Any]]:
    def produced(m: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
        return {o: n for n in m.graph.node for o in n.output if o}

    pa, pb = produced(original), produced(compressed)
    # a tensor compact-names renamed is found as the same output of the same node
    slots_b = {(n.name, i): o for n in compressed.graph.node if n.name for i, o in enumerate(n.output) if o}
    outputs = {o.name for o in original.graph.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(original)
        types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    except Exception:
        types = {}

    def twin(n: str) -> str | None:
        node = pa[n]
        if n in pb and pb[n].op_type == node.op_type:
            return n
        b = slots_b.get((node.name, list(node.output).index(n))) if node.name else None
        return b if b is not None and pb[b].op_type == node.op_type else None

    pairs = {n: twin(n) for n in pa if n not in consts and n not in outputs and (types.get(n) is None or _float_type(types.get(n, 0)))}
    names = [n for n, b in pairs.items() if b is not None and b not in consts]
    if not names:
        return []

    def with_outputs(m: onnx.ModelProto, which: list[str]) -> onnx.ModelProto:
        c = onnx.ModelProto()
        c.CopyFrom(m)
        for n in which:
            c.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
        return c

    from onnxzip.runtime import session_from_model

    try:
        sa = session_from_model(with_outputs(original, names), ["CPUExecutionProvider"], optimization="none")
        sb = session_from_model(with_outputs(compressed, [pairs[n] for n in names]), ["CPUExecutionProvider"], optimization="none")
    except Exception:
        return []
    idx_a = {o.name: i for i, o in enumerate(sa.get_outputs())}
    idx_b = {o.name: i for i, o in enumerate(sb.get_outputs())}
    acc: dict[str, list[float]] = {n: [0.0, 0.0, 0.0] for n in names}  # noise, signal, max
    bad: set[str] = set()
    seen = 0
    for feeds, _ in make_batches():
        ra, rb = sa.run(None, feeds), sb.run(None, feeds)
        for n in names:
            a, b = ra[idx_a[n]], rb[idx_b[pairs[n]]]
            if a.shape != b.shape or a.dtype.kind != "f" or b.dtype.kind != "f":
                bad.add(n)
                continue
            d = a.astype(np.float64) - b.astype(np.float64)
            s = acc[n]
            s[0] += float(np.sum(d * d))
            s[1] += float(np.sum(a.astype(np.float64) ** 2))
            s[2] = max(s[2], float(np.max(np.abs(d)))) if d.size else s[2]
        seen += next(iter(feeds.values())).shape[0] if feeds else 1
        if seen >= PER_LAYER_SAMPLES:
            break
    rows = []
    for n in names:
        if n in bad:
            continue
        noise, signal, mx = acc[n]
        rel = math.sqrt(noise / signal) if signal else (0.0 if noise == 0 else float("inf"))
        rows.append({"name": n, "op": pa[n].op_type, "node": pa[n].name, "rel_error": rel, "max_abs_error": mx})
    rows.sort(key=lambda d: (-_sortable(d["rel_error"]), d["name"]))
    return rows


__all__ = [
    "EVALUATE_KEYS",
    "EvalOptions",
    "EvalPlan",
    "Evaluator",
    "ProviderPlan",
    "evaluate_files",
    "measure_latency",
    "options_from_recipe",
    "parse_input_shape",
    "per_layer_errors",
    "plan_evaluation",
    "plan_providers",
    "recipe_dir",
    "synthetic_batches",
]
