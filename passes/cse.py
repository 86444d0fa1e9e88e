"""Common-subexpression elimination, for nodes and for constants."""
from __future__ import annotations

import hashlib
import weakref
from typing import Any, Hashable, Iterator

import numpy as np
import onnx

from graphopt import Graph, PassResult, register_pass
from graphopt.ir import ops
from graphopt.ir.graph import Node, Value


@register_pass("cse")
def cse(graph: Graph) -> PassResult:
    """Merge identical constants, then identical nodes, keeping the first of each.

    Constants are identical when dtype, shape and bytes match (compared only among constants
    whose dtype, shape and a sample of elements already agree). Nodes are
    identical when op, domain, attributes and inputs are the same values (inputs of binary
    commutative ops in either order, since a+b == b+a bit for bit); one pass in topological order
    suffices because merging a node makes its readers' inputs identical in turn. Safe because ONNX
    ops are pure functions of their inputs and attributes; the exceptions are never merged:
    random ops (two RandomNormal nodes, or two Dropouts in training mode, draw different
    numbers) and nodes with subgraphs. Graph outputs keep their names (through an Identity when two outputs turn out to
    be the same value).
    """
    merged_constants = _merge_constants(graph)
    merged_nodes = _merge_nodes(graph)
    return PassResult(bool(merged_constants or merged_nodes),
                      {"constants": merged_constants, "nodes": merged_nodes})


def _merge_constants(graph: Graph) -> int:
    # Candidates share dtype, shape and a strided sample of elements; only they are compared.
    candidates: dict[tuple, list[Value]] = {}
    for value in graph.initializers.values():
        array = value.const
        candidates.setdefault((array.dtype.str, array.shape, _sample(array)), []).append(value)
    merged = 0
    for group in candidates.values():
        if len(group) < 2:
            continue
        for value, first in _later_copies(group):
            if value.uses():
                # A duplicate that is also a graph output stays one, under its own name.
                graph.replace_all_uses_with(value, first, replace_graph_outputs=False)
                merged += 1
    if merged:
        graph.remove_unused_initializers()
    return merged


# Distinct contents per candidate group compared byte for byte (memory speed) before the rest
# of the group is matched by content hash (blake2b, an order of magnitude slower per byte).
_COMPARE_LIMIT = 4


def _later_copies(group: list[Value]) -> Iterator[tuple[Value, Value]]:
    """(value, the first value of `group` with the same content) for every later copy."""
    distinct: list[Value] = []
    hashed: dict[Hashable, Value] = {}
    for value in group:
        first = next((d for d in distinct if _same_content(d.const, value.const)), None)
        if first is None:
            if len(distinct) < _COMPARE_LIMIT:
                distinct.append(value)
                continue
            first = hashed.setdefault(_content_key(value.const), value)
        if first is not value:
            yield value, first


def _same_content(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype and shape (the caller's grouping) and the same bytes: -0.0 is not 0.0 and a
    NaN equals a NaN with the same bits, exactly as for the content hash."""
    if a.dtype == object:
        return _content_key(a) == _content_key(b)
    x = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    y = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    if x.size % 8 == 0:
        x, y = x.view(np.uint64), y.view(np.uint64)
    return bool(np.array_equal(x, y))


def _sample(array: np.ndarray, count: int = 64) -> Hashable:
    flat = array.reshape(-1)
    picked = flat[:: max(1, flat.size // count)][:count]
    return tuple(map(str, picked)) if array.dtype == object else picked.tobytes()


# Content hashes of constant arrays, by id, valid while the array lives: a fixed-point group
# runs cse every round, and hashing a large weight again each time costs seconds. Passes never
# write into a constant array (they give the Value a new one), so a live array's hash holds.
_HASHES: dict[int, tuple[weakref.ref, Hashable]] = {}


def _content_key(array: np.ndarray) -> Hashable:
    if array.dtype == object:
        return tuple(str(s) for s in array.reshape(-1))
    cached = _HASHES.get(id(array))
    if cached is not None and cached[0]() is array:
        return cached[1]
    view = np.ascontiguousarray(array)
    key = hashlib.blake2b(memoryview(view.reshape(-1).view(np.uint8)), digest_size=16).digest()
    _HASHES[id(array)] = (weakref.ref(array, lambda _, i=id(array): _HASHES.pop(i, None)), key)
    return key


def _merge_nodes(graph: Graph) -> int:
    seen: dict[Hashable, Node] = {}
    merged: list[Node] = []
    for node in graph:
        if not _mergeable(node):
            continue
        original = seen.setdefault(_node_key(node), node)
        if original is node:
            continue
        for dup, kept in zip(node.outputs, original.outputs):
            graph.replace_all_uses_with(dup, kept)
        merged.append(node)
    graph.remove(merged)  # in one sweep: node-by-node removal is quadratic in the graph size
    return len(merged)


def _mergeable(node: Node) -> bool:
    return not (ops.is_random(node) or node.subgraphs or node.implicit_inputs)


def _node_key(node: Node) -> Hashable:
    inputs = tuple(None if v is None else id(v) for v in node.inputs)
    if ops.is_a(node, ops.COMMUTATIVE) and len(inputs) == 2 and None not in inputs:
        inputs = tuple(sorted(inputs))
    attrs = tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items()))
    return node.domain, node.op_type, inputs, attrs, len(node.outputs)


def _attr_key(value: Any) -> Hashable:
    if isinstance(value, list) and all(type(v) is int for v in value):
        return tuple(value)  # the common case (kernel_shape, pads, perm...), without recursion
    if isinstance(value, np.ndarray):
        return ("tensor", value.dtype.str, value.shape, _content_key(value))
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, onnx.AttributeProto):
        return ("proto", value.SerializeToString(deterministic=True))
    if isinstance(value, float) and value != value:
        return ("nan",)  # NaN != NaN, yet two NaN attributes mean the same thing
    return value
