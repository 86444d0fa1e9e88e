"""Transformer building blocks: RotaryEmbedding.

RotaryEmbedding rotates the first rotary_embedding_dim features of each head by the angle of
its position: with (x1, x2) the two halves of those features (or the even and odd ones when
interleaved) and cos/sin read at the position (position_ids[b, s], or the caches' own [b, s]
rows without position_ids),
    x1' = cos * x1 - sin * x2,   x2' = sin * x1 + cos * x2;
the remaining features are copied. X is [B, H, S, D], or [B, S, H * D] with num_heads.
"""
from __future__ import annotations

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.registry import register_op
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
