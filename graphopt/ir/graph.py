"""The graphopt IR: Graph, Node and Value with use-def chains.

Invariants (checked by `Graph.verify`):
  * every Value has at most one producer (a Node output) or is a graph input or a constant;
  * a Value's use list holds exactly the (node, input index) pairs that read it;
  * `Graph.nodes` is in topological order;
  * value names are unique within the graph.

Use lists are updated in exactly one place, `Node._set_input`; everything else goes through it.
Mutation that can break the order (insert, remove, replace) goes through Graph methods.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import onnx

from graphopt.errors import IRError
from graphopt.ir.types import DType, QuantParams, TensorType


class Use(NamedTuple):
    """One read of a Value: `node.inputs[index]`. index == -1 means an implicit read from a subgraph.

    A named tuple (immutable, compared field by field in C): use lists are searched on every
    input change, and a frozen dataclass made that search a Python call per entry."""

    node: "Node"
    index: int


class Value:
    """An SSA value: a graph input, a constant (initializer) or one output of a node."""

    __slots__ = ("name", "type", "const", "quant", "producer", "_uses", "onnx_type", "doc",
                 "default")

    def __init__(self, name: str, type: TensorType | None = None, const: np.ndarray | None = None):
        self.name = name
        self.type = type
        self.const = const
        self.quant: QuantParams | None = None
        self.producer: Node | None = None
        self._uses: list[Use] = []
        # Non-tensor types (sequence, optional, map) are kept verbatim so export is lossless.
        self.onnx_type: onnx.TypeProto | None = None
        self.doc = ""
        # A graph input's default (an initializer also listed as input, IR >= 4): used when the
        # input is not fed, never folded; export writes it back as initializer + input.
        self.default: np.ndarray | None = None

    # --- queries -------------------------------------------------------------------------------
    def uses(self) -> list[Use]:
        """A copy of the use list, so callers may rewrite while iterating."""
        return list(self._uses)

    @property
    def users(self) -> list["Node"]:
        seen: dict[int, Node] = {}
        for use in self._uses:
            seen.setdefault(id(use.node), use.node)
        return list(seen.values())

    def implicit_readers(self) -> list["Node"]:
        """Nodes whose subgraph bodies read this value by name."""
        return [u.node for u in self._uses if u.index < 0]

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def dtype(self) -> DType | None:
        return None if self.type is None else self.type.dtype

    @property
    def shape(self) -> tuple | None:
        return None if self.type is None else self.type.shape

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One operator application. Inputs may be None for omitted optional inputs."""

    __slots__ = ("op_type", "domain", "name", "attrs", "_inputs", "outputs", "graph",
                 "implicit_inputs", "origin", "doc", "fusion")

    def __init__(self, op_type: str, inputs: Sequence[Value | None], outputs: Sequence[Value],
                 attrs: dict[str, Any] | None = None, name: str = "", domain: str = ""):
        self.op_type = op_type
        self.domain = "" if domain == "ai.onnx" else domain
        self.name = name
        # Attribute values are python scalars, lists, str, np.ndarray (tensors), or
        # onnx.GraphProto (control-flow bodies, kept verbatim).
        self.attrs: dict[str, Any] = dict(attrs or {})
        self._inputs: list[Value | None] = []
        self.outputs: list[Value] = list(outputs)
        self.graph: Graph | None = None
        # Outer-scope values read by subgraph attributes; they count as uses (index -1).
        self.implicit_inputs: list[Value] = []
        self.origin = ""  # the pass or rule that created this node
        self.doc = ""
        # The FusionGroup (graphopt.ir.fusion) this node belongs to, stamped by group-epilogues.
        self.fusion: Any = None
        for i, value in enumerate(inputs):
            self._inputs.append(None)
            self._set_input(i, value)
        for i, out in enumerate(self.outputs):
            if out.producer is not None:
                raise IRError(f"value %{out.name} already has producer {out.producer.describe()}")
            out.producer = self

    # --- the single place where use lists change ----------------------------------------------
    def _set_input(self, index: int, value: Value | None) -> None:
        old = self._inputs[index]
        if old is not None:
            old._uses.remove(Use(self, index))
        self._inputs[index] = value
        if value is not None:
            value._uses.append(Use(self, index))

    # --- public API ----------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    def replace_input(self, index: int, value: Value | None) -> None:
        self._set_input(index, value)

    def set_inputs(self, values: Sequence[Value | None]) -> None:
        """Replace the whole input list (arity may change)."""
        for i in range(len(self._inputs)):
            self._set_input(i, None)
        self._inputs = []
        for i, value in enumerate(values):
            self._inputs.append(None)
            self._set_input(i, value)

    def set_implicit_inputs(self, values: Iterable[Value]) -> None:
        for v in self.implicit_inputs:
            v._uses.remove(Use(self, -1))
        self.implicit_inputs = []
        for v in values:
            self.implicit_inputs.append(v)
            v._uses.append(Use(self, -1))

    def _detach(self) -> None:
        """Drop this node's reads (used when it is erased)."""
        for i in range(len(self._inputs)):
            self._set_input(i, None)
        self.set_implicit_inputs([])

    @property
    def key(self) -> tuple[str, str]:
        """Registry key of the op: (domain, op_type) with the default domain spelled ''."""
        return (self.domain, self.op_type)

    @property
    def subgraphs(self) -> list[onnx.GraphProto]:
        out: list[onnx.GraphProto] = []
        for value in self.attrs.values():
            if isinstance(value, onnx.GraphProto):
                out.append(value)
            elif isinstance(value, list) and value and isinstance(value[0], onnx.GraphProto):
                out.extend(value)
        return out

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, index: int) -> Value | None:
        """The index-th input, or None when absent or omitted."""
        return self._inputs[index] if index < len(self._inputs) else None

    def const_input(self, index: int) -> np.ndarray | None:
        value = self.input(index)
        return None if value is None else value.const

    def const_ints(self, index: int) -> list[int] | None:
        """Input `index` as Python ints when it is a constant integer tensor (axes, pads, a
        shape...), else None: missing, computed at run time, or not integer."""
        array = self.const_input(index)
        if array is None or array.dtype.kind not in "iu":
            return None
        return [int(v) for v in array.reshape(-1)]

    def describe(self) -> str:
        op = f"{self.domain}::{self.op_type}" if self.domain else self.op_type
        return f"{op} node '{self.name}'" if self.name else f"{op} node"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


