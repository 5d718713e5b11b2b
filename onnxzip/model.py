"""Model I/O and graph helpers shared by every pass.

Loading confines external data to the model's folder, lifts ``Constant`` nodes to
initializers (in every graph, subgraphs included) and names unnamed nodes so that
recipes can target them. Saving is deterministic (same proto -> same bytes) and
atomic (temp file + rename, nothing partial on failure), with external data for
models over protobuf's 2 GB limit.

The walkers (:func:`walk`, :class:`Scope`) reach the bodies of If/Loop/Scan nodes, so
a pass that asks for weights gets the ones inside subgraphs too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from onnxzip.errors import ModelError, UsageError

# Protobuf refuses messages of 2 GiB and more; stay clear of the edge.
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = int(1.8 * 2**30)
# Tensors at least this large go to the external data file when one is needed.
EXTERNAL_MIN_TENSOR = 1024

ONNXZIP_DOMAIN = "ai.onnxzip"


# --------------------------------------------------------------------------- walking


@dataclass
class Scope:
    """One graph and its enclosing scope, for name lookups that respect ONNX scoping."""

    graph: onnx.GraphProto
    parent: Scope | None = None
    owner: onnx.NodeProto | None = None  # the If/Loop/Scan node holding this graph
    path: str = ""  # human-readable location, "" for the main graph

    def _local_initializers(self) -> dict[str, onnx.TensorProto]:
        return {t.name: t for t in self.graph.initializer}

    def _local_defined(self) -> set[str]:
        names = {i.name for i in self.graph.input}
        for n in self.graph.node:
            names.update(o for o in n.output if o)
        return names

    def lookup_initializer(self, name: str) -> tuple[Scope, onnx.TensorProto] | None:
        """The initializer named ``name`` visible from this graph, with the scope owning it.

        An inner graph input or node output of the same name shadows outer initializers.
        """
        scope: Scope | None = self
        while scope is not None:
            inits = scope._local_initializers()
            if name in inits:
                return scope, inits[name]
            if name in scope._local_defined():
                return None
            scope = scope.parent
        return None


def walk(model: onnx.ModelProto | onnx.GraphProto) -> Iterator[Scope]:
    """Yield the main graph, then every subgraph (If/Loop/Scan bodies), depth first."""
    graph = model.graph if isinstance(model, onnx.ModelProto) else model

    def rec(scope: Scope) -> Iterator[Scope]:
        yield scope
        for node in scope.graph.node:
            for attr in node.attribute:
                subs = []
                if attr.type == onnx.AttributeProto.GRAPH:
                    subs = [attr.g]
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    subs = list(attr.graphs)
                for i, g in enumerate(subs):
                    label = f"{node.name or node.op_type}.{attr.name}"
                    if len(subs) > 1:
                        label += f"[{i}]"
                    path = f"{scope.path}/{label}" if scope.path else label
                    yield from rec(Scope(g, scope, node, path))

    yield from rec(Scope(graph))


def iter_nodes(model: onnx.ModelProto) -> Iterator[tuple[Scope, onnx.NodeProto]]:
    """Every node of every graph, with its scope."""
    for scope in walk(model):
        for node in scope.graph.node:
            yield scope, node


def iter_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in the model: initializers and tensor attributes, subgraphs included."""
    for scope in walk(model):
        yield from scope.graph.initializer
        for node in scope.graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def count_ops(model: onnx.ModelProto, op_type: str, domain: str | None = None) -> int:
    """Number of nodes of ``op_type`` in all graphs (``domain`` None matches any)."""
    return sum(
        1
        for _, n in iter_nodes(model)
        if n.op_type == op_type and (domain is None or (n.domain or "") == domain)
    )


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> count over all graphs, sorted by name (domain-qualified when not default)."""
    counts: dict[str, int] = {}
    for _, n in iter_nodes(model):
        key = f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    """Nodes of ``graph`` (not its subgraphs) reading tensor ``name``."""
    return [n for n in graph.node if name in n.input]


def is_used_in_subgraph(node: onnx.NodeProto, name: str) -> bool:
    """Whether a subgraph of ``node`` reads ``name`` from the outer scope."""
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for s in walk(g):
                for n in s.graph.node:
                    if name in n.input:
                        return True
    return False


def producer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    for n in graph.node:
        if name in n.output:
            return n
    return None


# --------------------------------------------------------------------------- tensors


def to_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The numpy value of an initializer (external data must already be loaded)."""
    return numpy_helper.to_array(tensor)


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes the tensor's data takes when stored (raw or typed fields, or external length)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        for kv in tensor.external_data:
            if kv.key == "length":
                return int(kv.value)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return tensor.ByteSize()


