"""Batch mode: compress every ``*.onnx`` below a directory into a mirrored tree.

``compress_dir(DIR, RECIPE, OUTDIR)`` finds the models (sorted by relative path), runs
:func:`onnxzip.compress.compress` on each (in ``workers`` processes, or in this process for
one worker), writes ``<name>.report.json`` next to each output, and ``summary.json`` /
``summary.md`` in ``OUTDIR``. External data files are loaded with their model and re-saved
with it (as one file unless the model is over protobuf's 2 GB limit).

Outcomes per model: ``ok``, ``gate_failed`` (exit 1, output and report written),
``failed`` (exit 2 for bad input: corrupt file, model onnxruntime cannot load, data that
does not fit; exit 101 for an internal error), ``skipped`` (up to date: its previous outcome
counts), ``not_run`` (after ``fail_fast`` stopped the batch). One model failing never stops the
others unless ``fail_fast``.

The batch's exit code is the worst outcome, ranked 101 > 2 > 1 > 0: an internal error means
onnxzip itself misbehaved and no other result of the run can be taken at face value, so it
outranks bad input, which outranks a model that merely missed a quality gate.

Resume: a model is skipped when its output and report exist and the report records the same
input file hashes (external data included), recipe hash, onnxzip version and evaluation/gate
settings, and the output still has the recorded hash. ``force`` recomputes everything.

Sharding: ``shard=(K, N)`` takes the models whose index in the sorted list is ``K-1`` mod
``N``, so N jobs with K = 1..N partition the set; each writes ``summary-K-of-N.json``.

Output does not depend on ``workers``: reports are per model and the summary is sorted.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxzip import __version__
from onnxzip._format import fmt_bytes, fmt_duration, fmt_ratio
from onnxzip.errors import EXIT_GATE, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, OnnxzipError, UsageError
from onnxzip.gates import Gate

SUMMARY_SCHEMA = "onnxzip.batch/1"
_RANK = {EXIT_OK: 0, EXIT_GATE: 1, EXIT_USAGE: 2, EXIT_INTERNAL: 3}


def worst_exit(codes: Sequence[int]) -> int:
    """The most severe exit code: 101 > 2 > 1 > 0 (unknown codes rank as 101)."""
    worst = EXIT_OK
    for c in codes:
        if _RANK.get(c, 3) > _RANK.get(worst, 3):
            worst = c
    return worst


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> (2, 4); a UsageError unless 1 <= K <= N."""
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard `{text}` is not K/N", hint="e.g. --shard 1/4 (shards are numbered from 1)") from None
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard `{text}`: K must be between 1 and N", hint="e.g. --shard 1/4 ... --shard 4/4")
    return k, n


def find_models(root: Path) -> list[Path]:
    """Every ``*.onnx`` file below ``root``, as relative paths sorted by their POSIX form."""
    return sorted((p.relative_to(root) for p in root.rglob("*.onnx") if p.is_file()), key=lambda p: p.as_posix())


