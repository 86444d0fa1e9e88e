"""Normalizations: LayerNormalization, RMSNormalization, LpNormalization, BatchNormalization,
InstanceNormalization, GroupNormalization, MeanVarianceNormalization, LRN.

LayerNormalization views X as [outer, inner] (inner = dims from `axis` on) and computes per row
mean, var = mean((x - mean)^2) (two passes, in double), y = (x - mean) / sqrt(var + eps) * S + B;
float rows with contiguous S and B run csrc/graphopt_rows.h's vectorized graphopt_norm_rowf.

BatchNormalization with constant statistics folds them at compile time into a per-channel
affine map: y = x * a[c] + b[c], a = scale / sqrt(var + eps), b = B - mean * a (the same formula
rearranged), so inference costs one multiply-add per element. In training mode it normalizes
with the batch's own statistics and updates the running ones (see _emit_batch_norm_training).
"""
from __future__ import annotations

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import broadcast_strides, coalesce, index, unravel
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.loops import map_elements
from graphopt.backend.c.ops.reduce import split_loops
from graphopt.backend.c.ops.softmax import axis_view
from graphopt.backend.c.registry import register_op
from graphopt.backend.program import Tensor
from graphopt.ir.types import DType


@register_op("LayerNormalization", "RMSNormalization", dtypes=cdtypes.FLOATS)
def emit_layer_norm(k: Kernel) -> None:
    """Per row of X viewed as [outer, inner]: LayerNormalization subtracts the mean and divides
    by sqrt(var + eps); RMSNormalization divides by sqrt(mean(x^2) + eps) without centering."""
    x, scale, bias = k.input(0), k.input(1), k.input(2)
    y = k.outputs[0]
    centered = k.node.op_type == "LayerNormalization"
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
    if x.dtype == DType.FLOAT and all(load is None or load[2] == [1] for load in loads) and \
            all(out is None or out.dtype == DType.FLOAT for out in stats):
        _emit_norm_rows(k, outer, inner, loads, stats, eps, centered)
        return
    with em.loops([outer], parallel=True, work=x.size) as (o,):
        em.line(f"const {T}* x = {X} + {index([o], [inner])};")
        em.line(f"{T}* y = {Y} + {index([o], [inner])};")
        em.line("double mean = 0, var = 0;")
        if centered:
            em.line(f"for (int64_t j = 0; j < {inner}; ++j) mean += x[j];")
            em.line(f"mean /= {inner};")
        em.line(f"for (int64_t j = 0; j < {inner}; ++j) "
                "{ const double d = x[j] - mean; var += d * d; }")
        em.line(f"const {T} inv = ({T})(1.0 / sqrt(var / {inner} + {eps!r}));")
        em.line(f"const {T} mu = ({T})mean;")
        with em.block(f"for (int64_t j = 0; j < {inner}; ++j)"):
            value = "(x[j] - mu) * inv" if centered else "x[j] * inv"
            for load, op in zip(loads, ("*", "+")):
                if load is not None:
                    name, shape, strides = load
                    value = f"{value} {op} {name}[{unravel('j', shape, strides)}]"
            em.line(f"y[j] = {value};")
        em.line("(void)mu;")
        for out, expr in zip(stats, ("mu", "inv")):
            if out is not None and centered:
                em.line(f"{k.arg(out)}[{o}] = {expr};")


def _emit_norm_rows(k: Kernel, outer: int, inner: int, loads: list, stats: list,
                    eps: float, centered: bool) -> None:
    """Float rows with contiguous (or no) scale and bias: csrc/graphopt_rows.h's vectorized
    sums (in double, two passes as in the generic loop) and affine pass per row."""
    em, X, Y = k.em, k.arg(k.input(0)), k.arg(k.outputs[0])
    scale, bias = (load[0] if load is not None else "NULL" for load in loads)
    with em.loops([outer], parallel=True, work=outer * inner) as (o,):
        em.line(f"const float* x = {X} + {index([o], [inner])};")
        mean = f"graphopt_row_sum(x, {inner}) / {inner}" if centered else "0.0"
        em.line(f"const double mean = {mean};")
        em.line(f"const double var = graphopt_row_square_sum(x, {inner}, mean) / {inner};")
        em.line(f"const float inv = (float)(1.0 / sqrt(var + {eps!r}));")
        em.line("const float mu = (float)mean;")
        em.line(f"graphopt_norm_apply_rowf(x, {Y} + {index([o], [inner])}, {inner}, mu, inv, "
                f"{scale}, {bias});")
        for out, expr in zip(stats, ("mu", "inv")):
            if out is not None and centered:
                em.line(f"{k.arg(out)}[{o}] = {expr};")


