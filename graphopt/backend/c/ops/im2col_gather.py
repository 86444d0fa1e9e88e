"""Conv on small output planes from a zero-padded copy of the input (csrc/im2col_gather.c):
a direct kernel, or im2col by gathering and then the GEMM.

direct (small convolutions: digits_cnn's 3x3 layers on 8x8 and 4x4 maps): a register tile of
up to 6 output pixels by two vectors of output channels, weights packed per block of channels
at compile time, the bias and a fused Relu/Clip applied in registers; no im2col buffer and no
GEMM packing. On the Zen 3 host (a C loop over one layer, minimum of 30000 calls, caches
warm) digits_cnn's 16->32 on 8x8 / 32->32 on 4x4 / 1->16 on 8x8 take 7.0 / 3.9 / 0.5 us
(42 / 38 / 17 GMAC/s; the FMA units' peak is 51) against 8.1 / 4.3 / 0.7 for im2col_gather
and the GEMM.

im2col_gather:

graphopt_im2col_packed copies each im2col row in runs that end at a panel or output-row
boundary; when an output row is shorter than a panel (digits_cnn's 8x8 and 4x4 maps against
the 16-column AVX2 panel) every run is a few floats and its bookkeeping dominates: 11 us for
the 288 x 16 columns of a 32-channel 4x4 map, three times the GEMM on them.
csrc/im2col_gather.c pads the input once and gathers each panel row through a table of
offsets instead (no bounds checks, no runs); the GEMM is the one `conv.emit_as_gemm` runs.
"""
from __future__ import annotations

import math

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.algorithms import register_algorithm
from graphopt.backend.c.epilogue import emit_epilogue
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.ops import winograd  # (registered first: it takes precedence)
from graphopt.backend.c.ops.conv import ConvShape, emit_as_gemm, emit_lane_gemm, emit_per_image
from graphopt.backend.c.ops.conv_blocked import fast_epilogue
from graphopt.backend.c.tiles import gemm_tiles
from graphopt.backend.program import Step
from graphopt.ir.types import DType

# Output rows up to this long (half an AVX2 panel) gather faster; from 14 columns on,
# im2col_packed's runs are long enough (128 -> 256 channels, 28x28 -> 14x14 stride 2: 1.5 ms
# packed vs 1.8 ms gathered; 32 channels on 8x8: 40 us packed vs 28 us gathered).
MAX_OUT_WIDTH = 8
MAX_PADDED_FLOATS = 1 << 18  # the padded copy stays cache-sized


def padded_floats(shape: ConvShape) -> int:
    """Floats of the zero-padded input planes (every window inside) of one image and group."""
    height = (shape.out_hw[0] - 1) * shape.strides[0] + \
        (shape.kernel[0] - 1) * shape.dilations[0] + 1
    width = (shape.out_hw[1] - 1) * shape.strides[1] + \
        (shape.kernel[1] - 1) * shape.dilations[1] + 1
    return shape.cg * height * width


