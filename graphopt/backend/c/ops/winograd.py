"""Conv by Winograd F(4x4, 3x3) or F(2x2, 3x3): 3x3, stride 1, dilation 1, one group,
constant weights.

A 4x4 output tile costs 36 multiplications per (input, output) channel pair instead of 144
(F(2x2, 3x3): 16 instead of 36): Y = A^T [ sum_c (G w G^T) . (B^T d B) ] A (csrc/winograd.c
has the matrices and the three phases). The weight transform U = G w G^T is done here at
compile time, in float64, and stored as alpha^2 GEMM A operands [M, C] packed in row panels
(`panel_rows`), so at run time only the input and output transforms and the GEMMs run. Bias
and fused ops run as the epilogue on each band of output rows.

Two paths (`lane_path`): AVX-512 builds put 16 tiles in a vector's lanes, transform them with
lane permutes and run their own 16 x 16 tile GEMM (U in 16-row panels); other builds go
through graphopt_sgemm_ex's micro-kernel on B panels (U in its MR-row panels). Each path has
its own thresholds (`GENERIC`, `LANES`), measured on the machines that run them.

Accuracy (max |error| over the output's RMS against onnxruntime, one Conv + bias + residual +
Relu, inputs ~N(0, 1), weights ~N(0, 1/fan_in)): F(4x4) 2.6e-5 (64 channels, 56x56), 2.7e-5
(128, 28x28), 3.3e-5 (256, 14x14); im2col on the same layers 3.8e-6 to 7.2e-6; F(2x2)
3.2e-6 (512, 7x7). F(4x4)'s transforms scale values by up to ~100 (B^T's 4s and 5s, A^T's 8s)
before they cancel, hence ~5x the rounding of a direct sum: within graphopt.numerics' fp32 rule
(1e-4 of max(|ref|, RMS)) with a 3x margin per layer; on the whole resnet18 (10 F(4x4) and
3 F(2x2) layers) the worst element uses under 1% of its allowance, because each layer's
error is a fraction of its own output's scale, not of the next layer's input. The AVX-512
lane path (Conv + bias + Relu, same weights): 2.6e-5 (64, 56x56), 3.2e-5 (128, 28x28),
4.7e-5 (256, 14x14), F(2x2) 3.6e-6 (512, 7x7).

When it pays on the generic path (measured on AVX2, 1 thread, against im2col; the C benchmark
is in benchmarks/RESULTS.md): the transforms cost about as much as a GEMM with a few dozen channels,
so both channel counts must be large enough (32 in, 64 out: 32x32 on 28x28 loses, 48x48 is
even); the GEMMs' N is the tile count, so a plane needs `min_tiles` tiles to fill the
micro-kernel's NR-wide panels (F(4x4) on 7x7 has 4 tiles and loses; F(2x2) has 16 and runs
1.9x faster than im2col there). F(4x4) runs 2.2x faster than im2col on 64x64 at 56x56 and
128x128 at 28x28, and is preferred to F(2x2) wherever it has enough tiles (256 channels on
14x14: 1.1 ms vs 1.8 ms).

On the lane path (Zen 4, 1 thread, Conv + bias + Relu; C timings of the phases): resnet18's
64 ch 56x56 0.70-0.73 ms (input transform 0.08, GEMMs 0.55, output 0.06; was 1.31 through the
14x32 micro-kernel), 128 ch 28x28 0.75, 256 ch 14x14 0.80 (was 2.0: 16 tiles filled half of
each 32-column panel), 512 ch 7x7 F(2x2) 1.45 (was 3.0; im2col 2.9). The GEMMs run at
90-105 GFLOP/s, the transforms are ~15% of a layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphopt.backend.c.algorithms import choice_target, register_algorithm
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.ops.conv import ConvShape, conv_epilogue, emit_per_image
from graphopt.backend.c.tiles import GemmTiles, gemm_tiles
from graphopt.backend.program import Step


@dataclass(frozen=True)
class Thresholds:
    """Where Winograd computes a 3x3 stride-1 convolution faster than the alternatives."""

    min_channels: int  # input channels below which im2col is as fast (the output transform)
    min_out_channels: int  # output channels below which im2col is as fast (the input transform)
    min_tiles: int  # tiles per image below which the GEMMs' columns are mostly padding
    # where the direct small-conv kernel applies (ops/im2col_gather.py), F(4x4) with at least
    # this many tiles, else direct (0: Winograd whenever the above hold)
    small_conv_min_tiles: int = 0


# The generic path (AVX2 and others, through the GEMM micro-kernel): measured on Zen 3, see
# the module docstring.
GENERIC = Thresholds(min_channels=32, min_out_channels=64, min_tiles=16)
# The AVX-512 lane path (Zen 4, 1 thread, Conv + bias + Relu, against the best other
# algorithm): F(4x4) 2x faster than im2col from 8 -> 32 channels and 16 -> 16 on 56x56 and
# 28x28, 2.2x on 32 -> 32 at 28x28; on planes of 16 tiles or fewer the direct kernel is as
# fast or faster where it applies (32 -> 32 on 14x14: 44 us direct, 47 F(2x2), 54 F(4x4);
# 64 -> 64 on 7x7: 43 vs 48 F(2x2)), while F(4x4) on 49 tiles beats it (16 -> 32 on 28x28:
# 70 vs 87 us).
LANES = Thresholds(min_channels=8, min_out_channels=16, min_tiles=16, small_conv_min_tiles=32)

# For the layout cost model (backend/layouts.py KERNEL_GMACS holds Zen 3 AVX2 rates): what the
# kernels on the lane path sustain on one Zen 4 core, in multiply-adds of the direct
# convolution per second (GMAC/s), from the fastest of ~100 calls of resnet18's layers with
# 5-7 other processes on the 2 cores: F(4x4) 144-160 (64 ch 56x56 0.72 ms, 128 ch 28x28
# 0.77, 256 ch 14x14 0.80), F(2x2) 75-79 (512 ch 7x7 1.46-1.55), im2col / im2col_gather on
# the lane GEMM 48 (the 3x3 stride-2 layers, 1.18-1.27 ms).
LANE_PATH_GMACS: dict[str, float] = {"winograd4x4": 150.0, "winograd2x2": 75.0,
                                     "im2col": 48.0, "im2col_gather": 48.0}

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


def thresholds(tiles: GemmTiles) -> Thresholds:
    """The thresholds of the path a build with these GEMM tiles runs."""
    return LANES if lane_path(tiles) else GENERIC


def choose_tile(shape: ConvShape, limits: Thresholds | None = None) -> int | None:
    """The output tile (4: F(4x4, 3x3), 2: F(2x2, 3x3)) that computes this convolution faster
    than the other algorithms, None where neither does (or Winograd does not apply); `limits`
    default to those of the target algorithms are being chosen for."""
    limits = limits or thresholds(gemm_tiles(choice_target()))
    if not (shape.group == 1 and shape.kernel == (3, 3) and shape.strides == (1, 1)
            and shape.dilations == (1, 1) and shape.channels >= limits.min_channels
            and shape.out_channels >= limits.min_out_channels):
        return None
    for tile in (4, 2):
        tiles_h, tiles_w = tile_counts(shape, tile)
        if tiles_h * tiles_w >= limits.min_tiles:
            if limits.small_conv_min_tiles and _direct_fits(shape) and \
                    (tile != 4 or tiles_h * tiles_w < limits.small_conv_min_tiles):
                return None
            return tile
    return None


def _direct_fits(shape: ConvShape) -> bool:
    from graphopt.backend.c.ops.im2col_gather import direct_fits  # it imports this module

    return direct_fits(shape)


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


def lane_path(tiles: GemmTiles) -> bool:
    """Whether csrc/winograd.c runs its AVX-512 lane path (GRAPHOPT_WINOGRAD_LANES in
    graphopt_winograd.h): 16 tiles per vector and its own 16 x 16 tile GEMM, instead of
    graphopt_sgemm_ex's micro-kernel."""
    return tiles.kernel.isa == "avx512"