@register_op("LpNormalization", dtypes=cdtypes.FLOATS)
def emit_lp_norm(k: Kernel) -> None:
    """y = x / (sum over `axis` of |x|^p)^(1/p), p in {1, 2}; 0 where the norm is 0."""
    x, y = k.input(0), k.outputs[0]
    p = int(k.attr("p", 2))
    if p not in (1, 2):
        k.unsupported(f"LpNormalization with p={p} (the spec allows 1 and 2)")
    outer, n, inner = axis_view(x.shape, int(k.attr("axis", -1)) % x.rank)
    em, X, Y, T = k.em, k.arg(x), k.arg(y), x.ctype
    term = "fabs(v)" if p == 1 else "v * v"
    with em.loops([outer, inner], parallel=True, work=x.size) as (o, i):
        base = index([o, i], [n * inner, 1])
        em.line("double norm = 0;")
        em.line(f"for (int64_t j = 0; j < {n}; ++j) "
                f"{{ const double v = {X}[{base} + j * {inner}]; norm += {term}; }}")
        if p == 2:
            em.line("norm = sqrt(norm);")
        em.line(f"for (int64_t j = 0; j < {n}; ++j) {Y}[{base} + j * {inner}] = "
                f"norm == 0 ? ({T})0 : ({T})({X}[{base} + j * {inner}] / norm);")


@register_op("BatchNormalization", dtypes=cdtypes.FLOATS)
def emit_batch_norm(k: Kernel) -> None:
    x, scale, bias, mean, var = (k.input(i) for i in range(5))
    y = k.outputs[0]
    if int(k.attr("training_mode", 0)):
        _emit_batch_norm_training(k)
        return
    if any(o.used for o in k.outputs[1:]):
        k.unsupported("BatchNormalization statistics outputs exist only in training mode")
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


def _emit_moments(k: Kernel, x: Operand, base: str, group: list[int],
                  strides: list[int]) -> None:
    """Declare `double mean, var`: the mean and population variance (two passes, in double) of
    X's elements at `base` + the offsets of the loop nest `group` / `strides`."""
    em, X = k.em, k.arg(x)
    count = int(np.prod(group))
    em.line("double mean = 0, var = 0;")
    with em.loops(group, prefix="j") as idx:
        em.line(f"mean += {X}[{base} + {index(idx, strides)}];")
    em.line(f"mean /= {count};")
    with em.loops(group, prefix="j") as idx:
        em.line(f"{{ const double d = {X}[{base} + {index(idx, strides)}] - mean; var += d * d; }}")
    em.line(f"var /= {count};")


def _emit_affine(k: Kernel, x: Operand, y: Operand, base: str, group: list[int],
                 strides: list[int], scale: str, shift: str) -> None:
    """Y = X * a + b over the nest, with a = `scale` and b = `shift` (C expressions)."""
    em, X, Y, T = k.em, k.arg(x), k.arg(y), x.ctype
    a, b = em.temp("a"), em.temp("b")
    em.line(f"const {T} {a} = ({T})({scale});")
    em.line(f"const {T} {b} = ({T})({shift});")
    with em.loops(group, prefix="j") as idx:
        at = f"{base} + {index(idx, strides)}"
        em.line(f"{Y}[{at}] = {X}[{at}] * {a} + {b};")


def _normalize_with(k: Kernel, x: Operand, y: Operand, base: str, group: list[int],
                    strides: list[int], channel: str) -> None:
    """y = (x - mean) / sqrt(var + eps) * S[channel] + B[channel] over the nest, with the
    nest's own statistics (as y = x * a + b)."""
    S, B = k.arg(k.input(1)), k.arg(k.input(2))
    eps = float(k.attr("epsilon", 1e-5))
    _emit_moments(k, x, base, group, strides)
    a = f"{S}[{channel}] / sqrt(var + {eps!r})"
    _emit_affine(k, x, y, base, group, strides, a, f"{B}[{channel}] - mean * ({a})")


