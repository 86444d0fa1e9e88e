"""Whole-graph layout choice by cost: every node that reads or writes a rank-4 activation gets
one layout, minimizing  sum of kernel costs + sum of conversion costs  over the graph.

Kernel costs come from the declarations (graphopt.layout.kernels); a conversion costs the bytes
it moves (the value's size, padded when a blocked layout is involved; a backend may price each
byte and add a fixed cost per conversion, its kernel call: Edge), paid on each producer ->
consumer edge whose two ends differ (a value read in another layout by two consumers counts twice,
an upper bound). Graph inputs and outputs are pinned to their declared layout (NCHW) and nodes no
kernel is declared for are pinned to NCHW, ONNX's order; weights take their consumer's layout at
compile time, so constants cost nothing.

The minimization is alpha-expansion (Boykov, Veksler, Zabih 2001): start from all-NCHW, then for
each layout a, one s-t minimum cut (networkx) decides which nodes switch to a, optimally for that
move; repeat until no move lowers the cost. With two layouts one expansion is the exact optimum;
with more, the result is within a factor 2 of it (conversion costs are a metric). The cost never
exceeds all-NCHW's, so a blocked layout whose conversions cost more than its kernels save is
refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import networkx as nx

from graphopt.ir.graph import Graph, Node, Value
from graphopt.layout.kernels import NCHW, KernelTable, padding_factor
from graphopt.layout.perms import nbytes

Site = str  # "node:<name>", "input:<name>", "output:<name>"


@dataclass(frozen=True)
class Edge:
    """A value read at `dst` and written at `src`: `nbytes` in ONNX layout, `shape` logical."""

    src: Site
    dst: Site
    name: str
    nbytes: float
    shape: Sequence | None
    free_into: str = ""  # a layout whose kernel at dst reads the value in any layout
    fixed: float = 0.0  # what a conversion costs besides its bytes (a kernel call)
    per_byte: float = 1.0  # what each byte it moves costs (a backend prices them by threads)

    @classmethod
    def of(cls, src: Site, dst: Site, value: Value) -> "Edge":
        return cls(src, dst, value.name, nbytes(value), value.shape)

    def moved(self, a: str, b: str) -> float:
        """Bytes a conversion from `a` to `b` moves (0 when none is needed)."""
        if a == b or b == self.free_into:
            return 0.0
        return self.nbytes * max(padding_factor(self.shape, a), padding_factor(self.shape, b))

    def cost(self, a: str, b: str) -> float:
        moved = self.moved(a, b)
        return moved * self.per_byte + self.fixed if moved else 0.0


@dataclass
class Problem:
    """Sites with a cost per layout, and the edges between them."""

    layouts: tuple[str, ...]
    unary: dict[Site, dict[str, float]] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    nodes: dict[Site, Node] = field(default_factory=dict)
    reasons: dict[Site, str] = field(default_factory=dict)  # why a site has no blocked kernel
    notes: dict[Site, str] = field(default_factory=dict)  # what a site's NCHW kernel is

    def energy(self, labels: dict[Site, str]) -> float:
        total = sum(costs[labels[s]] for s, costs in self.unary.items())
        return total + sum(e.cost(labels[e.src], labels[e.dst]) for e in self.edges)


def _is_activation(value: Value | None) -> bool:
    return value is not None and not value.is_const and value.shape is not None \
        and len(value.shape) == 4


def build_problem(graph: Graph, table: KernelTable) -> Problem:
    layouts = table.target.layouts
    problem = Problem(layouts)
    pinned = {layout: (0.0 if layout == NCHW else math.inf) for layout in layouts}
    site_of: dict[int, Site] = {}
    for value in graph.inputs:
        if _is_activation(value):
            site_of[id(value)] = f"input:{value.name}"
            problem.unary[site_of[id(value)]] = dict(pinned)
    for node in graph.nodes:
        touched = [v for v in (*node.inputs, *node.outputs) if _is_activation(v)]
        if not touched:
            continue
        site = f"node:{node.name or node.outputs[0].name}"
        problem.nodes[site] = node
        problem.unary[site] = ({layout: table.cost(node, layout) for layout in layouts}
                               if table.supports_any(node) else dict(pinned))
        for index, value in enumerate(node.inputs):
            if _is_activation(value) and id(value) in site_of:
                problem.edges.append(Edge.of(site_of[id(value)], site, value))
        for out in node.outputs:
            if _is_activation(out):
                site_of[id(out)] = site
    for value in graph.outputs:
        if _is_activation(value) and id(value) in site_of:
            sink = f"output:{value.name}"
            problem.unary[sink] = dict(pinned)
            problem.edges.append(Edge.of(site_of[id(value)], sink, value))
    return problem


def _expansion(problem: Problem, labels: dict[Site, str], alpha: str, big: float
               ) -> dict[Site, str]:
    """The best labelling reachable from `labels` by switching any set of sites to `alpha`."""
    def finite(x: float) -> float:
        return big if math.isinf(x) else x

    keep = {s: finite(c[labels[s]]) for s, c in problem.unary.items()}
    switch = {s: finite(c[alpha]) for s, c in problem.unary.items()}
    cut = nx.DiGraph()
    cut.add_nodes_from(["s", "t"])
    for e in problem.edges:  # E(x_p, x_q), x = 1: switch to alpha (Kolmogorov-Zabih)
        a = e.cost(labels[e.src], labels[e.dst])
        b = e.cost(labels[e.src], alpha)
        c = e.cost(alpha, labels[e.dst])
        switch[e.src] += c - a
        switch[e.dst] -= c
        capacity = b + c - a
        if capacity > 0:
            old = cut.get_edge_data(e.src, e.dst, {"capacity": 0.0})["capacity"]
            cut.add_edge(e.src, e.dst, capacity=old + capacity)
    for site in problem.unary:
        low = min(keep[site], switch[site])
        if switch[site] > low:
            cut.add_edge("s", site, capacity=switch[site] - low)
        if keep[site] > low:
            cut.add_edge(site, "t", capacity=keep[site] - low)
    _, (_, sink_side) = nx.minimum_cut(cut, "s", "t")
    return {s: (alpha if s in sink_side else labels[s]) for s in problem.unary}


def solve(problem: Problem, max_rounds: int = 10) -> dict[Site, str]:
    """Alpha-expansion from all-NCHW until no expansion lowers the energy."""
    labels = {site: NCHW for site in problem.unary}
    finite = [c for costs in problem.unary.values() for c in costs.values() if not math.isinf(c)]
    big = 10 * (sum(finite) + sum(e.nbytes * e.per_byte * 64 + e.fixed
                                  for e in problem.edges)) + 1
    best = problem.energy(labels)
    for _ in range(max_rounds):
        improved = False
        for alpha in problem.layouts:
            candidate = _expansion(problem, labels, alpha, big)
            energy = problem.energy(candidate)
            if energy < best - 1e-9 * max(1.0, abs(best)):
                labels, best, improved = candidate, energy, True
        if not improved:
            break
    return labels


@dataclass(frozen=True)
class Conversion:
    value: str
    src: str
    dst: str
    bytes: float  # moved
    cost: float  # the bytes at the edge's per_byte plus its fixed cost


@dataclass(frozen=True)
class Chain:
    """A connected run of sites in one layout other than NCHW (joined by the values they pass
    each other), with what it costs and saves: the report's unit."""

    layout: str
    convs: tuple[str, ...]  # compute nodes in it, in graph order
    others: tuple[str, ...]  # op types of its other nodes (pools, activations, adds), in order
    inserted: tuple[Conversion, ...]  # conversions at its boundary
    read_as_is: tuple[Conversion, ...]  # boundary values its kernels read in the other layout
    inner_values: int  # values passed inside it: no conversion, where per-node choices convert
    inner_bytes: float
    kernel_saving: float  # sum over its sites of cost[NCHW] - cost[layout]
    nodes: tuple[str, ...] = ()  # every node in it, in graph order

    @property
    def net_saving(self) -> float:
        return self.kernel_saving - sum(c.cost for c in self.inserted)


