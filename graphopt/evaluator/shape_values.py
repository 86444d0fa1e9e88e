"""Partial evaluation of shape tensors: int64 scalars/vectors whose elements are dims.

Exported graphs compute shapes at run time: Shape(x) -> Gather -> Unsqueeze -> Concat -> Reshape.
When x has a symbolic batch dim, Shape(x) is not constant, yet Gather(Shape(x), 1) may be. Here a
shape tensor is tracked as a tuple of dims (int, a symbol str, or None when unknown), so every
element that is static stays computable while symbolic ones stay symbolic: a rule result whose
elements are all ints can be folded, a partly symbolic one is only remembered for its readers.
Nothing here ever replaces a symbol by a number.

Rules are registered per op with `@shape_rule`; each takes the node and a `lookup` that returns the
ShapeTensor of an input value (known constant or earlier rule result) or None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphopt.errors import UnsupportedError
from graphopt.evaluator.data_movement import slice_bounds
from graphopt.ir.graph import Node, Value
from graphopt.ir.ops import OpKey, op_rule_decorator
from graphopt.ir.types import Dim, DType

# Constants larger than this are not shape tensors worth tracking.
MAX_ELEMENTS = 64


@dataclass(frozen=True)
class ShapeTensor:
    """An int64 tensor of rank 0 (`scalar`) or 1 whose elements are dims."""

    dims: tuple[Dim, ...]
    scalar: bool = False

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.dims)

    def to_array(self) -> np.ndarray:
        array = np.array(self.dims, dtype=np.int64)
        return array.reshape(()) if self.scalar else array


Lookup = Callable[[Value | None], "ShapeTensor | None"]
ShapeRule = Callable[[Node, Lookup], "ShapeTensor | None"]
SHAPE_RULES: dict[OpKey, ShapeRule] = {}


shape_rule = op_rule_decorator(SHAPE_RULES)


def from_constant(value: Value | None) -> ShapeTensor | None:
    """A small int64 constant of rank <= 1 as a ShapeTensor."""
    if value is None or value.const is None:
        return None
    array = value.const
    if array.dtype != np.int64 or array.ndim > 1 or array.size > MAX_ELEMENTS:
        return None
    return ShapeTensor(tuple(int(v) for v in array.reshape(-1)), scalar=array.ndim == 0)


def _const_ints(value: Value | None) -> list[int] | None:
    if value is None or value.const is None or value.const.dtype.kind not in "iu":
        return None
    return [int(v) for v in value.const.reshape(-1)]


@shape_rule("Shape")
def _shape(node: Node, lookup: Lookup) -> ShapeTensor | None:
    x = node.input(0)
    if x is None or x.shape is None:
        return None
    return ShapeTensor(tuple(x.shape[node.attr("start", 0):node.attr("end")]))


@shape_rule("Size")
def _size(node: Node, lookup: Lookup) -> ShapeTensor | None:
    x = node.input(0)
    if x is None or x.type is None or not x.type.is_static:
        return None
    return ShapeTensor((math.prod(x.shape),), scalar=True)


@shape_rule("Identity")
def _identity(node: Node, lookup: Lookup) -> ShapeTensor | None:
    return lookup(node.input(0))


@shape_rule("Cast")
def _cast(node: Node, lookup: Lookup) -> ShapeTensor | None:
    return lookup(node.input(0)) if node.attr("to") == DType.INT64 else None


@shape_rule("Gather")
def _gather(node: Node, lookup: Lookup) -> ShapeTensor | None:
    data, indices = lookup(node.input(0)), node.input(1)
    if data is None or data.scalar or indices is None or indices.const is None:
        return None
    if node.attr("axis", 0) not in (0, -1) or indices.const.ndim > 1:
        return None
    picked = []
    for i in _const_ints(indices) or []:
        if not -len(data.dims) <= i < len(data.dims):
            return None
        picked.append(data.dims[i])
    return ShapeTensor(tuple(picked), scalar=indices.const.ndim == 0)


@shape_rule("Slice")
def _slice(node: Node, lookup: Lookup) -> ShapeTensor | None:
    data = lookup(node.input(0))
    starts, ends = _const_ints(node.input(1)), _const_ints(node.input(2))
    axes = _const_ints(node.input(3)) if node.input(3) is not None else [0]
    steps = _const_ints(node.input(4)) if node.input(4) is not None else [1]
    if data is None or data.scalar or None in (starts, ends, axes, steps):
        return None
    if len(starts) != 1 or axes[0] not in (0, -1):
        return None
    try:
        return ShapeTensor(data.dims[slice_bounds(len(data.dims), starts[0], ends[0], steps[0])])
    except UnsupportedError:
        return None


@shape_rule("Concat")
def _concat(node: Node, lookup: Lookup) -> ShapeTensor | None:
    parts = [lookup(v) for v in node.inputs if v is not None]
    if any(p is None or p.scalar for p in parts):
        return None
    return ShapeTensor(tuple(d for p in parts for d in p.dims))


@shape_rule("Unsqueeze")
def _unsqueeze(node: Node, lookup: Lookup) -> ShapeTensor | None:
    data = lookup(node.input(0))
    if data is None or not data.scalar or _const_ints(node.input(1)) not in ([0], [-1]):
        return None
    return ShapeTensor(data.dims)


@shape_rule("Squeeze")
def _squeeze(node: Node, lookup: Lookup) -> ShapeTensor | None:
    data = lookup(node.input(0))
    axes = _const_ints(node.input(1)) if node.input(1) is not None else [0]
    if data is None or data.scalar or len(data.dims) != 1 or axes not in ([0], [-1]):
        return None
    return ShapeTensor(data.dims, scalar=True)


def evaluate_shape(node: Node, known: dict[int, ShapeTensor]) -> ShapeTensor | None:
    """The ShapeTensor `node` produces, given earlier results in `known` (keyed by value id)."""
    rule = SHAPE_RULES.get(node.key)
    if rule is None or len(node.outputs) != 1:
        return None

    def lookup(value: Value | None) -> ShapeTensor | None:
        if value is None:
            return None
        return known.get(id(value)) or from_constant(value)

    return rule(node, lookup)
