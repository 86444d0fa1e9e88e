"""Transpose sinking: move each Transpose down through the ops that can take its input
untransposed, and cancel it against the Transposes it meets, only where that pays.

For a seed Transpose T (y = Transpose(x, p)) the *region* is grown in topological order: a node
joins when every operand it reads from the region carries the same perm and its handler
(graphopt.layout.handlers) can rewrite it; its outputs then carry the perm the handler says
(identity: they leave the region clean). Operands a region node reads from outside are free when
constant (transposed at compile time) or when they are Transposes with the same perm (they join
the region as sources and vanish if all their readers are in it); any other operand needs a new
Transpose. Two regions are grown per seed: a strict one, where a node joins only when fewer
operands need a new Transpose than come from the region, and a loose one that also takes ties;
the cheaper one that pays is rewritten. A
Transpose reading a region value is merged with it (and vanishes when the composition is the
identity). A region value read outside the region needs one Transpose back.

The region is rewritten only when neither the number of Transpose nodes nor the bytes they move
(the size of their inputs) grows and one of them falls; of the two regions of a seed, the one with
fewer Transposes (then bytes) wins. This is onnxruntime's push-down idea (core/optimizer/transpose_optimization) with the
cost computed over the whole region before anything changes, instead of per node.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from graphopt.ir.graph import Graph, Node, Use, Value
from graphopt.ir.types import TensorType
from graphopt.layout.handlers import NodePlan, plan_for
from graphopt.layout.perms import (Perm, compose, invert, is_identity, nbytes, permute_type,
                                   rank_of, transpose_perm, untranspose_const)
from graphopt.layout.report import LayoutEvent, layout_log

log = logging.getLogger(__name__)

ORIGIN = "sink-transposes"


@dataclass
class Region:
    """Values that carry a perm, and the nodes that will read them untransposed."""

    seed: Node
    perms: dict[int, Perm] = field(default_factory=dict)  # id(value) -> perm it carries
    values: dict[int, Value] = field(default_factory=dict)
    sources: dict[int, Node] = field(default_factory=dict)  # id(value) -> Transpose making it
    plans: dict[int, tuple[Node, NodePlan, Perm]] = field(default_factory=dict)
    merged: dict[int, Node] = field(default_factory=dict)  # Transposes reading region values
    plain: list[tuple[Node, int]] = field(default_factory=list)  # operands needing a Transpose

    def add_source(self, transpose: Node, perm: Perm) -> None:
        out = transpose.outputs[0]
        self.perms[id(out)], self.values[id(out)] = perm, out
        self.sources[id(out)] = transpose

    def inside(self, use: Use) -> bool:
        return use.index >= 0 and (id(use.node) in self.plans or id(use.node) in self.merged)

    def outside_uses(self, value: Value) -> list[Use]:
        return [u for u in value.uses() if not self.inside(u)]

    def escapes(self, graph: Graph, value: Value) -> bool:
        return bool(self.outside_uses(value)) or any(v is value for v in graph.outputs)


@dataclass
class Cost:
    """Change in (Transpose nodes, bytes they move) if a region is rewritten."""

    count: int = 0
    bytes: int = 0
    removed: list[tuple[str, int]] = field(default_factory=list)
    inserted: list[tuple[str, int]] = field(default_factory=list)

    def remove(self, what: str, size: int) -> None:
        self.count, self.bytes = self.count - 1, self.bytes - size
        self.removed.append((what, size))

    def insert(self, what: str, size: int) -> None:
        self.count, self.bytes = self.count + 1, self.bytes + size
        self.inserted.append((what, size))

    @property
    def key(self) -> tuple[int, int]:
        return (self.count, self.bytes)

    @property
    def pays(self) -> bool:
        """Neither the Transposes nor their bytes grow, and one of them falls."""
        return self.count <= 0 and self.bytes <= 0 and (self.count < 0 or self.bytes < 0)


# --- analysis -----------------------------------------------------------------------------------
def grow_region(graph: Graph, seed: Node, loose: bool = False) -> Region | None:
    """The region of `seed`; `loose` also takes nodes with as many operands needing a new
    Transpose as operands from the region."""
    perm = transpose_perm(seed)
    if perm is None or seed.input(0) is None:
        return None
    region = Region(seed)
    region.add_source(seed, perm)
    # Readers of region values not yet visited: once none is left, no later node can join, so
    # the walk stops there instead of scanning the rest of the graph for every seed.
    pending = {id(use.node) for use in seed.outputs[0].uses()}
    start = graph.nodes.index(seed) + 1
    for node in graph.nodes[start:]:
        if not pending:
            break
        pending.discard(id(node))
        read = [(i, v) for i, v in enumerate(node.inputs)
                if v is not None and id(v) in region.perms]
        if read and not node.implicit_inputs:
            known = len(region.values)
            _try_join(region, node, read, loose)
            pending.update(id(use.node) for value in list(region.values.values())[known:]
                           for use in value.uses())
    return region


def _try_join(region: Region, node: Node, read: list[tuple[int, Value]], loose: bool) -> None:
    perms = {region.perms[id(v)] for _, v in read}
    if len(perms) != 1 or node.domain:
        return
    perm = perms.pop()
    if node.op_type == "Transpose":
        if transpose_perm(node) is not None:
            region.merged[id(node)] = node
        return
    plan = plan_for(node, perm)
    if plan is None or any(i not in plan.layout_inputs for i, _ in read):
        return
    plain, sources = [], []
    for index in plan.layout_inputs:
        value = node.input(index)
        if id(value) in region.perms or value.is_const:
            continue
        producer = value.producer
        if producer is not None and producer.op_type == "Transpose" \
                and id(producer) not in region.merged and transpose_perm(producer) == perm:
            sources.append(producer)
        elif rank_of(value) == len(perm):
            plain.append((node, index))
        else:
            return
    if len(plain) > len(read) + len(sources) - (0 if loose else 1):
        return
    for source in sources:
        region.add_source(source, perm)
    region.plain += plain
    region.plans[id(node)] = (node, plan, perm)
    for out, out_perm in zip(node.outputs, plan.out_perms):
        if not is_identity(out_perm):
            region.perms[id(out)], region.values[id(out)] = out_perm, out


def region_cost(graph: Graph, region: Region) -> Cost:
    cost = Cost()
    if any(value.implicit_readers() for value in region.values.values()):
        cost.insert("a value read inside a subgraph body", 0)  # never rewritten
        return cost
    for node, index in region.plain:
        cost.insert(f"{node.describe()} input {index}", nbytes(node.input(index)))
    for key, value in region.values.items():
        escapes = region.escapes(graph, value)
        source = region.sources.get(key)
        if source is not None and not escapes:
            cost.remove(source.describe(), nbytes(source.input(0)))
        elif source is None and escapes:
            cost.insert(f"%{value.name} leaving the region", nbytes(value))
    for node in region.merged.values():
        value = node.input(0)
        if is_identity(compose(region.perms[id(value)], transpose_perm(node))):
            cost.remove(node.describe(), nbytes(value))
    return cost


# --- rewriting ----------------------------------------------------------------------------------
def transpose_after(graph: Graph, value: Value, perm: Perm, uses: list[Use],
                    out_type: TensorType | None = None) -> Value:
    """Insert Transpose(value, perm) right after value's producer (first, for a graph input) and
    make `uses` read it; when `value` is a graph output, the Transpose's output becomes that
    output under its name. `out_type` defaults to value's type permuted."""
    anchor = value.producer
    place = {"after": anchor} if anchor is not None else {"before": graph.nodes[0]}
    node = graph.make_node("Transpose", [None], {"perm": list(perm)},
                           types=[out_type or permute_type(value.type, perm)], origin=ORIGIN,
                           **place)
    out = node.outputs[0]
    if any(v is value for v in graph.outputs):
        keep = [u for u in value.uses() if u not in uses]
        graph.replace_all_uses_with(value, out)
        for use in keep:
            use.node.replace_input(use.index, value)
    else:
        for use in uses:
            use.node.replace_input(use.index, out)
    node.replace_input(0, value)
    return out


