"""Resize (nearest, linear, cubic; antialias; every coordinate transformation and aspect-ratio
policy).

Because shapes are static, all the index arithmetic happens here in numpy: for every resized
axis and every output coordinate we tabulate T source indices and T weights (T = 1 nearest,
2 linear, 4 cubic, more when antialiasing a downscale widens the kernel), with out-of-range
taps clamped to the edge as the ONNX reference does (exclude_outside=1 drops them and
renormalizes). The C kernel is then a separable weighted gather: y[o] = sum over taps of
prod(weights) * x[tap indices]. Axes that are not resized are read directly; outputs outside
tf_crop_and_resize's region of interest take extrapolation_value.
"""
from __future__ import annotations

import contextlib

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op
from graphopt.backend.program import Tensor
from graphopt.ir.types import DType


def source_coordinate(out: np.ndarray, scale: float, in_len: int, out_len: int,
                      mode: str) -> np.ndarray:
    """x_original for output coordinates `out` (ONNX Resize coordinate_transformation_mode)."""
    if mode == "asymmetric":
        return out / scale
    if mode == "align_corners":
        return np.zeros_like(out) if out_len == 1 else out * (in_len - 1) / (out_len - 1)
    if mode == "pytorch_half_pixel":
        return (out + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(out)
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (out + 0.5) / scale - 0.5
    return (out + 0.5) / scale - 0.5  # half_pixel


def _interpolation_weights(mode: str, ratio: np.ndarray, offsets: np.ndarray, stretch: float,
                           a: float) -> np.ndarray:
    """Weights [out_len, T] of taps at `offsets` from base for distance ratio - offset scaled by
    `stretch` (1, or the scale when antialiasing a downscale): the triangle (linear) or Keys
    cubic kernel, normalized to sum 1."""
    d = np.abs((offsets[None, :] - ratio[:, None]) * stretch)
    if mode == "linear":
        weights = np.clip(1 - d, 0, 1)
    else:
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        weights = np.where(d <= 1, near, np.where(d < 2, far, 0.0))
    return weights / weights.sum(axis=1, keepdims=True)


def axis_taps(k: Kernel, in_len: int, out_len: int, scale: float,
              roi: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices [out_len, T] int64, weights [out_len, T] float64, outside [out_len] bool) for
    one axis; `outside` marks outputs tf_crop_and_resize fills with extrapolation_value.

    Taps follow onnx's reference: base = ceil(x) - 1 and ratio = x - base in (0, 1]; linear
    uses offsets 0..1 and cubic -1..2 from base, widened by 1 / scale with antialias when
    downscaling; out-of-range taps read the edge (or get weight 0 with exclude_outside).
    """
    mode = k.attr("mode", "nearest")
    transform = k.attr("coordinate_transformation_mode", "half_pixel")
    out = np.arange(out_len, dtype=np.float64)
    if transform == "tf_crop_and_resize":
        start, end = roi
        x = (np.full_like(out, 0.5 * (start + end) * (in_len - 1)) if out_len == 1 else
             start * (in_len - 1) + out * (end - start) * (in_len - 1) / (out_len - 1))
        outside = (x < 0) | (x > in_len - 1)
    else:
        x = source_coordinate(out, scale, in_len, out_len, transform)
        outside = np.zeros(out_len, bool)
    if mode == "nearest":
        base = np.floor(x)
        ratio = x - base
        rule = k.attr("nearest_mode", "round_prefer_floor")
        up = {"floor": np.zeros_like(ratio, bool), "ceil": ratio > 0,
              "round_prefer_ceil": ratio >= 0.5}.get(rule, ratio > 0.5)
        return np.clip(base + up, 0, in_len - 1).astype(np.int64)[:, None], \
            np.ones((out_len, 1)), outside
    stretch = min(scale, 1.0) if int(k.attr("antialias", 0)) else 1.0
    reach = 1 if mode == "linear" else 2
    first = int(np.floor(-reach / stretch)) + 1
    offsets = np.arange(first, reach + 1 - first, dtype=np.float64)
    base = np.ceil(x) - 1
    weights = _interpolation_weights(mode, x - base, offsets, stretch,
                                     float(k.attr("cubic_coeff_a", -0.75)))
    idx = base[:, None] + offsets[None, :]
    if int(k.attr("exclude_outside", 0)):
        weights = np.where((idx >= 0) & (idx < in_len), weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, in_len - 1).astype(np.int64), weights, outside


@register_op("Resize", dtypes=cdtypes.FLOATS, const_inputs=(1, 2, 3))
def emit_resize(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    roi_in, scales_in, sizes_in = k.input(1), k.input(2), k.input(3)
    if any(t is not None and t.size and t.const is None for t in (roi_in, scales_in, sizes_in)):
        k.unsupported("Resize with roi/scales/sizes computed at run time")
    axes = [int(a) % x.rank for a in k.attr("axes", range(x.rank))]
    scales = [y.shape[d] / x.shape[d] for d in range(x.rank)]
    if scales_in is not None and scales_in.size:
        for axis, value in zip(axes, scales_in.const.reshape(-1)):
            scales[axis] = float(value)
        _refuse_ambiguous_lengths(k, x.shape, y.shape, scales)
    policy = k.attr("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch" and sizes_in is not None and sizes_in.size:
        ratios = [float(n) / x.shape[d] for d, n in zip(axes, sizes_in.const.reshape(-1))]
        common = min(ratios) if policy == "not_larger" else max(ratios)
        for axis in axes:  # one scale for every resized axis; y's shape is rounded from it
            scales[axis] = common
    rois = [(0.0, 1.0)] * x.rank
    if roi_in is not None and roi_in.size:
        values = [float(v) for v in roi_in.const.reshape(-1)]
        listed = axes if len(values) == 2 * len(axes) else list(range(x.rank))
        for i, axis in enumerate(listed):
            rois[axis] = (values[i], values[len(listed) + i])
    tables, outside = [], []
    for d in range(x.rank):
        idx, weights, out_of_roi = axis_taps(k, x.shape[d], y.shape[d], scales[d], rois[d])
        identity = weights.shape[1] == 1 or np.allclose(weights[:, 1:], 0)
        if identity and np.array_equal(idx[:, 0], np.arange(y.shape[d])):
            tables.append(None)
        else:
            tables.append((_table(k, f"idx{d}", idx), _table(k, f"w{d}", weights, x.dtype),
                           idx.shape[1]))
        outside.append(_table(k, f"out{d}", out_of_roi, DType.UINT8) if out_of_roi.any()
                       else None)
    _emit_gather(k, x, y, tables, outside)


def _refuse_ambiguous_lengths(k: Kernel, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                              scales: list[float]) -> None:
    """Refuse where the references disagree: with a scale whose resized length in * scale is
    fractional, align_corners and tf_crop_and_resize divide by (length - 1) and
    pytorch_half_pixel tests length > 1
    on the integer output length in the spec text and onnxruntime (which we follow) but on the
    fractional one in onnx's reference implementation."""
    transform = k.attr("coordinate_transformation_mode", "half_pixel")
    for d, (n, m, scale) in enumerate(zip(in_shape, out_shape, scales)):
        fractional = n * scale != m
        if fractional and (transform in ("align_corners", "tf_crop_and_resize") or
                           (transform == "pytorch_half_pixel" and m == 1)):
            k.unsupported(f"Resize {transform} with scale {scale} on axis {d}: the resized "
                          f"length {n * scale:g} is fractional, and onnx's reference and "
                          f"onnxruntime disagree on it (give sizes instead of scales)")


def _table(k: Kernel, name: str, values: np.ndarray, dtype: DType = DType.INT64) -> str:
    array = values.astype(dtype.numpy)
    tensor = Tensor(f"{k.node.name or 'resize'}_{name}", dtype, array.shape, array)
    return k.arg(Operand(tensor, name, False))


def _emit_gather(k: Kernel, x: Operand, y: Operand, tables: list, outside: list) -> None:
    em, X, Y, T = k.em, k.arg(x), k.arg(y), x.ctype
    strides = x.strides
    with em.loops(y.shape, parallel=True, work=y.size * 4) as out, \
            contextlib.ExitStack() as region:
        flags = [f"{flag}[{o}]" for flag, o in zip(outside, out) if flag is not None]
        if flags:  # tf_crop_and_resize outside the region of interest
            extrapolation = cdtypes.literal(float(k.attr("extrapolation_value", 0.0)), x.dtype)
            em.line(f"if ({' || '.join(flags)}) {Y}[{index(out, y.strides)}] = {extrapolation};")
            region.enter_context(em.block("else"))
        em.line(f"{T} acc = 0;")
        offsets = [index([o], [s]) for o, s in zip(out, strides)]
        weights = []
        with contextlib.ExitStack() as taps_loops:
            for d, table in enumerate(tables):
                if table is None:
                    continue
                idx, w, taps = table
                t = em.temp("t")
                taps_loops.enter_context(em.block(f"for (int64_t {t} = 0; {t} < {taps}; ++{t})"))
                row = index([out[d]], [taps], t)
                offsets[d] = f"{idx}[{row}] * {strides[d]}"
                weights.append(f"{w}[{row}]")
            source = " + ".join(o for o in offsets if o != "0") or "0"
            product = " * ".join(weights) if weights else "1"
            em.line(f"acc += ({T})({product}) * {X}[{source}];")
        em.line(f"{Y}[{index(out, y.strides)}] = acc;")
