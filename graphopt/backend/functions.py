"""Expansions the specializer applies instead of refusing a node: ops defined by ONNX functions
are replaced by their bodies when the C backend has no emitter, and an If whose condition is a
compile-time constant by the branch it takes.

Many newer ops (Attention, SwiGLU, CausalConvWithState...) come with a function body in their
schema: a small graph of other ONNX ops that *is* the op's definition, sometimes built for the
node's attributes and input types (a context-dependent function). The specializer expands a
node it cannot emit into that body, for the model's opset, with the node's attributes (and the
schema's defaults) substituted, and compiles the body's nodes like any others. Correct by
construction: the body is the spec. Likewise a constant condition selects one branch for
every run, so compiling that branch alone computes exactly what the If does.
"""
from __future__ import annotations

import logging
from typing import Sequence

import onnx
from onnx import helper

from graphopt.ir.graph import Graph, Node

log = logging.getLogger(__name__)


def has_function_body(node: Node, opset: int) -> bool:
    """Whether the node's schema defines a function body usable at `opset`."""
    schema = _schema(node, opset)
    return schema is not None and _version(schema, opset) is not None


def function_body(node: Node, input_types: Sequence[onnx.TypeProto | None], opset: int,
                  opset_imports: dict[str, int]) -> Graph | None:
    """The node's function body as an IR graph reading the node's inputs and writing its
    outputs (internal values prefixed by the node's name), or None when there is none.

    `input_types` are the concrete types of the node's inputs (None for omitted ones); context-
    dependent bodies are built from them. The body's own opset imports win; domains it does not
    declare take the model's (`opset_imports`).
    """
    from onnx.backend.test.case.node import function_expand_helper

    from graphopt import onnx_io
    from graphopt.onnx_io.exporter import node_to_proto

    schema = _schema(node, opset)
    found = _version(schema, opset) if schema is not None else None
    if found is None:
        return None
    version, contextual = found
    proto = node_to_proto(node)
    present = {a.name for a in proto.attribute}
    for name, attr in schema.attributes.items():
        if name not in present and attr.default_value.type:
            proto.attribute.append(attr.default_value)
    types = [t if t is not None else onnx.TypeProto() for t in input_types]
    if contextual:
        raw = schema.get_context_dependent_function_with_opset_version(
            version, proto.SerializeToString(), [t.SerializeToString() for t in types])
    else:
        raw = schema.get_function_with_opset_version(version)
    body = onnx.FunctionProto()
    body.ParseFromString(raw)
    prefix = f"{node.name or node.op_type}__"
    nodes = function_expand_helper(proto, body, prefix)
    inputs = [helper.make_value_info(name, t) for name, t in zip(proto.input, types) if name]
    outputs = [helper.make_value_info(name, onnx.TypeProto()) for name in proto.output if name]
    graph = helper.make_graph(nodes, prefix + "body", inputs, outputs)
    opsets = {**opset_imports, **{o.domain: o.version for o in body.opset_import}}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, version)
                                                    for domain, version in opsets.items()])
    log.debug("expanded %s into its function body (%d nodes)", node.describe(), len(nodes))
    return onnx_io.import_model(model)


def _schema(node: Node, opset: int) -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return None


def _version(schema: onnx.defs.OpSchema, opset: int) -> tuple[int, bool] | None:
    """(opset version of the body to use, context-dependent?): the newest body not newer than
    the model's opset."""
    versions = [(v, False) for v in schema.function_opset_versions]
    versions += [(v, True) for v in schema.context_dependent_function_opset_versions]
    usable = [entry for entry in versions if entry[0] <= opset]
    return max(usable) if usable else None


def taken_branch(node: Node, condition: bool, outer_types: dict[str, onnx.TypeProto],
                 opset_imports: dict[str, int]) -> Graph:
    """The If branch that `condition` selects, as an IR graph whose inputs are the outer-scope
    values it reads (`outer_types` gives their types); its outputs correspond, in order, to the
    If's outputs."""
    from graphopt import onnx_io
    from graphopt.onnx_io.importer import subgraph_outer_names

    branch: onnx.GraphProto = node.attrs["then_branch" if condition else "else_branch"]
    inputs = [helper.make_value_info(name, outer_types[name])
              for name in sorted(subgraph_outer_names(branch))]
    graph = helper.make_graph(list(branch.node), branch.name or "branch", inputs,
                              list(branch.output), list(branch.initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, version)
                                                    for domain, version in opset_imports.items()])
    return onnx_io.import_model(model)

