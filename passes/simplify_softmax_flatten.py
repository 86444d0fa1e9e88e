"""Undo the version converter's Softmax upgrade: Flatten -> Softmax -> Reshape becomes one Softmax.

Before opset 13, Softmax(x, axis=a) normalized over all dims from a on, as if x were flattened
to 2-D; onnx's version converter keeps that meaning at opset 13 by writing

    Reshape(Softmax(Flatten(x, axis=a), axis=-1), Shape(x))

(LogSoftmax and Hardmax alike). When at most one of x's dims a..r-1 differs from 1, the
flattened row holds exactly the elements along that one dim k, in the same order, so

    Reshape(Softmax(Flatten(x, a), -1), shape of x)  ==  Softmax(x, axis=k)

(k = a when every dim from a on is 1). Dims equal to 1 must be static; dim k may be symbolic.
The Reshape target must be Shape(x) or a constant equal to x's static shape.
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir import ops
from graphopt.ir.axes import normalize_axis
from graphopt.ir.graph import Value
from graphopt.rewrite import Match, Op, Rewriter, Rule, Var, apply_rules

PASS_NAME = "simplify-softmax-flatten"

_PATTERN = Op("Reshape", Op(ops.SOFTMAX_LIKE, Op("Flatten", Var("x"), name="flatten"),
                            name="softmax"), Var("shape"), name="reshape")


def _normalized_axis(m: Match) -> int | str:
    """The axis of x the one-node form normalizes over, or why there is none."""
    shape = m["x"].shape
    if shape is None:
        return "the rank of the Flatten input is unknown"
    rank = len(shape)
    start = int(m.node("flatten").attr("axis", 1))
    start = normalize_axis(start, rank)
    if not 0 <= start < rank:
        return f"Flatten axis {start} leaves no dims to normalize over"
    others = [axis for axis in range(start, rank) if shape[axis] != 1]
    if len(others) > 1:
        return (f"dims {others} of the input shape {list(shape)} differ from 1; the softmax "
                "runs over several axes")
    return others[0] if others else start


def _check(m: Match) -> str | None:
    if m.graph.opset < 13:
        return f"opset {m.graph.opset} < 13: Softmax there already normalizes flattened dims"
    axis = int(m.node("softmax").attr("axis", -1))
    if axis not in (1, -1):
        return f"{m.node('softmax').op_type} axis is {axis}, not the flattened row"
    if m.node("reshape").attr("allowzero", 0):
        return "the Reshape has allowzero=1"
    if not _restores_input_shape(m["shape"], m["x"]):
        return "the Reshape does not restore the Flatten input's shape"
    found = _normalized_axis(m)
    return found if isinstance(found, str) else None


def _restores_input_shape(target: Value, x: Value) -> bool:
    producer = target.producer
    if producer is not None and producer.key == ("", "Shape"):
        whole = producer.attr("start", 0) == 0 and producer.attr("end") is None
        return whole and producer.input(0) is x
    if target.const is None or x.type is None or not x.type.is_static:
        return False
    return np.array_equal(target.const.reshape(-1), np.array(x.shape, dtype=np.int64))


def _replace(rw: Rewriter, m: Match) -> Value:
    softmax = m.node("softmax")
    return rw.make_node(softmax.op_type, [m["x"]], {"axis": _normalized_axis(m)}).outputs[0]


RULES = [Rule("softmax-of-flatten", _PATTERN, _replace, check=_check)]


@register_pass(PASS_NAME)
def simplify_softmax_flatten(graph: Graph) -> PassResult:
    """Reshape(Softmax(Flatten(x, a)), Shape(x)) -> Softmax(x, axis=k) when x's dims from a on
    are all 1 but dim k (also LogSoftmax, Hardmax)."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
