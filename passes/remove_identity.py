"""Removal of nodes that return their input unchanged."""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.errors import UnsupportedError
from graphopt.evaluator.data_movement import slice_bounds
from graphopt.ir import ops
from graphopt.ir.axes import normalize_axis
from graphopt.ir.graph import Node, Value
from graphopt.ir.ops import OpKey, op_rule_decorator
from graphopt.ir.types import DType

# A rule looks at one node and returns the input value it forwards unchanged, or None.
NoOpRule = Callable[[Node], "Value | None"]
NOOP_RULES: dict[OpKey, NoOpRule] = {}
# Slice ends at or past this are "to the end" even for a dim of unknown size.
_UNBOUNDED = 1 << 62


noop_rule = op_rule_decorator(NOOP_RULES)


@register_pass("remove-identity")
def remove_identity(graph: Graph) -> PassResult:
    """Forward the input of every node that provably returns it unchanged, and drop the node.

    Covered: Identity; Dropout in inference mode (training_mode absent or constant false, mask
    unread); Reshape to the input's own shape; Transpose by the identity permutation; Cast/CastLike
    to the same dtype; Pad by zeros; Slice of the whole tensor; Expand to the input's shape;
    Squeeze with nothing to squeeze and Unsqueeze of no axes; single-input Concat; x+0, 0+x, x-0,
    x*1, 1*x, x/1 when the constant neither broadcasts the output larger nor changes its dtype.
    Each rule decides from constants and static dims only, so symbolic dims never make a node look
    like a no-op. (x+0 turns -0.0 into +0.0; nothing downstream of an ONNX model can tell.)

    Graph outputs keep their names: when the forwarded value cannot take over an output's name
    (a graph input, another output, a constant), replace_all_uses_with leaves an Identity.
    """
    removed: list[Node] = []
    for node in graph:
        rule = NOOP_RULES.get(node.key)
        source = rule(node) if rule is not None else None
        if source is not None and _forward(graph, node, source):
            removed.append(node)
    graph.remove(removed)  # in one sweep: node-by-node removal is quadratic in the graph size
    return PassResult(bool(removed), {"removed": len(removed)})


def _forward(graph: Graph, node: Node, source: Value) -> bool:
    """Point the node's readers at `source`; the node is left unread."""
    out = node.outputs[0]
    keeps_name = out not in graph.outputs or graph.can_take_output_name(source)
    if node.key == ("", "Identity") and not keeps_name:
        return False  # already the Identity replace_all_uses_with would put there
    graph.replace_all_uses_with(out, source)
    return True


def _static_equal(dim: object, size: int) -> bool:
    return isinstance(dim, int) and dim == size


@noop_rule("Identity", "Concat")
def _first_input(node: Node) -> Value | None:
    present = [v for v in node.inputs if v is not None]
    return present[0] if len(present) == 1 else None


@noop_rule("Dropout")
def _dropout(node: Node) -> Value | None:
    mask = node.outputs[1] if len(node.outputs) > 1 else None
    if mask is not None and (mask.uses() or (node.graph and mask in node.graph.outputs)):
        return None
    return None if ops.is_random(node) else node.input(0)


@noop_rule("Reshape")
def _reshape(node: Node) -> Value | None:
    x, target = node.input(0), node.const_ints(1)
    if x is None or x.shape is None or target is None or len(target) != len(x.shape):
        return None
    allowzero = bool(node.attr("allowzero", 0))
    if target.count(-1) > 1:
        return None
    for t, dim in zip(target, x.shape):
        copies = t == 0 and not allowzero
        if not (copies or t == -1 or _static_equal(dim, t)):
            return None
    # -1 takes the input's dim when every other dim is kept, unless another dim is a static 0.
    others = [d for t, d in zip(target, x.shape) if t != -1]
    return None if -1 in target and 0 in others else x


