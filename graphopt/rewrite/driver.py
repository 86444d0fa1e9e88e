"""`apply_rules`: run rewrite rules over a graph to a fixed point.

Each sweep visits the nodes in reverse topological order, so the root of a larger pattern (the
final Add of a LayerNormalization) is tried before the roots of smaller patterns inside it. A
rule applies when its pattern matches, no matched intermediate leaks (other readers, graph
outputs), its check passes and its replacement succeeds; then the root's outputs are rerouted
to the replacement, matched nodes nobody reads any more are removed, and the new values take
the old names. Sweeps repeat until one rewrites nothing; a cap turns a rule pair that undoes each
other into a PassError instead of a hang.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Iterable, Sequence

from graphopt.errors import IRError, PassError
from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import PassResult
from graphopt.rewrite.log import (NO_MATCH, REJECTED, REWRITTEN, FusionLog, FusionRecord,
                                  fusion_log)
from graphopt.rewrite.pattern import Bindings, Trace, match_root
from graphopt.rewrite.rule import Match, Replacement, RewriteRefused, Rewriter, Rule

log = logging.getLogger(__name__)

MAX_SWEEPS = 100
MAX_MATCHES_PER_ROOT = 64  # structural matches examined per candidate (commutative blow-up cap)


class _RunStats:
    """Distinct candidates per rule for one apply_rules call (sweeps revisit failed ones)."""

    def __init__(self) -> None:
        self.tried: dict[str, set[str]] = defaultdict(set)
        self.matched: dict[str, set[str]] = defaultdict(set)
        self.rewritten: dict[str, int] = defaultdict(int)

    def as_dict(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rule, nodes in self.tried.items():
            out[f"{rule}.tried"] = len(nodes)
            out[f"{rule}.matched"] = len(self.matched[rule])
            out[f"{rule}.rewritten"] = self.rewritten[rule]
        return out


def apply_rules(graph: Graph, rules: Sequence[Rule], *, pass_name: str = "",
                max_sweeps: int = MAX_SWEEPS) -> PassResult:
    """Apply `rules` until none fires; returns changed + per-rule tried/matched/rewritten counts.

    Every outcome is also recorded in `fusion_log(graph)`. Unused initializers are dropped after
    a run that rewrote something (folded weights replace the originals).
    """
    by_key: dict[tuple[str, str], list[Rule]] = defaultdict(list)
    for rule in rules:
        for key in rule.root_keys:
            by_key[key].append(rule)
    stats = _RunStats()
    records: FusionLog | None = None  # the graph's log, fetched at the first candidate
    total = 0
    for _ in range(max_sweeps):
        fired: list[str] = []
        for node in reversed(list(graph.nodes)):
            # (domain, op_type) spelled out: Node.key is a property, and this loop visits every
            # node of the graph once per sweep of every rule-based pass.
            for rule in by_key.get((node.domain, node.op_type), ()):
                if records is None:
                    records = fusion_log(graph)
                if node.graph is graph and _try_rule(graph, rule, node, pass_name, stats,
                                                     records):
                    fired.append(rule.name)
                    break
        total += len(fired)
        if not fired:
            break
    else:
        names = ", ".join(sorted(set(fired)))
        raise PassError(f"rules {names} still rewrite after {max_sweeps} sweeps; two rules "
                        "probably undo each other. Check their patterns or split the pass")
    if total:
        graph.remove_unused_initializers()
    return PassResult(total > 0, stats.as_dict())


def _try_rule(graph: Graph, rule: Rule, root: Node, pass_name: str, stats: _RunStats,
              records: FusionLog) -> bool:
    """Try one rule at one root; on success the graph is rewritten and True returned. Every
    outcome goes to `records` (the graph's FusionLog)."""
    trace = Trace(commute=rule.commute)
    label = _label(root)
    stats.tried[rule.name].add(label)
    rejection: str | None = None
    rejected_depth = 0
    for count, bindings in enumerate(match_root(rule.pattern, root, trace)):
        if count >= MAX_MATCHES_PER_ROOT:
            break
        leak = None if rule.allow_shared else _leaking_intermediate(graph, bindings)
        if leak:
            trace.fail(bindings, leak)
            continue
        stats.matched[rule.name].add(label)
        match = Match(graph, root, bindings)
        rejection = rule.check(match) if rule.check else None
        rejected_depth = len(bindings.order)
        if rejection:
            continue
        rewriter = Rewriter(graph, match, rule.name)
        try:
            new_values = _as_outputs(rule.replace(rewriter, match), root)
            problem = _interface_problem(graph, root, new_values)
            if problem:
                raise RewriteRefused(problem)
        except RewriteRefused as refused:
            rewriter.undo()
            rejection = str(refused)
            continue
        _commit(graph, match, new_values, rewriter)
        stats.rewritten[rule.name] += 1
        created = tuple(n.name for n in rewriter.created)
        records.add(FusionRecord(pass_name, rule.name, label, root.op_type, REWRITTEN,
                                 depth=len(bindings.order), created=created))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s rewrote %s into %s", pass_name, rule.name, root.describe(),
                      ", ".join(created) or "existing values")
        return True
    if rejection:
        record = FusionRecord(pass_name, rule.name, label, root.op_type, REJECTED, rejection,
                              depth=rejected_depth)
    else:
        record = FusionRecord(pass_name, rule.name, label, root.op_type, NO_MATCH,
                              trace.reason, depth=max(trace.depth, 0))
    records.add(record)
    return False


