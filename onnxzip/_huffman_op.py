"""The ``ai.onnxzip::HuffmanDecode`` node: one Huffman-coded integer tensor.

Format version 3 (version 2 files are read too). The node has no runtime kernel:
:func:`decode_node` turns it back into the tensor it replaced (``onnxzip.runtime``), before onnxruntime sees the graph.

Inputs (initializers of the node's graph)

0. ``payload`` uint8[P]: the segments of :func:`onnxzip.kernels.huffman.encode` back to
   back, each a complete raw DEFLATE stream (RFC 1951; one dynamic-Huffman block, its own
   canonical code; literals, and from version 3 long runs of one symbol as distance-1
   matches): ``zlib.decompress(segment, wbits=-15)`` reads it.
1. ``segments`` uint32[n_segments, 2]: per segment, its byte length and checksum: the
   CRC-32 of the header ``struct.pack("<5q{ndim}q", version, dtype, count, segment_size,
   ndim, *shape)``, then the segment index (int64 little-endian), then its decoded symbols.

Output: the decoded tensor, under the name of the initializer it replaced.

Attributes

``version`` (int, 3); ``dtype`` (int, the ONNX elem type: INT8, UINT8, INT4 or UINT4);
``shape`` (ints); ``count`` (int, product of ``shape``); ``segment_size`` (int, symbols per
segment, the last one may be shorter; ``n_segments = ceil(count / segment_size)``).

Symbols are the stored bits of each value, one byte each: an int8 -1 is symbol 255, an int4
-1 symbol 15 (int4/uint4 values are unpacked to one symbol a byte, then packed back).

Decoding validates everything before allocating: attribute types and ranges, shape product
== count, the segment table against the payload size (a payload of b bytes holds at most
8b symbols in version 2, literals only, and 1032b in version 3, where a 258-symbol match
takes 2 bits), then inflates each segment with an output limit of its symbol count plus
one: it must end exactly after its symbols, with no byte left over, and match its checksum (which
also binds the header). Any failure is a :class:`ModelError` saying the stream is damaged;
a version-1 node (onnxzip's earlier chunked format) asks for recompression.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxzip import model as M
from onnxzip.errors import ModelError
from onnxzip.kernels import huffman as H

OP_TYPE = "HuffmanDecode"
FORMAT_VERSION = 3
# Versions read, each with the most symbols one payload byte may decode to: 2 is literals
# only (8), 3 added distance-1 matches for runs (1032).
EXPANSION = {2: 8, 3: H.MAX_EXPANSION}
READ_VERSIONS = tuple(EXPANSION)
MAX_CODE_LEN = 15  # DEFLATE's longest code; inflate's two-level tables make it free to decode

# ONNX elem type -> (bits per value, signed)
SUPPORTED = {
    onnx.TensorProto.INT8: (8, True),
    onnx.TensorProto.UINT8: (8, False),
    onnx.TensorProto.INT4: (4, True),
    onnx.TensorProto.UINT4: (4, False),
}

_DAMAGED_HINT = "the file is corrupt; re-download or recompress it"


def dtype_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


# --------------------------------------------------------------------------- encode


def to_symbols(array: np.ndarray, elem_type: int) -> np.ndarray:
    """The stored bits of each value as symbols (uint8) in [0, 2**bits)."""
    bits, _ = SUPPORTED[elem_type]
    flat = np.asarray(array).reshape(-1)
    if bits == 8:
        return flat.view(np.uint8) if flat.dtype.itemsize == 1 else flat.astype(np.int16).astype(np.uint8)
    return (flat.astype(np.int16) & 0xF).astype(np.uint8)


def from_symbols(symbols: np.ndarray, elem_type: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_symbols`: an array of the tensor's numpy dtype and shape."""
    bits, signed = SUPPORTED[elem_type]
    np_dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    sym = np.asarray(symbols, dtype=np.uint8)
    if bits == 8:
        return sym.view(np.int8 if signed else np.uint8).reshape(shape)
    vals = sym.astype(np.int8)
    if signed:
        vals = (vals ^ 8) - 8  # 4-bit two's complement
    return vals.astype(np_dtype).reshape(shape)


def header_seed(elem_type: int, shape: tuple[int, ...], count: int, segment_size: int, version: int | None = None) -> int:
    """CRC-32 of the node's header (``version`` None: the one this onnxzip writes): the start
    value of every segment checksum."""
    v = FORMAT_VERSION if version is None else version
    header = struct.pack(f"<5q{len(shape)}q", v, elem_type, count, segment_size, len(shape), *shape)
    return zlib.crc32(header)


