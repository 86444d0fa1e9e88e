"""When raising a graph's default-domain opset is a pure relabel (no node needs converting).

Raising the opset changes the meaning of a node only if its op got a new definition in between.
Many new definitions just admit more types or add an optional input or an attribute whose
default keeps the old behaviour; for those the node means the same at the higher opset.
`upgrade_blockers` lists the nodes whose op changed in any other way (e.g. ReduceMean-18 moved
`axes` from an attribute to an input, DFT-20 moved `axis`, GridSample-20 renamed its modes), in
which case the opset must not be raised without onnx's version converter. The table of
compatible definitions is graphopt.onnx_io.opset_upgrade's (the importer's upgrade uses it too).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import onnx

from graphopt.ir.graph import Graph
from graphopt.onnx_io.opset_upgrade import COMPATIBLE_DEFINITIONS, definitions_between


def _default_domain_ops(graph: Graph) -> Iterator[str]:
    for node in graph.nodes:
        if node.domain == "":
            yield node.op_type
        for body in node.subgraphs:
            yield from _body_ops(body)


def _body_ops(body: onnx.GraphProto) -> Iterable[str]:
    for node in body.node:
        if node.domain in ("", "ai.onnx"):
            yield node.op_type
        for attr in node.attribute:
            for inner in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                yield from _body_ops(inner)


def upgrade_blockers(graph: Graph, target: int) -> list[str]:
    """Ops (as "Op-version") that prevent relabelling the graph's opset as `target`."""
    if graph.info.functions:
        return ["model-local functions (their opset imports must match)"]
    blockers = set()
    for op in set(_default_domain_ops(graph)):
        versions = definitions_between(op, graph.opset, target)
        if versions is None:
            blockers.add(f"{op} (unknown at opset {graph.opset})")
            continue
        blockers.update(f"{op}-{v}" for v in versions if (op, v) not in COMPATIBLE_DEFINITIONS)
    return sorted(blockers)
