"""The library entry point behind ``onnxzip compress``: load, run the recipe, evaluate,
save, report, judge the gates.

Evaluation runs when it is asked for (``evaluate=True``, evaluation options, or a recipe
``evaluate:`` section) or when a gate needs a measured number (every gate but
``min_compression``); a run that only gates needs no latency unless a latency gate asks.
Everything that can be checked before the model is touched is: recipe, output path,
providers, data file, metric code. Gate failures do not raise: the report's ``gates``
section and :attr:`CompressResult.exit_code` carry them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from onnxzip import model as M
from onnxzip.data import CalibrationSource, NpzData, input_signature
from onnxzip.evaluate import EvalPlan, Evaluator, check_runs, plan_evaluation
from onnxzip.gates import Gate, evaluate_gates, exit_code
from onnxzip.passes.base import PassContext
from onnxzip.pipeline import PipelineResult, model_bytes, run_pipeline
from onnxzip.recipe import Recipe, load_recipe
from onnxzip.report import build_report

@dataclass
class CompressResult:
    """What a compression run produced: the files, the in-memory model and the report."""

    output: Path
    files: list[Path]
    model: onnx.ModelProto
    pipeline: PipelineResult
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def gates(self) -> dict[str, Any] | None:
        return self.report.get("gates")

    @property
    def exit_code(self) -> int:
        """0, or 1 when an enforced gate failed."""
        return exit_code(self.gates)


def model_files(path: str | Path) -> list[Path]:
    """The model file and the external data files it references (for sizes and batch copies)."""
    p = Path(path)
    proto = onnx.load_model(str(p), load_external_data=False)
    files = [p]
    seen = set()
    for t in M.iter_tensors(proto):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location" and kv.value not in seen:
                    seen.add(kv.value)
                    files.append(p.parent / kv.value)
    return files


def files_size(paths: list[Path]) -> int:
    return sum(os.path.getsize(p) for p in paths if os.path.exists(p))


def calibration_source(recipe: Recipe, calib: str | Path | None = None) -> CalibrationSource | None:
    """The recipe's calibration data (path relative to the recipe file), or ``calib``."""
    cal = recipe.calibration
    path: Path | None = None
    if calib is not None:
        path = Path(calib)
    elif cal is not None and cal.data:
        path = Path(cal.data)
        if not path.is_absolute() and recipe.base_dir is not None:
            path = recipe.base_dir / path
    if path is None:
        return None
    return CalibrationSource(NpzData(path, what="calibration"), samples=cal.samples if cal else 128, batch=cal.batch if cal else 16)


def compress(
    model_path: str | Path,
    recipe: Recipe | str | Path,
    output: str | Path,
    *,
    force: bool = False,
    check: bool = True,
    on_step: Callable[[int, int, str], None] | None = None,
    context: PassContext | None = None,
    calib: str | Path | None = None,
    evaluate: bool | None = None,
    eval_overrides: Mapping[str, Any] | None = None,
    gates: Sequence[Gate] = (),
    enforce_gates: bool = True,
    strict_gates: bool = False,
    plan: EvalPlan | None = None,
    progress: Callable[[str], None] | None = None,
) -> CompressResult:
    """Compress ``model_path`` with ``recipe`` into ``output`` and return the result with
    its report. Nothing is written unless every pass (and the evaluation) succeeds.

    ``calib`` (an .npz keyed by input name) overrides the recipe's ``calibration.data``.
    ``eval_overrides`` holds :class:`~onnxzip.evaluate.EvalOptions` fields (``data``,
    ``providers``, ``latency``, ...) that override the recipe's ``evaluate:``; ``gates``
    (see :func:`onnxzip.gates.make_gate`) replace the recipe's gates of the same name.
    A failed gate is in ``result.report["gates"]`` and ``result.exit_code``; it does not raise.
    """
    t0 = time.perf_counter()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    output = Path(output)
    M.check_output_path(output, input_path=model_path, force=force)
    if plan is None:
        plan = plan_evaluation(recipe, evaluate=evaluate, overrides=eval_overrides, gates=gates, enforce=enforce_gates, strict=strict_gates)
    calibration = calibration_source(recipe, calib)
    evaluator = Evaluator(plan.options, progress=progress) if plan.options else None
    model = M.load_model(model_path)
    if calibration is not None:
        calibration.data.validate(input_signature(model))
    if evaluator is not None:
        evaluator.check_model(model)
    if check:
        check_runs(model)
    if context is None:
        context = PassContext(seed=recipe.seed, recipe_dir=recipe.base_dir, calibration=calibration)
    input_files = model_files(model_path)
    original_bytes = files_size(input_files)
    loaded_bytes = model_bytes(model)
    result = run_pipeline(model, recipe, context=context, check=check, on_step=on_step)
    t_compress = time.perf_counter() - t0
    evaluation = None
    if evaluator is not None:
        original = M.load_model(model_path)  # the pipeline rewrote the first copy in place
        evaluation = evaluator.run(original, result.model)
        del original
    files = M.save_model(result.model, output, input_path=model_path, force=force)
    report = build_report(
        model_path=Path(model_path),
        recipe=recipe,
        pipeline=result,
        original_bytes=original_bytes,
        loaded_bytes=loaded_bytes,
        output=output,
        files=files,
        seconds=time.perf_counter() - t0,
        input_files=input_files,
        settings=plan.settings(),
        evaluation=evaluation,
        timing={"compress_seconds": t_compress, "evaluate_seconds": evaluation["seconds"] if evaluation else 0.0},
    )
    if plan.gates:
        report["gates"] = evaluate_gates(list(plan.gates), report, enforce=plan.enforce, strict=plan.strict)
    return CompressResult(output, files, result.model, result, report)
