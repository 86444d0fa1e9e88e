"""Model statistics for summaries: op counts, parameters, FLOPs, memory footprint, unknown ops.

Also the two number formats every command prints with: `human` for counts (SI prefixes, 1000:
parameters, FLOPs, MACs) and `human_bytes` for sizes (IEC prefixes, 1024: KiB, MiB, GiB).
"""
from __future__ import annotations

import dataclasses
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


def _with_prefix(n: float, step: int, prefixes: tuple[str, ...], unit: str, sep: str) -> str:
    """`n` scaled by `step` until it is below it (or the prefixes run out), with its prefix."""
    index = 0
    while abs(n) >= step and index < len(prefixes) - 1:
        n /= step
        index += 1
    return f"{n:.0f}{sep}{unit}" if index == 0 else f"{n:.2f}{sep}{prefixes[index]}{unit}"


def human(n: float, unit: str = "") -> str:
    """A count with an SI prefix (steps of 1000): 950, 47.53K, 2.88G; `unit` is appended."""
    return _with_prefix(n, 1000, ("", "K", "M", "G", "T"), unit, "")


def human_bytes(n: float) -> str:
    """A size in bytes with an IEC prefix (steps of 1024): 512 B, 190.12 KiB, 86.19 MiB.

    The one byte format of every summary (optimize, inspect, run, bench), so a size printed by
    one command compares with the same size printed by another.
    """
    return _with_prefix(n, 1024, ("", "Ki", "Mi", "Gi", "Ti"), "B", " ")


def has_symbolic_dims(graph: Graph) -> bool:
    """Whether some typed value has a dim that is not a number (FLOPs count such dims as 1)."""
    return any(not isinstance(d, int) for v in graph.values()
               if v.type is not None and v.type.shape for d in v.type.shape)


def with_dims_of(graph: Graph, reference: Graph) -> Graph:
    """A copy of `graph` whose unresolved dims take the sizes `reference` knows.

    `graph` is a model before optimization, `reference` the same model after: passes fold shape
    computations, so dims that were symbolic (an `unk__3` from a Reshape fed by Shape ops) or
    unknown before are numbers after. A value keeps its name through optimization when it keeps
    its meaning, so a value named in both takes the reference's dims, and each symbol thus bound
    to one number is then replaced in every other value. Numeric dims are never changed. This is
    what lets a summary compare FLOPs before and after with one treatment of symbolic dims.
    """
    copy = graph.copy()
    known = {v.name: v.type.shape for v in reference.values()
             if v.type is not None and v.type.shape is not None}
    bound: dict[str, set[int]] = {}
    for value in copy.values():
        shape, ref = (value.type.shape if value.type else None), known.get(value.name)
        if shape is None or ref is None or len(shape) != len(ref):
            continue
        for dim, size in zip(shape, ref):
            if isinstance(dim, str) and isinstance(size, int):
                bound.setdefault(dim, set()).add(size)
        value.type = dataclasses.replace(value.type, shape=tuple(
            size if not isinstance(dim, int) and isinstance(size, int) else dim
            for dim, size in zip(shape, ref)))
    symbols = {dim: sizes.pop() for dim, sizes in bound.items() if len(sizes) == 1}
    for value in copy.values():
        if value.type is not None and value.type.shape is not None:
            value.type = dataclasses.replace(value.type, shape=tuple(
                symbols.get(dim, dim) if isinstance(dim, str) else dim for dim in value.type.shape))
    return copy
