"""Turn explicit QDQ nodes back into `Value.quant` annotations (the inverse of qdq.py's export).

A QDQ ONNX file (onnxruntime's `quantize_static` output, or graphopt's own export) spells
quantization as nodes: `QuantizeLinear -> DequantizeLinear` pairs on activations and
`DequantizeLinear(int8 constant)` on weights and biases. graphopt's representation is the float
IR with `Value.quant` set (graphopt.quantization, docs/QUANTIZATION.md): this pass rewrites the
former into the latter, so both sources reach the C backend's integer lowering, the NPU model and
the exporter as one IR, and exporting writes the same QDQ back.

- Activation: `x -> Q(s, z) -> xq -> DQ(s, z) -> xd`, where every reader of `x` reads it through
  such a pair with the same parameters: `x.quant = (s, z, axis)`, readers of `xd` read `x`, the
  nodes go. (A reader of the float `x` itself would see a changed value: then nothing is done.)
- Constant: `DQ(q const, s, z) -> w`: `w` becomes a float initializer holding the dequantized
  values with `w.quant = (s, z, axis)`, provided quantizing them again gives exactly `q` back
  (int32 biases beyond 2^24 would not: those DQ nodes stay).

Graph outputs keep their float values and names. Level 0: run on request (and by the C backend
when it compiles a graph with Q/DQ nodes), never by an -O preset.
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.graph import Node, Value
from graphopt.ir.types import QuantParams
from graphopt.quantization.params import quantize_const
from graphopt.quantization.rounding import dequantize_linear

_QUANTIZED = ("uint8", "int8", "int32")


def has_qdq(graph: Graph) -> bool:
    """Whether the graph has standard QuantizeLinear/DequantizeLinear nodes."""
    return any(n.domain == "" and n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for n in graph.nodes)


@register_pass("absorb-qdq", level=0)
def absorb_qdq(graph: Graph) -> PassResult:
    """Turn QuantizeLinear->DequantizeLinear pairs and DequantizeLinear of integer constants into
    Value.quant annotations on the float values (removing the nodes)."""
    removed: list[Node] = []
    absorbed: list[tuple[Node, Value]] = []
    activations = 0
    for node in list(graph.nodes):
        if node.domain or node.op_type != "DequantizeLinear":
            continue
        weight = _absorb_constant(graph, node)
        if weight is not None:
            absorbed.append((node, weight))
    # One removal for all (Graph.remove is O(nodes)); that frees the names the weights take.
    graph.remove([node for node, _ in absorbed])
    for node, weight in absorbed:
        graph.rename_value(weight, node.outputs[0].name)
    constants = len(absorbed)
    for node in list(graph.nodes):
        if node.domain or node.op_type != "QuantizeLinear":
            continue
        pairs = _absorb_activation(graph, node)
        if pairs:
            removed.extend(pairs)
            activations += 1
    graph.remove(removed)
    graph.remove_unused_initializers()
    return PassResult(bool(removed) or constants > 0, {"constants": constants, "activations": activations})


def _params(node: Node) -> QuantParams | None:
    """The (constant) scale, zero point and axis of a Q/DQ node, or None."""
    scale = node.inputs[1] if len(node.inputs) > 1 else None
    zero = node.inputs[2] if len(node.inputs) > 2 else None
    if scale is None or not scale.is_const or zero is None or not zero.is_const:
        return None
    if node.attrs.get("block_size", 0) or str(zero.const.dtype) not in _QUANTIZED:
        return None
    if scale.const.dtype != np.float32:
        return None
    axis = None
    if scale.const.size > 1 or scale.const.ndim == 1 and node.attrs.get("axis") is not None:
        axis = int(node.attrs.get("axis", 1))
    return QuantParams(np.array(scale.const, dtype=np.float32), np.array(zero.const), axis)


def _same(a: QuantParams, b: QuantParams) -> bool:
    return a.axis == b.axis and a.zero_point.dtype == b.zero_point.dtype and \
        np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point)


def _absorb_constant(graph: Graph, node: Node) -> Value | None:
    """The annotated float weight now read instead of `node`'s output, or None. The caller
    removes `node` and gives the weight its output's name, so readers and export see the
    original name."""
    q, out = node.inputs[0], node.outputs[0]
    params = _params(node)
    if params is None or q is None or not q.is_const or q.const.dtype != params.zero_point.dtype:
        return None
    if params.axis is not None:
        params = QuantParams(params.scale, params.zero_point, params.axis % max(q.const.ndim, 1))
    real = dequantize_linear(q.const, params.scale, params.zero_point, params.axis)
    if not np.array_equal(quantize_const(real, params), q.const) or out in graph.outputs:
        return None
    weight = graph.add_constant(real, name=out.name + "_float")
    weight.quant = params
    graph.replace_all_uses_with(out, weight)
    return weight


def _absorb_activation(graph: Graph, quantize: Node) -> list[Node]:
    """Absorb one QuantizeLinear and every DequantizeLinear reading it; the nodes removed."""
    x, xq = quantize.inputs[0], quantize.outputs[0]
    params = _params(quantize)
    if params is None or x is None or x.is_const or x.quant is not None or \
            xq in graph.outputs or not xq.users:
        return []
    dequantizers = xq.users
    for dq in dequantizers:
        if dq.domain or dq.op_type != "DequantizeLinear" or dq.inputs[0] is not xq:
            return []
        other = _params(dq)
        if other is None or not _same(params, other) or dq.outputs[0] in graph.outputs:
            return []
    if any(use.node is not quantize for use in x.uses()):
        return []  # x is also read in float: an annotation would change what that reader sees
    if params.axis is not None and x.type is not None and x.type.rank is not None:
        params = QuantParams(params.scale, params.zero_point, params.axis % max(x.type.rank, 1))
    x.quant = params
    for dq in dequantizers:
        graph.replace_all_uses_with(dq.outputs[0], x, replace_graph_outputs=False)
    return [quantize, *dequantizers]