@dataclass(frozen=True)
class Decision:
    """One compute node: the layout chosen, its kernel cost per layout, and, when it keeps NCHW
    while another layout's kernel is cheaper, what switching it alone would add in conversions."""

    node: str
    op: str
    layout: str
    kernel_costs: dict[str, float]
    alternative: str | None = None
    conversion_bytes: float = 0.0
    reason: str = ""  # why no blocked kernel could run it, when none could
    note: str = ""  # what its kernels are in each layout


@dataclass
class LayoutChoice:
    labels: dict[Site, str]
    cost: float
    baseline: float  # everything NCHW
    conversions: list[Conversion]  # inserted (each value once per layout it is read in)
    decisions: list[Decision]
    chains: list[Chain] = field(default_factory=list)
    read_as_is: list[Conversion] = field(default_factory=list)  # read unconverted (bytes 0)
    seconds_per_byte: float = 0.0  # when costs are times (a backend's model): seconds per unit
    priced_for: str = ""  # what the times are for, e.g. "2 threads"


def choose_layouts(graph: Graph, table: KernelTable, compute_ops: Sequence[str] = ("Conv",),
                   ) -> LayoutChoice:
    """Pick a layout per node of `graph` (not changed) and say why, per `compute_ops` node."""
    return choose(build_problem(graph, table), compute_ops)


