"""Whole-model type inference at import, through onnx's shape inference on a light copy.

This runs once, when a model is imported (and tests use it as a cross-check). After import,
types are graphopt's shape engine's business (graphopt.evaluator.infer), node by node.

Large initializers are replaced by typed graph inputs before inference so that a model of any
size (> 2 GB included) is never serialized whole; small ones keep their data because shape
inference reads them (the `shape` input of Reshape, the axes of Unsqueeze...).
"""
from __future__ import annotations

import logging
from typing import AbstractSet

import onnx

from graphopt.ir.types import TensorType

log = logging.getLogger(__name__)

# Initializers up to this many elements keep their data for shape inference (data propagation).
KEEP_DATA_ELEMENTS = 4096


class InferredTypes(dict):
    """name -> TensorType, plus the raw TypeProto of non-tensor values in `onnx_types`."""

    def __init__(self) -> None:
        super().__init__()
        self.onnx_types: dict[str, onnx.TypeProto] = {}
        # Why onnx inference failed ("" when it ran): the caller decides whether to warn, since a
        # model that cannot run makes inference fail and gets its own, clearer error.
        self.failure = ""


def _light_copy(model: onnx.ModelProto, overridable: AbstractSet[str] = frozenset()
                ) -> onnx.ModelProto:
    """The model with large initializers turned into typed graph inputs (never serializes weights).

    Overridable inputs (initializers also listed as inputs) keep only their input declaration, so
    no inferred type depends on a default value the caller may replace."""
    from graphopt.onnx_io.exporter import copy_without_initializers

    if not overridable and all(_elements(t) <= KEEP_DATA_ELEMENTS
                               for t in model.graph.initializer):
        return model  # the copy would be the model: infer_shapes only reads it
    light = copy_without_initializers(model)
    declared = {v.name for v in model.graph.input}
    for tensor in model.graph.initializer:
        if tensor.name in overridable:
            continue
        if _elements(tensor) <= KEEP_DATA_ELEMENTS:
            light.graph.initializer.add().CopyFrom(tensor)
        elif tensor.name not in declared:
            light.graph.input.append(onnx.helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
    return light


def _elements(tensor: onnx.TensorProto) -> int:
    size = 1
    for d in tensor.dims:
        size *= d
    return size


def infer_value_types(model: onnx.ModelProto,
                      overridable: AbstractSet[str] = frozenset()) -> InferredTypes:
    """Types of the values nodes produce that onnx can infer (existing value_info included);
    graph inputs keep their declared types.

    `overridable` names initializers that are also graph inputs and stay inputs (see
    importer.import_model): their data is not shown to inference."""
    from graphopt.onnx_io.importer import tensor_type_from_proto

    light = _light_copy(model, overridable)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception as err:  # inference failing must not stop the import; keep what is declared
        failure = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        log.debug("onnx shape inference failed: %s", failure)
        inferred = light
    else:
        failure = ""
    result = InferredTypes()
    result.failure = failure
    g = inferred.graph
    # Values share few distinct types (a CNN's 446 values have 37): convert each distinct
    # TypeProto once, keyed by its bytes, which cost a fraction of walking its dims in Python.
    # TensorType is immutable, so values may share one.
    converted: dict[bytes, TensorType | None] = {}
    for info in (*g.value_info, *g.output):
        key = info.type.SerializeToString()
        if key in converted:
            tensor_type = converted[key]
        else:
            tensor_type = converted[key] = tensor_type_from_proto(info.type)
        if tensor_type is not None:
            if tensor_type.dtype != 0:
                result[info.name] = tensor_type
        else:
            result.onnx_types[info.name] = info.type
    return result
