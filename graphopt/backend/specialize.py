"""Specialize a graph to concrete input shapes: static shapes everywhere, shape math folded.

For each node in order:
  * Shape/Size read only their input's (now concrete) shape: they become constants;
  * a deterministic node whose inputs are all constants is evaluated once by graphopt's constant
    evaluator, the same one `fold-constants` uses (this folds Shape -> Gather -> Concat -> Reshape
    chains, ConstantOfShape weights, position ids...), so the C code never sees shape arithmetic;
  * any other node becomes a runtime `Step`; its output types come from graphopt's shape engine
    (graphopt.evaluator.infer) fed with the concrete input shapes and the constant inputs.

Steps whose outputs nobody reads are dropped at the end.

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

from graphopt.errors import UnsupportedError
from graphopt.evaluator import evaluate_node
from graphopt.evaluator.infer import infer_node
from graphopt.ir import ops
from graphopt.ir.graph import Graph, Node
from graphopt.ir.types import DType, TensorType
from graphopt.backend.functions import function_body, has_function_body, taken_branch
from graphopt.backend.program import Program, Step, Tensor, step_reads

log = logging.getLogger(__name__)

# Graph inputs up to this many elements may be specialized on their value (see value_inputs).
VALUE_INPUT_ELEMENTS = 64
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def specialize(graph: Graph, input_shapes: Mapping[str, Sequence[int]],
               has_emitter: Callable[[Node], bool] = lambda node: False,
               input_values: Mapping[str, np.ndarray] | None = None, fold: bool = True) -> Program:
    """The Program computing `graph` for inputs of exactly `input_shapes` (name -> shape).

    `has_emitter` tells whether a backend can run a node; it lets nodes in custom domains
    through when an emitter exists for them (their output types then come from the IR).
    `input_values` (name -> array) are graph inputs specialized on their value: they are
    constants of the Program (the caller must key the result on them). fold=False folds only
    Shape/Size, so nodes with constant inputs run as steps (to test their emitters).
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
    _specialize_nodes(graph, env, steps, has_emitter, fold)
    program = Program(inputs, [env[v.name] for v in graph.outputs], steps, graph.opset)
    _drop_dead_steps(program)
    return program


def _specialize_nodes(graph: Graph, env: dict[str, Tensor], steps: list[Step],
                      has_emitter: Callable[[Node], bool], fold: bool) -> None:
    """Fold, expand or append as steps the nodes of `graph`, reading and extending `env`."""
    for node in graph.nodes:
        args = [None if v is None else env[v.name] for v in node.inputs]
        if _is_static_if(node, args):
            _specialize_branch(node, args[0], env, steps, has_emitter, fold, graph)
            continue
        _check_control_flow(node)
        foldable = _foldable(node, args) if fold else ops.is_a(node, ops.SHAPE_ONLY)
        outputs = _fold(node, args, graph) if foldable else None
        if outputs is None and not has_emitter(node):
            body = _function_body(node, args, graph)
            if body is not None:  # the op's definition as ONNX ops: compile those instead
                for name, value in body.initializers.items():
                    env[name] = Tensor(name, value.type.dtype, tuple(value.const.shape),
                                       value.const)
                _specialize_nodes(body, env, steps, has_emitter, fold)
                continue
        if outputs is None:
            _check_domain(node, has_emitter)
            outputs = _infer_outputs(node, args, graph)
            steps.append(Step(node, args, outputs))
        for value, tensor in zip(node.outputs, outputs):
            env[value.name] = tensor


def _is_static_if(node: Node, args: list[Tensor | None]) -> bool:
    return node.op_type == "If" and node.domain in ("", "ai.onnx") and bool(args) and \
        args[0] is not None and args[0].is_const


def _specialize_branch(node: Node, condition: Tensor, env: dict[str, Tensor], steps: list[Step],
                       has_emitter: Callable[[Node], bool], fold: bool, graph: Graph) -> None:
    """An If with a constant condition: specialize the branch it takes in its place."""
    types = {name: onnx.helper.make_tensor_type_proto(int(t.dtype), list(t.shape))
             for name, t in env.items()}
    branch = taken_branch(node, bool(condition.const.reshape(-1)[0]), types,
                          dict(graph.opset_imports))
    for name, value in branch.initializers.items():
        env[name] = Tensor(name, value.type.dtype, tuple(value.const.shape), value.const)
    _specialize_nodes(branch, env, steps, has_emitter, fold)
    for value, result in zip(node.outputs, branch.outputs):
        env[value.name] = env[result.name]


def _function_body(node: Node, args: list[Tensor | None], graph: Graph) -> Graph | None:
    types = [None if t is None else onnx.helper.make_tensor_type_proto(int(t.dtype), list(t.shape))
             for t in args]
    return function_body(node, types, _opset_of(node, graph), dict(graph.opset_imports))


def _opset_of(node: Node, graph: Graph) -> int:
    return graph.opset_imports.get(node.domain, graph.opset if node.domain in ("", "ai.onnx")
                                   else 1)


