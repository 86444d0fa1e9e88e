"""Which tensors of which nodes get quantized, and setting `Value.quant` on them.

A *target* is one node whose float inputs become int8: Conv, Gemm and MatMul (activations, the
constant weight and the bias) and the pools (activation only). Quantizing a node's inputs is what
makes onnxruntime's QDQ fusions fire: `DQ(x), DQ(w), DQ(b) -> Conv -> (Relu) -> Q` becomes
QLinearConv, and `DQ(x), DQ(w) -> MatMul` without a following Q becomes MatMulIntegerToFloat. A node's
output is quantized when (and because) it feeds another target, so a chain of targets stays in int8.
Everything else (LayerNorm, Softmax, residual Adds) stays float, which is what keeps transformers
accurate.

Falling back to float is the same operation with a target left out: `apply` recomputes all
annotations from the enabled targets, so enabling/disabling never leaves stale parameters behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from graphopt.errors import BadInputError
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.types import DType, QuantParams
from graphopt.quantization.params import activation_params, bias_params, weight_params

WEIGHTED_OPS = {"Conv", "Gemm", "MatMul"}
ACTIVATION_ONLY_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "Flatten"}
TARGET_OPS = WEIGHTED_OPS | ACTIVATION_ONLY_OPS


@dataclass
class Target:
    """One node to quantize and the values it reads in int8."""

    node: Node
    activations: list[Value]
    weight: Value | None = None
    weight_axis: int | None = None  # the output-channel axis of the weight
    bias: Value | None = None

    @property
    def name(self) -> str:
        return self.node.name or f"{self.node.op_type}:{self.node.outputs[0].name}"

    @property
    def tensors(self) -> list[Value]:
        return self.activations + [v for v in (self.weight, self.bias) if v is not None]


def find_targets(graph: Graph, exclude: Iterable[str] = ()) -> list[Target]:
    """Targets in graph order. `exclude` holds node names or op types to keep in float."""
    exclude = {e.strip() for e in exclude if e.strip()}
    known = {n.name for n in graph} | {n.op_type for n in graph}
    unknown = sorted(exclude - known)
    if unknown:
        raise BadInputError(f"--exclude names no node or op type of the model: "
                            f"{', '.join(unknown)}")
    targets = []
    for node in graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in TARGET_OPS:
            continue
        if node.name in exclude or node.op_type in exclude:
            continue
        target = _target_of(node)
        if target is not None:
            targets.append(target)
    return targets


def _is_float(value: Value | None) -> bool:
    return value is not None and value.type is not None and value.type.dtype == DType.FLOAT


def _target_of(node: Node) -> Target | None:
    x = node.input(0)
    if not _is_float(x) or x.is_const:
        return None
    if node.op_type in ACTIVATION_ONLY_OPS:
        return Target(node, [x])
    w = node.input(1)
    if not _is_float(w):
        return None
    if not w.is_const:  # activation x activation (attention): both sides calibrated
        return Target(node, [x, w]) if node.op_type == "MatMul" else None
    axis = _weight_axis(node, w.const)
    bias = node.input(2) if len(node.inputs) > 2 else None
    if bias is not None and not (bias.is_const and _is_float(bias) and bias.const.ndim == 1
                                 and bias.const.shape[0] == w.const.shape[axis]):
        bias = None
    return Target(node, [x], w, axis, bias)


def _weight_axis(node: Node, weight: np.ndarray) -> int:
    """Output-channel axis: Conv W[M, C, ...] -> 0; Gemm W[K, N] -> 1 (0 if transB); MatMul -> -1."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attr("transB", 0) else 1
    return weight.ndim - 1


def activation_values(targets: Iterable[Target]) -> list[Value]:
    """The activations to calibrate, each once, in first-use order."""
    seen: dict[str, Value] = {}
    for target in targets:
        for value in target.activations:
            seen.setdefault(value.name, value)
    return list(seen.values())


def clear(graph: Graph) -> None:
    """Drop every quantization annotation (back to a float graph)."""
    for value in graph.values():
        value.quant = None


def apply(graph: Graph, targets: Iterable[Target], ranges: Mapping[str, tuple[float, float]],
          per_channel: bool, activation_dtype: np.dtype, reduce_range: bool = False) -> None:
    """Set `Value.quant` for the enabled targets (and clear it everywhere else)."""
    clear(graph)
    for target in targets:
        for value in target.activations:
            if value.quant is None:
                value.quant = activation_params(*ranges[value.name], activation_dtype)
        if target.weight is None:
            continue
        weight = target.weight
        if weight.quant is None:
            weight.quant = weight_params(weight.const, target.weight_axis if per_channel else None,
                                         reduce_range)
        if target.bias is not None and target.bias.quant is None:
            target.bias.quant = bias_params(target.activations[0].quant, weight.quant)


def describe(params: QuantParams) -> str:
    """`u8 scale 0.0123 zp 12` or `s8 per-channel(axis 0) scale 0.001..0.02`."""
    kind = {"uint8": "u8", "int8": "s8", "int32": "s32"}[str(params.zero_point.dtype)]
    if params.axis is None:
        return f"{kind} scale {float(params.scale):.3g} zp {int(params.zero_point)}"
    return (f"{kind} per-channel(axis {params.axis}) scale "
            f"{float(params.scale.min()):.3g}..{float(params.scale.max()):.3g}")
