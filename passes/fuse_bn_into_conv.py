"""Fold inference BatchNormalization into the Conv, ConvTranspose or Gemm that feeds it.

BatchNormalization computes, per channel c,  Y_c = gamma_c * (X_c - mean_c) / sqrt(var_c + eps)
+ beta_c. With X = W * In + B from the producer and s = gamma / sqrt(var + eps):

    W' = W * s            (scaled along the producer's output-channel axis)
    B' = (B - mean) * s + beta     (B = 0 when the producer has no bias; Gemm: B = beta_gemm * C)

The fused node computes the same values up to float rounding (fp32: rel 1e-4 / abs 1e-5).
A BatchNormalization whose input is not such a producer stays as it is.
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.graph import Value
from graphopt.rewrite import Const, Match, Op, Opt, Rewriter, Rule, Var, apply_rules
from graphopt_passes._fuse_linear import CONV_LIKE, LINEAR_OPS, check_foldable, fold_affine

PASS_NAME = "fuse-bn-into-conv"

_PRODUCER = Op(CONV_LIKE, Var("x"), Var("w"), Opt(Var("b")), name="producer")
_PATTERN = Op("BatchNormalization", _PRODUCER, Const("gamma"), Const("beta"), Const("mean"),
              Const("var"), name="bn")


def _scale_and_shift(m: Match) -> tuple[np.ndarray, np.ndarray]:
    eps = float(m.node("bn").attr("epsilon", 1e-5))
    gamma, beta, mean, var = (m.const(k).astype(np.float64).reshape(-1)
                              for k in ("gamma", "beta", "mean", "var"))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _check(m: Match) -> str | None:
    bn, producer = m.node("bn"), m.node("producer")
    if bn.attr("training_mode", 0):
        return "BatchNormalization is in training mode (it updates running statistics)"
    reason = check_foldable(producer)
    if reason:
        return reason
    channels = LINEAR_OPS[producer.op_type].out_channels(producer, m.const("w"))
    sizes = {k: m.const(k).size for k in ("gamma", "beta", "mean", "var")}
    if any(size != channels for size in sizes.values()):
        return (f"BatchNormalization parameters have sizes {sizes}, the {producer.op_type} has "
                f"{channels} output channels")
    return None


def _replace(rw: Rewriter, m: Match) -> Value:
    scale, shift = _scale_and_shift(m)
    return fold_affine(rw, m.node("producer"), scale, shift)


RULES = [Rule("bn-into-conv", _PATTERN, _replace, check=_check)]


@register_pass(PASS_NAME)
def fuse_bn_into_conv(graph: Graph) -> PassResult:
    """Fold inference BatchNormalization into a preceding Conv/ConvTranspose/Gemm with constant
    weights: W' = W * gamma / sqrt(var + eps), B' = (B - mean) * gamma / sqrt(var + eps) + beta."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
