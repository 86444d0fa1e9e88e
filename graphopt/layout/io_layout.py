"""The layout of a model's rank-4 inputs and outputs, changed only when the user asks
(`graphopt optimize --io-layout nchw|nhwc`; `keep`, the default, changes nothing).

A rank-4 boundary value counts as NHWC when it sits right next to the Transpose that converts it:
a graph input every reader of which is Transpose(perm=[0,3,1,2]), a graph output produced by
Transpose(perm=[0,2,3,1]). Any other rank-4 boundary value counts as NCHW, ONNX's own order.
Changing a value's layout inserts or removes that boundary Transpose and retypes the value; names
never change. Transpose sinking then cancels what it can.
"""
from __future__ import annotations

import logging

from graphopt.errors import BadInputError
from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import parse_pass_spec
from graphopt.pass_manager import Step
from graphopt.layout.perms import nbytes, permute_type, transpose_perm
from graphopt.layout.report import LayoutEvent, layout_log
from graphopt.layout.sink import sink_transposes, transpose_after

log = logging.getLogger(__name__)

IO_LAYOUTS = ("keep", "nchw", "nhwc")
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


def input_layout(graph: Graph, value: Value) -> str:
    users = value.users
    if users and all(n.op_type == "Transpose" and transpose_perm(n) == TO_NCHW for n in users):
        return "nhwc"
    return "nchw"


def output_layout(value: Value) -> str:
    producer = value.producer
    if producer is not None and producer.op_type == "Transpose" \
            and transpose_perm(producer) == TO_NHWC:
        return "nhwc"
    return "nchw"


def io_layout_steps(layout: str, checking: bool) -> list[Step]:
    """The steps `graphopt optimize --io-layout` puts before the pipeline: none for keep, else
    the io-layout pass. Refused with --verify/--bisect, which feed the optimized model the
    original model's inputs."""
    if layout == "keep":
        return []
    if checking:
        raise BadInputError(f"--io-layout {layout} changes the model's input/output shapes, so "
                            "--verify/--bisect cannot feed it the original inputs; drop one")
    return list(parse_pass_spec(f"io-layout{{layout={layout}}}"))


def set_io_layout(graph: Graph, layout: str) -> int:
    """Give every rank-4 graph input and output `layout` ("nchw"/"nhwc"; "keep" does nothing)
    and sink the Transposes this adds. Transposes are sunk first too, so a boundary Transpose
    hidden behind elementwise ops is found. Returns how many boundary values changed."""
    if layout not in IO_LAYOUTS:
        raise BadInputError(f"--io-layout takes one of {', '.join(IO_LAYOUTS)}, not {layout!r}")
    if layout == "keep":
        return 0
    sink_transposes(graph)
    changed = 0
    outputs = {id(v) for v in graph.outputs}
    for value in list(graph.inputs):
        if _rank4(value) and id(value) not in outputs \
                and input_layout(graph, value) != layout:
            _retarget_input(graph, value, layout)
            changed += 1
    for value in list(graph.outputs):
        if _rank4(value) and value.producer is not None and output_layout(value) != layout:
            _retarget_output(graph, value, layout)
            changed += 1
    if changed:
        sink_transposes(graph)
    return changed


def _rank4(value: Value) -> bool:
    return value.shape is not None and len(value.shape) == 4 and not value.is_const


def _retarget_input(graph: Graph, value: Value, layout: str) -> None:
    if layout == "nchw":  # NHWC input read only through Transpose(0,3,1,2): drop them
        for transpose in value.users:
            graph.replace_all_uses_with(transpose.outputs[0], value)
            graph.remove(transpose)
        value.type = permute_type(value.type, TO_NCHW)
        _record(graph, value, removed=True)
    else:
        value.type = permute_type(value.type, TO_NHWC)
        transpose_after(graph, value, TO_NCHW, value.uses(), permute_type(value.type, TO_NCHW))
        _record(graph, value, removed=False)


def _retarget_output(graph: Graph, value: Value, layout: str) -> None:
    if layout == "nchw":  # produced by Transpose(0,2,3,1): the output takes its input
        transpose = value.producer
        source = transpose.input(0)
        graph.replace_all_uses_with(value, source)
        if not transpose.outputs[0].uses() and transpose.outputs[0] not in graph.outputs:
            graph.remove(transpose)
        _record(graph, source, removed=True)
    else:
        transpose_after(graph, value, TO_NHWC, [])
        _record(graph, value, removed=False)


def _record(graph: Graph, value: Value, removed: bool) -> None:
    entry = ((f"%{value.name} boundary", nbytes(value)),)
    layout_log(graph).add(LayoutEvent(f"interface %{value.name}", entry if removed else (),
                                      () if removed else entry))
    log.debug("io-layout: %s a Transpose at %%%s", "removed" if removed else "inserted",
              value.name)
