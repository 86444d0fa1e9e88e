"""Dynamic INT8 quantization: int8 weights, activations quantized at run time.

For MatMul-heavy transformers, where activation ranges vary from input to input, each MatMul with a
constant 2-D weight W [K, N] (and each Gemm A @ W' + beta * C, W' = W or W^T) becomes onnxruntime's
dynamic pattern (followed by `+ beta * C` for a Gemm)

    x_q, x_scale, x_zp = DynamicQuantizeLinear(x)                   (uint8, per tensor, per run)
    acc   = MatMulInteger(x_q, W_q, x_zp, W_zp)                      (int32)
    y     = Cast(acc, float) * (x_scale * W_scale)                   (W_scale per output column)

which onnxruntime's CPU EP fuses into DynamicQuantizeMatMul. W_q is stored as int8 (symmetric,
zero point 0) and carries its `Value.quant`, so the parameters live on the IR value as for static
quantization. No calibration is needed. Unlike static quantization, this pass materializes the
nodes in the IR: there are no static activation parameters to annotate, the run-time quantization
*is* the computation.
"""
from __future__ import annotations

from typing import Collection, Iterable

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.ir.types import DType, TensorType
from graphopt.quantization.params import quantize_const, weight_params
from graphopt.quantization.scheme import Target, find_targets

ORIGIN = "quantize-int8"


def dynamic_targets(graph: Graph, exclude: Iterable[str] = ()) -> list[Target]:
    """MatMuls with a constant 2-D float weight, and Gemms computing A @ W' (+ beta * C) with a
    constant W (transA = 0, alpha = 1): what dynamic quantization rewrites."""
    return [t for t in find_targets(graph, exclude) if _eligible(t)]


def _eligible(target: Target) -> bool:
    node = target.node
    if target.weight is None or target.weight.const.ndim != 2:
        return False
    if node.op_type == "Gemm":
        return node.attr("transA", 0) == 0 and node.attr("alpha", 1.0) == 1.0
    return node.op_type == "MatMul"


def quantize_dynamic(graph: Graph, exclude: Iterable[str] = (), per_channel: bool = True,
                     reduce_range: bool = False, only: Collection[str] | None = None) -> int:
    """Rewrite every eligible node (or those whose target name is in `only`); returns how many
    were rewritten (see weight_params for reduce_range)."""
    rewritten = []
    for target in dynamic_targets(graph, exclude):
        if only is None or target.name in only:
            _rewrite(graph, target.node, per_channel, reduce_range)
            rewritten.append(target.node)
    if rewritten:
        graph.remove(rewritten)  # once for all: Graph.remove is O(nodes)
        graph.remove_unused_initializers()
    return len(rewritten)


def _rewrite(graph: Graph, node: Node, per_channel: bool, reduce_range: bool) -> None:
    x, w = node.input(0), node.input(1)
    weight = w.const.T if node.op_type == "Gemm" and node.attr("transB", 0) else w.const
    params = weight_params(weight, 1 if per_channel else None, reduce_range)
    w_q = graph.add_constant(quantize_const(weight, params), f"{w.name}_quantized")
    w_q.quant = params
    w_zp = graph.add_constant(params.zero_point, f"{w.name}_zero_point")
    w_scale = graph.add_constant(params.scale, f"{w.name}_scale")
    y = node.outputs[0]
    out_shape = y.type.shape if y.type is not None else None
    scalar_f = TensorType(DType.FLOAT, ())
    with graph.inserting_before(node):
        dql = graph.make_node("DynamicQuantizeLinear", [x], outputs=3, origin=ORIGIN,
                              types=[TensorType(DType.UINT8, x.type.shape), scalar_f,
                                     TensorType(DType.UINT8, ())])
        x_q, x_scale, x_zp = dql.outputs
        acc = graph.make_node("MatMulInteger", [x_q, w_q, x_zp, w_zp], origin=ORIGIN,
                              types=[TensorType(DType.INT32, out_shape)]).outputs[0]
        acc_f = graph.make_node("Cast", [acc], {"to": int(DType.FLOAT)}, origin=ORIGIN,
                                types=[TensorType(DType.FLOAT, out_shape)]).outputs[0]
        scale = graph.make_node("Mul", [x_scale, w_scale], origin=ORIGIN,
                                types=[TensorType(DType.FLOAT, params.scale.shape)]).outputs[0]
        result = graph.make_node("Mul", [acc_f, scale], origin=ORIGIN,
                                 types=[y.type]).outputs[0]
        bias = node.input(2) if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        if bias is not None:  # Gemm: + beta * C
            beta = float(node.attr("beta", 1.0))
            if beta != 1.0:
                bias = graph.make_node("Mul", [bias, graph.add_constant(np.float32(beta), "beta")],
                                       origin=ORIGIN, types=[bias.type]).outputs[0]
            result = graph.make_node("Add", [result, bias], origin=ORIGIN,
                                     types=[y.type]).outputs[0]
    graph.replace_all_uses_with(y, result)  # the caller removes `node`
