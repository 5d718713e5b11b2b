"""The ``ai.onnxzip::HuffmanDecode`` node: one Huffman-coded integer tensor.

Format version 1. The node has no runtime kernel: :func:`decode_node` turns it back into
the tensor it replaced (``onnxzip.runtime.to_plain``), before onnxruntime sees the graph.

Inputs (initializers of the node's graph)

0. ``payload`` uint8[P]: the bitstream of :func:`onnxzip.kernels.huffman.encode`
   (canonical codes, LSB-first bit packing, chunks back to back).
1. ``offsets`` uint16 or uint32 [n_chunks - 1]: chunk sizes in bits except the last
   (:meth:`HuffmanStream.offset_deltas`); chunk 0 starts at bit 0.

Output: the decoded tensor, under the name of the initializer it replaced.

Attributes

``version`` (int, 1); ``dtype`` (int, the ONNX elem type: INT8, UINT8, INT4 or UINT4);
``shape`` (ints); ``count`` (int, product of ``shape``); ``chunk_size`` (int, symbols per
chunk); ``code_lengths`` (bytes: the canonical code length of each symbol, 4 bits each, low
nibble first; 256 symbols for 8-bit types, 16 for 4-bit); ``crc32`` (int, zlib.crc32 of the
payload); ``checksum`` (int, zlib.crc32 of a header (version, dtype, count, shape) followed by
the decoded symbol bytes).

Symbols are the stored bits of each value: an int8 -1 is symbol 255, an int4 -1 symbol 15.

Decoding validates everything before allocating: attribute types and ranges, shape product
== count, count no larger than the payload can hold (every code is at least one bit), offset
table length and total, the payload crc32; the Huffman kernel validates the code table and
every chunk boundary; the checksum catches a table, offset or header change that still
decodes. Any failure is a :class:`ModelError` saying the stream is damaged.
"""

from __future__ import annotations

import os
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
FORMAT_VERSION = 1
MAX_CODE_LEN = 15  # longest code the decoder accepts (lengths are stored as nibbles)
ENCODE_MAX_LEN = 12  # longest code written: a 4096-entry decode table stays in cache (~0.2% larger than 15)
DEFAULT_CHUNK_SIZE = H.DEFAULT_CHUNK_SIZE

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


