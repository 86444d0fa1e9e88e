"""ONNX <-> graphopt IR."""
from __future__ import annotations

import os

import onnx

from graphopt.ir.graph import Graph
from graphopt.onnx_io.exporter import export_model, save_model
from graphopt.onnx_io.importer import import_model
from graphopt.onnx_io.reader import read_model


def load(model: "str | os.PathLike | onnx.ModelProto | Graph",
         fold_input_initializers: bool = False) -> Graph:
    """A Graph from a path, a ModelProto or a Graph (returned as is).

    Initializers that are also graph inputs stay overridable inputs (IR >= 4) unless
    `fold_input_initializers` (see import_model)."""
    if isinstance(model, Graph):
        return model
    if isinstance(model, onnx.ModelProto):
        return import_model(model, fold_input_initializers)
    return import_model(read_model(model), fold_input_initializers)


def save(graph: Graph, path: "str | os.PathLike") -> onnx.ModelProto:
    """Export and write atomically; returns the exported model."""
    model = export_model(graph)
    save_model(model, path)
    return model


__all__ = ["load", "save", "import_model", "export_model", "save_model", "read_model"]
