"""Quantization parameters from ranges and weights: the affine maps graphopt writes.

- Activations, uint8 (default): asymmetric over [min(lo, 0), max(hi, 0)] so that real 0 is exactly
  representable (zero padding, ReLU outputs):  scale = (hi - lo) / 255, zero_point = round(-lo/scale).
- Activations, int8: symmetric, zero_point 0, scale = max(|lo|, |hi|) / 127.
- Weights: int8 symmetric, zero_point 0, scale = max|w| / 127, per tensor or per output channel.
  Symmetric int8 weights keep the integer kernels free of a weight-zero-point correction term.
- Biases (Conv, Gemm): int32 with scale = x_scale * w_scale and zero_point 0, the layout
  QLinearConv expects, so the bias adds straight into the int32 accumulator.
"""
from __future__ import annotations

import numpy as np

from graphopt.ir.types import QuantParams
from graphopt.quantization.rounding import int_range, quantize_linear, round_half_to_even

ACTIVATION_DTYPES = {"u8": np.dtype(np.uint8), "s8": np.dtype(np.int8)}
_TINY = np.float32(1e-12)


def activation_params(lo: float, hi: float, dtype: np.dtype = np.dtype(np.uint8)) -> QuantParams:
    """Per-tensor parameters covering the calibrated range [lo, hi]."""
    dtype = np.dtype(dtype)
    qmin, qmax = int_range(dtype)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if dtype == np.int8:
        scale = np.float32(max(-lo, hi) / qmax)
        scale = scale if scale > _TINY else np.float32(1.0)
        return QuantParams(np.asarray(scale, np.float32), np.asarray(0, np.int8))
    scale = np.float32((hi - lo) / (qmax - qmin))
    scale = scale if scale > _TINY else np.float32(1.0)
    zero_point = np.clip(round_half_to_even(qmin - lo / float(scale)), qmin, qmax)
    return QuantParams(np.asarray(scale, np.float32), np.asarray(zero_point, dtype))


def weight_params(weight: np.ndarray, axis: int | None, reduce_range: bool = False) -> QuantParams:
    """Symmetric int8 parameters for a constant weight, per channel along `axis` or per tensor.

    reduce_range uses 7 bits ([-63, 63]): x86 CPUs without VNNI multiply u8 x s8 with
    `vpmaddubsw`, whose int16 pair sums saturate (255 * 127 * 2 > 32767); with 7-bit weights
    they cannot (255 * 63 * 2 < 32767), so onnxruntime's fused kernels give the exact result.
    """
    w = np.abs(np.asarray(weight, dtype=np.float32))
    if axis is None:
        absmax = np.asarray(w.max(initial=0.0), np.float32)
    else:
        absmax = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).max(axis=1, initial=0.0)
    scale = (absmax / np.float32(63 if reduce_range else 127)).astype(np.float32)
    scale = np.where(scale > _TINY, scale, np.float32(1.0)).astype(np.float32)
    return QuantParams(scale, np.zeros(scale.shape, np.int8), axis)


def bias_params(x: QuantParams, w: QuantParams) -> QuantParams:
    """int32 parameters for a bias added to the accumulator of x (per tensor) times w."""
    scale = (np.float32(x.scale) * w.scale.astype(np.float32)).astype(np.float32)
    scale = np.where(scale > _TINY, scale, np.float32(1.0)).astype(np.float32)
    axis = 0 if w.axis is not None else None
    return QuantParams(scale, np.zeros(scale.shape, np.int32), axis)


def quantize_const(array: np.ndarray, params: QuantParams) -> np.ndarray:
    """A constant as the integers its QuantParams map it to."""
    return quantize_linear(array, params.scale, params.zero_point, params.axis)