def rewrite_region(graph: Graph, region: Region) -> None:
    untransposed = {key: src.input(0) for key, src in region.sources.items()}
    for key, value in region.values.items():  # values read outside keep their layout there
        if key in region.sources or not region.escapes(graph, value):
            continue
        transpose_after(graph, value, region.perms[key], region.outside_uses(value), value.type)
    for key, value in region.values.items():
        if key not in region.sources:
            value.type = permute_type(value.type, invert(region.perms[key]))
            untransposed[key] = value
    for node, plan, perm in region.plans.values():
        _rewrite_node(graph, node, plan, perm, untransposed)
    for node in region.merged.values():
        value = node.input(0)
        merged = compose(region.perms[id(value)], transpose_perm(node))
        source = untransposed[id(value)]
        if is_identity(merged):
            graph.replace_all_uses_with(node.outputs[0], source)
            graph.remove(node)
        else:
            node.replace_input(0, source)
            node.attrs["perm"] = list(merged)
    for source in region.sources.values():
        out = source.outputs[0]
        if not out.uses() and not any(v is out for v in graph.outputs):
            graph.remove(source)


def _rewrite_node(graph: Graph, node: Node, plan: NodePlan, perm: Perm,
                  untransposed: dict[int, Value]) -> None:
    inverse = invert(perm)
    for index in plan.layout_inputs:
        value = node.input(index)
        if id(value) in untransposed:
            node.replace_input(index, untransposed[id(value)])
        elif value.is_const:
            array = untranspose_const(value.const, perm)
            if array is not value.const:
                node.replace_input(index, graph.add_constant(array, value.name))
        else:
            t = graph.make_node("Transpose", [value], {"perm": list(inverse)}, before=node,
                                types=[permute_type(value.type, inverse)], origin=ORIGIN)
            node.replace_input(index, t.outputs[0])
    if plan.attrs is not None:
        node.attrs = plan.attrs
    for index, array in plan.const_inputs.items():
        const = graph.add_constant(array, f"{node.name}_axes")
        if index < len(node.inputs):
            node.replace_input(index, const)
        else:
            node.set_inputs(list(node.inputs) + [None] * (index - len(node.inputs)) + [const])


