"""Conv (1-D and 2-D, float32) with bias and fused ops in the epilogue; ConvTranspose (any
spatial rank) as a direct gather loop.

A Conv step runs one of the algorithms registered for it (c/algorithms.py), chosen per layer
in lowering and recorded as `Step.algorithm`; ops/winograd.py (3x3 stride 1 with many
channels) and ops/im2col_gather.py (short output rows) register theirs ahead of im2col. Here:
- depthwise (group == C == M): csrc's direct kernel, the epilogue applied per channel plane;
- pointwise (1x1, stride 1, unpadded): per image n and group g, Y[n, g] = W[g] @ X[n, g], the
  input planes read in place as the GEMM's B;
- im2col (any other window): Y[n, g] = W[g] (M/group x C/group*KH*KW) @ cols, where cols is
  X[n, g]'s im2col, written by csrc straight into the GEMM's B panels (one copy, no second
  packing pass); with constant weights and one group, graphopt_conv2d_gemm does it a block of
  output columns at a time while they are in cache (when the weights are smaller than a
  block's columns, e.g. a 7x7 stride-2 stem); on AVX-512, where the whole im2col comes first
  and the plane is not a multiple of the micro-kernel's 32 columns, the Winograd lane path's
  GEMM (graphopt_lane_sgemm: 16 columns per register tile, the last few alone) instead.
Constant weights are packed at compile time into the GEMM's A panels. The bias B[m] is an
epilogue Add seen as [M, 1, 1]. 1-D convolutions run as 2-D ones with height 1.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graphopt.backend.c.algorithms import emit_chosen, register_algorithm
from graphopt.backend.c.emitter import contiguous_strides, index
from graphopt.backend.c.epilogue import emit_epilogue
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.ops.gemm import Matrix, sgemm_call
from graphopt.backend.c.registry import register_op
from graphopt.backend.c.tiles import GemmTiles, gemm_tiles
from graphopt.backend.program import EpilogueOp, Step
from graphopt.ir.conv_geometry import ConvGeometry
from graphopt.ir.types import DType


@dataclass(frozen=True)
class ConvShape:
    """A Conv step's concrete geometry; a 1-D convolution is seen as 2-D with height 1."""

    batch: int
    channels: int
    out_channels: int
    group: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int]  # top, left (the end pads only shape the output)
    dilations: tuple[int, int]

    @classmethod
    def of(cls, step: Step) -> ConvShape | None:
        """The geometry of a 1-D or 2-D Conv step, None for other ranks and blocked layouts."""
        x, y = step.inputs[0], step.outputs[0]
        return None if x.layout else cls.from_shapes(step, x.shape, y.shape)

    @classmethod
    def from_shapes(cls, step: Step, x_shape: tuple[int, ...], y_shape: tuple[int, ...]
                    ) -> ConvShape | None:
        """The geometry of the Conv step when its input and output have these logical
        (N, C, spatial...) shapes, None unless 1-D or 2-D."""
        w = step.inputs[1]
        spatial = len(x_shape) - 2
        if spatial not in (1, 2):
            return None
        geometry = ConvGeometry.of(step.node, x_shape[2:], y_shape[2:])
        kernel = list(geometry.kernel) if geometry.kernel else list(w.shape[2:])
        lead = [1] * (2 - spatial)
        return cls(x_shape[0], x_shape[1], y_shape[1], geometry.group,
                   tuple(lead + list(x_shape[2:])), tuple(lead + list(y_shape[2:])),
                   tuple(lead + kernel), tuple(lead + list(geometry.strides)),
                   tuple([0] * (2 - spatial) + list(geometry.pads_begin)),
                   tuple(lead + list(geometry.dilations)))

    @property
    def cg(self) -> int:
        return self.channels // self.group

    @property
    def mg(self) -> int:
        return self.out_channels // self.group

    @property
    def plane_in(self) -> int:
        return self.in_hw[0] * self.in_hw[1]

    @property
    def plane_out(self) -> int:
        return self.out_hw[0] * self.out_hw[1]

    @property
    def depth(self) -> int:
        """GEMM depth: input channels of a group times kernel taps."""
        return self.cg * self.kernel[0] * self.kernel[1]

    @property
    def depthwise(self) -> bool:
        return self.group == self.channels == self.out_channels and self.group > 1

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, unpadded: the input planes are the GEMM's B as they are."""
        return self.kernel == (1, 1) and self.strides == (1, 1) and self.pads == (0, 0) and \
            self.in_hw == self.out_hw

    def c_struct(self) -> str:
        """The graphopt_conv2d_shape initializer (channels of one group)."""
        return (f"{{{self.cg}, {self.in_hw[0]}, {self.in_hw[1]}, {self.out_hw[0]}, "
                f"{self.out_hw[1]}, {self.kernel[0]}, {self.kernel[1]}, {self.strides[0]}, "
                f"{self.strides[1]}, {self.pads[0]}, {self.pads[1]}, {self.dilations[0]}, "
                f"{self.dilations[1]}}}")


def _applies(test: Callable[[ConvShape], bool]) -> Callable[[Step], bool]:
    def applies(step: Step) -> bool:
        shape = ConvShape.of(step)
        return shape is not None and test(shape)
    return applies