def take_shard(paths: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    if shard is None:
        return paths
    k, n = shard
    return [p for i, p in enumerate(paths) if i % n == k - 1]


def report_path_for(output: Path) -> Path:
    """``out/a/model.onnx`` -> ``out/a/model.report.json``."""
    return output.with_name(output.stem + ".report.json")


class BatchFailed(OnnxzipError):
    """Some models of a batch failed or missed a gate; ``exit_code`` is the worst outcome."""

    def __init__(self, summary: Mapping[str, Any]):
        t = summary["totals"]
        parts = [f"{t[k]} {label}" for k, label in (("failed", "failed"), ("gate_failed", "missed a gate"), ("not_run", "not run")) if t[k]]
        super().__init__(
            f"{', '.join(parts)} of {t['models']} models",
            hint=f"see {summary['output_dir']}/summary.md; every other model was compressed (exit code: worst outcome, 101 > 2 > 1 > 0)",
        )
        self.exit_code = summary["exit_code"]


@dataclass(frozen=True)
class Job:
    """One model of the batch, everything a worker process needs (picklable)."""

    rel: str
    source: str
    output: str
    report: str
    recipe: str
    overrides: Mapping[str, Any]
    gates: tuple[Gate, ...]
    enforce: bool
    strict: bool
    evaluate: bool | None
    calib: str | None


@dataclass
class BatchResult:
    summary: dict[str, Any]
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.summary["exit_code"]


class Events:
    """Progress callbacks; the CLI renders them (a live display on a TTY, plain lines else)."""

    def begin(self, total: int, skipped: int) -> None: ...

    def started(self, rel: str) -> None: ...

    def finished(self, outcome: dict[str, Any], done: int, total: int, elapsed: float) -> None: ...

    def end(self) -> None: ...


def _entry(job: Job, **kw: Any) -> dict[str, Any]:
    base = {
        "path": job.rel,
        "status": "failed",
        "exit_code": EXIT_INTERNAL,
        "output": None,
        "report": None,
        "original_bytes": None,
        "stored_bytes": None,
        "ratio": None,
        "gates": None,
        "failed_gates": [],
        "unevaluated_gates": [],
        "data": None,
        "error": None,
        "seconds": 0.0,
    }
    base.update(kw)
    return base


def _outcome_from_report(job: Job, rep: Mapping[str, Any], out_root: Path, status: str | None = None, seconds: float = 0.0) -> dict[str, Any]:
    from onnxzip.gates import exit_code

    code = exit_code(rep.get("gates"))
    g = rep.get("gates") or {}
    ev = rep.get("evaluation") or {}
    data = None
    if ev:
        data = "synthetic" if ev["data"]["synthetic"] else Path(ev["data"]["source"]).name
    return _entry(
        job,
        status=status or ("gate_failed" if code else "ok"),
        exit_code=code,
        output=Path(job.output).relative_to(out_root).as_posix(),
        report=Path(job.report).relative_to(out_root).as_posix(),
        original_bytes=rep["size"]["original_bytes"],
        stored_bytes=rep["size"]["stored_bytes"],
        ratio=rep["size"]["ratio"],
        gates=g.get("verdict"),
        failed_gates=list(g.get("failed") or []),
        unevaluated_gates=list(g.get("not_evaluated") or []),
        data=data,
        seconds=round(seconds, 4),
    )


def run_job(job: Job, out_root: str) -> dict[str, Any]:
    """Compress one model; never raises (the outcome carries the error and exit code)."""
    from onnxzip.compress import compress
    from onnxzip.report import write_json

    t0 = time.perf_counter()
    try:
        res = compress(
            job.source,
            job.recipe,
            job.output,
            calib=job.calib,
            evaluate=job.evaluate,
            eval_overrides=dict(job.overrides),
            gates=job.gates,
            enforce_gates=job.enforce,
            strict_gates=job.strict,
        )
        write_json(res.report, job.report)
        return _outcome_from_report(job, res.report, Path(out_root), seconds=time.perf_counter() - t0)
    except OnnxzipError as e:
        return _entry(job, exit_code=e.exit_code, error=e.render(), seconds=round(time.perf_counter() - t0, 4))
    except Exception as e:  # a bug: keep the traceback in the summary
        tb = traceback.format_exc(limit=8)
        return _entry(job, exit_code=EXIT_INTERNAL, error=f"error: internal error: {type(e).__name__}: {e}\n{tb}", seconds=round(time.perf_counter() - t0, 4))


def _file_hashes(source: Path) -> list[dict[str, Any]] | None:
    from onnxzip.compress import model_files
    from onnxzip.report import file_entries

    try:
        return file_entries(model_files(source))
    except Exception:
        return None


def up_to_date(job: Job, settings: Mapping[str, Any], recipe_sha: str) -> dict[str, Any] | None:
    """The previous report when the model need not be recompressed, else None."""
    from onnxzip.model import model_hash

    out, rep_path = Path(job.output), Path(job.report)
    if not out.is_file() or not rep_path.is_file():
        return None
    try:
        rep = json.loads(rep_path.read_text(encoding="utf-8"))
        ok = (
            rep.get("versions", {}).get("onnxzip") == __version__
            and rep.get("recipe", {}).get("sha256") == recipe_sha
            and rep.get("settings") == json.loads(json.dumps(settings))
            and rep.get("output", {}).get("sha256") == model_hash(out)
            and rep.get("model", {}).get("files") == _file_hashes(Path(job.source))
        )
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return rep if ok else None


def _check_dirs(in_dir: Path, out_dir: Path) -> None:
    if not in_dir.is_dir():
        raise UsageError(f"`{in_dir}` is not a directory", hint="give a folder of .onnx models, or one model file")
    ri, ro = in_dir.resolve(), out_dir.resolve()
    if ro == ri or ri in ro.parents:
        raise UsageError(
            f"output directory `{out_dir}` is inside the input directory `{in_dir}`",
            hint="choose an output folder outside the input tree (a re-run would pick up the outputs as inputs)",
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output `{out_dir}` is a file", hint="in batch mode -o names a folder")


def compress_dir(
    in_dir: str | Path,
    recipe_ref: str,
    out_dir: str | Path,
    *,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    force: bool = False,
    fail_fast: bool = False,
    evaluate: bool | None = None,
    eval_overrides: Mapping[str, Any] | None = None,
    gates: Sequence[Gate] = (),
    enforce_gates: bool = True,
    strict_gates: bool = False,
    calib: str | Path | None = None,
    events: Events | None = None,
) -> BatchResult:
    """Compress every model below ``in_dir`` into ``out_dir``; see the module docstring.

    ``eval_overrides['data']``: a relative path is looked up next to each model (models
    without it are evaluated on generated inputs); an absolute path serves every model."""
    from onnxzip.evaluate import Evaluator, plan_evaluation
    from onnxzip.recipe import load_recipe
    from onnxzip.report import versions, write_json, write_text

    t0 = time.perf_counter()
    events = events or Events()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    recipe = load_recipe(recipe_ref)
    _check_dirs(in_dir, out_dir)
    if workers < 1:
        raise UsageError(f"--workers {workers}: need at least 1", hint="e.g. --workers 4")
    models = find_models(in_dir)
    if not models:
        raise UsageError(f"no .onnx models found below `{in_dir}`", hint="batch mode compresses every *.onnx file in the folder and its subfolders")
    selected = take_shard(models, shard)
    overrides = dict(eval_overrides or {})
    data = overrides.get("data")
    per_model_data = data is not None and not Path(data).is_absolute()
    if per_model_data and not any((in_dir / m).parent.joinpath(data).exists() for m in selected):
        raise UsageError(
            f"no model has `{data}` next to it",
            hint="in batch mode a relative --data names a file in each model's folder; give an absolute path to use one file for every model",
        )
    # Fail before any work on what every model shares: providers, metric code, gates.
    probe_eval = True if (data is not None and evaluate is None) else evaluate
    probe = plan_evaluation(recipe, evaluate=probe_eval, overrides={**overrides, "data": None}, gates=gates, enforce=enforce_gates, strict=strict_gates)
    if probe.options is not None:
        Evaluator(probe.options)
    if data is not None and not per_model_data:
        from onnxzip.data import NpzData

        NpzData(data, what="evaluation data")
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs: list[Job] = []
    for rel in selected:
        src = in_dir / rel
        out = out_dir / rel
        ov = dict(overrides)
        job_eval = evaluate
        if per_model_data:
            cand = src.parent / data
            ov["data"] = cand if cand.exists() else None
            if ov["data"] is None and evaluate is None:
                job_eval = True  # evaluation was asked for: generated inputs stand in
        jobs.append(
            Job(
                rel=rel.as_posix(),
                source=str(src),
                output=str(out),
                report=str(report_path_for(out)),
                recipe=recipe.source if recipe.source and not recipe.source.startswith("preset:") else recipe.source.removeprefix("preset:"),
                overrides=ov,
                gates=tuple(gates),
                enforce=enforce_gates,
                strict=strict_gates,
                evaluate=job_eval,
                calib=str(calib) if calib else None,
            )
        )
    outcomes: dict[str, dict[str, Any]] = {}
    todo: list[Job] = []
    for job in jobs:
        prev = None
        if not force:
            plan = plan_evaluation(recipe, evaluate=job.evaluate, overrides=job.overrides, gates=job.gates, enforce=job.enforce, strict=job.strict)
            prev = up_to_date(job, plan.settings(), recipe.sha256)
        if prev is not None:
            outcomes[job.rel] = _outcome_from_report(job, prev, out_dir, status="skipped")
        else:
            todo.append(job)
    events.begin(len(jobs), len(jobs) - len(todo))
    done = len(jobs) - len(todo)
    stop = False

    def record(o: dict[str, Any]) -> None:
        nonlocal done, stop
        outcomes[o["path"]] = o
        done += 1
        events.finished(o, done, len(jobs), time.perf_counter() - t0)
        if fail_fast and o["exit_code"] != EXIT_OK:
            stop = True

    for job in todo:
        Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    if workers == 1 or len(todo) <= 1:
        for job in todo:
            if stop:
                break
            events.started(job.rel)
            record(run_job(job, str(out_dir)))
    else:
        _run_pool(todo, out_dir, workers, record, events, lambda: stop)
    events.end()
    for job in jobs:
        if job.rel not in outcomes:
            outcomes[job.rel] = _entry(job, status="not_run", exit_code=EXIT_OK, error="not run: --fail-fast stopped the batch")
    ordered = [outcomes[j.rel] for j in jobs]
    settings = probe.settings()
    if settings["evaluate"] is not None and data is not None:
        settings["evaluate"]["data"] = str(data)  # as given: per model when relative
    summary = _summary(in_dir, out_dir, recipe, settings, shard, ordered, versions(), time.perf_counter() - t0, workers)
    stem = "summary" if shard is None else f"summary-{shard[0]}-of-{shard[1]}"
    write_json(summary, out_dir / f"{stem}.json")
    write_text(summary_markdown(summary), out_dir / f"{stem}.md")
    return BatchResult(summary, ordered)


def start_method() -> str:
    """How worker processes start: ``ONNXZIP_MP_START`` (fork, forkserver, spawn), else
    ``fork`` where the platform has it, else the platform default.

    Forked workers inherit the parent's imports; a spawned or forkserver worker re-imports
    onnx, onnxruntime and onnxsim (seconds each time: on the sample models ``--workers 2``
    took 10 s with forkserver against 0.7 s with fork). The parent runs no onnxruntime session
    before the pool starts, so no onnxruntime thread holds a lock across the fork."""
    import multiprocessing

    env = os.environ.get("ONNXZIP_MP_START", "").strip()
    methods = multiprocessing.get_all_start_methods()
    if env:
        if env not in methods:
            raise UsageError(f"ONNXZIP_MP_START=`{env}` is not a start method here", hint=f"valid: {', '.join(methods)}")
        return env
    return "fork" if "fork" in methods else multiprocessing.get_start_method()


def _init_worker(threads: int) -> None:
    """Give each worker its share of the CPU: N workers each running BLAS on every core
    would fight over them (measured: each model 1.5-2x slower in a pool of 2 on 2 cores)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:  # a forked worker inherits BLAS already started: limit it in place when we can
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except Exception:  # optional: without it the environment applies to spawned workers only
        pass


def _preload(jobs: list[Job]) -> None:
    """Import once in the parent what every worker will import anyway: forked workers inherit
    it instead of each paying it (onnxsim's import alone takes ~2.4 s here; with two workers
    importing it side by side, `onnxzip compress DIR --workers 2` measured slower than
    `--workers 1`). Imports start no onnxruntime session and no thread pool."""
    import onnxruntime  # noqa: F401

    from onnxzip.recipe import load_recipe

    passes: set[str] = set()
    for recipe in {j.recipe for j in jobs}:
        try:
            passes |= {s.name for s in load_recipe(recipe).passes}
        except Exception:  # the worker reports a bad recipe for its own model
            continue
    if "simplify" in passes:
        try:
            import onnxsim  # noqa: F401
        except ImportError:
            pass


def _run_pool(jobs: list[Job], out_dir: Path, workers: int, record: Callable[[dict], None], events: Events, stopped: Callable[[], bool]) -> None:
    """Run ``jobs`` on a process pool; a worker that dies (a native crash) fails only its
    own model: the unfinished ones are retried one per pool to find it."""
    import multiprocessing
    import warnings

    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "fork":
        _preload(jobs)
    pending = list(jobs)
    isolate = False
    while pending and not stopped():
        batch_workers = 1 if isolate else min(workers, len(pending))
        run_now = pending[:1] if isolate else pending
        pending = pending[1:] if isolate else []
        broken: list[Job] = []
        threads = max(1, (os.cpu_count() or 1) // batch_workers)
        with warnings.catch_warnings(), ProcessPoolExecutor(max_workers=batch_workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
            # Python >= 3.12 warns about fork() in a process with (BLAS) threads; see start_method().
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            futures: dict[Future, Job] = {}
            queue = list(run_now)
            while queue or futures:
                while queue and len(futures) < batch_workers and not stopped():
                    job = queue.pop(0)
                    events.started(job.rel)
                    futures[pool.submit(run_job, job, str(out_dir))] = job
                if not futures:
                    break
                finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for f in finished:
                    job = futures.pop(f)
                    try:
                        record(f.result())
                    except BrokenProcessPool:
                        broken.append(job)
                    except Exception as e:  # pickling or pool failure: count it, go on
                        record(_entry(job, exit_code=EXIT_INTERNAL, error=f"error: internal error: {type(e).__name__}: {e}"))
                if broken:
                    broken.extend(futures.values())
                    broken.extend(queue)
                    futures.clear()
                    queue.clear()
                    break
        if not broken:
            continue
        if isolate:  # the one model of this pool crashed it
            record(_entry(broken[0], exit_code=EXIT_INTERNAL, error="error: internal error: the worker process died while compressing this model (a crash in onnxruntime or another native library)"))
        else:  # someone in the pool crashed it: retry the unfinished ones one per pool
            pending = sorted(broken, key=lambda j: j.rel) + pending
            isolate = True


def _summary(in_dir: Path, out_dir: Path, recipe, settings: Mapping[str, Any], shard, models: list[dict[str, Any]], vers: dict[str, str], seconds: float, workers: int) -> dict[str, Any]:
    counts = {s: sum(1 for m in models if m["status"] == s) for s in ("ok", "gate_failed", "failed", "skipped", "not_run")}
    with_size = [m for m in models if m["stored_bytes"] is not None]
    orig = sum(m["original_bytes"] for m in with_size)
    stored = sum(m["stored_bytes"] for m in with_size)
    return {
        "schema": SUMMARY_SCHEMA,
        "versions": vers,
        "input_dir": str(in_dir),
        "output_dir": str(out_dir),
        "recipe": {"name": recipe.name, "source": recipe.source, "sha256": recipe.sha256},
        "settings": settings,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "models": models,
        "totals": {
            "models": len(models),
            **counts,
            "original_bytes": orig,
            "stored_bytes": stored,
            "ratio": round(orig / stored, 4) if stored else None,
        },
        "exit_code": worst_exit([m["exit_code"] for m in models]),
        "timing": {"total_seconds": round(seconds, 4), "workers": workers},
    }


def status_text(m: Mapping[str, Any]) -> str:
    s = m["status"]
    if s == "skipped":
        return "up to date" + (", gate failed" if m["exit_code"] == EXIT_GATE else "")
    if s == "failed":
        return f"failed (exit {m['exit_code']})"
    return {"ok": "ok", "gate_failed": "gate failed", "not_run": "not run"}[s]


def summary_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """model, status, original, stored, ratio, gates, time (for the terminal and Markdown)."""
    rows = []
    for m in summary["models"]:
        gates = {"incomplete": f"pass, {len(m['unevaluated_gates'])} not evaluated", None: "-"}.get(m["gates"], m["gates"])
        if m["failed_gates"]:
            gates += ": " + ", ".join(m["failed_gates"])
        rows.append(
            [
                m["path"],
                status_text(m),
                fmt_bytes(m["original_bytes"]),
                fmt_bytes(m["stored_bytes"]),
                fmt_ratio(m["ratio"]),
                gates,
                fmt_duration(m["seconds"]) if m["status"] not in ("skipped", "not_run") else "-",
            ]
        )
    return rows


def first_error_line(m: Mapping[str, Any]) -> str:
    err = m.get("error") or ""
    return err.splitlines()[0].removeprefix("error: ") if err else ""


def summary_markdown(summary: Mapping[str, Any]) -> str:
    t = summary["totals"]
    lines = [
        f"### onnxzip batch: `{summary['input_dir']}` with recipe `{summary['recipe']['name']}`" + (f" (shard {summary['shard']})" if summary["shard"] else ""),
        "",
        f"{t['models']} models: {t['ok']} ok, {t['gate_failed']} gate failed, {t['failed']} failed, {t['skipped']} skipped (up to date)"
        + (f", {t['not_run']} not run" if t["not_run"] else "")
        + f"; {fmt_bytes(t['original_bytes'])} -> {fmt_bytes(t['stored_bytes'])} ({fmt_ratio(t['ratio'])}); exit code {summary['exit_code']}.",
        "",
        "| model | status | original | stored | ratio | gates | time |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in summary_rows(summary)]
    errs = [m for m in summary["models"] if m["status"] == "failed"]
    if errs:
        lines += ["", "Failures:", ""]
        lines += [f"- `{m['path']}`: {first_error_line(m)}" for m in errs]
    lines += ["", f"onnxzip {summary['versions']['onnxzip']}, onnxruntime {summary['versions']['onnxruntime']}"]
    return "\n".join(lines) + "\n"


__all__ = ["BatchFailed", "BatchResult", "Events", "compress_dir", "find_models", "parse_shard", "summary_markdown", "take_shard", "worst_exit"]
