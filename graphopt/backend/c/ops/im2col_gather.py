"""Conv on small output planes: im2col by gathering from a zero-padded copy, then the GEMM.

graphopt_im2col_packed copies each im2col row in runs that end at a panel or output-row
boundary; when an output row is shorter than a panel (digits_cnn's 8x8 and 4x4 maps against
the 16-column AVX2 panel) every run is a few floats and its bookkeeping dominates: 11 us for
the 288 x 16 columns of a 32-channel 4x4 map, three times the GEMM on them.
csrc/im2col_gather.c pads the input once and gathers each panel row through a table of
offsets instead (no bounds checks, no runs); the GEMM is the one `conv.emit_as_gemm` runs.
"""
from __future__ import annotations

from graphopt.backend.c.algorithms import register_algorithm
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.ops import winograd  # noqa: F401  (registered first: it takes precedence)
from graphopt.backend.c.ops.conv import ConvShape, emit_as_gemm
from graphopt.backend.c.tiles import gemm_tiles
from graphopt.backend.program import Step

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
    """Small output planes: the padded-gather im2col, then the GEMM on packed weights."""
    shape = ConvShape.of(k.step)
    work = k.scratch(scratch_bytes(shape, gemm_tiles(k.target).nr))
    k.add_helper('#include "graphopt_im2col_gather.h"')
    emit_as_gemm(k, shape, columns=lambda x, cols: (
        f"graphopt_im2col_gather({x}, &shape, {cols}, {work});"))
