"""``onnxzip tune``: the smallest model inside an accuracy budget, written out as a recipe.

Given a base recipe and a budget such as ``top1_agreement >= 0.99``, choose one setting per
targeted layer (see :mod:`onnxzip.sensitivity` for the grid) so that the stored size (or the
latency) is smallest while the budget holds, and write the choice as a normal recipe with an
explicit per-node override for every layer.

Data. The eval samples are split once, deterministically (a permutation seeded by the recipe
seed): ``holdout`` of them (default 30%) are never used to choose anything; the rest is the
*choose* split, whose first ``subset`` samples (in permuted order) serve the per-layer sweep.

Algorithm.

1. *Mildest check*: every layer off (only what the recipe does besides the tuned layers). If
   that misses the budget on either split, nothing can meet it: exit 1 with that figure.
2. *Sweep*: each layer alone at each setting, on the subset (:func:`onnxzip.sensitivity.sweep`).
   A setting survives when it saves bytes (or time) and, alone, does not miss the budget by
   more than the baseline's room under it (:func:`onnxzip.sensitivity.clearly_misses`: a
   miss by a sample or two on the subset is noise, left to the end-to-end search).
3. *Knapsack*: each setting's cost is the output noise-to-signal ratio it adds (noise powers
   of independent layers add up, the budget's metric need not), its value the bytes it saves.
   A multiple-choice knapsack (one setting a layer, dynamic programming over the cost) gives
   the most bytes for a total cost C. C is searched on the whole choose split, end to end:
   from the everything-at-its-most setting down in steps of 4x until the budget holds, then
   by bisection between the last failing and the first passing C.
4. *Refine*: from the best passing choice, move single layers one step further along their
   cost/bytes frontier (most bytes per unit of noise first), keeping each move the choose
   split accepts.
5. *Hold-out check and back-off*: the held-out split judges the result; while it misses
   the budget, the layer paying the most noise per byte saved goes one step milder
   (chosen from choose-split figures only; the held-out split only says when to stop).
6. *Final*: the recipe text is parsed and run by the normal, checked :func:`onnxzip.compress`;
   that file is measured on both splits, and these are the figures written in the recipe's
   header. ``onnxzip compress MODEL -r tuned.yaml`` reproduces it byte for byte.

``time_limit`` cuts steps 2-5 short (layers not swept stay off) and returns the best choice
verified so far; steps 1 and 6 always run.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxzip import model as M
from onnxzip._format import fmt_bytes, fmt_ratio
from onnxzip.errors import EXIT_GATE, OnnxzipError, UsageError
from onnxzip.gates import BUILTIN_GATES, LATENCY_METRICS, SIZE_METRICS, Gate, GateValueError, make_gate, parse_flag
from onnxzip.recipe import Recipe, load_recipe
from onnxzip.sensitivity import (
    DEFAULT_BATCH,
    DEFAULT_SUBSET,
    Measurement,
    SensitivityResult,
    Setting,
    Workbench,
    clearly_misses,
    higher_is_better,
    parse_candidate_specs,
    sweep,
)

OBJECTIVES = ("size", "latency")
DEFAULT_HOLDOUT = 0.3
LADDER = 4.0  # capacity steps of the first search phase
BISECT_STEPS = 5


class BudgetNotMet(OnnxzipError):
    """The budget cannot be met, even at the mildest setting (exit 1)."""

    exit_code = EXIT_GATE


def parse_budget(text: str) -> Gate:
    """``"top1_agreement>=0.99"`` (any metric and comparison) or a built-in gate such as
    ``"min_top1_agreement=0.99"``. UsageError when malformed or not an accuracy metric."""
    try:
        name, expr = parse_flag(text.replace("=", ":", 1) if _is_builtin_assign(text) else text)
    except ValueError as e:
        raise UsageError(f"--budget {e}", hint="e.g. --budget 'top1_agreement>=0.99' or --budget 'cosine>=0.995' (quote it in the shell)") from None
    try:
        if name in BUILTIN_GATES:
            try:
                value = float(expr.lstrip("=<> "))
            except ValueError:
                raise UsageError(f"--budget `{text}`: `{name}` takes a number", hint=f"e.g. --budget '{name}=0.99'") from None
            gate = make_gate(name, value, source="budget")
        else:
            gate = make_gate(name, expr, source="budget")
    except GateValueError as e:
        raise UsageError(f"--budget: {e.message}", hint=e.hint) from None
    if gate.metric in SIZE_METRICS or gate.metric in LATENCY_METRICS:
        raise UsageError(
            f"--budget `{text}` limits `{gate.metric}`, which tune minimizes rather than bounds",
            hint="a budget is an accuracy figure: top1_agreement, top1_accuracy, accuracy_drop, cosine, snr_db, max_abs_error or a task metric",
        )
    return gate


def _is_builtin_assign(text: str) -> bool:
    head = text.split("=", 1)[0].strip()
    return head in BUILTIN_GATES and "=" in text and not any(op in text for op in (">=", "<=", ">", "<", "=="))


def budget_gates(budgets: Sequence[Gate]) -> dict[str, Any]:
    """The budgets as recipe ``gates:`` entries (built-in gate names where one fits)."""
    out: dict[str, Any] = {}
    for g in budgets:
        builtin = next((n for n, k in BUILTIN_GATES.items() if k.metric == g.metric and k.op == g.op), None)
        if builtin is not None:
            out[builtin] = g.limit
        else:
            out[g.metric] = f"{g.op} {g.limit:.12g}"
    return out


def _describe(budgets: Sequence[Gate]) -> str:
    return " and ".join(f"{g.metric} {g.op} {g.limit:.12g}" for g in budgets)


# --------------------------------------------------------------------------- the search


@dataclass
class Option:
    setting: Setting
    value: float  # bytes (or ms) saved, alone
    cost: float  # noise-to-signal ratio added, alone


@dataclass
class Trial:
    """One end-to-end evaluation of a full per-layer choice."""

    phase: str
    picks: tuple[int, ...]  # option index per layer
    choose: Measurement
    passed: bool
    holdout: Measurement | None = None
    holdout_passed: bool | None = None


def knapsack(options: Sequence[Sequence[Option]], capacity: float, resolution: int = 2000) -> tuple[int, ...]:
    """One option per layer maximizing the summed value with the summed cost <= capacity
    (costs rounded up to ``capacity / resolution``). Option 0 of every layer must cost 0."""
    K = resolution
    best = np.full(K + 1, -np.inf)
    best[0] = 0.0
    choices: list[np.ndarray] = []
    weights: list[list[int]] = []
    for opts in options:
        new = np.full(K + 1, -np.inf)
        arg = np.full(K + 1, -1, dtype=np.int64)
        ws = []
        for j, o in enumerate(opts):
            if o.cost <= 0 or capacity <= 0:
                w = 0 if o.cost <= 0 else K + 1
            else:
                w = math.ceil(o.cost / capacity * K - 1e-9)
            ws.append(w)
            if w > K:
                continue
            cand = np.full(K + 1, -np.inf)
            cand[w:] = best[: K + 1 - w] + o.value
            better = cand > new
            new[better] = cand[better]
            arg[better] = j
        best = new
        choices.append(arg)
        weights.append(ws)
    c = int(np.argmax(best))
    picks = []
    for li in range(len(options) - 1, -1, -1):
        j = int(choices[li][c])
        picks.append(j)
        c -= weights[li][j]
    return tuple(reversed(picks))


@dataclass
class TuneResult:
    """What tune chose, measured, and wrote."""

    recipe_text: str
    recipe_path: Path | None
    model_path: Path | None
    budgets: list[Gate]
    objective: str
    layers: list[dict[str, Any]]
    stored_bytes: int
    original_bytes: int
    baseline_bytes: int
    choose: Measurement
    holdout: Measurement | None
    mildest: dict[str, Any]
    trials: list[Trial]
    sensitivity: SensitivityResult | None
    seconds: float
    timed_out: bool
    output_sha256: str
    data_sha256: str
    notes: list[str] = field(default_factory=list)
    original_latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        from onnxzip import __version__

        metrics = sorted({g.metric for g in self.budgets} | {"cosine", "snr_db"})
        d: dict[str, Any] = {
            "kind": "tune",
            "onnxzip_version": __version__,
            "budget": [{"metric": g.metric, "op": g.op, "limit": g.limit} for g in self.budgets],
            "objective": self.objective,
            "recipe": str(self.recipe_path) if self.recipe_path else None,
            "model": str(self.model_path) if self.model_path else None,
            "model_sha256": self.output_sha256,
            "data_sha256": self.data_sha256,
            "result": {
                "bytes": self.stored_bytes,
                "original_bytes": self.original_bytes,
                "ratio": self.original_bytes / self.stored_bytes if self.stored_bytes else None,
                "baseline_bytes": self.baseline_bytes,
                "choose": self.choose.summary(metrics),
                "holdout": self.holdout.summary(metrics) if self.holdout else None,
                "passed": True,
            },
            "mildest": self.mildest,
            "layers": self.layers,
            "search": {
                "trials": len(self.trials),
                "holdout_checks": sum(1 for t in self.trials if t.holdout is not None),
                "phases": [{"phase": t.phase, "bytes": t.choose.bytes, "passed": t.passed, "holdout_passed": t.holdout_passed} for t in self.trials],
                "timed_out": self.timed_out,
                "sweep_seconds": self.sensitivity.seconds if self.sensitivity else None,
                "variants": sum(len(lr.options) for lr in self.sensitivity.layers) if self.sensitivity else 0,
            },
            "seconds": self.seconds,
            "notes": self.notes,
        }
        if self.choose.latency_ms is not None:
            d["result"]["latency_ms"] = self.choose.latency_ms
            d["result"]["original_latency_ms"] = self.original_latency_ms
        return d


class _Search:
    def __init__(self, bench: Workbench, budgets: Sequence[Gate], objective: str, deadline: float | None, say: Callable[[str], None]):
        self.bench = bench
        self.budgets = list(budgets)
        self.objective = objective
        self.deadline = deadline
        self.say = say
        self.trials: list[Trial] = []
        self.cache: dict[tuple[int, ...], Trial] = {}
        self.options: list[list[Option]] = []
        self.best: Trial | None = None
        self.baseline_bytes = 0
        self.base_latency: float | None = None
        self.metric = budgets[0].metric
        self.op = budgets[0].op

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def assignment(self, picks: Sequence[int]) -> dict[str, Setting]:
        return {L.name: self.options[i][j].setting for i, (L, j) in enumerate(zip(self.bench.layers, picks, strict=True))}

    def saved(self, t: Trial) -> float:
        if self.objective == "latency":
            return (self.base_latency or 0.0) - (t.choose.latency_ms or 0.0) + 1e-9 * (self.baseline_bytes - t.choose.bytes)
        return float(self.baseline_bytes - t.choose.bytes)

    def evaluate(self, picks: tuple[int, ...], phase: str) -> Trial:
        if picks in self.cache:
            return self.cache[picks]
        m = self.bench.measure(self.assignment(picks), "choose", latency=self.objective == "latency")
        t = Trial(phase, picks, m, m.passes(self.budgets))
        self.cache[picks] = t
        self.trials.append(t)
        if t.passed and (self.best is None or self.saved(t) > self.saved(self.best)):
            self.best = t
        b = self.best
        self.say(
            f"{phase}: {fmt_bytes(m.bytes)}, {self.metric} {m.worst(self.metric, self.op):.4f} on the choose split: "
            f"{'meets' if t.passed else 'misses'} the budget"
            + (f"; best {fmt_bytes(b.choose.bytes)} at {b.choose.worst(self.metric, self.op):.4f}" if b else "")
            + (f", {b.choose.latency_ms:.3f} ms" if b and b.choose.latency_ms is not None else "")
        )
        return t

    def check_holdout(self, t: Trial) -> bool:
        if t.holdout is None:
            t.holdout = self.bench.measure(self.assignment(t.picks), "holdout", latency=False)
            t.holdout_passed = t.holdout.passes(self.budgets)
            self.say(
                f"held-out check: {fmt_bytes(t.choose.bytes)}, {self.metric} {t.holdout.worst(self.metric, self.op):.4f} on "
                f"{t.holdout.samples} held-out samples: {'meets' if t.holdout_passed else 'misses'} the budget"
            )
        return bool(t.holdout_passed)


def _frontier(opts: list[Option]) -> list[Option]:
    """Option 0 (off) first, then the options no other beats on both cost and value, by cost."""
    off, rest = opts[0], sorted(opts[1:], key=lambda o: (o.cost, -o.value))
    out = [off]
    for o in rest:
        if o.value > out[-1].value + 1e-12:
            if o.cost <= out[-1].cost and len(out) > 1:
                out[-1] = o
            else:
                out.append(o)
    return out


def tune(
    model_path: str | Path,
    recipe: Recipe | str | Path,
    data: str | Path,
    budget: Sequence[str | Gate] | str | Gate,
    output: str | Path | None = None,
    *,
    model_out: str | Path | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    subset: int | None = DEFAULT_SUBSET,
    objective: str = "size",
    candidates: Sequence[str] | Mapping[str, Mapping[str, list[Any]]] = (),
    task_metrics: Sequence[str] = (),
    calib: str | Path | None = None,
    samples: int | None = None,
    batch: int = DEFAULT_BATCH,
    threads: int = 1,
    time_limit: float | None = None,
    refine: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    """Choose per-layer settings of ``recipe`` for the smallest ``model_path`` within
    ``budget`` (verified on a held-out split of ``data``), write the recipe to ``output``
    (and the model to ``model_out``). Raises :class:`BudgetNotMet` (exit 1) when even the
    mildest setting misses the budget; never returns a result that misses it."""
    from onnxzip import __version__
    from onnxzip.compress import compress, files_size
    from onnxzip.report import write_text

    t0 = time.perf_counter()
    say = progress or (lambda m: None)
    deadline = t0 + time_limit if time_limit is not None else None
    if objective not in OBJECTIVES:
        raise UsageError(f"objective `{objective}` is not one of {', '.join(OBJECTIVES)}", hint="--objective size (stored bytes) or latency")
    budgets = [b if isinstance(b, Gate) else parse_budget(b) for b in ([budget] if isinstance(budget, (str, Gate)) else budget)]
    if not budgets:
        raise UsageError("no budget given", hint="e.g. --budget 'top1_agreement>=0.99'")
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    output = Path(output) if output is not None else None
    out_dir = (output.parent if output is not None and str(output.parent) else Path(".")).resolve()
    if output is not None:
        if output.is_dir():
            raise UsageError(f"output `{output}` is a directory", hint="give a file name ending in .yaml")
        if not out_dir.is_dir():
            raise UsageError(f"output folder `{out_dir}` does not exist", hint=f"create it first: mkdir -p {out_dir}")
    if model_out is not None:
        M.check_output_path(Path(model_out), input_path=model_path)
    cands = parse_candidate_specs(candidates) if not isinstance(candidates, Mapping) else candidates

    bench = Workbench(
        model_path, recipe, data, candidates=cands, task_metrics=task_metrics, calib=calib, samples=samples,
        holdout=holdout, subset=subset, batch=batch, threads=threads, out_dir=out_dir, progress=say,
    )
    for g in budgets:
        _check_measurable(bench, g)
    n_choose, n_hold = bench.data.size("choose"), bench.data.size("holdout")
    say(
        f"tune: {len(bench.layers)} layers, budget {_describe(budgets)}; data: {bench.data.n} samples, "
        f"{n_choose} to choose ({bench.data.size('subset')} for the sweep), {n_hold} held out"
    )
    lat = objective == "latency"

    # 1. mildest: every layer off
    off_all: dict[str, Setting] = {}
    mild_choose = bench.measure(off_all, "choose", latency=lat)
    mild_hold = bench.measure(off_all, "holdout") if n_hold else None
    mild_ok = mild_choose.passes(budgets) and (mild_hold is None or mild_hold.passes(budgets))
    mildest = {
        "bytes": mild_choose.bytes,
        "choose": {g.metric: mild_choose.worst(g.metric, g.op) for g in budgets},
        "holdout": {g.metric: mild_hold.worst(g.metric, g.op) for g in budgets} if mild_hold else None,
        "passed": mild_ok,
    }
    if not mild_ok:
        figs = [f"{g.metric} = {mild_choose.worst(g.metric, g.op):.6g} on the choose split" + (f", {mild_hold.worst(g.metric, g.op):.6g} held out" if mild_hold else "") for g in budgets]
        raise BudgetNotMet(
            f"the budget `{_describe(budgets)}` cannot be met: the mildest setting (every layer left uncompressed) reaches {'; '.join(figs)}",
            causes=[
                f"that model stores {fmt_bytes(mild_choose.bytes)} ({fmt_ratio(bench.original_bytes / mild_choose.bytes if mild_choose.bytes else None)} smaller); "
                f"only the passes not tuned per layer changed it: {', '.join(f'`{s.name}`' for s in recipe.passes if not _tuned(bench, s.name)) or 'none'}"
                + (", and what the tuned passes do to tensors that are not layers" if any(k.follower for k in bench.knobs) else "")
            ],
            hint="relax the budget, or remove the passes that cost accuracy on their own from the base recipe; nothing was written",
        )

    # 2. sweep
    metric, op = budgets[0].metric, budgets[0].op
    sens = sweep(bench, metric=metric, higher=higher_is_better(metric, op), split="subset", latency=lat, deadline=deadline, budgets=budgets, progress=say)
    search = _Search(bench, budgets, objective, deadline, say)
    search.baseline_bytes = sens.baseline.bytes
    search.base_latency = sens.baseline.latency_ms
    notes: list[str] = []
    by_name = {lr.layer.name: lr for lr in sens.layers}
    for L in bench.layers:
        lr = by_name[L.name]
        opts = [Option(lr.options[0].setting, 0.0, 0.0)]
        for o in lr.options[1:]:
            m = o.measurement
            if m is None or clearly_misses(m, sens.baseline, budgets):
                continue
            if lat:
                value = (sens.baseline.latency_ms or 0.0) - (m.latency_ms or 0.0)
                value += 1e-9 * (sens.baseline.bytes - m.bytes)  # ties: the smaller file
            else:
                value = float(sens.baseline.bytes - m.bytes)
            cost = max(0.0, m.nsr - sens.baseline.nsr)
            if value <= 0 or not math.isfinite(cost):
                continue
            opts.append(Option(o.setting, value, cost))
        search.options.append(_frontier(opts))
    if refine is None:
        refine = 2 * len(bench.layers)

    # 3. knapsack over the noise budget
    off_picks = tuple(0 for _ in bench.layers)
    t_off = Trial("mildest", off_picks, mild_choose, True, mild_hold, True if mild_hold is not None else None)
    search.cache[off_picks] = t_off
    search.trials.append(t_off)
    search.best = t_off
    costs = [o.cost for opts in search.options for o in opts if o.cost > 0]
    max_picks = tuple(len(opts) - 1 for opts in search.options)
    if max_picks != off_picks and not search.expired():
        c_hi = sum(max(o.cost for o in opts) for opts in search.options)
        c_min = min(costs) if costs else 0.0
        t = search.evaluate(knapsack(search.options, c_hi * 1.001 if c_hi > 0 else 1.0), "knapsack, every layer at its most")
        if not t.passed and c_hi > 0:
            fail_c, pass_c = c_hi, None
            c = c_hi
            while not search.expired():
                c /= LADDER
                picks = knapsack(search.options, c)
                if picks == off_picks or c < c_min / 2:
                    pass_c = c
                    break
                t = search.evaluate(picks, f"knapsack, noise budget {c:.3g}")
                if t.passed:
                    pass_c = c
                    break
                fail_c = c
            for _ in range(BISECT_STEPS):
                if pass_c is None or search.expired():
                    break
                mid = math.sqrt(pass_c * fail_c)
                picks = knapsack(search.options, mid)
                if picks in search.cache and picks in (knapsack(search.options, pass_c), knapsack(search.options, fail_c)):
                    break
                t = search.evaluate(picks, f"knapsack, noise budget {mid:.3g}")
                if t.passed:
                    pass_c = mid
                else:
                    fail_c = mid

        # 4. refine: single-layer steps along each frontier, best ratio first
        tried = 0
        failed: set[tuple[int, int]] = set()
        while tried < refine and not search.expired():
            cur = search.best.picks
            moves = []
            for i, j in enumerate(cur):
                opts = search.options[i]
                if j + 1 < len(opts) and (i, j + 1) not in failed:
                    dv = opts[j + 1].value - opts[j].value
                    dc = opts[j + 1].cost - opts[j].cost
                    moves.append((dv / dc if dc > 0 else math.inf, dv, i))
            if not moves:
                break
            moves.sort(reverse=True)
            _, _, i = moves[0]
            picks = tuple(j + 1 if k == i else j for k, j in enumerate(cur))
            t = search.evaluate(picks, f"refine {bench.layers[i].name} -> {search.options[i][cur[i] + 1].setting.label}")
            tried += 1
            if not t.passed or search.best is not t:
                failed.add((i, cur[i] + 1))

    # 5. held-out check, backing off the layer with the most noise per byte saved
    best = search.best
    timed_out = search.expired()
    while n_hold and not (best.passed and search.check_holdout(best)):
        worst = None
        for i, j in enumerate(best.picks):
            if j == 0:
                continue
            o = search.options[i][j]
            ratio = o.cost / o.value if o.value > 0 else math.inf
            if worst is None or ratio > worst[0]:
                worst = (ratio, i)
        if worst is None:  # every layer off: passed both splits in step 1
            best = t_off
            break
        i = worst[1]
        picks = tuple(j - 1 if k == i else j for k, j in enumerate(best.picks))
        say(f"back-off: {bench.layers[i].name} -> {search.options[i][picks[i]].setting.label}")
        best = search.evaluate(picks, "back-off")

    # 6. final: the recipe through the normal, checked compress
    assignment = search.assignment(best.picks)
    from onnxzip.gates import METRICS

    # a gate on a task metric needs `evaluate.metrics` in the recipe, which would make every
    # `compress` run that code: such budgets stay in the header only
    gateable = [g for g in budgets if g.metric in METRICS or (recipe.evaluate or {}).get("metrics")]
    gates = budget_gates(gateable)
    name = f"{recipe.name}-tuned"
    description = (
        f"{recipe.name} with per-layer settings chosen by `onnxzip tune` for the smallest "
        f"{'stored size' if objective == 'size' else 'latency'} with {_describe(budgets)} on held-out data."
    )
    body = bench.text(assignment, name=name, description=description, gates=gates)
    final_recipe = bench.parse(body, output.name if output is not None else "tuned.yaml")
    say("compressing with the tuned recipe (checked pipeline)")
    with tempfile.TemporaryDirectory(prefix="onnxzip-tune-") as tmp:
        target = Path(model_out) if model_out is not None else Path(tmp) / "tuned.onnx"
        res = compress(model_path, final_recipe, target, evaluate=False, enforce_gates=False)
        stored = files_size(res.files)
        sha = M.model_hash(target)
        final = M.load_model(target)
        f_choose = bench.measure_model(final, "choose", latency=lat)
        f_hold = bench.measure_model(final, "holdout") if n_hold else None
        orig_lat = None
        if lat:
            orig_lat = bench.data.measure(bench.original, "subset", latency=True).latency_ms
    if f_choose.bytes != best.choose.bytes:
        notes.append(f"the checked compress stored {f_choose.bytes} bytes, the search measured {best.choose.bytes} (please report)")
    ok = f_choose.passes(budgets) and (f_hold is None or f_hold.passes(budgets))
    if not ok:
        raise BudgetNotMet(
            f"the tuned recipe misses the budget `{_describe(budgets)}` when compressed by the checked pipeline",
            causes=[f"{g.metric} = {f_choose.worst(g.metric, g.op):.6g} (choose), {f_hold.worst(g.metric, g.op) if f_hold else float('nan'):.6g} (held out)" for g in budgets],
            hint="this should not happen (the search measures the same model); rerun with --time-limit off and report it; nothing was written",
        )
    data_sha = M.model_hash(bench.data.path)
    metric_line = "; ".join(
        f"{g.metric} {f_choose.worst(g.metric, g.op):.4f} on the choose split ({f_choose.samples} samples)"
        + (f", {f_hold.worst(g.metric, g.op):.4f} held out ({f_hold.samples} samples)" if f_hold else "")
        for g in budgets
    )
    header = [
        f"Tuned by onnxzip {__version__} (`onnxzip tune`): one setting per layer, the {'smallest stored size' if objective == 'size' else 'lowest latency'} within the budget.",
        f"budget: {_describe(budgets)}",
        f"model: {Path(model_path).name} (sha256 {M.model_hash(model_path)}, {bench.original_bytes} bytes)",
        f"data: {bench.data.path.name} (sha256 {data_sha}): {bench.data.n} samples, {n_choose} to choose, {n_hold} held out (fraction {holdout:g}, seed {recipe.seed})",
        f"base recipe: {recipe.name} ({recipe.source}, sha256 {recipe.sha256})",
        f"result: {stored} bytes stored ({fmt_ratio(bench.original_bytes / stored if stored else None)} smaller), sha256 {sha}",
        f"measured: {metric_line}" + (f"; latency {f_choose.latency_ms:.4f} ms (original {orig_lat:.4f} ms)" if lat and f_choose.latency_ms is not None and orig_lat is not None else ""),
        f"search: {sum(len(lr.options) for lr in sens.layers)} per-layer variants, {len(search.trials)} end-to-end trials" + (" (stopped by the time limit)" if timed_out else ""),
        "reproduce: onnxzip compress MODEL -r THIS_FILE -o OUT.onnx (the same bytes, sha256 above)",
        "",
    ]
    text = "".join(f"# {h}\n" if h else "#\n" for h in header) + body
    if output is not None:
        write_text(text, output)
    layers = []
    for L, j, opts in zip(bench.layers, best.picks, search.options, strict=True):
        o = opts[j]
        layers.append(
            {
                "name": L.name,
                "node": L.node,
                "params": L.params,
                "bytes": L.bytes,
                "setting": o.setting.label,
                "passes": o.setting.to_dict(bench.knob_by_step),
                "saved_alone": o.value,
                "nsr_alone": o.cost,
            }
        )
    return TuneResult(
        recipe_text=text,
        recipe_path=output,
        model_path=Path(model_out) if model_out is not None else None,
        budgets=budgets,
        objective=objective,
        layers=layers,
        stored_bytes=stored,
        original_bytes=bench.original_bytes,
        baseline_bytes=sens.baseline.bytes,
        choose=f_choose,
        holdout=f_hold,
        mildest=mildest,
        trials=search.trials,
        sensitivity=sens,
        seconds=time.perf_counter() - t0,
        timed_out=timed_out,
        output_sha256=sha,
        data_sha256=data_sha,
        notes=notes,
        original_latency_ms=orig_lat,
    )


def _tuned(bench: Workbench, pass_name: str) -> bool:
    return any(k.name.split("#")[0] == pass_name for k in bench.knobs)


def _check_measurable(bench: Workbench, gate: Gate) -> None:
    """UsageError (exit 2) when the budget's metric cannot be computed on this model/data."""
    from onnxzip.sensitivity import compare_outputs

    idx = bench.data.splits["subset"][:8]
    orig = {n: (a[idx] if a.ndim and a.shape[0] == bench.data.n else a) for n, a in bench.data.original.items()}
    labels = bench.data.labels[idx] if bench.data.labels is not None else None
    values, _ = compare_outputs(orig, orig, labels, bench.tasks)
    if gate.metric not in values:
        raise UsageError(
            f"budget metric `{gate.metric}` is not measured on this model and data",
            causes=[f"measured: {', '.join(f'`{k}`' for k in sorted(values))}"],
            hint="top-1 metrics need an output of class scores, top1_accuracy/accuracy_drop a `labels` array; "
            "a task metric needs --task-metric FILE.py:FUNCTION (or `evaluate.metrics` in the recipe)",
        )


__all__ = ["OBJECTIVES", "BudgetNotMet", "TuneResult", "budget_gates", "knapsack", "parse_budget", "tune"]
