"""Softmax, LogSoftmax and Hardmax along one axis (opset >= 13 semantics).

The input is viewed as [outer, n, inner] around the axis. For each (outer, inner) position:
m = max_j x_j, then softmax_j = exp(x_j - m) / sum exp(x - m) (subtracting the max keeps exp
finite; the result is mathematically unchanged), log_softmax_j = x_j - m - log(sum exp(x - m)).

Float rows along the last axis (attention scores) run csrc/graphopt_rows.h's row kernels:
vectorized max, exp (graphopt_expf) and sum; other layouts and double use the loop below.
"""
from __future__ import annotations

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.registry import register_op
from graphopt.ir.types import DType


def axis_view(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """(outer, n, inner) element counts around `axis`."""
    outer = inner = 1
    for d in shape[:axis]:
        outer *= d
    for d in shape[axis + 1:]:
        inner *= d
    return outer, shape[axis], inner


@register_op("Softmax", "LogSoftmax", "Hardmax", dtypes=cdtypes.FLOATS)
def emit_softmax(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    op = k.node.op_type
    if x.rank == 0:
        k.unsupported(f"{op} of a scalar")
    axis = int(k.attr("axis", -1)) % x.rank
    outer, n, inner = axis_view(x.shape, axis)
    em, X, Y = k.em, k.arg(x), k.arg(y)
    if inner == 1 and x.dtype == DType.FLOAT and op != "Hardmax":
        _emit_float_rows(k, outer, n)
        return
    T, f = x.ctype, cdtypes.math_suffix(x.dtype)
    step = "" if inner == 1 else f" * {inner}"
    with em.loops([outer, inner], parallel=True, work=x.size) as (o, i):
        base = index([o, i], [n * inner, 1])
        em.line(f"const {T}* x = {X} + {base};")
        em.line(f"{T}* y = {Y} + {base};")
        em.line(f"{T} top = x[0];")
        em.line("int64_t at = 0;")
        em.line(f"for (int64_t j = 1; j < {n}; ++j) "
                f"if (x[j{step}] > top) {{ top = x[j{step}]; at = j; }}")
        if op == "Hardmax":
            em.line(f"for (int64_t j = 0; j < {n}; ++j) y[j{step}] = ({T})(j == at);")
            return
        em.line("(void)at;")
        em.line(f"{T} sum = 0;")
        with em.block(f"for (int64_t j = 0; j < {n}; ++j)"):
            em.line(f"const {T} e = graphopt_exp{f}(x[j{step}] - top);")
            em.line("sum += e;" if op == "LogSoftmax" else f"y[j{step}] = e; sum += e;")
        if op == "Softmax":
            em.line(f"const {T} scale = ({T})1 / sum;")
            em.line(f"for (int64_t j = 0; j < {n}; ++j) y[j{step}] *= scale;")
        else:  # (x - top) is exact near the max; adding log(sum) to top first would round
            em.line(f"const {T} log_sum = log{f}(sum);")
            em.line(f"for (int64_t j = 0; j < {n}; ++j) y[j{step}] = (x[j{step}] - top) - log_sum;")


def _emit_float_rows(k: Kernel, outer: int, n: int) -> None:
    """Contiguous float rows: csrc/graphopt_rows.h's vectorized max / exp-and-sum pieces.
    LogSoftmax writes the exponentials into y as scratch, then y = (x - top) - log(sum)."""
    em, X, Y = k.em, k.arg(k.input(0)), k.arg(k.outputs[0])
    with em.loops([outer], parallel=True, work=outer * n) as (o,):
        at = index([o], [n])
        if k.node.op_type == "Softmax":
            em.line(f"graphopt_softmax_rowf({X} + {at}, {Y} + {at}, {n});")
            return
        em.line(f"const float* x = {X} + {at};")
        em.line(f"float* y = {Y} + {at};")
        em.line(f"const float top = graphopt_row_maxf(x, {n});")
        em.line(f"const float log_sum = logf(graphopt_row_exp_sumf(x, y, {n}, top));")
        em.line(f"for (int64_t j = 0; j < {n}; ++j) y[j] = (x[j] - top) - log_sum;")
