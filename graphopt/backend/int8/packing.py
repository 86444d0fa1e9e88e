"""Compile-time data of the integer kernels (csrc/graphopt_qkernels.h): packed weights, the
folded bias, the requantization multipliers, and the sizes of the packed activations and of
the kernels' work memory (placed in the arena: the kernels never allocate).

With symmetric int8 weights (zero point 0) and an activation zero point x_zp, the accumulator
the kernels need is sum_k W[r,k] * (X[k,c] - x_zp) + bias[r]; the kernels multiply the stored
(u8) X and fold the rest into one int32 per row: bias'[r] = bias[r] - x_zp * sum_k W[r,k].
s8 activations are stored as u8 (x ^ 0x80 = x + 128), so their zero point moves by 128.
"""
from __future__ import annotations

import os

import numpy as np

from graphopt.quantization.rounding import requant_multiplier

# The integer kernels' tile and slack, emitted into graphopt_config.h (c/config.py) for
# csrc/q*.c: one definition for both languages.
# The packed layouts' granule, the same on every ISA (a model's packed weights do not depend on
# the target): each micro-kernel's register tile is a whole number of these panels, read as
# separate streams (csrc/graphopt_qinternal.h QTILE_A x QTILE_B: 2 x 3 panels = 8 x 48 on AVX-512
# VNNI, 1 x 1 = 4 x 16 on AVX2, NEON and scalar).
QMR = 4   # rows of a weight panel (GRAPHOPT_QMR)
QNR = 16  # columns of an activation panel (GRAPHOPT_QNR)
PLANE_SLACK = 96  # bytes after a padded plane or gathered rows (vector over-reads/-writes)
NARROW_LIMIT = 64  # |w| <= 64: vpmaddubsw's int16 pair sums cannot saturate
BLOCK_BYTES = 128 * 1024  # packed B of a block of column panels, an L2 share (QBLOCK_BYTES)
# A block of at least this many column panels holds a multiple of it (csrc QBLOCK_PANELS): the
# register tiles (1 to 3 panels wide, by ISA) divide it, and the size stays ISA-independent.
BLOCK_PANELS = 6

Pair = tuple[int, int]


