"""A rewrite rule: pattern + optional check + replacement, and the objects a replacement sees.

    def _replace(rw: Rewriter, m: Match) -> Value:
        return rw.make_node("Gemm", [m["a"], m["w"], m["bias"]]).outputs[0]

    RULE = Rule("matmul-add-to-gemm", pattern, _replace, check=_check)

The check returns None when the rewrite is allowed, else a failure reason (recorded in the
FusionLog). A replacement creates nodes only through the Rewriter, which inserts them before the
matched root, stamps `origin` with the rule name and can undo them if the replacement refuses
(raises RewriteRefused) after creating something.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.types import TensorType
from graphopt.rewrite.pattern import Bindings, Pattern, root_ops


class RewriteRefused(GraphoptError):
    """Raised by a replacement that finds, late, that it cannot rewrite (message = reason)."""


@dataclass(frozen=True)
class Match:
    """A structural match of a rule at `root`: captured values (`m["x"]`) and nodes."""

    graph: Graph
    root: Node
    bindings: Bindings

    def __getitem__(self, name: str) -> Value | None:
        return self.bindings.values[name]

    def get(self, name: str) -> Value | None:
        return self.bindings.values.get(name)

    def const(self, name: str) -> np.ndarray | None:
        """The array of a captured constant (None when the optional input was omitted)."""
        value = self.bindings.values.get(name)
        return None if value is None else value.const

    def node(self, name: str) -> Node:
        return self.bindings.nodes[name]

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Every matched node, root first."""
        return self.bindings.order

    @property
    def values(self) -> Mapping[str, Value | None]:
        return self.bindings.values


Replacement = Union[Value, Sequence[Union[Value, None]]]
CheckFunction = Callable[[Match], Union[str, None]]
ReplaceFunction = Callable[["Rewriter", Match], Replacement]


@dataclass(frozen=True)
class Rule:
    """`pattern` becomes what `replace` builds, when `check` (if any) returns None.

    allow_shared: by default every matched node other than the root must feed only other matched
        nodes and not be a graph output, so removing the subgraph loses nothing. With True, such
        intermediates are allowed and the nodes still read elsewhere are kept.
    commute: try both input orders of commutative two-input ops (graphopt.ir.ops.COMMUTATIVE).
    """

    name: str
    pattern: Pattern
    replace: ReplaceFunction
    check: CheckFunction | None = None
    allow_shared: bool = False
    commute: bool = True

    def __post_init__(self) -> None:
        root_ops(self.pattern)  # validates the root early, at import time

    @property
    def root_keys(self) -> frozenset:
        keys: set = set()
        for op in root_ops(self.pattern):
            keys |= op.keys
        return frozenset(keys)


class Rewriter:
    """What a replacement uses to build nodes: placed before the root, stamped with the rule."""

    def __init__(self, graph: Graph, match: Match, rule_name: str):
        self.graph = graph
        self.match = match
        self.rule_name = rule_name
        self.created: list[Node] = []
        self.constants: list[Value] = []

    @property
    def opset(self) -> int:
        return self.graph.opset

    def make_node(self, op_type: str, inputs: Sequence[Value | None],
                  attrs: dict[str, Any] | None = None, *,
                  types: Sequence[TensorType | None] | None = None, outputs: int = 1,
                  domain: str = "") -> Node:
        """A new node right before the matched root.

        `types` defaults to the types of the root's outputs: a fusion computes the same values
        as the subgraph it replaces, so its outputs have the same types.
        """
        root = self.match.root
        if types is None:
            types = [out.type for out in root.outputs[:outputs]]
            types += [None] * (outputs - len(types))
        node = self.graph.make_node(op_type, inputs, attrs, outputs=outputs, types=types,
                                    name=root.name or op_type, domain=domain, before=root,
                                    origin=self.rule_name)
        self.created.append(node)
        return node

    def constant(self, array: np.ndarray, name: str = "const") -> Value:
        """A new initializer (removed again if the rewrite is refused)."""
        value = self.graph.add_constant(array, name)
        self.constants.append(value)
        return value

    def undo(self) -> None:
        """Remove what this rewriter created (nothing outside it reads those yet)."""
        if self.created:
            self.graph.remove(self.created)
        for value in self.constants:
            if not value.uses():
                self.graph.initializers.pop(value.name, None)
        self.created, self.constants = [], []
