"""Dead-code elimination."""
from __future__ import annotations

from graphopt import Graph, register_pass
from graphopt.ir import ops


@register_pass("eliminate-dead-code")
def eliminate_dead_code(graph: Graph) -> bool:
    """Remove nodes whose outputs nobody reads, and unused initializers.

    Safe because such nodes cannot affect a graph output; nondeterministic ops are removed too,
    since an unread random value has no observable effect.
    """
    live: set[int] = {id(v) for v in graph.outputs}
    dead = []
    for node in reversed(graph.nodes):
        if any(id(out) in live for out in node.outputs):
            live.update(id(v) for v in (*node.inputs, *node.implicit_inputs) if v is not None)
        elif not ops.is_a(node, ops.CONTROL_FLOW) or not _has_side_effects(node):
            dead.append(node)
        else:
            live.update(id(v) for v in (*node.inputs, *node.implicit_inputs) if v is not None)
    if dead:
        graph.remove(dead)
    removed_constants = graph.remove_unused_initializers()
    return bool(dead or removed_constants)


def _has_side_effects(node) -> bool:
    """Control-flow bodies are pure in standard ONNX; kept as a hook for custom domains."""
    return False
