"""INT8 bundles: quantized inputs/outputs of the API, and which outputs must match exactly.

A quantized model reaches the bundle through the backend's own integer lowering
(`backend.int8.lowering.lower_int8`): graphopt's `Value.quant` annotations, or a QDQ file whose
Q/DQ pairs `absorb_qdq_nodes` turned into annotations. Its interface stays what the model
declares: float inputs/outputs with Q/DQ inside keep a float API (the integer steps start at a
QuantizeLinear and end in a float epilogue or a DequantizeLinear). A model whose inputs or
outputs are integers (`x: uint8 -> DequantizeLinear`, `QuantizeLinear -> y: int8`) gets an
integer API, and the header gives each such port's scale and zero point:

- `annotate_integer_io` gives the float value right after such an input (the DQ output) and
  right before such an output (the Q input) the port's parameters, so the lowering keeps the
  integer path across the boundary instead of computing that layer in float;
- `cancel_requantize` then removes the `DequantizeLinear -> QuantizeLinear` round trips the
  lowering leaves at those boundaries (same parameters: the integers come back unchanged, since
  |q - zp| <= 255 keeps (q - zp) * s / s within far less than 0.5 of q - zp in float32).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.backend.program import Program, Step, Tensor
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.types import DType, QuantParams

_INTEGER_PORTS = frozenset({DType.UINT8, DType.INT8})
# Program steps that pass integers through unchanged (what an exact output may come through).
_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class PortQuant:
    """How an integer input/output of the API encodes reals: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int


def _scalar_params(node: Node) -> QuantParams | None:
    """The per-tensor constant (scale, zero point) of a standard Q/DQ node, else None."""
    if node.domain or len(node.inputs) < 3:
        return None
    scale, zero = node.inputs[1], node.inputs[2]
    if scale is None or zero is None or not scale.is_const or not zero.is_const or \
            scale.const.size != 1 or zero.const.size != 1 or scale.const.dtype != np.float32:
        return None
    return QuantParams(scale.const.reshape(()).copy(), zero.const.reshape(()).copy())


def _port(params: QuantParams) -> PortQuant:
    return PortQuant(float(params.scale), int(params.zero_point))


def _agreed(nodes: list[Node], op_type: str, dtype: DType) -> QuantParams | None:
    """The parameters every node (all `op_type`, integer side of type `dtype`) shares."""
    found: QuantParams | None = None
    for node in nodes:
        params = _scalar_params(node) if node.op_type == op_type else None
        if params is None or DType.from_numpy(params.zero_point.dtype) != dtype:
            return None
        if found is not None and (params.scale != found.scale or
                                  params.zero_point != found.zero_point):
            return None
        found = params
    return found


def _annotate(value: Value, params: QuantParams) -> None:
    """Give a float activation `params` unless it already carries parameters. Exact for a
    value on that grid (a DequantizeLinear output) or read only through QuantizeLinear with
    the same parameters: every reader then sees what it saw before."""
    if not value.is_const and value.dtype == DType.FLOAT and value.quant is None:
        value.quant = params


def annotate_integer_io(graph: Graph) -> dict[str, PortQuant]:
    """The parameters of integer inputs read only by DequantizeLinear and of integer outputs
    made by QuantizeLinear, by port name; the float values next to them are annotated (see the
    module docstring). Runs before absorb-qdq and the pipeline, on the caller's copy."""
    ports: dict[str, PortQuant] = {}
    for value in graph.inputs:
        readers = value.users
        params = _agreed(readers, "DequantizeLinear", value.dtype) \
            if value.dtype in _INTEGER_PORTS and readers else None
        if params is not None:
            ports[value.name] = _port(params)
            for reader in readers:
                _annotate(reader.outputs[0], params)
    for value in graph.outputs:
        node = value.producer
        params = _agreed([node], "QuantizeLinear", value.dtype) \
            if value.dtype in _INTEGER_PORTS and node is not None else None
        if params is None:
            continue
        ports[value.name] = _port(params)
        source = node.inputs[0]
        # only when nothing reads it in float (an annotation changes what every reader sees)
        if source is not None and source not in graph.outputs and \
                _agreed(source.users, "QuantizeLinear", value.dtype) is not None:
            _annotate(source, params)
    return ports


