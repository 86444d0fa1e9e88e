"""MatMul followed by the Add of a constant bias becomes one Gemm.

    Add(MatMul(A, W), bias)  ->  Gemm(A, W, bias)        (alpha = beta = 1, no transposes)

Gemm computes A @ W + C with C broadcast to [M, N], which is exactly what MatMul + Add compute
when A is 2-D, W is a 2-D constant and the bias broadcasts to [M, N] without enlarging it.
Higher-rank MatMuls (batched, as in transformers) are left alone: Gemm is 2-D only.
"""
from __future__ import annotations

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.graph import Value
from graphopt.rewrite import Const, Match, Op, Rewriter, Rule, Var, apply_rules

PASS_NAME = "fuse-matmul-add"
GEMM_DTYPES = ("float32", "float64", "float16")

_PATTERN = Op("Add", Op("MatMul", Var("a"), Const("w"), name="matmul"), Const("bias"))


def _check(m: Match) -> str | None:
    a, w, bias = m["a"], m.const("w"), m.const("bias")
    if a.shape is None or len(a.shape) != 2:
        rank = "unknown" if a.shape is None else len(a.shape)
        return f"A has rank {rank}; Gemm needs a 2-D A"
    if w.ndim != 2:
        return f"W has rank {w.ndim}; Gemm needs a 2-D W"
    if str(w.dtype) not in GEMM_DTYPES:
        return f"dtype {w.dtype} is not one Gemm supports here ({', '.join(GEMM_DTYPES)})"
    if bias.dtype != w.dtype:
        return f"bias dtype {bias.dtype} differs from W dtype {w.dtype}"
    rows, cols = a.shape[0], w.shape[1]
    if bias.ndim > 2:
        return f"bias of shape {list(bias.shape)} has rank > 2"
    shape = (1,) * (2 - bias.ndim) + tuple(bias.shape)
    if shape[1] not in (1, cols):
        return f"bias of shape {list(bias.shape)} does not broadcast over the last dim ({cols})"
    if shape[0] != 1 and shape[0] != rows:
        return f"bias of shape {list(bias.shape)} does not broadcast to [{rows}, {cols}]"
    return None


def _replace(rw: Rewriter, m: Match) -> Value:
    return rw.make_node("Gemm", [m["a"], m["w"], m["bias"]]).outputs[0]


RULES = [Rule("matmul-add-to-gemm", _PATTERN, _replace, check=_check)]


@register_pass(PASS_NAME)
def fuse_matmul_add(graph: Graph) -> PassResult:
    """Add(MatMul(A, W), bias) -> Gemm(A, W, bias) for 2-D A, constant 2-D W and a bias that
    broadcasts over the last dim."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
