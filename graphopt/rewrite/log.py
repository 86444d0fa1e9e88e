"""FusionLog: which rules ran on a graph, what they rewrote, and why candidates were not rewritten.

One log per Graph (held weakly, so it dies with the graph): `fusion_log(graph)`. `apply_rules`
writes to it; the CLI reads it after a run (`graphopt optimize --explain-fusions`) through
`fusion_report(graph)`, which without a graph reports on the graph rules last ran on.

A candidate is a node whose op type is a rule's root op. Its latest outcome is kept: a node that
failed in one sweep and was rewritten in a later one shows as rewritten.
"""
from __future__ import annotations

import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from graphopt.ir.graph import Graph

REWRITTEN = "rewritten"
NO_MATCH = "no-match"   # the pattern (or its use constraints) did not match
REJECTED = "rejected"   # the pattern matched but the check or the replacement refused


class FusionRecord(NamedTuple):
    """The outcome of one rule at one candidate root node (a named tuple: one is made for every
    candidate of every rule-based pass, so it must be cheap to build)."""

    pass_name: str
    rule: str
    node: str
    op_type: str
    outcome: str
    reason: str = ""
    depth: int = 0                  # pattern nodes matched before the failure
    created: tuple[str, ...] = ()   # names of the nodes a rewrite created

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.pass_name, self.rule, self.node)


@dataclass(frozen=True)
class RuleStats:
    pass_name: str
    rule: str
    tried: int
    matched: int
    rewritten: int


class FusionLog:
    """Records of every rule application on one graph, latest outcome per (pass, rule, node)."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str, str], FusionRecord] = {}

    @property
    def records(self) -> list[FusionRecord]:
        return list(self._latest.values())

    def add(self, record: FusionRecord) -> None:
        self._latest.pop(record.key, None)  # re-insert so the order is that of latest outcomes
        self._latest[record.key] = record

    def clear(self) -> None:
        self._latest.clear()

    def rewritten(self, rule: str | None = None) -> list[FusionRecord]:
        return [r for r in self.records if r.outcome == REWRITTEN and rule in (None, r.rule)]

    def failures(self, rule: str | None = None) -> list[FusionRecord]:
        return [r for r in self.records if r.outcome != REWRITTEN and rule in (None, r.rule)]

    def stats(self) -> list[RuleStats]:
        """Per rule, in first-seen order: candidates tried, matched (pattern held), rewritten."""
        tried: dict[tuple[str, str], set[str]] = defaultdict(set)
        matched: Counter = Counter()
        rewritten: Counter = Counter()
        for r in self.records:
            key = (r.pass_name, r.rule)
            tried[key].add(r.node)
            matched[key] += r.outcome != NO_MATCH
            rewritten[key] += r.outcome == REWRITTEN
        return [RuleStats(p, rule, len(nodes), matched[(p, rule)], rewritten[(p, rule)])
                for (p, rule), nodes in tried.items()]

    def to_dicts(self) -> list[dict]:
        """Plain data for JSON reports."""
        return [r._asdict() for r in self.records]

    def format(self, examples: int = 3, min_depth: int = 0) -> str:
        """A table of per-rule counts, then the reasons candidates were not rewritten, grouped.

        min_depth hides failures that matched fewer pattern nodes (1 = only the root op), which
        on a large model are mostly ops that merely share the root's op type.
        """
        stats = self.stats()
        if not stats:
            return "no fusion rule ran"
        width = max(len(s.rule) for s in stats)
        lines = [f"{'rule':<{width}}  {'tried':>6} {'matched':>8} {'rewritten':>10}"]
        lines += [f"{s.rule:<{width}}  {s.tried:>6} {s.matched:>8} {s.rewritten:>10}"
                  for s in stats]
        groups: dict[tuple[str, str], list[FusionRecord]] = defaultdict(list)
        hidden = 0
        for r in self.failures():
            if r.depth >= min_depth:
                groups[(r.rule, r.reason)].append(r)
            else:
                hidden += 1
        if groups:
            lines.append("not rewritten (nearest misses first):")
        # Deeper partial matches first: those are the fusions that almost happened.
        ranked = sorted(groups.items(), key=lambda kv: (-max(r.depth for r in kv[1]), -len(kv[1])))
        for (rule, reason), records in ranked:
            names = [r.node for r in records]
            shown = ", ".join(names[:examples]) + (", ..." if len(names) > examples else "")
            lines.append(f"  {rule}: {len(names)} x {reason} [{shown}]")
        if hidden:
            lines.append(f"  ({hidden} more candidates matched fewer than {min_depth} pattern "
                         "nodes; not listed)")
        return "\n".join(lines)


_LOGS: "weakref.WeakKeyDictionary[Graph, FusionLog]" = weakref.WeakKeyDictionary()
_last_graph: "weakref.ref[Graph] | None" = None


def fusion_log(graph: Graph) -> FusionLog:
    """The FusionLog of `graph` (created empty on first use); marks it as the latest one."""
    global _last_graph
    log = _LOGS.get(graph)
    if log is None:
        log = _LOGS[graph] = FusionLog()
    _last_graph = weakref.ref(graph)
    return log


def fusion_report(graph: Graph | None = None, examples: int = 3, min_depth: int = 2,
                  ) -> Iterator[str]:
    """Lines for `--explain-fusions`: the log of `graph`, or of the graph rules last ran on."""
    if graph is None:
        graph = _last_graph() if _last_graph is not None else None
    if graph is None:
        yield "no fusion rule ran"
        return
    yield from fusion_log(graph).format(examples, min_depth).splitlines()