@dataclass
class ModelInfo:
    """Model-level facts carried through import/export unchanged."""

    ir_version: int = onnx.IR_VERSION
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    graph_name: str = "graph"
    graph_doc: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    functions: list[onnx.FunctionProto] = field(default_factory=list)


# Graph.remove looks up at most this many nodes one by one (else one filtering walk).
_FEW_NODES = 8


class Graph:
    """A dataflow graph in topological order, with inputs, outputs and named constants."""

    def __init__(self, opset_imports: dict[str, int] | None = None):
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.initializers: dict[str, Value] = {}
        self.opset_imports: dict[str, int] = dict(opset_imports or {"": 17})
        self.info = ModelInfo()
        self._names: set[str] = set()
        self._counter = itertools.count()
        self._insert_at: int | None = None

    # --- names ---------------------------------------------------------------------------------
    def fresh_name(self, prefix: str) -> str:
        """A value/node name not used yet in this graph, reserved from now on."""
        name = self._unused_name(prefix)
        self._names.add(name)
        return name

    def _unused_name(self, prefix: str) -> str:
        name = prefix
        while name in self._names:
            name = f"{prefix}_{next(self._counter)}"
        return name

    @property
    def opset(self) -> int:
        return self.opset_imports.get("", 0)

    # --- creating values -----------------------------------------------------------------------
    def add_input(self, name: str, type: TensorType) -> Value:
        value = Value(self.fresh_name(name), type)
        self.inputs.append(value)
        return value

    def add_constant(self, array: np.ndarray, name: str = "const") -> Value:
        """A new initializer holding `array` (copied into a numpy array; dtype kept)."""
        array = np.asarray(array)
        value = Value(self.fresh_name(name), TensorType(DType.from_numpy(array.dtype), array.shape),
                      const=array)
        self.initializers[value.name] = value
        return value

    def _register_value(self, value: Value) -> None:
        if value.name in self._names:
            raise IRError(f"duplicate value name %{value.name}")
        self._names.add(value.name)

    # --- creating and placing nodes ------------------------------------------------------------
    def make_node(self, op_type: str, inputs: Sequence[Value | None], attrs: dict | None = None, *,
                  outputs: int | Sequence[str] = 1, types: Sequence[TensorType | None] | None = None,
                  name: str = "", domain: str = "", before: Node | None = None,
                  after: Node | None = None, origin: str = "") -> Node:
        """Create a node with fresh output values and insert it.

        Placement: before/after an anchor node, else at the current `insertion_point`, else at
        the end. `types` sets the output types (a pass that creates a value sets its type).
        """
        if isinstance(outputs, int):
            out_names = [self.fresh_name(f"{name or op_type.lower()}_out") for _ in range(outputs)]
        else:
            out_names = [self.fresh_name(n) for n in outputs]
        types = list(types) if types is not None else [None] * len(out_names)
        out_values = [Value(n, t) for n, t in zip(out_names, types)]
        node = Node(op_type, inputs, out_values, attrs, name=self.fresh_name(name or op_type),
                    domain=domain)
        node.origin = origin
        if before is not None:
            self.insert_before(before, node)
        elif after is not None:
            self.insert_after(after, node)
        elif self._insert_at is not None:
            self._place(self._insert_at, node)
            self._insert_at += 1
        else:
            self._place(len(self.nodes), node)
        return node

    def append(self, node: Node) -> Node:
        """Append a node built elsewhere (the importer); its names are registered."""
        self._place(len(self.nodes), node, register_names=True)
        return node

    def insert_before(self, anchor: Node, node: Node) -> None:
        self._place(self._index(anchor), node)

    def insert_after(self, anchor: Node, node: Node) -> None:
        self._place(self._index(anchor) + 1, node)

    class _InsertionPoint:
        def __init__(self, graph: "Graph", index: int):
            self.graph, self.index, self.saved = graph, index, None

        def __enter__(self) -> "Graph":
            self.saved = self.graph._insert_at
            self.graph._insert_at = self.index
            return self.graph

        def __exit__(self, *exc: object) -> None:
            self.graph._insert_at = self.saved

    def inserting_before(self, anchor: Node) -> "Graph._InsertionPoint":
        """Context manager: nodes made inside it go right before `anchor`, in creation order."""
        return Graph._InsertionPoint(self, self._index(anchor))

    def _index(self, node: Node) -> int:
        if node.graph is not self:
            raise IRError(f"{node.describe()} does not belong to this graph")
        try:
            return self.nodes.index(node)
        except ValueError:
            raise IRError(f"{node.describe()} is not in the node list") from None

    def _place(self, index: int, node: Node, register_names: bool = False) -> None:
        if node.graph is not None:
            raise IRError(f"{node.describe()} already belongs to a graph")
        if register_names:
            for out in node.outputs:
                self._register_value(out)
            if node.name:
                self._names.add(node.name)
        node.graph = self
        self.nodes.insert(index, node)

    # --- rewriting -----------------------------------------------------------------------------
    def replace_all_uses_with(self, old: Value, new: Value, replace_graph_outputs: bool = True) -> None:
        """Point every reader of `old` at `new`.

        Graph outputs keep their public name: when `old` is a graph output and `new` is not an
        input/output already, `new` takes over `old`'s name, so the model's interface never changes.
        """
        if old is new:
            return
        for use in old.uses():
            if use.index >= 0:
                use.node.replace_input(use.index, new)
            else:
                _rename_in_subgraphs(use.node, old.name, new.name)
                use.node.set_implicit_inputs(new if v is old else v for v in use.node.implicit_inputs)
        if replace_graph_outputs and old in self.outputs:
            self._replace_output(old, new)

    def can_take_output_name(self, new: Value) -> bool:
        """Whether `replace_all_uses_with(old, new)` keeps a graph output's name: true unless
        `new` is a graph input or output already, a constant, or read by name from a subgraph
        (then the output would be renamed; keep an Identity instead)."""
        interface = set(map(id, self.inputs)) | set(map(id, self.outputs))
        return id(new) not in interface and not new.is_const and not new.implicit_readers()

    def _replace_output(self, old: Value, new: Value) -> None:
        """Make the graph output that was `old` come from `new`, keeping its public name: `new`
        takes the name when it can, else an Identity named like the output forwards `new`."""
        public = old.name
        self.rename_value(old, self._unused_name(public + "__replaced"))
        if self.can_take_output_name(new):
            self.rename_value(new, public)
            replacement = new
        else:
            anchor = new.producer
            identity = Node("Identity", [new], [Value(public, new.type)],
                            name=self.fresh_name("keep_output_name"))
            identity.origin = "replace_all_uses_with"
            self._register_value(identity.outputs[0])
            if anchor is not None and anchor.graph is self:
                self.insert_after(anchor, identity)
            else:
                self._place(0, identity)
            replacement = identity.outputs[0]
        self.outputs = [replacement if v is old else v for v in self.outputs]

    def rename_value(self, value: Value, name: str) -> None:
        if value.name == name:
            return
        if name in self._names:
            raise IRError(f"cannot rename %{value.name} to %{name}: the name is taken")
        self._names.discard(value.name)
        self._names.add(name)
        if value.is_const:
            self.initializers.pop(value.name, None)
            self.initializers[name] = value
        value.name = name

    def remove(self, nodes: Node | Iterable[Node], safe: bool = True) -> None:
        """Erase nodes. With safe=True, first check that none of their outputs is still read
        (outside the set being removed) or is a graph output; on failure nothing changes."""
        doomed = [nodes] if isinstance(nodes, Node) else list(nodes)
        doomed_ids = {id(n) for n in doomed}
        if safe:
            outputs = {id(v) for v in self.outputs}
            for node in doomed:
                for out in node.outputs:
                    if id(out) in outputs:
                        raise IRError(f"cannot remove {node.describe()}: %{out.name} is a graph output")
                    for use in out._uses:
                        if id(use.node) not in doomed_ids:
                            raise IRError(f"cannot remove {node.describe()}: %{out.name} is still "
                                          f"read by {use.node.describe()}")
        kept = [n for n in self.nodes if id(n) not in doomed_ids] \
            if len(doomed) > _FEW_NODES else self._without(doomed)
        for node in doomed:
            node._detach()
            node.graph = None
            for out in node.outputs:
                self._names.discard(out.name)
                out.producer = None
        self.nodes = kept

    def _without(self, doomed: list[Node]) -> list[Node]:
        """self.nodes minus a few nodes, searched by list.remove (a C loop over the list): a
        rewrite removes a handful of nodes at a time, and a Python walk over the whole list
        for each rewrite made rule-based passes quadratic in the graph size."""
        kept = list(self.nodes)  # a new list: callers may be iterating over the old one
        for node in doomed:
            if node.graph is self:
                kept.remove(node)
        return kept

    def remove_unused_initializers(self) -> int:
        unused = [name for name, v in self.initializers.items()
                  if not v._uses and v not in self.outputs]
        for name in unused:
            del self.initializers[name]
            self._names.discard(name)
        return len(unused)

    def sort(self) -> None:
        """Restore topological order, keeping the current order wherever it is already valid."""
        import networkx as nx

        position = {id(n): i for i, n in enumerate(self.nodes)}
        dag = nx.DiGraph()
        dag.add_nodes_from(position.values())
        for node in self.nodes:
            for value in (*node.inputs, *node.implicit_inputs):
                if value is not None and value.producer is not None:
                    dag.add_edge(position[id(value.producer)], position[id(node)])
        try:
            order = list(nx.lexicographical_topological_sort(dag))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(dag)
            names = " -> ".join(self.nodes[a].describe() for a, _ in cycle)
            raise IRError(f"the graph has a cycle: {names}") from None
        self.nodes = [self.nodes[i] for i in order]

    # --- queries -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes))

    def __len__(self) -> int:
        return len(self.nodes)

    def values(self) -> Iterator[Value]:
        """Every value: inputs, constants, then node outputs in order."""
        yield from self.inputs
        yield from self.initializers.values()
        for node in self.nodes:
            yield from node.outputs

    def value(self, name: str) -> Value:
        for v in self.values():
            if v.name == name:
                return v
        raise KeyError(name)

    def live_nodes(self) -> list[Node]:
        """Nodes at least one output of which reaches a graph output, in graph order.

        Values read by subgraph bodies count as read. The one definition of liveness on the IR
        (dead-code elimination and the backend's emitter check both use it).
        """
        live: set[int] = {id(v) for v in self.outputs}
        kept: list[Node] = []
        for node in reversed(self.nodes):
            if any(id(out) in live for out in node.outputs):
                live.update(id(v) for v in (*node.inputs, *node.implicit_inputs) if v is not None)
                kept.append(node)
        return kept[::-1]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            key = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def num_parameters(self) -> int:
        return sum(int(v.const.size) for v in self.initializers.values())

    def to_networkx(self) -> Any:
        """A networkx.DiGraph over nodes (edges carry the value), for graph algorithms."""
        import networkx as nx

        dag = nx.DiGraph()
        for node in self.nodes:
            dag.add_node(node)
            for value in node.inputs:
                if value is not None and value.producer is not None:
                    dag.add_edge(value.producer, node, value=value)
        return dag

    def verify(self) -> None:
        from graphopt.ir.verify import verify_graph

        verify_graph(self)

    def copy(self) -> "Graph":
        """An independent copy: new Graph, Node and Value objects with the same names and order.

        Constant arrays are shared, not duplicated (passes replace a Value's `const`, they never
        write into the array), so copying a model with large weights costs no weight memory.
        Attribute dicts are copied shallowly; subgraph bodies (onnx.GraphProto) are deep-copied
        because renames rewrite them in place.
        """
        import copy as _copy

        new = Graph(self.opset_imports)
        new.info = _copy.deepcopy(self.info)
        new._names = set(self._names)
        mapping: dict[int, Value] = {}

        def clone(value: Value) -> Value:
            twin = mapping.get(id(value))
            if twin is None:
                twin = Value.__new__(Value)
                for slot in _VALUE_SLOTS_COPIED:
                    setattr(twin, slot, getattr(value, slot))
                twin.producer, twin._uses = None, []
                mapping[id(value)] = twin
            return twin

        new.inputs = [clone(v) for v in self.inputs]
        new.initializers = {name: clone(v) for name, v in self.initializers.items()}
        for node in self.nodes:
            attrs = {k: (_copy.deepcopy(a) if isinstance(a, onnx.GraphProto) else a)
                     for k, a in node.attrs.items()}
            twin = Node(node.op_type, [None if v is None else clone(v) for v in node.inputs],
                        [clone(v) for v in node.outputs], attrs, node.name, node.domain)
            twin.set_implicit_inputs([clone(v) for v in node.implicit_inputs])
            for slot in set(Node.__slots__) - _NODE_SLOTS_SET_BY_COPY:
                setattr(twin, slot, getattr(node, slot))
            twin.graph = new
            new.nodes.append(twin)
        new.outputs = [clone(v) for v in self.outputs]
        _copy_fusion_groups(self, new)
        return new

    def __str__(self) -> str:
        from graphopt.ir.printer import format_graph

        return format_graph(self)


