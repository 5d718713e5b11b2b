"""Run onnxzip outputs: decode ``ai.onnxzip`` nodes in memory, then a normal onnxruntime
session on any provider.

``InferenceSession(path_or_model)`` works for every ONNX file; for files holding
``ai.onnxzip`` nodes (Huffman-coded weights) it first rewrites them into plain
initializers (:func:`to_plain`). ``onnxzip unpack`` writes that plain model to disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxzip import model as M
from onnxzip.errors import ModelError, UsageError

# op_type in ai.onnxzip -> decoder(node, scope) returning the decoded array for the
# node's single output. Decoders validate their inputs and raise ModelError on damage.
Decoder = Callable[[onnx.NodeProto, M.Scope], np.ndarray]
DECODERS: dict[str, Decoder] = {}

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


def _register_decoders() -> None:
    # Explicit, not by import side effect of the codec modules.
    try:
        from onnxzip._huffman_op import decode_node
    except ImportError:
        return
    DECODERS["HuffmanDecode"] = decode_node


def has_custom_nodes(model: onnx.ModelProto) -> bool:
    return any((n.domain or "") == M.ONNXZIP_DOMAIN for _, n in M.iter_nodes(model))


def to_plain(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every ``ai.onnxzip`` node decoded into an initializer."""
    if not has_custom_nodes(model):
        return model
    if not DECODERS:
        _register_decoders()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consumed: set[str] = set()
    for scope in M.walk(out):
        g = scope.graph
        keep = []
        for node in g.node:
            if (node.domain or "") != M.ONNXZIP_DOMAIN:
                keep.append(node)
                continue
            dec = DECODERS.get(node.op_type)
            if dec is None:
                raise ModelError(
                    f"node `{node.name}` uses op `{M.ONNXZIP_DOMAIN}::{node.op_type}`, which this onnxzip cannot decode",
                    hint="upgrade onnxzip to the version that wrote the file",
                )
            arr = dec(node, scope)
            g.initializer.append(M.make_tensor(arr, node.output[0]))
            consumed.update(node.input)
        del g.node[:]
        g.node.extend(keep)
    M.remove_unused_initializers(out, only=consumed)
    keep = [(o.domain, o.version) for o in out.opset_import if o.domain != M.ONNXZIP_DOMAIN]
    del out.opset_import[:]  # repeated message fields take no slice assignment
    out.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in keep)
    return out


def resolve_providers(names: Sequence[str] | None) -> list[str]:
    """Map short names (cpu, cuda, ...) to onnxruntime provider names, checking availability."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    out = []
    for n in names or ["cpu"]:
        full = PROVIDER_ALIASES.get(n.lower(), n)
        if full not in available:
            hint = "install the CUDA build: pip install 'onnxzip[cuda]'" if full == "CUDAExecutionProvider" else f"available here: {', '.join(available)}"
            raise UsageError(f"execution provider `{n}` is not available", hint=hint)
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")  # fallback for ops the accelerator lacks
    return out


def _session_options(threads: int | None, optimization: str, optimized_path: str | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return opts


def session_from_path(path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",), *, threads: int | None = None, optimization: str = "all") -> Any:
    """An onnxruntime session straight from a plain ONNX file (external data included)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), _session_options(threads, optimization, None), providers=list(providers))
    except Exception as e:  # onnxruntime raises its own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"onnxruntime cannot load `{path}`", causes=[first], hint="run `onnxzip inspect` on it; the model may use ops this onnxruntime lacks") from None


def session_from_model(
    model: onnx.ModelProto,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    *,
    threads: int | None = None,
    optimization: str = "all",
    optimized_path: str | None = None,
) -> Any:
    """An onnxruntime session for an in-memory model (through a temp folder when the
    model is over protobuf's 2 GB limit)."""
    import onnxruntime as ort

    opts = _session_options(threads, optimization, optimized_path)
    plain = to_plain(model)
    if M._data_bytes(plain) >= M.EXTERNAL_THRESHOLD:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.onnx"
            M._write(plain, path, external=True)
            return ort.InferenceSession(str(path), opts, providers=list(providers))
    return ort.InferenceSession(M.serialize(plain), opts, providers=list(providers))


class InferenceSession:
    """onnxruntime session for any onnxzip output (Huffman-coded or plain).

    >>> sess = InferenceSession("model.onnxzip.onnx", providers=["cpu"])
    >>> sess.run(None, {"input": x})
    """

    def __init__(self, path_or_model: str | os.PathLike | onnx.ModelProto, providers: Sequence[str] | None = None, *, threads: int | None = None):
        self.providers = resolve_providers(providers)
        if isinstance(path_or_model, onnx.ModelProto):
            self._sess = session_from_model(path_or_model, self.providers, threads=threads)
            return
        path = Path(path_or_model)
        skeleton = M.load_model(path, check=False, prepare=False, external=False)
        if has_custom_nodes(skeleton):
            del skeleton
            self._sess = session_from_model(M.load_model(path, prepare=False), self.providers, threads=threads)
        else:  # plain ONNX: let onnxruntime read the file itself (no copy, no re-serialization)
            self._sess = session_from_path(path, self.providers, threads=threads)

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._sess.run(output_names, feeds)

    def get_inputs(self):
        return self._sess.get_inputs()

    def get_outputs(self):
        return self._sess.get_outputs()

    def get_providers(self) -> list[str]:
        return self._sess.get_providers()
