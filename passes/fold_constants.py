"""Constant folding: nodes whose outputs are known at compile time become initializers."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.errors import UnsupportedError
from graphopt.evaluator import evaluate_node
from graphopt.evaluator.shape_values import SHAPE_RULES, ShapeTensor, evaluate_shape
from graphopt.ir import ops
from graphopt.ir.graph import Node, Value
from graphopt.ir.types import DType
from graphopt.evaluator.infer import infer_types

log = logging.getLogger(__name__)

# Folding can make shapes static, which lets more Shape nodes fold: at most this many rounds.
MAX_ROUNDS = 4


@dataclass(frozen=True)
class FoldLimits:
    """Size caps, so folding never bloats the model (onnxscript caps its folder the same way).

    A result read only as a parameter (see fold_constants) has only the absolute cap
    `max_weight_elements`; any other result has `max_output_elements` and the growth cap.
    """

    max_output_elements: int
    max_growth: float
    always_fold_elements: int
    max_weight_elements: int

    def allows(self, out_elements: int, in_elements: int,
               read_as_parameter: Callable[[], bool] = lambda: False) -> bool:
        """Whether a result may fold; `read_as_parameter` is asked only when the answer hinges
        on it (the analysis walks the readers)."""
        if out_elements <= self.max_output_elements and (
                out_elements <= self.always_fold_elements
                or out_elements <= self.max_growth * in_elements):
            return True
        return out_elements <= self.max_weight_elements and read_as_parameter()


@register_pass("fold-constants")
def fold_constants(graph: Graph, *, max_output_elements: int = 1 << 20, max_growth: float = 2.0,
                   always_fold_elements: int = 1024, max_weight_elements: int = 1 << 27,
                   refresh: bool = True) -> PassResult:
    """Replace deterministic nodes whose inputs are all constants by the constants they compute.

    Also folds Shape/Size of statically shaped values (constant or not, Shape's start/end
    included) and the static parts of shape arithmetic on partly symbolic shapes: Gather(Shape(x),
    1) folds when dim 1 of x is static even if its batch dim is symbolic; symbolic dims are never
    replaced by numbers. Values come from graphopt.evaluator, which reproduces onnxruntime's
    results, and a result whose dtype or static shape disagrees with the value's declared type is
    not used. Nondeterministic ops, control flow and nodes with subgraphs are never folded.

    Size policy. A result read only as a parameter is folded up to `max_weight_elements`
    (default 2**27, room for VGG-19's 25088x4096 fc6 weight), however much it grows its inputs:
    ConstantOfShape/Expand/Tile that generate weights must become initializers, or nothing that
    needs constant weights (BatchNormalization folding into Conv, Gemm fusion) can run. A
    parameter read is, for every reader:
      * a parameter input of a compute op (graphopt.ir.ops.PARAMETER_INPUTS: Conv/ConvTranspose/
        Gemm inputs 1-2, MatMul input 1, BatchNormalization statistics, normalization scale and
        bias, PRelu slope, a Gather table, recurrent weights);
      * the constant side of Add/Sub/Mul/Div whose other operand already has the output's shape,
        so the constant broadcasts into the output without enlarging the activation (a bias, a
        per-channel scale); or the input of such arithmetic with another constant, or of a
        Reshape/Flatten/Squeeze/Unsqueeze/Transpose/Cast/Identity, whose own result is a parameter
        read with the same number of elements.
    Every other result, e.g. `x + zeros(shape)` that only broadcasts an activation to a larger
    shape, or a graph output, stays a node when it has more than `max_output_elements`, or more
    than `always_fold_elements` and `max_growth` times the constant inputs' elements.
    `max_weight_elements=0` turns the parameter rule off.

    After folding, types are refreshed by graphopt's shape engine (graphopt.evaluator.infer) so
    newly static shapes propagate, and folding repeats while that uncovers more.
    """
    limits = FoldLimits(max_output_elements, max_growth, always_fold_elements, max_weight_elements)
    folded = 0
    for _ in range(MAX_ROUNDS):
        count = _fold_round(graph, limits)
        folded += count
        if not count or not refresh or not infer_types(graph):
            break
    return PassResult(folded > 0, {"folded": folded})


def _fold_round(graph: Graph, limits: FoldLimits) -> int:
    shapes: dict[int, ShapeTensor] = {}
    folded: list[Node] = []
    renames: list[tuple[Value, str]] = []
    outputs = set(map(id, graph.outputs))
    for node in graph:
        # Only shape arithmetic folds without constant inputs: other nodes are skipped before
        # the (costlier) foldability checks.
        shape_op = node.key in SHAPE_RULES
        constant = _all_inputs_constant(node)
        if not (shape_op or constant) or not _foldable(node, outputs):
            continue
        arrays = _fold_shape(node, shapes) if shape_op else None
        if arrays is None and constant:
            arrays = _evaluate(graph, node, limits)
        if arrays is not None and _types_agree(node, arrays):
            renames += _replace_with_constants(graph, node, arrays, outputs)
            folded.append(node)
    graph.remove(folded)  # in one sweep: node-by-node removal is quadratic in the graph size
    for const, name in renames:
        graph.rename_value(const, name)
    return len(folded)


def _foldable(node: Node, outputs: set[int]) -> bool:
    """`outputs`: ids of the graph outputs."""
    if not any(out.uses() or id(out) in outputs for out in node.outputs):
        return False  # dead: eliminate-dead-code removes it
    if ops.is_random(node) or ops.is_a(node, ops.CONTROL_FLOW):
        return False
    if node.subgraphs or node.implicit_inputs or not node.inputs:
        return False
    if node.key == ("", "Identity") and id(node.outputs[0]) in outputs:
        return False  # how a constant graph output keeps its name (see replace_all_uses_with)
    # Non-tensor outputs (sequences, maps) cannot be initializers.
    return all(out.onnx_type is None for out in node.outputs)


def _all_inputs_constant(node: Node) -> bool:
    return all(v is None or v.const is not None for v in node.inputs)


def _fold_shape(node: Node, shapes: dict[int, ShapeTensor]) -> list[np.ndarray] | None:
    """Fold a shape computation that is static even when its inputs are not constants; remember
    a partly symbolic result for the nodes that read it."""
    result = evaluate_shape(node, shapes)
    if result is None:
        return None
    if result.is_static:
        return [result.to_array()]
    shapes[id(node.outputs[0])] = result
    return None


def _evaluate(graph: Graph, node: Node, limits: FoldLimits) -> list[np.ndarray] | None:
    inputs = [None if v is None else v.const for v in node.inputs]
    in_elements = sum(a.size for a in inputs if a is not None)
    parameter: list[bool] = []  # the reader analysis, run at most once and only if needed

    def read_as_parameter() -> bool:
        if not parameter:
            parameter.append(_read_as_parameter(graph, node))
        return parameter[0]

    estimate = _declared_elements(node)
    if estimate is not None and not limits.allows(estimate, in_elements, read_as_parameter):
        log.debug("not folding %s: %d output elements exceed the caps", node.describe(), estimate)
        return None
    try:
        arrays = evaluate_node(node, inputs)
    except UnsupportedError as err:
        log.debug("not folding %s: %s", node.describe(), err)
        return None
    except MemoryError:
        log.debug("not folding %s: its result does not fit in memory", node.describe())
        return None
    if not limits.allows(sum(a.size for a in arrays), in_elements, read_as_parameter):
        log.debug("not folding %s: its result exceeds the size caps", node.describe())
        return None
    return arrays


# How far a parameter read is followed through carriers and constant arithmetic.
_MAX_PARAMETER_DEPTH = 4


def _read_as_parameter(graph: Graph, node: Node) -> bool:
    """Whether every output of `node` is read only as a parameter (see fold_constants)."""
    outputs = set(map(id, graph.outputs))
    return all(_parameter_value(out, outputs, 0) for out in node.outputs if out.uses()
               or id(out) in outputs)


def _parameter_value(value: Value, outputs: set[int], depth: int) -> bool:
    if id(value) in outputs or not value.uses():
        return False
    return all(_parameter_use(value, use.node, use.index, outputs, depth) for use in value.uses())


def _parameter_use(value: Value, reader: Node, index: int, outputs: set[int], depth: int) -> bool:
    if index in ops.PARAMETER_INPUTS.get(reader.key, ()):
        return True
    if depth >= _MAX_PARAMETER_DEPTH or len(reader.outputs) != 1:
        return False
    result = reader.outputs[0]
    if ops.is_a(reader, ops.VALUE_CARRIERS):
        return index == 0 and _passes_on(value, result, outputs, depth)
    other = reader.input(1 - index) if index in (0, 1) else None
    if not ops.is_a(reader, ops.ARITHMETIC) or other is None:
        return False
    if other.is_const:  # constant arithmetic on the way to its op: it folds next
        return _passes_on(value, result, outputs, depth)
    return _static_same_shape(other, result) and _broadcasts_into(value, result)


def _passes_on(value: Value, result: Value, outputs: set[int], depth: int) -> bool:
    """Whether `result`, computed from `value` with as many elements, is a parameter read."""
    return _same_size(value, result) and _parameter_value(result, outputs, depth + 1)


def _same_size(a: Value, b: Value) -> bool:
    return (a.type is not None and b.type is not None and a.type.num_elements is not None
            and a.type.num_elements == b.type.num_elements)


def _static_same_shape(a: Value, b: Value) -> bool:
    """Whether a and b have the same shape, dim for dim (a symbol only equals itself)."""
    return (a.shape is not None and b.shape is not None and None not in a.shape
            and tuple(a.shape) == tuple(b.shape))


def _broadcasts_into(value: Value, result: Value) -> bool:
    """Whether `value` broadcasts into `result`'s shape without enlarging anything."""
    shape, target = value.shape, result.shape
    if shape is None or target is None or len(shape) > len(target):
        return False
    aligned = target[len(target) - len(shape):]
    return all(d == 1 or (isinstance(d, int) and d == t) for d, t in zip(shape, aligned))


# Generator ops whose output size is not bounded by their inputs: the input that sets it.
_SIZE_INPUT = {("", "ConstantOfShape"): 0, ("", "Expand"): 1, ("", "Tile"): 1}


def _declared_elements(node: Node) -> int | None:
    """Output size known before evaluating: from static output types, or from the shape (or
    repeats) input of a generator op, so a huge result is never even computed."""
    sizes = [None if out.type is None else out.type.num_elements for out in node.outputs]
    if None not in sizes:
        return sum(sizes)
    index = _SIZE_INPUT.get(node.key)
    sizes = None if index is None else node.const_input(index)
    if sizes is None:
        return None
    dims = [max(int(d), 1) for d in sizes.reshape(-1)]
    data = node.const_input(0)
    if index == 1 and data is not None:  # Expand broadcasts, Tile multiplies the data's dims
        rank = max(data.ndim, len(dims))
        data_dims = [1] * (rank - data.ndim) + list(data.shape)
        dims = [1] * (rank - len(dims)) + dims
        combine = max if node.op_type == "Expand" else (lambda d, r: d * r)
        dims = [combine(d, r) for d, r in zip(data_dims, dims)]
    return math.prod(dims)


def _types_agree(node: Node, arrays: list[np.ndarray]) -> bool:
    """Whether each result matches its value's declared dtype and static dims (a mismatch means a
    wrong type annotation or an evaluator bug; either way the node is kept)."""
    if len(arrays) != len(node.outputs):
        return False
    for out, array in zip(node.outputs, arrays):
        if out.type is None:
            continue
        dtype = DType.STRING if array.dtype == object else DType.from_numpy(array.dtype)
        shape = out.type.shape
        same_dims = shape is None or (len(shape) == array.ndim and all(
            not isinstance(d, int) or d == n for d, n in zip(shape, array.shape)))
        if dtype != out.type.dtype or not same_dims:
            log.warning("not folding %s: output %%%s is declared %s but evaluates to %s%s",
                        node.describe(), out.name, out.type, dtype.short, list(array.shape))
            return False
    return True


def _replace_with_constants(graph: Graph, node: Node, arrays: list[np.ndarray],
                            outputs: set[int]) -> list[tuple[Value, str]]:
    """Point the node's readers at new initializers; return (constant, name) pairs so that each
    constant takes its output's name once the node is gone. A graph output keeps its name through
    the Identity that replace_all_uses_with puts in front of a constant. `outputs`: ids of the
    graph outputs before folding (a folded output is replaced by an Identity, not removed)."""
    renames: list[tuple[Value, str]] = []
    for out, array in zip(node.outputs, arrays):
        if not out.uses() and id(out) not in outputs:
            continue
        const = graph.add_constant(array, name=f"{out.name}_folded")
        # A subgraph reading `out` by name is rewritten to the constant's name; keep that name.
        if id(out) not in outputs and not out.implicit_readers():
            renames.append((const, out.name))
        graph.replace_all_uses_with(out, const)
    return renames
