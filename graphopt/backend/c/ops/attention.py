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
is packed once into the task's scratch (8 x 8 register transposes when key rows are contiguous)
and V too unless its rows are contiguous whole tiles (then read in place); both zero-padded to
whole tiles. Per block of GRAPHOPT_ATTN_ROWS query rows, csrc/graphopt_rows.h's register tiles
compute the scores, the mask is added during the row max, the exponentials are left
unnormalized (their sums kept) and the output rows are divided by the sums as they are stored:
width divisions per row instead of keys, with the block's score rows staying in L1.
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
    per_task = task_floats(depth, keys, width)
    scratch = k.scratch(4 * per_task * batch * heads)
    q_str, k_str, v_str, y_str = ([int(s) for s in k.attr(n)] for n in
                                  ("q_strides", "k_strides", "v_strides", "y_strides"))
    # V rows read in place when whole tiles of them are contiguous (no copy, no padding)
    v_direct = v_str[3] == 1 and width == width_p
    with em.loops([batch, heads], prefix="t", parallel=True,
                  work=batch * heads * rows * keys * (depth + width)) as (b, h):
        task = index([b, h], [heads * per_task, per_task])
        em.line(f"float* kt = (float*){scratch} + {task};")  # K^T: [depth][keys_p]
        if not v_direct:
            em.line(f"float* vp = kt + {depth * keys_p};")  # V: [keys][width_p]
        em.line(f"float* qb = kt + {depth * keys_p + keys * width_p};")  # scaled Q: [ROWS][depth]
        em.line(f"float* sb = qb + {ATTN_ROWS * depth};")  # scores / probabilities
        em.line(f"float* ob = sb + {ATTN_ROWS * keys_p};")  # output block: [ROWS][width_p]
        em.line(f"float sums[{ATTN_ROWS}];")  # softmax denominators of the block's rows
        _pack_keys(k, K, k_str, b, h, keys, keys_p, depth)
        if v_direct:
            em.line(f"const float* vb = {V} + {_at(v_str, b, h, '0', '0')};")
        else:
            _pack_values(k, V, v_str, b, h, keys, width, width_p)
        with em.block(f"for (int64_t i0 = 0; i0 < {rows}; i0 += {ATTN_ROWS})"):
            em.line(f"const int64_t count = {rows} - i0 < {ATTN_ROWS} ? {rows} - i0 : "
                    f"{ATTN_ROWS};")
            with em.block(f"for (int64_t r = 0; r < {ATTN_ROWS}; ++r)"):
                with em.block(f"for (int64_t d = 0; d < {depth}; ++d)"):
                    em.line(f"qb[r * {depth} + d] = r < count ? {k.attr('scale')!r}f * "
                            f"{Q}[{_at(q_str, b, h, 'i0 + r', 'd')}] : 0.0f;")
            em.line(f"graphopt_attn_rowsf(qb, {depth}, kt, {keys_p}, {depth}, sb, {keys_p}, "
                    f"{keys_p});")
            with em.block("for (int64_t r = 0; r < count; ++r)"):
                em.line(f"float* row = sb + r * {keys_p};")
                em.line(f"sums[r] = graphopt_row_exp_sumf(row, row, {keys}, "
                        f"graphopt_attn_mask_maxf(row, {_mask_row(k, b, h)}, {keys}));")
            values, ldv = ("vb", v_str[2]) if v_direct else ("vp", width_p)
            em.line(f"graphopt_attn_rowsf(sb, {keys_p}, {values}, {ldv}, {keys}, ob, {width_p}, "
                    f"{width_p});")
            em.line(f"for (int64_t r = 0; r < count; ++r) graphopt_attn_normalizef("
                    f"ob + r * {width_p}, {Y} + {_at(y_str, b, h, 'i0 + r', '0')}, {y_str[3]}, "
                    f"{width}, sums[r], {int(k.attr('nan_to_zero'))});")


def _at(strides: list[int], b: str, h: str, i: str, j: str) -> str:
    return index([b, h, i, j], strides)


def _pack_keys(k: Kernel, K: str, k_str: list[int], b: str, h: str, keys: int, keys_p: int,
               depth: int) -> None:
    """K^T into kt: [depth][keys_p], the key columns past `keys` zeroed (whole tiles, and no
    garbage or subnormal enters the sums)."""
    em = k.em
    if keys_p > keys:
        with em.loops([depth], prefix="p") as (d,):
            em.line(f"memset(kt + {d} * {keys_p} + {keys}, 0, sizeof(float) * {keys_p - keys});")
    if k_str[3] == 1:  # contiguous key rows: transposed by register blocks
        em.line(f"graphopt_attn_transposef({K} + {_at(k_str, b, h, '0', '0')}, {k_str[2]}, "
                f"{keys}, {depth}, kt, {keys_p});")
        return
    with em.loops([keys, depth], prefix="p") as (j, d):
        em.line(f"kt[{d} * {keys_p} + {j}] = {K}[{_at(k_str, b, h, j, d)}];")


def _pack_values(k: Kernel, V: str, v_str: list[int], b: str, h: str, keys: int, width: int,
                 width_p: int) -> None:
    """V into vp: [keys][width_p], the columns past `width` zeroed."""
    em = k.em
    if width_p > width:
        with em.loops([keys], prefix="p") as (j,):
            em.line(f"memset(vp + {j} * {width_p} + {width}, 0, "
                    f"sizeof(float) * {width_p - width});")
    with em.loops([keys, width], prefix="p") as (j, d):
        em.line(f"vp[{j} * {width_p} + {d}] = {V}[{_at(v_str, b, h, j, d)}];")


def _mask_row(k: Kernel, b: str, h: str) -> str:
    """The mask row of query row i0 + r as a pointer for graphopt_attn_mask_maxf: in place when
    its keys are contiguous, else added to the scores here first (NULL: nothing left to add)."""
    mask = k.input(3)
    if mask is None:
        return "NULL"
    M, m_str = k.arg(mask), [int(s) for s in k.attr("mask_strides")]
    if m_str[3] == 1:
        return f"{M} + {_at(m_str, b, h, 'i0 + r', '0')}"
    keys = int(k.attr("dims")[3])
    k.em.line(f"for (int64_t j = 0; j < {keys}; ++j) "
              f"row[j] += {M}[{_at(m_str, b, h, 'i0 + r', 'j')}];")
    return "NULL"
