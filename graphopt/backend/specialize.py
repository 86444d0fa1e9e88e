"""Specialize a graph to concrete input shapes: static shapes everywhere, shape math folded.

For each node in order:
  * Shape/Size read only their input's (now concrete) shape: they become constants;
  * a deterministic node whose inputs are all constants is evaluated once with onnx's reference
    implementation (this folds Shape -> Gather -> Concat -> Reshape chains, ConstantOfShape
    weights, position ids...), so the C code never sees shape arithmetic;
  * any other node becomes a runtime `Step`; its output types come from onnx's per-node shape
    inference fed with the concrete input shapes and the small constant inputs.

Folding uses the reference implementation of the ONNX spec, so it is exact by definition. Steps
whose outputs nobody reads are dropped at the end.

Value inputs: a small graph input that feeds an input an emitter reads at compile time (Slice
starts, Reduce axes, Reshape shape, Resize sizes... see `value_inputs`) is specialized on its
value as well as its shape: it enters the Program as a constant, so the emitters see it exactly
as if the model had stored it as an initializer. The caller keys compiled programs on those
values (api.CompiledModel), so a run with other values builds another program.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.errors import UnsupportedError
from graphopt.ir import ops
from graphopt.ir.graph import Graph, Node
from graphopt.ir.types import DType
from graphopt.backend.program import Program, Step, Tensor, step_reads

log = logging.getLogger(__name__)

# Constant inputs up to this many elements are handed to shape inference (Reshape's shape...).
INFERENCE_DATA_ELEMENTS = 1 << 16
# Graph inputs up to this many elements may be specialized on their value (see value_inputs).
VALUE_INPUT_ELEMENTS = 64
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def specialize(graph: Graph, input_shapes: Mapping[str, Sequence[int]],
               has_emitter: Callable[[Node], bool] = lambda node: False,
               input_values: Mapping[str, np.ndarray] | None = None) -> Program:
    """The Program computing `graph` for inputs of exactly `input_shapes` (name -> shape).

    `has_emitter` tells whether a backend can run a node; it lets nodes in custom domains
    through when an emitter exists for them (their output types then come from the IR).
    `input_values` (name -> array) are graph inputs specialized on their value: they are
    constants of the Program (the caller must key the result on them).
    Raises UnsupportedError for control flow, custom ops without an emitter, and outputs whose
    shape depends on input data.
    """
    env: dict[str, Tensor] = {}
    inputs = []
    values = input_values or {}
    for value in graph.inputs:
        shape = tuple(int(d) for d in input_shapes[value.name])
        const = values.get(value.name)
        tensor = Tensor(value.name, value.type.dtype, shape,
                        None if const is None else np.asarray(const).reshape(shape))
        env[value.name] = tensor
        inputs.append(tensor)
    for name, value in graph.initializers.items():
        env[name] = Tensor(name, value.type.dtype, tuple(value.const.shape), value.const)

    steps: list[Step] = []
    for node in graph.nodes:
        args = [None if v is None else env[v.name] for v in node.inputs]
        _check_runnable(node, has_emitter)
        outputs = _fold(node, args, graph) if _foldable(node, args) else None
        if outputs is None:
            outputs = _infer_outputs(node, args, graph)
            steps.append(Step(node, args, outputs))
        for value, tensor in zip(node.outputs, outputs):
            env[value.name] = tensor
    program = Program(inputs, [env[v.name] for v in graph.outputs], steps, graph.opset)
    _drop_dead_steps(program)
    return program


def value_inputs(graph: Graph, const_inputs: Callable[[Node], Sequence[int]]) -> list[int]:
    """Positions of the graph inputs to specialize on their value.

    An input qualifies when its declared shape is static with at most VALUE_INPUT_ELEMENTS
    elements and some node reads it at a position its emitter needs as a compile-time constant
    (`const_inputs(node)`: axes, pads, shape, repeats...). Specializing on the value is exact:
    the program built for one value is only ever run with that value.
    """
    chosen = []
    for position, value in enumerate(graph.inputs):
        shape = value.type.shape if value.type is not None else None
        if shape is None or not all(isinstance(d, int) for d in shape):
            continue
        if int(np.prod(shape, dtype=np.int64)) > VALUE_INPUT_ELEMENTS:
            continue
        if any(use.index in const_inputs(use.node) for use in value.uses()):
            chosen.append(position)
    return chosen


def check_emitters(graph: Graph, static_inputs: Sequence[str],
                   has_emitter: Callable[[Node], bool]) -> None:
    """Refuse, before any specialization exists, a node that will need an emitter and has none.

    A node whose inputs are all constants (initializers, `static_inputs`, or outputs of such
    nodes) or that reads only shapes is folded at specialization; every other node runs as C.
    """
    static = set(graph.initializers) | set(static_inputs)
    for node in graph.nodes:
        _check_runnable(node, has_emitter)
        if ops.is_a(node, ops.SHAPE_ONLY) or (
                not ops.is_a(node, ops.NONDETERMINISTIC)
                and all(v is None or v.name in static for v in node.inputs)):
            static.update(v.name for v in node.outputs)
        elif not has_emitter(node):
            raise UnsupportedError(f"{node.describe()}: no C emitter for op '{node.op_type}'; "
                                   "the C backend cannot run it")


def _check_runnable(node: Node, has_emitter: Callable[[Node], bool]) -> None:
    if ops.is_a(node, ops.CONTROL_FLOW) or node.subgraphs:
        raise UnsupportedError(f"{node.describe()}: control flow (If/Loop/Scan) is not supported "
                               "by the C backend; unroll or fold it before compiling")
    if node.domain not in STANDARD_DOMAINS and not has_emitter(node):
        raise UnsupportedError(f"{node.describe()}: op '{node.op_type}' of custom domain "
                               f"'{node.domain}' has no C emitter; the C backend runs standard "
                               "ONNX ops only")


def _foldable(node: Node, args: list[Tensor | None]) -> bool:
    if ops.is_a(node, ops.SHAPE_ONLY):
        return True
    if ops.is_a(node, ops.NONDETERMINISTIC) or node.domain not in STANDARD_DOMAINS:
        return False
    return all(t is None or t.is_const for t in args)


def _fold(node: Node, args: list[Tensor | None], graph: Graph) -> list[Tensor] | None:
    """Outputs as constants, or None when the reference implementation cannot evaluate it."""
    if node.op_type == "Shape":
        shape = args[0].shape
        start, end = node.attr("start", 0), node.attr("end", None)
        data = np.array(shape[start:end] if end is not None else shape[start:], dtype=np.int64)
        return [Tensor(node.outputs[0].name, DType.INT64, data.shape, data)]
    if node.op_type == "Size":
        data = np.array(args[0].size, dtype=np.int64)
        return [Tensor(node.outputs[0].name, DType.INT64, (), data)]
    from onnx.reference import ReferenceEvaluator

    from graphopt.onnx_io.exporter import node_to_proto

    proto = node_to_proto(node)
    feeds = {t.name: t.const for t in args if t is not None}
    try:
        evaluator = ReferenceEvaluator(proto, opsets=dict(graph.opset_imports))
        results = evaluator.run(None, feeds)
    except Exception as err:  # the reference raises assorted types; fall back to running it
        log.debug("cannot fold %s: %s", node.describe(), err)
        return None
    outputs = []
    for value, data in zip(node.outputs, results):
        data = np.asarray(data)
        if data.dtype == object:
            return None
        outputs.append(Tensor(value.name, DType.from_numpy(data.dtype), tuple(data.shape), data))
    return outputs


def _infer_outputs(node: Node, args: list[Tensor | None], graph: Graph) -> list[Tensor]:
    """Concrete output tensors from onnx per-node inference, else from static IR types."""
    inferred = _onnx_infer(node, args, graph)
    outputs = []
    for value in node.outputs:
        found = inferred.get(value.name)
        if found is None and value.type is not None and value.type.is_static:
            found = (value.type.dtype, tuple(int(d) for d in value.type.shape))
        if found is None:
            shapes = ", ".join("-" if t is None else t.describe() for t in args)
            raise UnsupportedError(f"{node.describe()}: the shape of output '{value.name}' is not "
                                   f"known for inputs ({shapes}); the C backend needs shapes "
                                   "that do not depend on input data")
        outputs.append(Tensor(value.name, found[0], found[1]))
    return outputs


def _onnx_infer(node: Node, args: list[Tensor | None],
                graph: Graph) -> dict[str, tuple[DType, tuple[int, ...]]]:
    from graphopt.onnx_io.exporter import node_to_proto

    version = graph.opset_imports.get(node.domain, graph.opset if node.domain == "" else 1)
    try:
        schema = onnx.defs.get_schema(node.op_type, version, node.domain)
    except onnx.defs.SchemaError:
        return {}
    types, data = {}, {}
    for t in args:
        if t is None:
            continue
        types[t.name] = onnx.helper.make_tensor_type_proto(int(t.dtype), list(t.shape))
        if t.is_const and t.size <= INFERENCE_DATA_ELEMENTS and t.const.dtype != object:
            data[t.name] = numpy_helper.from_array(np.asarray(t.const), t.name)
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in graph.opset_imports.items()]
    try:
        result = onnx.shape_inference.infer_node_outputs(schema, node_to_proto(node), types, data,
                                                         opset_imports=opsets)
    except Exception as err:  # inference errors are reported as "shape unknown" by the caller
        log.debug("shape inference failed for %s: %s", node.describe(), err)
        return {}
    found = {}
    for name, proto in result.items():
        tensor = proto.tensor_type
        if not proto.HasField("tensor_type") or not tensor.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if all(d is not None for d in dims) and tensor.elem_type:
            found[name] = (DType(tensor.elem_type), tuple(int(d) for d in dims))
    return found


def _drop_dead_steps(program: Program) -> None:
    """Remove steps none of whose outputs reach a graph output."""
    live = {id(t) for t in program.outputs}
    kept = []
    for step in reversed(program.steps):
        if any(id(t) in live for t in step.outputs):
            kept.append(step)
            live.update(id(t) for t in step_reads(step))
    program.steps = kept[::-1]

