"""What layout passes did, for `graphopt optimize --explain-layout`.

Each rewritten region is one event, attributed to the conv chain it belongs to: the nearest
layout-sensitive op (Conv, pooling, ...) upstream of the seed Transpose, or the graph input it
reads. The report lists per chain the Transposes removed and inserted and the bytes they move,
then the totals before and after (the bytes a Transpose moves = the size of its input).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from graphopt.analysis import human_bytes
from graphopt.ir import ops
from graphopt.ir.graph import Graph, Node

if TYPE_CHECKING:
    from graphopt.layout.sink import Cost

_MAX_HOPS = 16


@dataclass(frozen=True)
class LayoutEvent:
    """One rewrite: the chain it belongs to and the Transposes it removed and inserted."""

    chain: str
    removed: tuple[tuple[str, int], ...]
    inserted: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, seed: Node, cost: "Cost") -> "LayoutEvent":
        return cls(chain_of(seed), tuple(cost.removed), tuple(cost.inserted))


@dataclass
class LayoutLog:
    """Events of one graph, and its Transpose totals when the first layout pass started."""

    initial: tuple[int, int] | None = None
    events: list[LayoutEvent] = field(default_factory=list)

    def start(self, graph: Graph) -> None:
        if self.initial is None:
            from graphopt.layout.sink import transpose_totals

            self.initial = transpose_totals(graph)

    def add(self, event: LayoutEvent) -> None:
        self.events.append(event)


_LOGS: "weakref.WeakKeyDictionary[Graph, LayoutLog]" = weakref.WeakKeyDictionary()


def layout_log(graph: Graph) -> LayoutLog:
    log = _LOGS.get(graph)
    if log is None:
        log = _LOGS[graph] = LayoutLog()
    return log


def chain_of(seed: Node) -> str:
    """The conv chain a Transpose belongs to: the nearest layout-sensitive op found by walking up
    its first inputs, else the graph input that walk reaches."""
    value = seed.input(0)
    for _ in range(_MAX_HOPS):
        if value is None:
            break
        producer = value.producer
        if producer is None:
            return "constant" if value.is_const else f"input %{value.name}"
        if ops.is_a(producer, ops.LAYOUT_SENSITIVE):
            return f"{producer.op_type} '{producer.name}'"
        value = producer.input(0)
    return f"{seed.op_type} '{seed.name}'"


def layout_report(graph: Graph) -> Iterator[str]:
    """Lines for `--explain-layout`: per conv chain, then totals."""
    from graphopt.layout.sink import transpose_totals

    log = layout_log(graph)
    after = transpose_totals(graph)
    before = log.initial or after
    if not log.events:
        yield (f"layout: no Transpose moved ({after[0]} Transposes, {human_bytes(after[1])}); "
               "no region lowered their count or the bytes they move")
        return
    yield f"layout: {'conv chain':38s}{'removed (bytes)':>18s}{'inserted (bytes)':>22s}"
    chains: dict[str, list[LayoutEvent]] = {}
    for event in log.events:
        chains.setdefault(event.chain, []).append(event)
    for chain, events in chains.items():
        removed = [r for e in events for r in e.removed]
        inserted = [i for e in events for i in e.inserted]
        yield (f"  {chain:44s}{len(removed):3d} ({human_bytes(sum(b for _, b in removed)):>12s})"
               f"{len(inserted):7d} ({human_bytes(sum(b for _, b in inserted)):>12s})")
    yield (f"layout: Transposes {before[0]} -> {after[0]}, bytes moved "
           f"{human_bytes(before[1])} -> {human_bytes(after[1])}")
