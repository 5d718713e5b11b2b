"""Linear (affine) quantization with ONNX QuantizeLinear / DequantizeLinear semantics.

    q = saturate(round_half_even(w / scale) + zero_point)        x = (q - zero_point) * scale

Modes (``b`` = bits, 2..16):

* ``symmetric=True``: signed q in the restricted range [-(2^(b-1) - 1), 2^(b-1) - 1]
  (int8: [-127, 127], int4: [-7, 7]), zero_point 0, scale = absmax / (2^(b-1) - 1). The most
  negative code (-128 / -8) is never produced, so the grid is symmetric around 0.
* ``symmetric=False``: unsigned q in [0, 2^b - 1]; the range [min(w, 0), max(w, 0)] always
  contains 0 and zero_point = round(-lo / scale), so 0.0 is exactly representable: pruned zeros
  dequantize to exactly 0.0.

Granularity (the same conventions as the ONNX operators' ``axis`` / ``block_size``):

* per-tensor (``axis=None``): scale and zero_point are 0-d arrays;
* per-channel (``axis=a``, ``block_size=None``): 1-D of length ``w.shape[a]``, one
  (scale, zero_point) per index along ``a`` (the output-channel axis);
* blocked (``axis=a``, ``block_size=B``): blocks of B consecutive elements run *along* ``a``
  (the reduction axis); scale has the rank of w with ``shape[a] = ceil(w.shape[a] / B)`` and
  every other dim equal to w's, so element ``i`` along ``a`` uses ``scale[..., i // B, ...]``.
  The last block may be shorter than B. For a MatMul weight W[K, N] use ``axis=0``.

q and zero_point share one dtype: int8/uint8 for b <= 8, int16/uint16 above (4-bit codes fit
ONNX INT4/UINT4; store them with pack_int4). Scales are float32 and never 0 (an all-zero group
gets scale 1.0 and q = 0). Arithmetic is float32, as in onnxruntime: w is converted to float32,
and q equals what QuantizeLinear computes from the returned scale and zero_point.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "dequantize_linear",
    "pack_int4",
    "qrange",
    "quantize_linear",
    "sqnr_db",
    "unpack_int4",
]

# Clipping ratios tried by clip="mse", 1.0 first so ties keep the unclipped range.
_MSE_RATIOS = np.linspace(1.0, 0.5, 21)
_CHUNK = 1 << 20
_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax) of the codes quantize_linear produces for ``bits`` and ``symmetric``."""
    b = _check_bits(bits)
    if symmetric:
        return -(2 ** (b - 1) - 1), 2 ** (b - 1) - 1
    return 0, 2**b - 1


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ValueError(f"`bits` must be an integer in [2, 16], got `{bits!r}`")
    return int(bits)


def _qdtype(bits: int, symmetric: bool) -> np.dtype:
    if bits <= 8:
        return np.dtype(np.int8 if symmetric else np.uint8)
    return np.dtype(np.int16 if symmetric else np.uint16)


def _normalize_axis(axis: int, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"`axis` must be an integer or None, got `{axis!r}`")
    if not -ndim <= axis < ndim:
        raise ValueError(f"`axis` {axis} is out of range for a tensor of rank {ndim}")
    return int(axis) % ndim


def _check_block(block_size, axis) -> int | None:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"`block_size` must be a positive integer, got `{block_size!r}`")
    if block_size < 1:
        raise ValueError(f"`block_size` must be a positive integer, got `{block_size}`")
    if axis is None:
        raise ValueError("`block_size` needs `axis` (the axis the blocks run along)")
    return int(block_size)


