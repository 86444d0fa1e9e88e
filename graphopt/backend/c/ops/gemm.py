"""Gemm and MatMul on float32 through csrc's graphopt_sgemm, with epilogues.

Gemm: Y = alpha * A' B' + beta * C (A', B' optionally transposed). A constant B (the usual
Linear layer weight) is packed at compile time into the micro-kernel's panel layout
(`tiles.GemmTiles.pack_b`), so no call re-packs it. alpha, beta*C and any fused activation run
in the epilogue.

MatMul: numpy semantics (1-D promotion, broadcast batch dims). When B has no batch dims the
batch dims of A fold into M, giving one large GEMM instead of many small ones; a constant 2-D B
is packed at compile time as for Gemm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import broadcast_strides, contiguous_strides, index
from graphopt.backend.c.epilogue import emit_epilogue
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op
from graphopt.backend.c.tiles import gemm_tiles
from graphopt.backend.planner import align
from graphopt.backend.program import EpilogueOp, Tensor
from graphopt.ir.types import DType


@dataclass(frozen=True)
class Matrix:
    """A GEMM operand as the C call sees it: a pointer expression with (row, column) element
    strides, or (`packed`) panels in the micro-kernel's layout (`GemmTiles.pack_a/pack_b`)."""

    pointer: str
    strides: tuple[int, int] = (0, 0)
    packed: bool = False


def sgemm_call(k: Kernel, m: int, n: int, kk: int, a: Matrix, b: Matrix, c: str, ldc: int,
               epilogue: str, copies: tuple[int, str] | None = None) -> str:
    """The C statement of one graphopt_sgemm_ex call, reserving the scratch it needs.
    `copies` = (count, index expression): calls running concurrently (a parallel batch loop)
    each get their own scratch, the index-th of `count`."""
    nbytes = gemm_tiles(k.target).scratch_bytes(m, n, kk, a.packed, b.packed)
    if nbytes and copies is not None:
        stride = align(nbytes, k.target.alignment)
        work = f"(float*)({k.scratch(stride * copies[0])} + ({copies[1]}) * {stride})"
    else:
        work = f"(float*){k.scratch(nbytes)}" if nbytes else "NULL"
    return (f"graphopt_sgemm_ex({m}, {n}, {kk}, {_operand_args(a)}, {_operand_args(b)}, "
            f"{c}, {ldc}, {work}, {epilogue});")


def _operand_args(x: Matrix) -> str:
    if x.packed:
        return f"NULL, 0, 0, {x.pointer}"
    return f"{x.pointer}, {x.strides[0]}, {x.strides[1]}, NULL"


def packed_b(k: Kernel, b: Operand, shape: tuple[int, int], transposed: bool = False) -> Matrix:
    """A constant B seen as `shape` [K, N] (or, `transposed`, as its [N, K] transpose) packed
    at compile time into the micro-kernel's B panels."""
    tiles = gemm_tiles(k.target)

    def pack(w: np.ndarray) -> np.ndarray:
        w = np.reshape(w, shape)
        return tiles.pack_b(w.T if transposed else w)

    return Matrix(k.packed(b, "Bt_panels" if transposed else "B_panels", pack), packed=True)


@register_op("Gemm", dtypes={DType.FLOAT})
def emit_gemm(k: Kernel) -> None:
    a, b, c = k.input(0), k.input(1), k.input(2)
    y = k.outputs[0]
    trans_a, trans_b = int(k.attr("transA", 0)), int(k.attr("transB", 0))
    alpha, beta = float(k.attr("alpha", 1.0)), float(k.attr("beta", 1.0))
    m, n = y.shape
    kk = a.shape[0] if trans_a else a.shape[1]
    a_matrix = Matrix(k.arg(a), (1, m) if trans_a else (kk, 1))
    if b.const is not None:
        b_matrix = packed_b(k, b, b.shape, transposed=bool(trans_b))
    else:
        b_matrix = Matrix(k.arg(b), (1, kk) if trans_b else (n, 1))
    ops = _alpha_beta_ops(alpha, beta, c)
    epilogue = emit_epilogue(k, y, 1, ops + k.epilogue)
    k.em.line(sgemm_call(k, m, n, kk, a_matrix, b_matrix, k.arg(y), n, epilogue))


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
        b_matrix = packed_b(k, b, b_shape) if b.const is not None else Matrix(k.arg(b), (n, 1))
        k.em.line(sgemm_call(k, rows, n, kk, Matrix(k.arg(a), (kk, 1)), b_matrix, k.arg(y), n,
                             epilogue))
        return
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    a_steps = [s * m * kk for s in broadcast_strides(a_shape[:-2], batch)]
    b_steps = [s * kk * n for s in broadcast_strides(b_shape[:-2], batch)]
    y_steps = [s * m * n for s in contiguous_strides(batch)]
    # Products too small to be threaded inside the GEMM (attention heads: 128x128x32) share
    # the batch between threads instead, each call with its own scratch and epilogue copy.
    calls = int(np.prod(batch))
    spread = calls > 1 and m * n * kk < k.target.parallel_min_macs
    with k.em.loops(batch, prefix="b", parallel=spread, work=calls * m * n * kk) as idx:
        flat = index(idx, contiguous_strides(batch))
        if epilogue != "NULL":
            k.em.line("graphopt_epilogue epi_b = epi;")
            k.em.line(f"epi_b.row_base = ({flat}) * {m};")
        k.em.line(sgemm_call(k, m, n, kk, Matrix(f"{k.arg(a)} + {index(idx, a_steps)}", (kk, 1)),
                             Matrix(f"{k.arg(b)} + {index(idx, b_steps)}", (n, 1)),
                             f"{k.arg(y)} + {index(idx, y_steps)}", n,
                             "&epi_b" if epilogue != "NULL" else epilogue,
                             (calls, flat) if spread else None))


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
