"""Writing `Value.quant` annotations out as standard QDQ ONNX (QuantizeLinear/DequantizeLinear).

Called by the exporter (`graphopt.onnx_io.exporter.export_model`) when any value of the graph
carries quantization parameters. The IR itself stays float: an annotated value means "this tensor
is represented in int8", and only the exported file spells that out as nodes:

- a constant (weight, bias) is stored as its integers (`<name>_quantized`, int8 or int32) with its
  scale and zero point, and one DequantizeLinear named after the original recreates `<name>` in
  float, so readers of the weight need no renaming and the file is ~4x smaller;
- an activation `x` gets `QuantizeLinear(x) -> DequantizeLinear -> x_dequantized` right after its
  producer, and every node reading `x` reads `x_dequantized` instead. Graph outputs keep the float
  value, so the model's interface never changes.

Per-channel parameters carry the `axis` attribute. Scales are float32; the zero point's dtype
(uint8, int8, int32) is the quantized type.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphopt.ir.graph import Graph, Value
from graphopt.ir.types import QuantParams
from graphopt.quantization.params import quantize_const

ORIGIN = "quantize-int8"


def has_quant(graph: Graph) -> bool:
    """Whether any value of the graph carries quantization parameters."""
    return any(v.quant is not None for v in graph.values())


class _Names:
    """Fresh names that collide with nothing already in the GraphProto."""

    def __init__(self, proto: onnx.GraphProto):
        self.used = {i.name for i in proto.input} | {i.name for i in proto.initializer}
        for node in proto.node:
            self.used.update(node.output)
            self.used.add(node.name)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def materialize_qdq(graph: Graph, proto: onnx.GraphProto) -> None:
    """Rewrite an exported GraphProto of `graph` in place so annotated values become QDQ."""
    names = _Names(proto)
    front: list[onnx.NodeProto] = []
    after: dict[str, list[onnx.NodeProto]] = {}
    renamed: dict[str, str] = {}
    initializers = {t.name: i for i, t in enumerate(proto.initializer)}
    for value in graph.values():
        if value.quant is None:
            continue
        if value.is_const and value.const.dtype.kind != "f":
            continue  # already stored as integers (dynamic quantization's weights)
        if value.is_const:
            front.append(_constant(value, proto, initializers[value.name], names))
            continue
        nodes, dq_name = _activation(value, value.quant, proto, names)
        renamed[value.name] = dq_name
        producer = value.producer.outputs[0].name if value.producer is not None else None
        if producer is None:
            front.extend(nodes)
        else:
            after.setdefault(producer, []).extend(nodes)
    ordered: list[onnx.NodeProto] = list(front)
    for node in proto.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        ordered.append(node)
        if node.output:
            ordered.extend(after.get(node.output[0], ()))
    del proto.node[:]
    proto.node.extend(ordered)


def _params(base: str, params: QuantParams, proto: onnx.GraphProto, names: _Names) -> list[str]:
    scale = names.fresh(f"{base}_scale")
    zero_point = names.fresh(f"{base}_zero_point")
    proto.initializer.append(numpy_helper.from_array(params.scale.astype(np.float32), scale))
    proto.initializer.append(numpy_helper.from_array(np.asarray(params.zero_point), zero_point))
    return [scale, zero_point]


def _axis(params: QuantParams) -> dict[str, int]:
    return {} if params.axis is None else {"axis": int(params.axis)}


def _constant(value: Value, proto: onnx.GraphProto, index: int,
              names: _Names) -> onnx.NodeProto:
    """Replace the float initializer by its integers and a DequantizeLinear producing the name."""
    params = value.quant
    quantized = names.fresh(f"{value.name}_quantized")
    tensor = numpy_helper.from_array(quantize_const(value.const, params), quantized)
    proto.initializer[index].CopyFrom(tensor)
    scale, zero_point = _params(value.name, params, proto, names)
    return _node("DequantizeLinear", [quantized, scale, zero_point], value.name, names,
                 **_axis(params))


def _activation(value: Value, params: QuantParams, proto: onnx.GraphProto,
                names: _Names) -> tuple[list[onnx.NodeProto], str]:
    scale, zero_point = _params(value.name, params, proto, names)
    quantized = names.fresh(f"{value.name}_quantized")
    dequantized = names.fresh(f"{value.name}_dequantized")
    quantize = _node("QuantizeLinear", [value.name, scale, zero_point], quantized, names,
                     **_axis(params))
    dequantize = _node("DequantizeLinear", [quantized, scale, zero_point], dequantized, names,
                       **_axis(params))
    return [quantize, dequantize], dequantized


def _node(op: str, inputs: list[str], output: str, names: _Names, **attrs: int) -> onnx.NodeProto:
    node = helper.make_node(op, inputs, [output], name=names.fresh(f"{output}_{op}"), **attrs)
    node.metadata_props.add(key="graphopt.origin", value=ORIGIN)
    return node
