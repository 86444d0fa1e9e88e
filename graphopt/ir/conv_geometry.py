"""Geometry of windowed ops (Conv, ConvTranspose, pooling), computed in one place.

`ConvGeometry.of(node)` resolves a node's attributes against its input and output shapes: kernel
size (from `kernel_shape` or the weight), strides, dilations, group, and explicit begin/end pads
with `auto_pad` resolved as the ONNX spec says (SAME_UPPER puts the odd pad at the end,
SAME_LOWER at the beginning, VALID pads nothing; a ConvTranspose given `output_shape` derives its
pads from that size the same way, odd pad first). The C emitters, the NPU workload, FLOP counts
and the passes that rewrite pads all read this object instead of re-deriving it from attributes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from graphopt.ir.graph import Node

# Ops whose second input is a weight with the kernel in its trailing dims.
_WEIGHTED = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv")


@dataclass(frozen=True)
class ConvGeometry:
    """Per spatial dim: kernel, strides, dilations, pads (begin / end); plus group.

    Kernel dims are ints, or the weight's symbol when it is a graph input of unknown size.
    """

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    group: int = 1

    @property
    def spatial_rank(self) -> int:
        return len(self.kernel)

    @property
    def pads(self) -> tuple[int, ...]:
        """The ONNX `pads` attribute: all begins, then all ends."""
        return self.pads_begin + self.pads_end

    def extent(self, axis: int) -> int:
        """Input span of one dilated window along spatial `axis`."""
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1

    def output_size(self, in_sizes: Sequence[int], ceil_mode: bool = False) -> tuple[int, ...]:
        """Output spatial sizes of a forward window op for input spatial sizes `in_sizes`."""
        out = []
        for i, size in enumerate(in_sizes):
            span = size + self.pads_begin[i] + self.pads_end[i] - self.extent(i)
            steps = math.ceil(span / self.strides[i]) if ceil_mode else span // self.strides[i]
            out.append(steps + 1)
        return tuple(out)

    def transposed_output_size(self, in_sizes: Sequence[int],
                               output_padding: Sequence[int] = ()) -> tuple[int, ...]:
        """Output spatial sizes of a transposed window op (ConvTranspose, MaxUnpool): the input
        size a forward op with this geometry maps onto `in_sizes`."""
        extra = list(output_padding) or [0] * len(in_sizes)
        return tuple((size - 1) * self.strides[i] - self.pads_begin[i] - self.pads_end[i]
                     + self.extent(i) + extra[i] for i, size in enumerate(in_sizes))

    def window_macs(self, channels_per_group: int) -> int:
        """Multiply-accumulates per output element: one per weight tap it reads."""
        return channels_per_group * math.prod(self.kernel)

    @classmethod
    def of(cls, node: Node, in_spatial: Sequence[int] | None = None,
           out_spatial: Sequence[int] | None = None) -> "ConvGeometry":
        """The geometry of `node`; spatial sizes default to its static input / output shapes.

        auto_pad SAME_* needs both sizes; without them the pads are taken as zero.
        """
        x, y = node.input(0), node.outputs[0]
        if in_spatial is None and x is not None and x.shape is not None:
            in_spatial = x.shape[2:]
        if out_spatial is None and y.shape is not None:
            out_spatial = y.shape[2:]
        kernel = list(node.attr("kernel_shape") or [])
        weight = node.input(1) if node.op_type in _WEIGHTED and len(node.inputs) > 1 else None
        if not kernel and weight is not None and weight.shape is not None:
            kernel = list(weight.shape[2:])
        rank = len(kernel)
        strides = tuple(node.attr("strides") or [1] * rank)
        dilations = tuple(node.attr("dilations") or [1] * rank)
        begin, end = _resolve_pads(node, rank, kernel, strides, dilations, in_spatial,
                                   out_spatial)
        # A symbolic kernel dim (a weight fed at run time) stays a symbol.
        return cls(tuple(k if isinstance(k, str) or k is None else int(k) for k in kernel),
                   tuple(int(s) for s in strides),
                   tuple(int(d) for d in dilations), begin, end, int(node.attr("group", 1)))


def _resolve_pads(node: Node, rank: int, kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int], in_spatial: Sequence | None,
                  out_spatial: Sequence | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    auto_pad = node.attr("auto_pad", "NOTSET") or "NOTSET"
    transposed = node.op_type == "ConvTranspose"
    if transposed and node.attr("output_shape") is not None and auto_pad == "NOTSET":
        auto_pad = "SAME_LOWER"  # the spec: output_shape given, pads derived, odd one first
    if auto_pad == "NOTSET":
        pads = [int(p) for p in node.attr("pads") or [0] * (2 * rank)]
        return tuple(pads[:rank]), tuple(pads[rank:])
    static = (in_spatial is not None and out_spatial is not None
              and all(isinstance(d, int) for d in (*in_spatial, *out_spatial)))
    if auto_pad == "VALID" or not static:
        return (0,) * rank, (0,) * rank
    extra = list(node.attr("output_padding") or [0] * rank)
    begins, ends = [], []
    for i in range(rank):
        extent = (kernel[i] - 1) * dilations[i] + 1
        if transposed:  # the input is the small side: total = stride (in - 1) + extra + extent - out
            total = strides[i] * (in_spatial[i] - 1) + extra[i] + extent - out_spatial[i]
        else:
            total = max((out_spatial[i] - 1) * strides[i] + extent - in_spatial[i], 0)
        begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begins.append(begin)
        ends.append(total - begin)
    return tuple(begins), tuple(ends)
