"""The one rounding policy of graphopt's INT8 path, as executable Python.

ONNX QuantizeLinear defines  q = saturate(round(x / scale) + zero_point)  with round half to even,
and every integer kernel graphopt has or will have (the future C kernels included) must produce
exactly these integers. The arithmetic is spelled out the way onnxruntime's MLAS kernels do it,
because that is what makes "bit for bit" hold:

- the division x / scale is done in float32 (not float64, not x * (1/scale));
- rounding is IEEE round-to-nearest-even (`np.rint`, `cvtps2dq` in the default MXCSR mode);
- saturation clamps to the integer type's full range ([0, 255] for uint8, [-128, 127] for int8).

Requantization (int32 accumulator -> int8/uint8 output of a Conv/Gemm/MatMul) follows the same
rule: the accumulator is converted to float32, multiplied by the float32 multiplier
M = (x_scale * w_scale) / y_scale (itself computed in float32, in that order), rounded half to
even, offset by the output zero point and saturated.
"""
from __future__ import annotations

import numpy as np

INT_RANGES: dict[np.dtype, tuple[int, int]] = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.int32): (-(2 ** 31), 2 ** 31 - 1),
}


def int_range(dtype: np.dtype | type) -> tuple[int, int]:
    """(qmin, qmax) of a quantized integer type."""
    return INT_RANGES[np.dtype(dtype)]


def round_half_to_even(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, ties to the even one (2.5 -> 2, 3.5 -> 4, -2.5 -> -2)."""
    return np.rint(x)


def _broadcast(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape a per-channel parameter so it broadcasts along `axis` of an `ndim`-rank tensor."""
    param = np.asarray(param)
    if axis is None or param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = param.size
    return param.reshape(shape)


def _saturate(values: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    qmin, qmax = int_range(dtype)
    return np.clip(values, qmin, qmax).astype(dtype)


def quantize_linear(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                    axis: int | None = None) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(float32(x) / float32(scale)) + zero_point).

    The output dtype is the zero point's dtype (uint8, int8 or int32, as in ONNX).
    """
    x = np.asarray(x, dtype=np.float32)
    zero_point = np.asarray(zero_point)
    s = _broadcast(np.asarray(scale, dtype=np.float32), x.ndim, axis)
    zp = _broadcast(zero_point, x.ndim, axis).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (x / s).astype(np.float32)
    return _saturate(round_half_to_even(scaled).astype(np.float64) + zp, zero_point.dtype)


def dequantize_linear(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                      axis: int | None = None) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero_point) * scale, in float32."""
    q = np.asarray(q)
    s = _broadcast(np.asarray(scale, dtype=np.float32), q.ndim, axis)
    zp = _broadcast(np.asarray(zero_point), q.ndim, axis)
    return ((q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * s).astype(np.float32)


def fake_quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                  axis: int | None = None) -> np.ndarray:
    """DequantizeLinear(QuantizeLinear(x)): what a float consumer sees after a QDQ pair."""
    return dequantize_linear(quantize_linear(x, scale, zero_point, axis), scale, zero_point, axis)


def requant_multiplier(x_scale: np.ndarray, w_scale: np.ndarray,
                       y_scale: np.ndarray) -> np.ndarray:
    """M = (x_scale * w_scale) / y_scale in float32, per output channel when w_scale is."""
    x_scale = np.float32(x_scale)
    w_scale = np.asarray(w_scale, dtype=np.float32)
    return ((x_scale * w_scale).astype(np.float32) / np.float32(y_scale)).astype(np.float32)


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: np.ndarray,
               axis: int | None = None) -> np.ndarray:
    """int32 accumulator -> quantized output: saturate(rint(float32(acc) * M) + zero_point).

    `multiplier` is `requant_multiplier(...)`, scalar or per channel along `axis` of `acc`.
    """
    acc = np.asarray(acc, dtype=np.int32)
    zero_point = np.asarray(zero_point)
    m = _broadcast(np.asarray(multiplier, dtype=np.float32), acc.ndim, axis)
    scaled = (acc.astype(np.float32) * m).astype(np.float32)
    return _saturate(round_half_to_even(scaled).astype(np.float64) + zero_point.astype(np.float64),
                     zero_point.dtype)
