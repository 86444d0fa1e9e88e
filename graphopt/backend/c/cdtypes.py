"""Element types in C: the type name of each supported DType and typed literals.

Booleans are stored as one byte (uint8_t holding 0/1), matching numpy's bool layout, so arrays
cross the Python/C boundary without conversion.
"""
from __future__ import annotations

import math

import numpy as np

from graphopt.ir.types import DType

C_TYPES: dict[DType, str] = {
    DType.FLOAT: "float", DType.DOUBLE: "double",
    DType.INT8: "int8_t", DType.INT16: "int16_t", DType.INT32: "int32_t", DType.INT64: "int64_t",
    DType.UINT8: "uint8_t", DType.UINT16: "uint16_t", DType.UINT32: "uint32_t",
    DType.UINT64: "uint64_t", DType.BOOL: "uint8_t",
}
FLOATS = frozenset({DType.FLOAT, DType.DOUBLE})
SIGNED_INTS = frozenset({DType.INT8, DType.INT16, DType.INT32, DType.INT64})
UNSIGNED_INTS = frozenset({DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64})
INTS = SIGNED_INTS | UNSIGNED_INTS
NUMERIC = FLOATS | INTS
ALL = NUMERIC | {DType.BOOL}


def is_supported(dtype: DType) -> bool:
    return dtype in C_TYPES


def ctype(dtype: DType) -> str:
    return C_TYPES[dtype]


def math_suffix(dtype: DType) -> str:
    """Suffix of <math.h> functions for this type: expf for float, exp for double."""
    return "f" if dtype == DType.FLOAT else ""


def literal(value: float | int | bool, dtype: DType) -> str:
    """`value` as a C literal of `dtype` (INFINITY/NAN spelled by name)."""
    if dtype in FLOATS:
        value = float(value)
        if math.isnan(value):
            return "NAN" if dtype == DType.DOUBLE else "((float)NAN)"
        if math.isinf(value):
            text = "INFINITY" if value > 0 else "(-INFINITY)"
            return text if dtype == DType.FLOAT else f"((double){text})"
        # str() of a float32 is the shortest text that reads back to the same float32
        text = str(np.float32(value)) if dtype == DType.FLOAT else repr(value)
        if "e" not in text and "." not in text:
            text += ".0"
        text = text + "f" if dtype == DType.FLOAT else text
        return f"({text})" if text.startswith("-") else text
    if dtype == DType.BOOL:
        return "1" if value else "0"
    value = int(value)
    if dtype == DType.INT64:
        return f"INT64_C({value})" if value >= -(2 ** 63) + 1 else "INT64_MIN"
    if dtype == DType.UINT64:
        return f"UINT64_C({value})"
    if dtype in (DType.INT32, DType.UINT32):
        suffix = "u" if dtype == DType.UINT32 else ""
        return f"({ctype(dtype)}){value}{suffix}" if value >= -(2 ** 31) + 1 else "INT32_MIN"
    return f"({ctype(dtype)}){value}"


def lowest(dtype: DType, finite: bool = False) -> str:
    """The smallest value of the type (-INFINITY for floats unless `finite`): max's identity."""
    if dtype in FLOATS:
        return literal(-np.finfo(dtype.numpy).max if finite else -math.inf, dtype)
    if dtype == DType.BOOL:
        return "0"
    return literal(int(np.iinfo(dtype.numpy).min), dtype)


def highest(dtype: DType, finite: bool = False) -> str:
    """The largest value of the type (INFINITY for floats unless `finite`): min's identity."""
    if dtype in FLOATS:
        return literal(np.finfo(dtype.numpy).max if finite else math.inf, dtype)
    if dtype == DType.BOOL:
        return "1"
    return literal(int(np.iinfo(dtype.numpy).max), dtype)
