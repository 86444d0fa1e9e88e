"""Tensor types of IR values: element type, shape with static or symbolic dims, layout tag."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Sequence, Union

import numpy as np
import onnx

# A dimension is a known size (int), a symbol shared between values (str) or unknown (None).
Dim = Union[int, str, None]


class DType(enum.IntEnum):
    """Element types, numbered exactly as onnx.TensorProto.DataType so conversion is free."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype that holds this element type (ml_dtypes types for the exotic ones)."""
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(self)))

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in _FLOAT_TYPES

    @property
    def short(self) -> str:
        return _SHORT_NAMES.get(self, self.name.lower())

    @staticmethod
    def from_numpy(dtype: np.dtype | type) -> "DType":
        # Asked for every constant a pass makes or checks: the onnx helper costs microseconds.
        found = _FROM_NUMPY.get(dtype) if isinstance(dtype, (np.dtype, type)) else None
        if found is None:
            found = DType(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
            if isinstance(dtype, (np.dtype, type)):
                _FROM_NUMPY[dtype] = found
        return found


# DType.from_numpy's answers by numpy dtype (or scalar type): a handful of entries per process.
_FROM_NUMPY: dict[np.dtype | type, DType] = {}


_FLOAT_TYPES = frozenset({DType.FLOAT, DType.FLOAT16, DType.DOUBLE, DType.BFLOAT16})
_SHORT_NAMES = {
    DType.FLOAT: "f32", DType.FLOAT16: "f16", DType.DOUBLE: "f64", DType.BFLOAT16: "bf16",
    DType.INT8: "i8", DType.INT16: "i16", DType.INT32: "i32", DType.INT64: "i64",
    DType.UINT8: "u8", DType.UINT16: "u16", DType.UINT32: "u32", DType.UINT64: "u64",
    DType.BOOL: "bool", DType.STRING: "str",
}


@dataclass(frozen=True)
class TensorType:
    """dtype + shape (None when even the rank is unknown) + an optional memory layout tag.

    The layout tag (e.g. "NCHW", "NHWC", "NCHW16c") is set by layout selection; None means the
    plain row-major order ONNX defines.
    """

    dtype: DType
    shape: tuple[Dim, ...] | None
    layout: str | None = None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    # Cached on first use (a frozen dataclass keeps them out of __eq__/__hash__, which compare
    # the fields only): passes ask these of the same few types thousands of times per model.
    @cached_property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @cached_property
    def num_elements(self) -> int | None:
        """Element count when the shape is fully static, else None."""
        if not self.is_static:
            return None
        return math.prod(self.shape)  # Python ints: exact, and no numpy call per value

    @property
    def nbytes(self) -> int | None:
        n = self.num_elements
        return None if n is None else n * self.dtype.itemsize

    def with_shape(self, shape: tuple[Dim, ...] | None) -> "TensorType":
        return replace(self, shape=shape)

    def __str__(self) -> str:
        if self.shape is None:
            dims = "?"
        else:
            dims = "x".join("?" if d is None else str(d) for d in self.shape) or "scalar"
        layout = f"@{self.layout}" if self.layout else ""
        return f"{self.dtype.short}[{dims}]{layout}"


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of a value: real = (q - zero_point) * scale, per tensor or per `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None


def _merge_dims(a: Dim, b: Dim) -> Dim | bool:
    """The broadcast of two dims, or False when they provably do not broadcast."""
    if isinstance(a, int) and isinstance(b, int):
        if a == b or b == 1:
            return a
        return b if a == 1 else False
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return a if a == b else None


def broadcast_dims(a: Sequence[Dim], b: Sequence[Dim]) -> tuple[Dim, ...] | None:
    """numpy broadcasting of two shapes with symbolic dims; None when they provably do not
    broadcast. A symbol against a number n > 1 gives n (the only size a runnable model allows)."""
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    merged = [_merge_dims(x, y) for x, y in zip(a, b)]
    return None if any(m is False for m in merged) else tuple(merged)
