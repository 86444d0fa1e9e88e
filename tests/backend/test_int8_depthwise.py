"""csrc/qdepthwise.c: every path of the int8 depthwise convolution gives the integers of the
numpy reference (reference.requantize_rows, i.e. rounding.py), bit for bit.

The kernel is compiled alone (ctypes, with the two files it calls: qplane.c, qepilogue.c) once
per path: portable C, AVX2, and AVX-512 (F/BW/VL + VNNI: the 3x3 "quad" path for stride 1 and
2, from a padded copy or, at stride 2 on wide planes, from the input rows directly), with and
without VBMI (small planes padded by byte permutes) and VBMI2 (narrow planes stored a group at a
time, compressed). A path this CPU cannot run is compiled
only; its run is skipped with the missing flags. The cases aim at the quad path's edges: runs
shorter than one group of 64 and ending mid-group, rows wider than 64, stride 2 with odd and
even planes, asymmetric and no padding, s8 inputs (stored flipped), s8 outputs with a negative
zero point, a Relu6 clamp, outputs saturating at both ends and multipliers large enough that
the float product passes int32 (the guard).
"""
from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np
import pytest

from test_int8_kernels import QConvShape, QEpilogue, _includes, _lib, _ptr

from graphopt.backend.build import CSRC_DIR
from graphopt.backend.c.tiles import cpu_flags
from graphopt.backend.int8 import packing, reference

