"""Model statistics for summaries: op counts, parameters, FLOPs, memory footprint, unknown ops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphopt.ir import ops
from graphopt.ir.graph import Graph, Node
from graphopt.ir.ops import op_rule_decorator

FlopRule = Callable[[Node], int]
_FLOP_RULES: dict[tuple[str, str], FlopRule] = {}


# Register the FLOP count (2 per multiply-accumulate) of an op: @flop_rule("Conv").
flop_rule = op_rule_decorator(_FLOP_RULES)


def _numel(shape: tuple | None) -> int:
    """Element count with symbolic dims counted as 1 (per-sample figures); 0 if unknown."""
    if shape is None or any(d is None for d in shape):
        return 0
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape], dtype=np.int64))


@flop_rule("Conv", "ConvTranspose")
def _conv_flops(node: Node) -> int:
    w = node.input(1)
    out = node.outputs[0]
    if w is None or w.shape is None or out.shape is None:
        return 0
    per_output = _numel(w.shape[1:])  # C/group * kernel
    if node.op_type == "ConvTranspose":
        return 2 * _numel(node.input(0).shape) * _numel(w.shape[1:])
    return 2 * _numel(out.shape) * per_output


@flop_rule("Gemm", "MatMul")
def _matmul_flops(node: Node) -> int:
    a, out = node.input(0), node.outputs[0]
    if a is None or a.shape is None or not a.shape or out.shape is None:
        return 0
    k = a.shape[-1] if node.op_type == "MatMul" or not node.attr("transA", 0) else a.shape[0]
    return 2 * _numel(out.shape) * _numel((k,))


def node_flops(node: Node) -> int:
    rule = _FLOP_RULES.get(node.key)
    if rule is not None:
        return rule(node)
    if ops.is_a(node, ops.ELEMENTWISE):
        return _numel(node.outputs[0].shape)
    return 0


@dataclass(frozen=True)
class ModelStats:
    nodes: int
    op_counts: dict[str, int]
    parameters: int
    parameter_bytes: int
    flops: int
    activation_bytes: int
    unknown_ops: list[str]


def unknown_ops(graph: Graph) -> list[str]:
    """Op types (domain::op) that onnx does not define: custom domains, model-local functions."""
    found = set()
    for node in graph.nodes:
        if not ops.is_known(node.domain, node.op_type):
            found.add(f"{node.domain}::{node.op_type}" if node.domain else node.op_type)
    return sorted(found)


def model_stats(graph: Graph) -> ModelStats:
    """Counts for summaries; FLOPs and activation bytes count symbolic dims as 1."""
    activation = sum(_numel(v.type.shape) * v.type.dtype.itemsize for n in graph.nodes
                     for v in n.outputs if v.type is not None)
    return ModelStats(
        nodes=len(graph.nodes), op_counts=graph.op_counts(),
        parameters=graph.num_parameters(),
        parameter_bytes=sum(int(v.const.nbytes) for v in graph.initializers.values()),
        flops=sum(node_flops(n) for n in graph.nodes), activation_bytes=activation,
        unknown_ops=unknown_ops(graph))


def human(n: float, unit: str = "") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.0f}{prefix}{unit}" if prefix == "" else f"{n:.2f}{prefix}{unit}"
        n /= 1000
    return f"{n}{unit}"