def packed_a_bytes(rows: int, depth: int) -> int:
    """Size of int8 [rows, depth] weights packed by pack_a (one byte per weight)."""
    return -(-rows // QMR) * QMR * -(-depth // 4) * 4


def packed_b_bytes(depth: int, columns: int) -> int:
    """Size of u8 [depth, columns] activations packed into B panels (graphopt_qgemm_pack_b);
    csrc's graphopt_qgemm_packed_b_bytes computes the same."""
    return -(-columns // QNR) * QNR * -(-depth // 4) * 4


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _padded_plane(out_hw: Pair, kernel: Pair, strides: Pair, dilations: Pair) -> int:
    """Bytes of the zero-point padded plane holding every tap of every output (ph x pw)."""
    ph, pw = ((o - 1) * s + (k - 1) * d + 1
              for o, k, s, d in zip(out_hw, kernel, strides, dilations))
    return ph * pw


def qconv_work_bytes(channels: int, in_hw: Pair, out_hw: Pair, kernel: Pair, strides: Pair,
                     pads: Pair, dilations: Pair, slots: int) -> int:
    """Work memory of graphopt_qconv with `slots` slots (graphopt_qconv_work). B small (up to 4
    blocks): the whole packed B, then per slot the gathered rows and two padded planes (the
    taps of a group of 4 lie in at most two channels). Else:
    the padded planes of every channel, then per slot a block of B panels and its gathered
    rows. A 1x1 stride-1 window without padding has no padded plane."""
    k4 = -(-channels * kernel[0] * kernel[1] // 4)
    panels = -(-out_hw[0] * out_hw[1] // QNR)
    whole = panels * k4 * QNR * 4 <= 4 * BLOCK_BYTES  # B packed once, shared by the threads
    per = (panels * k4 * QNR * 4 if whole else BLOCK_BYTES) // (k4 * QNR * 4)
    if not whole and per >= BLOCK_PANELS:
        per = per // BLOCK_PANELS * BLOCK_PANELS
    per = min(max(per, 1), panels)
    flat = (tuple(kernel) == (1, 1) and tuple(strides) == (1, 1) and tuple(pads) == (0, 0)
            and tuple(out_hw) == tuple(in_hw))
    block = _round_up(per * k4 * QNR * 4, 64)
    plane = _padded_plane(out_hw, kernel, strides, dilations)
    shared = 0 if flat or whole else _round_up(channels * plane + PLANE_SLACK, 64)
    shared += block if whole else 0
    own = 0 if flat or not whole else 2 * _round_up(plane + PLANE_SLACK, 64)
    slot = (0 if whole else block) + _round_up(4 * per * QNR + PLANE_SLACK, 64) + own
    return shared + max(slots, 1) * slot


# The implicit GEMM (graphopt_qconv_implicit) where its dropped columns (the padded width's
# kernel_w - 1 a row) cost less than the im2col it saves: stride 1, no dilation, output rows of at
# least this many pixels. Measured on Zen 4 (resnet18's 3x3 layers, against im2col, 1 / 2
# threads): 56x56 0.89-0.92 / 0.82-0.86, 28x28 0.94-0.95 / 0.91-0.92, 14x14 0.97-0.98 /
# 0.86-0.91; 7x7 (2 dropped columns of 9) 1.13-1.2.
IMPLICIT_MIN_WIDTH = 14


def implicit_applies(kernel: Pair, strides: Pair, dilations: Pair, out_hw: Pair) -> bool:
    """Whether a (grouped or not) conv runs as graphopt_qconv_implicit: a window of more than one
    tap, stride 1, no dilation, output rows at least IMPLICIT_MIN_WIDTH wide."""
    return (kernel[0] * kernel[1] > 1 and tuple(strides) == (1, 1)
            and tuple(dilations) == (1, 1) and out_hw[1] >= IMPLICIT_MIN_WIDTH)


def pack_implicit_a(weights: np.ndarray, channels: int) -> np.ndarray:
    """int8 [M, channels * taps] (channel-major, the Conv's order) -> pack_a of the implicit
    GEMM's K order: tap-outer, channels inner, rounded up to groups of 4 with zero weights."""
    w = np.asarray(weights, dtype=np.int8)
    m = w.shape[0]
    taps = w.shape[1] // channels
    c4 = -(-channels // 4) * 4
    ordered = np.zeros((m, taps, c4), dtype=np.int8)
    ordered[:, :, :channels] = w.reshape(m, channels, taps).transpose(0, 2, 1)
    return pack_a(ordered.reshape(m, taps * c4))


def qconv_implicit_work_bytes(channels: int, out_hw: Pair, kernel: Pair, slots: int) -> int:
    """Work memory of graphopt_qconv_implicit (graphopt_qconv_implicit_work): the interleaved
    padded planes (4 channels a pixel) and their slack, the offset table, then per slot a block
    of B panels (packed there on ISAs without the direct kernel)."""
    c4 = -(-channels // 4)
    k4 = kernel[0] * kernel[1] * c4
    ph, pw = (o + k - 1 for o, k in zip(out_hw, kernel))
    nv = (out_hw[0] - 1) * pw + out_hw[1]
    per = BLOCK_BYTES // (k4 * QNR * 4)
    if per >= BLOCK_PANELS:
        per = per // BLOCK_PANELS * BLOCK_PANELS
    per = min(max(per, 1), -(-nv // QNR))
    planes = _round_up(c4 * ph * pw * 4 + PLANE_SLACK, 64)
    table = _round_up(k4 * 8, 64)
    return planes + table + max(slots, 1) * _round_up(per * k4 * QNR * 4, 64)


def qdepthwise_work_bytes(out_hw: Pair, kernel: Pair, strides: Pair, dilations: Pair) -> int:
    """One thread's work memory of graphopt_qdepthwise (graphopt_qdepthwise_work): tap offsets
    (int64), int32 accumulators of a plane (+16 for the vector stores), the flat row of a
    stride-1 plane, the int16 weight pairs, then the padded plane with its slack."""
    taps, plane = kernel[0] * kernel[1], out_hw[0] * out_hw[1]
    flat = tuple(strides) == (1, 1)
    pw = (out_hw[1] - 1) * strides[1] + (kernel[1] - 1) * dilations[1] + 1
    run = (out_hw[0] - 1) * pw + out_hw[1] if flat else 0
    size = 8 * taps + _round_up(4 * (plane + 16), 8)
    size += _round_up(4 * (run + 16), 8) if flat else 0
    size += _round_up(4 * (taps // 2 + 1), 8)
    return _round_up(size + _padded_plane(out_hw, kernel, strides, dilations) + PLANE_SLACK, 64)


def qmaxpool_work_bytes(out_hw: Pair, kernel: Pair, strides: Pair, dilations: Pair) -> int:
    """One thread's work memory of graphopt_qmaxpool (graphopt_qmaxpool_work): the padded plane
    with its slack."""
    return _round_up(_padded_plane(out_hw, kernel, strides, dilations) + PLANE_SLACK, 64)


def work_slots(openmp: bool) -> int:
    """Work slots a kernel call gets: one per thread it may run on. Without OpenMP (bundles,
    the portable target) one; with it, one per core of this machine, the most threads a call
    then uses (a run asking for more still uses that many)."""
    return max(1, os.cpu_count() or 1) if openmp else 1


def pack_a(weights: np.ndarray) -> np.ndarray:
    """int8 [M, K] -> the Ap layout: QMR-row panels over K rounded up to 4, zero padded."""
    w = np.asarray(weights, dtype=np.int8)
    m, k = w.shape
    mp, k4 = -(-m // QMR), -(-k // 4)
    padded = np.zeros((mp * QMR, k4 * 4), dtype=np.int8)
    padded[:m, :k] = w
    # [p, r, g, t] -> [p, g, r, t]
    return np.ascontiguousarray(padded.reshape(mp, QMR, k4, 4).transpose(0, 2, 1, 3)).reshape(-1)


def stored_zero_point(zero_point: np.ndarray) -> int:
    """The activation zero point as the kernels see it (s8 data is stored as u8 = x + 128)."""
    zp = np.asarray(zero_point)
    return int(zp.reshape(-1)[0]) + (128 if zp.dtype == np.int8 else 0)


def folded_bias(weights: np.ndarray, bias: np.ndarray | None, x_zero_point: int) -> np.ndarray:
    """bias[r] - x_zp * sum_k W[r, k] as int32 (bias None: 0)."""
    w = np.asarray(weights, dtype=np.int64)
    total = -x_zero_point * w.reshape(w.shape[0], -1).sum(axis=1)
    if bias is not None:
        total = total + np.asarray(bias, dtype=np.int64).reshape(-1)
    if np.abs(total).max(initial=0) >= 2 ** 31:
        raise OverflowError("folded bias does not fit int32")
    return total.astype(np.int32)


def multipliers(x_scale: np.ndarray, w_scale: np.ndarray, y_scale: np.ndarray | None,
                rows: int) -> np.ndarray:
    """Per-row float32 multipliers: x_scale * w_scale / y_scale (rounding.requant_multiplier),
    or x_scale * w_scale for a float output (y_scale None)."""
    xs = np.float32(np.asarray(x_scale).reshape(-1)[0])
    ws = np.asarray(w_scale, dtype=np.float32).reshape(-1)
    if y_scale is None:
        m = (xs * ws).astype(np.float32)
    else:
        m = requant_multiplier(xs, ws, np.float32(np.asarray(y_scale).reshape(-1)[0]))
    return np.ascontiguousarray(np.broadcast_to(m, (rows,)), dtype=np.float32)


def is_narrow(weights: np.ndarray) -> bool:
    """Whether every weight is in [-64, 64] (vpmaddubsw exact)."""
    return bool(np.abs(np.asarray(weights, dtype=np.int32)).max(initial=0) <= NARROW_LIMIT)