SOURCES = [str(CSRC_DIR / n) for n in ("qdepthwise.c", "qplane.c", "qepilogue.c")]
AVX512 = ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"]
PATHS = {  # name -> (compiler flags, CPU flags needed to run)
    "scalar": (["-O2"], ()),
    "avx2": (["-O3", "-mavx2", "-mfma"], ("avx2", "fma")),
    "avx512": (["-O3", *AVX512], ("avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                                  "avx512_vnni")),
    # + VBMI: small planes padded by vpermi2b from a per-call table instead of row copies
    "avx512vbmi": (["-O3", *AVX512, "-mavx512vbmi"], ("avx2", "fma", "avx512f", "avx512bw",
                                                      "avx512vl", "avx512_vnni", "avx512vbmi")),
    # + VBMI2: the groups of narrow planes stored compressed (vpcompressb), one store a group
    "avx512vbmi2": (["-O3", *AVX512, "-mavx512vbmi", "-mavx512vbmi2"],
                    ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512vbmi", "avx512_vbmi2")),
}


def build(out, name: str, flags: list[str], sources: list[str] = SOURCES):
    """Compile `sources` (with the portable graphopt_config.h) into out/name.so, warnings as
    errors."""
    lib = out / f"{name}.so"
    subprocess.run(["gcc", "-std=c99", "-shared", "-fPIC", "-Werror", "-Wall", *flags,
                    *_includes(out), *sources, "-o", str(lib), "-lm"], check=True)
    return lib


def _loadable(lib, needs: tuple[str, ...], cpu: frozenset[str]) -> object:
    """The loaded library, or (for runnable() to skip with) the CPU flags it lacks."""
    missing = ", ".join(f for f in needs if f not in cpu)
    return f"CPU lacks {missing}" if missing else ctypes.CDLL(str(lib))


def build_paths(out, sources: list[str]) -> dict[str, object]:
    """Every path of PATHS built from `sources`."""
    cpu = cpu_flags()
    return {name: _loadable(build(out, name, flags, sources), needs, cpu)
            for name, (flags, needs) in PATHS.items()}


runnable = _lib  # the library of a path, or skip: compiled, but this CPU cannot run it


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return build_paths(tmp_path_factory.mktemp("qdepthwise"), SOURCES)


# channels, (h, w), stride, pads (top, left, bottom, right)
CASES = [
    (3, (9, 13), 1, (1, 1, 1, 1)),      # run 141: groups of 64 ending mid-row, last one clamped
    (4, (7, 7), 1, (1, 1, 1, 1)),       # run 61 < 64: one group
    (2, (5, 70), 1, (1, 1, 1, 1)),      # rows wider than one group
    (2, (1, 1), 1, (1, 1, 1, 1)),       # every tap but the centre is border
    (3, (12, 11), 2, (1, 1, 1, 1)),     # stride 2, odd output width
    (3, (14, 14), 2, (0, 0, 1, 1)),     # stride 2, TF "same" (pad bottom/right only)
    (2, (9, 140), 2, (1, 1, 1, 1)),     # stride 2 rows of 70 outputs: several groups
    (2, (17, 17), 2, (0, 0, 0, 0)),     # no padding, odd plane
    (3, (6, 8), 1, (0, 0, 0, 0)),       # no padding at stride 1 (ow != w)
    (2, (3, 3), 2, (1, 1, 1, 1)),       # 2x2 outputs
    (2, (17, 81), 2, (0, 0, 0, 0)),     # stride 2 wide (input read directly), no padding
    (2, (6, 100), 2, (0, 0, 1, 1)),     # ... and padding on the right/bottom only
    (2, (8, 40), 2, (1, 1, 1, 1)),      # VBMI: a 64-byte chunk spans too much input: row copies
]

# out: (dtype, zero point, lo, hi, multiplier scale); "guard": multipliers >= 1/2
OUTPUTS = {
    "u8": (np.uint8, 7, 0, 255, 1.0),
    "u8-relu6": (np.uint8, 90, 90, 200, 1.0),
    "s8": (np.int8, -9, -128, 127, 1.0),
    "u8-guard": (np.uint8, 3, 0, 255, 2.0e6),
}


def _depthwise(lib: ctypes.CDLL, case: tuple, out: str, flip: int, seed: int,
               slots: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """graphopt_qdepthwise's output for random data, the reference's, and the work memory
    (garbage-filled before the call)."""
    c, (h, w), stride, (pt, pl, pb, pr) = case
    oh, ow = (h + pt + pb - 3) // stride + 1, (w + pl + pr - 3) // stride + 1
    shape = QConvShape(c, h, w, oh, ow, 3, 3, stride, stride, pt, pl, 1, 1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (c, h, w)).astype(np.uint8)
    x[:, 0, :] = 255  # extreme activations
    x_pad = int(rng.integers(0, 256))  # the stored zero point
    ph, pw = (oh - 1) * stride + 3, (ow - 1) * stride + 3
    padded = np.full((c, ph, pw), x_pad, np.int64)
    stored = (x ^ np.uint8(0x80 * flip)).astype(np.int64)
    padded[:, pt:pt + h, pl:pl + w] = stored[:, :ph - pt, :pw - pl]
    cols = np.stack([padded[:, ky:ky + (oh - 1) * stride + 1:stride,
                            kx:kx + (ow - 1) * stride + 1:stride]
                     for ky in range(3) for kx in range(3)], axis=1)  # [c, 9, oh, ow]
    w8 = rng.integers(-127, 128, (c, 9)).astype(np.int8)
    w8[0] = 127  # an all-extreme filter
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    acc = np.einsum("ct,ctn->cn", w8.astype(np.int64),
                    cols.reshape(c, 9, -1) - x_pad) + bias[:, None]
    dtype, zp, lo, hi, scale = OUTPUTS[out]
    mult = (rng.uniform(0.5, 2.0, c) * scale / (np.std(acc) + 1.0) * 60).astype(np.float32)
    expected = reference.requantize_rows(acc, mult, dtype(zp), lo, hi)
    folded = packing.folded_bias(w8, bias, x_pad)
    e = QEpilogue(bias=folded.ctypes.data, mult=mult.ctypes.data,
                  out_type=int(dtype == np.int8), zero_point=zp, lo=lo, hi=hi)
    lib.graphopt_qdepthwise_work.restype = ctypes.c_int64
    size = int(lib.graphopt_qdepthwise_work(ctypes.byref(shape)))
    assert size == packing.qdepthwise_work_bytes((oh, ow), (3, 3), (stride, stride), (1, 1))
    work = np.full(size * (slots + 1), 0xCD, np.uint8)  # garbage; one slot more as a guard
    guard = work[size * slots:].copy()
    out_bytes = np.zeros(c * oh * ow + 128, dtype)  # 128 guard bytes after the output
    lib.graphopt_qdepthwise(_ptr(x), _ptr(w8), ctypes.byref(shape), ctypes.c_uint8(x_pad), flip,
                            ctypes.byref(e), _ptr(out_bytes), _ptr(work), slots)
    np.testing.assert_array_equal(work[size * slots:], guard)  # nothing past the slots
    assert not out_bytes[c * oh * ow:].any()  # nor past the output
    return out_bytes[:c * oh * ow].reshape(c, oh * ow), expected, work


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("out", list(OUTPUTS))
def test_depthwise_3x3_matches_reference(libraries, path, case, out):
    got, expected, _ = _depthwise(runnable(libraries, path), case, out, 0,
                                  sum(case[1]) + case[2])
    np.testing.assert_array_equal(got, expected)
    if out == "u8-guard" and expected.size >= 20:  # products past int32, saturated correctly
        assert (expected == 255).any() and (expected == 0).any()


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[6]])
def test_depthwise_s8_inputs(libraries, path, case):
    """s8 activations are stored flipped (x ^ 0x80) while the plane is padded."""
    got, expected, _ = _depthwise(runnable(libraries, path), case, "s8", 1, 5)
    np.testing.assert_array_equal(got, expected)


def test_depthwise_quad_path_threads(libraries, tmp_path):
    """The AVX-512 build with OpenMP and 2 slots: the single-threaded integers, each thread in
    its own slot (enough channels and plane for the grain rule to share the call)."""
    runnable(libraries, "avx512vbmi2")
    lib = ctypes.CDLL(str(build(tmp_path, "omp", ["-O2", "-fopenmp", *PATHS["avx512vbmi2"][0]])))
    case = (256, (28, 28), 1, (1, 1, 1, 1))  # ~50 us on one Zen 4 core: past the grain
    got, expected, work = _depthwise(lib, case, "u8-relu6", 0, 9, slots=2)
    np.testing.assert_array_equal(got, expected)
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    if threads < 2:
        pytest.skip("one thread: the call ran serially")
    slot = work.size // 3
    assert (work[slot:2 * slot] != 0xCD).any()  # the second thread used its own slot