# Value slots Graph.copy takes over by reference (producer and uses are rebuilt).
_VALUE_SLOTS_COPIED = tuple(s for s in Value.__slots__ if s not in ("producer", "_uses"))
# Node slots that Graph.copy rebuilds itself; every other slot is copied by reference.
_NODE_SLOTS_SET_BY_COPY = {"op_type", "domain", "name", "attrs", "_inputs", "outputs", "graph",
                           "implicit_inputs", "fusion"}


def _copy_fusion_groups(source: Graph, target: Graph) -> None:
    """Stamp on `target` (a node-for-node copy of `source`) the intact fusion groups of source."""
    from graphopt.ir.fusion import fusion_groups, stamp_fusion_groups

    twin_of = {id(a): b for a, b in zip(source.nodes, target.nodes)}
    groups = fusion_groups(source)
    if groups:
        stamp_fusion_groups(target, [
            type(g)(twin_of[id(g.anchor)], tuple(twin_of[id(n)] for n in g.epilogue), g.name)
            for g in groups])


def _rename_in_subgraphs(node: Node, old: str, new: str) -> None:
    """Rewrite outer-scope references from `old` to `new` inside a node's subgraph bodies."""
    def visit(graph: onnx.GraphProto) -> None:
        for inner in graph.node:
            for i, name in enumerate(inner.input):
                if name == old:
                    inner.input[i] = new
            for attribute in inner.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)
                for g in attribute.graphs:
                    visit(g)
        for out in graph.output:
            if out.name == old:
                out.name = new

    for body in node.subgraphs:
        visit(body)
