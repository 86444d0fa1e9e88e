"""Raising a model's default-domain opset node by node, on the IR.

onnx's version converter costs ~30 ms before it looks at a model (it builds its table of ~700
adapters on every call), then runs whole-model shape inference and a proto round trip. Most
nodes of an old model need none of that: their op has no new definition up to the target opset,
or every new definition on the way only admits more types, negative axes, or an optional
attribute or input whose default keeps the old behaviour (`COMPATIBLE_DEFINITIONS`; for opsets
up to 13 these are exactly the steps onnx's converter registers as `CompatibleAdapter` in
onnx/version_converter/convert.h). The few real conversions old CNN exports need are written
here as the converter's adapters do them:

  * Squeeze/Unsqueeze/ReduceSum-13: the `axes` attribute becomes a constant input;
  * Dropout-12: the `ratio` attribute (default 0.5) becomes a constant float input;
  * Softmax/LogSoftmax-13: the axis is the last one -> `axis=-1`; otherwise the old definition
    (coerce to 2-D at `axis`) is spelled Reshape(Softmax(Flatten(x, axis), -1), Shape(x)).

`upgrade_plan` says whether a model can go this way; a model with any other change (or
subgraphs, model-local functions, other domains) goes through onnx's converter whole.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable

import numpy as np
import onnx

from graphopt.evaluator.infer import infer_node
from graphopt.ir.axes import normalize_axis
from graphopt.ir.graph import Graph, Node

# (op, version): definitions that mean the same as the op's previous one for every model valid
# at the previous one. Versions <= 13 are the converter's CompatibleAdapter steps, except
# Hardmax-13, which changed its axis semantics like Softmax-13 (the converter relabels it
# anyway; graphopt leaves such a model to the converter rather than repeat that).
COMPATIBLE_DEFINITIONS = frozenset({
    *((op, 8) for op in ("Max", "MaxPool", "Mean", "Min", "Sum")),
    *((op, 9) for op in ("Cast", "Constant", "Flatten", "Gemm", "Greater", "Less", "MatMul",
                         "PRelu")),
    *((op, 10) for op in ("AveragePool", "Dropout", "MaxPool")),
    *((op, 11) for op in (
        "ArgMax", "ArgMin", "AveragePool", "Compress", "Concat", "Constant", "Conv",
        "ConvTranspose", "DepthToSpace", "Equal", "Flatten", "Gather", "Gemm", "Hardmax", "If",
        "LogSoftmax", "Loop", "LpPool", "MaxPool", "MaxUnpool", "NonMaxSuppression", "OneHot",
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Scan", "Slice", "Softmax",
        "Split", "Squeeze", "TopK", "Unsqueeze")),
    *((op, 12) for op in ("ArgMax", "ArgMin", "BatchNormalization", "Clip", "Constant",
                          "GatherND", "Max", "MaxPool", "Min", "Pow", "ReduceMax",
                          "ReduceMin")),
    *((op, 13) for op in (
        "Abs", "Add", "ArgMax", "ArgMin", "Cast", "Ceil", "Clip", "Concat", "Constant",
        "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Equal", "Erf", "Exp", "Expand",
        "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gemm", "Greater",
        "Identity", "If", "IsNaN", "LRN", "Less", "Log", "Loop", "MatMul", "Max", "Mean",
        "MeanVarianceNormalization", "Min", "Mod", "Mul", "Neg", "NegativeLogLikelihoodLoss",
        "NonZero", "Pad", "Pow", "QuantizeLinear", "Reciprocal", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
        "ReduceProd", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ScatterElements",
        "ScatterND", "Shape", "Sigmoid", "Sign", "Size", "Slice", "SoftmaxCrossEntropyLoss",
        "SpaceToDepth", "Sqrt", "Sub", "Sum", "Tanh", "Tile", "Transpose")),
    # 18-20: only new types, optional inputs, or attributes whose defaults keep the old meaning.
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
# The lowest opset the node-by-node upgrade starts from (COMPATIBLE_DEFINITIONS covers 8 on).
MIN_SOURCE_OPSET = 7

Adapter = Callable[[Graph, Node], None]
ORIGIN = "opset-upgrade"


@functools.cache
def _history() -> dict[str, tuple[int, ...]]:
    """op -> every since_version of its default-domain definitions."""
    versions: dict[str, set[int]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain == "":
            versions.setdefault(schema.name, set()).add(schema.since_version)
    return {op: tuple(sorted(v)) for op, v in versions.items()}


@functools.cache
def definitions_between(op: str, low: int, high: int) -> tuple[int, ...] | None:
    """Versions of default-domain `op` defined in (low, high], or None when onnx does not know
    the op at opset `low`."""
    try:
        onnx.defs.get_schema(op, low, "")
    except onnx.defs.SchemaError:
        return None
    return tuple(v for v in _history().get(op, ()) if low < v <= high)


# --- the converter's adapters, on the IR ----------------------------------------------------------
def _attribute_to_input(name: str, dtype: type, default: object = None) -> Adapter:
    """Move attribute `name` to a new last input holding it as a constant (onnx's
    AxesAttributeToInput and Dropout_11_12); without the attribute, `default` (None: nothing)."""
    def adapt(graph: Graph, node: Node) -> None:
        value = node.attrs.pop(name, default)
        if value is None:
            return
        const = graph.add_constant(np.array(value, dtype=dtype), f"{node.name}_{name}")
        node.set_inputs([*node.inputs, const])

    return adapt


def _softmax_12_13(graph: Graph, node: Node) -> None:
    """Softmax-1..11 coerces its input to 2-D at `axis`; Softmax-13 works along `axis` alone.
    Like onnx's Softmax_12_13 adapter: the last axis is the same either way (axis=-1), any other
    (or an unknown rank) becomes Flatten -> Softmax(axis=-1) -> Reshape to the input's shape."""
    x, out = node.input(0), node.outputs[0]
    rank = 0 if x.shape is None else len(x.shape)  # the adapter's rank when it is unknown
    axis = normalize_axis(int(node.attrs.get("axis", 1)), rank)
    node.attrs["axis"] = -1
    if axis == rank - 1:
        return
    shape = graph.make_node("Shape", [x], before=node, origin=ORIGIN)
    flatten = graph.make_node("Flatten", [x], {"axis": axis}, before=node, origin=ORIGIN)
    node.replace_input(0, flatten.outputs[0])
    public, out_type = out.name, out.type
    graph.rename_value(out, graph._unused_name(f"{public}_intermediate"))
    reshape = graph.make_node("Reshape", [out, shape.outputs[0]], outputs=[public],
                              types=[out_type], after=node, origin=ORIGIN)
    result = reshape.outputs[0]
    graph.replace_all_uses_with(out, result, replace_graph_outputs=False)
    reshape.replace_input(0, out)
    graph.outputs = [result if v is out else v for v in graph.outputs]
    for new in (shape, flatten, node):
        _infer_types(new, overwrite=True)


