"""Gemm and MatMul on float32 through csrc's graphopt_sgemm, with epilogues.

Gemm: Y = alpha * A' B' + beta * C (A', B' optionally transposed). A constant transposed B
(the usual Linear layer weight, [N, K]) is pre-transposed at compile time so the kernel streams
rows of B. alpha, beta*C and any fused activation run in the epilogue.

MatMul: numpy semantics (1-D promotion, broadcast batch dims). When B has no batch dims the
batch dims of A fold into M, giving one large GEMM instead of many small ones.
"""
from __future__ import annotations

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import broadcast_strides, contiguous_strides, index
from graphopt.backend.c.epilogue import emit_epilogue
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op
from graphopt.backend.program import EpilogueOp, Tensor
from graphopt.ir.types import DType

# Upper bound of graphopt_sgemm_scratch() in csrc/gemm.c for both tile configurations
# (MR <= 6, NR <= 32, KC = 256, MC = 1032, NC = 4096; no scratch for M <= 4).
_KC, _MC, _NC, _SMALL_M = 256, 1032, 4096, 4


def sgemm_scratch_bytes(m: int, n: int, k: int) -> int:
    if m <= _SMALL_M or n <= 0 or k <= 0:
        return 0
    kc = min(k, _KC)
    return 4 * ((min(m, _MC) + 6) * kc + (min(n, _NC) + 32) * kc + 16)


def sgemm_call(k: Kernel, m: int, n: int, kk: int, a: str, a_strides: tuple[int, int], b: str,
               b_strides: tuple[int, int], c: str, ldc: int, epilogue: str,
               scratch: str | None) -> str:
    """The C statement of one graphopt_sgemm call."""
    work = f"(float*){scratch}" if scratch else "NULL"
    return (f"graphopt_sgemm({m}, {n}, {kk}, {a}, {a_strides[0]}, {a_strides[1]}, {b}, "
            f"{b_strides[0]}, {b_strides[1]}, {c}, {ldc}, {work}, {epilogue});")


@register_op("Gemm", dtypes={DType.FLOAT})
def emit_gemm(k: Kernel) -> None:
    a, b, c = k.input(0), k.input(1), k.input(2)
    y = k.outputs[0]
    trans_a, trans_b = int(k.attr("transA", 0)), int(k.attr("transB", 0))
    alpha, beta = float(k.attr("alpha", 1.0)), float(k.attr("beta", 1.0))
    m, n = y.shape
    kk = a.shape[0] if trans_a else a.shape[1]
    a_strides = (1, m) if trans_a else (kk, 1)
    if trans_b and b.const is not None:
        b_name, b_strides = k.packed(b, "T", lambda w: np.ascontiguousarray(w.T)), (n, 1)
    else:
        b_name, b_strides = k.arg(b), ((1, kk) if trans_b else (n, 1))
    ops = _alpha_beta_ops(alpha, beta, c)
    epilogue = emit_epilogue(k, y, 1, ops + k.epilogue)
    scratch_bytes = sgemm_scratch_bytes(m, n, kk)
    scratch = k.scratch(scratch_bytes) if scratch_bytes else None
    k.em.line(sgemm_call(k, m, n, kk, k.arg(a), a_strides, b_name, b_strides, k.arg(y), n,
                         epilogue, scratch))


def _alpha_beta_ops(alpha: float, beta: float, c: Operand | None) -> list[EpilogueOp]:
    """alpha * acc + beta * C as epilogue ops (a constant C is pre-scaled by beta)."""
    ops = []
    if c is None or beta == 0.0:
        return [EpilogueOp("Mul", {}, (alpha,))] if alpha != 1.0 else []
    bias: Tensor = c.tensor
    if beta != 1.0 and bias.const is not None:
        bias = Tensor(f"{bias.name}_x_beta", bias.dtype, bias.shape,
                      (bias.const * np.float32(beta)).astype(np.float32))
        beta = 1.0
    if beta != 1.0:  # runtime C: alpha*acc + beta*C == beta * ((alpha/beta)*acc + C)
        ops.append(EpilogueOp("Mul", {}, (alpha / beta,)))
        ops.append(EpilogueOp("Add", {}, (bias,)))
        ops.append(EpilogueOp("Mul", {}, (beta,)))
        return ops
    if alpha != 1.0:
        ops.append(EpilogueOp("Mul", {}, (alpha,)))
    ops.append(EpilogueOp("Add", {}, (bias,)))
    return ops


