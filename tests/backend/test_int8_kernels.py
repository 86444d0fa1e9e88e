"""csrc/q*.c: every micro-kernel path gives the integers of the numpy reference (rounding.py).

The kernels are compiled alone (ctypes) once per path: scalar, AVX2 (vpmaddubsw for narrow
weights, int16-widened vpmaddwd for full 8-bit ones), AVX-512 VNNI (with and without VBMI) and
NEON. A path this CPU cannot run is compiled only (its run is skipped with the reason); NEON
needs aarch64-linux-gnu-gcc.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

from graphopt.backend.build import CSRC_DIR, CSRC_SOURCES
from graphopt.backend.c.config import HEADER_NAME, config_header
from graphopt.backend.c.target import PORTABLE
from graphopt.backend.c.tiles import cpu_flags
from graphopt.backend.int8 import packing, reference
from graphopt.quantization.rounding import requant_multiplier

# The integer kernels' sources (csrc/q*.c: they need no other csrc file).
Q_SOURCES = [str(CSRC_DIR / n) for n in CSRC_SOURCES if n.startswith("q")]
PATHS = {  # name -> (compiler flags, CPU flags needed to run, expected graphopt_qgemm_isa)
    "scalar": (["-O2"], (), 0),
    "avx2": (["-O3", "-mavx2", "-mfma"], ("avx2",), 1),
    "vnni": (["-O3", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"],
             ("avx512f", "avx512bw", "avx512_vnni"), 2),
    # with VBMI (Zen 4, Ice Lake on): im2col picks panels of narrow output rows with vpermb;
    # -mfma (as -march=native gives): the fused residual add in the vector epilogue
    "vnni+vbmi": (["-O3", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni",
                   "-mavx512vbmi"], ("avx512f", "avx512bw", "avx512_vnni", "avx512vbmi"), 2),
}


class QEpilogue(ctypes.Structure):
    _fields_ = [("bias", ctypes.c_void_p), ("mult", ctypes.c_void_p), ("out_type", ctypes.c_int32),
                ("zero_point", ctypes.c_int32), ("lo", ctypes.c_int32), ("hi", ctypes.c_int32),
                ("narrow", ctypes.c_int32), ("add", ctypes.c_void_p), ("add_rs", ctypes.c_int64),
                ("add_cs", ctypes.c_int64), ("ratio_a", ctypes.c_float),
                ("ratio_b", ctypes.c_float), ("fixed", ctypes.c_float),
                ("add_lo", ctypes.c_int32), ("add_hi", ctypes.c_int32)]


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("qgemm")
    cpu = cpu_flags()
    built: dict[str, object] = {}
    for name, (flags, needs, _) in PATHS.items():
        lib = _build(out, name, flags)
        missing = [f for f in needs if f not in cpu]
        built[name] = f"CPU lacks {', '.join(missing)}" if missing else ctypes.CDLL(str(lib))
    return built


def _includes(directory) -> list[str]:
    """-I flags for compiling the integer kernels alone: csrc and a generated graphopt_config.h (its grain
    rule) written into `directory`."""
    (directory / HEADER_NAME).write_text(config_header(PORTABLE))
    return ["-I", str(CSRC_DIR), "-I", str(directory)]


def _build(out, name: str, flags: list[str]):
    lib = out / f"{name}.so"
    subprocess.run(["gcc", "-std=c99", "-shared", "-fPIC", *flags, *_includes(out),
                    *Q_SOURCES, "-o", str(lib), "-lm"], check=True)
    return lib


def _lib(libraries: dict[str, object], name: str) -> ctypes.CDLL:
    lib = libraries[name]
    if isinstance(lib, str):
        pytest.skip(f"{name} kernels compiled but not run: {lib}")
    return lib


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def _run_qgemm(lib: ctypes.CDLL, w: np.ndarray, x: np.ndarray, bias: np.ndarray,
               mult: np.ndarray, zp: int, lo: int, hi: int, x_zp: int,
               add: tuple | None = None, out_dtype: type = np.uint8) -> np.ndarray:
    m, k = w.shape
    n = x.shape[1]
    ap = packing.pack_a(w)
    panels = np.zeros(lib_bytes(lib, k, n), dtype=np.uint8)
    lib.graphopt_qgemm_pack_b(_ptr(x), ctypes.c_int64(n), ctypes.c_int64(1), ctypes.c_int64(k),
                              ctypes.c_int64(n), 0, _ptr(panels))
    folded = packing.folded_bias(w, bias, x_zp)
    e = QEpilogue(bias=folded.ctypes.data, mult=mult.ctypes.data,
                  out_type=int(out_dtype == np.int8), zero_point=zp, lo=lo, hi=hi,
                  narrow=int(packing.is_narrow(w)))
    if add is not None:
        b, (ra, rb, fixed) = add
        e.add, e.add_rs, e.add_cs = b.ctypes.data, n, 1
        e.ratio_a, e.ratio_b, e.fixed, e.add_lo, e.add_hi = ra, rb, fixed, 0, 255
    y = np.zeros((m, n), dtype=out_dtype)
    lib.graphopt_qgemm(ctypes.c_int64(m), ctypes.c_int64(n), ctypes.c_int64(k), _ptr(ap),
                       _ptr(panels), ctypes.byref(e), _ptr(y), ctypes.c_int64(n),
                       ctypes.c_int64(1))
    return y


def lib_bytes(lib: ctypes.CDLL, k: int, n: int) -> int:
    lib.graphopt_qgemm_packed_b_bytes.restype = ctypes.c_int64
    return int(lib.graphopt_qgemm_packed_b_bytes(ctypes.c_int64(k), ctypes.c_int64(n)))


def _case(seed: int, m: int, n: int, k: int, wmax: int):
    rng = np.random.default_rng(seed)
    w = rng.integers(-wmax, wmax + 1, (m, k)).astype(np.int8)
    x = rng.integers(0, 256, (k, n)).astype(np.uint8)
    x[:, :2] = 255  # the extreme activations that saturate vpmaddubsw with 8-bit weights
    w[0, :] = -wmax
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    x_zp = int(rng.integers(0, 256))
    # multipliers that push some outputs past both ends of the range (saturation)
    spread = float(np.std(w.astype(np.int64) @ (x.astype(np.int64) - x_zp))) + 1.0
    w_scale = rng.uniform(0.5, 2.0, m).astype(np.float32) / np.float32(spread)
    mult = requant_multiplier(np.float32(1.0), w_scale, np.float32(1 / 150))
    return w, x, bias, mult, x_zp


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 17, 7), (16, 33, 64), (37, 70, 129),
                                   (64, 49, 576), (37, 1, 129), (6, 1, 12)])  # N 1: GEMV
@pytest.mark.parametrize("wmax", [64, 127])
def test_qgemm_matches_reference(libraries, path, shape, wmax):
    lib = _lib(libraries, path)
    m, n, k = shape
    w, x, bias, mult, x_zp = _case(sum(shape) + wmax, m, n, k, wmax)
    zp = 100
    expected = reference.qgemm(w, x.astype(np.int64) - x_zp, bias, mult, np.uint8(zp))
    got = _run_qgemm(lib, w, x, bias, mult, zp, 0, 255, x_zp)
    assert lib.graphopt_qgemm_isa() == PATHS[path][2]
    np.testing.assert_array_equal(got, expected)
    assert (expected == 0).any() or (expected == 255).any() or m * n < 10  # saturation covered


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("zp", [-7, 5])
def test_qgemm_s8_output_saturates(libraries, path, zp):
    """s8 outputs past both ends of the range, with a zero point below 0 (the vector epilogue
    clamps the low end in float) and above it (it may leave that to the narrowing)."""
    lib = _lib(libraries, path)
    w, x, bias, mult, x_zp = _case(9, 16, 48, 64, 64)
    expected = reference.qgemm(w, x.astype(np.int64) - x_zp, bias, mult, np.int8(zp))
    got = _run_qgemm(lib, w, x, bias, mult, zp, -128, 127, x_zp, out_dtype=np.int8)
    np.testing.assert_array_equal(got, expected)
    assert (expected == -128).any() and (expected == 127).any()


@pytest.mark.parametrize("path", list(PATHS))
def test_fused_relu_and_residual_add(libraries, path):
    lib = _lib(libraries, path)
    w, x, bias, mult, x_zp = _case(3, 12, 40, 72, 127)
    zp = 90
    rng = np.random.default_rng(4)
    b = rng.integers(0, 256, (12, 40)).astype(np.uint8)
    params = reference.qladd_params(0.03, zp, 0.05, 17, 0.045, 3)
    conv = reference.qgemm(w, x.astype(np.int64) - x_zp, bias, mult, np.uint8(zp), low=zp)
    expected = reference.qladd(conv, b, params, np.uint8)
    got = _run_qgemm(lib, w, x, bias, mult, zp, zp, 255, x_zp, add=(b, params))
    np.testing.assert_array_equal(got, expected)


class QConvShape(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in (
        "channels", "height", "width", "out_height", "out_width", "kernel_h", "kernel_w",
        "stride_h", "stride_w", "pad_top", "pad_left", "dilation_h", "dilation_w")]


# channels, height, width, kernel, stride, pad, dilation: odd sizes (vector tails), stride 2,
# dilation, planes narrower than one vector, a 5x5 window
CONV_CASES = [(5, 9, 13, 3, 1, 1, 1), (3, 12, 11, 3, 2, 1, 1), (4, 10, 10, 3, 1, 2, 2),
              (6, 7, 7, 3, 1, 1, 1), (2, 9, 20, 5, 1, 2, 1), (3, 17, 17, 3, 2, 0, 1)]


def _conv_case(case: tuple, seed: int, flip: int):
    c, h, w, k, stride, pad, dil = case
    oh = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    shape = QConvShape(c, h, w, oh, ow, k, k, stride, stride, pad, pad, dil, dil)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (c, h, w)).astype(np.uint8)
    x_pad = int(rng.integers(0, 256))  # the stored zero point
    stored = x ^ np.uint8(0x80 * flip)
    padded = np.pad(stored, ((0, 0), (pad, pad), (pad, pad)), constant_values=x_pad)
    # cols[c, ky, kx, oy, ox]: the window tap of every output, as the kernels read it
    cols = np.empty((c, k, k, oh, ow), np.int64)
    for ky in range(k):
        for kx in range(k):
            cols[:, ky, kx] = padded[:, ky * dil: ky * dil + (oh - 1) * stride + 1: stride,
                                     kx * dil: kx * dil + (ow - 1) * stride + 1: stride]
    return shape, x, x_pad, cols, rng


def _work(lib: ctypes.CDLL, kernel: str, case: tuple, shape: QConvShape) -> np.ndarray:
    """One slot of work memory for graphopt_q{kernel}, sized by the C function, which must agree
    with packing.py's (the emitters size the arena with it); garbage-filled: the kernel must
    not depend on what it holds."""
    size_of = getattr(lib, f"graphopt_q{kernel}_work")
    size_of.restype = ctypes.c_int64
    size = int(size_of(ctypes.byref(shape)))
    _, _, _, k, stride, _, dil = case
    geometry = ((shape.out_height, shape.out_width), (k, k), (stride, stride), (dil, dil))
    assert size == getattr(packing, f"q{kernel}_work_bytes")(*geometry)
    return np.full(size, 0xCD, np.uint8)


def _qconv_work(lib: ctypes.CDLL, case: tuple, shape: QConvShape, slots: int) -> np.ndarray:
    """graphopt_qconv's work memory, sized by the C function, which must agree with
    packing.py's; garbage-filled (see _work)."""
    lib.graphopt_qconv_work.restype = ctypes.c_int64
    size = int(lib.graphopt_qconv_work(ctypes.byref(shape), slots))
    c, h, w, k, stride, pad, dil = case
    assert size == packing.qconv_work_bytes(c, (h, w), (shape.out_height, shape.out_width),
                                            (k, k), (stride, stride), (pad, pad), (dil, dil),
                                            slots)
    return np.full(size, 0xCD, np.uint8)