class _Groups:
    """w laid out so every quantization group is a reduction over ``red`` axes, with no copy
    except the zero padding of a short last block. Parameters keep dims (broadcastable)."""

    def __init__(self, x: np.ndarray, axis: int | None, block: int | None):
        self.shape, self.axis, self.block = x.shape, axis, block
        if axis is None:
            self.x, self.red = x.reshape(-1), None
        elif block is None:
            self.x, self.red = x, tuple(i for i in range(x.ndim) if i != axis)
        else:
            d = x.shape[axis]
            nb = -(-d // block)
            if nb * block != d:
                # Zero padding changes neither the range (0 is always inside it) nor the mse
                # error (0 quantizes exactly), so a short last block is handled like the others.
                pad_width = [(0, 0)] * x.ndim
                pad_width[axis] = (0, nb * block - d)
                x = np.pad(x, pad_width)
            split = x.shape[:axis] + (nb, block) + x.shape[axis + 1:]
            self.x, self.red = x.reshape(split), (axis + 1,)

    def unpack(self, g: np.ndarray) -> np.ndarray:
        """Codes in group layout -> w's shape."""
        if self.axis is None or self.block is None:
            return g.reshape(self.shape)
        ax = self.axis
        padded = self.shape[:ax] + (g.shape[ax] * self.block,) + self.shape[ax + 1:]
        index = (slice(None),) * ax + (slice(0, self.shape[ax]),)
        return g.reshape(padded)[index]

    def params_out(self, p: np.ndarray) -> np.ndarray:
        """Keep-dims parameters -> ONNX layout (0-d, [C], or blocked same-rank)."""
        if self.axis is None:
            return p.reshape(())
        if self.block is None:
            return p.reshape(-1)
        return p.reshape(p.shape[: self.axis + 1] + p.shape[self.axis + 2:])


def _params(lo, hi, qmin: int, qmax: int, symmetric: bool):
    """float32 scale and integer-valued float32 zero point for ranges [lo, hi] (lo <= 0 <= hi).

    The span is computed in float64 (small arrays) so huge float32 ranges cannot overflow.
    """
    lo = lo.astype(np.float64)
    hi = hi.astype(np.float64)
    if symmetric:
        span = np.maximum(-lo, hi) / qmax
    else:
        span = (hi - lo) / (qmax - qmin)
    scale = np.where(span == 0, 1.0, np.maximum(span.astype(np.float32), _F32_TINY))
    scale = scale.astype(np.float32)
    if symmetric:
        zp = np.zeros(scale.shape, dtype=np.float32)
    else:
        zp = np.clip(np.rint(qmin - lo / scale.astype(np.float64)), qmin, qmax)
        zp = zp.astype(np.float32)
    return scale, zp


def _quant(x: np.ndarray, scale, zp, qmin: int, qmax: int, out=None) -> np.ndarray:
    """ONNX QuantizeLinear in float32: saturate(round_half_even(x / scale) + zp), as
    integer-valued float32 (exact: |q| <= 65535)."""
    q = np.divide(x, scale, out=out, dtype=np.float32)
    np.rint(q, out=q)
    q += zp
    np.clip(q, qmin, qmax, out=q)
    steps = np.floor(_F32_MAX / scale.astype(np.float64))
    if np.any(np.maximum(zp - qmin, qmax - zp) > steps):
        # Only for ranges near float32's limit: drop the codes whose dequantized value
        # (q - zp) * scale would overflow to inf (the error there can reach one step).
        np.clip(q, np.maximum(qmin, zp - steps), np.minimum(qmax, zp + steps), out=q)
    return q


def _dequant_err(x: np.ndarray, q: np.ndarray, scale, zp, red, out=None) -> np.ndarray:
    """Per-group sum of squared error of the float32 dequantization ONNX computes."""
    d = np.subtract(q, zp, out=out)  # an exact small integer in float32
    d *= scale
    d -= x
    np.square(d, out=d)
    return d.sum(axis=red, keepdims=True, dtype=np.float64)


def quantize_linear(
    w: np.ndarray,
    bits: int,
    symmetric: bool,
    axis: int | None = None,
    block_size: int | None = None,
    clip: str = "minmax",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize ``w`` to ``bits``-bit integers; returns ``(q, scale, zero_point)``.

    See the module docstring for ranges, the symmetric/asymmetric schemes and the
    per-tensor / per-channel (``axis``) / blocked (``axis`` + ``block_size``) layouts.
    ``clip="minmax"`` uses each group's full range; ``clip="mse"`` tries clipping ratios
    1.0, 0.975, ..., 0.5 of that range per group and keeps the one with the least squared
    dequantization error (never worse than minmax). Arithmetic is float32 like onnxruntime's
    QuantizeLinear (w is converted to float32 first), so for minmax
    |dequantize_linear(q, ...) - w| <= scale / 2 up to float32 rounding.
    """
    b = _check_bits(bits)
    if clip not in ("minmax", "mse"):
        raise ValueError(f"unknown clip `{clip}`; valid choices: `minmax`, `mse`")
    w = np.asarray(w)
    if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise ValueError(f"`w` must be a real numeric array, got dtype `{w.dtype}`")
    ax = None if axis is None else _normalize_axis(axis, w.ndim)
    block = _check_block(block_size, ax)
    symmetric = bool(symmetric)
    qmin, qmax = qrange(b, symmetric)

    with np.errstate(over="ignore"):
        x = np.asarray(w, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise ValueError("`w` contains nan or inf (or values beyond float32)")
    g = _Groups(x, ax, block)
    lo = np.min(g.x, axis=g.red, keepdims=True, initial=0.0)
    hi = np.max(g.x, axis=g.red, keepdims=True, initial=0.0)

    scale, zp = _params(lo, hi, qmin, qmax, symmetric)
    if clip == "mse" and x.size:
        best_err = None
        # Two work buffers reused across ratios: fresh 100 MB temporaries per ratio cost more
        # in page faults than the arithmetic.
        qbuf = np.empty(g.x.shape, dtype=np.float32)
        dbuf = np.empty(g.x.shape, dtype=np.float32)
        for ratio in _MSE_RATIOS:
            s_r, z_r = _params(lo * ratio, hi * ratio, qmin, qmax, symmetric)
            q_r = _quant(g.x, s_r, z_r, qmin, qmax, out=qbuf)
            err = _dequant_err(g.x, q_r, s_r, z_r, g.red, out=dbuf)
            if best_err is None:
                best_err, scale, zp = err, s_r, z_r
                continue
            better = err < best_err
            best_err = np.where(better, err, best_err)
            scale = np.where(better, s_r, scale)
            zp = np.where(better, z_r, zp)

        del qbuf, dbuf
    qdt = _qdtype(b, symmetric)
    q = np.array(g.unpack(_quant(g.x, scale, zp, qmin, qmax)), dtype=qdt, order="C")
    # np.array, not np.ascontiguousarray: the latter turns the per-tensor 0-d params into 1-d.
    return (
        q,
        np.array(g.params_out(scale), dtype=np.float32, order="C"),
        np.array(g.params_out(zp), dtype=qdt, order="C"),
    )


def _broadcast_param(p: np.ndarray, shape: tuple, axis: int | None, block: int | None, name: str):
    ndim = len(shape)
    if axis is None or (block is None and p.ndim == 0):
        if p.size != 1:
            raise ValueError(f"per-tensor `{name}` must have one element, got shape `{p.shape}`")
        return p.reshape(())
    if block is None:
        if p.shape != (shape[axis],):
            raise ValueError(
                f"per-channel `{name}` must have shape `({shape[axis]},)` along axis {axis}, "
                f"got `{p.shape}`"
            )
        bshape = [1] * ndim
        bshape[axis] = shape[axis]
        return p.reshape(bshape)
    expect = list(shape)
    expect[axis] = -(-shape[axis] // block)
    if list(p.shape) != expect:
        raise ValueError(
            f"blocked `{name}` must have shape `{tuple(expect)}` (axis {axis}, block_size "
            f"{block}), got `{p.shape}`"
        )
    full = np.repeat(p, block, axis=axis)
    return np.take(full, np.arange(shape[axis]), axis=axis)


def dequantize_linear(
    q: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None = None,
    axis: int | None = None,
    block_size: int | None = None,
) -> np.ndarray:
    """x = (q - zero_point) * scale in float32, exactly as ONNX DequantizeLinear computes it.

    ``axis`` / ``block_size`` and the parameter shapes follow quantize_linear. A 0-d scale
    with an ``axis`` is per-tensor (as in ONNX). ``zero_point=None`` means 0.
    """
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"`q` must be an integer array, got dtype `{q.dtype}`")
    ax = None if axis is None else _normalize_axis(axis, max(q.ndim, 1))
    block = _check_block(block_size, ax)
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros(scale.shape, dtype=np.int32) if zero_point is None else np.asarray(zero_point)
    if zp.shape != scale.shape:
        raise ValueError(f"`zero_point` shape `{zp.shape}` differs from `scale` shape "
                         f"`{scale.shape}`")
    s_b = _broadcast_param(scale, q.shape, ax, block, "scale")
    z_b = _broadcast_param(zp.astype(np.int32), q.shape, ax, block, "zero_point")
    return ((q.astype(np.int32) - z_b).astype(np.float32) * s_b).astype(np.float32)


def _sums(w: np.ndarray, w_hat: np.ndarray) -> tuple[float, float]:
    a = np.asarray(w).reshape(-1)
    b = np.asarray(w_hat).reshape(-1)
    sig = err = 0.0
    for i in range(0, a.size, _CHUNK):
        x = a[i: i + _CHUNK].astype(np.float64)
        d = x - b[i: i + _CHUNK].astype(np.float64)
        sig += float(np.dot(x, x))
        err += float(np.dot(d, d))
    return sig, err


def sqnr_db(w: np.ndarray, w_hat: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10 * log10(sum w^2 / sum (w - w_hat)^2) in dB.

    inf when the reconstruction is exact (including all-zero w), -inf when w is all zero but
    w_hat is not.
    """
    w = np.asarray(w)
    w_hat = np.asarray(w_hat)
    if w.shape != w_hat.shape:
        raise ValueError(f"shape mismatch: `{w.shape}` vs `{w_hat.shape}`")
    sig, err = _sums(w, w_hat)
    if not (math.isfinite(sig) and math.isfinite(err)):
        raise ValueError("inputs contain nan or inf")
    if err == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


def pack_int4(q: np.ndarray, signed: bool | None = None) -> np.ndarray:
    """Pack 4-bit values two per byte as ONNX stores INT4/UINT4: flatten in C order, element
    2i in the low nibble and 2i+1 in the high nibble of byte i; an odd count leaves the last
    high nibble 0. Returns uint8 of length ceil(size / 2).

    ``signed`` selects the value range, [-8, 7] or [0, 15]; None takes it from q's dtype.
    """
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"`q` must be an integer array, got dtype `{q.dtype}`")
    if signed is None:
        signed = np.issubdtype(q.dtype, np.signedinteger)
    lo, hi = (-8, 7) if signed else (0, 15)
    flat = q.reshape(-1)
    if flat.size and (int(flat.min()) < lo or int(flat.max()) > hi):
        kind = "int4" if signed else "uint4"
        raise ValueError(f"values out of the {kind} range [{lo}, {hi}]")
    nib = (flat.astype(np.int16) & 0x0F).astype(np.uint8)
    if nib.size % 2:
        nib = np.concatenate([nib, np.zeros(1, dtype=np.uint8)])
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, shape, signed: bool = True) -> np.ndarray:
    """Inverse of pack_int4: int8 in [-8, 7] (``signed``) or uint8 in [0, 15], shaped ``shape``."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"`packed` must be uint8, got dtype `{packed.dtype}`")
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"`shape` must be non-negative, got `{shape}`")
    count = int(np.prod(shape, dtype=np.int64))
    flat = packed.reshape(-1)
    if flat.size != (count + 1) // 2:
        raise ValueError(
            f"`packed` has {flat.size} bytes; shape `{shape}` needs {(count + 1) // 2}"
        )
    out = np.empty(flat.size * 2, dtype=np.uint8)
    out[0::2] = flat & 0x0F
    out[1::2] = flat >> 4
    out = out[:count]
    if signed:
        out = ((out.astype(np.int8) ^ 8) - 8).astype(np.int8)
    return out.reshape(shape)
