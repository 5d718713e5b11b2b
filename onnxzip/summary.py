"""What a model holds (for `onnxzip inspect`): ops, opsets, inputs/outputs, initializers
with their size share and sparsity, and what a recipe would target."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from onnxzip import model as M
from onnxzip.passes import REGISTRY
from onnxzip.passes.base import Skip, TargetConfig
from onnxzip.recipe import Recipe


def _value_info(v: onnx.ValueInfoProto) -> dict[str, Any]:
    tt = v.type.tensor_type
    dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?") for d in tt.shape.dim]
    dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower() if tt.elem_type else "?"
    return {"name": v.name, "dtype": dtype, "shape": dims}


def describe_model(model: onnx.ModelProto, recipe: Recipe | None = None, *, max_initializers: int | None = None) -> dict[str, Any]:
    main = model.graph
    inits = []
    total = 0
    for scope in M.walk(model):
        for t in scope.graph.initializer:
            nbytes = M.tensor_nbytes(t)
            total += nbytes
            arr = M.to_array(t) if t.data_location != onnx.TensorProto.EXTERNAL else None
            sparsity = float(np.count_nonzero(arr == 0) / arr.size) if arr is not None and arr.size and arr.dtype.kind in "fiu" else None
            inits.append(
                {
                    "name": t.name,
                    "graph": scope.path or "main",
                    "shape": list(t.dims),
                    "dtype": onnx.TensorProto.DataType.Name(t.data_type).lower(),
                    "bytes": nbytes,
                    "sparsity": sparsity,
                }
            )
    inits.sort(key=lambda d: (-d["bytes"], d["name"]))
    for d in inits:
        d["share"] = d["bytes"] / total if total else 0.0
    info: dict[str, Any] = {
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "graphs": sum(1 for _ in M.walk(model)),
        "inputs": [_value_info(v) for v in main.input if v.name not in {t.name for t in main.initializer}],
        "outputs": [_value_info(v) for v in main.output],
        "ops": M.op_histogram(model),
        "initializer_bytes": total,
        "initializer_count": len(inits),
        "initializers": inits[:max_initializers] if max_initializers else inits,
    }
    if recipe is not None:
        info["targets"] = recipe_targets(model, recipe)
    return info


def recipe_targets(model: onnx.ModelProto, recipe: Recipe) -> list[dict[str, Any]]:
    """For each weight pass of the recipe: the tensors it would touch and what it would skip."""
    out = []
    for step in recipe.passes:
        cfg = step.config
        if not isinstance(cfg, TargetConfig):
            out.append({"pass": step.name, "targets": None, "skipped": [], "note": "acts on the whole model"})
            continue
        skipped: list[Skip] = []
        refs = REGISTRY[step.name].targets(model, cfg, skipped)
        out.append(
            {
                "pass": step.name,
                "targets": [{"name": name, "node": node.name, "op": node.op_type, "params": n} for name, node, n in refs],
                "skipped": [s.to_dict() for s in skipped],
            }
        )
    return out
