"""Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
QLinearMatMul (integer types up to 16 bits; fp8/int4 element types are refused as types).

    quantize:   q = saturate(round_half_even(x / scale) + zero_point)
    dequantize: x = (q - zero_point) * scale

scale and zero_point are per tensor (one element), per axis (1-D along `axis`) or blocked (X's
rank, `block_size` consecutive elements along `axis` share one). The division x / scale is
done in the input's type, as in the reference, so the rounding sees the same quotient.
Integer matmuls accumulate (a - a_zero_point) * (b - b_zero_point) exactly in int64.
"""
from __future__ import annotations

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import broadcast_strides, contiguous_strides, index
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op
from graphopt.ir.types import DType

_QUANTIZED = frozenset({DType.INT8, DType.UINT8, DType.INT16, DType.UINT16})


def _range(dtype: DType) -> tuple[int, int]:
    info = np.iinfo(dtype.numpy)
    return int(info.min), int(info.max)


def _param_at(k: Kernel, param: Operand | None, x: Operand, idx: list[str]) -> str:
    """C expression of the scale/zero point element that applies at X's coordinates `idx`."""
    if param is None:
        return "0"
    axis = int(k.attr("axis", 1)) % x.rank if x.rank else 0
    block = int(k.attr("block_size", 0))
    if param.size == 1:
        return f"{k.arg(param)}[0]"
    if param.rank == 1 and not block:
        if param.shape[0] != x.shape[axis]:
            k.unsupported(f"{k.node.op_type} {param.name} of {param.size} elements along axis "
                          f"{axis} of length {x.shape[axis]}")
        return f"{k.arg(param)}[{idx[axis]}]"
    if block and param.rank == x.rank:
        coords = [f"({v} / {block})" if d == axis and v != "0" else v for d, v in enumerate(idx)]
        return f"{k.arg(param)}[{index(coords, param.strides)}]"
    k.unsupported(f"{k.node.op_type} {param.name} of shape {param.shape} for input {x.shape}")


@register_op("QuantizeLinear", dtypes=cdtypes.FLOATS)
def emit_quantize(k: Kernel) -> None:
    x, scale, zero, y = k.input(0), k.input(1), k.input(2), k.outputs[0]
    if y.dtype not in _QUANTIZED:
        k.unsupported(f"QuantizeLinear to {y.dtype.name}")
    if scale.dtype != x.dtype:
        k.unsupported(f"QuantizeLinear with {scale.dtype.name} scale for {x.dtype.name} input")
    low, high = _range(y.dtype)
    em, X, Y, f = k.em, k.arg(x), k.arg(y), cdtypes.math_suffix(x.dtype)
    with em.loops(x.shape, parallel=True) as idx:
        em.line(f"{k.target.wide_float(x.dtype)} q = nearbyint{f}({X}[{index(idx, x.strides)}] / "
                f"{_param_at(k, scale, x, idx)}) + {_param_at(k, zero, x, idx)};")
        em.line(f"{Y}[{index(idx, y.strides)}] = ({y.ctype})(q < {low} ? {low} : "
                f"(q > {high} ? {high} : q));")


@register_op("DequantizeLinear", dtypes=_QUANTIZED | {DType.INT32})
def emit_dequantize(k: Kernel) -> None:
    x, scale, zero, y = k.input(0), k.input(1), k.input(2), k.outputs[0]
    if y.dtype not in cdtypes.FLOATS or scale.dtype != y.dtype:
        k.unsupported(f"DequantizeLinear to {y.dtype.name} with {scale.dtype.name} scale")
    em, X, Y = k.em, k.arg(x), k.arg(y)
    with em.loops(x.shape, parallel=True) as idx:
        em.line(f"{Y}[{index(idx, y.strides)}] = (({y.ctype}){X}[{index(idx, x.strides)}] - "
                f"({y.ctype}){_param_at(k, zero, x, idx)}) * {_param_at(k, scale, x, idx)};")


