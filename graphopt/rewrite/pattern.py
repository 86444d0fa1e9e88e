"""Patterns over the IR: nested op patterns with named captures, and the matcher.

A pattern reads like the subgraph it finds:

    x, w, b = Var("x"), Const("w"), Const("b")
    pattern = Op("Add", Op("MatMul", x, w, name="matmul"), b)

* `Var(name)` matches any value; a name seen twice must bind the same value both times.
* `Const(name, value=...)` matches a constant (an initializer); with `value`, every element must
  equal that scalar (within `rtol`).
* `Op(op, *inputs, name=..., attrs=...)` matches the node producing a value (output 0 only).
  `op` is an op type, several op types, or an op family from graphopt.ir.ops. A trailing `...`
  leaves further inputs unconstrained; otherwise the node may have no inputs beyond the pattern's.
  The same Op object used twice must match the same node, so DAG-shaped patterns (x - mean used
  twice in LayerNormalization) are written by reusing a Python variable.
* `OneOf(a, b, ...)` tries alternatives in order; `Opt(p)` also matches an omitted input.

Commutativity is declared once, as data: for a two-input node whose op is in
graphopt.ir.ops.COMMUTATIVE both input orders are tried. The matcher backtracks and yields every
structural match; for a failed candidate it keeps the reason from the deepest partial match, so
"why did my fusion not fire" has an answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Union

import numpy as np

from graphopt.ir import ops
from graphopt.ir.graph import Node, Value
from graphopt.ir.ops import OpKey


class Pattern:
    """Base class of pattern nodes."""

    def capture_names(self) -> list[str]:
        """Names this pattern binds (used by Opt to bind them to None)."""
        return []


@dataclass(eq=False)
class Var(Pattern):
    """Any value (not an omitted input), captured under `name`."""

    name: str

    def capture_names(self) -> list[str]:
        return [self.name]

    def __repr__(self) -> str:
        return self.name


@dataclass(eq=False)
class Const(Pattern):
    """A constant value, captured under `name` (optional); with `value`, all elements == value."""

    name: str | None = None
    value: float | None = None
    rtol: float = 1e-5

    def capture_names(self) -> list[str]:
        return [self.name] if self.name else []

    def accepts(self, array: np.ndarray) -> bool:
        if self.value is None:
            return True
        if array.size == 0 or array.dtype.kind not in "fiu":
            return False
        return bool(np.allclose(array.astype(np.float64), self.value, rtol=self.rtol, atol=0.0))

    def __repr__(self) -> str:
        if self.value is not None:
            return f"const({self.value:g})"
        return f"const {self.name}" if self.name else "const"


class Op(Pattern):
    """A node of one of the given op types whose inputs match `inputs` (see module docstring)."""

    def __init__(self, op: str | Iterable[str] | frozenset[OpKey], *inputs: "PatternLike",
                 name: str | None = None, attrs: Mapping[str, Any] | None = None,
                 domain: str = ""):
        if isinstance(op, str):
            self.keys = frozenset({(domain, op)})
        else:
            items = list(op)
            self.keys = frozenset(k if isinstance(k, tuple) else (domain, k) for k in items)
        self.open_ended = bool(inputs) and inputs[-1] is Ellipsis
        self.inputs: tuple[Pattern, ...] = tuple(
            _as_pattern(p) for p in (inputs[:-1] if self.open_ended else inputs))
        self.name = name
        self.attrs = dict(attrs or {})
        self.op_label = "|".join(sorted(t for _, t in self.keys))

    def accepts_op(self, node: Node) -> bool:
        return node.key in self.keys

    def capture_names(self) -> list[str]:
        names = [self.name] if self.name else []
        for p in self.inputs:
            names += p.capture_names()
        return names

    def __repr__(self) -> str:
        args = [repr(p) for p in self.inputs] + (["..."] if self.open_ended else [])
        return f"{self.op_label}({', '.join(args)})"


@dataclass(eq=False)
class OneOf(Pattern):
    """The first alternative that matches (all are tried when backtracking)."""

    alternatives: tuple[Pattern, ...]

    def __init__(self, *alternatives: "PatternLike"):
        self.alternatives = tuple(_as_pattern(a) for a in alternatives)

    def capture_names(self) -> list[str]:
        names: list[str] = []
        for alt in self.alternatives:
            names += [n for n in alt.capture_names() if n not in names]
        return names

    def __repr__(self) -> str:
        return "(" + " | ".join(map(repr, self.alternatives)) + ")"


@dataclass(eq=False)
class Opt(Pattern):
    """An optional input: matches an omitted input (binding its captures to None) or `inner`."""

    inner: Pattern

    def capture_names(self) -> list[str]:
        return self.inner.capture_names()

    def __repr__(self) -> str:
        return f"{self.inner!r}?"


PatternLike = Union[Pattern, str]


def _as_pattern(p: "PatternLike") -> Pattern:
    """Strings are shorthand for Var(name)."""
    if isinstance(p, Pattern):
        return p
    if isinstance(p, str):
        return Var(p)
    raise TypeError(f"not a pattern: {p!r} (use Var, Const, Op, OneOf or Opt)")


def root_ops(pattern: Pattern) -> list[Op]:
    """The Op patterns a root may be (the pattern itself or the alternatives of a OneOf)."""
    if isinstance(pattern, Op):
        return [pattern]
    if isinstance(pattern, OneOf):
        return [op for alt in pattern.alternatives for op in root_ops(alt)]
    raise TypeError(f"a rule's pattern must be an Op or a OneOf of Ops, not {pattern!r}")


# --- matching ---------------------------------------------------------------------------------
_NOTHING: Mapping = MappingProxyType({})


class Bindings(NamedTuple):
    """One (partial) match: captured values and nodes, and which node each Op pattern matched.

    Immutable: binding makes a new Bindings (a named tuple, the cheapest immutable record: the
    matcher makes one per captured value of every candidate it tries)."""

    values: Mapping[str, Value | None] = _NOTHING
    nodes: Mapping[str, Node] = _NOTHING
    by_pattern: Mapping[int, Node] = _NOTHING
    order: tuple[Node, ...] = ()

    def bind_value(self, name: str, value: Value | None) -> "Bindings":
        return Bindings({**self.values, name: value}, self.nodes, self.by_pattern, self.order)

    def bind_node(self, pattern: Op, node: Node) -> "Bindings":
        nodes = {**self.nodes, pattern.name: node} if pattern.name else self.nodes
        return Bindings(self.values, nodes, {**self.by_pattern, id(pattern): node},
                        self.order + (node,))


Reason = Union[str, Callable[[], str]]


class Trace:
    """Matching options plus the failure reason of the deepest partial match seen at one root.

    A reason may be a function returning the text: most failures are not the deepest, so the
    matcher formats a reason only when it is kept (formatting dominated the matching time)."""

    def __init__(self, commute: bool = True) -> None:
        self.commute = commute
        self.depth = -1
        self.reason = "no match"

    def fail(self, bindings: Bindings, reason: Reason) -> None:
        depth = len(bindings.order)
        if depth > self.depth:
            self.depth, self.reason = depth, reason if isinstance(reason, str) else reason()


def match_root(pattern: Pattern, node: Node, trace: Trace) -> Iterator[Bindings]:
    """Every way `pattern` (an Op or a OneOf of Ops) matches with `node` as its root."""
    for op in root_ops(pattern):
        yield from _match_node(op, node, Bindings(), trace)


# Failure reasons name positions and op types ("input 1 of MatMul is computed by Mul"), not
# value names, so the FusionLog can group identical reasons across a model.
Where = tuple[str, int]  # (op type, input index): formatted by _place only for kept reasons


def _place(where: Where) -> str:
    return f"input {where[1]} of {where[0]}"


def _origin(value: Value) -> str:
    if value.producer is not None:
        return f"computed by {value.producer.op_type}"
    return "a constant" if value.is_const else "a graph input"


def _match_value(pattern: Pattern, value: Value | None, b: Bindings, trace: Trace, where: Where,
                 ) -> Iterator[Bindings]:
    if isinstance(pattern, Opt):
        if value is None:
            for name in pattern.capture_names():
                b = b.bind_value(name, None)
            yield b
        else:
            yield from _match_value(pattern.inner, value, b, trace, where)
        return
    if isinstance(pattern, OneOf):
        for alt in pattern.alternatives:
            yield from _match_value(alt, value, b, trace, where)
        return
    if value is None:
        trace.fail(b, lambda: f"{_place(where)} is omitted, the pattern expects {pattern!r}")
        return
    if isinstance(pattern, Var):
        yield from _bind(pattern.name, value, b, trace, where)
    elif isinstance(pattern, Const):
        if value.const is None:
            trace.fail(b, lambda: f"{_place(where)} is {_origin(value)}, not a constant")
        elif not pattern.accepts(value.const):
            trace.fail(b, lambda: f"{_place(where)} is the constant "
                       f"{value.const.reshape(-1)[:4].tolist()}, not {pattern.value:g}")
        elif pattern.name:
            yield from _bind(pattern.name, value, b, trace, where)
        else:
            yield b
    elif isinstance(pattern, Op):
        yield from _match_producer(pattern, value, b, trace, where)
    else:
        raise TypeError(f"unknown pattern {pattern!r}")


def _match_producer(pattern: Op, value: Value, b: Bindings, trace: Trace, where: Where,
                    ) -> Iterator[Bindings]:
    producer = value.producer
    if producer is None or not pattern.accepts_op(producer):
        trace.fail(b, lambda: f"{_place(where)} is {_origin(value)}, not {pattern.op_label}")
        return
    if producer.outputs[0] is not value:
        trace.fail(b, lambda: f"{_place(where)} is a secondary output of {producer.op_type}")
        return
    bound = b.by_pattern.get(id(pattern))
    if bound is None:
        yield from _match_node(pattern, producer, b, trace)
    elif bound is producer:
        yield b
    else:
        trace.fail(b, lambda: f"{_place(where)} is a different {pattern.op_label} than the "
                   "pattern requires")


def _bind(name: str, value: Value, b: Bindings, trace: Trace, where: Where) -> Iterator[Bindings]:
    if name not in b.values:
        yield b.bind_value(name, value)
    elif b.values[name] is value:
        yield b
    else:
        trace.fail(b, lambda: f"{_place(where)} is not the same value as '{name}'")


def _match_node(pattern: Op, node: Node, b: Bindings, trace: Trace) -> Iterator[Bindings]:
    if not pattern.accepts_op(node):
        trace.fail(b, lambda: f"the node is {node.op_type}, not {pattern.op_label}")
        return
    if any(node is seen for seen in b.order):
        trace.fail(b, lambda: f"one {node.op_type} would match two parts of the pattern")
        return
    for key, want in pattern.attrs.items():
        got = node.attrs.get(key)
        if got != want:
            trace.fail(b, lambda: f"{node.op_type} has {key}={got!r}, the pattern needs "
                       f"{want!r}")
            return
    inputs = list(node.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    wanted = pattern.inputs
    if pattern.open_ended:
        inputs = inputs[: len(wanted)]
    elif len(inputs) > len(wanted):
        trace.fail(b, lambda: f"{node.op_type} has {len(inputs)} inputs, the pattern "
                   f"{len(wanted)}")
        return
    inputs += [None] * (len(wanted) - len(inputs))
    b = b.bind_node(pattern, node)
    commuted = (trace.commute and len(wanted) == 2 and len(node.inputs) == 2
                and ops.is_a(node, ops.COMMUTATIVE))
    yield from _match_inputs(wanted, inputs, b, trace, node.op_type, 0)
    if commuted:
        yield from _match_inputs(wanted[::-1], inputs, b, trace, node.op_type, 0)


def _match_inputs(patterns: tuple[Pattern, ...], values: list[Value | None], b: Bindings,
                  trace: Trace, op_type: str, index: int) -> Iterator[Bindings]:
    """Match patterns[index:] against values[index:] (input `index` of an `op_type` node on)."""
    if index == len(patterns):
        yield b
        return
    for partial in _match_value(patterns[index], values[index], b, trace, (op_type, index)):
        yield from _match_inputs(patterns, values, partial, trace, op_type, index + 1)
