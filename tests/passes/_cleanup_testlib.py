"""Helpers for the cleanup pass tests: models in ONNX text, run, compare with onnxruntime."""
from __future__ import annotations

import onnx

from graphopt.ir.graph import Graph
from graphopt.testing import assert_same_outputs, parse_model, run_passes

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'


def model_of(graph_text: str) -> onnx.ModelProto:
    """A checked opset-18 model from the text of its graph."""
    return parse_model(HEADER + graph_text)


def run_checked(graph_text: str, passes: str) -> Graph:
    """Run `passes` on the model and check onnxruntime gives the same outputs before and after."""
    model = model_of(graph_text)
    graph = run_passes(model, passes)
    assert_same_outputs(model, graph)
    return graph


def op_types(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]
