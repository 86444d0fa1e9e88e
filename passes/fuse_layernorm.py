"""Recognize decomposed layer normalization and replace it by LayerNormalization (opset >= 17).

The subgraph older exporters emit, over the trailing axes A of x:

    d    = x - ReduceMean(x, A)
    var  = ReduceMean(Pow(d, 2) or d * d, A)
    norm = d / Sqrt(var + eps)          (or d * Reciprocal(Sqrt(var + eps)))
    y    = norm * gamma + beta          (gamma and beta optional)

is LayerNormalization(x, gamma, beta, axis=first of A, epsilon=eps) by definition of the op.
ReduceMean's axes come from the attribute (opset < 18) or the second input (opset >= 18).
LayerNormalization accumulates in float32 (stash_type=1), so fp16 models get more, not less,
precision than the decomposition.
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.axes import normalize_axes
from graphopt.ir.graph import Node, Value
from graphopt.rewrite import Const, Match, OneOf, Op, Opt, Rewriter, Rule, Var, apply_rules

PASS_NAME = "fuse-layernorm"
MIN_OPSET = 17

_X = Var("x")
_MEAN = Op("ReduceMean", _X, Opt(Const("axes_mean")), name="mean")
_DIFF = Op("Sub", _X, _MEAN, name="diff")
_SQUARE = OneOf(Op("Pow", _DIFF, Const(value=2.0)), Op("Mul", _DIFF, _DIFF))
_VAR = Op("ReduceMean", _SQUARE, Opt(Const("axes_var")), name="var")
_STD = Op("Sqrt", Op("Add", _VAR, Const("eps")))
_NORM = OneOf(Op("Div", _DIFF, _STD), Op("Mul", _DIFF, Op("Reciprocal", _STD)))
_SCALED = Op("Mul", _NORM, Var("gamma"))
_SHIFTED = Op("Add", _SCALED, Var("beta"))


def _reduced_axes(node: Node, axes: np.ndarray | None, rank: int) -> list[int] | None:
    """Normalized axes a ReduceMean reduces (attribute or input form); None if keepdims=0."""
    if not node.attr("keepdims", 1):
        return None
    if axes is None:
        axes = node.attr("axes")
    if axes is None or len(np.reshape(axes, -1)) == 0:
        return [] if node.attr("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(normalize_axes(np.reshape(axes, -1), rank))


def _axis(m: Match) -> int | str:
    """The LayerNormalization axis, or a reason the reductions do not fit it."""
    x = m["x"]
    if x.shape is None:
        return "the rank of x is unknown"
    rank = len(x.shape)
    first = _reduced_axes(m.node("mean"), m.const("axes_mean"), rank)
    second = _reduced_axes(m.node("var"), m.const("axes_var"), rank)
    if first is None or second is None:
        return "a ReduceMean has keepdims=0"
    if not first:
        return "a ReduceMean reduces no axes (noop_with_empty_axes=1)"
    if first != second:
        return f"the two ReduceMeans reduce different axes ({first} vs {second})"
    if first != list(range(rank - len(first), rank)):
        return f"reduced axes {first} are not the trailing axes of a rank-{rank} input"
    return rank - len(first)


def _param(m: Match, name: str, normalized: tuple) -> np.ndarray | str | None:
    """gamma/beta as an array of the normalized shape when it must be rebuilt; None when the
    captured value can be used as is (or is absent); a string when it does not fit."""
    value = m.get(name)
    if value is None:
        return None
    shape, rank = value.shape, len(m["x"].shape)
    if shape is None:
        return f"{name} has an unknown shape"
    extra = len(shape) - len(normalized)
    if len(shape) > rank or any(d != 1 for d in shape[:max(extra, 0)]):
        return f"{name} of shape {list(shape)} broadcasts over more than the normalized axes"
    if tuple(shape) == normalized:
        return None
    if value.const is None:
        return (f"{name} of shape {list(shape)} needs reshaping to {list(normalized)} but is "
                "not a constant")
    core = value.const.reshape(shape[max(extra, 0):])
    try:
        return np.broadcast_to(core, normalized).copy()
    except ValueError:
        return f"{name} of shape {list(shape)} does not broadcast to {list(normalized)}"


def _check(m: Match) -> str | None:
    if m.graph.opset < MIN_OPSET:
        return f"opset {m.graph.opset} < {MIN_OPSET} (LayerNormalization needs opset 17)"
    x = m["x"]
    if x.dtype is None or not x.dtype.is_float:
        return f"x has dtype {x.dtype}, not floating point"
    axis = _axis(m)
    if isinstance(axis, str):
        return axis
    if m.const("eps").size != 1:
        return f"epsilon has shape {list(m.const('eps').shape)}, not a scalar"
    normalized = tuple(x.shape[axis:])
    if not all(isinstance(d, int) for d in normalized):
        return f"the normalized shape {list(normalized)} is not static"
    for name in ("gamma", "beta"):
        param = _param(m, name, normalized)
        if isinstance(param, str):
            return param
    return None


def _replace(rw: Rewriter, m: Match) -> Value:
    x = m["x"]
    axis = _axis(m)
    normalized = tuple(x.shape[axis:])
    inputs = []
    for name in ("gamma", "beta"):
        reshaped = _param(m, name, normalized)
        inputs.append(rw.constant(reshaped, name) if reshaped is not None else m.get(name))
    if inputs[0] is None:
        inputs[0] = rw.constant(np.ones(normalized, dtype=x.dtype.numpy), "ln_scale")
    if inputs[1] is None:
        inputs.pop()
    attrs = {"axis": axis, "epsilon": float(m.const("eps").reshape(-1)[0])}
    return rw.make_node("LayerNormalization", [x, *inputs], attrs).outputs[0]


RULES = [
    Rule("layernorm", _SHIFTED, _replace, check=_check),
    Rule("layernorm-no-bias", _SCALED, _replace, check=_check),
    Rule("layernorm-no-affine", _NORM, _replace, check=_check),
]


@register_pass(PASS_NAME)
def fuse_layernorm(graph: Graph) -> PassResult:
    """Replace ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div(/Mul gamma/Add beta) subgraphs by
    LayerNormalization (opset >= 17)."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