def panel_rows(tiles: GemmTiles) -> int:
    """Rows per packed panel of the transformed weights: the lane path's 16-row tile, else
    the GEMM micro-kernel's MR."""
    return tiles.kernel.vlen if lane_path(tiles) else tiles.mr


def pack_weights(weights: np.ndarray, tile: int, tiles: GemmTiles) -> np.ndarray:
    """The alpha^2 transformed weight matrices U[xi] [M, C] (xi = a * alpha + b) in panels of
    `panel_rows` rows over all of C (out[p, c, r] = U[xi][p * rows + r, c], zero rows padding
    M), one matrix after the other: the layout graphopt_winograd_conv2d reads."""
    u = transform_weights(weights, tile).astype(np.float32)
    alpha, rows = tile + 2, panel_rows(tiles)
    return np.concatenate([row_panels(u[a, b], rows).reshape(-1)
                           for a in range(alpha) for b in range(alpha)])


def row_panels(matrix: np.ndarray, rows: int) -> np.ndarray:
    """matrix [M, C] -> [ceil(M / rows), C, rows], zero rows padding M (with 16 rows: the A
    operand of the lane path's GEMM, graphopt_lane_sgemm)."""
    m, c = matrix.shape
    padded = np.zeros((-(-m // rows) * rows, c), np.float32)
    padded[:m] = matrix
    return np.ascontiguousarray(padded.reshape(-1, rows, c).transpose(0, 2, 1))


def scratch_floats(shape: ConvShape, tile: int, tiles: GemmTiles) -> int:
    """graphopt_winograd_scratch: the transformed input (alpha^2 matrices [C, tiles rounded
    up]) and the alpha^2 products [M, tiles] (the lane path: tiles rounded up to 16 in both,
    else to the GEMM's NR in the first)."""
    tiles_h, tiles_w = tile_counts(shape, tile)
    count = tiles_h * tiles_w
    width = tiles.kernel.vlen if lane_path(tiles) else tiles.nr
    padded = -(-count // width) * width
    products = padded if lane_path(tiles) else count
    return (tile + 2) ** 2 * (shape.channels * padded + shape.out_channels * products)


def _emit(k: Kernel, tile: int) -> None:
    """Per image: graphopt_winograd_conv2d on weights transformed and packed at compile time."""
    shape = ConvShape.of(k.step)
    tiles = gemm_tiles(k.target)
    epilogue = conv_epilogue(k, shape)
    u = k.packed(k.input(1), f"winograd{tile}", lambda a: pack_weights(a, tile, tiles))
    work = k.scratch(4 * scratch_floats(shape, tile, tiles))
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
    too small to give F(4x4) `min_tiles` tiles."""
    _emit(k, 2)