def _emit_batch_norm_training(k: Kernel) -> None:
    """Training mode: statistics of the batch (over N and the spatial dims, per channel)
    normalize X; running_mean/var = input_mean/var * momentum + batch mean/var * (1 - momentum)
    (population variance), as in the ONNX spec."""
    x, y = k.input(0), k.outputs[0]
    if len(k.outputs) > 3 and any(o.used for o in k.outputs[3:]):
        k.unsupported("BatchNormalization saved_mean/saved_var outputs (opset < 14)")
    momentum = float(k.attr("momentum", 0.9))
    channels, plane = x.shape[1], int(np.prod(x.shape[2:]))
    em, T = k.em, x.ctype
    with em.loops([channels], parallel=True, work=x.size) as (c,):
        _normalize_with(k, x, y, index([c], [plane]), [x.shape[0], plane],
                        [channels * plane, 1], c)
        for out, stat, value in zip(k.outputs[1:3], (k.input(3), k.input(4)), ("mean", "var")):
            if out.used:
                em.line(f"{k.arg(out)}[{c}] = ({T})({k.arg(stat)}[{c}] * {momentum!r} + "
                        f"{value} * {1 - momentum!r});")


@register_op("InstanceNormalization", dtypes=cdtypes.FLOATS)
def emit_instance_norm(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    channels, plane = x.shape[1], int(np.prod(x.shape[2:]))
    with k.em.loops([x.shape[0], channels], parallel=True, work=x.size) as (n, c):
        _normalize_with(k, x, y, index([n, c], [channels * plane, plane]), [plane], [1], c)


@register_op("GroupNormalization", dtypes=cdtypes.FLOATS)
def emit_group_norm(k: Kernel) -> None:
    """Statistics per image and group of C / num_groups channels; scale and bias per channel
    (opset 21) or per group (opset 18, told apart by their length)."""
    x, scale, y = k.input(0), k.input(1), k.outputs[0]
    groups = int(k.attr("num_groups"))
    channels, plane = x.shape[1], int(np.prod(x.shape[2:]))
    if channels % groups or scale.size not in (channels, groups):
        k.unsupported(f"GroupNormalization of {channels} channels in {groups} groups with "
                      f"scale of {scale.size} elements")
    per_group = channels // groups
    S, B = k.arg(scale), k.arg(k.input(2))
    eps = float(k.attr("epsilon", 1e-5))
    em = k.em
    with em.loops([x.shape[0], groups], parallel=True, work=x.size) as (n, g):
        base = index([n, g], [channels * plane, per_group * plane])
        _emit_moments(k, x, base, [per_group, plane], [plane, 1])
        with em.loops([per_group], prefix="c") as (cc,):
            c = em.temp("ch")
            em.line(f"const int64_t {c} = {index([g, cc], [per_group, 1])};")
            at = c if scale.size == channels else g
            a = f"{S}[{at}] / sqrt(var + {eps!r})"
            _emit_affine(k, x, y, f"{base} + {index([cc], [plane])}", [plane], [1], a,
                         f"{B}[{at}] - mean * ({a})")


@register_op("MeanVarianceNormalization", dtypes=cdtypes.FLOATS)
def emit_mean_variance_norm(k: Kernel) -> None:
    """y = (x - mean) / (sqrt(var) + 1e-9) with statistics over `axes` (default N, H, W), as
    the op's function body defines it."""
    x, y = k.input(0), k.outputs[0]
    axes = sorted({int(a) % x.rank for a in k.attr("axes", [0, 2, 3])})
    kept_shape, kept_strides, red_shape, red_strides = split_loops(x.shape, x.strides, axes)
    with k.em.loops(kept_shape, parallel=True, work=x.size) as out:
        base = index(out, kept_strides)
        _emit_moments(k, x, base, list(red_shape), red_strides)
        _emit_affine(k, x, y, base, list(red_shape), red_strides, "1.0 / (sqrt(var) + 1e-9)",
                     "-mean / (sqrt(var) + 1e-9)")


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
