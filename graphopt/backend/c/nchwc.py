"""The blocked layout NCHWc of the C backend: its block width per target and tensor shapes.

A blocked tensor keeps channels in blocks of c floats (one SIMD register) innermost: element
(n, ch, h, w) lives at [n, ch // c, h, w, ch % c]. In the Program it is a Tensor whose `layout`
is the layout name and whose shape is that physical 5-D shape. A channel count that is not a
multiple of c is padded up to the next one: the last block's pad lanes hold zeros (ToBlocked
writes them, every blocked kernel keeps them so; graphopt/backend/layouts.py), and the tensor's
logical shape is then the padded one. csrc/graphopt_nchwc.h holds the kernels.
"""
from __future__ import annotations

from graphopt.backend.c.target import Target
from graphopt.layout.kernels import blocked

SCALAR_BLOCK = 4  # the scalar path's block: lanes as plain C loops, as on a 128-bit SIMD unit


def block_width(target: Target, compiler: str | None = None) -> int:
    """Floats per block: the SIMD width of the target's GEMM family (GRAPHOPT_NCHWC)."""
    from graphopt.backend.c.tiles import gemm_tiles

    vlen = gemm_tiles(target, compiler).kernel.vlen
    return vlen if vlen > 1 else SCALAR_BLOCK


def layout_name(target: Target) -> str:
    return blocked(block_width(target))


def padded_channels(channels: int, width: int) -> int:
    """`channels` rounded up to whole blocks of `width`."""
    return -(-channels // width) * width


def blocked_shape(shape: tuple[int, ...], width: int) -> tuple[int, ...]:
    """[N, C, H, W] -> [N, ceil(C/c), H, W, c]."""
    n, c, h, w = shape
    return (n, padded_channels(c, width) // width, h, w, width)


def logical_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """[N, C/c, H, W, c] -> [N, C, H, W], C the padded channel count."""
    n, cb, h, w, width = shape
    return (n, cb * width, h, w)


def is_blocked(layout: str) -> bool:
    return layout.startswith("NCHW") and layout.endswith("c")
