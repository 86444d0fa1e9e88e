"""Dead-code elimination."""
from __future__ import annotations

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.graph import Node


@register_pass("eliminate-dead-code")
def eliminate_dead_code(graph: Graph) -> PassResult:
    """Remove nodes none of whose outputs reaches a graph output, then unused initializers.

    A node stays when at least one of its outputs is live, even if its other outputs are unread
    (Split, Dropout's mask, LayerNormalization's statistics). Nodes without inputs (Constant kept as
    a node, RandomNormal) go like any other when unread. Safe because ONNX ops are pure: an unread
    value, random ones included, has no observable effect. Graph inputs are the model's interface
    and are never removed, even when unused.
    """
    live = {id(node) for node in graph.live_nodes()}
    dead: list[Node] = [node for node in graph.nodes if id(node) not in live]
    if dead:
        graph.remove(dead)
    removed_constants = graph.remove_unused_initializers()
    return PassResult(bool(dead or removed_constants),
                      {"nodes": len(dead), "constants": removed_constants})
