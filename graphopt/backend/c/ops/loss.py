"""Losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (inference of the loss value).

X is [N, C, d1..dk] viewed as [N, C, D], the target [N, d1..dk] as [N, D]. Per position:
    w = weight[t] (1 without weights), loss = -w * P[n, t, d], both 0 when t == ignore_index
where P is X itself (NLL) or log_softmax(X) along C (SCE, which also outputs P as log_prob).
reduction "none" returns the per-position losses, "sum" their sum, "mean" sum(loss) / sum(w)
(the weighted mean of the spec; the plain mean without weights). Sums accumulate in double.
A target outside [0, C) that is not ignore_index stops the run with an error.
"""
from __future__ import annotations

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op
from graphopt.ir.types import DType


@register_op("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", dtypes=cdtypes.FLOATS)
def emit_loss(k: Kernel) -> None:
    x, target, weight, y = k.input(0), k.input(1), k.input(2), k.outputs[0]
    if x.rank < 2:
        k.unsupported(f"{k.node.op_type} of a rank-{x.rank} input (needs [N, C, ...])")
    if target.dtype not in (DType.INT32, DType.INT64):
        k.unsupported(f"{k.node.op_type} target of type {target.dtype.name}")
    reduction = k.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        k.unsupported(f"{k.node.op_type} reduction '{reduction}'")
    batch, classes, inner = x.shape[0], x.shape[1], int(np.prod(x.shape[2:]))
    em, T = k.em, x.ctype
    source = k.arg(x)
    if k.node.op_type == "SoftmaxCrossEntropyLoss":
        source = _emit_log_softmax(k, x, batch, classes, inner)
    ignore = k.attr("ignore_index")
    em.line("double loss_sum = 0, weight_sum = 0;")
    with em.loops([batch, inner]) as (n, d):  # serial: a bad target returns from the loop
        em.line(f"const int64_t t = (int64_t){k.arg(target)}[{index([n, d], [inner, 1])}];")
        skip = f"t == {int(ignore)}" if ignore is not None else "0"
        em.line(f"const int ignored = {skip};")
        em.line(f"if (!ignored && (t < 0 || t >= {classes})) return 1;")
        w = f"{k.arg(weight)}[t]" if weight is not None else "1"
        em.line(f"const double w = ignored ? 0 : (double){w};")
        em.line(f"const double loss = ignored ? 0 : -w * {source}"
                f"[{index([n, 't', d], [classes * inner, inner, 1])}];")
        if reduction == "none":
            em.line(f"{k.arg(y)}[{index([n, d], [inner, 1])}] = ({T})loss;")
        else:
            em.line("loss_sum += loss; weight_sum += w;")
    if reduction == "sum":
        em.line(f"{k.arg(y)}[0] = ({T})loss_sum;")
    elif reduction == "mean":
        em.line(f"{k.arg(y)}[0] = ({T})(loss_sum / weight_sum);")
    em.line("(void)loss_sum; (void)weight_sum;")


def _emit_log_softmax(k: Kernel, x: Operand, batch: int, classes: int, inner: int) -> str:
    """P = log_softmax(X) along C into the log_prob output (or scratch); returns P's name."""
    log_prob = k.outputs[1] if len(k.outputs) > 1 and k.outputs[1].used else None
    em, X, T, f = k.em, k.arg(x), x.ctype, cdtypes.math_suffix(x.dtype)
    if log_prob is not None:
        name = k.arg(log_prob)
    else:
        name = "P"
        em.line(f"{T}* P = ({T}*){k.scratch(x.size * x.dtype.itemsize)};")
    with em.loops([batch, inner], parallel=True, work=x.size) as (n, d):
        base = index([n, d], [classes * inner, 1])
        em.line(f"{T} top = {X}[{base}];")
        em.line(f"for (int64_t c = 1; c < {classes}; ++c) "
                f"if ({X}[{base} + c * {inner}] > top) top = {X}[{base} + c * {inner}];")
        em.line(f"{T} sum = 0;")
        em.line(f"for (int64_t c = 0; c < {classes}; ++c) "
                f"sum += exp{f}({X}[{base} + c * {inner}] - top);")
        em.line(f"const {T} log_sum = log{f}(sum);")
        em.line(f"for (int64_t c = 0; c < {classes}; ++c) "
                f"{name}[{base} + c * {inner}] = ({X}[{base} + c * {inner}] - top) - log_sum;")
    return name
