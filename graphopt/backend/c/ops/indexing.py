"""Data-dependent indexing and padding: Gather, GatherElements, GatherND, ScatterElements,
ScatterND, OneHot, Trilu, Pad, CenterCropPad.

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


_SCATTER_UPDATES = {
    "none": "{u}", "add": "{d} + {u}", "mul": "{d} * {u}",
    "max": "({u} > {d} ? {u} : {d})", "min": "({u} < {d} ? {u} : {d})",
}


def _scatter_update(k: Kernel, dst: str, update: str) -> None:
    """dst = reduction(dst, update) per the node's `reduction` attribute."""
    reduction = k.attr("reduction", "none")
    if reduction not in _SCATTER_UPDATES:
        k.unsupported(f"{k.node.op_type} reduction '{reduction}'")
    k.em.line(f"{dst} = {_SCATTER_UPDATES[reduction].format(d=dst, u=update)};")


def _copy_input(k: Kernel, x: Operand, y: Operand) -> None:
    """Y starts as a copy of X."""
    k.em.line(f"memcpy({k.arg(y)}, {k.arg(x)}, {y.size * y.dtype.itemsize});")


@register_op("ScatterElements", "Scatter")
def emit_scatter_elements(k: Kernel) -> None:
    """Y = X; then Y[idx with indices[i] on `axis`] = f(that, updates[i]) for every i, in order
    (later updates of the same element see the earlier ones, as in the reference)."""
    data, indices, y, axis = _gather_operands(k)
    updates = k.input(2)
    _copy_input(k, data, y)
    em, I, U, Y = k.em, k.arg(indices), k.arg(updates), k.arg(y)
    with em.loops(indices.shape) as idx:  # serial: order matters and a bad index returns
        ix = _checked_index(k, f"{I}[{index(idx, indices.strides)}]", data.shape[axis])
        dst = index([ix if d == axis else v for d, v in enumerate(idx)], data.strides)
        _scatter_update(k, f"{Y}[{dst}]", f"{U}[{index(idx, updates.strides)}]")


@register_op("ScatterND")
def emit_scatter_nd(k: Kernel) -> None:
    """Y = X; then the slice of Y at each index tuple indices[i, :] becomes f(slice, updates[i])."""
    data, indices, updates, y = k.input(0), k.input(1), k.input(2), k.outputs[0]
    if indices.dtype not in _INDEX_TYPES:
        k.unsupported(f"ScatterND indices of type {indices.dtype.name}")
    depth = indices.shape[-1]
    tuples, inner = _prod(indices.shape[:-1]), _prod(data.shape[depth:])
    _copy_input(k, data, y)
    em, I, U, Y = k.em, k.arg(indices), k.arg(updates), k.arg(y)
    with em.loops([tuples]) as (i,):
        offset = _tuple_offset(k, I, i, depth, data.shape[:depth], data.strides[:depth])
        with em.loops([inner], prefix="q") as (q,):
            _scatter_update(k, f"{Y}[{offset} + {q}]", f"{U}[{index([i, q], [inner, 1])}]")


@register_op("GatherND")
def emit_gather_nd(k: Kernel) -> None:
    """Y[b, i] = the slice of X[b] at index tuple indices[b, i, :] (b: the batch_dims leading
    dims shared by X and indices)."""
    data, indices, y = k.input(0), k.input(1), k.outputs[0]
    if indices.dtype not in _INDEX_TYPES:
        k.unsupported(f"GatherND indices of type {indices.dtype.name}")
    batch_dims = int(k.attr("batch_dims", 0))
    depth = indices.shape[-1]
    batch = _prod(data.shape[:batch_dims])
    tuples = _prod(indices.shape[batch_dims:-1])
    inner = _prod(data.shape[batch_dims + depth:])
    per_batch = _prod(data.shape[batch_dims:])
    em, I, X, Y = k.em, k.arg(indices), k.arg(data), k.arg(y)
    strides = contiguous_strides(data.shape[batch_dims:])[:depth]
    with em.loops([batch, tuples]) as (b, i):
        offset = _tuple_offset(k, I, index([b, i], [tuples, 1]), depth,
                               data.shape[batch_dims:batch_dims + depth], strides)
        with em.loops([inner], prefix="q") as (q,):
            em.line(f"{Y}[{index([b, i, q], [tuples * inner, inner, 1])}] = "
                    f"{X}[{index([b], [per_batch])} + {offset} + {q}];")


