"""Fold constant per-channel (or scalar) Mul / Add next to Conv, ConvTranspose or Gemm into it.

After the op (Y = W * X + B, channel axis 1 of Y):
    Mul(Y, a) -> W' = a * W, B' = a * B          Add(Y, b) -> B' = B + b
(see graphopt_passes._fuse_linear for the algebra; a and b must be per-output-channel or
scalar, so the fused op has the same output shape).

Before the op, only a Mul, since an Add before a padded Conv would also shift the padding zeros:
    Conv(Mul(X, s), W) -> Conv(X, W')   W'[o, j] = W[o, j] * s[group(o) * C/group + j]
    Gemm(Mul(A, s), B) -> Gemm(A, B) {alpha = alpha * s}     (scalar s only)
Scaling X channel-wise and convolving equals convolving with the weights of each input channel
scaled, and zero padding stays zero.
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.graph import Value
from graphopt.rewrite import Const, Match, Op, Opt, Rewriter, Rule, Var, apply_rules
from graphopt_passes._fuse_linear import (CONV_LIKE, LINEAR_OPS, check_foldable, fold_affine,
                                          per_channel)

PASS_NAME = "fuse-scale-into-conv"

_PRODUCER = Op(CONV_LIKE, Var("x"), Var("w"), Opt(Var("b")), name="producer")


# --- after: Mul / Add on the output -----------------------------------------------------------
def _output_vector(m: Match) -> np.ndarray | str:
    producer = m.node("producer")
    reason = check_foldable(producer)
    if reason:
        return reason
    kind = LINEAR_OPS[producer.op_type]
    channels = kind.out_channels(producer, m.const("w"))
    shape = m.root.outputs[0].shape
    return per_channel(m.const("c"), None if shape is None else len(shape), kind.channel_axis,
                       channels)


def _reason(vector_or_reason: np.ndarray | str) -> str | None:
    return vector_or_reason if isinstance(vector_or_reason, str) else None


def _check_after(m: Match) -> str | None:
    return _reason(_output_vector(m))


def _replace_mul_after(rw: Rewriter, m: Match) -> Value:
    return fold_affine(rw, m.node("producer"), _output_vector(m), None)


def _replace_add_after(rw: Rewriter, m: Match) -> Value:
    shift = _output_vector(m)
    return fold_affine(rw, m.node("producer"), np.ones_like(shift), shift)


MUL_AFTER = Rule("mul-after-conv", Op("Mul", _PRODUCER, Const("c")), _replace_mul_after,
                 check=_check_after)
ADD_AFTER = Rule("add-after-conv", Op("Add", _PRODUCER, Const("c")), _replace_add_after,
                 check=_check_after)


# --- before: Mul on the input -----------------------------------------------------------------
_SCALED_INPUT = Op("Mul", Var("x"), Const("c"), name="mul")


def _input_vector(m: Match) -> np.ndarray | str:
    conv = m.node("conv")
    reason = check_foldable(conv)
    if reason:
        return reason
    w = m.const("w")
    channels = w.shape[1] * int(conv.attr("group", 1))
    shape = m["x"].shape
    return per_channel(m.const("c"), None if shape is None else len(shape), 1, channels)


def _check_mul_before_conv(m: Match) -> str | None:
    return _reason(_input_vector(m))


def _replace_mul_before_conv(rw: Rewriter, m: Match) -> Value:
    conv, w = m.node("conv"), m.const("w")
    group = int(conv.attr("group", 1))
    out_per_group, in_per_group = w.shape[0] // group, w.shape[1]
    per_group = _input_vector(m).reshape(group, in_per_group)
    factors = np.repeat(per_group, out_per_group, axis=0)  # [M, C/group]: row o -> its group
    new_w = (w.astype(np.float64) * factors.reshape(factors.shape + (1,) * (w.ndim - 2)))
    inputs = [m["x"], rw.constant(new_w.astype(w.dtype), f"{m['w'].name}_fused")]
    if m["b"] is not None:
        inputs.append(m["b"])
    return rw.make_node("Conv", inputs, dict(conv.attrs)).outputs[0]


def _check_mul_before_gemm(m: Match) -> str | None:
    c = m.const("c")
    if c.size != 1 or c.dtype.kind != "f":
        return f"the Mul constant has shape {list(c.shape)}; only a float scalar folds into alpha"
    if m["x"].shape is None or c.ndim > len(m["x"].shape):
        return "the Mul constant would change the rank of A"
    return None


def _replace_mul_before_gemm(rw: Rewriter, m: Match) -> Value:
    gemm = m.node("conv")
    alpha = float(gemm.attr("alpha", 1.0)) * float(m.const("c").reshape(-1)[0])
    inputs = [m["x"], *gemm.inputs[1:]]
    return rw.make_node("Gemm", inputs, dict(gemm.attrs, alpha=alpha)).outputs[0]


MUL_BEFORE_CONV = Rule("mul-before-conv",
                       Op("Conv", _SCALED_INPUT, Var("w"), Opt(Var("b")), name="conv"),
                       _replace_mul_before_conv, check=_check_mul_before_conv)
MUL_BEFORE_GEMM = Rule("mul-before-gemm", Op("Gemm", _SCALED_INPUT, ..., name="conv"),
                       _replace_mul_before_gemm, check=_check_mul_before_gemm)

RULES = [MUL_AFTER, ADD_AFTER, MUL_BEFORE_CONV, MUL_BEFORE_GEMM]


@register_pass(PASS_NAME)
def fuse_scale_into_conv(graph: Graph) -> PassResult:
    """Fold constant per-channel Mul/Add after Conv/ConvTranspose/Gemm, and a constant Mul before
    Conv (per input channel) or Gemm (scalar), into the op's weights, bias or alpha."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