@register_op("DynamicQuantizeLinear", dtypes={DType.FLOAT})
def emit_dynamic_quantize(k: Kernel) -> None:
    """uint8 quantization with scale = (max(x, 0) - min(x, 0)) / 255 (1 when that range is 0)
    and zero_point = round(clamp(-min / scale, 0, 255)), all in float as the spec computes."""
    x, (y, y_scale, y_zero) = k.input(0), k.outputs
    em, X = k.em, k.arg(x)
    em.line("float top = 0, low = 0;")
    with em.loops([x.size]) as (i,):
        em.line(f"if ({X}[{i}] > top) top = {X}[{i}];")
        em.line(f"if ({X}[{i}] < low) low = {X}[{i}];")
    em.line("const float s = (top == low ? 1.0f : top - low) / 255.0f;")
    em.line("float z = 0.0f - low / s;")
    em.line("z = nearbyintf(z < 0 ? 0 : (z > 255 ? 255 : z));")
    with em.loops([x.size], parallel=True) as (i,):
        em.line(f"const float q = nearbyintf({X}[{i}] / s) + z;")
        em.line(f"{k.arg(y)}[{i}] = (uint8_t)(q < 0 ? 0 : (q > 255 ? 255 : q));")
    if y_scale.used:
        em.line(f"{k.arg(y_scale)}[0] = s;")
    if y_zero.used:
        em.line(f"{k.arg(y_zero)}[0] = (uint8_t)z;")


@register_op("MatMulInteger", "QLinearMatMul", dtypes={DType.INT8, DType.UINT8})
def emit_integer_matmul(k: Kernel) -> None:
    """Y = sum_k (A - a_zero_point)(B - b_zero_point), numpy matmul broadcasting; QLinearMatMul
    then requantizes: saturate(round(Y * (a_scale * b_scale / y_scale)) + y_zero_point)."""
    qlinear = k.node.op_type == "QLinearMatMul"
    if qlinear:
        a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = (k.input(i) for i in range(8))
        scales = (a_scale, b_scale, y_scale)
        if any(s.size != 1 or s.dtype != DType.FLOAT for s in scales):
            k.unsupported("QLinearMatMul with scales that are not float32 scalars")
    else:
        a, b, a_zero, b_zero = (k.input(i) for i in range(4))
    y = k.outputs[0]
    if a.rank < 2 or b.rank < 2:
        k.unsupported(f"{k.node.op_type} of rank-{a.rank} and rank-{b.rank} inputs")
    m, depth, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = y.shape[:-2]
    a_steps = [s * m * depth for s in broadcast_strides(a.shape[:-2], batch)]
    b_steps = [s * depth * n for s in broadcast_strides(b.shape[:-2], batch)]
    em, A, B, Y = k.em, k.arg(a), k.arg(b), k.arg(y)
    if qlinear:
        em.line(f"const float mult = {k.arg(a_scale)}[0] * {k.arg(b_scale)}[0] / "
                f"{k.arg(y_scale)}[0];")
    with em.loops([*batch, m, n], parallel=True, work=y.size * depth) as idx:
        *bi, i, j = idx
        a_row = f"{index(bi, a_steps)} + {index([i], [depth])}"
        b_col = f"{index(bi, b_steps)} + {j}"
        em.line("int64_t acc = 0;")
        with em.block(f"for (int64_t p = 0; p < {depth}; ++p)"):
            za = _zero_point(k, a_zero, i, m, "row")
            zb = _zero_point(k, b_zero, j, n, "column")
            em.line(f"acc += ((int64_t){A}[{a_row} + p] - {za}) * "
                    f"((int64_t){B}[{b_col} + p * {n}] - {zb});")
        out = index(idx, contiguous_strides(y.shape))
        if qlinear:
            low, high = _range(y.dtype)
            zy = f"{k.arg(y_zero)}[0]" if y_zero is not None else "0"
            em.line(f"const double q = nearbyint((double)acc * (double)mult + {zy});")
            em.line(f"{Y}[{out}] = ({y.ctype})(q < {low} ? {low} : (q > {high} ? {high} : q));")
        else:
            em.line(f"{Y}[{out}] = (int32_t)acc;")


def _zero_point(k: Kernel, zero: Operand | None, at: str, extent: int, kind: str) -> str:
    """The zero point of A's row / B's column `at` (scalar or one per row/column)."""
    if zero is None:
        return "0"
    if zero.size == 1:
        return f"(int64_t){k.arg(zero)}[0]"
    if zero.size == extent:
        return f"(int64_t){k.arg(zero)}[{at}]"
    k.unsupported(f"{k.node.op_type} zero point of {zero.size} elements (one per {kind} or one)")
