"""Data-dependent indexing and padding: Gather, GatherElements, Pad.

Indices are read at run time, normalized (negative counts from the end) and bounds-checked:
an index outside the axis makes the kernel return non-zero, which stops the run with an error
naming the node instead of reading out of bounds.
"""
from __future__ import annotations

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import contiguous_strides, index
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op
from graphopt.ir.types import DType

_INDEX_TYPES = {DType.INT32, DType.INT64}


def _checked_index(k: Kernel, expr: str, extent: int) -> str:
    """Emit the normalization and bounds check of one index; returns the variable name."""
    name = k.em.temp("ix")
    k.em.line(f"int64_t {name} = (int64_t){expr};")
    k.em.line(f"if ({name} < 0) {name} += {extent};")
    k.em.line(f"if ({name} < 0 || {name} >= {extent}) return 1;")
    return name


def _gather_operands(k: Kernel) -> tuple[Operand, Operand, Operand, int]:
    """(data, indices, output, axis) of Gather-like ops; refuses non-integer indices."""
    data, indices = k.input(0), k.input(1)
    if indices.dtype not in _INDEX_TYPES:
        k.unsupported(f"{k.node.op_type} indices of type {indices.dtype.name}")
    return data, indices, k.outputs[0], int(k.attr("axis", 0)) % data.rank


@register_op("Gather")
def emit_gather(k: Kernel) -> None:
    data, indices, y, axis = _gather_operands(k)
    outer = int(_prod(data.shape[:axis]))
    inner = int(_prod(data.shape[axis + 1:]))
    extent, count = data.shape[axis], indices.size
    em, X, I, Y = k.em, k.arg(data), k.arg(indices), k.arg(y)
    with em.loops([outer, count]) as (o, j):  # serial: a bad index returns from the loop
        ix = _checked_index(k, f"{I}[{j}]", extent)
        src = index([o, ix], [extent * inner, inner])
        dst = index([o, j], [count * inner, inner])
        with em.loops([inner], prefix="q") as (q,):
            em.line(f"{Y}[{index([q], [1], dst)}] = {X}[{index([q], [1], src)}];")


@register_op("GatherElements")
def emit_gather_elements(k: Kernel) -> None:
    data, indices, y, axis = _gather_operands(k)
    em, X, I, Y = k.em, k.arg(data), k.arg(indices), k.arg(y)
    strides = data.strides
    with em.loops(indices.shape) as idx:
        ix = _checked_index(k, f"{I}[{index(idx, indices.strides)}]", data.shape[axis])
        src = [ix if d == axis else v for d, v in enumerate(idx)]
        dst = index(idx, contiguous_strides(indices.shape))
        em.line(f"{Y}[{dst}] = {X}[{index(src, strides)}];")


@register_op("Pad", const_inputs=(1, 3))
def emit_pad(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    pads_in, value_in, axes_in = k.input(1), k.input(2), k.input(3)
    mode = k.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        k.unsupported(f"Pad mode '{mode}'")
    if pads_in is None or pads_in.const is None or (axes_in is not None and axes_in.const is None):
        k.unsupported("Pad with pads/axes computed at run time is not supported")
    pads = [int(p) for p in pads_in.const.reshape(-1)]
    axes = [int(a) % x.rank for a in axes_in.const.reshape(-1)] if axes_in is not None \
        else list(range(x.rank))
    begin = [0] * x.rank
    for i, axis in enumerate(axes):
        begin[axis] = pads[i]
    if value_in is not None and value_in.const is None:
        fill = f"{k.arg(value_in)}[0]"
    else:
        empty = value_in is None or value_in.size == 0
        value = 0 if empty else value_in.const.reshape(-1)[0].item()
        fill = cdtypes.literal(value, x.dtype)
    em, X, Y = k.em, k.arg(x), k.arg(y)
    with em.loops(y.shape, parallel=True) as out:
        coords, checks = [], []
        for d, (o, n) in enumerate(zip(out, x.shape)):
            c = em.temp("s")
            em.line(f"int64_t {c} = {o} - {begin[d]};")
            if mode == "reflect" and n > 1:
                em.line(f"while ({c} < 0 || {c} >= {n}) {c} = {c} < 0 ? -{c} : {2 * n - 2} - {c};")
            elif mode == "edge" or (mode == "reflect" and n == 1):
                em.line(f"{c} = {c} < 0 ? 0 : ({c} >= {n} ? {n - 1} : {c});")
            elif mode == "wrap":
                em.line(f"{c} = (({c} % {n}) + {n}) % {n};")
            else:
                checks.append(f"{c} >= 0 && {c} < {n}")
            coords.append(c)
        load = f"{X}[{index(coords, x.strides)}]"
        value = f"({' && '.join(checks)}) ? {load} : {fill}" if checks else load
        em.line(f"{Y}[{index(out, y.strides)}] = {value};")


def _prod(dims: tuple[int, ...]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total
