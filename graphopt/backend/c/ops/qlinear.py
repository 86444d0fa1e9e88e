"""Integer (INT8) steps made by graphopt/backend/int8/lowering.py, run by csrc/q*.c.

- `Int8Conv` (inputs: u8/s8 X, int8 weight rows [M, K], folded int32 bias [M], float32
  multipliers [M], optional residual): per image and group, `graphopt_qconv` packs the
  activations into the GEMM's u8 panels block by block (im2col with the zero point as padding,
  or the planes as they are for a 1x1 stride-1 window) and runs the GEMM on weights packed at
  compile time; a stride-1 window over rows of 14 pixels or more runs `graphopt_qconv_implicit`
  instead (no im2col: B read from padded planes of 4 interleaved channels, the weights packed
  tap-outer by packing.pack_implicit_a); depthwise layers run `graphopt_qdepthwise`. The
  algorithm is recorded on the step in lowering.
- `Int8MatMul` (Gemm/MatMul): Y^T = W [N, K] @ X^T, the kernel writing Y through strides.
- `Int8Add` (QLinearAdd), `Int8Concat` (requantizing inputs whose parameters differ),
  `Int8GlobalAveragePool` (QLinearGlobalAveragePool), `Int8ReduceMean` (a QDQ ReduceMean over
  trailing axes), `Int8MaxPool` (MaxPool of 2-D planes).
Every epilogue parameter is a compile-time constant (float literals in hex, exact).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphopt.backend.c.algorithms import emit_chosen, register_algorithm
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.ops.conv import ConvShape, pack_groups
from graphopt.backend.c.registry import register_op
from graphopt.backend.int8 import packing
from graphopt.backend.program import Step
from graphopt.ir.types import DType

INT8 = frozenset({DType.UINT8, DType.INT8})
_OUT_TYPES = {"u8": "GRAPHOPT_Q_U8", "s8": "GRAPHOPT_Q_S8", "f32": "GRAPHOPT_Q_F32"}


class QConvShape(ConvShape):
    """The geometry of an Int8Conv step. Its node is Program-only (no IR inputs), so
    `ConvShape.of`, which resolves an IR node against its values, cannot read it: this builds the
    same ConvShape from the step's tensors X [N, C, H, W], Y [N, M, OH, OW] and the attributes
    lowering copied from the Conv (kernel_shape always set; auto_pad never, so pads are
    explicit). `c_struct` fits graphopt_qconv_shape, whose fields are graphopt_conv2d_shape's."""

    @classmethod
    def of(cls, step: Step) -> QConvShape:
        x, y = step.inputs[0], step.outputs[0]
        a = step.node.attrs
        pads = list(a.get("pads", [0, 0, 0, 0]))
        return cls(x.shape[0], x.shape[1], y.shape[1], int(a.get("group", 1)),
                   (x.shape[2], x.shape[3]), (y.shape[2], y.shape[3]),
                   tuple(int(v) for v in a["kernel_shape"]),
                   tuple(int(v) for v in a.get("strides", [1, 1])), (int(pads[0]), int(pads[1])),
                   tuple(int(v) for v in a.get("dilations", [1, 1])))


def _f32(value: float) -> str:
    """An exact float32 C literal."""
    return f"{float(np.float32(value)).hex()}f"


def _include(k: Kernel) -> None:
    k.add_helper('#include "graphopt_qkernels.h"')


def _raw(k: Kernel, operand: Operand) -> str:
    """A constant input passed as it is, from the weight blob."""
    return k.packed(operand, "raw", lambda a: a)


