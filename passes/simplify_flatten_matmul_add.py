"""Batched MatMul + bias becomes a 2-D Gemm between Reshapes, where the Reshapes cancel out.

    Add(MatMul(x[d0, ..., K], W[K, N]), bias)  ->  Reshape(Gemm(Reshape(x, [-1, K]), W, bias), s)

A MatMul of x with a 2-D constant W multiplies every row of x, seen as a [d0 * ..., K] matrix,
by W; a bias that varies only along the last dim is added to every row. Gemm computes exactly
that on the flattened rows, and a Reshape restores the leading dims (the element order is the
same), so the values agree up to the summation order of the kernels.

The rewrite adds Reshapes, so it is done only where it removes nodes on balance:
  * output side: the Add's only reader is a Reshape with a constant target; that Reshape then
    reads the Gemm directly (a 0 "copy this dim" entry is resolved against the static dims);
  * input side: the MatMuls reading the same x share one Reshape(x, [-1, K]). It costs nothing
    when x comes from a Reshape/Flatten/Squeeze/Unsqueeze read only by those MatMuls
    (fuse-transpose-reshape merges the two Reshapes and the old one goes), else one node.
k MatMul + Add pairs (2k nodes) reading one x become k Gemms and at most one Reshape, so the
rewrite is done when k exceeds the input side's cost: BERT's query/key/value projections,
each followed by the head-split Reshape, become one Reshape and three Gemms (9 nodes -> 7).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir import ops
from graphopt.ir.graph import Node, Value
from graphopt.ir.types import TensorType

PASS_NAME = "simplify-flatten-matmul-add"
GEMM_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)})


@dataclass(frozen=True)
class _Candidate:
    matmul: Node
    add: Node
    bias: Value        # the Add's constant
    reader: Node       # the Reshape reading the Add
    target: np.ndarray  # the reader's target with 0 entries resolved


def _single_reader(value: Value, outputs: set[int]) -> tuple[Node, int] | None:
    uses = value.uses()
    if id(value) in outputs or len(uses) != 1 or uses[0].index < 0:
        return None
    return uses[0].node, uses[0].index


def _bias_of(add: Node, index: int, n: int, rank: int, dtype: np.dtype) -> Value | None:
    """The Add's other operand when it is a constant bias varying at most along the last dim."""
    bias = add.input(1 - index)
    if bias is None or bias.const is None or bias.const.dtype != dtype or bias.const.ndim > rank:
        return None
    shape = bias.const.shape
    if any(d != 1 for d in shape[:-1]) or (shape and shape[-1] not in (1, n)):
        return None
    return bias


def _resolved_target(reader: Node, shape: tuple) -> np.ndarray | None:
    """The Reshape's constant target with 0 ("copy dim i of the input") made explicit."""
    target = reader.const_input(1)
    if target is None:
        return None
    target = target.astype(np.int64).reshape(-1).copy()
    for i in np.flatnonzero(target == 0):
        if reader.attr("allowzero", 0) or i >= len(shape) or not isinstance(shape[i], int):
            return None
        target[i] = shape[i]
    return target


def _candidate(matmul: Node, outputs: set[int]) -> _Candidate | None:
    x, w = matmul.input(0), matmul.input(1)
    if x is None or w is None or w.const is None or w.const.ndim != 2 or x.shape is None:
        return None
    k, n = w.const.shape
    if len(x.shape) < 3 or x.shape[-1] != k or w.const.dtype not in GEMM_DTYPES:
        return None
    found = _single_reader(matmul.outputs[0], outputs)
    if found is None or found[0].key != ("", "Add"):
        return None
    add, index = found
    bias = _bias_of(add, index, n, len(x.shape), w.const.dtype)
    out = add.outputs[0]
    found = _single_reader(out, outputs)
    if bias is None or out.shape is None or found is None:
        return None
    reader, position = found
    if reader.key != ("", "Reshape") or position != 0:
        return None
    target = _resolved_target(reader, out.shape)
    return None if target is None else _Candidate(matmul, add, bias, reader, target)


def _input_cost(graph: Graph, x: Value, group: list[_Candidate], outputs: set[int]) -> int:
    """0 when x's own reshape can merge with the new one and then die, else 1."""
    readers = {id(c.matmul) for c in group}
    merges = x.producer is not None and ops.is_a(x.producer, ops.RESHAPE_LIKE)
    only_group = all(id(u.node) in readers for u in x.uses()) and id(x) not in outputs
    return 0 if merges and only_group else 1


def _flat_type(x: Value, k: int) -> TensorType:
    lead = x.shape[:-1]
    rows = int(np.prod(lead)) if all(isinstance(d, int) for d in lead) else None
    return TensorType(x.dtype, (rows, k))


def _rewrite(graph: Graph, x: Value, group: list[_Candidate], first: Node) -> list[Node]:
    """Build the shared Reshape and one Gemm per candidate; return the nodes now unread."""
    k = int(group[0].matmul.input(1).const.shape[0])
    with graph.inserting_before(first):
        flat_shape = graph.add_constant(np.array([-1, k], dtype=np.int64), "flat_shape")
        flat = graph.make_node("Reshape", [x, flat_shape], types=[_flat_type(x, k)],
                               name=f"{x.name}_rows", origin=PASS_NAME).outputs[0]
    for c in group:
        w = c.matmul.input(1)
        bias = c.bias if c.bias.const.ndim == 1 else graph.add_constant(
            c.bias.const.reshape(-1), f"{c.bias.name}_row")
        out_type = TensorType(x.dtype, (flat.shape[0], int(w.const.shape[1])))
        gemm = graph.make_node("Gemm", [flat, w, bias], types=[out_type],
                               name=c.matmul.name or "Gemm", before=c.add, origin=PASS_NAME)
        if not np.array_equal(c.target, c.reader.const_input(1).reshape(-1)):
            c.reader.replace_input(1, graph.add_constant(c.target, "shape"))
        c.reader.replace_input(0, gemm.outputs[0])
    return [node for c in group for node in (c.add, c.matmul)]


@register_pass(PASS_NAME)
def simplify_flatten_matmul_add(graph: Graph) -> PassResult:
    """MatMul(x, W) + bias on rank >= 3 inputs -> Reshape, Gemm, Reshape, where the Reshapes
    merge with neighbouring ones so that the node count drops."""
    outputs = set(map(id, graph.outputs))
    groups: dict[int, list[_Candidate]] = {}
    firsts: dict[int, Node] = {}
    for node in graph.nodes:
        if node.key != ("", "MatMul"):
            continue
        candidate = _candidate(node, outputs)
        if candidate is not None:
            groups.setdefault(id(node.input(0)), []).append(candidate)
            firsts.setdefault(id(node.input(0)), node)
    removed: list[Node] = []
    for key, group in groups.items():
        x = group[0].matmul.input(0)
        if len(group) > _input_cost(graph, x, group, outputs):
            removed += _rewrite(graph, x, group, firsts[key])
    graph.remove(removed)
    if removed:
        graph.remove_unused_initializers()
    rewritten = len(removed) // 2
    return PassResult(rewritten > 0, {"rewritten": rewritten})
