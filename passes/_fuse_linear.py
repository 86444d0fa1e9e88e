"""Shared algebra for folding a per-output-channel affine map into Conv, ConvTranspose or Gemm.

If a node computes Y = W * X + B (linear in X, channel c of Y has weight slice W_c and bias B_c),
then for per-channel constants a and b

    a * Y + b  =  (a * W) * X + (a * B + b)

so W_c' = a_c * W_c and B' = a * B + b. BatchNormalization (a = gamma / sqrt(var + eps),
b = beta - mean * a), a Mul by a constant (b = 0) and an Add of a constant (a = 1) are all this
fold. The three ops differ only in where the output channel sits in the weight tensor, which is
the one method each subclass overrides.
"""
from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Node, Value
from graphopt.rewrite import Rewriter

CONV_LIKE = ("Conv", "ConvTranspose", "Gemm")
_NUMPY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


class LinearOp:
    """Conv: weight [M, C/group, k...], output channel = weight axis 0, bias (input 2) [M]."""

    channel_axis = 1  # the output channel axis of Y

    def out_channels(self, node: Node, weight: np.ndarray) -> int:
        return int(weight.shape[0])

    def scale_weight(self, node: Node, weight: np.ndarray, scale: np.ndarray,
                     dtype: np.dtype) -> np.ndarray:
        """weight * scale per output channel, computed in the wider of the two dtypes and
        stored as `dtype`."""
        return _product(weight, scale.reshape((-1,) + (1,) * (weight.ndim - 1)), dtype)

    def bias(self, node: Node) -> np.ndarray | None:
        """The bias added to every output (broadcast as ONNX does), None when absent."""
        return node.const_input(2)

    def attrs_after_fold(self, node: Node) -> dict:
        return dict(node.attrs)


class ConvTransposeOp(LinearOp):
    """ConvTranspose: weight [C, M/group, k...]; output channel g*(M/group)+j is W[g's rows, j]."""

    def out_channels(self, node: Node, weight: np.ndarray) -> int:
        return int(weight.shape[1]) * int(node.attr("group", 1))

    def scale_weight(self, node: Node, weight: np.ndarray, scale: np.ndarray,
                     dtype: np.dtype) -> np.ndarray:
        group = int(node.attr("group", 1))
        c, m_per_group = weight.shape[0], weight.shape[1]
        grouped = weight.reshape((group, c // group, m_per_group) + weight.shape[2:])
        factors = scale.reshape((group, 1, m_per_group) + (1,) * (weight.ndim - 2))
        return _product(grouped, factors, dtype).reshape(weight.shape)


class GemmOp(LinearOp):
    """Gemm: Y = alpha * A' @ B' + beta * C; output column j is column j of B' (row j if transB)."""

    def out_channels(self, node: Node, weight: np.ndarray) -> int:
        return int(weight.shape[0] if node.attr("transB", 0) else weight.shape[1])

    def scale_weight(self, node: Node, weight: np.ndarray, scale: np.ndarray,
                     dtype: np.dtype) -> np.ndarray:
        return _product(weight, scale[:, None] if node.attr("transB", 0) else scale[None, :],
                        dtype)

    def bias(self, node: Node) -> np.ndarray | None:
        c = node.const_input(2)
        return None if c is None else c * np.asarray(node.attr("beta", 1.0), dtype=np.float64)

    def attrs_after_fold(self, node: Node) -> dict:
        attrs = dict(node.attrs)
        attrs.pop("beta", None)  # beta is folded into the new C
        return attrs


def _product(a: np.ndarray, b: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """a * b as `dtype`: numpy float types are multiplied in the wider input type and rounded
    into the result block by block (the same values as (a * b).astype(dtype), without a
    weight-sized temporary of the wider type); other types convert afterwards."""
    if dtype in _NUMPY_FLOATS:
        return np.multiply(a, b, out=np.empty(np.broadcast(a, b).shape, dtype),
                           casting="same_kind")
    return (a * b).astype(dtype)


LINEAR_OPS: dict[str, LinearOp] = {"Conv": LinearOp(), "ConvTranspose": ConvTransposeOp(),
                                   "Gemm": GemmOp()}


def check_foldable(node: Node) -> str | None:
    """Why `node`'s weight and bias cannot absorb a per-channel affine map, or None."""
    weight = node.input(1)
    if weight is None or weight.const is None:
        return f"the weight of {node.op_type} is not a constant"
    if weight.const.dtype.kind != "f":
        return f"the weight of {node.op_type} is {weight.const.dtype}, not floating point"
    others = [u.node for u in weight.uses() if u.node is not node]
    if others:
        return (f"the weight of {node.op_type} is shared with {len(others)} other node(s); "
                "folding would duplicate it")
    bias = node.input(2)
    if bias is not None and bias.const is None:
        return f"the bias of {node.op_type} is not a constant"
    if node.op_type == "Gemm" and weight.const.ndim != 2:
        return "the weight of Gemm is not 2-D"
    return None


def per_channel(array: np.ndarray, out_rank: int | None, axis: int, channels: int,
                ) -> np.ndarray | str:
    """`array` as a length-`channels` vector when it broadcasts along `axis` only; else a reason.

    Accepted: scalars, and shapes that, right-aligned with the output, are 1 everywhere except
    at `axis` where they are 1 or `channels`.
    """
    if out_rank is None:
        return "the output rank is unknown"
    if array.ndim > out_rank:
        return f"constant of shape {list(array.shape)} has a higher rank than the output"
    shape = (1,) * (out_rank - array.ndim) + tuple(array.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return (f"constant of shape {list(array.shape)} is not per-channel along axis {axis} "
                f"({channels} channels)")
    vector = array.reshape(-1).astype(np.float64)
    # broadcast_to costs more than the rest of the check: only a scalar needs it
    return vector if vector.size == channels else np.broadcast_to(vector, (channels,))


def fold_affine(rw: Rewriter, node: Node, scale: np.ndarray, shift: np.ndarray | None) -> Value:
    """Build node' with W' = scale * W (per output channel) and B' = scale * B + shift.

    `scale` and `shift` are float64 vectors over output channels; the new weight and bias keep
    the original weight dtype. Returns the output of node'.
    """
    kind = LINEAR_OPS[node.op_type]
    weight = node.input(1).const
    # numpy float types widen to float64 inside the multiply (the same values as a float64
    # copy of the weight first, without that extra weight-sized array); others convert first.
    wide = weight if weight.dtype in _NUMPY_FLOATS else weight.astype(np.float64)
    new_weight = kind.scale_weight(node, wide, scale, weight.dtype)
    bias = kind.bias(node)
    if bias is None and shift is None:
        new_bias = None
    else:
        base = np.zeros(scale.shape) if bias is None else bias.astype(np.float64) * scale
        new_bias = (base if shift is None else base + shift).astype(weight.dtype)
    inputs = [node.input(0), rw.constant(new_weight, f"{node.input(1).name}_fused")]
    if new_bias is not None:
        inputs.append(rw.constant(new_bias, f"{node.name or node.op_type}_bias_fused"))
    return rw.make_node(node.op_type, inputs, kind.attrs_after_fold(node)).outputs[0]