def _epilogue(k: Kernel, residual: str = "NULL", add_strides: tuple[int, int] = (0, 0)) -> None:
    """Declare `graphopt_qepilogue e` from the step's attributes (bias, multipliers: inputs 2, 3)."""
    a = k.attr
    bias, mult = _raw(k, k.input(2)), _raw(k, k.input(3))
    fused = a("ratio_a") is not None
    k.em.line(
        f"graphopt_qepilogue e = {{{bias}, {mult}, {_OUT_TYPES[a('out_type')]}, "
        f"{int(a('y_zero_point'))}, {int(a('lo'))}, {int(a('hi'))}, {int(a('narrow'))}, "
        f"{residual if fused else 'NULL'}, {add_strides[0]}, {add_strides[1]}, "
        f"{_f32(a('ratio_a', 0.0))}, {_f32(a('ratio_b', 0.0))}, {_f32(a('fixed', 0.0))}, "
        f"{int(a('add_lo', 0))}, {int(a('add_hi', 0))}}};")


def _residual(k: Kernel) -> str:
    r = k.input(4)
    return "NULL" if r is None else k.arg(r)


def _work(k: Kernel, shape: QConvShape, per_slot: Callable[..., int]) -> str:
    """`work, slots` arguments of a kernel taking per-thread work memory: the slots live in the
    step's scratch (so in the arena), one per thread the call may run on."""
    slots = packing.work_slots(k.target.openmp)
    work = k.scratch(slots * per_slot(shape.out_hw, shape.kernel, shape.strides,
                                      shape.dilations))
    return f"{work}, {slots}"


def _int8_conv_applies(test: Callable[[QConvShape], bool]) -> Callable[[Step], bool]:
    def applies(step: Step) -> bool:
        return test(QConvShape.of(step))
    return applies


@register_op("Int8Conv", dtypes=INT8)
def emit_int8_conv(k: Kernel) -> None:
    """Run the algorithm lowering chose (depthwise, pointwise or im2col)."""
    _include(k)
    emit_chosen(k)


@register_algorithm("Int8Conv", "depthwise", applies=_int8_conv_applies(lambda s: s.depthwise))
def _emit_depthwise(k: Kernel) -> None:
    shape = QConvShape.of(k.step)
    x, w, y = k.input(0), k.input(1), k.outputs[0]
    em, X, Y = k.em, k.arg(x), k.arg(y)
    W = _raw(k, w)
    residual = _residual(k)
    work = _work(k, shape, packing.qdepthwise_work_bytes)
    _epilogue(k, residual, (shape.plane_out, 1))
    em.line(f"graphopt_qconv_shape s = {shape.c_struct()}; s.channels = {shape.channels};")
    per_in, per_out = shape.channels * shape.plane_in, shape.out_channels * shape.plane_out
    with em.loops([shape.batch], prefix="n") as (n,):
        if residual != "NULL":
            em.line(f"e.add = {residual} + {n} * {per_out};")
        em.line(f"graphopt_qdepthwise((const uint8_t*){X} + {n} * {per_in}, {W}, &s, "
                f"{_pad(k)}, {int(k.attr('flip'))}, &e, {Y} + {n} * {per_out}, {work});")


def _pad(k: Kernel) -> int:
    """The stored activation zero point: padding that contributes nothing."""
    return int(k.attr("x_zero_point"))


# Both run graphopt_qconv, which packs the planes as they are when the window is 1x1 stride 1;
# the names tell the layer reports which packing ran.
@register_algorithm("Int8Conv", "pointwise", applies=_int8_conv_applies(lambda s: s.pointwise))
def _emit_pointwise(k: Kernel) -> None:
    _emit_conv_gemm(k)


@register_algorithm("Int8Conv", "im2col", applies=_int8_conv_applies(lambda s: True))
def _emit_im2col(k: Kernel) -> None:
    _emit_conv_gemm(k)


