"""The shared elementwise loop: walk an output, read broadcast operands, store a value.

Used by the elementwise family, Expand, BatchNormalization and anything else that computes one
output element from the operands at the same (broadcast) position. Scalar constants become
C literals instead of loads.
"""
from __future__ import annotations

from typing import Callable, Sequence

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import CEmitter, broadcast_strides, coalesce, index
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.ir.types import DType

Arg = tuple[str, DType] | None
Compute = Callable[[CEmitter, list[Arg]], tuple[str, DType]]


def scalar_literal(operand: Operand) -> str | None:
    """A C literal for a constant operand holding one element, else None."""
    if operand.const is None or operand.size != 1:
        return None
    return cdtypes.literal(operand.const.reshape(-1)[0].item(), operand.dtype)


def store(value: str, dtype: DType, out_dtype: DType) -> str:
    """`value` converted for a store into an `out_dtype` array (bools normalized to 0/1)."""
    if out_dtype == DType.BOOL and dtype != DType.BOOL:
        return f"({value} != 0)"
    return value


def map_elements(k: Kernel, out: Operand, operands: Sequence[Operand | None], compute: Compute,
                 parallel: bool = True) -> None:
    """out[i] = compute(operands broadcast at i) over the whole output."""
    shape = out.shape
    loaded = [op for op in operands if op is not None and scalar_literal(op) is None]
    strides = [out.strides] + [broadcast_strides(op.shape, shape) for op in loaded]
    loop_shape, loop_strides = coalesce(shape, *strides)
    by_operand = {id(op): s for op, s in zip(loaded, loop_strides[1:])}
    em = k.em
    with em.loops(loop_shape, parallel=parallel) as idx:
        args: list[Arg] = []
        for op in operands:
            if op is None:
                args.append(None)
                continue
            literal = scalar_literal(op)
            if literal is not None:
                args.append((literal, op.dtype))
                continue
            name = em.temp("x")
            em.line(f"const {op.ctype} {name} = {k.arg(op)}[{index(idx, by_operand[id(op)])}];")
            args.append((name, op.dtype))
        value, dtype = compute(em, args)
        em.line(f"{k.arg(out)}[{index(idx, loop_strides[0])}] = {store(value, dtype, out.dtype)};")
