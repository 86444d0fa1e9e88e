"""ONNX ModelProto -> graphopt Graph.

Constant nodes become initializers, types come from value_info plus onnx shape inference,
control-flow bodies are kept verbatim (their outer-scope reads recorded as implicit inputs),
and opsets below the supported range are upgraded node by node (onnx_io.opset_upgrade), with
onnx's version converter for what that cannot do.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.errors import BadInputError, UnsupportedError
from graphopt.ir.graph import Graph, ModelInfo, Node, Value
from graphopt.ir.types import Dim, DType, TensorType
from graphopt.ir.validate import unknown_op_problem, validate_graph
from graphopt.onnx_io.opset_upgrade import upgrade_graph, upgrade_plan
from graphopt.onnx_io.shapes import InferredTypes, infer_value_types

log = logging.getLogger(__name__)

MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()


_DTYPES = {int(d): d for d in DType}


def tensor_type_from_proto(type_proto: onnx.TypeProto) -> TensorType | None:
    if not type_proto.HasField("tensor_type"):
        return None
    tensor = type_proto.tensor_type
    shape: tuple[Dim, ...] | None = None
    if tensor.HasField("shape"):
        shape = tuple(_dim(d) for d in tensor.shape.dim)
    return TensorType(_DTYPES.get(tensor.elem_type) or DType(tensor.elem_type), shape)


def _dim(dim: onnx.TensorShapeProto.Dimension) -> Dim:
    kind = dim.WhichOneof("value")
    return dim.dim_value if kind == "dim_value" else dim.dim_param if kind else None


_A = onnx.AttributeProto
_T = onnx.TensorProto
# Plain numeric element types whose inline data numpy reads as is: (dtype, typed field).
_PLAIN_TENSORS = {_T.FLOAT: (np.float32, "float_data"), _T.DOUBLE: (np.float64, "double_data"),
                  _T.INT64: (np.int64, "int64_data"), _T.INT32: (np.int32, "int32_data"),
                  _T.UINT64: (np.uint64, "uint64_data")}


def tensor_to_array(tensor: onnx.TensorProto) -> np.ndarray:
    """numpy_helper.to_array, read directly for inline data of the plain numeric types (most
    tensors of a model; to_array's general path costs more than the rest of their import)."""
    plain = _PLAIN_TENSORS.get(tensor.data_type)
    if plain is None or sys.byteorder != "little" or tensor.data_location != _T.DEFAULT \
            or tensor.HasField("segment"):
        return numpy_helper.to_array(tensor)
    dims = tuple(tensor.dims)
    if tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype=plain[0]).reshape(dims)
    data = getattr(tensor, plain[1])
    # A short field (a generator's fill value, a shape) converts faster through a list; numpy
    # reads a long one faster from the protobuf container itself.
    return np.array(list(data) if len(data) <= 16 else data, dtype=plain[0]).reshape(dims)