def _same_params(a: Step, b: Step) -> bool:
    (sa, za), (sb, zb) = (s.inputs[1:3] for s in (a, b))
    return all(t is not None and t.is_const for t in (sa, za, sb, zb)) and \
        sa.const.size == 1 and za.const.size == 1 and \
        np.array_equal(sa.const.reshape(-1), sb.const.reshape(-1)) and \
        np.array_equal(za.const.reshape(-1), zb.const.reshape(-1)) and \
        za.const.dtype == zb.const.dtype


def cancel_requantize(program: Program) -> int:
    """Remove QuantizeLinear(DequantizeLinear(q)) steps with equal parameters (run after
    lower_int8, before epilogues are fused): readers of the result read q, and a program output
    made that way is written by q's producer directly. Returns the steps removed."""
    removed = 0
    while True:
        pair = _round_trip(program)
        if pair is None:
            return removed
        removed += _cancel(program, *pair)


def _round_trip(program: Program) -> tuple[int, int] | None:
    """(DequantizeLinear index, QuantizeLinear index) of the first removable round trip."""
    producer = {id(t): i for i, s in enumerate(program.steps) for t in s.outputs}
    outputs = {id(t) for t in program.outputs}
    inputs = {id(t) for t in program.inputs}
    readers = program.readers()
    for j, step in enumerate(program.steps):
        if step.op_type != "QuantizeLinear" or step.node.domain or step.epilogue:
            continue
        i = producer.get(id(step.inputs[0]))
        dq = program.steps[i] if i is not None else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.node.domain or \
                not _same_params(dq, step):
            continue
        q, y = dq.inputs[0], step.outputs[0]
        if q.dtype != y.dtype or q.shape != y.shape:
            continue
        if id(y) in outputs:  # q's producer must be able to write the output in q's place
            k = producer.get(id(q))
            if k is None or id(q) in inputs | outputs or readers.get(id(q)) != [i] or \
                    len(readers.get(id(dq.outputs[0]), [])) != 1:
                continue
        return i, j
    return None


def _cancel(program: Program, i: int, j: int) -> int:
    dq, quantize = program.steps[i], program.steps[j]
    q, y, real = dq.inputs[0], quantize.outputs[0], dq.outputs[0]
    if any(t is y for t in program.outputs):
        old, new = q, y  # q's producer writes the output
    else:
        old, new = y, q  # readers of y read q
    for step in program.steps:
        step.inputs = [new if t is old else t for t in step.inputs]
        step.outputs = [new if t is old else t for t in step.outputs]
    drop = {j}
    if not any(real is t for k, s in enumerate(program.steps) if k != j for t in s.inputs) and \
            all(real is not t for t in program.outputs):
        drop.add(i)
    program.steps = [s for k, s in enumerate(program.steps) if k not in drop]
    return len(drop)


def exact_outputs(program: Program) -> list[bool]:
    """Per program output: whether it comes from integer arithmetic alone (an integer step's
    epilogue, a DequantizeLinear, or integers), so every target computes the same bits."""
    producer = {id(t): s for s in program.steps for t in s.outputs}

    def exact(t: Tensor) -> bool:
        if t.dtype in _INTEGER_PORTS:
            return True
        step = producer.get(id(t))
        if step is None:
            return False
        if step.op_type.startswith("Int8") or step.op_type == "DequantizeLinear":
            return not step.epilogue
        return step.op_type in _VIEWS and step.inputs[0] is not None and exact(step.inputs[0])

    return [exact(t) for t in program.outputs]


def is_int8(program: Program) -> bool:
    """Whether the program runs any integer step."""
    return any(step.op_type.startswith("Int8") for step in program.steps)

