"""Fusion groups: a compute op plus the elementwise chain applied to its output, as an IR fact.

A group is an *anchor* (Conv, ConvTranspose, Gemm, MatMul) followed by *epilogue* nodes (bias
Add, activation, residual Add, channel Mul, Clip...) that each read the previous result as their
only reader, or, for SiLU written as Sigmoid and Mul (EfficientNet exports), as its only two
readers (`silu_readers`). Every consumer reads the same groups: the C backend runs a group as
one kernel whose epilogue is applied to each output tile while it is in registers or cache; the
NPU charges the epilogue to the anchor's layer as vector work done while outputs drain, so the
intermediate tensors never travel to the global buffer; the exporter records membership in node
metadata (the nodes themselves stay standard ONNX).

Why an epilogue may join (the math is unchanged): an elementwise op whose output has the
anchor's output shape computes each output element from the same element of the anchor's result
and from operands that do not depend on the anchor (constants, graph inputs, or values produced
before the anchor in topological order, so they are ready when a tile is). Applying it per element
right after that element is final computes exactly the values the unfused graph computes. The
intermediate must have no other reader and must not be a graph output, since it is never stored.

`find_fusion_groups(graph)` computes the groups; the `group-epilogues` pass stamps them on the
nodes (`Node.fusion`), where they stay valid until a later pass edits a member (`is_intact`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterable

from graphopt.ir import ops
from graphopt.ir.graph import Graph, Node, Value

ANCHORS = frozenset(("", op) for op in ("Conv", "ConvTranspose", "Gemm", "MatMul"))
# A group never grows past this many epilogue nodes (a kernel's epilogue is short).
MAX_EPILOGUE = 8

EpilogueFilter = Callable[[Node, list[Node]], bool]

_ids = itertools.count()


@dataclass(frozen=True, eq=False)
class FusionGroup:
    """An anchor node and its epilogue nodes, in execution order."""

    anchor: Node
    epilogue: tuple[Node, ...]
    name: str

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.anchor, *self.epilogue)

    @property
    def output(self) -> Value:
        """The value the group writes (the last node's output)."""
        return self.nodes[-1].outputs[0]

    def is_intact(self, graph: Graph) -> bool:
        """Whether every member is still in `graph`, still stamped with this group, and still
        chained (each epilogue node reads its predecessor's output)."""
        chain = self.nodes
        if any(node.graph is not graph or node.fusion is not self for node in chain):
            return False
        return all(prev.outputs[0] in node.inputs for prev, node in zip(chain, chain[1:]))

    def describe(self) -> str:
        return " -> ".join(node.op_type for node in self.nodes)


def find_fusion_groups(graph: Graph, accepts: EpilogueFilter = lambda node, chain: True,
                       ) -> list[FusionGroup]:
    """The fusion groups of `graph`, one per anchor that has at least one epilogue node.

    `accepts(node, chain)` lets a consumer refuse an epilogue node it cannot run (the chain so
    far is passed too); the group then ends before that node.
    """
    position = {id(node): i for i, node in enumerate(graph.nodes)}
    outputs = {id(v) for v in graph.outputs}
    groups = []
    for anchor in graph.nodes:
        if anchor.key not in ANCHORS or not _is_float(anchor.outputs[0]):
            continue
        chain = [anchor]
        while len(chain) <= MAX_EPILOGUE:
            followers = _epilogue_readers(chain[-1], position[id(anchor)], position, outputs)
            if not followers or len(chain) + len(followers) > MAX_EPILOGUE + 1 or \
                    not all(accepts(f, chain + followers[:k]) for k, f in enumerate(followers)):
                break
            chain.extend(followers)
        if len(chain) > 1:
            groups.append(FusionGroup(anchor, tuple(chain[1:]), f"fusion_{next(_ids)}"))
    return groups


def stamp_fusion_groups(graph: Graph, groups: Iterable[FusionGroup]) -> int:
    """Record `groups` on their nodes (clearing stale stamps first); returns how many."""
    for node in graph.nodes:
        node.fusion = None
    count = 0
    for group in groups:
        for node in group.nodes:
            node.fusion = group
        count += 1
    return count


def fusion_groups(graph: Graph) -> list[FusionGroup]:
    """The intact groups stamped on `graph`'s nodes, in anchor order."""
    seen: dict[int, FusionGroup] = {}
    for node in graph.nodes:
        group = node.fusion
        if group is not None and group.anchor is node and group.is_intact(graph):
            seen[id(group)] = group
    return list(seen.values())


def ensure_fusion_groups(graph: Graph) -> list[FusionGroup]:
    """The groups stamped on `graph`; when nothing is stamped (a graph that did not go through
    the group-epilogues pass), find and stamp them first."""
    if not any(node.fusion is not None for node in graph.nodes):
        stamp_fusion_groups(graph, find_fusion_groups(graph))
    return fusion_groups(graph)


def silu_readers(result: Value) -> tuple[Node, Node] | None:
    """(Sigmoid, Mul) when the only readers of `result` compute SiLU, result * Sigmoid(result)
    (either Mul operand order), and the Sigmoid's output is read by that Mul alone; else None.
    SiLU reads its input twice, so the single-reader rule would stop a group before it; as a
    pair it is one elementwise function of each element, which an epilogue may apply."""
    uses = result.uses()
    if len(uses) != 2 or any(use.index < 0 for use in uses):
        return None
    sigmoid = next((u.node for u in uses if u.node.key == ("", "Sigmoid")), None)
    mul = next((u.node for u in uses if u.node.key == ("", "Mul")), None)
    if sigmoid is None or mul is None or len(sigmoid.outputs) != 1 or len(mul.outputs) != 1:
        return None
    gate = sigmoid.outputs[0]
    gate_uses = gate.uses()
    if len(gate_uses) != 1 or gate_uses[0].node is not mul or \
            sorted(map(id, mul.inputs)) != sorted((id(result), id(gate))):
        return None
    return sigmoid, mul


def _epilogue_readers(node: Node, anchor_position: int, position: dict[int, int],
                      outputs: set[int]) -> list[Node]:
    """The elementwise readers of `node`'s result that may join the group next, in order: the
    single reader, or the Sigmoid and Mul of a SiLU (silu_readers); [] when none may."""
    result = node.outputs[0]
    if id(result) in outputs or len(node.outputs) != 1:
        return []
    silu = silu_readers(result)
    if silu is not None:
        sigmoid, mul = silu
        if id(sigmoid.outputs[0]) in outputs or not _is_float(mul.outputs[0]) or \
                mul.outputs[0].shape is None or mul.outputs[0].shape != result.shape:
            return []
        return list(silu)
    reader = _single_reader(result, anchor_position, position)
    return [reader] if reader is not None else []


def _single_reader(result: Value, anchor_position: int, position: dict[int, int]
                   ) -> Node | None:
    """The single elementwise reader of `result` that may join the group, if any."""
    uses = result.uses()
    if len(uses) != 1 or uses[0].index < 0:
        return None
    reader = uses[0].node
    if reader.key not in ops.ELEMENTWISE or reader.domain or len(reader.outputs) != 1:
        return None
    if reader.op_type == "Cast" or not _is_float(reader.outputs[0]):
        return None
    if reader.outputs[0].shape is None or reader.outputs[0].shape != result.shape:
        return None  # it would broadcast the result to a larger tensor
    if sum(1 for v in reader.inputs if v is result) != 1:
        return None
    for other in reader.inputs:
        if other is None or other is result:
            continue
        producer = other.producer
        if producer is not None and position.get(id(producer), anchor_position) >= anchor_position:
            return None  # not ready when the anchor's tiles are
    return reader


def _is_float(value: Value) -> bool:
    """Whether the epilogue arithmetic is defined for value's type (DType.is_float)."""
    return value.type is not None and value.type.dtype.is_float