def _emit_conv_gemm(k: Kernel) -> None:
    """Per image n and group g: graphopt_qconv on X[n, g] with the group's packed weights."""
    shape = QConvShape.of(k.step)
    x, w, y = k.input(0), k.input(1), k.outputs[0]
    em, X, Y = k.em, k.arg(x), k.arg(y)
    mg, plane = shape.mg, shape.plane_out
    group = shape.group
    slots = packing.work_slots(k.target.openmp)
    # the same choice on every target: the packed weights do not depend on it
    implicit = packing.implicit_applies(shape.kernel, shape.strides, shape.dilations,
                                        shape.out_hw)
    if implicit:
        cg = shape.cg
        panels = k.packed(w, "qpanels_implicit", lambda a: pack_groups(
            a, group, lambda rows: packing.pack_implicit_a(rows, cg)))
        a_step = packing.packed_a_bytes(mg, shape.kernel[0] * shape.kernel[1] * -(-cg // 4) * 4)
        work = k.scratch(packing.qconv_implicit_work_bytes(cg, shape.out_hw, shape.kernel, slots))
    else:
        panels = k.packed(w, "qpanels", lambda a: pack_groups(a, group, packing.pack_a))
        a_step = packing.packed_a_bytes(mg, shape.depth)
        work = k.scratch(packing.qconv_work_bytes(shape.cg, shape.in_hw, shape.out_hw,
                                                  shape.kernel, shape.strides, shape.pads,
                                                  shape.dilations, slots))
    conv = "graphopt_qconv_implicit" if implicit else "graphopt_qconv"
    residual = _residual(k)
    _epilogue(k, residual, (plane, 1))
    em.line("const int32_t* bias0 = e.bias; const float* mult0 = e.mult;")
    em.line(f"const graphopt_qconv_shape s = {shape.c_struct()};")
    with em.loops([shape.batch, group], prefix="n") as (n, g):
        x_block = f"(const uint8_t*){X} + ({n} * {shape.channels} + {g} * {shape.cg}) * " \
                  f"{shape.plane_in}"
        out = f"({n} * {shape.out_channels} + {g} * {mg}) * {plane}"
        em.line(f"e.bias = bias0 + {g} * {mg}; e.mult = mult0 + {g} * {mg};")
        if residual != "NULL":
            em.line(f"e.add = {residual} + {out};")
        em.line(f"{conv}({x_block}, &s, {mg}, {panels} + {g} * {a_step}, {_pad(k)}, "
                f"{int(k.attr('flip'))}, &e, {Y} + {out}, {work}, {slots});")


@register_op("Int8MatMul", dtypes=INT8)
def emit_int8_matmul(k: Kernel) -> None:
    """Y [R, N] = X [R, K] @ W^T: computed as W [N, K] @ X^T, written through strides."""
    _include(k)
    x, w, y = k.input(0), k.input(1), k.outputs[0]
    n_out, depth = w.shape
    rows = x.size // depth
    em, X, Y = k.em, k.arg(x), k.arg(y)
    panels = k.packed(w, "qpanels", packing.pack_a)
    cols = k.scratch(packing.packed_b_bytes(depth, rows))
    residual = _residual(k)
    _epilogue(k, residual, (1, n_out))
    em.line(f"graphopt_qgemm_pack_b((const uint8_t*){X}, 1, {depth}, {depth}, {rows}, "
            f"{int(k.attr('flip'))}, (uint8_t*){cols});")
    em.line(f"graphopt_qgemm({n_out}, {rows}, {depth}, {panels}, (const uint8_t*){cols}, &e, "
            f"{Y}, 1, {n_out});")


@register_op("Int8Add", dtypes=INT8)
def emit_int8_add(k: Kernel) -> None:
    """QLinearAdd: B has A's shape or one element."""
    _include(k)
    a, b, y = k.input(0), k.input(1), k.outputs[0]
    at = k.attr
    k.em.line(f"graphopt_qadd({k.arg(a)}, {k.arg(b)}, {1 if b.size == a.size else 0}, {a.size}, "
              f"{int(a.dtype == DType.INT8)}, {_f32(at('ratio_a'))}, {_f32(at('ratio_b'))}, "
              f"{_f32(at('fixed'))}, {int(at('lo'))}, {int(at('hi'))}, {k.arg(y)});")


@register_op("Int8GlobalAveragePool", dtypes=INT8)
def emit_int8_global_average_pool(k: Kernel) -> None:
    """QLinearGlobalAveragePool: rint(float(sum - size * x_zp) * scale) + y_zp per plane."""
    _include(k)
    x, y = k.input(0), k.outputs[0]
    planes = x.shape[0] * x.shape[1]
    k.em.line(f"graphopt_qglobal_avgpool({k.arg(x)}, {planes}, {x.size // planes}, "
              f"{int(x.dtype == DType.INT8)}, {int(k.attr('x_zero_point'))}, "
              f"{_f32(k.attr('scale'))}, {int(k.attr('y_zero_point'))}, {k.arg(y)});")


@register_op("Int8ReduceMean", dtypes=INT8)
def emit_int8_reduce_mean(k: Kernel) -> None:
    """DequantizeLinear -> ReduceMean over the trailing axes -> QuantizeLinear of `rows` rows,
    in onnxruntime's float arithmetic."""
    _include(k)
    x, y = k.input(0), k.outputs[0]
    rows, at = int(k.attr("rows")), k.attr
    k.em.line(f"graphopt_qreduce_mean({k.arg(x)}, {rows}, {x.size // rows}, "
              f"{int(x.dtype == DType.INT8)}, {int(at('x_zero_point'))}, {_f32(at('x_scale'))}, "
              f"{int(at('y_zero_point'))}, {_f32(at('y_scale'))}, {k.arg(y)});")


@register_op("Int8MaxPool", dtypes=INT8)
def emit_int8_maxpool(k: Kernel) -> None:
    """MaxPool of u8/s8 planes: graphopt_qmaxpool per image (explicit pads from lowering)."""
    _include(k)
    shape = QConvShape.of(k.step)
    x, y = k.input(0), k.outputs[0]
    work = _work(k, shape, packing.qmaxpool_work_bytes)
    per_in, per_out = shape.channels * shape.plane_in, shape.channels * shape.plane_out
    k.em.line(f"const graphopt_qconv_shape s = {shape.c_struct()};")
    with k.em.loops([shape.batch], prefix="n") as (n,):
        k.em.line(f"graphopt_qmaxpool((const uint8_t*){k.arg(x)} + {n} * {per_in}, &s, "
                  f"{int(x.dtype == DType.INT8)}, (uint8_t*){k.arg(y)} + {n} * {per_out}, "
                  f"{work});")


@register_op("Int8Concat", dtypes=INT8)
def emit_int8_concat(k: Kernel) -> None:
    """Concat along `axis`; an input whose parameters differ from the output's is requantized
    (DequantizeLinear then QuantizeLinear, as the QDQ model computes it)."""
    _include(k)
    y = k.outputs[0]
    axis = int(k.attr("axis"))
    outer = int(np.prod(y.shape[:axis], dtype=np.int64))
    y_scale, y_zp = float(k.attr("y_scale")), int(k.attr("y_zero_point"))
    y_signed = int(y.dtype == DType.INT8)
    em, Y = k.em, k.arg(y)
    chunks = [int(np.prod(t.shape[axis:], dtype=np.int64)) for t in k.inputs]
    total = sum(chunks)
    with em.loops([outer], prefix="o") as (o,):
        offset = 0
        for operand, chunk, (scale, zp, signed) in zip(k.inputs, chunks, k.attr("sources")):
            src = f"{k.arg(operand)} + {o} * {chunk}"
            dst = f"{Y} + {o} * {total} + {offset}"
            if (float(scale), int(zp), int(signed)) == (y_scale, y_zp, y_signed):
                em.line(f"memcpy({dst}, {src}, {chunk});")
            else:
                em.line(f"graphopt_qrequant({src}, {chunk}, {int(signed)}, {int(zp)}, "
                        f"{_f32(scale)}, {y_signed}, {y_zp}, {_f32(y_scale)}, {dst});")
            offset += chunk
