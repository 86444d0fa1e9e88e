"""Transformer building blocks: RotaryEmbedding and the fused attention step.

RotaryEmbedding rotates the first rotary_embedding_dim features of each head by the angle of
its position: with (x1, x2) the two halves of those features (or the even and odd ones when
interleaved) and cos/sin read at the position (position_ids[b, s], or the caches' own [b, s]
rows without position_ids),
    x1' = cos * x1 - sin * x2,   x2' = sin * x1 + cos * x2;
the remaining features are copied. X is [B, H, S, D], or [B, S, H * D] with num_heads.

FusedAttention (a Program-only step made by graphopt/backend/fuse_attention.py) computes
    Y[b, h] = Softmax(scale * Q[b, h] @ K[b, h]^T + M[b, h]) @ V[b, h]
(NaN probabilities zeroed when `nan_to_zero`), every operand read through its own strides, so
the head Transposes around it cost nothing. One task per (batch, head) pair, in parallel: K^T
and V are packed once into the task's scratch (zero-padded to whole tiles), then per block of
GRAPHOPT_ATTN_ROWS query rows the scores, their softmax and the output rows are computed by
csrc/graphopt_rows.h's register tiles while the block's score rows stay in L1.
"""
from __future__ import annotations

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.registry import register_op
from graphopt.backend.fuse_attention import ATTN_COLS, ATTN_ROWS, OP_TYPE, task_floats
from graphopt.backend.planner import align
from graphopt.ir.types import DType


@register_op("RotaryEmbedding", dtypes=cdtypes.FLOATS)
def emit_rotary_embedding(k: Kernel) -> None:
    x, cos, sin, positions = k.input(0), k.input(1), k.input(2), k.input(3)
    y = k.outputs[0]
    if x.rank == 4:
        batch, heads, seq, head = x.shape
        strides = [x.strides[0], x.strides[2], x.strides[1], x.strides[3]]  # as [B, S, H, D]
    elif x.rank == 3 and int(k.attr("num_heads", 0)):
        heads = int(k.attr("num_heads"))
        batch, seq, hidden = x.shape
        head = hidden // heads
        strides = [seq * hidden, hidden, head, 1]
    else:
        k.unsupported(f"RotaryEmbedding of a rank-{x.rank} input without num_heads")

    def offset(b: str, s: str, h: str, d: str) -> str:
        return index([b, s, h, d], strides)

    if positions is not None and positions.dtype not in (DType.INT32, DType.INT64):
        k.unsupported(f"RotaryEmbedding position_ids of type {positions.dtype.name}")
    rotary = int(k.attr("rotary_embedding_dim", 0)) or head
    half = rotary // 2
    interleaved = int(k.attr("interleaved", 0))
    em, X, Y, C, S = k.em, k.arg(x), k.arg(y), k.arg(cos), k.arg(sin)
    with em.loops([batch, seq]) as (b, s):  # serial: a bad position returns
        if positions is not None:
            em.line(f"const int64_t pos = (int64_t){k.arg(positions)}[{index([b, s], [seq, 1])}];")
            em.line(f"if (pos < 0 || pos >= {cos.shape[0]}) return 1;")
            row = "pos * " + str(half)
        else:
            row = index([b, s], [seq * half, half])
        with em.loops([heads, head], prefix="h") as (h, d):
            at = offset(b, s, h, d)
            with em.block(f"if ({d} < {rotary})"):
                if interleaved:  # pairs (2i, 2i + 1)
                    em.line(f"const int64_t i = {d} / 2, mate = {d} % 2 ? {d} - 1 : {d} + 1;")
                    em.line(f"const int first = {d} % 2 == 0;")
                else:  # halves (i, i + half)
                    em.line(f"const int64_t i = {d} % {half}, "
                            f"mate = {d} < {half} ? {d} + {half} : {d} - {half};")
                    em.line(f"const int first = {d} < {half};")
                em.line(f"const {x.ctype} c = {C}[{row} + i], s = {S}[{row} + i];")
                mate = offset(b, s, h, "mate")
                em.line(f"{Y}[{at}] = first ? c * {X}[{at}] - s * {X}[{mate}] : "
                        f"s * {X}[{mate}] + c * {X}[{at}];")
            em.line(f"else {Y}[{at}] = {X}[{at}];")


