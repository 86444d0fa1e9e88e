"""Linear algebra on the last two dims: Det.

Each [n, n] matrix is copied to scratch in double and reduced by Gaussian elimination with
partial pivoting (the largest pivot in the column, rows swapped, each swap flipping the sign);
the determinant is the product of the pivots.
"""
from __future__ import annotations

from graphopt.backend.c import cdtypes
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.registry import register_op


@register_op("Det", dtypes=cdtypes.FLOATS)
def emit_det(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    n = x.shape[-1]
    if x.rank < 2 or x.shape[-2] != n:
        k.unsupported(f"Det of shape {x.shape} (needs [..., n, n])")
    em, X, Y = k.em, k.arg(x), k.arg(y)
    em.line(f"double* LU = (double*){k.scratch(8 * n * n)};")
    with em.loops([y.size], prefix="m") as (m,):  # serial: one scratch matrix
        em.line(f"for (int64_t e = 0; e < {n * n}; ++e) LU[e] = {X}[{m} * {n * n} + e];")
        em.line("double det = 1;")
        with em.block(f"for (int64_t c = 0; c < {n}; ++c)"):
            em.line("int64_t pivot = c;")
            em.line(f"for (int64_t r = c + 1; r < {n}; ++r) "
                    f"if (fabs(LU[r * {n} + c]) > fabs(LU[pivot * {n} + c])) pivot = r;")
            em.line(f"if (LU[pivot * {n} + c] == 0) {{ det = 0; break; }}")
            with em.block("if (pivot != c)"):
                em.line(f"for (int64_t j = 0; j < {n}; ++j) {{ const double s = LU[c * {n} + j]; "
                        f"LU[c * {n} + j] = LU[pivot * {n} + j]; LU[pivot * {n} + j] = s; }}")
                em.line("det = -det;")
            em.line(f"det *= LU[c * {n} + c];")
            with em.block(f"for (int64_t r = c + 1; r < {n}; ++r)"):
                em.line(f"const double f = LU[r * {n} + c] / LU[c * {n} + c];")
                em.line(f"for (int64_t j = c; j < {n}; ++j) "
                        f"LU[r * {n} + j] -= f * LU[c * {n} + j];")
        em.line(f"{Y}[{m}] = ({y.ctype})det;")
