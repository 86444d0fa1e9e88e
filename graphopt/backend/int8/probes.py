"""Expose a quantized graph's integer tensors as graph outputs, to compare them bit for bit.

Each annotated activation `x` gets `QuantizeLinear(x)` with its own parameters as an extra graph
output `<x>__int8`. Exported, that reads the dequantized `x` (what every reader of `x` sees), and
QuantizeLinear(DequantizeLinear(q)) is q again, so onnxruntime reports exactly the integers of
`x`; the C backend lowers the probe like any float reader of `x` (a DequantizeLinear of the
integers its kernels computed, then the probe's QuantizeLinear), so it reports its own. Probes
add readers, so they can keep a residual Add from fusing into its Conv (it then runs alone).
"""
from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.types import DType, TensorType

SUFFIX = "__int8"


def add_integer_probes(graph: Graph) -> list[str]:
    """Add the probes (in place); their output names, in graph order."""
    names = []
    for node in list(graph.nodes):
        for value in node.outputs:
            params = value.quant
            if params is None or params.scale.size != 1 or value in graph.outputs:
                continue
            scale = graph.add_constant(params.scale.astype(np.float32).reshape(()),
                                       f"{value.name}_probe_scale")
            zero = graph.add_constant(params.zero_point.reshape(()), f"{value.name}_probe_zp")
            dtype = DType.from_numpy(params.zero_point.dtype)
            shape = value.type.shape if value.type is not None else None
            probe = graph.make_node("QuantizeLinear", [value, scale, zero],
                                    outputs=[value.name + SUFFIX],
                                    types=[TensorType(dtype, shape)], after=node,
                                    origin="int8-probes")
            graph.outputs.append(probe.outputs[0])
            names.append(probe.outputs[0].name)
    return names
