"""Normalizations: LayerNormalization, BatchNormalization (inference), InstanceNormalization, LRN.

LayerNormalization views X as [outer, inner] (inner = dims from `axis` on) and computes per row
mean, var = mean((x - mean)^2) (two passes, in double), y = (x - mean) / sqrt(var + eps) * S + B.

BatchNormalization with constant statistics folds them at compile time into a per-channel
affine map: y = x * a[c] + b[c], a = scale / sqrt(var + eps), b = B - mean * a (the same formula
rearranged), so inference costs one multiply-add per element.
"""
from __future__ import annotations

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import broadcast_strides, coalesce, index, unravel
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.loops import map_elements
from graphopt.backend.c.registry import register_op
from graphopt.backend.program import Tensor


@register_op("LayerNormalization", dtypes=cdtypes.FLOATS)
def emit_layer_norm(k: Kernel) -> None:
    x, scale, bias = k.input(0), k.input(1), k.input(2)
    y = k.outputs[0]
    axis = int(k.attr("axis", -1)) % x.rank
    eps = float(k.attr("epsilon", 1e-5))
    outer = int(np.prod(x.shape[:axis]))
    inner_shape = x.shape[axis:]
    inner = int(np.prod(inner_shape))
    em, X, Y, T = k.em, k.arg(x), k.arg(y), x.ctype
    loads = []
    for operand in (scale, bias):
        if operand is None:
            loads.append(None)
            continue
        shape, (strides,) = coalesce(inner_shape, broadcast_strides(operand.shape, inner_shape))
        loads.append((k.arg(operand), shape, strides))
    stats = [k.outputs[i] if len(k.outputs) > i and k.outputs[i].used else None for i in (1, 2)]
    with em.loops([outer], parallel=True, work=x.size) as (o,):
        em.line(f"const {T}* x = {X} + {index([o], [inner])};")
        em.line(f"{T}* y = {Y} + {index([o], [inner])};")
        em.line("double mean = 0, var = 0;")
        em.line(f"for (int64_t j = 0; j < {inner}; ++j) mean += x[j];")
        em.line(f"mean /= {inner};")
        em.line(f"for (int64_t j = 0; j < {inner}; ++j) "
                "{ const double d = x[j] - mean; var += d * d; }")
        em.line(f"const {T} inv = ({T})(1.0 / sqrt(var / {inner} + {eps!r}));")
        em.line(f"const {T} mu = ({T})mean;")
        with em.block(f"for (int64_t j = 0; j < {inner}; ++j)"):
            value = "(x[j] - mu) * inv"
            for load, op in zip(loads, ("*", "+")):
                if load is not None:
                    name, shape, strides = load
                    value = f"{value} {op} {name}[{unravel('j', shape, strides)}]"
            em.line(f"y[j] = {value};")
        for out, expr in zip(stats, ("mu", "inv")):
            if out is not None:
                em.line(f"{k.arg(out)}[{o}] = {expr};")


@register_op("BatchNormalization", dtypes=cdtypes.FLOATS)
def emit_batch_norm(k: Kernel) -> None:
    x, scale, bias, mean, var = (k.input(i) for i in range(5))
    y = k.outputs[0]
    if int(k.attr("training_mode", 0)) or any(o.used for o in k.outputs[1:]):
        k.unsupported("BatchNormalization in training mode is not supported (inference only)")
    eps = float(k.attr("epsilon", 1e-5))
    channel_shape = (x.shape[1],) + (1,) * (x.rank - 2)
    if all(t.const is not None for t in (scale, bias, mean, var)):
        a = scale.const / np.sqrt(var.const.astype(np.float64) + eps)
        b = bias.const - mean.const * a
        dtype = x.dtype
        operands = [Operand(Tensor(f"{scale.tensor.name}_folded", dtype, channel_shape,
                                   arr.astype(dtype.numpy).reshape(channel_shape)), name, False)
                    for arr, name in ((a, "A"), (b, "Bf"))]
        map_elements(k, y, [x] + operands, lambda em, args: _affine(em, args, x.ctype))
        return
    views = [t.view(channel_shape) for t in (scale, bias, mean, var)]
    T, f = x.ctype, cdtypes.math_suffix(x.dtype)
    lit = cdtypes.literal(eps, x.dtype)

    def compute(em, args):  # noqa: ANN001, ANN202
        (xv, _), (s, _), (b_, _), (m, _), (v, _) = args
        name = em.temp("v")
        em.line(f"const {T} {name} = ({xv} - {m}) / sqrt{f}({v} + {lit}) * {s} + {b_};")
        return name, x.dtype

    map_elements(k, y, [x] + views, compute)


