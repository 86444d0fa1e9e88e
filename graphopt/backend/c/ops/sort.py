"""Selection: TopK.

Each slice along `axis` keeps a running list of its best k elements, ordered best first; a new
element is inserted after every element at least as good as itself, so among equal values the
smaller index comes first, as the spec requires. O(n * k) per slice: meant for the small k of
classification heads and beam search, where it beats a full sort.
"""
from __future__ import annotations

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.ops.softmax import axis_view
from graphopt.backend.c.registry import register_op


@register_op("TopK", dtypes=cdtypes.NUMERIC, const_inputs=(1,))
def emit_top_k(k: Kernel) -> None:
    x, k_in = k.input(0), k.input(1)
    values, indices = k.outputs
    if k_in.const is None:
        k.unsupported("TopK with k computed at run time")
    count = int(k_in.const.reshape(-1)[0])
    axis = int(k.attr("axis", -1)) % x.rank
    better = ">" if int(k.attr("largest", 1)) else "<"
    outer, n, inner = axis_view(x.shape, axis)
    em, X, T = k.em, k.arg(x), x.ctype
    best = f"(int64_t*){k.scratch(8 * max(count, 1))}"
    em.line(f"int64_t* top = {best};")
    with em.loops([outer, inner]) as (o, i):  # serial: one scratch list
        base = index([o, i], [n * inner, 1])
        em.line("int64_t size = 0;")
        with em.block(f"for (int64_t j = 0; j < {n}; ++j)"):
            em.line(f"const {T} v = {X}[{base} + j * {inner}];")
            em.line("int64_t at = size;")
            em.line(f"while (at > 0 && v {better} {X}[{base} + top[at - 1] * {inner}]) --at;")
            with em.block(f"if (at < {count})"):
                em.line(f"for (int64_t s = (size < {count} ? size : {count - 1}); s > at; --s) "
                        "top[s] = top[s - 1];")
                em.line("top[at] = j;")
                em.line(f"if (size < {count}) ++size;")
        out = index([o, i], [count * inner, 1])
        with em.block(f"for (int64_t r = 0; r < {count}; ++r)"):
            if values.used:
                em.line(f"{k.arg(values)}[{out} + r * {inner}] = {X}[{base} + top[r] * {inner}];")
            if indices.used:
                em.line(f"{k.arg(indices)}[{out} + r * {inner}] = top[r];")