@register_op(OP_TYPE, dtypes=(DType.FLOAT,))
def emit_fused_attention(k: Kernel) -> None:
    batch, heads, rows, keys, depth, width = (int(d) for d in k.attr("dims"))
    keys_p, width_p = align(keys, ATTN_COLS), align(width, ATTN_COLS)
    em = k.em
    Q, K, V, Y = (k.arg(op) for op in (k.input(0), k.input(1), k.input(2), k.outputs[0]))
    mask = k.input(3)
    per_task = task_floats(depth, keys, width)
    scratch = k.scratch(4 * per_task * batch * heads)

    def at(strides: list[int], b: str, h: str, i: str, j: str) -> str:
        return index([b, h, i, j], [int(s) for s in strides])

    q_str, k_str, v_str, y_str = (k.attr(n) for n in ("q_strides", "k_strides", "v_strides",
                                                       "y_strides"))
    with em.loops([batch, heads], prefix="t", parallel=True,
                  work=batch * heads * rows * keys * (depth + width)) as (b, h):
        task = index([b, h], [heads * per_task, per_task])
        em.line(f"float* kt = (float*){scratch} + {task};")  # K^T: [depth][keys_p]
        em.line(f"float* vp = kt + {depth * keys_p};")  # V: [keys][width_p]
        em.line(f"float* qb = vp + {keys * width_p};")  # scaled Q block: [ROWS][depth]
        em.line(f"float* sb = qb + {ATTN_ROWS * depth};")  # scores / probabilities
        em.line(f"float* ob = sb + {ATTN_ROWS * keys_p};")  # output block: [ROWS][width_p]
        if keys_p > keys:  # zero tile padding, so no garbage (or subnormal) enters the sums
            with em.loops([depth], prefix="p") as (d,):
                em.line(f"memset(kt + {d} * {keys_p} + {keys}, 0, "
                        f"sizeof(float) * {keys_p - keys});")
        if width_p > width:
            with em.loops([keys], prefix="p") as (j,):
                em.line(f"memset(vp + {j} * {width_p} + {width}, 0, "
                        f"sizeof(float) * {width_p - width});")
        with em.loops([keys, depth], prefix="p") as (j, d):
            em.line(f"kt[{d} * {keys_p} + {j}] = {K}[{at(k_str, b, h, j, d)}];")
        with em.loops([keys, width], prefix="p") as (j, d):
            em.line(f"vp[{j} * {width_p} + {d}] = {V}[{at(v_str, b, h, j, d)}];")
        with em.block(f"for (int64_t i0 = 0; i0 < {rows}; i0 += {ATTN_ROWS})"):
            em.line(f"const int64_t count = {rows} - i0 < {ATTN_ROWS} ? {rows} - i0 : "
                    f"{ATTN_ROWS};")
            with em.block(f"for (int64_t r = 0; r < {ATTN_ROWS}; ++r)"):
                with em.block(f"for (int64_t d = 0; d < {depth}; ++d)"):
                    em.line(f"qb[r * {depth} + d] = r < count ? "
                            f"{k.attr('scale')!r}f * {Q}[{at(q_str, b, h, 'i0 + r', 'd')}] : 0.0f;")
            em.line(f"graphopt_attn_rowsf(qb, {depth}, kt, {keys_p}, {depth}, sb, {keys_p}, "
                    f"{keys_p});")
            with em.block("for (int64_t r = 0; r < count; ++r)"):
                em.line(f"float* row = sb + r * {keys_p};")
                if mask is not None:
                    M, m_str = k.arg(mask), k.attr("mask_strides")
                    em.line(f"for (int64_t j = 0; j < {keys}; ++j) "
                            f"row[j] += {M}[{at(m_str, b, h, 'i0 + r', 'j')}];")
                em.line(f"graphopt_attn_softmaxf(row, {keys}, {int(k.attr('nan_to_zero'))});")
            em.line(f"graphopt_attn_rowsf(sb, {keys_p}, vp, {width_p}, {keys}, ob, {width_p}, "
                    f"{width_p});")
            with em.block("for (int64_t r = 0; r < count; ++r)"):
                em.line(f"for (int64_t d = 0; d < {width}; ++d) "
                        f"{Y}[{at(y_str, b, h, 'i0 + r', 'd')}] = ob[r * {width_p} + d];")
