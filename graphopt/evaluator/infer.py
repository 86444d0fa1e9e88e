"""Type and shape inference on IR nodes: graphopt's one shape engine.

Every consumer that needs output types (passes after a rewrite, backend specialization with
concrete input shapes, the NPU workload through `Value.type`) asks this module, node by node:

  * `infer_node(node, input_types, ...)` -> the output TensorTypes of one node for the given input
    types (static, symbolic or unknown dims) and the constant or partly symbolic values of its
    small inputs;
  * `infer_types(graph)` walks a graph in order and fills in (or tightens) `Value.type`.

The per-op rules are the ONNX op schemas' own inference functions (`onnx.defs` ships one per
operator and opset, the same code onnx's whole-model inference runs), called per node, so there
is no second copy of ONNX's shape semantics in graphopt. What per-node schema inference cannot
see, shape tensors that are partly symbolic (Reshape to `Concat(Gather(Shape(x), 0), [-1])` with a
symbolic batch), comes from `shape_values.ShapeTensor` and the few rules below, which read such a
tensor where an op takes a shape as input. Whole-model onnx inference runs only at import.
"""
from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.evaluator.shape_values import ShapeTensor, evaluate_shape, from_constant
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.types import Dim, DType, TensorType, broadcast_dims

log = logging.getLogger(__name__)

# Constant inputs up to this many elements are shown to the schema's inference (Reshape's shape,
# Slice's starts, Resize's sizes...); larger ones only by type.
INFERENCE_DATA_ELEMENTS = 1 << 16


def infer_node(node: Node, input_types: Sequence[TensorType | None],
               input_values: Sequence[np.ndarray | None] = (),
               shape_values: Sequence[ShapeTensor | None] = (),
               opsets: Mapping[str, int] | None = None) -> list[TensorType | None]:
    """Output types of `node` for these input types (None where a type is unknown).

    `input_values` holds constant input arrays (None where not constant); `shape_values` partly
    symbolic shape tensors (see shape_values). Outputs the rules cannot type are None.
    """
    opsets = dict(opsets or (node.graph.opset_imports if node.graph is not None else {"": 17}))
    values = list(input_values) + [None] * (len(node.inputs) - len(input_values))
    shapes = list(shape_values) + [None] * (len(node.inputs) - len(shape_values))
    symbolic = _symbolic_shape_rule(node, list(input_types), shapes)
    if symbolic is not None:
        return symbolic
    return _schema_inference(node, list(input_types), values, opsets)


def infer_types(graph: Graph, overwrite: bool = False) -> int:
    """Fill in node output types in graph order; returns how many types changed.

    Without `overwrite`, a static type is kept and a known one only replaced by a more precise
    one (a static dim where there was a symbol or nothing); dtypes never change. The layout tag
    of an existing type is kept.
    """
    shapes: dict[int, ShapeTensor] = {}
    changed = 0
    for node in graph.nodes:
        shape_value = evaluate_shape(node, shapes)
        if shape_value is not None:
            shapes[id(node.outputs[0])] = shape_value
        if not overwrite and all(_is_static(v) for v in node.outputs):
            continue
        shape_inputs = [_shape_of(v, shapes) for v in node.inputs]
        inferred = infer_node(node, [_type_of(v) for v in node.inputs],
                              [_value_of(v, s) for v, s in zip(node.inputs, shape_inputs)],
                              shape_inputs, graph.opset_imports)
        for value, new in zip(node.outputs, inferred):
            if new is not None and _should_replace(value.type, new, overwrite):
                layout = value.type.layout if value.type is not None else None
                value.type = TensorType(new.dtype, new.shape, layout)
                changed += 1
    return changed


def _type_of(value: Value | None) -> TensorType | None:
    return None if value is None else value.type


def _value_of(value: Value | None, shape: ShapeTensor | None) -> np.ndarray | None:
    """The constant array of an input, or the value of a shape tensor that became static."""
    if value is None:
        return None
    if value.const is None and shape is not None and shape.is_static:
        return shape.to_array()
    return value.const


def _shape_of(value: Value | None, shapes: dict[int, ShapeTensor]) -> ShapeTensor | None:
    if value is None:
        return None
    return shapes.get(id(value)) or from_constant(value)


def _is_static(value: Value) -> bool:
    return value.type is not None and value.type.is_static


def _should_replace(old: TensorType | None, new: TensorType, overwrite: bool) -> bool:
    if old is None:
        return True
    if old == new or new.shape is None:
        return False
    if overwrite:
        return True
    if old.shape is None:
        return new.dtype == old.dtype
    return new.dtype == old.dtype and _more_precise(new.shape, old.shape)


