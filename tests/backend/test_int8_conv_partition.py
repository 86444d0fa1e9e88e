"""csrc/qconv.c's work partitions and the tile loop's folded last column, bit for bit against
reference.py on every ISA path (the kernels of test_int8_kernels.py, built the same way):

- a pointwise (1x1 stride 1) layer whose packed B is small enough to be packed whole but has
  many column panels is cut into column ranges, each packed and run by one thread (with 2
  threads or more: the OpenMP build below);
- outputs of 16 * n + 1 columns (7x7 planes: 3 * 16 + 1) fold their last one-column panel
  into the register tile before it (VNNI), one pass over the weights for both, and a last
  panel of 2 to 4 columns has a kernel of its own;
- the rows of a whole register tile are requantized and narrowed together (VNNI).
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from graphopt.backend.int8 import reference
from tests.backend.test_int8_kernels import (PATHS, _build, _case, _lib, _run_qconv,  # noqa: F401
                                             _run_qgemm, libraries)

# (channels, height, width, kernel, stride, pad, dilation), output rows, flip
CASES = [
    # pointwise with many panels: a last panel partly past N, few channels; rows of a tile
    # and a half, of several tiles
    *[(case, m, 1) for case in [(8, 24, 24, 1, 1, 0, 1), (5, 25, 23, 1, 1, 0, 1),
                                (3, 40, 41, 1, 1, 0, 1), (32, 30, 30, 1, 1, 0, 1)]
      for m in (13, 16, 96)],
    # 49 output columns (7x7): stride 1 and 2, depth past a multiple of 4 (K 9 * 3); one
    # whole register tile of rows, a partial one (13: 8 + 5), several: the fold takes whole
    # tiles only, the others keep the one-column kernel
    *[(case, m, 0) for case in [(24, 7, 7, 3, 1, 1, 1), (16, 14, 14, 3, 2, 1, 1),
                                (3, 7, 7, 3, 1, 1, 1), (40, 9, 9, 3, 1, 0, 1)]
      for m in (8, 13, 16, 21)],
    # a last panel of 4 (14x14: 12 * 16 + 4), 2 and 3 columns, then 9; one row panel and more
    *[(case, m, 1) for case in [(16, 14, 14, 3, 1, 1, 1), (8, 6, 3, 3, 1, 1, 1),
                                (5, 7, 5, 3, 1, 1, 1), (3, 10, 10, 3, 2, 1, 1)]
      for m in (4, 13, 21)],
]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case, m, flip", CASES)
def test_conv_partition_matches_reference(libraries, path, case, m, flip):
    got, expected = _run_qconv(_lib(libraries, path), case, m, 11, flip)
    np.testing.assert_array_equal(got, expected)


def test_threads_share_column_ranges(libraries, tmp_path):
    """Built with OpenMP and given 2 slots, the column ranges (pointwise layers past the grain
    rule's threshold: a last panel partly past N, 13 rows with flipped s8) and row chunks give
    the bits of the single-threaded scalar build."""
    lib = ctypes.CDLL(str(_build(tmp_path, "omp", ["-O3", "-march=native", "-fopenmp"])))
    single = _lib(libraries, "scalar")
    for case, m, flip in [((32, 112, 112, 1, 1, 0, 1), 16, 0), ((16, 56, 56, 1, 1, 0, 1), 96, 0),
                          ((32, 111, 113, 1, 1, 0, 1), 13, 1), ((64, 14, 14, 3, 1, 1, 1), 64, 0),
                          ((32, 7, 7, 3, 1, 1, 1), 40, 0)]:
        one, expected = _run_qconv(single, case, m, 5, flip)
        two, _ = _run_qconv(lib, case, m, 5, flip, slots=2)
        np.testing.assert_array_equal(one, expected)
        np.testing.assert_array_equal(two, expected)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("n", [48, 97])
def test_whole_tile_rows_with_residual_add(libraries, path, n):
    """Rows of a whole tile (48 columns) narrowed together, with the fused Relu and residual
    QLinearAdd, against reference.py (the 40-column test in test_int8_kernels.py stores
    16 at a time)."""
    lib = _lib(libraries, path)
    w, x, bias, mult, x_zp = _case(5, 16, n, 72, 127)
    zp = 90
    b = np.random.default_rng(6).integers(0, 256, (16, n)).astype(np.uint8)
    params = reference.qladd_params(0.03, zp, 0.05, 17, 0.045, 3)
    conv = reference.qgemm(w, x.astype(np.int64) - x_zp, bias, mult, np.uint8(zp), low=zp)
    expected = reference.qladd(conv, b, params, np.uint8)
    got = _run_qgemm(lib, w, x, bias, mult, zp, zp, 255, x_zp, add=(b, params))
    np.testing.assert_array_equal(got, expected)
