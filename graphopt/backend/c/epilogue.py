"""Epilogue callbacks: elementwise ops applied to Conv/Gemm/MatMul tiles before they leave cache.

The csrc kernels view their output as a 2-D matrix [rows, cols] (Gemm: [M, N]; Conv: [N*M,
OH*OW]; MatMul: [batch*M, N]) and call `graphopt_epilogue.fn` on each finished tile. This module
generates that callback from a list of `EpilogueOp`s (bias add, alpha scaling, fused
activations...), rendering each op through the expression table, and declares the
`graphopt_epilogue` value the kernel passes to csrc.

Operands are broadcast against the output (an override shape, e.g. a Conv bias [M] seen as
[M, 1, 1], is given in `shapes`); their offset is split into a row part (hoisted out of the
column loop by the compiler) and a column part.
"""
from __future__ import annotations

from typing import Sequence

from graphopt.backend.c import exprs
from graphopt.backend.c.emitter import CEmitter, broadcast_strides, coalesce, unravel
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.loops import scalar_literal
from graphopt.backend.program import EpilogueOp, Tensor
from graphopt.ir.types import DType

MAX_OPERANDS = 4  # GRAPHOPT_MAX_EPILOGUE_OPERANDS of the generated graphopt_config.h


def epilogue_problem(ops: Sequence[EpilogueOp]) -> str | None:
    """Why these ops cannot form an epilogue (non-float types, too many operands), or None."""
    pointers = set()
    for op in ops:
        dtypes = [DType.FLOAT] * (len(op.operands) + 1)
        problem = exprs.support_problem(op.op_type, op.attrs, dtypes)
        if problem:
            return problem
        for t in op.operands:
            if isinstance(t, Tensor) and (t.dtype != DType.FLOAT):
                return f"epilogue operand {t.describe()} is not float"
            if isinstance(t, Tensor) and not (t.is_const and t.size == 1):
                pointers.add(id(t))
    if len(pointers) > MAX_OPERANDS:
        return f"more than {MAX_OPERANDS} tensor operands in an epilogue"
    return None


def emit_epilogue(k: Kernel, out: Operand, split: int, ops: Sequence[EpilogueOp],
                  shapes: dict[int, tuple[int, ...]] | None = None) -> str:
    """Define the callback and a local `graphopt_epilogue <name>`; return "&<name>" (or "NULL").

    `split`: output dims [0, split) form the rows of the 2-D view, the rest the columns.
    The caller sets `<name>.row_base` before each csrc call whose rows start elsewhere.
    """
    if not ops:
        return "NULL"
    problem = epilogue_problem(ops)
    if problem:
        k.unsupported(problem)
    shapes = shapes or {}
    fn = k.unique("epilogue")
    em = CEmitter(k.target)
    pointers: list[tuple[Tensor, str]] = []
    em.line(f"static void {fn}(const graphopt_epilogue* self, float* C, int64_t ldc, int64_t i0,")
    em.line("        int64_t j0, int64_t m, int64_t n) {")
    body = CEmitter(k.target, level=1)
    loads: dict[int, str] = {}
    for op in ops:
        for t in op.operands:
            if isinstance(t, Tensor) and scalar_literal(_as_operand(t)) is None \
                    and id(t) not in loads:
                loads[id(t)] = f"E{len(pointers)}"
                pointers.append((t, loads[id(t)]))
                body.line(f"const float* E{len(pointers) - 1} = "
                          f"(const float*)self->operands[{len(pointers) - 1}];")
    rows, cols = out.shape[:split], out.shape[split:]
    with body.block("for (int64_t i = 0; i < m; ++i)"):
        body.line("const int64_t row = self->row_base + i0 + i;")
        body.line("float* c = C + i * ldc;")
        with body.block("for (int64_t j = 0; j < n; ++j)"):
            body.line("const int64_t col = j0 + j;")
            body.line("(void)row; (void)col;")
            value = ("c[j]", DType.FLOAT)
            for op in ops:
                args: list[tuple[str, DType] | None] = []
                for t in op.operands:
                    args.append(_epilogue_arg(t, loads, rows, cols, out.shape,
                                              shapes.get(id(t)) if isinstance(t, Tensor) else None))
                args.insert(op.position, value)
                value = exprs.render(body, op.op_type, op.attrs, args, DType.FLOAT)
            body.line(f"c[j] = {value[0]};")
    k.add_helper(em.text() + body.text() + "}\n")
    operands = [k.arg(_operand_for(k, t, n)) for n, (t, _) in enumerate(pointers)]
    slots = ", ".join(operands + ["NULL"] * (MAX_OPERANDS - len(operands)))
    k.em.line(f"graphopt_epilogue epi = {{{fn}, {{{slots}}}, 0}};")
    return "&epi"


def _epilogue_arg(t: Tensor | float | None, loads: dict[int, str], rows: tuple[int, ...],
                  cols: tuple[int, ...], out_shape: tuple[int, ...],
                  shape: tuple[int, ...] | None) -> tuple[str, DType] | None:
    from graphopt.backend.c import cdtypes

    if t is None:
        return None
    if not isinstance(t, Tensor):
        return cdtypes.literal(float(t), DType.FLOAT), DType.FLOAT
    literal = scalar_literal(_as_operand(t))
    if literal is not None:
        return literal, DType.FLOAT
    strides = broadcast_strides(shape or t.shape, out_shape)
    split = len(rows)
    row_dims, (row_strides,) = coalesce(rows, strides[:split])
    col_dims, (col_strides,) = coalesce(cols, strides[split:])
    terms = [unravel("row", row_dims, row_strides), unravel("col", col_dims, col_strides)]
    offset = " + ".join(term for term in terms if term != "0") or "0"
    return f"{loads[id(t)]}[{offset}]", DType.FLOAT


def _as_operand(t: Tensor) -> Operand:
    return Operand(t, t.name, False)


def _operand_for(k: Kernel, t: Tensor, n: int) -> Operand:
    """The kernel operand for an epilogue tensor: the step's own input when it is one."""
    for op in k.inputs:
        if op is not None and op.tensor is t:
            return op
    return Operand(t, f"E{n}", False)
