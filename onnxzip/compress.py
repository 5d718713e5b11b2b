"""The library entry point behind ``onnxzip compress``: load, run the recipe, save, report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import onnx

from onnxzip import model as M
from onnxzip.data import CalibrationSource, NpzData, input_signature
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
) -> CompressResult:
    """Compress ``model_path`` with ``recipe`` into ``output`` and return the result with
    its size report. Nothing is written unless every pass succeeds.

    ``calib`` (an .npz keyed by input name) overrides the recipe's ``calibration.data``."""
    t0 = time.perf_counter()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    output = Path(output)
    M.check_output_path(output, input_path=model_path, force=force)
    calibration = calibration_source(recipe, calib)
    model = M.load_model(model_path)
    if calibration is not None:
        calibration.data.validate(input_signature(model))
    if context is None:
        context = PassContext(seed=recipe.seed, recipe_dir=recipe.base_dir, calibration=calibration)
    original_bytes = files_size(model_files(model_path))
    loaded_bytes = model_bytes(model)
    result = run_pipeline(model, recipe, context=context, check=check, on_step=on_step)
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
    )
    return CompressResult(output, files, result.model, result, report)