def _more_precise(new: tuple[Dim, ...], old: tuple[Dim, ...]) -> bool:
    """Whether `new` refines `old` dim by dim (static beats symbolic beats unknown) and differs."""
    if len(new) != len(old):
        return False
    rank = {int: 2, str: 1, type(None): 0}
    return all(rank[type(n)] >= rank[type(o)] for n, o in zip(new, old)) and new != old


# --- ops that take a shape as an input: read partly symbolic shape tensors -----------------------
def _symbolic_shape_rule(node: Node, types: list[TensorType | None],
                         shapes: list[ShapeTensor | None]) -> list[TensorType | None] | None:
    """Output types for Reshape / Expand / ConstantOfShape whose shape input is partly symbolic."""
    if node.domain not in ("", "ai.onnx") or len(shapes) < 1:
        return None
    if node.op_type == "ConstantOfShape":
        shape = shapes[0]
        if shape is None or shape.is_static or shape.scalar:
            return None
        value = node.attr("value")
        dtype = DType.FLOAT if value is None else DType.from_numpy(np.asarray(value).dtype)
        return [TensorType(dtype, shape.dims)]
    if node.op_type not in ("Reshape", "Expand") or len(shapes) < 2 or types[0] is None:
        return None
    shape, data = shapes[1], types[0]
    if shape is None or shape.is_static or shape.scalar or data.shape is None:
        return None
    dims = (_reshape_dims(data.shape, shape.dims, bool(node.attr("allowzero", 0)))
            if node.op_type == "Reshape" else broadcast_dims(data.shape, shape.dims))
    return None if dims is None else [TensorType(data.dtype, dims)]


def _reshape_dims(data: tuple[Dim, ...], target: tuple[Dim, ...],
                  allowzero: bool) -> tuple[Dim, ...] | None:
    """Reshape's output dims per the spec: 0 copies the input dim (unless allowzero), one -1 is
    inferred when the other dims' product is static, a symbol stays a symbol."""
    dims: list[Dim] = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            d = data[i] if i < len(data) else None
        dims.append(d)
    if dims.count(-1) > 1:
        return None
    if -1 in dims:
        known = [d for d in dims if d != -1]
        total = math.prod(data) if all(isinstance(d, int) for d in data) else None
        rest = math.prod(known) if all(isinstance(d, int) for d in known) else None
        dims[dims.index(-1)] = total // rest if total is not None and rest else \
            _symbolic_quotient(data, known)
    return tuple(dims)


def _symbolic_quotient(data: tuple[Dim, ...], known: list[Dim]) -> Dim:
    """The -1 of a Reshape when the same symbols appear on both sides: [B, 8, 16] -> [B, -1]
    is 128. Otherwise unknown."""
    remaining = list(data)
    for d in known:
        if d in remaining:
            remaining.remove(d)
        elif isinstance(d, int) and d == 1:
            continue
        else:
            return None
    return math.prod(remaining) if all(isinstance(d, int) for d in remaining) else None


# --- the op schemas' inference functions -------------------------------------------------------
def _schema_inference(node: Node, types: list[TensorType | None],
                      values: list[np.ndarray | None],
                      opsets: Mapping[str, int]) -> list[TensorType | None]:
    from graphopt.onnx_io.exporter import node_to_proto, type_to_proto

    unknown: list[TensorType | None] = [None] * len(node.outputs)
    version = opsets.get(node.domain, opsets.get("", 1) if node.domain in ("", "ai.onnx") else 1)
    try:
        schema = onnx.defs.get_schema(node.op_type, version, node.domain)
    except onnx.defs.SchemaError:  # custom domains: their declared types are all there is
        return unknown
    type_protos, data = {}, {}
    for value, t, const in zip(node.inputs, types, values):
        if value is None:
            continue
        if t is None or t.dtype == DType.UNDEFINED:
            return unknown  # the schema's inference needs every present input's type
        type_protos[value.name] = type_to_proto(t)
        if const is not None and const.dtype != object and const.size <= INFERENCE_DATA_ELEMENTS:
            data[value.name] = numpy_helper.from_array(np.asarray(const), value.name)
    opset_ids = [onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]
    try:
        result = onnx.shape_inference.infer_node_outputs(
            schema, node_to_proto(node), type_protos, data, opset_imports=opset_ids)
    except Exception as err:  # noqa: BLE001 - onnx raises its own assorted types
        log.debug("shape inference failed for %s: %s", node.describe(), err)
        return unknown
    return [_tensor_type(result.get(v.name)) for v in node.outputs]


def _tensor_type(proto: onnx.TypeProto | None) -> TensorType | None:
    if proto is None or not proto.HasField("tensor_type") or not proto.tensor_type.elem_type:
        return None
    from graphopt.onnx_io.importer import tensor_type_from_proto

    return tensor_type_from_proto(proto)
