"""Conv and MaxPool on the blocked layout NCHWc (graphopt/backend/c/nchwc.py), and the layout
conversions.

Layout selection (graphopt/backend/layouts.py) gives a Conv step blocked tensors when the cost
model says it pays; `blocked_problem` says which steps these kernels can run at all. Three
algorithms, all csrc/nchwc.c kernels, weights re-packed at compile time:
- nchwc_depthwise: 3x3, stride 1 or 2, group == C == M; W packed as [C/c][9][c];
- nchwc_pointwise: 1x1, stride 1, unpadded, group 1; W packed as [M/c][C][c];
- nchwc_direct: any other group-1 window; W packed as [M/c][C][KH][KW][c]; its input may stay
  NCHW (any channel count), so a first layer reads the model's input without a conversion.
A MaxPool on blocked tensors is a step of node `MaxPool` in DOMAIN (layouts.py renames it):
csrc's graphopt_nchwc_maxpool, c channels of a pixel per max.
The epilogue runs in registers when it is bias, at most one residual Add (same blocked shape)
and at most one activation, Relu/Clip with constant bounds or SiLU (on each tile as soon as it
is stored); anything else is the generic per-tile callback
on the view [N*M/c, OH*OW*c] after the bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.algorithms import choose, register_algorithm
from graphopt.backend.c.epilogue import emit_epilogue
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.nchwc import is_blocked, logical_shape
from graphopt.backend.c.ops.conv import ConvShape, emit_per_image
from graphopt.backend.c.registry import register_op
from graphopt.backend.program import EpilogueOp, Step, Tensor
from graphopt.ir.conv_geometry import ConvGeometry
from graphopt.ir.graph import Node
from graphopt.ir.types import DType

DOMAIN = "graphopt.layout"
TO_BLOCKED, FROM_BLOCKED = "ToBlocked", "FromBlocked"
_HEADER = '#include "graphopt_nchwc.h"'


def blocked_conv_shape(step: Step) -> ConvShape | None:
    """The geometry of a Conv step read through the logical shapes of its (blocked) tensors."""
    x, y = step.inputs[0], step.outputs[0]
    x_shape = logical_shape(x.shape) if is_blocked(x.layout) else x.shape
    y_shape = logical_shape(y.shape) if is_blocked(y.layout) else y.shape
    return ConvShape.from_shapes(step, x_shape, y_shape)


def _kind(shape: ConvShape) -> str | None:
    if shape.depthwise and shape.kernel == (3, 3) and shape.dilations == (1, 1) and \
            shape.strides[0] == shape.strides[1] and shape.strides[0] in (1, 2):
        return "depthwise"
    if shape.group == 1:
        return "pointwise" if shape.pointwise else "direct"
    return None


def blocked_algorithm(step: Step) -> str:
    """The blocked kernel that would run the Conv `step` (one blocked_problem accepts)."""
    return f"nchwc_{_kind(blocked_conv_shape(step))}"


def reads_any_layout(step: Step) -> bool:
    """Whether the blocked kernel of this Conv step reads its input in NCHW as well as NCHWc
    (the direct kernel: a first layer's 3 channels need no conversion at all)."""
    shape = ConvShape.of(step)
    return shape is not None and _kind(shape) == "direct"


def blocked_problem(step: Step, width: int) -> str | None:
    """Why the Conv `step` (NCHW tensors) cannot run on NCHW{width}c kernels, None if it can."""
    x, w = step.inputs[0], step.inputs[1]
    b = step.inputs[2] if len(step.inputs) > 2 else None
    y = step.outputs[0]
    if x.dtype != DType.FLOAT or x.rank != 4:
        return "not a 2-D float convolution"
    shape = ConvShape.of(step)
    if shape is None or _kind(shape) is None:
        window = "" if shape is None else (
            f" {shape.kernel[0]}x{shape.kernel[1]} stride {shape.strides[0]} group "
            f"{shape.group}")
        return (f"no blocked kernel for this window{window} (NCHW runs it as "
                f"{choose(step) or 'a direct loop'}; blocked: depthwise 3x3 stride 1/2, "
                "group 1)")
    if shape.out_channels % width or (shape.channels % width and _kind(shape) != "direct"):
        return f"channels {shape.channels} -> {shape.out_channels} not multiples of {width}"
    if w.const is None or (b is not None and b.const is None):
        return "weights computed at run time (blocked kernels re-pack them at compile time)"
    for op in step.epilogue:
        for t in op.operands:
            if isinstance(t, Tensor) and t.size != 1 and t.shape != y.shape:
                return f"fused {op.op_type} broadcasts {t.describe()} over the output"
    return None


def blocked_pool_problem(step: Step, width: int) -> str | None:
    """Why the MaxPool `step` (NCHW tensors) cannot run on NCHW{width}c, None if it can."""
    x = step.inputs[0]
    if x.dtype != DType.FLOAT or x.rank != 4:
        return "not a 2-D float pooling"
    if len(step.outputs) > 1:
        return "MaxPool with an Indices output"
    if x.shape[1] % width:
        return f"{x.shape[1]} channels not a multiple of {width}"
    return None


def blocked_maxpool(step: Step) -> Node:
    """The node of a MaxPool step (NCHW tensors) once they are blocked: emit_blocked_maxpool's,
    its geometry resolved (auto_pad included) into explicit attributes."""
    x, y = (logical_shape(t.shape) if is_blocked(t.layout) else t.shape
            for t in (step.inputs[0], step.outputs[0]))
    g = ConvGeometry.of(step.node, x[2:], y[2:])
    attrs = {"kernel_shape": list(g.kernel), "strides": list(g.strides),
             "pads": list(g.pads_begin) + list(g.pads_end), "dilations": list(g.dilations)}
    return Node("MaxPool", [], [], attrs=attrs, name=step.node.name, domain=DOMAIN)


@dataclass(frozen=True)
class FastEpilogue:
    """The epilogue csrc applies in registers (graphopt_nchwc_epi)."""

    residual: Tensor | None = None
    lo: float = -math.inf
    hi: float = math.inf
    add_first: bool = False
    silu: bool = False


def fast_epilogue(ops: list[EpilogueOp], out: Tensor) -> FastEpilogue | None:
    """The ops as one residual Add and one activation, Relu/Clip or SiLU (Swish with alpha 1,
    which fuse_epilogues makes of Sigmoid and Mul), each optional, in either order (the
    residual before SiLU only); else None."""
    residual, bounds, add_first, silu = None, None, False, False
    for op in ops:
        activated = bounds is not None or silu
        if op.op_type == "Add" and residual is None and len(op.operands) == 1 and \
                isinstance(op.operands[0], Tensor) and op.operands[0].shape == out.shape and \
                not op.operands[0].is_const:
            if silu:  # the kernels apply SiLU after everything else (graphopt_nchwc.h)
                return None
            residual, add_first = op.operands[0], not activated
        elif op.op_type == "Relu" and not activated:
            bounds = (0.0, math.inf)
        elif op.op_type == "Clip" and not activated and _clip_bounds(op) is not None:
            bounds = _clip_bounds(op)
        elif op.op_type == "Swish" and not activated and op.attrs.get("alpha", 1.0) == 1.0:
            silu = True
        else:
            return None
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    return FastEpilogue(residual, lo, hi, add_first and residual is not None, silu)


def _clip_bounds(op: EpilogueOp) -> tuple[float, float] | None:
    values = []
    for t, default in zip(list(op.operands) + [None] * 2, (-math.inf, math.inf)):
        if t is None:
            values.append(default)
        elif isinstance(t, Tensor) and t.is_const and t.size == 1:
            values.append(float(t.const.reshape(-1)[0]))
        else:
            return None
    return values[0], values[1]


def _applies(kind: str):  # noqa: ANN202
    def applies(step: Step) -> bool:
        if not is_blocked(step.outputs[0].layout):
            return False
        shape = blocked_conv_shape(step)
        return shape is not None and _kind(shape) == kind
    return applies


def _emit_blocked(k: Kernel, packed_weights: str, call: str) -> None:
    """The per-image loop around one nchwc kernel `call` (a format string over x, w, y);
    bias and fused ops become the register epilogue, or the generic callback after it."""
    k.add_helper(_HEADER)
    shape = blocked_conv_shape(k.step)
    y = k.outputs[0]
    width = y.shape[-1]
    b = k.input(2)
    fast = fast_epilogue(k.epilogue, y.tensor)
    epilogue = emit_epilogue(k, y, 2, k.epilogue) if fast is None else "NULL"
    fast = fast or FastEpilogue()
    bias = k.arg(b) if b is not None else "NULL"
    lo, hi = (cdtypes.literal(v, DType.FLOAT) for v in (fast.lo, fast.hi))
    k.em.line(f"graphopt_nchwc_epi fe = {{{bias}, NULL, {lo}, {hi}, {int(fast.add_first)}, "
              f"{int(fast.silu)}}};")
    residual = k.arg(Operand(fast.residual, "p_residual", False)) if fast.residual else None
    per_image = shape.out_channels * shape.plane_out

    def each(n: str) -> None:
        if residual is not None:
            k.em.line(f"fe.residual = {residual} + {n} * {per_image};")

    emit_per_image(k, shape, epilogue,
                   lambda x, out: call.format(x=x, w=packed_weights, y=out, epi=epilogue),
                   rows_per_image=shape.out_channels // width, each=each)


@register_algorithm("Conv", "nchwc_depthwise", applies=_applies("depthwise"), before="depthwise")
def _emit_nchwc_depthwise(k: Kernel) -> None:
    """3x3 depthwise on NCHWc: c channels of a pixel per FMA, the 9 taps' weights in registers."""
    shape = blocked_conv_shape(k.step)
    width = k.outputs[0].shape[-1]
    w = k.packed(k.input(1), f"nchw{width}c",
                 lambda a: a.reshape(-1, width, 9).transpose(0, 2, 1).astype(np.float32))
    k.em.line(f"graphopt_conv2d_shape s = {shape.c_struct()}; s.channels = {shape.channels};")
    _emit_blocked(k, w, "graphopt_nchwc_depthwise3x3({x}, {w}, {y}, &s, &fe, {epi});")


@register_algorithm("Conv", "nchwc_pointwise", applies=_applies("pointwise"), before="depthwise")
def _emit_nchwc_pointwise(k: Kernel) -> None:
    """1x1 on NCHWc as a GEMM over channels: 6 pixels x 2 output blocks in registers."""
    shape = blocked_conv_shape(k.step)
    width = k.outputs[0].shape[-1]
    m, c = shape.out_channels, shape.channels
    w = k.packed(k.input(1), f"nchw{width}c",
                 lambda a: a.reshape(m // width, width, c).transpose(0, 2, 1).astype(np.float32))
    _emit_blocked(k, w, f"graphopt_nchwc_pointwise({{x}}, {{w}}, {{y}}, {c}, {m}, "
                        f"{shape.plane_out}, &fe, {{epi}});")


@register_algorithm("Conv", "nchwc_direct", applies=_applies("direct"), before="depthwise")
def _emit_nchwc_direct(k: Kernel) -> None:
    """Any other group-1 window, direct: 6 output pixels x 2 output blocks in registers over
    input channels and taps; the input read in NCHW or NCHWc, as it comes."""
    shape = blocked_conv_shape(k.step)
    width = k.outputs[0].shape[-1]
    m, c = shape.out_channels, shape.channels
    taps = shape.kernel[0] * shape.kernel[1]
    w = k.packed(k.input(1), f"nchw{width}c",
                 lambda a: a.reshape(m // width, width, c * taps).transpose(0, 2, 1)
                 .astype(np.float32))
    in_blocked = int(is_blocked(k.input(0).tensor.layout))
    k.em.line(f"const graphopt_conv2d_shape s = {shape.c_struct()};")
    _emit_blocked(k, w, f"graphopt_nchwc_conv2d({{x}}, {in_blocked}, {{w}}, {{y}}, &s, {m}, "
                        f"&fe, {{epi}});")


@register_op("MaxPool", domain=DOMAIN, dtypes={DType.FLOAT})
def emit_blocked_maxpool(k: Kernel) -> None:
    """MaxPool on NCHWc: the window's max of c channels per vector instruction."""
    k.add_helper(_HEADER)
    x, y = k.input(0), k.outputs[0]
    n, channels, h, w = logical_shape(x.shape)
    oh, ow = logical_shape(y.shape)[2:]
    (kh, kw), (sh, sw), (dh, dw) = (k.attr(a) for a in ("kernel_shape", "strides", "dilations"))
    top, left = k.attr("pads")[:2]
    k.em.line(f"const graphopt_conv2d_shape s = {{0, {h}, {w}, {oh}, {ow}, {kh}, {kw}, {sh}, "
              f"{sw}, {top}, {left}, {dh}, {dw}}};")
    k.em.line(f"graphopt_nchwc_maxpool({k.arg(x)}, {k.arg(y)}, "
              f"{n * channels // x.shape[-1]}, &s);")


@register_op(TO_BLOCKED, FROM_BLOCKED, domain=DOMAIN, dtypes={DType.FLOAT})
def emit_reorder(k: Kernel) -> None:
    """NCHW <-> NCHWc: the conversions layout selection inserts between layouts."""
    k.add_helper(_HEADER)
    x, y = k.input(0), k.outputs[0]
    to_blocked = k.node.op_type == TO_BLOCKED
    n, channels, h, w = x.shape if to_blocked else y.shape  # the NCHW side: pad lanes not counted
    fn = "graphopt_nchw_to_nchwc" if to_blocked else "graphopt_nchwc_to_nchw"
    k.em.line(f"{fn}({k.arg(x)}, {k.arg(y)}, {n}, {channels}, {h * w});")
