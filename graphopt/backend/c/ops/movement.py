"""Data movement: views (Reshape family, BitCast), Transpose, Concat, Split, Slice, Expand, Tile,
DepthToSpace/SpaceToDepth.

Most of these are one strided copy: the output walked in order while the input is read
through strides computed at compile time (a transpose permutes the input's strides, a slice
scales them by the step, a concat offsets the destination). `copy_strided` coalesces the nest
so contiguous runs become flat loops. Gather-like and padding ops live in indexing.py.
"""
from __future__ import annotations

from typing import Sequence

from graphopt.backend.c.emitter import coalesce, contiguous_strides, index
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.loops import map_elements
from graphopt.backend.c.registry import register_op
from graphopt.backend.program import Step


def copy_strided(k: Kernel, shape: Sequence[int], dst: str, dst_strides: Sequence[int],
                 src: str, src_strides: Sequence[int], dst_offset: int | str = 0,
                 src_offset: int | str = 0) -> None:
    """dst[dst_offset + idx . dst_strides] = src[src_offset + idx . src_strides] over `shape`."""
    loop_shape, (d_strides, s_strides) = coalesce(shape, dst_strides, src_strides)
    with k.em.loops(loop_shape, parallel=True) as idx:
        k.em.line(f"{dst}[{index(idx, d_strides, dst_offset)}] = "
                  f"{src}[{index(idx, s_strides, src_offset)}];")


def permuted_copy(k: Kernel, view: Sequence[int], perm: Sequence[int]) -> None:
    """Y = transpose(X viewed as `view`, perm), Y contiguous."""
    x, y = k.input(0), k.outputs[0]
    view_strides = contiguous_strides(view)
    shape = [view[p] for p in perm]
    copy_strided(k, shape, k.arg(y), contiguous_strides(shape), k.arg(x),
                 [view_strides[p] for p in perm])


def _inference_only(step: Step) -> str | None:
    """Dropout is the identity only at inference (training_mode false, or ratio 0)."""
    if step.op_type != "Dropout" or len(step.inputs) < 3 or step.inputs[2] is None:
        return None
    training, ratio = step.inputs[2], step.inputs[1]
    if training.const is not None and not bool(training.const.reshape(-1)[0]):
        return None
    if ratio is not None and ratio.const is not None and float(ratio.const.reshape(-1)[0]) == 0:
        return None
    return "Dropout in training mode drops random elements; only inference Dropout is supported"


@register_op("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "BitCast",
             alias=True,
             check=_inference_only, const_inputs=(1, 2))  # shape/axes; Dropout ratio, training
def emit_view(k: Kernel) -> None:
    """Runs only when the planner could not make the output a view: copy the bytes."""
    x, y = k.input(0), k.outputs[0]
    k.em.line(f"memcpy({k.arg(y)}, {k.arg(x)}, {y.size * y.dtype.itemsize});")
    if k.node.op_type == "Dropout" and len(k.outputs) > 1 and k.outputs[1].used:
        mask = k.outputs[1]
        k.em.line(f"memset({k.arg(mask)}, 1, {mask.size});")  # inference: every element kept


@register_op("Transpose")
def emit_transpose(k: Kernel) -> None:
    x = k.input(0)
    perm = k.attr("perm", list(range(x.rank))[::-1])
    permuted_copy(k, x.shape, [int(p) % max(x.rank, 1) for p in perm])


@register_op("Concat")
def emit_concat(k: Kernel) -> None:
    y = k.outputs[0]
    axis = int(k.attr("axis")) % y.rank
    y_strides = y.strides
    offset = 0
    for x in k.inputs:
        if x is None or x.size == 0:
            offset += 0 if x is None else x.shape[axis]
            continue
        copy_strided(k, x.shape, k.arg(y), y_strides, k.arg(x), x.strides,
                     dst_offset=offset * y_strides[axis])
        offset += x.shape[axis]


@register_op("Split", const_inputs=(1,))
def emit_split(k: Kernel) -> None:
    x = k.input(0)
    axis = int(k.attr("axis", 0)) % x.rank
    offset = 0
    for y in k.outputs:
        if y.used and y.size:
            copy_strided(k, y.shape, k.arg(y), y.strides, k.arg(x), x.strides,
                         src_offset=offset * x.strides[axis])
        offset += y.shape[axis]


@register_op("Slice", const_inputs=(1, 2, 3, 4))
def emit_slice(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    params = [k.input(i) for i in range(1, 5)]
    if any(p is not None and p.const is None for p in params):
        k.unsupported("Slice with starts/ends/axes/steps computed at run time is not supported")
    starts, ends = params[0].const.tolist(), params[1].const.tolist()
    axes = params[2].const.tolist() if params[2] is not None else list(range(len(starts)))
    steps = params[3].const.tolist() if params[3] is not None else [1] * len(starts)
    begin = [0] * x.rank
    step_of = [1] * x.rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) % x.rank
        bounds = slice(int(start), int(end), int(step)).indices(x.shape[axis])
        begin[axis], step_of[axis] = bounds[0], bounds[2]
    if y.size == 0:
        return
    strides = x.strides
    copy_strided(k, y.shape, k.arg(y), y.strides, k.arg(x),
                 [s * st for s, st in zip(strides, step_of)],
                 src_offset=sum(b * s for b, s in zip(begin, strides)))


@register_op("Expand", const_inputs=(1,))
def emit_expand(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    map_elements(k, y, [x], lambda em, args: args[0])


@register_op("Tile", const_inputs=(1,))
def emit_tile(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    strides = x.strides
    with k.em.loops(y.shape, parallel=True) as idx:
        src = [f"({i} % {n})" if n != m else i for i, n, m in zip(idx, x.shape, y.shape)]
        k.em.line(f"{k.arg(y)}[{index(idx, y.strides)}] = {k.arg(x)}[{index(src, strides)}];")


@register_op("DepthToSpace")
def emit_depth_to_space(k: Kernel) -> None:
    n, c, h, w = k.input(0).shape
    b = int(k.attr("blocksize"))
    if k.attr("mode", "DCR") == "DCR":
        permuted_copy(k, (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2))
    else:
        permuted_copy(k, (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3))


@register_op("SpaceToDepth")
def emit_space_to_depth(k: Kernel) -> None:
    n, c, h, w = k.input(0).shape
    b = int(k.attr("blocksize"))
    # DCR: output channel (by * b + bx) * C + c; CRD: c * b * b + by * b + bx
    perm = (0, 3, 5, 1, 2, 4) if k.attr("mode", "DCR") == "DCR" else (0, 1, 3, 5, 2, 4)
    permuted_copy(k, (n, c, h // b, b, w // b, b), perm)
