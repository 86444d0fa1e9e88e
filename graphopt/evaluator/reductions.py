"""numpy kernels for integer reductions (shape arithmetic such as ReduceProd(Shape(x))).

Integer sums and products are computed exactly in Python-width integers; a result that does not
fit the input dtype is refused, because onnxruntime does not wrap there the way numpy does (it
returns INT_MAX for an overflowing int32 ReduceSum). Float reductions go to the reference
evaluator: their summation order is onnxruntime's business and differs only in rounding.
"""
from __future__ import annotations

import numpy as np

from graphopt.errors import UnsupportedError
from graphopt.evaluator.registry import Call, kernel
from graphopt.ir.axes import normalize_axes

_REDUCERS = {"ReduceSum": np.sum, "ReduceProd": np.prod, "ReduceMax": np.max, "ReduceMin": np.min}


def _axes(call: Call, x: np.ndarray) -> tuple[int, ...] | None:
    """Axes to reduce, or None for "leave x as is" (empty axes with noop_with_empty_axes)."""
    axes = call.ints(1, "axes")
    if not axes:
        return None if call.attr("noop_with_empty_axes", 0) else tuple(range(x.ndim))
    return normalize_axes(axes, x.ndim)


@kernel(*_REDUCERS)
def reduce_integers(call: Call) -> np.ndarray:
    x = call.inputs[0]
    if x.dtype.kind not in "iu":
        return NotImplemented
    axes = _axes(call, x)
    if axes is None:
        return x.copy()
    if x.size == 0 and call.op_type in ("ReduceMax", "ReduceMin"):
        return NotImplemented  # the identity element is dtype-specific; let the reference decide
    keepdims = bool(call.attr("keepdims", 1))
    wide = _REDUCERS[call.op_type](x.astype(object), axis=axes, keepdims=keepdims)
    info = np.iinfo(x.dtype)
    flat = np.asarray(wide, dtype=object).reshape(-1)
    if any(v < info.min or v > info.max for v in flat):
        raise UnsupportedError(f"{call.describe()} overflows {x.dtype}; onnxruntime's result is "
                               "not the wrapped value")
    return np.asarray(wide).astype(x.dtype)