@dataclass
class Encoded:
    """A tensor coded for a HuffmanDecode node, with its statistics."""

    stream: H.HuffmanStream
    elem_type: int
    shape: tuple[int, ...]
    entropy_bits: float

    @property
    def segments(self) -> np.ndarray:
        """The ``segments`` input: uint32[n_segments, 2] (byte length, checksum)."""
        return np.stack([self.stream.segment_bytes, self.stream.checksums], axis=1).astype(np.uint32)

    @property
    def achieved_bits(self) -> float:
        return 8.0 * self.stream.payload.size / self.stream.count if self.stream.count else 0.0


def encode_tensor(array: np.ndarray, elem_type: int, *, segment_size: int | None = None) -> Encoded:
    """Huffman-code an 8- or 4-bit integer tensor (``elem_type`` its ONNX type)."""
    if elem_type not in SUPPORTED:
        raise ValueError(f"HuffmanDecode codes int8/uint8/int4/uint4 tensors, not {dtype_name(elem_type)}")
    bits, _ = SUPPORTED[elem_type]
    sym = to_symbols(array, elem_type)
    shape = tuple(int(d) for d in np.shape(array))
    seg = segment_size or H.auto_segment_size(sym.size)
    stream = H.encode(sym, seg, max_len=MAX_CODE_LEN, seed=header_seed(elem_type, shape, int(sym.size), seg))
    counts = np.bincount(sym, minlength=1 << bits)
    return Encoded(stream, elem_type, shape, max(0.0, H.entropy_bits(counts)))


