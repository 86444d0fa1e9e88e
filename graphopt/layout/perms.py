"""Permutation algebra for Transpose sinking, in ONNX's convention.

`Transpose(x, perm)` gives y with y.shape[i] = x.shape[perm[i]] (numpy's `np.transpose`). A value
"carries perm p" when it equals Transpose(v', p) for the value v' we would rather compute.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from graphopt.ir.graph import Node, Value
from graphopt.ir.types import TensorType

Perm = tuple[int, ...]


def invert(perm: Sequence[int]) -> Perm:
    """q with Transpose(Transpose(x, perm), q) == x."""
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return tuple(inverse)


def compose(inner: Sequence[int], outer: Sequence[int]) -> Perm:
    """The one perm equal to Transpose(Transpose(x, inner), outer)."""
    return tuple(inner[p] for p in outer)


def is_identity(perm: Sequence[int]) -> bool:
    return all(i == p for i, p in enumerate(perm))


def rank_of(value: Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def transpose_perm(node: Node) -> Perm | None:
    """A Transpose node's perm (the default reverses the dims), None when the rank is unknown."""
    perm = node.attr("perm")
    if perm is not None:
        return tuple(int(p) for p in perm)
    rank = rank_of(node.input(0))
    return None if rank is None else tuple(range(rank))[::-1]


def permute_type(type_: TensorType | None, perm: Sequence[int]) -> TensorType | None:
    """The type of Transpose(value, perm)."""
    if type_ is None or type_.shape is None or len(type_.shape) != len(perm):
        return type_
    return type_.with_shape(tuple(type_.shape[p] for p in perm))


def untranspose_const(array: np.ndarray, perm: Sequence[int]) -> np.ndarray:
    """The constant c' with Transpose(c', perm) == c once c is broadcast to len(perm) dims
    (numpy aligns lower ranks to the right, as ONNX does)."""
    rank = len(perm)
    if array.size == 1 and array.ndim <= rank:
        return array  # a scalar broadcasts the same in every layout
    full = array.reshape((1,) * (rank - array.ndim) + array.shape)
    return np.ascontiguousarray(np.transpose(full, invert(perm)))


def dropped_axes_perm(perm: Sequence[int], dropped: Sequence[int]) -> Perm:
    """The perm the output carries when the axes `dropped` (in the transposed frame) are removed,
    as by a reduction with keepdims=0 or a Squeeze, applied in the untransposed frame instead."""
    gone = {perm[a] for a in dropped}
    kept_x = [j for j in range(len(perm)) if j not in gone]
    new_index = {j: i for i, j in enumerate(kept_x)}
    return tuple(new_index[perm[i]] for i in range(len(perm)) if i not in set(dropped))


def inserted_axes_perm(perm: Sequence[int], axes: Sequence[int]) -> Perm:
    """The perm an Unsqueeze output carries when Unsqueeze(x, axes) replaces
    Unsqueeze(Transpose(x, perm), axes): the new unit dims stay where they are."""
    out_rank = len(perm) + len(axes)
    inserted = set(axes)
    positions = [i for i in range(out_rank) if i not in inserted]
    result = list(range(out_rank))
    for j, pos in enumerate(positions):
        result[pos] = positions[perm[j]]
    return tuple(result)


def nbytes(value: Value | None) -> int:
    """Bytes a Transpose of `value` moves; symbolic/unknown dims count as 1 (a lower bound)."""
    if value is None or value.type is None or value.type.shape is None:
        return 0
    count = 1
    for dim in value.type.shape:
        count *= dim if isinstance(dim, int) else 1
    return count * value.type.dtype.itemsize
