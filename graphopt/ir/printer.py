"""Readable text dumps of the IR, for logs, tests and `--print-after`.

    graph main(%input: f32[N x 784]) -> (%out) {
      %fc1 = Gemm(%input, %w1, %b1) {transB=1}
      ...
    }
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph, Node, Value


def _format_attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 4:
            return f"tensor({value.tolist()})"
        return f"tensor<{value.dtype}{list(value.shape)}>"
    if isinstance(value, onnx.GraphProto):
        return f"graph<{value.name}: {len(value.node)} nodes>"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _ref(value: "Value | None") -> str:
    return "" if value is None else f"%{value.name}"


def format_node(node: "Node") -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
    args = ", ".join(_ref(v) for v in node.inputs)
    attrs = ", ".join(f"{k}={_format_attr(v)}" for k, v in sorted(node.attrs.items()))
    types = ", ".join(str(v.type) for v in node.outputs)
    text = f"{outs} = {op}({args})"
    if attrs:
        text += f" {{{attrs}}}"
    return f"{text}  : {types}"


def format_graph(graph: "Graph", show_constants: bool = False) -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    outs = ", ".join(f"%{v.name}" for v in graph.outputs)
    lines = [f"graph {graph.info.graph_name}({ins}) -> ({outs}) {{"]
    if show_constants:
        for v in graph.initializers.values():
            lines.append(f"  const %{v.name}: {v.type}")
    lines.extend("  " + format_node(n) for n in graph.nodes)
    lines.append("}")
    return "\n".join(lines)


def format_neighbourhood(graph: "Graph", node: "Node", radius: int = 3) -> str:
    """A few nodes around `node`, with the node marked, for error messages."""
    try:
        at = graph.nodes.index(node)
    except ValueError:
        return "  (node not in graph) " + format_node(node)
    lo, hi = max(0, at - radius), min(len(graph.nodes), at + radius + 1)
    lines = []
    for i in range(lo, hi):
        mark = ">>" if i == at else "  "
        lines.append(f"{mark} {format_node(graph.nodes[i])}")
    return "\n".join(lines)