def pack_lengths(lengths: np.ndarray) -> bytes:
    """Code lengths (each <= 15) two per byte, low nibble first."""
    ln = np.asarray(lengths, dtype=np.uint8).reshape(-1)
    if ln.size % 2:
        ln = np.concatenate([ln, np.zeros(1, np.uint8)])
    return (ln[0::2] | (ln[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_lengths(data: bytes, alphabet: int) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(b.size * 2, np.uint8)
    out[0::2] = b & 0xF
    out[1::2] = b >> 4
    return out[:alphabet]


def _checksum(elem_type: int, shape: tuple[int, ...], symbols: np.ndarray) -> int:
    header = struct.pack(f"<4q{len(shape)}q", FORMAT_VERSION, elem_type, int(symbols.size), len(shape), *shape)
    return zlib.crc32(np.ascontiguousarray(symbols, dtype=np.uint8), zlib.crc32(header))


@dataclass
class Encoded:
    """A tensor coded for a HuffmanDecode node, with its sizes (bytes) and statistics."""

    stream: H.HuffmanStream
    elem_type: int
    shape: tuple[int, ...]
    symbols_checksum: int
    entropy_bits: float

    @property
    def offsets(self) -> np.ndarray:
        return self.stream.offset_deltas()

    @property
    def table(self) -> bytes:
        return pack_lengths(self.stream.lengths)

    @property
    def achieved_bits(self) -> float:
        return 8.0 * self.stream.payload.size / self.stream.count if self.stream.count else 0.0


def auto_chunk_size(count: int, lanes: int = 32768) -> int:
    """Values per chunk for a tensor of ``count`` values: a power of two in [256, 4096].

    The lockstep decoder takes ``chunk_size`` vectorized steps over ``count / chunk_size``
    lanes (chunks), so small chunks decode faster (fewer steps, more lanes to split over
    threads) while each chunk costs 2 bytes of offset table: 256 below 1M values (0.06
    bits a value), 512 above (0.03), doubling while that still leaves ``lanes`` chunks.
    """
    cs = 256 if count < (1 << 20) else 512
    while cs < 4096 and count // (cs * 2) >= lanes:
        cs *= 2
    return cs


def encode_tensor(array: np.ndarray, elem_type: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Encoded:
    """Huffman-code an 8- or 4-bit integer tensor (``elem_type`` its ONNX type)."""
    if elem_type not in SUPPORTED:
        raise ValueError(f"HuffmanDecode codes int8/uint8/int4/uint4 tensors, not {dtype_name(elem_type)}")
    bits, _ = SUPPORTED[elem_type]
    sym = to_symbols(array, elem_type)
    alphabet = 1 << bits
    stream = H.encode(sym, alphabet, chunk_size=chunk_size, max_len=ENCODE_MAX_LEN)
    counts = np.bincount(sym, minlength=alphabet)
    shape = tuple(int(d) for d in np.shape(array))
    return Encoded(stream, elem_type, shape, _checksum(elem_type, shape, sym), max(0.0, H.entropy_bits(counts)))


def make_node(
    enc: Encoded, output: str, payload_name: str, offsets_name: str, node_name: str
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """The HuffmanDecode node producing ``output`` and its two input initializers."""
    s = enc.stream
    node = helper.make_node(OP_TYPE, [payload_name, offsets_name], [output], name=node_name, domain=M.ONNXZIP_DOMAIN)
    attrs = {
        "version": FORMAT_VERSION,
        "dtype": int(enc.elem_type),
        "count": int(s.count),
        "chunk_size": int(s.chunk_size),
        "code_lengths": enc.table,
        "crc32": int(s.crc32),
        "checksum": int(enc.symbols_checksum),
    }
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    # make_attribute cannot type an empty list; a scalar still states its (empty) shape
    node.attribute.append(helper.make_attribute("shape", list(enc.shape), attr_type=onnx.AttributeProto.INTS))
    inits = [M.make_tensor(s.payload, payload_name), M.make_tensor(enc.offsets, offsets_name)]
    return node, inits


# --------------------------------------------------------------------------- decode


def _damaged(node: onnx.NodeProto, detail: str) -> ModelError:
    return ModelError(f"node `{node.name or node.output[0]}`: HuffmanDecode stream is damaged: {detail}", hint=_DAMAGED_HINT)


_ATTR_TYPES = {
    "version": onnx.AttributeProto.INT,
    "dtype": onnx.AttributeProto.INT,
    "shape": onnx.AttributeProto.INTS,
    "count": onnx.AttributeProto.INT,
    "chunk_size": onnx.AttributeProto.INT,
    "code_lengths": onnx.AttributeProto.STRING,
    "crc32": onnx.AttributeProto.INT,
    "checksum": onnx.AttributeProto.INT,
}


def _attrs(node: onnx.NodeProto) -> dict:
    found = {a.name: a for a in node.attribute}
    version = found.get("version")
    if version is not None and version.type == onnx.AttributeProto.INT and version.i > FORMAT_VERSION:
        raise ModelError(
            f"node `{node.name}`: HuffmanDecode format version {version.i} is newer than this onnxzip reads ({FORMAT_VERSION})",
            hint="upgrade onnxzip to the version that wrote the file",
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


def _input_array(node: onnx.NodeProto, scope: M.Scope, index: int, what: str, dtypes: tuple[int, ...]) -> np.ndarray:
    if index >= len(node.input) or not node.input[index]:
        raise _damaged(node, f"input {index} ({what}) is missing")
    found = scope.lookup_initializer(node.input[index])
    if found is None:
        raise _damaged(node, f"{what} `{node.input[index]}` is not an initializer of the model")
    t = found[1]
    if t.data_type not in dtypes or len(t.dims) != 1:
        raise _damaged(node, f"{what} `{t.name}` must be a 1-D {'/'.join(dtype_name(d) for d in dtypes)} tensor")
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise _damaged(node, f"{what} `{t.name}` was not loaded from its external data file")
    itemsize = 1 if t.data_type == onnx.TensorProto.UINT8 else (2 if t.data_type == onnx.TensorProto.UINT16 else 4)
    if t.HasField("raw_data") and len(t.raw_data) != t.dims[0] * itemsize:
        raise _damaged(node, f"{what} `{t.name}` holds {len(t.raw_data)} bytes, its shape says {t.dims[0] * itemsize}")
    try:
        arr = M.to_array(t)
    except Exception as e:  # numpy_helper raises several types for inconsistent protos
        raise _damaged(node, f"{what} `{t.name}` cannot be read ({type(e).__name__})") from None
    if arr.size != t.dims[0]:
        raise _damaged(node, f"{what} `{t.name}` holds {arr.size} values, its shape says {t.dims[0]}")
    return arr


def decode_node(node: onnx.NodeProto, scope: M.Scope, *, threads: int | None = None) -> np.ndarray:
    """The tensor a HuffmanDecode node stands for; :class:`ModelError` when anything is off.

    Nothing proportional to the declared size is allocated before the header has been
    checked against the payload, so a damaged or hostile file cannot request more memory
    than its payload could legitimately expand to (8 symbols a byte).
    """
    if len(node.output) != 1 or not node.output[0]:
        raise _damaged(node, "the node must have exactly one output")
    a = _attrs(node)
    if a["version"] != FORMAT_VERSION:
        raise _damaged(node, f"format version `{a['version']}` is not {FORMAT_VERSION}")
    elem_type = a["dtype"]
    if elem_type not in SUPPORTED:
        raise _damaged(node, f"`dtype` {elem_type} ({dtype_name(elem_type)}) is not a coded integer type")
    bits, _ = SUPPORTED[elem_type]
    alphabet = 1 << bits
    shape = tuple(int(d) for d in a["shape"])
    count, chunk_size = int(a["count"]), int(a["chunk_size"])
    if any(d < 0 for d in shape):
        raise _damaged(node, f"negative dimension in `shape` {list(shape)}")
    numel = 1
    for d in shape:
        numel *= d  # Python ints: no overflow
    if numel != count:
        raise _damaged(node, f"`shape` {list(shape)} holds {numel} values but `count` is {count}")
    if not 1 <= chunk_size <= H.MAX_CHUNK_SIZE:
        raise _damaged(node, f"`chunk_size` {chunk_size} is out of range")
    if not (0 <= a["crc32"] < 2**32 and 0 <= a["checksum"] < 2**32):
        raise _damaged(node, "checksum attributes are out of range")
    table = a["code_lengths"]
    if len(table) != alphabet // 2:
        raise _damaged(node, f"code length table holds {len(table)} bytes, {dtype_name(elem_type)} needs {alphabet // 2}")
    lengths = unpack_lengths(table, alphabet)
    used = lengths[lengths > 0]
    if count and used.size == 0:
        raise _damaged(node, "the code length table is empty")
    if used.size and int(np.sum(np.left_shift(1, MAX_CODE_LEN - used.astype(np.int64)))) > (1 << MAX_CODE_LEN):
        raise _damaged(node, "the code lengths do not form a prefix code")

    payload_t = _input_meta(node, scope, 0)
    if payload_t is not None and count > 8 * payload_t // max(int(used.min()) if used.size else 1, 1):
        raise _damaged(node, f"`count` {count} is more than a {payload_t}-byte payload can hold")
    payload = _input_array(node, scope, 0, "payload", (onnx.TensorProto.UINT8,))
    offsets = _input_array(node, scope, 1, "offset table", (onnx.TensorProto.UINT16, onnx.TensorProto.UINT32))
    min_len = int(used.min()) if used.size else 1
    if count * min_len > 8 * payload.size:
        raise _damaged(node, f"`count` {count} is more than a {payload.size}-byte payload can hold")
    n_chunks = -(-count // chunk_size)
    if offsets.size != max(n_chunks - 1, 0):
        raise _damaged(node, f"offset table has {offsets.size} entries for {n_chunks} chunks")
    chunk_bits = H.offsets_from_deltas(offsets)[:n_chunks] if n_chunks else np.zeros(0, np.uint64)
    if n_chunks and int(chunk_bits[-1]) > 8 * payload.size:
        raise _damaged(node, "chunk offsets point past the end of the payload")
    try:  # the kernel checks the payload crc32 before decoding
        symbols = H.decode(
            lengths, payload, chunk_bits, count, chunk_size, a["crc32"], MAX_CODE_LEN,
            max_count=numel, threads=_threads(threads, count, chunk_size),
        )
    except H.HuffmanError as e:
        raise _damaged(node, str(e)) from None
    symbols = np.asarray(symbols)
    if symbols.size != count or symbols.dtype != np.uint8:  # table symbols are < alphabet <= 256
        raise _damaged(node, "decoded symbols do not match the header")
    if _checksum(elem_type, shape, symbols) != a["checksum"]:
        raise _damaged(node, "decoded data checksum mismatch")
    return from_symbols(symbols, elem_type, shape)


def _input_meta(node: onnx.NodeProto, scope: M.Scope, index: int) -> int | None:
    """Declared byte size of input ``index`` without reading its data (None when absent)."""
    if index >= len(node.input):
        return None
    found = scope.lookup_initializer(node.input[index])
    if found is None or len(found[1].dims) != 1:
        return None
    return int(found[1].dims[0])


_LANES_PER_THREAD = 4096  # fewer chunks per thread and the threads mostly wait on the GIL


def _threads(threads: int | None, count: int, chunk_size: int) -> int:
    if threads is not None:
        return max(1, threads)
    chunks = -(-count // chunk_size)
    return max(1, min(os.cpu_count() or 1, 8, chunks // _LANES_PER_THREAD))


__all__ = ["FORMAT_VERSION", "OP_TYPE", "SUPPORTED", "Encoded", "auto_chunk_size", "decode_node", "encode_tensor", "make_node"]