@register_op("MatMul", dtypes=cdtypes.NUMERIC)
def emit_matmul(k: Kernel) -> None:
    a, b = k.input(0), k.input(1)
    y = k.outputs[0]
    if a.dtype != DType.FLOAT:
        _emit_plain_matmul(k)
        return
    a_shape = (1,) + a.shape if a.rank == 1 else a.shape
    b_shape = b.shape + (1,) if b.rank == 1 else b.shape
    m, kk, n = a_shape[-2], a_shape[-1], b_shape[-1]
    split = y.rank - (0 if b.rank == 1 else 1)
    epilogue = emit_epilogue(k, y, split, k.epilogue)
    if len(b_shape) == 2:  # fold A's batch dims into M: one GEMM
        rows = int(np.prod(a_shape[:-1]))
        scratch_bytes = sgemm_scratch_bytes(rows, n, kk)
        scratch = k.scratch(scratch_bytes) if scratch_bytes else None
        k.em.line(sgemm_call(k, rows, n, kk, k.arg(a), (kk, 1), k.arg(b), (n, 1), k.arg(y), n,
                             epilogue, scratch))
        return
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    a_steps = [s * m * kk for s in broadcast_strides(a_shape[:-2], batch)]
    b_steps = [s * kk * n for s in broadcast_strides(b_shape[:-2], batch)]
    y_steps = [s * m * n for s in contiguous_strides(batch)]
    scratch_bytes = sgemm_scratch_bytes(m, n, kk)
    scratch = k.scratch(scratch_bytes) if scratch_bytes else None
    with k.em.loops(batch, prefix="b") as idx:
        if epilogue != "NULL":
            k.em.line(f"epi.row_base = ({index(idx, contiguous_strides(batch))}) * {m};")
        k.em.line(sgemm_call(k, m, n, kk, f"{k.arg(a)} + {index(idx, a_steps)}", (kk, 1),
                             f"{k.arg(b)} + {index(idx, b_steps)}", (n, 1),
                             f"{k.arg(y)} + {index(idx, y_steps)}", n, epilogue, scratch))


def _emit_plain_matmul(k: Kernel) -> None:
    """MatMul of double or integers as a plain loop nest (no csrc kernel), accumulating in
    double for double and in the element type for integers (wrapping as numpy does)."""
    a, b, y = k.input(0), k.input(1), k.outputs[0]
    a_shape = (1,) + a.shape if a.rank == 1 else a.shape
    b_shape = b.shape + (1,) if b.rank == 1 else b.shape
    m, depth, n = a_shape[-2], a_shape[-1], b_shape[-1]
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    a_steps = [s * m * depth for s in broadcast_strides(a_shape[:-2], batch)]
    b_steps = [s * depth * n for s in broadcast_strides(b_shape[:-2], batch)]
    em, A, B, Y = k.em, k.arg(a), k.arg(b), k.arg(y)
    with em.loops([*batch, m, n], parallel=True, work=y.size * depth) as idx:
        *bi, i, j = idx
        em.line(f"{y.ctype} acc = 0;")
        a_row = index([*bi, i, "p"], [*a_steps, depth, 1])
        b_column = index([*bi, "p", j], [*b_steps, n, 1])
        em.line(f"for (int64_t p = 0; p < {depth}; ++p) acc += {A}[{a_row}] * {B}[{b_column}];")
        em.line(f"{Y}[{index(idx, contiguous_strides(batch + (m, n)))}] = acc;")
