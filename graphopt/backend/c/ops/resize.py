"""Resize (nearest, linear, cubic) with any coordinate transformation but tf_crop_and_resize.

Because shapes are static, all the index arithmetic happens here in numpy: for every resized
axis and every output coordinate we tabulate T source indices and T weights (T = 1 nearest,
2 linear, 4 cubic), with out-of-range taps clamped to the edge as the ONNX reference does
(exclude_outside=1 drops them and renormalizes). The C kernel is then a separable weighted
gather: y[o] = sum over taps of prod(weights) * x[tap indices]. Axes that are not resized are
read directly.
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


def _cubic(ratio: np.ndarray, a: float) -> np.ndarray:
    r, s = ratio + 1, 1 - ratio
    return np.stack([((a * r - 5 * a) * r + 8 * a) * r - 4 * a,
                     ((a + 2) * ratio - (a + 3)) * ratio * ratio + 1,
                     ((a + 2) * s - (a + 3)) * s * s + 1,
                     ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a], axis=1)


def axis_taps(k: Kernel, in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices [out_len, T] int64, weights [out_len, T] float64) for one axis."""
    mode = k.attr("mode", "nearest")
    x = source_coordinate(np.arange(out_len, dtype=np.float64), scale, in_len, out_len,
                          k.attr("coordinate_transformation_mode", "half_pixel"))
    base = np.floor(x)
    ratio = x - base
    if mode == "nearest":
        rule = k.attr("nearest_mode", "round_prefer_floor")
        up = {"floor": np.zeros_like(ratio, bool), "ceil": ratio > 0,
              "round_prefer_ceil": ratio >= 0.5}.get(rule, ratio > 0.5)
        idx = (base + up)[:, None]
        weights = np.ones((out_len, 1))
    elif mode == "linear":
        idx = np.stack([base, base + 1], axis=1)
        weights = np.stack([1 - ratio, ratio], axis=1)
    else:
        idx = np.stack([base - 1, base, base + 1, base + 2], axis=1)
        weights = _cubic(ratio, float(k.attr("cubic_coeff_a", -0.75)))
    if mode == "cubic" and int(k.attr("exclude_outside", 0)):
        weights = np.where((idx >= 0) & (idx < in_len), weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, in_len - 1).astype(np.int64), weights


@register_op("Resize", dtypes=cdtypes.FLOATS, const_inputs=(1, 2, 3))
def emit_resize(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    scales_in, sizes_in = k.input(2), k.input(3)
    mode = k.attr("mode", "nearest")
    if k.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        k.unsupported("Resize with coordinate_transformation_mode=tf_crop_and_resize")
    if int(k.attr("antialias", 0)) and mode != "nearest" and any(
            o < i for o, i in zip(y.shape, x.shape)):
        k.unsupported("Resize with antialias=1 when downscaling")
    if k.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        k.unsupported("Resize keep_aspect_ratio_policy other than 'stretch'")
    if any(t is not None and t.size and t.const is None for t in (scales_in, sizes_in)):
        k.unsupported("Resize with scales/sizes computed at run time")
    axes = [int(a) % x.rank for a in k.attr("axes", range(x.rank))]
    scales = [y.shape[d] / x.shape[d] for d in range(x.rank)]
    if scales_in is not None and scales_in.size:
        for axis, value in zip(axes, scales_in.const.reshape(-1)):
            scales[axis] = float(value)
    tables = []
    for d in range(x.rank):
        idx, weights = axis_taps(k, x.shape[d], y.shape[d], scales[d])
        identity = weights.shape[1] == 1 or np.allclose(weights[:, 1:], 0)
        if identity and np.array_equal(idx[:, 0], np.arange(y.shape[d])):
            tables.append(None)
        else:
            tables.append((_table(k, f"idx{d}", idx), _table(k, f"w{d}", weights, x.dtype),
                           idx.shape[1]))
    _emit_gather(k, x, y, tables)


def _table(k: Kernel, name: str, values: np.ndarray, dtype: DType = DType.INT64) -> str:
    array = values.astype(dtype.numpy)
    tensor = Tensor(f"{k.node.name or 'resize'}_{name}", dtype, array.shape, array)
    return k.arg(Operand(tensor, name, False))


def _emit_gather(k: Kernel, x: Operand, y: Operand, tables: list) -> None:
    em, X, Y, T = k.em, k.arg(x), k.arg(y), x.ctype
    strides = x.strides
    with em.loops(y.shape, parallel=True, work=y.size * 4) as out:
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
