"""Ops whose output is generated from parameters rather than computed from data: ConstantOfShape,
Range, EyeLike, and the Hann/Hamming/Blackman windows.

The shape-defining inputs (ConstantOfShape's shape, Range's start/limit/delta, a window's
size) are compile-time constants (`const_inputs`): a graph input feeding them is specialized
on its value. When every input is constant the specializer folds the node outright; these emitters
run when it does not (EyeLike reads only its input's shape; the others when the reference
implementation cannot evaluate the node).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op
from graphopt.backend.program import Tensor


def _fill(k: Kernel, value: Callable[[str], str]) -> None:
    """Y[i] = value(i) over the flat output."""
    y = k.outputs[0]
    with k.em.loops([y.size], parallel=True) as (i,):
        k.em.line(f"{k.arg(y)}[{i}] = {value(i)};")


@register_op("ConstantOfShape", const_inputs=(0,))
def emit_constant_of_shape(k: Kernel) -> None:
    """Y = `value` (a one-element tensor attribute, default float 0) everywhere."""
    y = k.outputs[0]
    value = k.attr("value")
    scalar = 0 if value is None else np.asarray(value).reshape(-1)[0].item()
    literal = cdtypes.literal(scalar, y.dtype)
    _fill(k, lambda i: literal)


@register_op("Range", dtypes=cdtypes.NUMERIC, const_inputs=(0, 1, 2))
def emit_range(k: Kernel) -> None:
    """Y[i] = start + i * delta; the length max(ceil((limit - start) / delta), 0) is the
    output's (static) shape."""
    start, delta, y = k.input(0), k.input(2), k.outputs[0]
    first = cdtypes.literal(start.const.reshape(-1)[0].item(), y.dtype)
    step = cdtypes.literal(delta.const.reshape(-1)[0].item(), y.dtype)
    _fill(k, lambda i: f"({y.ctype})({first} + ({y.ctype}){i} * {step})")


@register_op("EyeLike")
def emit_eye_like(k: Kernel) -> None:
    """Y[i, j] = 1 if j - i == k else 0, in the output's type."""
    y = k.outputs[0]
    if y.rank != 2:
        k.unsupported(f"EyeLike of a rank-{y.rank} tensor (the spec allows rank 2 only)")
    diagonal = int(k.attr("k", 0))
    with k.em.loops(y.shape, parallel=True) as (i, j):
        k.em.line(f"{k.arg(y)}[{index([i, j], y.strides)}] = "
                  f"({y.ctype})({j} - {i} == {diagonal});")


def _window(op_type: str, size: int, periodic: bool) -> np.ndarray:
    """The window of `size` points (float64), N = size if periodic else size - 1:
    Hann sin^2(pi n / N), Hamming 25/46 - 21/46 cos(2 pi n / N),
    Blackman 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)."""
    n = np.arange(size, dtype=np.float64)
    period = size if periodic else size - 1
    if op_type == "HannWindow":
        return np.sin(np.pi * n / period) ** 2
    if op_type == "HammingWindow":
        return 25 / 46 - 21 / 46 * np.cos(2 * np.pi * n / period)
    return 0.42 - 0.5 * np.cos(2 * np.pi * n / period) + 0.08 * np.cos(4 * np.pi * n / period)


@register_op("HannWindow", "HammingWindow", "BlackmanWindow", const_inputs=(0,))
def emit_window(k: Kernel) -> None:
    """The window is tabulated at compile time (size is a constant) and copied into Y."""
    size_in, y = k.input(0), k.outputs[0]
    if size_in.const is None:
        k.unsupported(f"{k.node.op_type} with a size computed at run time")
    table = _window(k.node.op_type, int(size_in.const.reshape(-1)[0]),
                    bool(int(k.attr("periodic", 1))))
    tensor = Tensor(f"{k.node.name or 'window'}_table", y.dtype, y.shape,
                    table.astype(y.dtype.numpy).reshape(y.shape))
    k.em.line(f"memcpy({k.arg(y)}, {k.arg(Operand(tensor, 'table', False))}, {tensor.nbytes});")
