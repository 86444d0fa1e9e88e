"""Recognize GELU written out in elementary ops and replace it by Gelu (opset >= 20).

    erf form:   0.5 * x * (1 + Erf(x / sqrt(2)))                            -> Gelu(x)
    tanh form:  0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))     -> Gelu(x, "tanh")

Both are the definitions of the Gelu op (approximate="none" / "tanh"). The product is matched in
its common associations, (x * T) * 0.5, (x * 0.5) * T, x * (T * 0.5) and (x * T) / 2, with every
commuted order; x / sqrt(2) may be x * (1/sqrt(2)) and x^3 may be Pow(x, 3) or x * x * x.

Gelu exists from opset 20. Below that the pass only records the reason ("opset 17 < 20"). With
`upgrade_opset=true` it raises the model's opset to 20 when that is a pure relabel (every op in
the graph means the same at 20, see graphopt_passes._opset_bump); it never converts nodes.
"""
from __future__ import annotations

import math

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.graph import Value
from graphopt.rewrite import (Const, Match, OneOf, Op, Pattern, ReplaceFunction, Rewriter, Rule,
                              Var, apply_rules)
from graphopt_passes._opset_bump import upgrade_blockers

PASS_NAME = "fuse-gelu"
GELU_OPSET = 20

_X = Var("x")
_ERF_TERM = Op("Add", Op("Erf", OneOf(Op("Div", _X, Const(value=math.sqrt(2.0))),
                                       Op("Mul", _X, Const(value=1 / math.sqrt(2.0))))),
               Const(value=1.0))
_CUBE = OneOf(Op("Pow", _X, Const(value=3.0)), Op("Mul", _X, Op("Mul", _X, _X)))
_TANH_ARG = Op("Mul", Op("Add", _X, Op("Mul", _CUBE, Const(value=0.044715))),
               Const(value=math.sqrt(2.0 / math.pi)))
_TANH_TERM = Op("Add", Op("Tanh", _TANH_ARG), Const(value=1.0))


def _half_x_times(term: Pattern) -> Pattern:
    """0.5 * x * term, in the associations exporters produce."""
    half = Const(value=0.5)
    return OneOf(Op("Mul", Op("Mul", _X, term), half),
                 Op("Mul", Op("Mul", _X, half), term),
                 Op("Mul", _X, Op("Mul", term, half)),
                 Op("Div", Op("Mul", _X, term), Const(value=2.0)))


# The two forms as patterns capturing "x" (also read by the C backend, which folds them into
# the epilogue of the Gemm/MatMul computing x at any opset: graphopt/backend/fuse_gelu.py).
ERF_GELU = _half_x_times(_ERF_TERM)
TANH_GELU = _half_x_times(_TANH_TERM)


class _OpsetGate:
    """Decides, once per pass run, whether Gelu may be created (raising the opset if allowed)."""

    def __init__(self, graph: Graph, upgrade: bool):
        self.graph, self.upgrade = graph, upgrade
        self._blockers: list[str] | None = None

    def reason(self) -> str | None:
        opset = self.graph.opset
        if opset >= GELU_OPSET:
            return None
        if not self.upgrade:
            return f"opset {opset} < {GELU_OPSET}"
        if self._blockers is None:
            self._blockers = upgrade_blockers(self.graph, GELU_OPSET)
        if self._blockers:
            return (f"opset {opset} < {GELU_OPSET}; raising it would change "
                    f"{', '.join(self._blockers[:6])}")
        return None

    def ensure(self) -> None:
        if self.graph.opset < GELU_OPSET:
            self.graph.opset_imports[""] = GELU_OPSET


def _rules(gate: _OpsetGate) -> list[Rule]:
    def check(m: Match) -> str | None:
        x = m["x"]
        if x.dtype is None or not x.dtype.is_float:
            return f"x has dtype {x.dtype}, not floating point"
        return gate.reason()

    def replacement(approximate: str) -> ReplaceFunction:
        def replace(rw: Rewriter, m: Match) -> Value:
            gate.ensure()
            attrs = {"approximate": approximate} if approximate != "none" else {}
            return rw.make_node("Gelu", [m["x"]], attrs).outputs[0]
        return replace

    return [Rule("gelu-erf", ERF_GELU, replacement("none"), check=check),
            Rule("gelu-tanh", TANH_GELU, replacement("tanh"), check=check)]


@register_pass(PASS_NAME)
def fuse_gelu(graph: Graph, *, upgrade_opset: bool = False) -> PassResult:
    """Replace erf- and tanh-form GELU subgraphs by Gelu (opset >= 20; with upgrade_opset, raise
    the opset to 20 when no op's meaning changes)."""
    return apply_rules(graph, _rules(_OpsetGate(graph, upgrade_opset)), pass_name=PASS_NAME)