@noop_rule("Transpose")
def _transpose(node: Node) -> Value | None:
    x, perm = node.input(0), node.attr("perm")
    if perm is None:
        return x if x is not None and x.shape is not None and len(x.shape) <= 1 else None
    return x if list(perm) == list(range(len(perm))) else None


@noop_rule("Cast")
def _cast(node: Node) -> Value | None:
    x = node.input(0)
    same = x is not None and x.dtype is not None and x.dtype == DType(node.attr("to"))
    return x if same else None


@noop_rule("CastLike")
def _cast_like(node: Node) -> Value | None:
    x, like = node.input(0), node.input(1)
    same = x is not None and like is not None and x.dtype is not None and x.dtype == like.dtype
    return x if same else None


@noop_rule("Pad")
def _pad(node: Node) -> Value | None:
    pads = node.const_ints(1)
    return node.input(0) if pads is not None and not any(pads) else None


@noop_rule("Slice")
def _slice(node: Node) -> Value | None:
    x, starts, ends = node.input(0), node.const_ints(1), node.const_ints(2)
    if x is None or x.shape is None or starts is None or ends is None:
        return None
    rank = len(x.shape)
    axes = node.const_ints(3) if node.input(3) is not None else list(range(len(starts)))
    steps = node.const_ints(4) if node.input(4) is not None else [1] * len(starts)
    if axes is None or steps is None:
        return None
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step != 1 or not -rank <= axis < rank:
            return None
        dim = x.shape[normalize_axis(axis, rank)]
        if isinstance(dim, int):
            try:
                bounds = slice_bounds(dim, start, end, step)
            except UnsupportedError:
                return None
            if (bounds.start, bounds.stop) != (0, dim):
                return None
        elif not (start == 0 or start <= -_UNBOUNDED) or end < _UNBOUNDED:
            return None
    return x


def _broadcast_keeps_shape(shape: tuple | None, other: list[int]) -> bool:
    """Whether broadcasting a tensor of `shape` with one of dims `other` leaves `shape` as is."""
    if shape is None or len(other) > len(shape):
        return False
    aligned = shape[len(shape) - len(other):]
    return all(o == 1 or _static_equal(d, o) for d, o in zip(aligned, other))


@noop_rule("Expand")
def _expand(node: Node) -> Value | None:
    x, target = node.input(0), node.const_ints(1)
    if x is None or target is None:
        return None
    return x if _broadcast_keeps_shape(x.shape, target) else None


@noop_rule("Squeeze")
def _squeeze(node: Node) -> Value | None:
    x, axes = node.input(0), node.const_ints(1)
    if x is None or x.type is None or not x.type.is_static or 1 in x.shape:
        return None
    # Without axes every 1-dim goes (and onnxruntime reads empty axes the same way): none here.
    return x if node.input(1) is None or axes == [] else None


@noop_rule("Unsqueeze")
def _unsqueeze(node: Node) -> Value | None:
    return node.input(0) if node.const_ints(1) == [] else None


# op -> (neutral constant, input positions it may take): x+0, 0+x, x-0, x*1, 1*x, x/1.
_NEUTRAL: dict[OpKey, tuple[int, tuple[int, ...]]] = {
    ("", "Add"): (0, (0, 1)), ("", "Sub"): (0, (1,)),
    ("", "Mul"): (1, (0, 1)), ("", "Div"): (1, (1,)),
}


@noop_rule("Add", "Sub", "Mul", "Div")
def _neutral_operand(node: Node) -> Value | None:
    neutral, positions = _NEUTRAL[node.key]
    out = node.outputs[0]
    for position in positions:
        const, x = node.input(position), node.input(1 - position)
        if const is None or x is None or const.const is None or const.const.dtype == object:
            continue
        if x.dtype is None or x.dtype != const.dtype or out.dtype not in (None, x.dtype):
            continue
        keeps_shape = _broadcast_keeps_shape(x.shape, list(const.const.shape))
        if keeps_shape and np.all(const.const == neutral):
            return x
    return None