def attribute_to_python(attr: onnx.AttributeProto) -> Any:
    kind = attr.type
    # The common kinds first, read from their field: onnx.helper.get_attribute_value tests
    # the kinds one by one, a real cost on models with thousands of nodes.
    if kind == _A.INTS:
        return list(attr.ints)
    if kind == _A.INT:
        return attr.i
    if kind == _A.FLOAT:
        return attr.f
    if kind == _A.FLOATS:
        return list(attr.floats)
    if kind == _A.STRING:
        return attr.s.decode("utf-8", errors="surrogateescape")
    if kind == _A.TENSOR:
        return tensor_to_array(attr.t)
    if kind == _A.TENSORS:
        return [tensor_to_array(t) for t in attr.tensors]
    if kind == _A.GRAPH:
        return attr.g
    if kind == _A.GRAPHS:
        return list(attr.graphs)
    if kind in (_A.SPARSE_TENSOR, _A.SPARSE_TENSORS, _A.TYPE_PROTO, _A.TYPE_PROTOS):
        return attr  # rare kinds are carried verbatim
    value = onnx.helper.get_attribute_value(attr)
    if kind == _A.STRINGS:
        return [v.decode("utf-8", errors="surrogateescape") for v in value]
    return value


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The array a Constant node produces, or None for forms kept as nodes (sparse, ref attrs)."""
    for attr in node.attribute:
        if attr.ref_attr_name:
            return None
        if attr.name == "value":
            return tensor_to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
        if attr.name == "value_string":
            return np.array(attr.s.decode(), dtype=object)
        if attr.name == "value_strings":
            return np.array([s.decode() for s in attr.strings], dtype=object)
    return None


def subgraph_outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads that it does not define itself (its implicit inputs)."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for attr in node.attribute:
            for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                used |= subgraph_outer_names(body)
        defined.update(n for n in node.output if n)
    used.update(o.name for o in graph.output)
    return used - defined


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _upgrade_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int | None]:
    """The model at an opset graphopt supports, and the opset `upgrade_graph` must still raise
    the imported graph from (None when nothing is left to do). onnx's version converter runs
    only when the node-by-node upgrade (graphopt.onnx_io.opset_upgrade) cannot do the job."""
    version = _default_opset(model)
    if version is None:
        return model, None
    if version > MAX_OPSET:
        raise UnsupportedError(f"the model uses opset {version}; this onnx package knows up to "
                               f"{MAX_OPSET}. Upgrade the onnx package or export at a lower opset")
    if version >= MIN_OPSET:
        return model, None
    if upgrade_plan(model, version, MIN_OPSET):
        log.info("upgrading the model from opset %d to %d node by node", version, MIN_OPSET)
        return model, version
    log.info("converting the model from opset %d to %d", version, MIN_OPSET)
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET), None
    except Exception as err:  # the converter raises bare RuntimeError/ValueError variants
        raise UnsupportedError(f"the model uses opset {version} (below {MIN_OPSET}) and onnx's "
                               f"version converter could not upgrade it: "
                               f"{str(err).splitlines()[0][:160]}") from None


def import_model(model: onnx.ModelProto, fold_input_initializers: bool = False,
                 validate: bool = True) -> Graph:
    """Lower a loaded ModelProto (external data already in memory) into a Graph.

    An initializer that is also a graph input is an overridable default when the model's IR
    version is 4 or more: it stays a graph input (`Value.default` holds the initializer) so no
    pass folds it. `fold_input_initializers=True` makes such values constants instead (always
    the case for IR 3, where every initializer had to be listed as an input). With `validate`,
    a model that can never run (see graphopt.ir.validate) raises BadInputError here, once.
    """
    _check_known_ops(model)
    overridable = _overridable_inputs(model)
    if fold_input_initializers and overridable:
        log.warning("folding %d initializer(s) that are also graph inputs as constants "
                    "(--fold-input-initializers): %s; the output no longer takes them as inputs",
                    len(overridable), ", ".join(sorted(overridable)[:5])
                    + (" ..." if len(overridable) > 5 else ""))
        overridable = set()
    model, upgrade_from = _upgrade_opset(model)
    types = infer_value_types(model, overridable)
    # Nodes in file order when that is a valid order (nearly always: then no sorting walk);
    # a node that reads a value a later node makes sends the import back to a sorted order.
    try:
        graph = _build_graph(model, overridable, types, model.graph.node, file_order=True)
    except _OutOfOrder:
        graph = _build_graph(model, overridable, types, _sorted_nodes(model.graph),
                             file_order=False)
    _unique_node_names(graph)
    if upgrade_from is not None:
        upgrade_graph(graph, upgrade_from, MIN_OPSET)
    if validate:
        validate_graph(graph)
    if types.failure:
        log.warning("onnx shape inference failed (%s); using declared types only", types.failure)
    return graph


class _OutOfOrder(Exception):
    """A node reads a value that a later node produces: the file's node order is not valid."""


def _build_graph(model: onnx.ModelProto, overridable: set[str], types: InferredTypes,
                 nodes: Iterable[onnx.NodeProto], file_order: bool) -> Graph:
    """The Graph of `model` with its nodes taken in the order of `nodes`. With `file_order`,
    _OutOfOrder when that order reads a value before the node producing it."""
    onnx_graph = model.graph
    graph = Graph(_opsets(model))
    graph.info = ModelInfo(
        ir_version=model.ir_version, producer_name=model.producer_name,
        producer_version=model.producer_version, domain=model.domain,
        model_version=model.model_version, doc_string=model.doc_string,
        graph_name=onnx_graph.name or "graph", graph_doc=onnx_graph.doc_string,
        metadata_props={p.key: p.value for p in model.metadata_props},
        functions=list(model.functions))

    values: dict[str, Value] = {}

    def type_of(name: str) -> TensorType | None:
        return types.get(name)

    defaults: dict[str, np.ndarray] = {}
    for tensor in onnx_graph.initializer:
        array = _initializer_array(tensor)
        if tensor.name in overridable:
            defaults[tensor.name] = array
            continue
        dtype = _DTYPES.get(tensor.data_type) or DType(tensor.data_type)
        value = Value(tensor.name, TensorType(dtype, tuple(array.shape)), array)
        value.doc = tensor.doc_string
        graph._register_value(value)
        graph.initializers[tensor.name] = value
        values[tensor.name] = value
    if onnx_graph.sparse_initializer:
        raise UnsupportedError("sparse initializers are not supported; densify them first")

    for proto in onnx_graph.input:
        if proto.name in values:
            continue  # an initializer listed as input (IR < 4, or folding asked): a constant
        value = Value(proto.name, tensor_type_from_proto(proto.type))
        value.default = defaults.get(proto.name)
        if value.type is None and value.default is not None:
            value.type = TensorType(DType.from_numpy(value.default.dtype), value.default.shape)
        elif value.type is None:
            value.onnx_type = proto.type
        value.doc = proto.doc_string
        graph._register_value(value)
        graph.inputs.append(value)
        values[proto.name] = value

    produced: set[str] = set()  # every node output name, filled at the first unknown read

    def made_later(names: Iterable[str]) -> bool:
        if not produced:
            produced.update(n for node in onnx_graph.node for n in node.output if n)
        return file_order and not produced.isdisjoint(names)

    def lookup(name: str, reader: onnx.NodeProto) -> Value | None:
        if not name:
            return None
        if name not in values:
            if made_later([name]):
                raise _OutOfOrder(name)
            raise BadInputError(f"node '{reader.name}' ({reader.op_type}) reads '{name}', which no "
                                "node, input or initializer defines (or the graph is not sorted)")
        return values[name]

    for proto in nodes:
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
            array = constant_node_value(proto)
            if array is not None:
                value = Value(proto.output[0], TensorType(DType.from_numpy(array.dtype)
                                                          if array.dtype != object else DType.STRING,
                                                          tuple(array.shape)), array)
                graph._register_value(value)
                graph.initializers[value.name] = value
                values[value.name] = value
                continue
        inputs = [lookup(n, proto) for n in proto.input]
        outputs = []
        for name in proto.output:
            # an omitted output gets a name nobody uses; graph.append registers it
            value = Value(name or graph._unused_name(f"{proto.op_type.lower()}_unused{len(outputs)}"),
                          type_of(name))
            if value.type is None and name in types.onnx_types:
                value.onnx_type = types.onnx_types[name]
            outputs.append(value)
        attrs = {a.name: attribute_to_python(a) for a in proto.attribute}
        node = Node(proto.op_type, inputs, outputs, attrs, domain=proto.domain)
        node.doc = proto.doc_string
        outer = set()
        for body in node.subgraphs:
            outer |= subgraph_outer_names(body)
        if outer:
            if made_later(outer - values.keys()):
                raise _OutOfOrder(proto.name)
            node.set_implicit_inputs(values[n] for n in sorted(outer) if n in values)
        graph.append(node)
        node.name = proto.name  # made unique once every value name is known (_unique_node_names)
        for out in outputs:
            values[out.name] = out

    for proto in onnx_graph.output:
        if proto.name not in values:
            raise BadInputError(f"graph output '{proto.name}' is not produced by the graph")
        value = values[proto.name]
        if value.type is None:
            value.type = tensor_type_from_proto(proto.type)
        graph.outputs.append(value)
    return graph