def choose(problem: Problem, compute_ops: Sequence[str] = ("Conv",),
           forced: dict[Site, str] | None = None, explained_ops: Sequence[str] = ()
           ) -> LayoutChoice:
    """Solve `problem` (or take the `forced` labels) and explain the choice for each
    `compute_ops` node, and each `explained_ops` node (counted with the others in chains)."""
    labels = forced if forced is not None else solve(problem)
    crossing = [e for e in problem.edges if labels[e.src] != labels[e.dst]]
    conversions = list({(e.name, labels[e.dst]): _conversion(e, labels)
                        for e in crossing if labels[e.dst] != e.free_into}.values())
    read_as_is = [_conversion(e, labels) for e in crossing if labels[e.dst] == e.free_into]
    decisions = [_decide(problem, labels, site, node) for site, node in problem.nodes.items()
                 if node.op_type in compute_ops or node.op_type in explained_ops]
    return LayoutChoice(labels, problem.energy(labels),
                        problem.energy({s: NCHW for s in problem.unary}), conversions, decisions,
                        chains(problem, labels, compute_ops), read_as_is)


def _conversion(e: Edge, labels: dict[Site, str]) -> Conversion:
    src, dst = labels[e.src], labels[e.dst]
    return Conversion(e.name, src, dst, e.moved(src, dst), e.cost(src, dst))


def chains(problem: Problem, labels: dict[Site, str], compute_ops: Sequence[str] = ("Conv",)
           ) -> list[Chain]:
    """The connected runs of non-NCHW sites (see Chain), in graph order."""
    graph = nx.Graph()
    graph.add_nodes_from(s for s, label in labels.items() if label != NCHW)
    graph.add_edges_from((e.src, e.dst) for e in problem.edges
                         if labels[e.src] == labels[e.dst] != NCHW)
    order = {site: i for i, site in enumerate(problem.unary)}
    result = []
    for sites in sorted(nx.connected_components(graph), key=lambda c: min(order[s] for s in c)):
        layout = labels[next(iter(sites))]
        boundary = [e for e in problem.edges if (e.src in sites) != (e.dst in sites)]
        inner = {e.name: e.nbytes for e in problem.edges if e.src in sites and e.dst in sites}
        inserted = {(e.name, labels[e.dst]): _conversion(e, labels) for e in boundary
                    if labels[e.dst] != e.free_into}
        nodes = [problem.nodes[s] for s in sorted(sites, key=order.__getitem__)
                 if s in problem.nodes]
        convs = tuple(n.name for n in nodes if n.op_type in compute_ops)
        others = tuple(dict.fromkeys(n.op_type for n in nodes if n.op_type not in compute_ops))
        result.append(Chain(
            layout, convs, others, tuple(inserted.values()),
            tuple(_conversion(e, labels) for e in boundary if labels[e.dst] == e.free_into),
            len(inner), float(sum(inner.values())),
            sum(problem.unary[s][NCHW] - problem.unary[s][layout] for s in sites),
            tuple(n.name for n in nodes)))
    return result


def _decide(problem: Problem, labels: dict[Site, str], site: Site, node: Node) -> Decision:
    costs = problem.unary[site]
    chosen = labels[site]
    cheapest = min(costs, key=lambda layout: costs[layout])
    if cheapest == chosen or costs[cheapest] >= costs[chosen]:
        return Decision(node.name, node.op_type, chosen, dict(costs),
                        reason=problem.reasons.get(site, ""), note=problem.notes.get(site, ""))
    alone = dict(labels)
    alone[site] = cheapest
    touching = [e for e in problem.edges if site in (e.src, e.dst)]
    added = sum(e.cost(alone[e.src], alone[e.dst]) - e.cost(labels[e.src], labels[e.dst])
                for e in touching)
    return Decision(node.name, node.op_type, chosen, dict(costs), cheapest, added)
