"""How each op takes a transposed operand: per-op rules as data, looked up by (domain, op_type).

A handler gets a node and the perm p its layout operands carry (operand = Transpose(v', p)) and
says how to compute the same result from the untransposed operands instead: which inputs are
layout operands (they will be fed untransposed), the rewritten attributes and constant inputs
(axes renumbered through p), and the perm each output then carries. It returns None when the op
cannot take the operand untransposed (unknown rank, a non-constant axes input, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from graphopt.ir import ops
from graphopt.ir.axes import normalize_axis
from graphopt.ir.graph import Node
from graphopt.layout.perms import Perm, dropped_axes_perm, inserted_axes_perm, invert, rank_of


@dataclass
class NodePlan:
    """How to rewrite one node so it reads untransposed operands."""

    layout_inputs: tuple[int, ...]
    out_perms: tuple[Perm, ...]
    attrs: dict[str, Any] | None = None  # replacement attribute dict; None keeps them
    const_inputs: dict[int, np.ndarray] = field(default_factory=dict)  # new axis-carrying inputs


Handler = Callable[[Node, Perm], "NodePlan | None"]
HANDLERS: dict[ops.OpKey, Handler] = {}
_handler = ops.op_rule_decorator(HANDLERS)

# Reductions whose axes moved from an attribute to input 1 at opset 18 (ReduceSum at 13).
_AXES_INPUT_SINCE = {name: 18 for _, name in ops.REDUCTIONS} | {"ReduceSum": 13}


def plan_for(node: Node, perm: Perm) -> NodePlan | None:
    handler = HANDLERS.get(node.key)
    return None if handler is None else handler(node, perm)


def _with(node: Node, **changes: Any) -> dict[str, Any]:
    attrs = dict(node.attrs)
    attrs.update(changes)
    return attrs


# --- elementwise ------------------------------------------------------------------------------
@_handler(*sorted(op for _, op in ops.UNARY - {("", "Clip")}), "Identity")
def _unary(node: Node, perm: Perm) -> NodePlan:
    return NodePlan((0,), (perm,))


@_handler("Clip")
def _clip(node: Node, perm: Perm) -> NodePlan:
    return NodePlan((0,), (perm,))  # min and max are scalars


@_handler(*sorted(op for _, op in ops.BINARY), "Where")
def _broadcasting(node: Node, perm: Perm) -> NodePlan | None:
    """Every operand is a layout operand; lower-rank constants are broadcast to full rank first."""
    indices = tuple(i for i, v in enumerate(node.inputs) if v is not None)
    for i in indices:
        rank = rank_of(node.input(i))
        if rank is None or rank > len(perm):
            return None
    return NodePlan(indices, (perm,))


@_handler("QuantizeLinear", "DequantizeLinear")
def _qdq(node: Node, perm: Perm) -> NodePlan | None:
    scale = node.input(1)
    if rank_of(scale) in (None, 0) or (scale.shape is not None and scale.shape == (1,)):
        return NodePlan((0,), (perm,))
    if rank_of(scale) != 1:
        return None  # blocked quantization: the scale is laid out like the tensor
    axis = normalize_axis(int(node.attr("axis", 1)), len(perm))
    return NodePlan((0,), (perm,), _with(node, axis=perm[axis]))


# --- ops with one axis --------------------------------------------------------------------------
def _one_axis(node: Node, perm: Perm, default: int, inputs: tuple[int, ...]) -> NodePlan:
    axis = normalize_axis(int(node.attr("axis", default)), len(perm))
    outs = tuple(perm for _ in node.outputs)
    return NodePlan(inputs, outs, _with(node, axis=perm[axis]))


@_handler("Softmax", "LogSoftmax", "Hardmax")
def _softmax(node: Node, perm: Perm) -> NodePlan | None:
    if node.graph is None or node.graph.opset < 13:
        return None  # before opset 13 the op flattens all dims from `axis` on
    return _one_axis(node, perm, -1, (0,))


@_handler("Concat")
def _concat(node: Node, perm: Perm) -> NodePlan | None:
    if any(rank_of(v) != len(perm) for v in node.inputs):
        return None
    return _one_axis(node, perm, 0, tuple(range(len(node.inputs))))


@_handler("Split")
def _split(node: Node, perm: Perm) -> NodePlan:
    return _one_axis(node, perm, 0, (0,))


@_handler("ArgMax", "ArgMin")
def _arg_reduce(node: Node, perm: Perm) -> NodePlan:
    axis = normalize_axis(int(node.attr("axis", 0)), len(perm))
    out = perm if node.attr("keepdims", 1) else dropped_axes_perm(perm, [axis])
    return NodePlan((0,), (out,), _with(node, axis=perm[axis]))


@_handler("Gather")
def _gather(node: Node, perm: Perm) -> NodePlan | None:
    axis = normalize_axis(int(node.attr("axis", 0)), len(perm))
    index_rank = rank_of(node.input(1))
    if index_rank == 0:
        out = dropped_axes_perm(perm, [axis])
    elif index_rank == 1:
        out = perm
    else:
        return None
    return NodePlan((0,), (out,), _with(node, axis=perm[axis]))


# --- ops with a list of axes --------------------------------------------------------------------
@_handler(*sorted(op for _, op in ops.REDUCTIONS))
def _reduce(node: Node, perm: Perm) -> NodePlan | None:
    rank = len(perm)
    from_input = node.graph is not None and node.graph.opset >= _AXES_INPUT_SINCE[node.op_type]
    axes = node.const_ints(1) if from_input else node.attr("axes")
    if from_input and node.input(1) is not None and axes is None:
        return None  # axes computed at run time
    keep = bool(node.attr("keepdims", 1))
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return NodePlan((0,), (perm,))
        return NodePlan((0,), (perm,) if keep else ((),))
    axes = [normalize_axis(int(a), rank) for a in axes]
    new_axes = sorted(perm[a] for a in axes)
    out = perm if keep else dropped_axes_perm(perm, axes)
    if from_input:
        return NodePlan((0,), (out,), const_inputs={1: np.array(new_axes, dtype=np.int64)})
    return NodePlan((0,), (out,), _with(node, axes=new_axes))


@_handler("Squeeze")
def _squeeze(node: Node, perm: Perm) -> NodePlan | None:
    from_input = node.graph is not None and node.graph.opset >= 13
    axes = node.const_ints(1) if from_input else node.attr("axes")
    if not axes:
        return None  # "every unit dim" needs the shape; leave it to the shape passes
    axes = [normalize_axis(a, len(perm)) for a in axes]
    out = dropped_axes_perm(perm, axes)
    new_axes = np.array(sorted(perm[a] for a in axes), dtype=np.int64)
    if from_input:
        return NodePlan((0,), (out,), const_inputs={1: new_axes})
    return NodePlan((0,), (out,), _with(node, axes=new_axes.tolist()))


@_handler("Unsqueeze")
def _unsqueeze(node: Node, perm: Perm) -> NodePlan | None:
    from_input = node.graph is not None and node.graph.opset >= 13
    axes = node.const_ints(1) if from_input else node.attr("axes")
    if not axes:
        return None
    out_rank = len(perm) + len(axes)
    axes = sorted(normalize_axis(a, out_rank) for a in axes)
    return NodePlan((0,), (inserted_axes_perm(perm, axes),))


@_handler("Slice")
def _slice(node: Node, perm: Perm) -> NodePlan | None:
    starts = node.const_ints(1)
    if starts is None or (node.input(3) is not None and node.const_input(3) is None):
        return None
    axes = node.const_ints(3) if node.input(3) is not None else list(range(len(starts)))
    new_axes = np.array([perm[normalize_axis(a, len(perm))] for a in axes], dtype=np.int64)
    return NodePlan((0,), (perm,), const_inputs={3: new_axes})


@_handler("Pad")
def _pad(node: Node, perm: Perm) -> NodePlan | None:
    rank = len(perm)
    if node.input(3) is not None:  # opset 18 axes input: renumber the axes, keep the pads
        axes = node.const_ints(3)
        if axes is None:
            return None
        new_axes = np.array([perm[normalize_axis(a, rank)] for a in axes], dtype=np.int64)
        return NodePlan((0,), (perm,), const_inputs={3: new_axes})
    pads = node.const_input(1)
    if pads is None or pads.size != 2 * rank:
        return None
    return NodePlan((0,), (perm,), const_inputs={1: _permute_pairs(pads, perm)})


@_handler("Resize")
def _resize(node: Node, perm: Perm) -> NodePlan | None:
    """Scales, sizes and roi list one entry per dim (roi: starts then ends): renumber them."""
    if node.attr("axes") is not None:
        axes = [perm[normalize_axis(int(a), len(perm))] for a in node.attr("axes")]
        return NodePlan((0,), (perm,), _with(node, axes=axes))
    const_inputs: dict[int, np.ndarray] = {}
    for index in (1, 2, 3):
        value = node.input(index)
        if value is None or (value.shape is not None and 0 in value.shape):
            continue
        array = value.const
        if array is None:
            return None
        if index == 1:
            const_inputs[index] = _permute_pairs(array, perm)
        elif array.size == len(perm):
            const_inputs[index] = np.ascontiguousarray(array.reshape(-1)[list(invert(perm))])
        else:
            return None
    return NodePlan((0,), (perm,), const_inputs=const_inputs)


def _permute_pairs(array: np.ndarray, perm: Sequence[int]) -> np.ndarray:
    """[begin per dim..., end per dim...] listed in the transposed frame, relisted untransposed."""
    rank = len(perm)
    flat = np.asarray(array).reshape(-1)
    order = list(invert(perm))
    return np.concatenate([flat[:rank][order], flat[rank:][order]]).astype(flat.dtype)
