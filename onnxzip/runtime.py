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
from google.protobuf.message import EncodeError

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


def _scan(model: onnx.ModelProto) -> tuple[bool, bool]:
    """(has ``ai.onnxzip`` nodes, has external-data tensors) in one walk."""
    custom = external = False
    for scope in M.walk(model):
        g = scope.graph
        custom = custom or any((n.domain or "") == M.ONNXZIP_DOMAIN for n in g.node)
        external = external or any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer)
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == onnx.TensorProto.EXTERNAL:
                    external = True
    return custom, external


# onnxruntime takes these as OrtValues (SessionOptions.add_external_initializers)
_ORT_VALUE_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))
_DECODED_LOCATION = "onnxzip-decoded"  # placeholder external-data location, never a file


def _placeholder(name: str, arr: np.ndarray) -> onnx.TensorProto:
    """An initializer whose data onnxruntime takes from an OrtValue (no bytes in the proto)."""
    t = onnx.TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape)
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value=_DECODED_LOCATION)
    t.external_data.add(key="length", value=str(arr.nbytes))
    return t


class _CachedScope(M.Scope):
    """A scope whose initializer table is built once: every decoder looks up two inputs."""

    def _local_initializers(self) -> dict[str, onnx.TensorProto]:
        cache = self.__dict__.get("_inits")
        if cache is None:
            cache = self.__dict__["_inits"] = super()._local_initializers()
        return cache


def _cached(scope: M.Scope | None) -> M.Scope | None:
    if scope is None:
        return None
    return _CachedScope(scope.graph, _cached(scope.parent), scope.owner, scope.path)


def _decode_in_place(model: onnx.ModelProto, *, hand_over: bool = False) -> dict[str, np.ndarray]:
    """Replace every ``ai.onnxzip`` node of ``model`` by its decoded tensor, in place.

    With ``hand_over``, 8-bit tensors of the main graph get a placeholder initializer and
    are returned (name -> array) for ``add_external_initializers``: they never enter the
    proto. Everything else becomes a regular initializer. The coded inputs are deleted in
    place (rebuilding the initializer lists would copy every tensor).
    """
    if not DECODERS:
        _register_decoders()
    consumed: set[str] = set()
    handed: dict[str, np.ndarray] = {}
    scopes = list(M.walk(model))
    for scope in scopes:
        g = scope.graph
        idx = [i for i, n in enumerate(g.node) if (n.domain or "") == M.ONNXZIP_DOMAIN]
        if not idx:
            continue
        cached = _cached(scope)
        decoded = []
        for i in idx:
            node = g.node[i]
            dec = DECODERS.get(node.op_type)
            if dec is None:
                raise ModelError(
                    f"node `{node.name}` uses op `{M.ONNXZIP_DOMAIN}::{node.op_type}`, which this onnxzip cannot decode",
                    hint="upgrade onnxzip to the version that wrote the file",
                )
            decoded.append((node.output[0], dec(node, cached)))
            consumed.update(n for n in node.input if n)
        for i in reversed(idx):
            del g.node[i]
        for name, arr in decoded:
            if hand_over and scope.parent is None and arr.dtype in _ORT_VALUE_DTYPES:
                g.initializer.append(_placeholder(name, arr))
                handed[name] = arr
            else:
                g.initializer.append(M.make_tensor(arr, name))
    used: set[str] = set()
    for scope in scopes:
        for n in scope.graph.node:
            used.update(n.input)
        used.update(o.name for o in scope.graph.output)
        used.update(i.name for i in scope.graph.input)
    drop = consumed - used
    for scope in scopes:
        inits = scope.graph.initializer
        for i in reversed([i for i, t in enumerate(inits) if t.name in drop]):
            del inits[i]
    keep_ops = [(o.domain, o.version) for o in model.opset_import if o.domain != M.ONNXZIP_DOMAIN]
    del model.opset_import[:]  # repeated message fields take no slice assignment
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in keep_ops)
    return handed


def to_plain(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every ``ai.onnxzip`` node decoded into an initializer."""
    if not has_custom_nodes(model):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _decode_in_place(out)
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
    model is over protobuf's 2 GB limit). ``model`` is not modified."""
    if has_custom_nodes(model):
        work = onnx.ModelProto()
        work.CopyFrom(model)
        return _session_from_coded(work, providers, threads=threads, optimization=optimization, optimized_path=optimized_path)
    return _session(model, {}, providers, threads=threads, optimization=optimization, optimized_path=optimized_path)


def _session_from_coded(model: onnx.ModelProto, providers: Sequence[str], **kw: Any) -> Any:
    """Session for a model with ``ai.onnxzip`` nodes, decoding them in place in ``model``.

    Decoded 8-bit main-graph tensors go to onnxruntime as OrtValues, not through the proto:
    no serialization of the decoded weights and no second parse of them.
    """
    return _session(model, _decode_in_place(model, hand_over=True), providers, **kw)


def _session(model: onnx.ModelProto, arrays: dict[str, np.ndarray], providers: Sequence[str], *, threads: int | None,
             optimization: str, optimized_path: str | None) -> Any:
    import onnxruntime as ort

    opts = _session_options(threads, optimization, optimized_path)
    try:  # serializing is the size check: protobuf's ByteSize costs as much
        data = M.serialize(model)
    except (EncodeError, ValueError):  # over protobuf's 2 GB limit
        data = None
    if data is None or len(data) >= M.EXTERNAL_THRESHOLD:
        data = None
        for scope in M.walk(model):  # the temp-folder path writes plain tensors
            for i, t in enumerate(scope.graph.initializer):
                if scope.parent is None and t.name in arrays:
                    scope.graph.initializer[i].CopyFrom(M.make_tensor(arrays[t.name], t.name))
        arrays = {}
    if arrays:
        names = list(arrays)
        opts.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(arrays[n]) for n in names])
    if data is None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.onnx"
            M._write(model, path, external=True)
            sess = ort.InferenceSession(str(path), opts, providers=list(providers))
    else:
        sess = ort.InferenceSession(data, opts, providers=list(providers))
    # onnxruntime may keep pointing at the arrays' memory: they live as long as the session
    sess._onnxzip_arrays = arrays
    sess._onnxzip_options = opts
    return sess


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
        model = M.load_model(path, check=False, prepare=False, external=False)
        custom, external = _scan(model)
        if not custom:  # plain ONNX: onnxruntime reads the file itself
            del model
            self._sess = session_from_path(path, self.providers, threads=threads)
            return
        if external:
            model = M.load_model(path, check=False, prepare=False)  # reads the external data, contained
        # No onnx.checker: the decoders validate their nodes and onnxruntime the plain graph.
        try:
            self._sess = _session_from_coded(model, self.providers, threads=threads, optimization="all", optimized_path=None)
        except ModelError:
            raise
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"onnxruntime cannot load `{path}`", causes=[first], hint="run `onnxzip inspect` on it; the model may use ops this onnxruntime lacks") from None

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._sess.run(output_names, feeds)

    def get_inputs(self):
        return self._sess.get_inputs()

    def get_outputs(self):
        return self._sess.get_outputs()

    def get_providers(self) -> list[str]:
        return self._sess.get_providers()
