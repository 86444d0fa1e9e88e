"""Axis arguments: ONNX counts a negative axis from the end (-1 is the last of `rank` axes)."""
from __future__ import annotations

from typing import Iterable


def normalize_axis(axis: int, rank: int) -> int:
    """`axis` in [0, rank) for an ONNX axis in [-rank, rank) (range checks are the caller's:
    graphopt.ir.validate refuses out-of-range axes at import)."""
    return axis + rank if axis < 0 else axis


def normalize_axes(axes: Iterable[int], rank: int) -> tuple[int, ...]:
    return tuple(normalize_axis(int(a), rank) for a in axes)