def _check_known_ops(model: onnx.ModelProto) -> None:
    """BadInputError for an op the default domain does not define, before the version converter
    (which fails on one with a less useful message) sees the model."""
    local = {(f.domain, f.name) for f in model.functions}
    opsets = _opsets(model)
    for node in model.graph.node:
        if (node.domain, node.op_type) in local:
            continue
        problem = unknown_op_problem(node.domain, node.op_type, opsets.get(node.domain, 0))
        if problem:
            label = f"node '{node.name}'" if node.name else "a node"
            raise BadInputError(f"{label} ({node.op_type}): {problem}; the model cannot run")


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    """The model's opset imports by domain ("ai.onnx" spelled "", as in Graph.opset_imports)."""
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}


def _overridable_inputs(model: onnx.ModelProto) -> set[str]:
    """Names of initializers that are also graph inputs, which IR >= 4 makes overridable."""
    if model.ir_version < 4:
        return set()
    inputs = {v.name for v in model.graph.input}
    return {t.name for t in model.graph.initializer if t.name in inputs}


def _initializer_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The initializer's data; BadInputError for negative dims or data of the wrong size."""
    if any(d < 0 for d in tensor.dims):
        raise BadInputError(f"initializer '{tensor.name}' has negative dims {list(tensor.dims)}; "
                            "a tensor's dims must be >= 0")
    try:
        return tensor_to_array(tensor)
    except Exception as err:
        raise BadInputError(f"initializer '{tensor.name}' (dims {list(tensor.dims)}) cannot be "
                            f"read: {str(err).splitlines()[0][:160]}") from None


def _unique_node_names(graph: Graph) -> None:
    """Give every node a unique, non-empty name: a duplicate or empty name (valid protobuf, but
    ambiguous in messages and tools) becomes a fresh one. Runs after all value names are
    registered, so a fresh node name never takes a name a value of the model uses."""
    graph._names |= {node.name for node in graph.nodes if node.name}
    seen: set[str] = set()
    for node in graph.nodes:
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        original = node.name
        node.name = graph.fresh_name(original or node.op_type)
        seen.add(node.name)
        log.debug("renamed %s node %r to %r (duplicate or empty name)", node.op_type, original,
                  node.name)


def _sorted_nodes(onnx_graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in a valid topological order (some exporters write them unsorted)."""
    produced = {n for node in onnx_graph.node for n in node.output if n}
    available = {v.name for v in onnx_graph.input} | {t.name for t in onnx_graph.initializer}
    pending = list(onnx_graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        remaining = []
        for node in pending:
            reads = [n for n in node.input if n]
            for attr in node.attribute:
                for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                    reads.extend(subgraph_outer_names(body) & produced)
            if all(n in available or n not in produced for n in reads):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            names = ", ".join(f"{n.op_type} '{n.name}'" for n in remaining[:3])
            raise BadInputError(f"the graph has a cycle or reads undefined values near: {names}")
        pending = remaining
    return ordered
