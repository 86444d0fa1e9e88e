"""Collapse chains of data-movement ops that only permute or reshape.

* Transpose(Transpose(x, p1), p2) -> Transpose(x, q) with q[i] = p1[p2[i]], or x itself when q is
  the identity. Output element i of the pair reads input element p1[p2[i]], so one Transpose
  with q moves every element to the same place.
* Reshape(R(x), shape) -> Reshape(x, shape) where R is Reshape/Flatten/Squeeze/Unsqueeze and
  `shape` is constant: a reshape only looks at the element count and order of its input, which
  R preserves. A 0 in `shape` (copy the input's dim) refers to R's output, so it is replaced
  by that dim when known statically, else the rewrite is refused. -1 is safe (same count).
* R2(R1(x)) for R1, R2 in Reshape/Flatten/Squeeze/Unsqueeze with a static output shape ->
  Reshape(x, that shape), or x itself when that is x's shape.
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir import ops
from graphopt.ir.graph import Node, Value
from graphopt.rewrite import Const, Match, Op, Rewriter, Rule, Var, apply_rules

PASS_NAME = "fuse-transpose-reshape"


# --- Transpose(Transpose) ---------------------------------------------------------------------
def _perm(node: Node, rank: int | None) -> list[int] | None:
    perm = node.attr("perm")
    if perm is not None:
        return [int(p) for p in perm]
    return None if rank is None else list(range(rank))[::-1]


def _composed_perm(m: Match) -> list[int] | None:
    x = m["x"]
    rank = None if x.shape is None else len(x.shape)
    inner = _perm(m.node("inner"), rank)
    outer = _perm(m.node("outer"), len(inner) if inner is not None else None)
    if inner is None or outer is None:
        return None
    return [inner[p] for p in outer]


def _check_transposes(m: Match) -> str | None:
    if _composed_perm(m) is None:
        return "a Transpose has no perm and the input rank is unknown"
    return None


def _replace_transposes(rw: Rewriter, m: Match) -> Value:
    perm = _composed_perm(m)
    if perm == list(range(len(perm))):
        return m["x"]
    return rw.make_node("Transpose", [m["x"]], {"perm": perm}).outputs[0]


TRANSPOSE_PAIR = Rule("transpose-pair",
                      Op("Transpose", Op("Transpose", Var("x"), name="inner"), name="outer"),
                      _replace_transposes, check=_check_transposes)


# --- Reshape(reshape-like) with a constant shape ----------------------------------------------
def _resolved_shape(m: Match) -> np.ndarray | str:
    """The outer target shape with its 0 entries resolved against the inner output, or a reason."""
    shape = m.const("shape").astype(np.int64).reshape(-1)
    if m.node("outer").attr("allowzero", 0) or not (shape == 0).any():
        return shape
    inner_shape = m.node("inner").outputs[0].shape
    resolved = shape.copy()
    for i in np.flatnonzero(shape == 0):
        dim = inner_shape[i] if inner_shape is not None and i < len(inner_shape) else None
        if not isinstance(dim, int):
            return f"target shape {shape.tolist()} copies dim {i} of the inner output, unknown"
        resolved[i] = dim
    return resolved


def _check_reshape(m: Match) -> str | None:
    shape = _resolved_shape(m)
    return shape if isinstance(shape, str) else None


def _replace_reshape(rw: Rewriter, m: Match) -> Value:
    shape = _resolved_shape(m)
    original = m.const("shape").reshape(-1)
    target = m["shape"] if np.array_equal(shape, original) else rw.constant(shape, "shape")
    return rw.make_node("Reshape", [m["x"], target], dict(m.node("outer").attrs)).outputs[0]


RESHAPE_OF_RESHAPE = Rule(
    "reshape-of-reshape",
    Op("Reshape", Op(ops.RESHAPE_LIKE, Var("x"), ..., name="inner"), Const("shape"), name="outer"),
    _replace_reshape, check=_check_reshape)


# --- static chains of Flatten/Squeeze/Unsqueeze/Reshape ----------------------------------------
def _check_chain(m: Match) -> str | None:
    out = m.root.outputs[0]
    if out.type is None or not out.type.is_static:
        return f"output shape {out.type} is not static"
    if 0 in out.shape:
        return "the output has a zero-size dim (a 0 in a Reshape target means 'copy')"
    return None


def _replace_chain(rw: Rewriter, m: Match) -> Value:
    target = m.root.outputs[0].shape
    if m["x"].shape == target:
        return m["x"]  # e.g. Squeeze(Unsqueeze(x)): the chain does nothing
    shape = rw.constant(np.array(target, dtype=np.int64), "shape")
    return rw.make_node("Reshape", [m["x"], shape]).outputs[0]


STATIC_CHAIN = Rule(
    "reshape-chain-static",
    Op(ops.RESHAPE_LIKE, Op(ops.RESHAPE_LIKE, Var("x"), ..., name="inner"), ..., name="outer"),
    _replace_chain, check=_check_chain)

RULES = [TRANSPOSE_PAIR, RESHAPE_OF_RESHAPE, STATIC_CHAIN]


@register_pass(PASS_NAME)
def fuse_transpose_reshape(graph: Graph) -> PassResult:
    """Merge Transpose pairs (dropping identities) and chains of Reshape/Flatten/Squeeze/
    Unsqueeze into one Reshape."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