def _affine(em, args, ctype: str):  # noqa: ANN001, ANN202
    (xv, dtype), (a, _), (b, _) = args
    name = em.temp("v")
    em.line(f"const {ctype} {name} = {xv} * {a} + {b};")
    return name, dtype


@register_op("InstanceNormalization", dtypes=cdtypes.FLOATS)
def emit_instance_norm(k: Kernel) -> None:
    x, scale, bias = k.input(0), k.input(1), k.input(2)
    y = k.outputs[0]
    eps = float(k.attr("epsilon", 1e-5))
    channels = x.shape[1]
    plane = int(np.prod(x.shape[2:]))
    em, X, Y, S, B, T = k.em, k.arg(x), k.arg(y), k.arg(scale), k.arg(bias), x.ctype
    with em.loops([x.shape[0], channels], parallel=True, work=x.size) as (n, c):
        em.line(f"const int64_t base = {index([n, c], [channels * plane, plane])};")
        em.line("double mean = 0, var = 0;")
        em.line(f"for (int64_t j = 0; j < {plane}; ++j) mean += {X}[base + j];")
        em.line(f"mean /= {plane};")
        em.line(f"for (int64_t j = 0; j < {plane}; ++j) "
                f"{{ const double d = {X}[base + j] - mean; var += d * d; }}")
        em.line(f"const {T} a = ({T})({S}[{c}] / sqrt(var / {plane} + {eps!r}));")
        em.line(f"const {T} b = ({T})({B}[{c}] - mean * a);")
        em.line(f"for (int64_t j = 0; j < {plane}; ++j) {Y}[base + j] = {X}[base + j] * a + b;")


@register_op("LRN", dtypes=cdtypes.FLOATS)
def emit_lrn(k: Kernel) -> None:
    """y = x / (bias + alpha / size * sum of x^2 over the channel window) ^ beta."""
    x, y = k.input(0), k.outputs[0]
    size = int(k.attr("size"))
    alpha, beta = float(k.attr("alpha", 1e-4)), float(k.attr("beta", 0.75))
    bias = float(k.attr("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    channels = x.shape[1]
    plane = int(np.prod(x.shape[2:]))
    em, X, Y, T, f = k.em, k.arg(x), k.arg(y), x.ctype, cdtypes.math_suffix(x.dtype)
    lit = lambda v: cdtypes.literal(v, x.dtype)  # noqa: E731
    with em.loops([x.shape[0], channels, plane], parallel=True, work=x.size * size) as (n, c, p):
        em.line(f"const int64_t first = {c} - {lo} < 0 ? 0 : {c} - {lo};")
        em.line(f"const int64_t last = {c} + {hi} >= {channels} ? {channels - 1} : {c} + {hi};")
        em.line(f"const int64_t base = {index([n, p], [channels * plane, 1])};")
        em.line(f"{T} sum = 0;")
        em.line(f"for (int64_t q = first; q <= last; ++q) "
                f"{{ const {T} v = {X}[base + q * {plane}]; sum += v * v; }}")
        em.line(f"{Y}[base + {c} * {plane}] = {X}[base + {c} * {plane}] / "
                f"pow{f}({lit(bias)} + {lit(alpha / size)} * sum, {lit(beta)});")
