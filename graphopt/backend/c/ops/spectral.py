"""Fourier transforms: DFT and STFT, as direct O(n * m) sums in double.

Signals are real ([..., n, 1]) or complex ([..., n, 2], real and imaginary parts). For a
transform of length L (dft_length: shorter signals are zero-padded, longer ones truncated):
    forward  Y[k] = sum_t x[t] exp(-2 pi i k t / L),   k < L (k <= L / 2 when onesided)
    inverse  y[t] = 1/L sum_k X[k] exp(+2 pi i k t / L)
An inverse onesided DFT takes the L / 2 + 1 first frequencies of a real signal's spectrum
(the rest are their conjugates) and returns the real signal, [..., L, 1]. STFT applies the
forward transform to frames of frame_length samples every frame_step samples, each frame
multiplied by `window`.
"""
from __future__ import annotations

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op

TWO_PI = "6.283185307179586476925"


def _scalar(k: Kernel, operand: Operand | None, what: str) -> int | None:
    if operand is None or operand.size == 0:
        return None
    if operand.const is None:
        k.unsupported(f"{k.node.op_type} with {what} computed at run time")
    return int(operand.const.reshape(-1)[0])


def _emit_sum(k: Kernel, sign: str, length: int, count: str, load: str, weight: str = "") -> None:
    """re, im = sum over t < count of (x[t] * weight) exp(sign 2 pi i k t / length), where
    `load` declares xr, xi for sample t."""
    em = k.em
    em.line("double re = 0, im = 0;")
    with em.block(f"for (int64_t t = 0; t < {count}; ++t)"):
        em.line(load)
        if weight:
            em.line(f"xr *= {weight}; xi *= {weight};")
        em.line(f"const double angle = {sign}{TWO_PI} * (double)((k * t) % {length}) / {length};")
        em.line("const double c = cos(angle), s = sin(angle);")
        em.line("re += xr * c - xi * s; im += xr * s + xi * c;")


@register_op("DFT", dtypes=cdtypes.FLOATS, const_inputs=(1, 2))
def emit_dft(k: Kernel) -> None:
    x, y = k.input(0), k.outputs[0]
    inverse, onesided = int(k.attr("inverse", 0)), int(k.attr("onesided", 0))
    axis_in = _scalar(k, k.input(2), "axis")
    axis = (axis_in if axis_in is not None else int(k.attr("axis", -2 if k.node.graph and
                                                         k.node.graph.opset >= 20 else 1)))
    axis %= x.rank
    if axis == x.rank - 1:
        k.unsupported("DFT along the last axis (it holds the real/imaginary parts)")
    n, channels = x.shape[axis], x.shape[-1]
    length = _scalar(k, k.input(1), "dft_length") or (2 * (n - 1) if inverse and onesided else n)
    outer = [d for i, d in enumerate(x.shape[:-1]) if i != axis]
    em, X, Y = k.em, k.arg(x), k.arg(y)
    x_strides = [s for i, s in enumerate(x.strides[:-1]) if i != axis]
    y_strides = [s for i, s in enumerate(y.strides[:-1]) if i != axis]
    step_x, step_y = x.strides[axis], y.strides[axis]

    def imag(sample: str) -> str:  # the imaginary part of sample `sample` (0 for real input)
        return f"{X}[base + {sample} * {step_x} + 1]" if channels == 2 else "0"

    with em.loops(outer + [y.shape[axis]], parallel=True, work=y.size * length) as idx:
        *pos, freq = idx
        em.line(f"const int64_t base = {index(pos, x_strides)};")
        em.line(f"const int64_t k = {freq};")
        if inverse and onesided:  # rebuild the conjugate-symmetric half, keep the real part
            em.line("double re = 0;")
            with em.block(f"for (int64_t t = 0; t < {length}; ++t)"):
                em.line(f"const int64_t f = t <= {length // 2} ? t : {length} - t;")
                em.line(f"const double sign = t <= {length // 2} ? 1 : -1;")
                em.line(f"if (f >= {n}) continue;")
                em.line(f"const double xr = {X}[base + f * {step_x}], xi = sign * {imag('f')};")
                em.line(f"const double angle = {TWO_PI} * (double)((k * t) % {length}) / "
                        f"{length};")
                em.line("re += xr * cos(angle) - xi * sin(angle);")
            em.line(f"{Y}[{index(pos, y_strides)} + k * {step_y}] = ({y.ctype})(re / {length});")
        else:
            load = f"double xr = {X}[base + t * {step_x}], xi = {imag('t')};"
            _emit_sum(k, "+" if inverse else "-", length, str(min(n, length)), load)
            scale = f" / {length}" if inverse else ""
            at = f"{index(pos, y_strides)} + k * {step_y}"
            em.line(f"{Y}[{at}] = ({y.ctype})(re{scale}); {Y}[{at} + 1] = ({y.ctype})(im{scale});")


@register_op("STFT", dtypes=cdtypes.FLOATS, const_inputs=(1, 3))
def emit_stft(k: Kernel) -> None:
    x, window, y = k.input(0), k.input(2), k.outputs[0]
    step = _scalar(k, k.input(1), "frame_step")
    frame = _scalar(k, k.input(3), "frame_length") or (window.size if window is not None
                                                       else x.shape[1])
    batch, frames, bins = y.shape[0], y.shape[1], y.shape[2]
    expected = frame // 2 + 1 if int(k.attr("onesided", 1)) else frame
    if bins != expected:  # onnx's shape inference ignores the onesided default
        k.unsupported(f"STFT output has {bins} bins where onesided={k.attr('onesided', 1)} "
                      f"gives {expected} (set onesided explicitly)")
    channels = x.shape[-1]
    em, X, Y = k.em, k.arg(x), k.arg(y)
    imag = "xi = 0" if channels == 1 else f"xi = {X}[base + t * {channels} + 1]"
    weight = f"{k.arg(window)}[t]" if window is not None else ""
    with em.loops([batch, frames, bins], parallel=True, work=y.size * frame) as (b, f, kk):
        em.line(f"const int64_t base = {index([b, f], [x.shape[1] * channels, step * channels])};")
        em.line(f"const int64_t k = {kk};")
        load = f"double xr = {X}[base + t * {channels}], {imag};"
        _emit_sum(k, "-", frame, str(frame), load, weight)
        at = index([b, f, kk], [frames * bins * 2, bins * 2, 2])
        em.line(f"{Y}[{at}] = ({y.ctype})re; {Y}[{at} + 1] = ({y.ctype})im;")
