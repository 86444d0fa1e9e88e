"""Windowed pooling over any number of spatial dims: MaxPool (with optional Indices, spatial
dims row- or column-major per storage_order), AveragePool (count_include_pad either way) and
LpPool.

Each output element walks its window; taps outside the input are skipped (and, for
AveragePool with count_include_pad=1, still counted when they fall on padding).
Global pools are reductions and live in reduce.py.
"""
from __future__ import annotations

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.registry import register_op
from graphopt.ir.conv_geometry import ConvGeometry


@register_op("MaxPool", dtypes=cdtypes.NUMERIC)
@register_op("AveragePool", "LpPool", dtypes=cdtypes.FLOATS)
def emit_pool(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    op = k.node.op_type
    spatial = x.rank - 2
    geometry = ConvGeometry.of(k.node, x.shape[2:], y.shape[2:])
    kernel, strides, dilations = geometry.kernel, geometry.strides, geometry.dilations
    begin, end = geometry.pads_begin, geometry.pads_end
    indices = k.outputs[1] if len(k.outputs) > 1 and k.outputs[1].used else None
    column_major = int(k.attr("storage_order", 0)) == 1
    include_pad = op == "AveragePool" and int(k.attr("count_include_pad", 0)) == 1
    p = float(k.attr("p", 2))
    em, X, Y = k.em, k.arg(x), k.arg(y)
    T, f = x.ctype, cdtypes.math_suffix(x.dtype)
    x_strides = x.strides
    with em.loops(y.shape, parallel=True, work=y.size * int(np.prod(kernel))) as out:
        init = cdtypes.lowest(x.dtype) if op == "MaxPool" else cdtypes.literal(0, x.dtype)
        em.line(f"{T} acc = {init};")
        em.line("int64_t count = 0, padded = 0, best = 0;")
        with em.loops(kernel, prefix="r") as taps:
            coords, inside, in_pad = [], [], []
            for d in range(spatial):
                c = em.temp("p")
                tap = taps[d] if dilations[d] == 1 else f"{taps[d]} * {dilations[d]}"
                em.line(f"const int64_t {c} = {_mul(out[d + 2], strides[d])} - {begin[d]} + {tap};")
                coords.append(c)
                inside.append(f"{c} >= 0 && {c} < {x.shape[d + 2]}")
                in_pad.append(f"{c} < {x.shape[d + 2] + end[d]}")
            offset = index([out[0], out[1]] + coords, x_strides)
            # Indices: flat position in X, the spatial dims in column-major order if asked
            arg = index([out[0], out[1]] + coords, x_strides[:2] + _column_major(x.shape[2:])) \
                if column_major else offset
            if include_pad:
                em.line(f"padded += ({' && '.join(in_pad)});")
            with em.block(f"if ({' && '.join(inside)})"):
                em.line(f"const {T} v = {X}[{offset}];")
                if op == "MaxPool":
                    with em.block("if (v > acc || count == 0)"):
                        em.line("acc = v;")
                        em.line(f"best = {arg};")
                elif op == "AveragePool":
                    em.line("acc += v;")
                else:
                    em.line(f"acc += pow{f}(fabs{f}(v), {cdtypes.literal(p, x.dtype)});")
                em.line("++count;")
        y_index = index(out, y.strides)
        if op == "MaxPool":
            em.line(f"{Y}[{y_index}] = acc;")
            if indices is not None:
                em.line(f"{k.arg(indices)}[{y_index}] = best;")
        elif op == "AveragePool":
            divisor = "padded" if include_pad else "count"
            em.line(f"{Y}[{y_index}] = {divisor} ? acc / ({T}){divisor} : ({T})0;")
        else:
            em.line(f"{Y}[{y_index}] = pow{f}(acc, {cdtypes.literal(1.0 / p, x.dtype)});")
        em.line("(void)padded; (void)best;")


def _column_major(dims: tuple[int, ...]) -> list[int]:
    """Strides of `dims` stored first-dim-fastest (MaxPool storage_order=1)."""
    strides, step = [], 1
    for dim in dims:
        strides.append(step)
        step *= dim
    return strides


def _mul(var: str, factor: int) -> str:
    if var == "0":
        return "0"
    return var if factor == 1 else f"{var} * {factor}"


@register_op("MaxUnpool", const_inputs=(2,))
def emit_max_unpool(k: Kernel) -> None:
    """Y = 0, then Y[I[i]] = X[i]: I holds flat positions in the unpooled shape
    (in - 1) * stride - pads + kernel per spatial dim; a larger output_shape keeps that block
    in its leading corner. An index outside the unpooled tensor stops the run."""
    x, indices, y = k.input(0), k.input(1), k.outputs[0]
    geometry = ConvGeometry.of(k.node)
    unpooled = list(x.shape[:2]) + list(geometry.transposed_output_size(x.shape[2:]))
    if any(u > o for u, o in zip(unpooled, y.shape)):
        k.unsupported(f"MaxUnpool output {y.shape} smaller than the unpooled shape {unpooled}")
    em, X, I, Y = k.em, k.arg(x), k.arg(indices), k.arg(y)
    em.line(f"memset({Y}, 0, {y.size * y.dtype.itemsize});")
    total = int(np.prod(unpooled))
    with em.loops([x.size]) as (i,):  # serial: a bad index returns from the loop
        em.line(f"const int64_t at = (int64_t){I}[{i}];")
        em.line(f"if (at < 0 || at >= {total}) return 1;")
        coords = [f"(at / {int(np.prod(unpooled[d + 1:]))} % {unpooled[d]})"
                  for d in range(len(unpooled))]
        em.line(f"{Y}[{index(coords, y.strides)}] = {X}[{i}];")
