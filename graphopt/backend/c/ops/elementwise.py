"""Elementwise ops (unary, binary, Where, Cast, Clip, variadic Sum/Max/Min/Mean) with numpy
broadcasting, all rendered from the expression table in exprs.py.

The loop itself is `graphopt.backend.c.loops.map_elements`.
"""
from __future__ import annotations

from graphopt.backend.c import exprs
from graphopt.backend.c.emitter import CEmitter
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.loops import Arg, map_elements
from graphopt.backend.c.registry import register_op
from graphopt.ir.types import DType

_TABLE_OPS = sorted({key.split(":")[0] for key in exprs.SCALAR_OPS} - {"Identity"})


@register_op(*_TABLE_OPS, inplace=True)
def emit_elementwise(k: Kernel) -> None:
    """Any op of the expression table: one rendered expression per output element."""
    op_type, attrs = k.node.op_type, dict(k.node.attrs)
    operands = k.inputs[:1] if op_type == "CastLike" else list(k.inputs)
    dtypes = [None if o is None else o.dtype for o in operands]
    problem = exprs.support_problem(op_type, attrs, dtypes)
    if problem:
        k.unsupported(problem)
    out = k.outputs[0]

    def compute(em: CEmitter, args: list[Arg]) -> tuple[str, DType]:
        return exprs.render(em, op_type, attrs, args, out.dtype)

    map_elements(k, out, operands, compute)
