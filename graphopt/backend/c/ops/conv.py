"""Conv (1-D and 2-D, float32) as GEMM, with bias and fused ops in the epilogue; ConvTranspose
(any spatial rank) as a direct gather loop.

For each image n and group g the output block Y[n, g] (M/group x OH*OW) is
    W[g] (M/group x C/group*KH*KW)  @  cols (C/group*KH*KW x OH*OW)
where cols is im2col of X[n, g] (csrc) -- or X[n, g] itself for a 1x1, stride 1, unpadded
convolution. Depthwise convolutions (group == C == M) use csrc's direct kernel instead, since
their GEMMs would have a single row. The bias B[m] is an epilogue Add seen as [M, 1, 1].
1-D convolutions run as 2-D ones with height 1.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np

from graphopt.backend.c.emitter import contiguous_strides, index
from graphopt.backend.c.epilogue import emit_epilogue
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.ops.gemm import sgemm_call, sgemm_scratch_bytes
from graphopt.backend.c.registry import register_op
from graphopt.backend.program import EpilogueOp
from graphopt.ir.types import DType


def window_pads(k: Kernel, in_spatial: Sequence[int], out_spatial: Sequence[int],
                kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial dim of a windowed op, resolving auto_pad: SAME_UPPER puts
    the odd pad at the end, SAME_LOWER at the beginning, VALID pads nothing."""
    auto_pad = k.attr("auto_pad", "NOTSET")
    rank = len(in_spatial)
    if auto_pad in ("NOTSET", ""):
        pads = list(k.attr("pads", [0] * (2 * rank)))
        return pads[:rank], pads[rank:]
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    begins, ends = [], []
    for i in range(rank):
        extent = (kernel[i] - 1) * dilations[i] + 1
        total = max((out_spatial[i] - 1) * strides[i] + extent - in_spatial[i], 0)
        begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begins.append(begin)
        ends.append(total - begin)
    return begins, ends


@register_op("Conv", dtypes={DType.FLOAT})
def emit_conv(k: Kernel) -> None:
    x, w, b = k.input(0), k.input(1), k.input(2)
    y = k.outputs[0]
    spatial = x.rank - 2
    if spatial not in (1, 2):
        k.unsupported(f"{spatial}-D convolution is not implemented (1-D and 2-D are)")
    kernel = list(k.attr("kernel_shape", w.shape[2:]))
    strides = list(k.attr("strides", [1] * spatial))
    dilations = list(k.attr("dilations", [1] * spatial))
    pads, _ = window_pads(k, x.shape[2:], y.shape[2:], kernel, strides, dilations)
    if spatial == 1:  # as 2-D with height 1
        kernel, strides, dilations, pads = [1] + kernel, [1] + strides, [1] + dilations, [0] + pads
    in_hw = ([1] + list(x.shape[2:]))[-2:]
    out_hw = ([1] + list(y.shape[2:]))[-2:]
    batch, channels, out_channels = x.shape[0], x.shape[1], y.shape[1]
    group = int(k.attr("group", 1))
    cg, mg = channels // group, out_channels // group
    plane_in, plane_out = in_hw[0] * in_hw[1], out_hw[0] * out_hw[1]

    ops = [EpilogueOp("Add", {}, (b.tensor,))] if b is not None else []
    shapes = {id(b.tensor): (out_channels,) + (1,) * spatial} if b is not None else {}
    epilogue = emit_epilogue(k, y, 2, ops + k.epilogue, shapes)
    em, X, W, Y = k.em, k.arg(x), k.arg(w), k.arg(y)
    em.line(f"const graphopt_conv2d_shape shape = {{{cg}, {in_hw[0]}, {in_hw[1]}, {out_hw[0]}, "
            f"{out_hw[1]}, {kernel[0]}, {kernel[1]}, {strides[0]}, {strides[1]}, {pads[0]}, "
            f"{pads[1]}, {dilations[0]}, {dilations[1]}}};")
    if group == channels == out_channels and group > 1:
        em.line(f"graphopt_conv2d_shape dw = shape; dw.channels = {channels};")
        with em.loops([batch], prefix="n") as (n,):
            if epilogue != "NULL":
                em.line(f"epi.row_base = {n} * {out_channels};")
            em.line(f"graphopt_depthwise_conv2d({X} + {n} * {channels * plane_in}, {W}, "
                    f"{Y} + {n} * {out_channels * plane_out}, &dw, {epilogue});")
        return
    depth = cg * kernel[0] * kernel[1]
    pointwise = (kernel == [1, 1] and strides == [1, 1] and pads == [0, 0])
    cols = None if pointwise else k.scratch(4 * depth * plane_out)
    gemm_scratch = sgemm_scratch_bytes(mg, plane_out, depth)
    scratch = k.scratch(gemm_scratch) if gemm_scratch else None
    em.line("(void)shape;")
    with em.loops([batch, group], prefix="n") as (n, g):
        x_block = f"{X} + ({n} * {channels} + {g} * {cg}) * {plane_in}"
        if cols is not None:
            em.line(f"graphopt_im2col({x_block}, &shape, (float*){cols});")
            b_operand = f"(const float*){cols}"
        else:
            b_operand = x_block
        if epilogue != "NULL":
            em.line(f"epi.row_base = {n} * {out_channels} + {g} * {mg};")
        em.line(sgemm_call(k, mg, plane_out, depth, f"{W} + {g} * {mg * depth}", (depth, 1),
                           b_operand, (plane_out, 1),
                           f"{Y} + ({n} * {out_channels} + {g} * {mg}) * {plane_out}", plane_out,
                           epilogue, scratch))


