"""Reductions over a set of axes: the Reduce* family, global pools, ArgMax/ArgMin, and the
running reductions CumSum/CumProd.

The input's kept dims and reduced dims are coalesced separately; each output element runs
one accumulation loop nest over the reduced dims. Float sums accumulate in double so long
reductions (a 224x224 global average) stay within fp32 tolerance of onnxruntime.
Each reduction is data: an initial value, an update and a final expression.
"""
from __future__ import annotations

from dataclasses import dataclass

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import coalesce, contiguous_strides, index
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.ops.softmax import axis_view
from graphopt.backend.c.registry import register_op
from graphopt.ir.types import DType


@dataclass(frozen=True)
class Reduction:
    """{acc} accumulator, {x} element, {n} reduced count, {f} math suffix of the input type."""

    init: str  # "lowest", "highest" or a number
    update: str
    final: str = "{acc}"
    wide: bool = True  # accumulate floats in double


REDUCTIONS: dict[str, Reduction] = {
    "ReduceSum": Reduction("0", "{acc} + {x}"),
    "ReduceMean": Reduction("0", "{acc} + {x}", "{acc} / {n}"),
    "ReduceMax": Reduction("lowest", "({x} > {acc} ? {x} : {acc})", wide=False),
    "ReduceMin": Reduction("highest", "({x} < {acc} ? {x} : {acc})", wide=False),
    "ReduceProd": Reduction("1", "{acc} * {x}"),
    "ReduceL1": Reduction("0", "{acc} + ({x} < 0 ? -{x} : {x})"),
    "ReduceL2": Reduction("0", "{acc} + {x} * {x}", "sqrt({acc})"),
    "ReduceSumSquare": Reduction("0", "{acc} + {x} * {x}"),
    "ReduceLogSum": Reduction("0", "{acc} + {x}", "log({acc})"),
    "GlobalAveragePool": Reduction("0", "{acc} + {x}", "{acc} / {n}"),
    "GlobalMaxPool": Reduction("lowest", "({x} > {acc} ? {x} : {acc})", wide=False),
}


def reduce_axes(k: Kernel, x: Operand) -> list[int] | None:
    """The reduced axes (sorted, non-negative); None means "no reduction" (copy)."""
    op = k.node.op_type
    if op.startswith("Global"):
        return list(range(2, x.rank))
    axes_input = k.input(1)
    if axes_input is not None:
        if axes_input.const is None:
            k.unsupported(f"{op} with axes computed at run time is not supported")
        axes = [int(a) for a in axes_input.const.reshape(-1)]
    else:
        axes = [int(a) for a in k.attr("axes", [])]
    if not axes:
        if int(k.attr("noop_with_empty_axes", 0)):
            return None
        axes = list(range(x.rank))
    return sorted({a % max(x.rank, 1) for a in axes})


def split_loops(shape: tuple[int, ...], strides: list[int], axes: list[int]) -> tuple:
    """(kept dims, kept strides, reduced dims, reduced strides), each part coalesced."""
    kept = [d for d in range(len(shape)) if d not in axes]
    kept_shape, (kept_strides,) = coalesce([shape[d] for d in kept], [strides[d] for d in kept])
    red_shape, (red_strides,) = coalesce([shape[d] for d in axes], [strides[d] for d in axes])
    return kept_shape, kept_strides, red_shape, red_strides