def _tuple_offset(k: Kernel, indices: str, row: str, depth: int, extents: tuple[int, ...],
                  strides: list[int]) -> str:
    """Emit the checked element offset of index tuple `row` (depth entries); returns its name."""
    terms = []
    for j in range(depth):
        ix = _checked_index(k, f"{indices}[{index([row], [depth], j)}]", extents[j])
        terms.append(f"{ix} * {strides[j]}")
    name = k.em.temp("off")
    k.em.line(f"const int64_t {name} = {' + '.join(terms) or '0'};")
    return name


@register_op("Trilu", const_inputs=(1,))
def emit_trilu(k: Kernel) -> None:
    """Keep the upper (j - i >= k) or lower (j - i <= k) triangle of the last two dims."""
    x, y = k.input(0), k.outputs[0]
    k_in = k.input(1)
    if k_in is not None and k_in.const is None:
        k.unsupported("Trilu with k computed at run time")
    diagonal = int(k_in.const.reshape(-1)[0]) if k_in is not None else 0
    keep = f">= {diagonal}" if int(k.attr("upper", 1)) else f"<= {diagonal}"
    em, X, Y = k.em, k.arg(x), k.arg(y)
    with em.loops(x.shape, parallel=True) as idx:
        at = index(idx, x.strides)
        em.line(f"{Y}[{at}] = ({idx[-1]} - {idx[-2]} {keep}) ? {X}[{at}] : "
                f"{cdtypes.literal(0, x.dtype)};")


@register_op("OneHot", const_inputs=(1,))
def emit_one_hot(k: Kernel) -> None:
    """Y[..., d, ...] = on if d == index (negative indices count from depth) else off;
    indices are truncated to integers as onnxruntime does."""
    indices, depth_in, values, y = k.input(0), k.input(1), k.input(2), k.outputs[0]
    if depth_in.const is None:
        k.unsupported("OneHot with depth computed at run time")
    depth = int(depth_in.const.reshape(-1)[0])
    axis = int(k.attr("axis", -1)) % y.rank
    em, I, V, Y = k.em, k.arg(indices), k.arg(values), k.arg(y)
    with em.loops(y.shape, parallel=True) as idx:
        source = [v for d, v in enumerate(idx) if d != axis]
        em.line(f"int64_t ix = (int64_t){I}[{index(source, indices.strides)}];")
        em.line(f"if (ix < 0) ix += {depth};")
        em.line(f"{Y}[{index(idx, y.strides)}] = {V}[ix == {idx[axis]} ? 1 : 0];")


@register_op("CenterCropPad", const_inputs=(1,))
def emit_center_crop_pad(k: Kernel) -> None:
    """Each listed axis is cropped (dropping (n - m) // 2 elements at the start) or zero-padded
    (adding (m - n) // 2 at the start) from length n to the target length m."""
    x, shape_in, y = k.input(0), k.input(1), k.outputs[0]
    if shape_in.const is None:
        k.unsupported("CenterCropPad with a shape computed at run time")
    offsets = [(n - m) // 2 if n >= m else -((m - n) // 2) for n, m in zip(x.shape, y.shape)]
    em, X, Y = k.em, k.arg(x), k.arg(y)
    with em.loops(y.shape, parallel=True) as out:
        coords, checks = [], []
        for o, offset, n, m in zip(out, offsets, x.shape, y.shape):
            coords.append(f"({o} + {offset})" if offset else o)
            if m > n:
                checks.append(f"{o} + {offset} >= 0 && {o} + {offset} < {n}")
        load = f"{X}[{index(coords, x.strides)}]"
        value = f"({' && '.join(checks)}) ? {load} : {cdtypes.literal(0, x.dtype)}" if checks \
            else load
        em.line(f"{Y}[{index(out, y.strides)}] = {value};")


@register_op("ReverseSequence")
def emit_reverse_sequence(k: Kernel) -> None:
    """Along time_axis, the first sequence_lens[b] elements of batch row b come out reversed;
    the rest are copied. A length outside [0, time] stops the run with an error."""
    x, lengths, y = k.input(0), k.input(1), k.outputs[0]
    batch_axis, time_axis = int(k.attr("batch_axis", 1)), int(k.attr("time_axis", 0))
    em, X, L, Y = k.em, k.arg(x), k.arg(lengths), k.arg(y)
    steps = x.shape[time_axis]
    with em.loops(x.shape) as idx:  # serial: a bad length returns from the loop
        em.line(f"const int64_t len = (int64_t){L}[{idx[batch_axis]}];")
        em.line(f"if (len < 0 || len > {steps}) return 1;")
        t = idx[time_axis]
        source = list(idx)
        source[time_axis] = f"({t} < len ? len - 1 - {t} : {t})"
        em.line(f"{Y}[{index(idx, y.strides)}] = {X}[{index(source, x.strides)}];")