def _label(node: Node) -> str:
    """The node's name (imported nodes always have one), op and first output, which says where
    the node is even when the name was made up at import."""
    name = f"'{node.name}' " if node.name else ""
    return f"{name}{node.op_type} -> %{node.outputs[0].name}"


def _leaking_intermediate(graph: Graph, bindings: Bindings) -> str | None:
    """Why removing the matched nodes other than the root would lose a value, or None."""
    matched = {id(n) for n in bindings.order}
    outputs = {id(v) for v in graph.outputs}
    for node in bindings.order[1:]:
        for out in node.outputs:
            if id(out) in outputs:
                return f"the inner {node.op_type}'s output is a graph output"
            readers = sorted({u.node.op_type for u in out.uses() if id(u.node) not in matched})
            if readers:
                return (f"the inner {node.op_type}'s output is also read outside the pattern "
                        f"(by {', '.join(readers)})")
    return None


def _as_outputs(replacement: Replacement, root: Node) -> list[Value | None]:
    """The replacement as one entry per root output; unused extra outputs may be None."""
    values = [replacement] if isinstance(replacement, Value) else list(replacement)
    values += [None] * (len(root.outputs) - len(values))
    if len(values) > len(root.outputs):
        raise PassError(f"a replacement for {root.describe()} returned {len(values)} values for "
                        f"{len(root.outputs)} outputs")
    return values


def _interface_problem(graph: Graph, root: Node, new_values: Iterable[Value | None]) -> str | None:
    """A reason to refuse when rerouting would drop a read output or rename a graph output."""
    interface = {id(v) for v in (*graph.inputs, *graph.outputs)}
    outputs = {id(v) for v in graph.outputs}
    for old, new in zip(root.outputs, new_values):
        if new is None:
            if old.uses() or id(old) in outputs:
                return f"output %{old.name} is read but the replacement does not produce it"
        elif id(old) in outputs and new is not old and (
                id(new) in interface or new.is_const or new.implicit_readers()):
            return (f"graph output %{old.name} would become %{new.name}, which cannot take its "
                    "name (a graph input, output, constant or subgraph-read value), renaming the "
                    "model's output")
    return None


def _commit(graph: Graph, match: Match, new_values: list[Value | None], rw: Rewriter) -> None:
    root = match.root
    outputs = {id(v) for v in graph.outputs}
    renames: list[tuple[Value, Value]] = []
    for old, new in zip(root.outputs, new_values):
        if new is not None and new is not old:
            # A graph output hands its name over inside replace_all_uses_with; others are
            # renamed below, once the old value is gone.
            if id(old) not in outputs and any(new.producer is n for n in rw.created):
                renames.append((old, new))
            graph.replace_all_uses_with(old, new)
    graph.remove(_dead_nodes(graph, match.nodes))
    for old, new in renames:
        if new.name != old.name and old.producer is None:
            try:
                graph.rename_value(new, old.name)  # keep the model's value names stable
            except IRError:
                pass  # the old name is still taken (a graph output kept it); keep the fresh one


def _dead_nodes(graph: Graph, nodes: Sequence[Node]) -> list[Node]:
    """The matched nodes that nothing outside the returned set reads any more."""
    outputs = {id(v) for v in graph.outputs}
    doomed: dict[int, Node] = {}
    grew = True
    while grew:
        grew = False
        for node in nodes:
            if id(node) in doomed:
                continue
            if all(id(out) not in outputs and all(id(u.node) in doomed or u.node is node
                                                  for u in out.uses())
                   for out in node.outputs):
                doomed[id(node)] = node
                grew = True
    return list(doomed.values())
