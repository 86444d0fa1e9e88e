"""A numpy interpreter of a lowered Program: the Python reference of the integer path.

Integer steps are computed with graphopt/backend/int8/reference.py (rounding.py's
requantization, QLinearAdd), Quantize/DequantizeLinear with rounding.py, every other step with
graphopt's constant evaluator (onnx's reference semantics). The bit-exactness tests compare
every integer tensor it computes with the C kernels' and onnxruntime's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from graphopt.backend.c.ops.qlinear import QConvShape
from graphopt.backend.int8 import reference
from graphopt.backend.program import Program, Step, Tensor
from graphopt.evaluator import evaluate_node
from graphopt.quantization.rounding import dequantize_linear, quantize_linear

Array = np.ndarray


def run_program(program: Program, feeds: Mapping[str, Array]) -> dict[str, Array]:
    """Every tensor the program computes, by name (inputs included)."""
    env: dict[int, Array] = {}
    for t in program.inputs:
        env[id(t)] = np.asarray(feeds[t.name])
    named: dict[str, Array] = {t.name: env[id(t)] for t in program.inputs}

    def value(t: Tensor | None) -> Array | None:
        if t is None:
            return None
        return t.const if t.is_const else env[id(t)]

    for step in program.steps:
        args = [value(t) for t in step.inputs]
        run = _RUNNERS.get(step.op_type)
        results = run(step, args) if run is not None else \
            evaluate_node(step.node, args)
        for t, r in zip(step.outputs, results):
            env[id(t)] = np.asarray(r).reshape(t.shape).astype(t.dtype.numpy, copy=False)
            named[t.name] = env[id(t)]
    return named


def _quantize(step: Step, args: list) -> list[Array]:
    return [quantize_linear(args[0], args[1], args[2])]


def _dequantize(step: Step, args: list) -> list[Array]:
    return [dequantize_linear(args[0], args[1], args[2])]


def _epilogue(step: Step, acc_rows: Array, residual: Array | None, out_dtype: np.dtype) -> Array:
    """Rows = output channels; acc_rows already includes the folded bias."""
    a = step.node.attrs
    mult = step.inputs[3].const
    if a["out_type"] == "f32":
        return (acc_rows.astype(np.int32).astype(np.float32) * mult.reshape(-1, 1)).astype(np.float32)
    zp = np.array(a["y_zero_point"], dtype=out_dtype)
    q = reference.requantize_rows(acc_rows, mult, zp, int(a["lo"]), int(a["hi"]))
    if residual is not None:
        params = (np.float32(a["ratio_a"]), np.float32(a["ratio_b"]), np.float32(a["fixed"]))
        q = reference.qladd(q, residual, params, out_dtype, int(a["add_lo"]), int(a["add_hi"]))
    return q


def _stored(x: Array, flip: int) -> Array:
    return (x.view(np.uint8) ^ np.uint8(0x80 if flip else 0)).astype(np.int64)


def _int8_conv(step: Step, args: list) -> list[Array]:
    x, w, bias, _ = args[:4]
    residual = args[4] if len(args) > 4 else None
    s = QConvShape.of(step)
    a = step.node.attrs
    y_dtype = step.outputs[0].dtype.numpy
    pad = int(a["x_zero_point"])
    xs = _stored(x, a["flip"]).reshape(s.batch, s.channels, *s.in_hw)
    (kh, kw), (sh, sw), (dh, dw) = s.kernel, s.strides, s.dilations
    (oh, ow), (pt, pl) = s.out_hw, s.pads
    big = np.full((s.batch, s.channels, s.in_hw[0] + oh * sh + kh * dh,
                   s.in_hw[1] + ow * sw + kw * dw), pad, dtype=np.int64)
    big[:, :, pt:pt + s.in_hw[0], pl:pl + s.in_hw[1]] = xs
    taps = [big[:, :, ky * dh:ky * dh + oh * sh:sh, kx * dw:kx * dw + ow * sw:sw]
            for ky in range(kh) for kx in range(kw)]
    cols = np.stack(taps, axis=2)  # [n, c, taps, oh, ow]
    out = np.empty((s.batch, s.out_channels, oh * ow), dtype=y_dtype)
    rows = w.astype(np.int64)
    for n in range(s.batch):
        for g in range(s.group):
            block = cols[n, g * s.cg:(g + 1) * s.cg].reshape(s.depth, oh * ow)
            sl = slice(g * s.mg, (g + 1) * s.mg)
            acc = rows[sl] @ block + bias[sl].astype(np.int64).reshape(-1, 1)
            res = None if residual is None else \
                residual.reshape(s.batch, s.out_channels, -1)[n, sl]
            sub = _sub_step(step, sl)
            out[n, sl] = _epilogue(sub, acc, res, y_dtype)
    return [out.reshape(step.outputs[0].shape)]


def _sub_step(step: Step, rows: slice) -> Step:
    """The step seen for a slice of its output channels (its multipliers sliced)."""
    mult = step.inputs[3]
    sliced = Tensor(mult.name, mult.dtype, mult.const[rows].shape, mult.const[rows])
    return Step(step.node, [*step.inputs[:3], sliced], step.outputs)


def _int8_matmul(step: Step, args: list) -> list[Array]:
    x, w, bias = args[:3]
    residual = args[4] if len(args) > 4 else None
    depth = w.shape[1]
    xs = _stored(x, step.node.attrs["flip"]).reshape(-1, depth)
    acc = w.astype(np.int64) @ xs.T + bias.astype(np.int64).reshape(-1, 1)
    res = None if residual is None else residual.reshape(-1, w.shape[0]).T
    y = _epilogue(step, acc, res, step.outputs[0].dtype.numpy)
    return [np.ascontiguousarray(y.T).reshape(step.outputs[0].shape)]


def _int8_add(step: Step, args: list) -> list[Array]:
    a = step.node.attrs
    params = (np.float32(a["ratio_a"]), np.float32(a["ratio_b"]), np.float32(a["fixed"]))
    return [reference.qladd(args[0], args[1], params, step.outputs[0].dtype.numpy,
                            int(a["lo"]), int(a["hi"]))]


def _int8_global_pool(step: Step, args: list) -> list[Array]:
    a = step.node.attrs
    x = args[0]
    size = int(np.prod(x.shape[2:]))
    sums = x.reshape(x.shape[0] * x.shape[1], size).astype(np.int64).sum(axis=1)
    acc = (sums - size * int(a["x_zero_point"])).reshape(1, -1)
    zp = np.array(a["y_zero_point"], dtype=step.outputs[0].dtype.numpy)
    q = reference.requantize_rows(acc, np.float32(a["scale"]), zp)
    return [q.reshape(step.outputs[0].shape)]


def _int8_reduce_mean(step: Step, args: list) -> list[Array]:
    a = step.node.attrs
    y_dtype = step.outputs[0].dtype.numpy
    x = args[0]
    q = reference.qdq_reduce_mean(x, int(a["rows"]), np.float32(a["x_scale"]),
                                  np.array(a["x_zero_point"], x.dtype), np.float32(a["y_scale"]),
                                  np.array(a["y_zero_point"], y_dtype))
    return [q.reshape(step.outputs[0].shape)]


def _int8_concat(step: Step, args: list) -> list[Array]:
    a = step.node.attrs
    y_dtype = step.outputs[0].dtype.numpy
    parts = []
    for x, (scale, zp, signed) in zip(args, a["sources"]):
        real = dequantize_linear(x, np.float32(scale), np.array(zp, dtype=x.dtype))
        parts.append(quantize_linear(real, np.float32(a["y_scale"]),
                                     np.array(a["y_zero_point"], dtype=y_dtype)))
    return [np.concatenate(parts, axis=int(a["axis"]))]


def _int8_maxpool(step: Step, args: list) -> list[Array]:
    a = step.node.attrs
    pads = a["pads"]
    return [reference.maxpool2d(args[0], a["kernel_shape"], a["strides"],
                                (pads[0], pads[1], pads[2], pads[3]), a["dilations"],
                                step.outputs[0].shape[2:])]


_RUNNERS: dict[str, Callable[[Step, list], list[Array]]] = {
    "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize, "Int8Conv": _int8_conv,
    "Int8MatMul": _int8_matmul, "Int8Add": _int8_add,
    "Int8GlobalAveragePool": _int8_global_pool, "Int8ReduceMean": _int8_reduce_mean,
    "Int8Concat": _int8_concat,
    "Int8MaxPool": _int8_maxpool,
}
