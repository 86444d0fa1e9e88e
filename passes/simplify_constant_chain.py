"""Merge two constant operands of a chain of Adds (or of Muls) into one.

    Add(Add(x, a), b)  ->  Add(x, a + b)        Mul(Mul(x, a), b)  ->  Mul(x, a * b)

(either operand order of each op). Addition and multiplication are associative, so both sides
compute the same values; for floats the rounding differs by one operation (a + b is rounded
once instead of x + a), within the fp32 tolerance graphopt targets (rel 1e-4 / abs 1e-5).
Integer arithmetic wraps the same way in either order, so it stays exact.

Exporters leave such chains where several constant terms meet, e.g. BERT's embeddings: word
embedding + token-type embedding (a constant once the token types are) + position embedding.

Guards: both constants have the dtype of x and of the output; their broadcast must not enlarge
the output (its shape must broadcast into the outer op's output shape); and the merged constant
may not be larger than the two it replaces together, so the model does not grow when they were
read only by this chain.
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.graph import Value
from graphopt.rewrite import Const, Match, Op, Rewriter, Rule, Var, apply_rules

PASS_NAME = "simplify-constant-chain"

_COMBINE = {"Add": np.add, "Mul": np.multiply}


def _merged_shape(m: Match) -> tuple[int, ...] | str:
    a, b = m.const("a"), m.const("b")
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        return f"constants of shapes {list(a.shape)} and {list(b.shape)} do not broadcast"


def _check(m: Match) -> str | None:
    a, b, x, out = m.const("a"), m.const("b"), m["x"], m.root.outputs[0]
    if not (a.dtype == b.dtype and x.dtype is not None and x.dtype.numpy == a.dtype
            and out.dtype == x.dtype):
        return f"dtypes differ: x {x.dtype}, constants {a.dtype} and {b.dtype}"
    shape = _merged_shape(m)
    if isinstance(shape, str):
        return shape
    target = out.shape
    if target is None or len(shape) > len(target):
        return "the merged constant's rank exceeds the output's"
    aligned = target[len(target) - len(shape):]
    if any(d != 1 and d != t for d, t in zip(shape, aligned)):
        return f"the merged constant {list(shape)} would broadcast the output {list(target)}"
    if int(np.prod(shape)) > a.size + b.size:
        return f"the merged constant {list(shape)} is larger than the two it replaces"
    return None


def _replace(rw: Rewriter, m: Match) -> Value:
    op = m.root.op_type
    merged = _COMBINE[op](m.const("a"), m.const("b")).astype(m.const("a").dtype)
    return rw.make_node(op, [m["x"], rw.constant(merged, f"{m['b'].name}_merged")]).outputs[0]


def _rule(op: str) -> Rule:
    pattern = Op(op, Op(op, Var("x"), Const("a"), name="inner"), Const("b"))
    return Rule(f"{op.lower()}-constant-chain", pattern, _replace, check=_check)


RULES = [_rule("Add"), _rule("Mul")]


@register_pass(PASS_NAME)
def simplify_constant_chain(graph: Graph) -> PassResult:
    """Add(Add(x, a), b) -> Add(x, a + b) and Mul(Mul(x, a), b) -> Mul(x, a * b) for constants
    a and b whose merged form does not enlarge the output or the model."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
