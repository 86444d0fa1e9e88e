"""Structural checks of a Graph: ownership, use lists, topological order, names, types."""
from __future__ import annotations

from typing import TYPE_CHECKING

from graphopt.errors import IRError

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node


def verify_graph(graph: "Graph") -> None:
    """Raise IRError naming the first violated invariant, with the nearby graph printed."""
    defined: set[int] = {id(v) for v in graph.inputs} | {id(v) for v in graph.initializers.values()}
    names: dict[str, object] = {}

    def claim(value_name: str, owner: object) -> None:
        if value_name in names and names[value_name] is not owner:
            raise IRError(f"value name %{value_name} is defined twice")
        names[value_name] = owner

    for v in graph.inputs:
        claim(v.name, v)
    for name, v in graph.initializers.items():
        if v.name != name:
            raise IRError(f"initializer key {name!r} does not match value name %{v.name}")
        if v.const is None:
            raise IRError(f"initializer %{name} holds no array")
        if v.default is not None:
            raise IRError(f"constant %{name} has a default; only graph inputs have one "
                          "(an overridable initializer)")
        claim(v.name, v)

    for node in graph.nodes:
        if node.graph is not graph:
            _fail(graph, node, "the node does not point back at this graph")
        for i, value in enumerate(node.inputs):
            if value is None:
                continue
            if id(value) not in defined:
                _fail(graph, node, f"input {i} %{value.name} is used before it is defined "
                      "(not topologically sorted, or produced outside this graph); call graph.sort()")
            if value._uses.count((node, i)) != 1:  # Use is a tuple: counted in C
                _fail(graph, node, f"use list of %{value.name} does not record input {i}")
        for value in node.implicit_inputs:
            if id(value) not in defined:
                _fail(graph, node, f"subgraph reads %{value.name} before it is defined")
        for out in node.outputs:
            if out.producer is not node:
                _fail(graph, node, f"output %{out.name} does not name this node as producer")
            if out.default is not None or out.const is not None:
                _fail(graph, node, f"output %{out.name} carries a constant or default array; "
                      "only initializers and graph inputs do")
            claim(out.name, out)
            defined.add(id(out))
            for use in out._uses:
                if use.node.graph is not graph:
                    _fail(graph, node, f"%{out.name} is read by {use.node.describe()}, "
                          "which is not in the graph (erase readers first)")

    for out in graph.outputs:
        if id(out) not in defined:
            raise IRError(f"graph output %{out.name} is not produced by any node, input or constant")


def _fail(graph: "Graph", node: "Node", message: str) -> None:
    from graphopt.ir.printer import format_neighbourhood

    raise IRError(f"{node.describe()}: {message}\n{format_neighbourhood(graph, node)}")
