"""csrc/qeltwise.c: QLinearAdd on every vector path (AVX-512 with FMA: 16 elements a step; AVX2;
portable C) gives reference.qladd's integers bit for bit (onnxruntime's x86-64 rounding: two
single-rounding fused multiply-adds), u8 and s8, with a broadcast operand and lengths that
leave tails for each vector width. Paths the CPU cannot run are compiled only and skipped."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
from test_int8_depthwise import build_paths, runnable

from graphopt.backend.build import CSRC_DIR
from graphopt.backend.int8 import reference

SOURCES = [str(CSRC_DIR / n) for n in ("qeltwise.c", "qepilogue.c")]


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return build_paths(tmp_path_factory.mktemp("qeltwise"), SOURCES)


@pytest.mark.parametrize("path", ["scalar", "avx2", "avx512"])  # VBMI: no other code
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("n", [7, 16 * 5 + 9, 4096 + 13])
def test_qadd_matches_reference(libraries, path, dtype, broadcast, n):
    lib = runnable(libraries, path)
    rng = np.random.default_rng(n)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, n).astype(dtype)
    a[:3] = (info.min, info.max, 0)
    b = rng.integers(info.min, info.max + 1, 1 if broadcast else n).astype(dtype)
    params = reference.qladd_params(0.03, 7, 0.05, -3, 0.04, 2)
    ra, rb, fixed = (ctypes.c_float(v) for v in params)
    got = np.zeros(n + 64, dtype)  # 64 guard elements: nothing written past n
    lib.graphopt_qadd(ctypes.c_void_p(a.ctypes.data), ctypes.c_void_p(b.ctypes.data),
                      ctypes.c_int64(0 if broadcast else 1), ctypes.c_int64(n),
                      int(dtype == np.int8), ra, rb, fixed, int(info.min), int(info.max),
                      ctypes.c_void_p(got.ctypes.data))
    np.testing.assert_array_equal(got[:n], reference.qladd(a, b, params, dtype))
    assert not got[n:].any()
