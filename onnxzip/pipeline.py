"""Run a recipe's passes in order, checking the graph after every one.

After each pass: onnx.checker and an onnxruntime CPU session must accept the model
(``ai.onnxzip`` nodes are decoded first). A failure is a :class:`PassFailure` naming the
pass and the passes that ran before it, since the bug is onnxzip's, not the user's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from onnxzip import model as M
from onnxzip.errors import OnnxzipError, PassFailure
from onnxzip.passes import REGISTRY
from onnxzip.passes.base import PassContext, PassResult
from onnxzip.recipe import Recipe

log = logging.getLogger("onnxzip.pipeline")


@dataclass
class StepRecord:
    name: str
    result: PassResult
    seconds: float
    bytes_after: int


@dataclass
class PipelineResult:
    model: onnx.ModelProto
    steps: list[StepRecord] = field(default_factory=list)


def model_bytes(model: onnx.ModelProto) -> int:
    """Serialized size (tensor bytes plus graph) without serializing models over 2 GB."""
    data = M._data_bytes(model)
    if data >= M.EXTERNAL_THRESHOLD:
        return data
    return model.ByteSize()


def verify(model: onnx.ModelProto) -> None:
    """onnx.checker plus an onnxruntime CPU session load; raises on failure."""
    from onnxzip.runtime import session_from_model, to_plain

    plain = to_plain(model)
    M.check_model(plain, what="the rewritten model")
    session_from_model(plain, ["CPUExecutionProvider"], optimization="basic")


def run_pipeline(
    model: onnx.ModelProto,
    recipe: Recipe,
    *,
    context: PassContext | None = None,
    check: bool = True,
    on_step: Callable[[int, int, str], None] | None = None,
) -> PipelineResult:
    """Run ``recipe.passes`` on ``model`` (modified in place where passes allow)."""
    ctx = context or PassContext(seed=recipe.seed, recipe_dir=recipe.base_dir)
    out = PipelineResult(model)
    done: list[str] = []
    for i, step in enumerate(recipe.passes):
        if on_step:
            on_step(i, len(recipe.passes), step.name)
        cls = REGISTRY[step.name]
        t0 = time.perf_counter()
        try:
            result = cls(step.config, ctx).call(out.model)
        except OnnxzipError:
            raise
        except Exception as e:
            raise PassFailure(
                f"pass `{step.name}` crashed",
                causes=[f"{type(e).__name__}: {e}", _after(done)],
                hint="this is a bug in onnxzip; please report it with the model and recipe",
            ) from e
        seconds = time.perf_counter() - t0
        if check and result.modified:
            try:
                verify(result.model)
            except Exception as e:
                msg = e.render() if isinstance(e, OnnxzipError) else f"{type(e).__name__}: {e}"
                raise PassFailure(
                    f"pass `{step.name}` produced an invalid model",
                    causes=[msg.splitlines()[0].removeprefix("error: "), _after(done)],
                    hint="this is a bug in onnxzip; exclude the offending nodes with `exclude:` meanwhile, and report it",
                ) from e
        for w in result.warnings:
            log.warning("pass `%s`: %s", step.name, w)
        out.model = result.model
        out.steps.append(StepRecord(step.name, result, seconds, model_bytes(result.model)))
        done.append(step.name)
    return out


def _after(done: list[str]) -> str:
    return "it ran after: " + (", ".join(f"`{d}`" for d in done) if done else "nothing (first pass)")
