"""Fold a constant per-channel Mul/Add/Sub/Div after an inference BatchNormalization into it.

BatchNormalization computes Y = s * X + t per channel c, with s = gamma / sqrt(var + eps) and
t = beta - mean * s. An affine map of Y by per-channel (or scalar) constants is again of that
form, so it folds into gamma and beta while mean, var and eps stay:

    Mul(Y, a) -> gamma' = a * gamma, beta' = a * beta      Div(Y, a) -> the same with 1 / a
    Add(Y, b) -> beta' = beta + b                           Sub(Y, b) -> beta' = beta - b

(a*s*X + a*t = (a*gamma)/sqrt(var+eps) * (X - mean) + a*beta). Caffe2 exports write a scale
layer as exactly this Mul + Add after each BatchNormalization (DenseNet, Inception v2). Only the
constant may broadcast: it must be a scalar or lie along the channel axis, so the output shape
is the BatchNormalization's. The folded values are computed in float64 and stored in the
parameter dtype (fp32: rel 1e-4 / abs 1e-5 against onnxruntime).
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.graph import Value
from graphopt.rewrite import Const, Match, Op, Rewriter, Rule, Var, apply_rules
from graphopt_passes._fuse_linear import per_channel

PASS_NAME = "simplify-affine-into-bn"

_BN = Op("BatchNormalization", Var("x"), Const("gamma"), Const("beta"), Const("mean"),
         Const("var"), name="bn")


def _channel_vector(m: Match, step: tuple[str, str]) -> np.ndarray | str:
    """The constant of one matched step as a float64 vector over the channels, or why it is not
    per-channel."""
    node_name, const_name = step
    bn = m.node("bn")
    if bn.attr("training_mode", 0):
        return "BatchNormalization is in training mode (it updates running statistics)"
    gamma, const = m.const("gamma"), m.const(const_name)
    if gamma.dtype.kind != "f" or const.dtype != gamma.dtype:
        return f"the constant is {const.dtype}, the BatchNormalization {gamma.dtype}"
    shape = m.root.outputs[0].shape
    vector = per_channel(const, None if shape is None else len(shape), 1, gamma.size)
    divides = m.node(node_name).op_type == "Div"
    if isinstance(vector, np.ndarray) and divides and not np.all(vector):
        return "the divisor has zeros"
    return vector


# (node, constant) capture names of the affine ops, from the BatchNormalization out.
_STEPS = (("op1", "c1"), ("op2", "c2"))


def _steps(m: Match) -> list[tuple[str, str]]:
    return [step for step in _STEPS if step[0] in m.bindings.nodes]


def _check(m: Match) -> str | None:
    for step in _steps(m):
        vector = _channel_vector(m, step)
        if isinstance(vector, str):
            return vector
    return None


def _replace(rw: Rewriter, m: Match) -> Value:
    gamma, beta = (m.const(k).astype(np.float64).reshape(-1) for k in ("gamma", "beta"))
    for step in _steps(m):
        vector, op = _channel_vector(m, step), m.node(step[0]).op_type
        if op in ("Mul", "Div"):
            factor = vector if op == "Mul" else 1.0 / vector
            gamma, beta = gamma * factor, beta * factor
        else:
            beta = beta + vector if op == "Add" else beta - vector
    dtype = m.const("gamma").dtype
    bn = m.node("bn")
    inputs = [m["x"], rw.constant(gamma.astype(dtype), f"{bn.name or 'bn'}_scale_folded"),
              rw.constant(beta.astype(dtype), f"{bn.name or 'bn'}_bias_folded"),
              m["mean"], m["var"]]
    return rw.make_node("BatchNormalization", inputs, dict(bn.attrs)).outputs[0]


# Add and Mul commute (the matcher tries both orders); Sub and Div must have the
# BatchNormalization's output first.
_AFFINE = ("Mul", "Div", "Add", "Sub")
# Caffe2's scale layer, Mul then Add, in one rewrite (half the graph edits of two).
SCALE_LAYER = Rule("scale-layer-into-bn",
                   Op(("Add", "Sub"), Op(("Mul", "Div"), _BN, Const("c1"), name="op1"),
                      Const("c2"), name="op2"),
                   _replace, check=_check)
RULES = [SCALE_LAYER] + [
    Rule(f"{op.lower()}-into-bn", Op(op, _BN, Const("c1"), name="op1"), _replace, check=_check)
    for op in _AFFINE]


@register_pass(PASS_NAME)
def simplify_affine_into_bn(graph: Graph) -> PassResult:
    """Fold a constant per-channel Mul/Add/Sub/Div of an inference BatchNormalization's output
    into its scale and bias."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