# --- the driver -----------------------------------------------------------------------------------
def transpose_totals(graph: Graph) -> tuple[int, int]:
    """(Transpose nodes, bytes they move) in `graph`."""
    nodes = [n for n in graph.nodes if n.op_type == "Transpose" and not n.domain]
    return len(nodes), sum(nbytes(n.input(0)) for n in nodes)


def _best_region(graph: Graph, seed: Node) -> tuple[Region, Cost] | None:
    """The cheaper of the strict and the loose region of `seed`, if one pays."""
    best = None
    for loose in (False, True):
        region = grow_region(graph, seed, loose)
        if region is None:
            return None
        cost = region_cost(graph, region)
        if cost.pays and (best is None or cost.key < best[1].key):
            best = (region, cost)
    return best


def sink_transposes(graph: Graph, max_rewrites: int = 10_000) -> int:
    """Rewrite every region that pays, sweeping the seeds in topological order until a sweep
    changes nothing; returns the number of regions rewritten."""
    journal = layout_log(graph)
    journal.start(graph)
    rewrites, changed = 0, True
    while changed and rewrites < max_rewrites:
        changed = False  # sweep again after a change: earlier refusals may pay now
        for seed in list(graph.nodes):
            if seed.graph is not graph or seed.op_type != "Transpose" or seed.domain:
                continue
            best = _best_region(graph, seed)
            if best is None:
                continue
            region, cost = best
            journal.add(LayoutEvent.of(seed, cost))
            rewrite_region(graph, region)
            rewrites, changed = rewrites + 1, True
            if rewrites >= max_rewrites:
                break
    if rewrites:
        log.debug("sink-transposes: %d regions rewritten", rewrites)
    return rewrites
