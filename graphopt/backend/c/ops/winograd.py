"""Conv by Winograd F(4x4, 3x3) or F(2x2, 3x3): 3x3, stride 1, dilation 1, one group,
constant weights.

A 4x4 output tile costs 36 multiplications per (input, output) channel pair instead of 144
(F(2x2, 3x3): 16 instead of 36): Y = A^T [ sum_c (G w G^T) . (B^T d B) ] A (csrc/winograd.c
has the matrices and the three phases). The weight transform U = G w G^T is done here at
compile time, in float64, and stored as alpha^2 GEMM A operands [M, C] packed into the
micro-kernel's MR-row panels (`GemmTiles.pack_a`), so at run time only the input and output
transforms and the GEMMs (graphopt_sgemm_ex on packed operands) run. Bias and fused ops run
as the epilogue on each band of output rows.

Accuracy (max |error| over the output's RMS against onnxruntime, one Conv + bias + residual +
Relu, inputs ~N(0, 1), weights ~N(0, 1/fan_in)): F(4x4) 2.6e-5 (64 channels, 56x56), 2.7e-5
(128, 28x28), 3.3e-5 (256, 14x14); im2col on the same layers 3.8e-6 to 7.2e-6; F(2x2)
3.2e-6 (512, 7x7). F(4x4)'s transforms scale values by up to ~100 (B^T's 4s and 5s, A^T's 8s)
before they cancel, hence ~5x the rounding of a direct sum: within graphopt.numerics' fp32 rule
(1e-4 of max(|ref|, RMS)) with a 3x margin per layer; on the whole resnet18 (10 F(4x4) and
3 F(2x2) layers) the worst element uses under 1% of its allowance, because each layer's
error is a fraction of its own output's scale, not of the next layer's input.

When it pays (measured on AVX2, 1 thread, against im2col; the C benchmark is in
benchmarks/RESULTS.md): the transforms cost about as much as a GEMM with a few dozen channels,
so both channel counts must be large enough (32 in, 64 out: 32x32 on 28x28 loses, 48x48 is
even); the GEMMs' N is the tile count, so a plane needs MIN_TILES tiles to fill the
micro-kernel's NR-wide panels (F(4x4) on 7x7 has 4 tiles and loses; F(2x2) has 16 and runs
1.9x faster than im2col there). F(4x4) runs 2.2x faster than im2col on 64x64 at 56x56 and
128x128 at 28x28, and is preferred to F(2x2) wherever it has enough tiles (256 channels on
14x14: 1.1 ms vs 1.8 ms).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphopt.backend.c.algorithms import register_algorithm
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.ops.conv import ConvShape, conv_epilogue, emit_per_image
from graphopt.backend.c.tiles import GemmTiles, gemm_tiles
from graphopt.backend.program import Step

MIN_CHANNELS = 32  # input channels below which im2col is as fast (the output transform)
MIN_OUT_CHANNELS = 64  # output channels below which im2col is as fast (the input transform)
MIN_TILES = 16  # tiles per image below which the GEMMs' panels are mostly padding

# The weight transforms G of F(4x4, 3x3) (Lavin & Gray, points 0, +-1, +-2, infinity) and
# F(2x2, 3x3) (points 0, +-1, infinity), by output tile size.
WEIGHT_TRANSFORMS: dict[int, np.ndarray] = {
    4: np.array([[1 / 4, 0, 0],
                 [-1 / 6, -1 / 6, -1 / 6],
                 [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6],
                 [1 / 24, -1 / 12, 1 / 6],
                 [0, 0, 1]], dtype=np.float64),
    2: np.array([[1, 0, 0],
                 [1 / 2, 1 / 2, 1 / 2],
                 [1 / 2, -1 / 2, 1 / 2],
                 [0, 0, 1]], dtype=np.float64),
}


def tile_counts(shape: ConvShape, tile: int) -> tuple[int, int]:
    """Tiles per image along (height, width): ceil(output / tile)."""
    return -(-shape.out_hw[0] // tile), -(-shape.out_hw[1] // tile)


def choose_tile(shape: ConvShape) -> int | None:
    """The output tile (4: F(4x4, 3x3), 2: F(2x2, 3x3)) that computes this convolution faster
    than im2col, None where neither does (or Winograd does not apply)."""
    if not (shape.group == 1 and shape.kernel == (3, 3) and shape.strides == (1, 1)
            and shape.dilations == (1, 1) and shape.channels >= MIN_CHANNELS
            and shape.out_channels >= MIN_OUT_CHANNELS):
        return None
    for tile in (4, 2):
        tiles_h, tiles_w = tile_counts(shape, tile)
        if tiles_h * tiles_w >= MIN_TILES:
            return tile
    return None


def _applies(tile: int) -> Callable[[Step], bool]:
    def applies(step: Step) -> bool:
        shape = ConvShape.of(step)
        return shape is not None and step.inputs[1].const is not None and \
            choose_tile(shape) == tile
    return applies


def transform_weights(weights: np.ndarray, tile: int) -> np.ndarray:
    """w [M, C, 3, 3] -> U [alpha, alpha, M, C] with U[a, b] = (G w G^T)[a, b], in float64."""
    g = WEIGHT_TRANSFORMS[tile]
    return np.einsum("ai,mcij,bj->abmc", g, weights.astype(np.float64), g)


def pack_weights(weights: np.ndarray, tile: int, tiles: GemmTiles) -> np.ndarray:
    """The alpha^2 transformed weight matrices U[xi] [M, C] (xi = a * alpha + b) as GEMM A
    panels, one after the other: the layout graphopt_winograd_conv2d reads."""
    u = transform_weights(weights, tile).astype(np.float32)
    alpha = tile + 2
    return np.concatenate([tiles.pack_a(u[a, b]).reshape(-1)
                           for a in range(alpha) for b in range(alpha)])


def scratch_floats(shape: ConvShape, tile: int, nr: int) -> int:
    """graphopt_winograd_scratch: the transformed input (alpha^2 B-panel matrices [C, tiles
    rounded up to NR]) and the alpha^2 products [M, tiles]."""
    tiles_h, tiles_w = tile_counts(shape, tile)
    tiles = tiles_h * tiles_w
    padded = -(-tiles // nr) * nr
    return (tile + 2) ** 2 * (shape.channels * padded + shape.out_channels * tiles)


def _emit(k: Kernel, tile: int) -> None:
    """Per image: graphopt_winograd_conv2d on weights transformed and packed at compile time."""
    shape = ConvShape.of(k.step)
    tiles = gemm_tiles(k.target)
    epilogue = conv_epilogue(k, shape)
    u = k.packed(k.input(1), f"winograd{tile}", lambda a: pack_weights(a, tile, tiles))
    work = k.scratch(4 * scratch_floats(shape, tile, tiles.nr))
    k.add_helper('#include "graphopt_winograd.h"')
    k.em.line(f"const graphopt_conv2d_shape shape = {shape.c_struct()};")
    emit_per_image(k, shape, epilogue, lambda x, y: (
        f"graphopt_winograd_conv2d({x}, {u}, {y}, &shape, {shape.out_channels}, {tile}, "
        f"(float*){work}, {epilogue});"))


@register_algorithm("Conv", "winograd4x4", applies=_applies(4), before="im2col")
def emit_winograd_4x4(k: Kernel) -> None:
    """F(4x4, 3x3): 36 GEMMs, 2.25 multiplications per output and input channel."""
    _emit(k, 4)


@register_algorithm("Conv", "winograd2x2", applies=_applies(2), before="im2col")
def emit_winograd_2x2(k: Kernel) -> None:
    """F(2x2, 3x3): 16 GEMMs, 4 multiplications per output and input channel; for planes
    too small to give F(4x4) MIN_TILES tiles."""
    _emit(k, 2)
