"""csrc/qgemm.c: every micro-kernel path gives the integers of the numpy reference (rounding.py).

The kernels are compiled alone (ctypes) once per path: scalar, AVX2 (vpmaddubsw for narrow
weights, int16-widened vpmaddwd for full 8-bit ones), AVX-512 VNNI and NEON. A path this CPU
cannot run is compiled only (its run is skipped with the reason); NEON needs
aarch64-linux-gnu-gcc.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from graphopt.backend.build import CSRC_DIR
from graphopt.backend.c.tiles import cpu_flags
from graphopt.backend.int8 import packing, reference
from graphopt.quantization.rounding import requant_multiplier

PATHS = {  # name -> (compiler flags, CPU flags needed to run, expected graphopt_qgemm_isa)
    "scalar": (["-O2"], (), 0),
    "avx2": (["-O3", "-mavx2", "-mfma"], ("avx2",), 1),
    "vnni": (["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"],
             ("avx512f", "avx512bw", "avx512_vnni"), 2),
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
        lib = out / f"{name}.so"
        subprocess.run(["gcc", "-std=c99", "-shared", "-fPIC", *flags, "-I", str(CSRC_DIR),
                        str(CSRC_DIR / "qgemm.c"), "-o", str(lib), "-lm"], check=True)
        missing = [f for f in needs if f not in cpu]
        built[name] = f"CPU lacks {', '.join(missing)}" if missing else ctypes.CDLL(str(lib))
    return built


def _lib(libraries: dict[str, object], name: str) -> ctypes.CDLL:
    lib = libraries[name]
    if isinstance(lib, str):
        pytest.skip(f"{name} kernels compiled but not run: {lib}")
    return lib


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def _run_qgemm(lib: ctypes.CDLL, w: np.ndarray, x: np.ndarray, bias: np.ndarray,
               mult: np.ndarray, zp: int, lo: int, hi: int, x_zp: int,
               add: tuple | None = None) -> np.ndarray:
    m, k = w.shape
    n = x.shape[1]
    ap = packing.pack_a(w)
    panels = np.zeros(lib_bytes(lib, k, n), dtype=np.uint8)
    lib.graphopt_qgemm_pack_b(_ptr(x), ctypes.c_int64(n), ctypes.c_int64(1), ctypes.c_int64(k),
                              ctypes.c_int64(n), 0, _ptr(panels))
    folded = packing.folded_bias(w, bias, x_zp)
    e = QEpilogue(bias=folded.ctypes.data, mult=mult.ctypes.data, out_type=0, zero_point=zp,
                  lo=lo, hi=hi, narrow=int(packing.is_narrow(w)))
    if add is not None:
        b, (ra, rb, fixed) = add
        e.add, e.add_rs, e.add_cs = b.ctypes.data, n, 1
        e.ratio_a, e.ratio_b, e.fixed, e.add_lo, e.add_hi = ra, rb, fixed, 0, 255
    y = np.zeros((m, n), dtype=np.uint8)
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
                                   (64, 49, 576)])
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
    subprocess.run([cross, "-std=c99", "-O2", "-static", "-I", str(CSRC_DIR), str(driver),
                    str(CSRC_DIR / "qgemm.c"), "-o", str(exe), "-lm"], check=True)
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
    subprocess.run(["gcc", "-std=c99", "-Werror", "-Wall", *flags, "-I", str(CSRC_DIR), "-c",
                    str(CSRC_DIR / "qgemm.c"), "-o", str(tmp_path / "vnni.o")], check=True)
    if shutil.which("objdump") is not None:  # the VNNI kernel itself, not only the scalar one
        code = subprocess.run(["objdump", "-d", str(tmp_path / "vnni.o")], check=True,
                              capture_output=True, text=True).stdout
        assert "vpdpbusd" in code
    cross = shutil.which("aarch64-linux-gnu-gcc")
    if cross is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed: NEON path not compiled")
    subprocess.run([cross, "-std=c99", "-O3", "-Werror", "-Wall", "-I", str(CSRC_DIR), "-c",
                    str(CSRC_DIR / "qgemm.c"), "-o", str(tmp_path / "neon.o")], check=True)
    symbols = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "neon.o")],
                             check=False, capture_output=True, text=True).stdout
    assert "smlal" in symbols or shutil.which("aarch64-linux-gnu-objdump") is None
