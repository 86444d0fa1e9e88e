"""Type and shape inference through onnx's shape inference, on a light copy of the model.

Large initializers are replaced by typed graph inputs before inference so that a model of any
size (> 2 GB included) is never serialized whole; small ones keep their data because shape
inference reads them (the `shape` input of Reshape, the axes of Unsqueeze...).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import onnx

from graphopt.ir.types import TensorType

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph

log = logging.getLogger(__name__)

# Initializers up to this many elements keep their data for shape inference (data propagation).
KEEP_DATA_ELEMENTS = 4096


class InferredTypes(dict):
    """name -> TensorType, plus the raw TypeProto of non-tensor values in `onnx_types`."""

    def __init__(self) -> None:
        super().__init__()
        self.onnx_types: dict[str, onnx.TypeProto] = {}


def _light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with large initializers turned into typed graph inputs (never serializes weights)."""
    from graphopt.onnx_io.exporter import copy_without_initializers

    light = copy_without_initializers(model)
    for tensor in model.graph.initializer:
        if _elements(tensor) <= KEEP_DATA_ELEMENTS:
            light.graph.initializer.add().CopyFrom(tensor)
        else:
            light.graph.input.append(onnx.helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
    return light


def _elements(tensor: onnx.TensorProto) -> int:
    size = 1
    for d in tensor.dims:
        size *= d
    return size


def infer_value_types(model: onnx.ModelProto) -> InferredTypes:
    """Types of every named value onnx can infer (existing value_info included)."""
    from graphopt.onnx_io.importer import tensor_type_from_proto

    light = _light_copy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception as err:  # inference failing must not stop the import; keep what is declared
        log.warning("onnx shape inference failed (%s); using declared types only",
                    str(err).splitlines()[0][:160])
        inferred = light
    result = InferredTypes()
    g = inferred.graph
    for info in (*g.input, *g.value_info, *g.output):
        tensor_type = tensor_type_from_proto(info.type)
        if tensor_type is not None:
            if tensor_type.dtype != 0:
                result[info.name] = tensor_type
        else:
            result.onnx_types[info.name] = info.type
    return result


def refresh_types(graph: "Graph", overwrite: bool = False) -> int:
    """Fill in (or with overwrite=True recompute) node output types from onnx inference.

    Passes that rewrite shapes call this once at the end; returns how many types changed.
    """
    from graphopt.onnx_io.exporter import export_model

    model = export_model(graph, include_value_info=not overwrite, keep_large_data=False)
    types = infer_value_types(model)
    changed = 0
    for node in graph.nodes:
        for out in node.outputs:
            new = types.get(out.name)
            if new is None or (out.type is not None and not overwrite and out.type.is_static):
                continue
            if out.type is not None and not _more_precise(new, out.type) and not overwrite:
                continue
            if new != out.type:
                layout = out.type.layout if out.type is not None else None
                out.type = TensorType(new.dtype, new.shape, layout)
                changed += 1
    return changed


def _more_precise(new: TensorType, old: TensorType) -> bool:
    if old.shape is None:
        return new.shape is not None
    if new.shape is None or len(new.shape) != len(old.shape):
        return False
    return sum(isinstance(d, int) for d in new.shape) > sum(isinstance(d, int) for d in old.shape)