def numel(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) if len(tensor.dims) else 1


def make_tensor(array: np.ndarray, name: str) -> onnx.TensorProto:
    """A tensor proto with raw data (the compact, deterministic encoding)."""
    # np.ascontiguousarray would turn a 0-d scale into shape [1], which onnxruntime reads
    # as per-axis and then refuses to fuse the QDQ pattern.
    return numpy_helper.from_array(np.asarray(array, order="C"), name)


def replace_initializer(scope_or_graph: Scope | onnx.GraphProto, name: str, array: np.ndarray) -> None:
    """Replace the data of initializer ``name`` in place, keeping its position."""
    graph = scope_or_graph.graph if isinstance(scope_or_graph, Scope) else scope_or_graph
    for t in graph.initializer:
        if t.name == name:
            t.CopyFrom(make_tensor(array, name))
            return
    raise KeyError(name)


def add_initializer(graph: onnx.GraphProto, array: np.ndarray, name: str) -> str:
    graph.initializer.append(make_tensor(array, name))
    return name


def remove_initializer(graph: onnx.GraphProto, name: str) -> None:
    keep = [t for t in graph.initializer if t.name != name]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


class NameGen:
    """Fresh tensor/node names that collide with nothing in the model, deterministically."""

    def __init__(self, model: onnx.ModelProto):
        self.used: set[str] = set()
        for scope in walk(model):
            g = scope.graph
            self.used.update(t.name for t in g.initializer)
            self.used.update(i.name for i in g.input)
            self.used.update(o.name for o in g.output)
            for n in g.node:
                self.used.update(n.output)
                self.used.update(n.input)
                self.used.add(n.name)

    def __call__(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name


def remove_unused_initializers(model: onnx.ModelProto, only: set[str] | None = None) -> int:
    """Drop initializers no node (in any graph) reads and no graph outputs or inputs name;
    with ``only``, consider just those names. Returns the count removed."""
    used: set[str] = set()
    for scope in walk(model):
        for n in scope.graph.node:
            used.update(n.input)
        used.update(o.name for o in scope.graph.output)
        used.update(i.name for i in scope.graph.input)
    removed = 0
    for scope in walk(model):
        g = scope.graph
        keep = [t for t in g.initializer if t.name in used or (only is not None and t.name not in only)]
        if len(keep) != len(g.initializer):
            removed += len(g.initializer) - len(keep)
            del g.initializer[:]
            g.initializer.extend(keep)
    return removed


def domain_opset(model: onnx.ModelProto, domain: str = "") -> int | None:
    for op in model.opset_import:
        if (op.domain or "") == domain or (domain == "" and op.domain == "ai.onnx"):
            return op.version
    return None


def ensure_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    """Declare ``domain`` at ``version`` or higher (for custom domains only; the default
    domain is upgraded with onnx's version converter by the passes that need it)."""
    for op in model.opset_import:
        if op.domain == domain:
            op.version = max(op.version, version)
            return
    model.opset_import.append(onnx.helper.make_opsetid(domain, version))


def model_hash(path_or_bytes: str | Path | bytes) -> str:
    """sha256 of a file (or bytes), streamed: the identity of a model or recipe in reports."""
    h = hashlib.sha256()
    if isinstance(path_or_bytes, bytes):
        h.update(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- loading


def _external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {kv.key: kv.value for kv in tensor.external_data}


def check_external_paths(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data locations that could leave ``base_dir``.

    Absolute paths, ``..`` segments and symlinks resolving outside the folder are all
    refused before a single byte is read from them.
    """
    base_real = Path(os.path.realpath(base_dir))
    for t in iter_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = _external_info(t)
        loc = info.get("location", "")
        if not loc:
            raise ModelError(
                f"tensor `{t.name}` is marked external but names no location",
                hint="the model file is damaged; re-export it",
            )
        if os.path.isabs(loc) or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":"):
            raise ModelError(
                f"tensor `{t.name}`: external data location `{loc}` is an absolute path",
                hint="external data must sit in the model's folder; onnxzip refuses paths outside it",
            )
        parts = Path(loc.replace("\\", "/")).parts
        if ".." in parts:
            raise ModelError(
                f"tensor `{t.name}`: external data location `{loc}` escapes the model's folder",
                hint="external data must sit in the model's folder; onnxzip refuses `..` in locations",
            )
        target = base_dir / loc
        real = Path(os.path.realpath(target))
        if os.path.commonpath([str(real), str(base_real)]) != str(base_real):
            raise ModelError(
                f"tensor `{t.name}`: external data `{loc}` is a link that resolves outside the model's folder",
                hint="copy the data file next to the model instead of linking it",
            )
        if not real.is_file():
            raise ModelError(
                f"tensor `{t.name}`: external data file `{loc}` not found next to the model",
                hint=f"the model expects `{loc}` in `{base_dir}`; copy it there",
            )
        size = real.stat().st_size
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        if length is not None and offset + int(length) > size:
            raise ModelError(
                f"tensor `{t.name}`: external data `{loc}` is truncated "
                f"(needs bytes {offset}..{offset + int(length)}, file has {size})",
                hint="the data file is damaged or belongs to another model",
            )


def lift_constants(model: onnx.ModelProto) -> int:
    """Turn tensor-valued Constant nodes into initializers, in every graph. Returns the count.

    Passes look for weights among initializers; exporters that emit weights as Constant
    nodes (PaddleOCR, older TF converters) would otherwise be skipped silently.
    """
    lifted = 0
    for scope in walk(model):
        g = scope.graph
        outputs = {o.name for o in g.output}
        keep: list[onnx.NodeProto] = []
        new_inits: list[onnx.TensorProto] = []
        for node in g.node:
            t = None
            if node.op_type == "Constant" and (node.domain or "") in ("", "ai.onnx") and len(node.output) == 1:
                name = node.output[0]
                if name not in outputs:
                    t = _constant_tensor(node, name)
            if t is None:
                keep.append(node)
            else:
                new_inits.append(t)
                lifted += 1
        if new_inits:
            del g.node[:]
            g.node.extend(keep)
            g.initializer.extend(new_inits)
    return lifted


def _constant_tensor(node: onnx.NodeProto, name: str) -> onnx.TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            t = onnx.TensorProto()
            t.CopyFrom(attr.t)
            t.name = name
            return t
        if attr.name == "value_float":
            return make_tensor(np.array(attr.f, dtype=np.float32), name)
        if attr.name == "value_floats":
            return make_tensor(np.array(list(attr.floats), dtype=np.float32), name)
        if attr.name == "value_int":
            return make_tensor(np.array(attr.i, dtype=np.int64), name)
        if attr.name == "value_ints":
            return make_tensor(np.array(list(attr.ints), dtype=np.int64), name)
    return None  # sparse_value / strings stay as they are


def name_nodes(model: onnx.ModelProto) -> int:
    """Give unnamed nodes a stable name (`<op>_<n>`) so recipes and reports can refer to them."""
    gen = NameGen(model)
    named = 0
    for _, node in iter_nodes(model):
        if not node.name:
            node.name = gen(f"{node.op_type}_{named}")
            named += 1
    return named


def load_model(path: str | Path, *, check: bool = True, prepare: bool = True, external: bool = True) -> onnx.ModelProto:
    """Load an ONNX model safely.

    External data is read only from the model's own folder. With ``prepare`` Constant
    tensors are lifted to initializers and unnamed nodes are named. With ``external``
    False, external data is checked for containment but not read. Every failure is a
    :class:`ModelError` with a hint.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model `{p}` not found", hint="check the path; `onnxzip inspect` lists what a model holds")
    if p.is_dir():
        raise ModelError(f"`{p}` is a directory, not an .onnx file", hint="pass a directory only to `onnxzip compress` (batch mode)")
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"cannot read `{p}`", causes=[e.strerror or str(e)], hint="check the file's permissions") from None
    if not data:
        raise ModelError(f"`{p}` is empty", hint="the file is not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(
            f"`{p}` is not a valid ONNX file",
            causes=[str(e) or type(e).__name__],
            hint="the file is truncated or not an ONNX protobuf; re-export or re-download it",
        ) from None
    del data
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelError(
            f"`{p}` is not a valid ONNX file",
            causes=["protobuf parsed but holds no graph, IR version or opset"],
            hint="the file is truncated or not an ONNX protobuf; re-export or re-download it",
        )
    base_dir = p.parent if str(p.parent) else Path(".")
    check_external_paths(model, base_dir)
    if not external:
        return model
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in iter_tensors(model)):
        if check:  # by path, before the data is in memory (the checker reads the proto only)
            _run_checker(str(p), what=f"`{p}`")
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(base_dir))
        except Exception as e:  # onnx raises several types here
            raise ModelError(f"cannot load external data of `{p}`", causes=[str(e)], hint="check the data files next to the model") from None
    elif check:
        _run_checker(model, what=f"`{p}`")
    if prepare:
        lift_constants(model)
        name_nodes(model)
    return model