def value_inputs(graph: Graph, const_inputs: Callable[[Node], Sequence[int]],
                 has_emitter: Callable[[Node], bool] = lambda node: True) -> list[int]:
    """Positions of the graph inputs to specialize on their value.

    A value must be known at compile time when a node reads it at a position its emitter needs
    as a constant (`const_inputs(node)`: axes, pads, shape, repeats...), when it is the
    condition of an If (the branch taken is then compiled alone), when it is an integer input
    of an op without emitter that is expanded into its function body (its sizes, mostly), or
    when it is an input of a foldable node (standard domain, deterministic, not Shape/Size)
    whose output must be known (pads computed from a small input with Sub and Div, say). A
    graph input that must be known and whose declared shape is static with at most
    VALUE_INPUT_ELEMENTS elements is specialized on its value. That is exact: the program
    built for one value only ever runs with that value.
    """
    needed: set[str] = set()
    for node in reversed(graph.nodes):
        wanted = [node.inputs[i] for i in const_inputs(node) if i < len(node.inputs)]
        if node.op_type == "If" and node.inputs:
            wanted.append(node.inputs[0])
        elif not has_emitter(node) and has_function_body(node, _opset_of(node, graph)):
            wanted += [v for v in node.inputs if v is not None and v.type is not None
                       and v.type.dtype in (DType.INT32, DType.INT64)]
        if any(v.name in needed for v in node.outputs):
            if _foldable_kind(node):
                wanted += node.inputs
            elif node.op_type == "If":  # the branch computes it from outer-scope values
                wanted += node.implicit_inputs
        needed.update(v.name for v in wanted if v is not None)
    chosen = []
    for position, value in enumerate(graph.inputs):
        shape = value.type.shape if value.type is not None else None
        if value.name not in needed or shape is None:
            continue
        if all(isinstance(d, int) for d in shape) and \
                int(np.prod(shape, dtype=np.int64)) <= VALUE_INPUT_ELEMENTS:
            chosen.append(position)
    return chosen


def _foldable_kind(node: Node) -> bool:
    """Whether the node is folded when its inputs are constants (and reads their values)."""
    return node.domain in STANDARD_DOMAINS and not node.subgraphs and not ops.is_a(
        node, ops.NONDETERMINISTIC | ops.SHAPE_ONLY | ops.CONTROL_FLOW)


def check_emitters(graph: Graph, static_inputs: Sequence[str],
                   has_emitter: Callable[[Node], bool]) -> None:
    """Refuse, before any specialization exists, a node that will need an emitter and has none.

    A node whose inputs are all constants (initializers, `static_inputs`, or outputs of such
    nodes) or that reads only shapes is folded at specialization; every other node that some
    graph output depends on runs as C. Control flow and unknown custom ops are refused too.
    """
    static = set(graph.initializers) | set(static_inputs)
    for node in graph.live_nodes():  # nodes no output depends on are dropped, never run
        if node.op_type == "If" and node.inputs and node.inputs[0].name in static:
            continue  # the branch taken is compiled; its ops are checked then
        _check_control_flow(node)
        if ops.is_a(node, ops.SHAPE_ONLY) or (
                not ops.is_a(node, ops.NONDETERMINISTIC)
                and all(v is None or v.name in static for v in node.inputs)):
            static.update(v.name for v in node.outputs)
        elif has_function_body(node, _opset_of(node, graph)):
            continue  # expanded at specialization; its body's ops are checked then
        elif not has_emitter(node):
            _check_domain(node, has_emitter)
            raise UnsupportedError(f"{node.describe()}: no C emitter for op '{node.op_type}'; "
                                   "the C backend cannot run it")


def _check_control_flow(node: Node) -> None:
    if ops.is_a(node, ops.CONTROL_FLOW) or node.subgraphs:
        raise UnsupportedError(f"{node.describe()}: control flow (If/Loop/Scan) is not supported "
                               "by the C backend; unroll or fold it before compiling")


def _check_domain(node: Node, has_emitter: Callable[[Node], bool]) -> None:
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
    """Outputs as constants, or None when graphopt's evaluator cannot compute them."""
    if node.op_type == "Shape":
        shape = args[0].shape
        start, end = node.attr("start", 0), node.attr("end", None)
        data = np.array(shape[start:end] if end is not None else shape[start:], dtype=np.int64)
        return [Tensor(node.outputs[0].name, DType.INT64, data.shape, data)]
    if node.op_type == "Size":
        data = np.array(args[0].size, dtype=np.int64)
        return [Tensor(node.outputs[0].name, DType.INT64, (), data)]
    try:
        results = evaluate_node(node, [None if t is None else t.const for t in args])
    except (UnsupportedError, MemoryError) as err:  # it runs as a step instead
        log.debug("cannot fold %s: %s", node.describe(), err)
        return None
    if any(data.dtype == object for data in results):  # strings, sequences: not for C
        return None
    return [Tensor(value.name, DType.from_numpy(data.dtype), tuple(data.shape), data)
            for value, data in zip(node.outputs, results)]


def _infer_outputs(node: Node, args: list[Tensor | None], graph: Graph) -> list[Tensor]:
    """Concrete output tensors from graphopt's shape engine, else from static IR types."""
    types = [None if t is None else TensorType(t.dtype, t.shape) for t in args]
    inferred = infer_node(node, types, [None if t is None else t.const for t in args],
                          opsets=graph.opset_imports)
    outputs = []
    for value, found in zip(node.outputs, inferred):
        if (found is None or not found.is_static) and value.type is not None and \
                value.type.is_static:
            found = value.type
        if found is None or not found.is_static:
            shapes = ", ".join("-" if t is None else t.describe() for t in args)
            raise UnsupportedError(f"{node.describe()}: the shape of output '{value.name}' is not "
                                   f"known for inputs ({shapes}); the C backend needs shapes "
                                   "that do not depend on input data")
        outputs.append(Tensor(value.name, found.dtype, tuple(int(d) for d in found.shape)))
    return outputs


def _drop_dead_steps(program: Program) -> None:
    """Remove steps none of whose outputs reach a graph output."""
    live = {id(t) for t in program.outputs}
    kept = []
    for step in reversed(program.steps):
        if any(id(t) in live for t in step.outputs):
            kept.append(step)
            live.update(id(t) for t in step_reads(step))
    program.steps = kept[::-1]

