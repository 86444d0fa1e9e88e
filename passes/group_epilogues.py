"""Fusion groups as an IR fact: which elementwise chains run inside a Conv/Gemm/MatMul kernel."""
from __future__ import annotations

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.fusion import find_fusion_groups, stamp_fusion_groups


@register_pass("group-epilogues")
def group_epilogues(graph: Graph) -> PassResult:
    """Stamp each Conv/ConvTranspose/Gemm/MatMul and its elementwise epilogue chain as one group.

    An analysis: no node changes, so the ONNX output is the same model (the exporter records the
    groups in node metadata). The C backend runs each group as one kernel and the NPU model
    charges the epilogue to the anchor's layer; both read these stamps (graphopt.ir.fusion says
    why applying an epilogue per output element is exact). Run it last: a pass that edits a
    member afterwards leaves that group stale, and consumers then ignore it.
    """
    groups = find_fusion_groups(graph)
    stamp_fusion_groups(graph, groups)
    return PassResult(False, {"groups": len(groups),
                              "epilogue_nodes": sum(len(g.epilogue) for g in groups)})
