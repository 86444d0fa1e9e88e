"""numpy references of the integer kernels' arithmetic, built on graphopt.quantization.rounding.

rounding.py defines QuantizeLinear and the requantization of an int32 accumulator; the kernels
also fuse a Relu/Clip (a clamp in the integer domain, exact because rounding is monotone) and
onnxruntime's QLinearAdd, which its x86-64 kernel (MLAS AVX2; measured bit for bit against
onnxruntime 1.32 on 800k random elements) computes in float32 with fused multiply-adds:
    ra = sa / sc, rb = sb / sc, fixed = float(zc) - fma(ra, float(za), rb * float(zb))
    c = saturate(rint(fma(float(a), ra, fma(float(b), rb, fixed))))
(onnxruntime's SSE2 and NEON kernels round differently; graphopt follows the x86-64 one).
The tests compare csrc's paths and onnxruntime against these, bit for bit.
"""
from __future__ import annotations

import numpy as np

from graphopt.quantization.rounding import (dequantize_linear, int_range, quantize_linear,
                                            requantize)


def qgemm(w: np.ndarray, x: np.ndarray, bias: np.ndarray | None, multiplier: np.ndarray,
          zero_point: np.ndarray, low: int | None = None, high: int | None = None) -> np.ndarray:
    """requantize(W @ X + bias) per row, then clamp to [low, high] (a fused Relu/Clip)."""
    acc = w.astype(np.int64) @ x.astype(np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64).reshape(-1, 1)
    return requantize_rows(acc, multiplier, zero_point, low, high)


def requantize_rows(acc: np.ndarray, multiplier: np.ndarray, zero_point: np.ndarray,
                    low: int | None = None, high: int | None = None) -> np.ndarray:
    """rounding.requantize of int32 accumulators [rows, cols] with one multiplier per row (or
    one for all), then the clamp of a fused Relu/Clip."""
    m = np.asarray(multiplier, dtype=np.float32).reshape(-1)
    q = requantize(np.asarray(acc).astype(np.int32), m, zero_point,
                   axis=0 if m.size > 1 else None)
    qmin, qmax = int_range(q.dtype)
    return np.clip(q, qmin if low is None else low, qmax if high is None else high).astype(q.dtype)


def fma32(x: np.ndarray | float, y: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
    """float32 fused multiply-add (x * y + z rounded once), through float64: exact for the
    operands here (8-bit integers times float32 ratios plus a float32 term)."""
    return (np.float64(x) * np.float64(y) + np.float64(z)).astype(np.float32)


def qladd_params(a_scale: float, a_zero: int, b_scale: float, b_zero: int,
                 c_scale: float, c_zero: int) -> tuple[np.float32, np.float32, np.float32]:
    """(ratio_a, ratio_b, fixed) of QLinearAdd, in float32 as onnxruntime computes them."""
    f32 = np.float32
    ra = f32(f32(a_scale) / f32(c_scale))
    rb = f32(f32(b_scale) / f32(c_scale))
    fixed = f32(f32(c_zero) - fma32(ra, f32(a_zero), f32(rb * f32(b_zero))))
    return ra, rb, fixed


def qladd(a: np.ndarray, b: np.ndarray, params: tuple[np.float32, np.float32, np.float32],
          dtype: np.dtype | type, low: int | None = None,
          high: int | None = None) -> np.ndarray:
    """QLinearAdd of broadcastable integer arrays a and b (see the module docstring)."""
    ra, rb, fixed = params
    v = fma32(np.asarray(a), ra, fma32(np.asarray(b), rb, fixed))
    qmin, qmax = int_range(dtype)
    return np.clip(np.rint(v), qmin if low is None else low,
                   qmax if high is None else high).astype(dtype)


def maxpool2d(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
              pads: tuple[int, int, int, int], dilations: tuple[int, int],
              out_hw: tuple[int, int]) -> np.ndarray:
    """MaxPool of integer planes [..., H, W] to [..., out_hw]: the border (pads begin / end,
    and whatever ceil_mode adds past it) holds the type's least value, so it never wins."""
    least = np.iinfo(x.dtype).min
    (oh, ow), (kh, kw), (sh, sw), (dh, dw) = out_hw, kernel, strides, dilations
    below = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - pads[0] - x.shape[-2])
    right = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - pads[1] - x.shape[-1])
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(pads[0], below), (pads[1], right)],
                    constant_values=least)
    out = np.full(x.shape[:-2] + (oh, ow), least, x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = padded[..., ky * dh: ky * dh + (oh - 1) * sh + 1: sh,
                            kx * dw: kx * dw + (ow - 1) * sw + 1: sw]
            out = np.maximum(out, window)
    return out


def onnxruntime_row_sums(values: np.ndarray) -> np.ndarray:
    """float32 sums of the rows of `values` [rows, n] as onnxruntime's ReduceSum/ReduceMean sums
    the contiguous rows of a 16-byte aligned buffer (Eigen's redux, 4-float SSE packets): row r
    starts its packets at its first aligned element, (-r * n) mod 4."""
    values = np.asarray(values, np.float32)
    rows, n = values.shape
    sums = np.empty(rows, np.float32)
    first_aligned = (-(np.arange(rows, dtype=np.int64) * n)) % 4
    for start in range(4):
        picked = np.nonzero(first_aligned == start)[0]
        if picked.size:
            sums[picked] = _eigen_sums(values[picked], min(start, n))
    return sums


def _eigen_sums(v: np.ndarray, start: int) -> np.ndarray:
    """Eigen's order from `start`: packets into two accumulators in turn, added, then an odd
    last packet, the horizontal sum (a0 + a2) + (a1 + a3), then the elements before `start`
    and after the packets; fewer than 4 elements from `start`: left to right."""
    n = v.shape[1]
    packets = (n - start) // 4
    if packets == 0:
        total = v[:, 0].copy()
        for i in range(1, n):
            total = total + v[:, i]
        return total
    end, pairs_end = start + 4 * packets, start + 8 * (packets // 2)
    acc = v[:, start:start + 4].copy()
    if packets > 1:
        second = v[:, start + 4:start + 8].copy()
        for i in range(start + 8, pairs_end, 8):
            acc, second = acc + v[:, i:i + 4], second + v[:, i + 4:i + 8]
        acc = acc + second
        if end > pairs_end:
            acc = acc + v[:, pairs_end:end]
    total = (acc[:, 0] + acc[:, 2]) + (acc[:, 1] + acc[:, 3])
    for i in [*range(start), *range(end, n)]:
        total = total + v[:, i]
    return total


def qdq_reduce_mean(x: np.ndarray, rows: int, x_scale: float, x_zero: np.ndarray,
                    y_scale: float, y_zero: np.ndarray) -> np.ndarray:
    """DequantizeLinear, ReduceMean over the trailing elements of `rows` contiguous rows, then
    QuantizeLinear, in onnxruntime's float arithmetic (it runs the three ops of a QDQ ReduceMean
    unfused): the row sum in its order, divided by the count in float32."""
    values = dequantize_linear(np.asarray(x).reshape(rows, -1), np.float32(x_scale), x_zero)
    means = onnxruntime_row_sums(values) / np.float32(values.shape[1])
    return quantize_linear(means.astype(np.float32), np.float32(y_scale), y_zero)
