"""numpy kernels for elementwise ops, matching onnxruntime's integer and float semantics.

Differences from plain numpy that matter for exactness:
  * integer Div truncates toward zero (C++), numpy's // floors;
  * integer Mod with fmod=0 takes the divisor's sign (numpy's %), with fmod=1 the dividend's (C %);
  * integer division by zero is undefined in onnxruntime, so it is refused, not folded;
  * results keep the input dtype (numpy 2 promotion never widens same-typed operands);
  * Cast from a float to an integer refuses NaN/inf/out-of-range values, which C++ leaves undefined.
Transcendental ops (Exp, Erf, Tanh...) have no kernel here: the reference evaluator computes them
with numpy's libm, which can differ from onnxruntime's vectorized versions in the last ulp.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from graphopt.errors import UnsupportedError
from graphopt.evaluator.registry import Call, kernel
from graphopt.ir.types import DType

_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Identity": np.copy, "Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt,
    "Reciprocal": np.reciprocal, "Floor": np.floor, "Ceil": np.ceil, "Round": np.round,
    "Sign": np.sign, "Not": np.logical_not, "IsNaN": np.isnan, "BitwiseNot": np.invert,
}
_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal, "Less": np.less,
    "Greater": np.greater, "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
    "BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor,
}
# Variadic ops reduce their inputs left to right, as onnxruntime does.
_VARIADIC: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Sum": np.add, "Max": np.maximum, "Min": np.minimum,
}


def _register_table() -> None:
    for op, fn in _UNARY.items():
        kernel(op)(functools.partial(_unary, fn))
    for op, fn in _BINARY.items():
        kernel(op)(functools.partial(_binary, fn))
    for op, fn in _VARIADIC.items():
        kernel(op)(functools.partial(_variadic, fn))


def _unary(fn: Callable[[np.ndarray], np.ndarray], call: Call) -> np.ndarray:
    return fn(call.inputs[0])


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], call: Call) -> np.ndarray:
    a, b = call.inputs[0], call.inputs[1]
    return fn(a, b)


def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], call: Call) -> np.ndarray:
    arrays = [a for a in call.inputs if a is not None]
    return functools.reduce(fn, arrays[1:], arrays[0].copy())


def _is_int(array: np.ndarray) -> bool:
    return array.dtype.kind in "iu"


def _nonzero_divisor(call: Call, b: np.ndarray) -> None:
    if np.any(b == 0):
        raise UnsupportedError(f"{call.describe()} divides an integer by zero, which is undefined")


@kernel("Div")
def div(call: Call) -> np.ndarray:
    a, b = call.inputs[0], call.inputs[1]
    if not _is_int(a):
        return np.divide(a, b)
    _nonzero_divisor(call, b)
    quotient = np.floor_divide(a, b)
    # floor -> truncation: step back toward zero where the signs differ and it was inexact
    inexact = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return (quotient + inexact.astype(a.dtype)).astype(a.dtype)


@kernel("Mod")
def mod(call: Call) -> np.ndarray:
    a, b = call.inputs[0], call.inputs[1]
    if _is_int(a):
        _nonzero_divisor(call, b)
    return np.fmod(a, b) if call.attr("fmod", 0) else np.mod(a, b)


@kernel("Relu")
def relu(call: Call) -> np.ndarray:
    x = call.inputs[0]
    return np.maximum(x, np.zeros((), x.dtype))


@kernel("Where")
def where(call: Call) -> np.ndarray:
    cond, x, y = call.inputs[0], call.inputs[1], call.inputs[2]
    return np.where(cond, x, y)


@kernel("IsInf")
def is_inf(call: Call) -> np.ndarray:
    x = call.inputs[0]
    positive = np.isposinf(x) if call.attr("detect_positive", 1) else np.zeros(x.shape, bool)
    negative = np.isneginf(x) if call.attr("detect_negative", 1) else np.zeros(x.shape, bool)
    return positive | negative


# Element types numpy converts exactly as onnxruntime's static_cast does.
_PLAIN_CAST_TYPES = frozenset({DType.FLOAT, DType.DOUBLE, DType.FLOAT16, DType.BOOL, DType.INT8,
                               DType.INT16, DType.INT32, DType.INT64, DType.UINT8, DType.UINT16,
                               DType.UINT32, DType.UINT64})


def _cast(call: Call, x: np.ndarray, to: DType) -> np.ndarray:
    if x.dtype == object or to not in _PLAIN_CAST_TYPES or x.dtype.kind not in "biuf":
        return NotImplemented  # strings, float8, int4, bfloat16: left to the reference evaluator
    target = to.numpy
    if x.dtype.kind == "f" and target.kind in "iu":
        info = np.iinfo(target)
        finite = np.isfinite(x)
        if not finite.all() or np.any(np.trunc(x) < info.min) or np.any(np.trunc(x) > info.max):
            raise UnsupportedError(f"{call.describe()} casts NaN, inf or out-of-range floats to "
                                   f"{to.name}, which C++ leaves undefined")
    return x.astype(target)


@kernel("Cast")
def cast(call: Call) -> np.ndarray:
    return _cast(call, call.inputs[0], DType(call.attr("to")))


@kernel("CastLike")
def cast_like(call: Call) -> np.ndarray:
    like = call.inputs[1]
    if like.dtype == object:
        return NotImplemented
    return _cast(call, call.inputs[0], DType.from_numpy(like.dtype))


_register_table()