def _run_qconv(lib: ctypes.CDLL, case: tuple, m: int, seed: int, flip: int, slots: int = 1,
               work: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """graphopt_qconv's output for random weights, and reference.py's (the numpy im2col
    through reference.qgemm)."""
    shape, x, x_pad, cols, rng = _conv_case(case, seed, flip)
    kdim, n = cols.shape[0] * cols.shape[1] * cols.shape[2], cols.shape[3] * cols.shape[4]
    w = rng.integers(-64, 65, (m, kdim)).astype(np.int8)
    bias = rng.integers(-3000, 3000, m).astype(np.int32)
    acc = w.astype(np.int64) @ (cols.reshape(kdim, n) - x_pad)
    mult = (rng.uniform(0.5, 2.0, m) / (np.std(acc) + 1.0) * 150).astype(np.float32)
    expected = reference.qgemm(w, cols.reshape(kdim, n) - x_pad, bias, mult, np.uint8(7))
    folded = packing.folded_bias(w, bias, x_pad)
    e = QEpilogue(bias=folded.ctypes.data, mult=mult.ctypes.data, out_type=0, zero_point=7,
                  lo=0, hi=255, narrow=1)
    got = np.zeros((m, n), np.uint8)
    work = _qconv_work(lib, case, shape, slots) if work is None else work
    ap = packing.pack_a(w)  # alive during the call (x: s8 bits when flip, as the model's)
    lib.graphopt_qconv(_ptr(x), ctypes.byref(shape), ctypes.c_int64(m), _ptr(ap),
                       ctypes.c_uint8(x_pad), flip, ctypes.byref(e), _ptr(got), _ptr(work), slots)
    return got, expected


# pointwise (1x1 stride 1: B packed from the planes): columns and depth off the tile sizes
POINTWISE_CASES = [(5, 9, 13, 1, 1, 0, 1), (8, 4, 4, 1, 1, 0, 1), (3, 1, 1, 1, 1, 0, 1),
                   (2, 3, 7, 1, 1, 0, 1)]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", CONV_CASES + POINTWISE_CASES + [(4, 16, 16, 1, 2, 0, 1)])
@pytest.mark.parametrize("flip", [0, 1])
def test_qconv_matches_reference(libraries, path, case, flip):
    """graphopt_qconv (im2col or planes, packed block by block, then the GEMM) against the
    numpy im2col through reference.qgemm: u8 and flipped s8 activations, padding, strides,
    dilation, output rows not a multiple of 4, outputs saturating at both ends."""
    got, expected = _run_qconv(_lib(libraries, path), case, 6, 7, flip)
    np.testing.assert_array_equal(got, expected)
    assert ((expected == 0).any() and (expected == 255).any()) or expected.size < 100


# B larger than 4 blocks (GRAPHOPT_QBLOCK_BYTES): packed block by block from shared padded
# planes, which the x86 paths read straight into panels where output rows are a panel wide
# (blending the two pieces of a panel that crosses a row): stride 1 and 2, dilation, the 7x7
# stride-2 stem shape with its last group past K, and narrow rows (gathered)
LARGE_CASES = [(64, 40, 40, 3, 1, 1, 1), (32, 90, 90, 3, 2, 1, 1), (32, 47, 47, 3, 1, 2, 2),
               (3, 120, 121, 7, 2, 3, 1), (96, 60, 15, 3, 1, 1, 1)]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", LARGE_CASES)
def test_qconv_blocks_of_a_large_layer(libraries, path, case):
    """Enough columns and depth for several column blocks, each packed and run on its own;
    13 output rows: a partial register tile of rows on every ISA."""
    got, expected = _run_qconv(_lib(libraries, path), case, 13, 5, 1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("out", ["f32", "s8", "u8+add"])
def test_depthwise_matches_reference(libraries, path, case, out):
    """Exact accumulators (float output, multiplier 1), then requantization with s8 output and
    with a fused residual QLinearAdd, against reference.py."""
    lib = _lib(libraries, path)
    shape, x, x_pad, cols, rng = _conv_case(case, 11, 0)
    c, k = cols.shape[0], cols.shape[1]
    w = rng.integers(-127, 128, (c, k * k)).astype(np.int8)
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    acc = np.einsum("ct,ctn->cn", w.astype(np.int64),
                    cols.reshape(c, k * k, -1) - x_pad) + bias[:, None]
    folded = packing.folded_bias(w, bias, x_pad)
    plane = cols.shape[3] * cols.shape[4]
    e = QEpilogue(bias=folded.ctypes.data, zero_point=5, lo=-128, hi=127)
    if out == "f32":
        mult = np.ones(c, np.float32)
        e.out_type, expected = 2, acc.astype(np.float32)
    else:
        mult = (rng.uniform(0.5, 2.0, c) / (np.std(acc) + 1.0)).astype(np.float32)
        e.out_type = 1 if out == "s8" else 0
        dtype = np.int8 if out == "s8" else np.uint8
        e.lo, e.hi = (-128, 127) if out == "s8" else (0, 255)
        expected = reference.requantize_rows(acc, mult, dtype(5))
    e.mult = mult.ctypes.data
    if out == "u8+add":
        b = rng.integers(0, 256, (c, plane)).astype(np.uint8)
        params = reference.qladd_params(0.03, 5, 0.05, 17, 0.045, 3)
        e.add, e.add_rs, e.add_cs = b.ctypes.data, plane, 1
        e.ratio_a, e.ratio_b, e.fixed = params
        e.add_lo, e.add_hi = 0, 255
        expected = reference.qladd(expected, b, params, np.uint8)
    got = np.zeros((c, plane), expected.dtype)
    work = _work(lib, "depthwise", case, shape)
    lib.graphopt_qdepthwise(_ptr(x), _ptr(w), ctypes.byref(shape), ctypes.c_uint8(x_pad), 0,
                            ctypes.byref(e), _ptr(got), _ptr(work), 1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", CONV_CASES + [(3, 112, 112, 3, 2, 1, 1), (2, 40, 40, 2, 2, 0, 1)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_maxpool_matches_reference(libraries, path, case, dtype):
    """graphopt_qmaxpool against reference.py's window maximum (the border never wins): u8, s8
    (compared as u8 after the sign flip), odd planes, strides, dilation, rows past 16."""
    lib = _lib(libraries, path)
    shape, x, _, _, _ = _conv_case(case, 13, 0)
    _, _, _, k, stride, pad, dil = case
    x = x.view(dtype)
    expected = reference.maxpool2d(x, (k, k), (stride, stride), (pad, pad, pad, pad),
                                   (dil, dil), (shape.out_height, shape.out_width))
    got = np.zeros_like(expected)
    work = _work(lib, "maxpool", case, shape)
    lib.graphopt_qmaxpool(_ptr(x), ctypes.byref(shape), int(dtype == np.int8), _ptr(got),
                          _ptr(work), 1)
    np.testing.assert_array_equal(got, expected)


def test_threads_use_their_own_work_slots(libraries, tmp_path):
    """Built with OpenMP, calls large enough to be shared between threads give the bits of the
    single-threaded build when given 2 slots, and write nothing past those slots."""
    lib = ctypes.CDLL(str(_build(tmp_path, "omp", ["-O2", "-fopenmp"])))
    single = _lib(libraries, "scalar")
    # the grain rule (GRAPHOPT_WORTH_THREADS): the conv does 64 * 576 * 1024 MACs (a third
    # counts, QMACS_PER_MAC), depthwise 256 * 1024 * 9, both past the threshold
    grain = PORTABLE.grain
    assert 64 * 576 * 1024 // 3 >= grain.min_macs and 256 * 1024 * 9 >= grain.min_macs
    for kernel, case in [("conv", (64, 32, 32, 3, 1, 1, 1)),
                         ("depthwise", (256, 32, 32, 3, 1, 1, 1))]:
        shape, x, x_pad, cols, rng = _conv_case(case, 3, 0)
        c, n = case[0], cols.shape[3] * cols.shape[4]
        w = rng.integers(-127, 128, (c, 9)).astype(np.int8)
        mult = np.ones(c, np.float32)
        outs = []
        for library, slots in [(single, 1), (lib, 2)]:
            if kernel == "conv":  # shared padded planes, then a slot per thread
                slot = _qconv_work(library, case, shape, 2).size - \
                    _qconv_work(library, case, shape, 1).size
                work = np.full(_qconv_work(library, case, shape, slots).size + slot, 0xCD,
                               np.uint8)
                guard = work[-slot:].copy()
                out, _ = _run_qconv(library, case, 64, 3, 0, slots, work)
            else:
                work = np.tile(_work(library, kernel, case, shape), slots + 1)
                guard = work[-work.size // (slots + 1):].copy()
                e = QEpilogue(mult=mult.ctypes.data, out_type=2)  # exact accumulators
                out = np.zeros((c, n), np.float32)
                library.graphopt_qdepthwise(_ptr(x), _ptr(w), ctypes.byref(shape),
                                            ctypes.c_uint8(x_pad), 0, ctypes.byref(e), _ptr(out),
                                            _ptr(work), slots)
            np.testing.assert_array_equal(work[-guard.size:], guard)
            threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
            if slots == 2 and threads >= 2:  # the second thread used its own slot
                assert (work[-2 * guard.size:-guard.size] != 0xCD).any()
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("broadcast", [False, True])
def test_qadd_matches_reference(libraries, path, dtype, broadcast):
    lib = _lib(libraries, path)
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, 1000 + 13).astype(dtype)
    b = rng.integers(info.min, info.max + 1, 1 if broadcast else a.size).astype(dtype)
    params = reference.qladd_params(0.03, 7, 0.05, -3, 0.04, 2)
    ra, rb, fixed = (ctypes.c_float(v) for v in params)
    got = np.zeros_like(a)
    lib.graphopt_qadd(_ptr(a), _ptr(b), ctypes.c_int64(0 if broadcast else 1),
                      ctypes.c_int64(a.size), int(dtype == np.int8), ra, rb, fixed,
                      int(info.min), int(info.max), _ptr(got))
    np.testing.assert_array_equal(got, reference.qladd(a, b, params, dtype))


NEON_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "graphopt_qkernels.h"
/* reads m n k zp lo hi, packed A, X [k, n], folded bias [m], mult [m]; writes Y [m, n] */
int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb");
    int64_t d[3]; int32_t q[3];
    if (fread(d, 8, 3, f) != 3 || fread(q, 4, 3, f) != 3) return 1;
    const int64_t m = d[0], n = d[1], k = d[2], ap = ((m + 3) / 4) * 4 * ((k + 3) / 4) * 4;
    int8_t* a = malloc(ap); uint8_t* x = malloc(k * n); int32_t* bias = malloc(4 * m);
    float* mult = malloc(4 * m); uint8_t* y = malloc(m * n);
    uint8_t* panels = malloc(graphopt_qgemm_packed_b_bytes(k, n));
    if (fread(a, 1, ap, f) != (size_t)ap || fread(x, 1, k * n, f) != (size_t)(k * n) ||
        fread(bias, 4, m, f) != (size_t)m || fread(mult, 4, m, f) != (size_t)m) return 2;
    graphopt_qgemm_pack_b(x, n, 1, k, n, 0, panels);
    graphopt_qepilogue e = {bias, mult, GRAPHOPT_Q_U8, q[0], q[1], q[2], 0, NULL, 0, 0,
                            0.0f, 0.0f, 0.0f, 0, 0};
    graphopt_qgemm(m, n, k, a, panels, &e, y, n, 1);
    FILE* o = fopen(argv[2], "wb");
    fwrite(y, 1, m * n, o);
    fclose(o);
    return graphopt_qgemm_isa() == 3 ? 0 : 3;
}
"""


def test_neon_path_under_qemu(tmp_path):
    """The NEON micro-kernel, cross-compiled and run under qemu-aarch64, against the reference."""
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if cross is None or qemu is None:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64 to run the NEON path")
    driver = tmp_path / "driver.c"
    driver.write_text(NEON_DRIVER)
    exe = tmp_path / "qgemm_neon"
    subprocess.run([cross, "-std=c99", "-O2", "-static", *_includes(tmp_path), str(driver),
                    *Q_SOURCES, "-o", str(exe), "-lm"], check=True)
    for seed, (m, n, k) in enumerate([(5, 17, 7), (37, 70, 129), (64, 49, 576)]):
        w, x, bias, mult, x_zp = _case(seed, m, n, k, 127)
        zp, lo = 100, 100  # a fused Relu: clamp at the zero point
        data = np.array([m, n, k], np.int64).tobytes() + np.array([zp, lo, 255], np.int32).tobytes()
        data += packing.pack_a(w).tobytes() + x.tobytes()
        data += packing.folded_bias(w, bias, x_zp).tobytes() + mult.astype(np.float32).tobytes()
        (tmp_path / "in.bin").write_bytes(data)
        subprocess.run([qemu, str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                       check=True)
        got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.uint8).reshape(m, n)
        expected = reference.qgemm(w, x.astype(np.int64) - x_zp, bias, mult, np.uint8(zp), low=lo)
        np.testing.assert_array_equal(got, expected)


def test_simd_paths_compile_for_other_isas(tmp_path):
    """The VNNI path always compiles here; the NEON path with the aarch64 cross compiler."""
    flags = PATHS["vnni"][0]
    vnni = _compile_each(["gcc", "-std=c99", "-Werror", "-Wall", *flags, *_includes(tmp_path)],
                         tmp_path / "vnni")
    if shutil.which("objdump") is not None:  # the VNNI kernel itself, not only the scalar one
        code = subprocess.run(["objdump", "-d", *vnni], check=True, capture_output=True,
                              text=True).stdout
        assert "vpdpbusd" in code
    cross = shutil.which("aarch64-linux-gnu-gcc")
    if cross is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed: NEON path not compiled")
    neon = _compile_each([cross, "-std=c99", "-O3", "-Werror", "-Wall", *_includes(tmp_path)],
                         tmp_path / "neon")
    symbols = subprocess.run(["aarch64-linux-gnu-objdump", "-d", *neon], check=False,
                             capture_output=True, text=True).stdout
    assert "smlal" in symbols or shutil.which("aarch64-linux-gnu-objdump") is None


def _compile_each(command: list[str], out) -> list[str]:
    """Compile every integer kernel source with `command` into objects under `out`."""
    out.mkdir()
    objects = []
    for source in Q_SOURCES:
        objects.append(str(out / (os.path.basename(source)[:-2] + ".o")))
        subprocess.run([*command, "-c", source, "-o", objects[-1]], check=True)
    return objects