def make_node(
    enc: Encoded, output: str, payload_name: str, segments_name: str, node_name: str
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """The HuffmanDecode node producing ``output`` and its two input initializers."""
    s = enc.stream
    node = helper.make_node(OP_TYPE, [payload_name, segments_name], [output], name=node_name, domain=M.ONNXZIP_DOMAIN)
    attrs = {
        "version": FORMAT_VERSION,
        "dtype": int(enc.elem_type),
        "count": int(s.count),
        "segment_size": int(s.segment_size),
    }
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    # make_attribute cannot type an empty list; a scalar still states its (empty) shape
    node.attribute.append(helper.make_attribute("shape", list(enc.shape), attr_type=onnx.AttributeProto.INTS))
    inits = [M.make_tensor(s.payload, payload_name), M.make_tensor(enc.segments, segments_name)]
    return node, inits


# --------------------------------------------------------------------------- decode


def _damaged(node: onnx.NodeProto, detail: str) -> ModelError:
    return ModelError(f"node `{node.name or node.output[0]}`: HuffmanDecode stream is damaged: {detail}", hint=_DAMAGED_HINT)


_ATTR_TYPES = {
    "version": onnx.AttributeProto.INT,
    "dtype": onnx.AttributeProto.INT,
    "shape": onnx.AttributeProto.INTS,
    "count": onnx.AttributeProto.INT,
    "segment_size": onnx.AttributeProto.INT,
}


def _attrs(node: onnx.NodeProto) -> dict:
    found = {a.name: a for a in node.attribute}
    version = found.get("version")
    if version is not None and version.type == onnx.AttributeProto.INT and version.i not in READ_VERSIONS:
        if version.i > FORMAT_VERSION:
            raise ModelError(
                f"node `{node.name}`: HuffmanDecode format version {version.i} is newer than this onnxzip reads ({FORMAT_VERSION})",
                hint="upgrade onnxzip to the version that wrote the file",
            )
        if version.i >= 1:
            raise ModelError(
                f"node `{node.name}`: HuffmanDecode format version {version.i} was written by an older onnxzip; "
                f"this one reads versions {', '.join(map(str, READ_VERSIONS))}",
                hint="recompress the original model with this onnxzip",
            )
    out = {}
    for name, typ in _ATTR_TYPES.items():
        a = found.get(name)
        if a is None:
            raise _damaged(node, f"attribute `{name}` is missing")
        if a.type != typ:
            raise _damaged(node, f"attribute `{name}` has the wrong type")
        out[name] = helper.get_attribute_value(a)
    return out


_ITEMSIZE = {onnx.TensorProto.UINT8: 1, onnx.TensorProto.UINT32: 4}


def _input_tensor(node: onnx.NodeProto, scope: M.Scope, index: int, what: str, dtype: int, ndim: int) -> onnx.TensorProto:
    if index >= len(node.input) or not node.input[index]:
        raise _damaged(node, f"input {index} ({what}) is missing")
    found = scope.lookup_initializer(node.input[index])
    if found is None:
        raise _damaged(node, f"{what} `{node.input[index]}` is not an initializer of the model")
    t = found[1]
    if t.data_type != dtype or len(t.dims) != ndim:
        raise _damaged(node, f"{what} `{t.name}` must be a {ndim}-D {dtype_name(dtype)} tensor")
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise _damaged(node, f"{what} `{t.name}` was not loaded from its external data file")
    return t


def _raw(node: onnx.NodeProto, t: onnx.TensorProto, what: str, n: int) -> bytes | np.ndarray:
    """The tensor's ``n`` values as raw little-endian bytes (no copy when stored as raw_data)."""
    nbytes = n * _ITEMSIZE[t.data_type]
    if t.HasField("raw_data"):
        if len(t.raw_data) != nbytes:
            raise _damaged(node, f"{what} `{t.name}` holds {len(t.raw_data)} bytes, its shape says {nbytes}")
        return t.raw_data
    field = t.int32_data if t.data_type == onnx.TensorProto.UINT8 else t.uint64_data
    if len(field) != n:
        raise _damaged(node, f"{what} `{t.name}` holds {len(field)} values, its shape says {n}")
    arr = np.array(field, np.int64)
    hi = 255 if t.data_type == onnx.TensorProto.UINT8 else 2**32 - 1
    if arr.size and (arr.min() < 0 or arr.max() > hi):
        raise _damaged(node, f"{what} `{t.name}` holds out-of-range values")
    return arr.astype(np.uint8 if hi == 255 else "<u4")


def decode_node(node: onnx.NodeProto, scope: M.Scope, *, threads: int | None = None) -> np.ndarray:
    """The tensor a HuffmanDecode node stands for; :class:`ModelError` when anything is off.

    Nothing proportional to the declared size is allocated before the header and segment
    table have been checked against the payload, so a damaged or hostile file cannot request
    more memory than its payload could legitimately expand to (:data:`EXPANSION`).
    ``threads`` None: one per core, at most one per segment.
    """
    if len(node.output) != 1 or not node.output[0]:
        raise _damaged(node, "the node must have exactly one output")
    a = _attrs(node)
    if a["version"] not in READ_VERSIONS:
        raise _damaged(node, f"format version `{a['version']}` is not one of {list(READ_VERSIONS)}")
    elem_type = a["dtype"]
    if elem_type not in SUPPORTED:
        raise _damaged(node, f"`dtype` {elem_type} ({dtype_name(elem_type)}) is not a coded integer type")
    shape = tuple(int(d) for d in a["shape"])
    count, seg = int(a["count"]), int(a["segment_size"])
    if any(d < 0 for d in shape):
        raise _damaged(node, f"negative dimension in `shape` {list(shape)}")
    numel = 1
    for d in shape:
        numel *= d  # Python ints: no overflow
    if numel != count:
        raise _damaged(node, f"`shape` {list(shape)} holds {numel} values but `count` is {count}")
    if not 1 <= seg <= H.MAX_SEGMENT_SIZE:
        raise _damaged(node, f"`segment_size` {seg} is out of range")
    payload_t = _input_tensor(node, scope, 0, "payload", onnx.TensorProto.UINT8, 1)
    table_t = _input_tensor(node, scope, 1, "segment table", onnx.TensorProto.UINT32, 2)
    if count > EXPANSION[a["version"]] * int(payload_t.dims[0]):
        raise _damaged(node, f"`count` {count} is more than a {payload_t.dims[0]}-byte payload can hold")
    n_seg = -(-count // seg)
    if list(table_t.dims) != [n_seg, 2]:
        raise _damaged(node, f"segment table has shape {list(table_t.dims)}, {count} values in segments of {seg} need [{n_seg}, 2]")
    payload = _raw(node, payload_t, "payload", int(payload_t.dims[0]))
    table = np.frombuffer(_raw(node, table_t, "segment table", 2 * n_seg), "<u4").reshape(n_seg, 2)
    try:
        symbols = H.decode(
            payload, table[:, 0], count, seg, table[:, 1],
            seed=header_seed(elem_type, shape, count, seg, a["version"]), max_count=numel, threads=threads,
        )
    except H.HuffmanError as e:
        raise _damaged(node, str(e)) from None
    return from_symbols(symbols, elem_type, shape)


__all__ = ["FORMAT_VERSION", "OP_TYPE", "SUPPORTED", "Encoded", "decode_node", "encode_tensor", "header_seed", "make_node"]