def _transpose_pads(k: Kernel, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...],
                    kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """Leading pads of a ConvTranspose: the `pads` attribute, or (with output_shape or a SAME
    auto_pad) derived from total = stride (in - 1) + output_padding + extent - out, the odd
    element going to the end for SAME_UPPER and to the beginning otherwise (the spec's rule)."""
    auto_pad = k.attr("auto_pad", "NOTSET")
    rank = len(in_spatial)
    if auto_pad == "VALID":
        return [0] * rank
    if k.attr("output_shape") is None and auto_pad in ("NOTSET", ""):
        return list(k.attr("pads", [0] * (2 * rank)))[:rank]
    extra = list(k.attr("output_padding", [0] * rank))
    begins = []
    for i in range(rank):
        extent = (kernel[i] - 1) * dilations[i] + 1
        total = strides[i] * (in_spatial[i] - 1) + extra[i] + extent - out_spatial[i]
        begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    return begins


@register_op("ConvTranspose", dtypes={DType.FLOAT})
def emit_conv_transpose(k: Kernel) -> None:
    """Y[n, m, o] = B[m] + sum over the group's input channels c and taps t of
    X[n, c, i] * W[c, m', t], where o = i * stride - pad + t * dilation (the gradient of Conv):
    each output element gathers the input positions i that land on it."""
    x, w, b, y = k.input(0), k.input(1), k.input(2), k.outputs[0]
    spatial = x.rank - 2
    kernel = list(k.attr("kernel_shape", w.shape[2:]))
    strides = list(k.attr("strides", [1] * spatial))
    dilations = list(k.attr("dilations", [1] * spatial))
    pads = _transpose_pads(k, x.shape[2:], y.shape[2:], kernel, strides, dilations)
    group = int(k.attr("group", 1))
    channels, out_channels = x.shape[1], y.shape[1]
    cg, mg = channels // group, out_channels // group
    em, X, W, Y = k.em, k.arg(x), k.arg(w), k.arg(y)
    with em.loops(y.shape, parallel=True, work=y.size * cg * int(np.prod(kernel))) as out:
        n, m, positions = out[0], out[1], out[2:]
        em.line(f"const int64_t g = {m} / {mg}, ml = {m} % {mg};" if group > 1 else
                f"const int64_t g = 0, ml = {m};")
        em.line(f"double acc = {f'{k.arg(b)}[{m}]' if b is not None else '0'};")
        with em.loops([cg] + kernel, prefix="r") as (c, *taps), contextlib.ExitStack() as hits:
            coords = []
            for d in range(spatial):
                t = em.temp("p")
                em.line(f"const int64_t {t} = {positions[d]} + {pads[d]} - "
                        f"{taps[d]} * {dilations[d]};")
                hits.enter_context(em.block(f"if ({t} >= 0 && {t} % {strides[d]} == 0 && "
                                            f"{t} / {strides[d]} < {x.shape[2 + d]})"))
                coords.append(f"({t} / {strides[d]})")
            x_at = index([n, f"(g * {cg} + {c})"] + coords, x.strides)
            w_at = index([f"(g * {cg} + {c})", "ml"] + list(taps), w.strides)
            em.line(f"acc += (double){X}[{x_at}] * {W}[{w_at}];")
        em.line(f"{Y}[{index(out, y.strides)}] = (float)acc;")


@register_op("Col2Im", const_inputs=(1, 2))
def emit_col2im(k: Kernel) -> None:
    """The inverse of im2col: column l of X[n, c * K + tap] is added to the image pixel that
    block position l and kernel tap `tap` cover (pixel = block * stride - pad + tap * dilation);
    overlapping blocks sum."""
    x, image_in, block_in, y = k.input(0), k.input(1), k.input(2), k.outputs[0]
    if image_in.const is None or block_in.const is None:
        k.unsupported("Col2Im with image_shape/block_shape computed at run time")
    image = [int(v) for v in image_in.const.reshape(-1)]
    block = [int(v) for v in block_in.const.reshape(-1)]
    rank = len(image)
    strides = [int(v) for v in k.attr("strides", [1] * rank)]
    dilations = [int(v) for v in k.attr("dilations", [1] * rank)]
    pads = [int(v) for v in k.attr("pads", [0] * (2 * rank))]
    blocks = [(image[d] + pads[d] + pads[rank + d] - dilations[d] * (block[d] - 1) - 1)
              // strides[d] + 1 for d in range(rank)]
    taps = int(np.prod(block))
    em, X, Y = k.em, k.arg(x), k.arg(y)
    em.line(f"memset({Y}, 0, {y.size * y.dtype.itemsize});")
    channels = y.shape[1]
    nest = em.loops([y.shape[0], channels] + block + blocks, prefix="q")
    with nest as loop, contextlib.ExitStack() as inside:
        n, c, tap, pos = loop[0], loop[1], loop[2:2 + rank], loop[2 + rank:]
        pixel = []
        for d in range(rank):
            p = em.temp("px")
            em.line(f"const int64_t {p} = {pos[d]} * {strides[d]} - {pads[d]} + "
                    f"{tap[d]} * {dilations[d]};")
            inside.enter_context(em.block(f"if ({p} >= 0 && {p} < {image[d]})"))
            pixel.append(p)
        row = f"({c} * {taps} + {index(tap, contiguous_strides(block))})"
        column = f"({index(pos, contiguous_strides(blocks))})"
        em.line(f"{Y}[{index([n, c] + pixel, y.strides)}] += "
                f"{X}[{index([n, row, column], x.strides)}];")