@register_op(*REDUCTIONS, "ReduceLogSumExp", dtypes=cdtypes.ALL, const_inputs=(1,))
def emit_reduce(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    op = k.node.op_type
    if x.dtype == DType.BOOL and op not in ("ReduceMax", "ReduceMin"):
        k.unsupported(f"{op} on BOOL (only ReduceMax/ReduceMin, i.e. any/all, are defined)")
    if op in ("ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "GlobalAveragePool") and \
            x.dtype not in cdtypes.FLOATS:
        k.unsupported(f"{op} on integers is not implemented")
    axes = reduce_axes(k, x)
    em, X, Y = k.em, k.arg(x), k.arg(y)
    if axes is None:
        em.line(f"memcpy({Y}, {X}, {y.size * y.dtype.itemsize});")
        return
    count = 1
    for a in axes:
        count *= x.shape[a]
    kept_shape, kept_strides, red_shape, red_strides = split_loops(x.shape, x.strides, axes)
    out_strides = contiguous_strides(kept_shape)
    if op == "ReduceLogSumExp":
        _emit_logsumexp(k, x, y, kept_shape, kept_strides, red_shape, red_strides, out_strides)
        return
    rule = REDUCTIONS[op]
    wide = rule.wide and x.dtype in cdtypes.FLOATS and k.target.float_accumulator == "double"
    acc_type = "double" if wide else x.ctype
    acc_dtype = DType.DOUBLE if wide else x.dtype
    if rule.init == "lowest":
        init = cdtypes.lowest(x.dtype)
    elif rule.init == "highest":
        init = cdtypes.highest(x.dtype)
    else:
        init = cdtypes.literal(int(rule.init), acc_dtype)
    with em.loops(kept_shape, parallel=True, work=x.size) as out:
        em.line(f"{acc_type} acc = {init};")
        with em.loops(red_shape, prefix="r") as red:
            offset = f"{index(out, kept_strides)} + {index(red, red_strides)}"
            em.line(f"const {acc_type} v = {X}[{offset}];")
            em.line("acc = " + rule.update.format(acc="acc", x="v") + ";")
        final = rule.final.format(acc="acc", n=f"({acc_type}){count}")
        em.line(f"{Y}[{index(out, out_strides)}] = ({y.ctype})({final});")


def _emit_logsumexp(k: Kernel, x: Operand, y: Operand, kept_shape: tuple, kept_strides: list,
                    red_shape: tuple, red_strides: list, out_strides: list) -> None:
    em, X, Y = k.em, k.arg(x), k.arg(y)
    with em.loops(kept_shape, parallel=True, work=x.size) as out:
        base = index(out, kept_strides)
        em.line(f"double top = {cdtypes.lowest(DType.DOUBLE)}, acc = 0;")
        with em.loops(red_shape, prefix="r") as red:
            em.line(f"const double v = {X}[{base} + {index(red, red_strides)}];")
            em.line("top = v > top ? v : top;")
        with em.loops(red_shape, prefix="r") as red:
            em.line(f"acc += exp({X}[{base} + {index(red, red_strides)}] - top);")
        em.line(f"{Y}[{index(out, out_strides)}] = ({y.ctype})(log(acc) + top);")


@register_op("ArgMax", "ArgMin", dtypes=cdtypes.NUMERIC)
def emit_arg_reduce(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    axis = int(k.attr("axis", 0)) % x.rank
    last = int(k.attr("select_last_index", 0))
    better = (">" if k.node.op_type == "ArgMax" else "<") + ("=" if last else "")
    kept_shape, kept_strides, _, _ = split_loops(x.shape, x.strides, [axis])
    em, X, Y = k.em, k.arg(x), k.arg(y)
    stride = x.strides[axis]
    with em.loops(kept_shape, parallel=True, work=x.size) as out:
        base = index(out, kept_strides)
        em.line(f"{x.ctype} best = {X}[{base}];")
        em.line("int64_t at = 0;")
        with em.block(f"for (int64_t r = 1; r < {x.shape[axis]}; ++r)"):
            em.line(f"const {x.ctype} v = {X}[{base} + r * {stride}];")
            em.line(f"if (v {better} best) {{ best = v; at = r; }}")
        em.line(f"{Y}[{index(out, contiguous_strides(kept_shape))}] = at;")


@register_op("CumSum", "CumProd", dtypes=cdtypes.NUMERIC, const_inputs=(1,))
def emit_cumulative(k: Kernel) -> None:
    """Running sum/product along `axis` (exclusive: each element sees only the ones before it;
    reverse: from the end), accumulated in the input type as the spec's reference does."""
    x, axis_in, y = k.input(0), k.input(1), k.outputs[0]
    if axis_in.const is None or axis_in.size != 1:
        k.unsupported(f"{k.node.op_type} axis must be a constant scalar")
    axis = int(axis_in.const.reshape(-1)[0]) % max(x.rank, 1)
    outer, n, inner = axis_view(x.shape, axis)
    product = k.node.op_type == "CumProd"
    em, X, Y, T = k.em, k.arg(x), k.arg(y), x.ctype
    position = f"{n - 1} - r" if int(k.attr("reverse", 0)) else "r"
    with em.loops([outer, inner], parallel=True, work=x.size) as (o, i):
        em.line(f"{T} acc = {cdtypes.literal(1 if product else 0, x.dtype)};")
        with em.block(f"for (int64_t r = 0; r < {n}; ++r)"):
            em.line(f"const int64_t at = {index([o, i], [n * inner, 1])} + ({position}) * {inner};")
            update = f"acc = acc {'*' if product else '+'} {X}[at];"
            if int(k.attr("exclusive", 0)):
                em.line(f"{Y}[at] = acc; {update}")
            else:
                em.line(f"{update} {Y}[at] = acc;")