def scratch_bytes(shape: ConvShape, nr: int) -> int:
    """graphopt_im2col_gather_scratch: the padded planes and one int32 offset per column."""
    return 4 * padded_floats(shape) + 4 * (-(-shape.plane_out // nr) * nr)


def _applies(step: Step) -> bool:
    shape = ConvShape.of(step)
    return (shape is not None and not shape.depthwise and not shape.pointwise
            and shape.out_hw[1] <= MAX_OUT_WIDTH and padded_floats(shape) <= MAX_PADDED_FLOATS)


@register_algorithm("Conv", "im2col_gather", applies=_applies, before="im2col")
def emit_im2col_gather(k: Kernel) -> None:
    """Small output planes: the padded-gather im2col, then the GEMM on packed weights (on
    AVX-512 with constant weights, the lane path's GEMM: conv.emit_lane_gemm)."""
    shape = ConvShape.of(k.step)
    tiles = gemm_tiles(k.target)
    work = k.scratch(scratch_bytes(shape, tiles.nr))
    k.add_helper('#include "graphopt_im2col_gather.h"')

    def columns(x: str, cols: str) -> str:
        return f"graphopt_im2col_gather({x}, &shape, {cols}, {work});"

    if winograd.lane_path(tiles) and k.input(1).const is not None and shape.group == 1:
        # 16 output positions per register tile and the last few one by one, where the
        # 32-column panels of the AVX-512 micro-kernel compute 64 columns for a 7x7 plane's
        # 49 (resnet18's 256 -> 512 3x3 stride-2 layer: 1.42 -> 1.18 ms)
        emit_lane_gemm(k, shape, columns)
    else:
        emit_as_gemm(k, shape, columns=columns)


DIRECT_VECTORS = 2  # csrc/im2col_gather.c: output channels per weight block, in vectors
DIRECT_PIXELS = 6  # csrc/im2col_gather.c: output pixels per register tile
# Where direct was measured faster (1 thread, C loop, 3x3 pad 1, against im2col_gather + GEMM
# up to 8 columns, graphopt_conv2d_gemm above): 0.29-0.92x the time from 1.2M to 10.8M MACs
# (37->16 on 16x16, 64->32 on 14x14, 8->16 on 56x56, 64->64 on 8x8, 256->32 on 4x4), but
# 1.25-1.28x with 73K-147K weights and 128 output channels (each tile re-reads a block's
# weights from L2). The limits keep to the measured wins with a margin.
DIRECT_MAX_MACS = 1 << 22
DIRECT_MAX_WEIGHT_FLOATS = 1 << 16


def direct_scratch_bytes(shape: ConvShape) -> int:
    """graphopt_conv_direct_scratch: the padded planes, one int32 offset per tap and one per
    output pixel rounded up to a whole tile."""
    pixels = -(-shape.plane_out // DIRECT_PIXELS) * DIRECT_PIXELS
    return 4 * padded_floats(shape) + 4 * (shape.depth + pixels)


def pack_direct(weights: np.ndarray, block: int) -> np.ndarray:
    """Conv weights [M, C, kh, kw] as graphopt_conv_direct reads them: blocks of `block`
    output channels, tap-major within a block, zero channels past M."""
    rows = np.asarray(weights, np.float32).reshape(weights.shape[0], -1)
    blocks = -(-rows.shape[0] // block)
    padded = np.zeros((blocks * block, rows.shape[1]), np.float32)
    padded[:rows.shape[0]] = rows
    return np.ascontiguousarray(padded.reshape(blocks, block, -1).transpose(0, 2, 1))


def direct_fits(shape: ConvShape) -> bool:
    """Whether the direct kernel takes a convolution of this geometry (constant weights)."""
    return (shape.group == 1
            and shape.out_channels * shape.plane_out * shape.depth <= DIRECT_MAX_MACS
            and shape.out_channels * shape.depth <= DIRECT_MAX_WEIGHT_FLOATS
            and padded_floats(shape) <= MAX_PADDED_FLOATS)


def _direct_applies(step: Step) -> bool:
    shape = ConvShape.of(step)
    return shape is not None and step.inputs[1].const is not None and direct_fits(shape)


@register_algorithm("Conv", "direct", applies=_direct_applies, before="im2col_gather")
def emit_direct(k: Kernel) -> None:
    """Small convolutions: csrc's direct kernel; the bias and a fused Relu/Clip in registers,
    any other fused op by the generic epilogue over the output after."""
    shape = ConvShape.of(k.step)
    block = DIRECT_VECTORS * gemm_tiles(k.target).kernel.vlen
    weights = k.packed(k.input(1), "direct", lambda w: pack_direct(w, block))
    bias = k.arg(k.input(2)) if k.input(2) is not None else "NULL"
    bounds = _clamp(k)
    epilogue = "NULL" if bounds else emit_epilogue(k, k.outputs[0], 2, k.epilogue)
    lo, hi = (cdtypes.literal(v, DType.FLOAT) for v in (bounds or (-math.inf, math.inf)))
    work = k.scratch(direct_scratch_bytes(shape))
    k.em.line(f"const graphopt_conv2d_shape shape = {shape.c_struct()};")
    k.add_helper('#include "graphopt_im2col_gather.h"')
    emit_per_image(k, shape, epilogue, lambda x, y: (
        f"graphopt_conv_direct({x}, {weights}, {bias}, {lo}, {hi}, {y}, &shape, "
        f"{shape.out_channels}, {work}, {epilogue});"))


def _clamp(k: Kernel) -> tuple[float, float] | None:
    """The fused ops as the bounds of one Relu/Clip (what the kernel applies in registers),
    None when they are anything else (or nothing)."""
    fast = fast_epilogue(k.epilogue, k.outputs[0].tensor) if k.epilogue else None
    if fast is None or fast.residual is not None or fast.silu:
        return None
    return fast.lo, fast.hi