ADAPTERS: dict[tuple[str, int], Adapter] = {
    ("Squeeze", 13): _attribute_to_input("axes", np.int64),
    ("Unsqueeze", 13): _attribute_to_input("axes", np.int64),
    ("ReduceSum", 13): _attribute_to_input("axes", np.int64),
    ("Dropout", 12): _attribute_to_input("ratio", np.float32, 0.5),
    ("Softmax", 13): _softmax_12_13,
    ("LogSoftmax", 13): _softmax_12_13,
}


# --- planning and running ----------------------------------------------------------------------
def upgrade_plan(model: onnx.ModelProto, source: int, target: int) -> bool:
    """Whether `upgrade_graph` can raise this model from `source` to `target` by itself."""
    if source < MIN_SOURCE_OPSET or model.functions:
        return False
    for op, domain, has_subgraph in _op_kinds(model.graph.node):
        if domain not in ("", "ai.onnx") or has_subgraph:
            return False
        versions = definitions_between(op, source, target)
        if versions is None or any((op, v) not in COMPATIBLE_DEFINITIONS
                                   and (op, v) not in ADAPTERS for v in versions):
            return False
    return True


_SUBGRAPH_KINDS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _op_kinds(nodes: Iterable[onnx.NodeProto]) -> set[tuple[str, str, bool]]:
    """(op type, domain, has a subgraph attribute) of every node (plain loops: this walks
    every attribute of every model imported below the target opset)."""
    kinds = set()
    for node in nodes:
        has_subgraph = False
        for attr in node.attribute:
            if attr.type in _SUBGRAPH_KINDS:
                has_subgraph = True
                break
        kinds.add((node.op_type, node.domain, has_subgraph))
    return kinds


def upgrade_graph(graph: Graph, source: int, target: int) -> None:
    """Raise `graph` (imported at opset `source`, `upgrade_plan` said yes) to `target`.

    Output types the source opset's inference left unknown are inferred at the target (the
    mask of Dropout-7 has no type at opset 7, a bool one from Dropout-10 on)."""
    graph.opset_imports[""] = target
    for node in list(graph.nodes):
        versions = definitions_between(node.op_type, source, target) or ()
        for version in versions:
            adapter = ADAPTERS.get((node.op_type, version))
            if adapter is not None:
                adapter(graph, node)
        if versions and any(out.type is None for out in node.outputs):
            _infer_types(node, overwrite=False)


def _infer_types(node: Node, overwrite: bool) -> None:
    """Set the node's output types from graphopt's shape engine (only unknown ones unless
    `overwrite`)."""
    inferred = infer_node(node, [None if v is None else v.type for v in node.inputs],
                          [None if v is None else v.const for v in node.inputs])
    for value, new in zip(node.outputs, inferred):
        if overwrite or value.type is None:
            value.type = new
