"""ONNX <-> graphopt IR."""
from __future__ import annotations

import os

import onnx

from graphopt.ir.graph import Graph
from graphopt.onnx_io.exporter import export_model, save_model
from graphopt.onnx_io.importer import import_model
from graphopt.onnx_io.reader import read_model
from graphopt.onnx_io.shapes import refresh_types


def load(model: "str | os.PathLike | onnx.ModelProto | Graph") -> Graph:
    """A Graph from a path, a ModelProto or a Graph (returned as is)."""
    if isinstance(model, Graph):
        return model
    if isinstance(model, onnx.ModelProto):
        return import_model(model)
    return import_model(read_model(model))


def save(graph: Graph, path: "str | os.PathLike") -> onnx.ModelProto:
    """Export and write atomically; returns the exported model."""
    model = export_model(graph)
    save_model(model, path)
    return model


__all__ = ["load", "save", "import_model", "export_model", "save_model", "read_model",
           "refresh_types"]
