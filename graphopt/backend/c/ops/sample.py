"""GridSample: sample X at the normalized coordinates of a grid (any number of spatial dims).

For output position o, grid[n, o] holds one coordinate per spatial dim, innermost dim first
(x, y...), in [-1, 1]. Each becomes a pixel coordinate u = (g + 1) / 2 * (size - 1) with
align_corners, else ((g + 1) * size - 1) / 2 (rounded half to even for mode=nearest). A
coordinate beyond the borders ([0, size - 1] with align_corners, else [-0.5, size - 0.5]) is
clamped (padding_mode=border) or reflected (reflection). Then nearest takes one tap, linear 2
and cubic 4 per dim (Keys, a = -0.75), weighted by distance; a tap outside X reads 0 (zeros),
the edge (border) or its mirror image (reflection). As in onnx's reference implementation.
"""
from __future__ import annotations

import contextlib

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.registry import register_op

_HELPERS = """\
static double {reflect}(double x, double lo, double hi) {{
    const double range = hi - lo;
    if (x < lo) {{
        const double dx = lo - x; const int64_t n = (int64_t)(dx / range);
        const double r = dx - n * range;
        return n % 2 == 0 ? lo + r : hi - r;
    }}
    if (x > hi) {{
        const double dx = x - hi; const int64_t n = (int64_t)(dx / range);
        const double r = dx - n * range;
        return n % 2 == 0 ? hi - r : lo + r;
    }}
    return x;
}}

/* The element index of tap i along a dim of `size`, or -1 when it reads zero padding. */
static int64_t {tap}(int64_t i, int64_t size, int mode, double lo, double hi) {{
    if (mode == 1) return i < 0 ? 0 : (i >= size ? size - 1 : i);
    if (mode == 2) return (int64_t){reflect}((double)i, lo, hi);
    return i < 0 || i >= size ? -1 : i;
}}
"""
_PADDING = {"zeros": 0, "border": 1, "reflection": 2}
_TAPS = {"nearest": 1, "linear": 2, "cubic": 4}


@register_op("GridSample", dtypes=cdtypes.FLOATS)
def emit_grid_sample(k: Kernel) -> None:
    x, grid, y = k.input(0), k.input(1), k.outputs[0]
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(k.attr("mode", "linear"),
                                                            k.attr("mode", "linear"))
    padding = k.attr("padding_mode", "zeros")
    if mode not in _TAPS or padding not in _PADDING:
        k.unsupported(f"GridSample mode '{mode}' with padding_mode '{padding}'")
    if (mode, padding) == ("cubic", "border"):  # the references disagree: refuse, not guess
        k.unsupported("GridSample cubic with padding_mode=border: onnx's reference clamps the "
                      "coordinate before taking the 4 taps, onnxruntime (like PyTorch) only "
                      "clamps the taps")
    align = int(k.attr("align_corners", 0))
    sizes = list(x.shape[2:])
    rank = len(sizes)
    reflect, tap = k.unique("reflect"), k.unique("tap")
    k.add_helper(_HELPERS.format(reflect=reflect, tap=tap))
    em, X, G, Y = k.em, k.arg(x), k.arg(grid), k.arg(y)
    taps = _TAPS[mode]
    out_spatial = list(y.shape[2:])
    with em.loops([y.shape[0], *out_spatial], parallel=True, work=y.size * taps ** rank) as idx:
        n, out = idx[0], idx[1:]
        g_base = index([n, *out], grid.strides[:-1])
        for d in range(rank):  # grid's last dim lists the spatial dims innermost first
            _emit_coordinate(k, d, f"{G}[{g_base} + {rank - 1 - d}]", sizes[d], align, mode,
                             padding, reflect, tap)
        with em.loops([x.shape[1]], prefix="c") as (c,), contextlib.ExitStack() as nest:
            em.line("double acc = 0;")
            offsets, weights = [], []
            for d in range(rank):
                j = em.temp("j")
                nest.enter_context(em.block(f"for (int64_t {j} = 0; {j} < {taps}; ++{j})"))
                nest.enter_context(em.block(f"if (at{d}[{j}] >= 0)"))
                offsets.append(f"at{d}[{j}]")
                weights.append(f"wt{d}[{j}]")
            em.line(f"acc += {' * '.join(weights)} * "
                    f"{X}[{index([n, c, *offsets], x.strides)}];")
            nest.close()
            em.line(f"{Y}[{index([n, c, *out], y.strides)}] = ({y.ctype})acc;")


def _emit_coordinate(k: Kernel, d: int, value: str, size: int, align: int, mode: str,
                     padding: str, reflect: str, tap: str) -> None:
    """Declare at<d>[T] (tap indices, -1 for zero padding) and wt<d>[T] (weights) for dim d."""
    em = k.em
    lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    scale = f"((double){value} + 1) / 2 * {size - 1}" if align else \
        f"(((double){value} + 1) * {size} - 1) / 2"
    u = f"u{d}"
    em.line(f"double {u} = (float)({scale});")  # the reference keeps coordinates in float32
    if mode == "nearest":
        em.line(f"{u} = nearbyint({u});")
    if padding != "zeros":
        fix = f"({u} < 0 ? 0 : ({u} > {size - 1} ? {size - 1} : {u}))" if padding == "border" \
            else f"{reflect}({u}, {lo!r}, {hi!r})"
        em.line(f"if ({u} < {lo!r} || {u} > {hi!r}) {u} = {fix};")
    taps = _TAPS[mode]
    em.line(f"int64_t at{d}[{taps}]; double wt{d}[{taps}];")
    if mode == "nearest":
        em.line(f"at{d}[0] = (int64_t){u}; wt{d}[0] = 1;")
    else:
        em.line(f"const double f{d} = floor({u}), t{d} = {u} - f{d};")
        first = 0 if mode == "linear" else -1
        for j in range(taps):
            em.line(f"at{d}[{j}] = (int64_t)f{d} + {first + j};")
        if mode == "linear":
            em.line(f"wt{d}[0] = 1 - t{d}; wt{d}[1] = t{d};")
        else:
            a = -0.75
            for j, dist in enumerate((f"(t{d} + 1)", f"t{d}", f"(1 - t{d})", f"(2 - t{d})")):
                near = j in (1, 2)
                formula = (f"(({a + 2} * {dist} - {a + 3}) * {dist} * {dist} + 1)" if near else
                           f"((({a} * {dist} - {5 * a}) * {dist} + {8 * a}) * {dist} - {4 * a})")
                em.line(f"wt{d}[{j}] = {formula};")
    mode_code = _PADDING[padding]
    em.line(f"for (int64_t q = 0; q < {taps}; ++q) "
            f"at{d}[q] = {tap}(at{d}[q], {size}, {mode_code}, {lo!r}, {hi!r});")