def check_model(model: onnx.ModelProto, *, what: str = "model") -> None:
    """onnx.checker on the model (by path when over protobuf's size limit)."""
    if _data_bytes(model) >= EXTERNAL_THRESHOLD:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d) / "model.onnx"
            _write(model, tmp, external=True)
            _run_checker(str(tmp), what=what)
    else:
        _run_checker(model, what=what)


def _run_checker(model_or_path: onnx.ModelProto | str, *, what: str) -> None:
    try:
        onnx.checker.check_model(model_or_path)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "validation failed"
        raise ModelError(
            f"{what} fails onnx.checker",
            causes=[first],
            hint="the model is not valid ONNX; fix the exporter or run it through onnxsim first",
        ) from None


# --------------------------------------------------------------------------- saving


def _data_bytes(model: onnx.ModelProto) -> int:
    return sum(tensor_nbytes(t) for t in iter_tensors(model) if t.data_location != onnx.TensorProto.EXTERNAL)


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic protobuf bytes."""
    return model.SerializeToString(deterministic=True)


def _write(model: onnx.ModelProto, path: Path, *, external: bool) -> list[Path]:
    """Write ``model`` to ``path`` (and ``path.name + '.data'``) through temp files.

    Returns the final paths written. Restores the in-memory model afterwards.
    """
    path = Path(path)
    folder = path.parent
    written: list[tuple[Path, Path]] = []  # (temp, final)
    moved: list[tuple[onnx.TensorProto, bytes]] = []
    try:
        if external:
            data_name = path.name + ".data"
            fd, tmp_data = tempfile.mkstemp(prefix=f".{data_name}.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "wb") as f:
                offset = 0
                for t in iter_tensors(model):
                    if not t.HasField("raw_data") or len(t.raw_data) < EXTERNAL_MIN_TENSOR:
                        continue
                    pad = (-offset) % 4096  # page-aligned so runtimes can mmap
                    f.write(b"\0" * pad)
                    offset += pad
                    raw = t.raw_data
                    f.write(raw)
                    moved.append((t, raw))
                    t.ClearField("raw_data")
                    t.data_location = onnx.TensorProto.EXTERNAL
                    del t.external_data[:]
                    for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                        e = t.external_data.add()
                        e.key, e.value = k, v
                    offset += len(raw)
            written.append((Path(tmp_data), folder / data_name))
        payload = serialize(model)
        fd, tmp_model = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        written.append((Path(tmp_model), path))
        for tmp, final in written:  # data first, so the model never points at missing data
            os.replace(tmp, final)
        return [final for _, final in written]
    except BaseException:
        for tmp, _ in written:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    finally:
        for t, raw in moved:
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = raw


def save_model(
    model: onnx.ModelProto,
    path: str | Path,
    *,
    input_path: str | Path | None = None,
    force: bool = False,
    external: bool | None = None,
) -> list[Path]:
    """Save deterministically and atomically; returns the files written.

    Refuses to write over ``input_path`` unless ``force``. ``external`` None chooses
    external data only when the model's tensors exceed protobuf's limit.
    """
    path = Path(path)
    check_output_path(path, input_path=input_path, force=force)
    if external is None:
        external = _data_bytes(model) >= EXTERNAL_THRESHOLD
    try:
        return _write(model, path, external=external)
    except OSError as e:
        raise UsageError(f"cannot write `{path}`", causes=[e.strerror or str(e)], hint="check the output folder's permissions and free space") from None


def check_output_path(path: Path, *, input_path: str | Path | None = None, force: bool = False) -> None:
    """Fail early (before any work) when ``path`` cannot or must not be written."""
    path = Path(path)
    if input_path is not None and os.path.realpath(path) == os.path.realpath(input_path) and not force:
        raise UsageError(
            f"output `{path}` is the input model",
            hint="choose another `-o` path (onnxzip never overwrites its input unless `--force`)",
        )
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"output `{path}` is a directory", hint="give a file name ending in .onnx")
    if not folder.exists():
        raise UsageError(f"output folder `{folder}` does not exist", hint=f"create it first: mkdir -p {folder}")
    if not folder.is_dir():
        raise UsageError(f"output folder `{folder}` is not a directory", hint="give `-o` a path inside a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder `{folder}` is not writable", hint="choose a folder you can write to")
