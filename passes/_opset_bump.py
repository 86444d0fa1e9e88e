"""When raising a graph's default-domain opset is a pure relabel (no node needs converting).

Raising the opset changes the meaning of a node only if its op got a new definition in between.
Many new definitions just admit more types or add an optional input or an attribute whose
default keeps the old behaviour; for those the node means the same at the higher opset.
`upgrade_blockers` lists the nodes whose op changed in any other way (e.g. ReduceMean-18 moved
`axes` from an attribute to an input, DFT-20 moved `axis`, GridSample-20 renamed its modes), in
which case the opset must not be raised without onnx's version converter.
"""
from __future__ import annotations

import functools
from typing import Iterable, Iterator

import onnx

from graphopt.ir.graph import Graph

# (op, version) definitions in opsets 18-20 that only add types, optional inputs, or attributes
# whose defaults reproduce the previous version.
COMPATIBLE_DEFINITIONS = frozenset({
    ("AveragePool", 19),       # dilations, default 1
    ("Cast", 19), ("CastLike", 19),  # float8 types; saturate only affects float8
    ("Constant", 19), ("ConstantOfShape", 20), ("Identity", 19), ("Equal", 19),
    ("Reshape", 19), ("Shape", 19), ("Size", 19), ("IsInf", 20), ("IsNaN", 20),
    ("If", 19), ("Loop", 19), ("Scan", 19),  # types (bodies are checked node by node)
    ("DequantizeLinear", 19), ("QuantizeLinear", 19),  # float8 types, saturate
    ("Pad", 18), ("Pad", 19),  # optional axes input; new 'wrap' mode
    ("Resize", 18), ("Resize", 19),  # antialias=0, optional axes, new modes
    ("ScatterElements", 18), ("ScatterND", 18),  # new reduction values
    ("LpPool", 18),  # ceil_mode, default 0
    ("OptionalGetElement", 18), ("OptionalHasElement", 18),
})


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


def _definitions_between(op: str, low: int, high: int) -> list[int] | None:
    """Versions of `op` defined in (low, high], or None when onnx does not know the op at `low`."""
    try:
        onnx.defs.get_schema(op, low, "")
    except onnx.defs.SchemaError:
        return None
    return [v for v in _history().get(op, ()) if low < v <= high]


@functools.cache
def _history() -> dict[str, tuple[int, ...]]:
    """op -> every since_version of its default-domain definitions."""
    versions: dict[str, set[int]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain == "":
            versions.setdefault(schema.name, set()).add(schema.since_version)
    return {op: tuple(sorted(v)) for op, v in versions.items()}


def upgrade_blockers(graph: Graph, target: int) -> list[str]:
    """Ops (as "Op-version") that prevent relabelling the graph's opset as `target`."""
    if graph.info.functions:
        return ["model-local functions (their opset imports must match)"]
    blockers = set()
    for op in set(_default_domain_ops(graph)):
        versions = _definitions_between(op, graph.opset, target)
        if versions is None:
            blockers.add(f"{op} (unknown at opset {graph.opset})")
            continue
        blockers.update(f"{op}-{v}" for v in versions if (op, v) not in COMPATIBLE_DEFINITIONS)
    return sorted(blockers)