@register_op("Conv", dtypes={DType.FLOAT})
def emit_conv(k: Kernel) -> None:
    """Refuse what no algorithm handles, then run the one lowering chose."""
    spatial = k.input(0).rank - 2
    if not k.input(0).tensor.layout and spatial not in (1, 2):
        k.unsupported(f"{spatial}-D convolution is not implemented (1-D and 2-D are)")
    emit_chosen(k)


def conv_epilogue(k: Kernel, shape: ConvShape) -> str:
    """The bias (an Add of B seen as [M, 1, 1]) and the fused ops as the GEMM epilogue."""
    b, y = k.input(2), k.outputs[0]
    ops = [EpilogueOp("Add", {}, (b.tensor,))] if b is not None else []
    spatial = y.rank - 2
    shapes = {id(b.tensor): (shape.out_channels,) + (1,) * spatial} if b is not None else {}
    return emit_epilogue(k, y, 2, ops + k.epilogue, shapes)


@register_algorithm("Conv", "depthwise", applies=_applies(lambda s: s.depthwise))
def _emit_depthwise(k: Kernel) -> None:
    """One filter per channel (group == C == M): csrc's direct kernel, the epilogue per plane.
    As a GEMM each group would have a single row."""
    shape = ConvShape.of(k.step)
    epilogue = conv_epilogue(k, shape)
    W = k.arg(k.input(1))
    k.em.line(f"graphopt_conv2d_shape dw = {shape.c_struct()}; dw.channels = {shape.channels};")
    emit_per_image(k, shape, epilogue, lambda x, y: f"graphopt_depthwise_conv2d({x}, {W}, {y}, "
                                                    f"&dw, {epilogue});")


def emit_per_image(k: Kernel, shape: ConvShape, epilogue: str,
                   call: Callable[[str, str], str], rows_per_image: int | None = None,
                   each: Callable[[str], None] | None = None) -> None:
    """A loop over the images n running the C statement `call(x, y)` on image n's input and
    output planes (x = X + n * C*H*W, y = Y + n * M*OH*OW), the epilogue's rows starting at
    n * rows_per_image (default M), after `each(n)` emits what else depends on n: for csrc
    kernels that take one image at a time."""
    em, X, Y = k.em, k.arg(k.input(0)), k.arg(k.outputs[0])
    rows = shape.out_channels if rows_per_image is None else rows_per_image
    with em.loops([shape.batch], prefix="n") as (n,):
        if each is not None:
            each(n)
        if epilogue != "NULL":
            em.line(f"epi.row_base = {n} * {rows};")
        em.line(call(f"{X} + {n} * {shape.channels * shape.plane_in}",
                     f"{Y} + {n} * {shape.out_channels * shape.plane_out}"))


@register_algorithm("Conv", "pointwise", applies=_applies(lambda s: s.pointwise))
def _emit_pointwise(k: Kernel) -> None:
    """1x1 stride 1: W [M, C] @ X[n] [C, H*W], the input read in place (no im2col copy)."""
    emit_as_gemm(k, ConvShape.of(k.step), columns=None)


@register_algorithm("Conv", "im2col", applies=_applies(lambda s: True))
def _emit_im2col(k: Kernel) -> None:
    """Any other window: im2col written straight into the GEMM's B panels, then the GEMM;
    with constant weights and one group, csrc's graphopt_conv2d_gemm does both a block of
    output columns at a time, so the columns are still in cache when the GEMM reads them."""
    shape = ConvShape.of(k.step)
    if k.input(1).const is None or shape.group != 1:
        emit_as_gemm(k, shape,
                     columns=lambda x, cols: f"graphopt_im2col_packed({x}, &shape, {cols});")
        return
    tiles = gemm_tiles(k.target)
    if _lane_gemm_pays(shape, tiles):
        emit_lane_gemm(k, shape, lambda x, cols: f"graphopt_im2col_packed({x}, &shape, {cols});")
        return
    epilogue = conv_epilogue(k, shape)
    w_panels = k.packed(k.input(1), "panels", lambda a: pack_groups(a, 1, tiles.pack_a))
    cols = k.scratch(4 * tiles.packed_b_floats(shape.depth, shape.plane_out))
    k.em.line(f"const graphopt_conv2d_shape shape = {shape.c_struct()};")
    emit_per_image(k, shape, epilogue, lambda x, y: (
        f"graphopt_conv2d_gemm({x}, {w_panels}, {y}, &shape, {shape.out_channels}, "
        f"(float*){cols}, {epilogue});"))


def _lane_gemm_pays(shape: ConvShape, tiles: GemmTiles) -> bool:
    """Whether the AVX-512 lane path's GEMM (graphopt_lane_sgemm) runs this im2col: where
    graphopt_conv2d_gemm would write the whole im2col first (more output channels than a
    column block holds: the weights outweigh a block's columns, conv.c block_panels) and the
    output plane leaves the micro-kernel's 32-column panels partly empty (14x14: 196 columns
    in 224)."""
    from graphopt.backend.c.ops import winograd

    block = max(1, 2 * tiles.kc // shape.depth) * tiles.nr
    return (winograd.lane_path(tiles) and shape.out_channels > block
            and shape.plane_out % tiles.nr != 0)


def emit_lane_gemm(k: Kernel, shape: ConvShape, columns: Callable[[str, str], str]) -> None:
    """Per image: the C statement `columns(x, cols)` writes the im2col B panels of the input
    planes x into cols, then graphopt_lane_sgemm (the AVX-512 lane path's GEMM) multiplies
    the weights, packed in 16-row panels, by them (one group, constant weights)."""
    from graphopt.backend.c.ops import winograd

    tiles = gemm_tiles(k.target)
    m, n, depth = shape.out_channels, shape.plane_out, shape.depth
    epilogue = conv_epilogue(k, shape)
    weights = k.packed(k.input(1), "lanes", lambda w: winograd.row_panels(
        w.reshape(w.shape[0], -1), winograd.panel_rows(tiles)))
    cols = k.scratch(4 * tiles.packed_b_floats(depth, n))
    k.add_helper('#include "graphopt_winograd.h"')
    k.em.line(f"const graphopt_conv2d_shape shape = {shape.c_struct()};")
    emit_per_image(k, shape, epilogue, lambda x, y: (
        f"{columns(x, f'(float*){cols}')} "
        f"graphopt_lane_sgemm({m}, {n}, {depth}, {weights}, (const float*){cols}, {y}, {n}, "
        f"{epilogue});"))


def emit_as_gemm(k: Kernel, shape: ConvShape, columns: Callable[[str, str], str] | None
                 ) -> None:
    """Per image n and group g: Y[n, g] = W[g] @ B where B is X[n, g] (pointwise, `columns`
    None) or its im2col in the GEMM's B panels, which the C statement `columns(x, cols)`
    writes from the group's input planes x into the scratch cols (the local `shape` holds the
    group's graphopt_conv2d_shape); constant weights come as A panels packed at compile time."""
    x, w, y = k.input(0), k.input(1), k.outputs[0]
    epilogue = conv_epilogue(k, shape)
    em, X, Y = k.em, k.arg(x), k.arg(y)
    tiles = gemm_tiles(k.target)
    mg, depth, plane_out = shape.mg, shape.depth, shape.plane_out
    if w.const is not None:
        w_panels = k.packed(w, "panels", lambda a: pack_groups(a, shape.group, tiles.pack_a))
        w_step = tiles.packed_a_floats(mg, depth)
    cols = k.scratch(4 * tiles.packed_b_floats(depth, plane_out)) if columns else None
    if columns:
        em.line(f"const graphopt_conv2d_shape shape = {shape.c_struct()};")
    with em.loops([shape.batch, shape.group], prefix="n") as (n, g):
        x_block = f"{X} + ({n} * {shape.channels} + {g} * {shape.cg}) * {shape.plane_in}"
        if columns is not None:
            em.line(columns(x_block, f"(float*){cols}"))
            b_matrix = Matrix(f"(const float*){cols}", packed=True)
        else:
            b_matrix = Matrix(x_block, (plane_out, 1))
        if w.const is not None:
            a_matrix = Matrix(f"{w_panels} + {g} * {w_step}", packed=True)
        else:
            a_matrix = Matrix(f"{k.arg(w)} + {g} * {mg * depth}", (depth, 1))
        if epilogue != "NULL":
            em.line(f"epi.row_base = {n} * {shape.out_channels} + {g} * {mg};")
        em.line(sgemm_call(k, mg, plane_out, depth, a_matrix, b_matrix,
                           f"{Y} + ({n} * {shape.out_channels} + {g} * {mg}) * {plane_out}",
                           plane_out, epilogue))


def pack_groups(weights: np.ndarray, group: int, pack: Callable[[np.ndarray], np.ndarray]
                ) -> np.ndarray:
    """Conv weights [M, C/group, kh, kw] as one [M/group, depth] GEMM A operand per group,
    each packed with `pack`, concatenated group after group."""
    rows = weights.reshape(group, weights.shape[0] // group, -1)
    return np.concatenate([pack(rows[g]).reshape(-1) for g in range(group)])


@register_op("ConvTranspose", dtypes={DType.FLOAT})
def emit_conv_transpose(k: Kernel) -> None:
    """Y[n, m, o] = B[m] + sum over the group's input channels c and taps t of
    X[n, c, i] * W[c, m', t], where o = i * stride - pad + t * dilation (the gradient of Conv):
    each output element gathers the input positions i that land on it."""
    x, w, b, y = k.input(0), k.input(1), k.input(2), k.outputs[0]
    spatial = x.rank - 2
    geometry = ConvGeometry.of(k.node, x.shape[2:], y.shape[2:])
    kernel, strides = list(geometry.kernel), list(geometry.strides)
    dilations, pads = list(geometry.dilations), list(geometry.pads_begin)
    group = geometry.group
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
    # block positions per dim: the output size of a window op with this geometry on the image
    blocks = list(ConvGeometry(tuple(block), tuple(strides), tuple(dilations),
                               tuple(pads[:rank]), tuple(pads[rank:])).output_size(image))
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
