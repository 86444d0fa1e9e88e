"""Integer lowering of a Program: `Value.quant`-annotated groups become int8 steps.

The IR stays float with quantization parameters on values (graphopt.quantization, or the
absorb-qdq pass for QDQ files). After specialization, this pass rewrites the Program:

- a Conv/Gemm/MatMul whose input and constant weight carry parameters (weights symmetric, per
  tensor or per output channel) becomes an `Int8Conv` / `Int8MatMul` step: u8 (or s8) input,
  int8 weights packed at compile time, int32 bias, and an output that is requantized when the
  output value is annotated (also through a following Relu/Clip: a clamp in the integer
  domain), else float (acc * x_scale * w_scale, for a float consumer such as a float residual
  Add or a graph output);
- a following QLinearAdd (an Add of two annotated values into an annotated value) is fused
  into that step's epilogue, else it runs as an `Int8Add` step; Concat and GlobalAveragePool of
  annotated values run as `Int8Concat` / `Int8GlobalAveragePool`, a ReduceMean over trailing
  axes as `Int8ReduceMean` (onnxruntime's float arithmetic for it, on the integers); MaxPool
  (as `Int8MaxPool` when 2-D) and the Reshape family run on the integers when input and output
  share parameters;
- everything else runs in float. Where a float step produces an annotated value that an
  integer step reads, a QuantizeLinear step is inserted; a float step reading an annotated
  value reads DequantizeLinear of its integers (what the QDQ model computes), so activations
  between integer steps stay integers and Q/DQ steps appear only at float boundaries.

The arithmetic is csrc/graphopt_qkernels.h's; graphopt/backend/int8/reference.py and
graphopt/quantization/rounding.py define it in numpy.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.backend.int8 import packing, reference
from graphopt.backend.program import Program, Step, Tensor
from graphopt.ir.conv_geometry import ConvGeometry
from graphopt.ir.graph import Graph, Node
from graphopt.ir.types import DType, QuantParams
from graphopt.quantization.params import quantize_const
from graphopt.quantization.rounding import int_range, quantize_linear

log = logging.getLogger(__name__)

VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "MaxPool"})
_INT_DTYPES = {np.dtype(np.uint8): DType.UINT8, np.dtype(np.int8): DType.INT8}


def quant_map(graph: Graph) -> dict[str, QuantParams]:
    """Per-tensor activation parameters by value name (what the lowering can use)."""
    result = {}
    for value in graph.values():
        q = value.quant
        if q is not None and not value.is_const and q.scale.size == 1 and \
                q.zero_point.dtype in _INT_DTYPES:
            result[value.name] = q
    return result


def _scalar(params: QuantParams) -> tuple[float, int]:
    return float(params.scale.reshape(-1)[0]), int(params.zero_point.reshape(-1)[0])


def _same_params(a: QuantParams, b: QuantParams) -> bool:
    return a.zero_point.dtype == b.zero_point.dtype and _scalar(a) == _scalar(b)


def _node(op_type: str, name: str, attrs: dict[str, Any]) -> Node:
    """A Program-only node (never part of an IR graph)."""
    node = Node(op_type, [], [], attrs, name=name)
    node.origin = "int8-lowering"
    return node


def _const(name: str, array: np.ndarray) -> Tensor:
    array = np.ascontiguousarray(array)
    return Tensor(name, DType.from_numpy(array.dtype), tuple(array.shape), array)


@dataclass
class _State:
    """What the rewrite knows while walking the steps in order."""

    quant: dict[str, QuantParams]
    outputs: set[int]
    readers: dict[int, list[int]]
    steps: list[Step]
    produced_at: dict[int, int] = field(default_factory=dict)  # tensor -> index of its step
    ints: dict[int, Tensor] = field(default_factory=dict)    # float tensor -> its integers
    floats: dict[int, Tensor] = field(default_factory=dict)  # float tensor -> DQ of integers
    out: list[Step] = field(default_factory=list)
    skip: set[int] = field(default_factory=set)              # step indices absorbed
    counts: dict[str, int] = field(default_factory=dict)

    def params(self, t: Tensor | None) -> QuantParams | None:
        return None if t is None or t.is_const else self.quant.get(t.name)

    def int_tensor(self, t: Tensor) -> Tensor:
        """The integers of annotated tensor `t`, quantizing it here if a float step made it."""
        if id(t) not in self.ints:
            params = self.quant[t.name]
            q = Tensor(f"{t.name}_int8", _INT_DTYPES[params.zero_point.dtype], t.shape)
            scale, zero = _scalar_tensors(t.name, params)
            self.out.append(Step(_node("QuantizeLinear", f"{t.name}_quantize", {}),
                                 [t, scale, zero], [q]))
            self.ints[id(t)] = q
            self._count("QuantizeLinear")
        return self.ints[id(t)]

    def float_tensor(self, t: Tensor | None) -> Tensor | None:
        """What a float step reads for `t`: DequantizeLinear of its integers when annotated."""
        if t is None or self.params(t) is None:
            return t
        if id(t) not in self.floats:
            q = self.int_tensor(t)
            f = Tensor(f"{t.name}_dequantized", t.dtype, t.shape)
            scale, zero = _scalar_tensors(t.name, self.quant[t.name])
            self.out.append(Step(_node("DequantizeLinear", f"{t.name}_dequantize", {}),
                                 [q, scale, zero], [f]))
            self.floats[id(t)] = f
            self._count("DequantizeLinear")
        return self.floats[id(t)]

    def single_reader(self, t: Tensor, after: int) -> int | None:
        users = self.readers.get(id(t), [])
        if len(users) != 1 or id(t) in self.outputs or users[0] <= after:
            return None
        return users[0]

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


def _scalar_tensors(name: str, params: QuantParams) -> tuple[Tensor, Tensor]:
    return (_const(f"{name}_scale", params.scale.astype(np.float32).reshape(())),
            _const(f"{name}_zero_point", params.zero_point.reshape(())))


def lower_int8(program: Program, graph: Graph) -> dict[str, int]:
    """Rewrite the Program's annotated groups as integer steps; counts by step kind."""
    quant = quant_map(graph)
    if not quant:
        return {}
    state = _State(quant, {id(t) for t in program.outputs}, program.readers(), program.steps,
                   {id(t): i for i, s in enumerate(program.steps) for t in s.outputs})
    weights = {v.name: v.quant for v in graph.values() if v.is_const and v.quant is not None}
    for i, step in enumerate(program.steps):
        if i in state.skip:
            continue
        if not (_lower_linear(state, i, step, weights) or _lower_other(state, step)):
            step.inputs = [state.float_tensor(t) for t in step.inputs]
            state.out.append(step)
    program.steps = state.out
    if state.counts:
        log.info("int8 lowering: %s", ", ".join(f"{k} {v}" for k, v in
                                                 sorted(state.counts.items())))
    return state.counts


# --- Conv / Gemm / MatMul ---------------------------------------------------------------------

def _weight_rows(step: Step, params: QuantParams) -> np.ndarray | None:
    """The integer weights as [output channels, K] rows, None when not per output channel."""
    w = step.inputs[1]
    op, axis = step.op_type, params.axis
    q = quantize_const(w.const, params)
    if params.zero_point.any() or q.dtype != np.int8:
        return None
    per_channel = params.scale.size > 1
    if op == "Conv":
        return q.reshape(q.shape[0], -1) if not per_channel or axis == 0 else None
    trans_b = op == "Gemm" and int(step.node.attrs.get("transB", 0)) == 1
    if w.rank != 2:
        return None
    if trans_b:
        return q if not per_channel or axis == 0 else None
    return np.ascontiguousarray(q.T) if not per_channel or axis == 1 else None


def _bias(step: Step, weights: dict[str, QuantParams], rows: int) -> np.ndarray | None | bool:
    """int32 bias per row; None when absent; False when it cannot be used."""
    b = step.inputs[2] if len(step.inputs) > 2 else None
    if b is None:
        return None
    params = weights.get(b.name)
    if not b.is_const or params is None or params.zero_point.dtype != np.int32 or \
            b.size != rows:
        return False
    return quantize_const(b.const, params).reshape(-1).astype(np.int32)


def _linear_ok(step: Step) -> bool:
    node = step.node
    if node.domain or step.op_type not in ("Conv", "Gemm", "MatMul"):
        return False
    if step.op_type == "Gemm":
        a = node.attrs
        return int(a.get("transA", 0)) == 0 and float(a.get("alpha", 1.0)) == 1.0 and \
            float(a.get("beta", 1.0)) == 1.0
    if step.op_type == "MatMul":
        return step.inputs[0].rank >= 2 and step.inputs[1].rank == 2
    return step.inputs[0].rank == 4 and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "") \
        and len(node.attrs.get("pads", [0] * 4)) == 4


def _lower_linear(state: _State, i: int, step: Step, weights: dict[str, QuantParams]) -> bool:
    if not _linear_ok(step):
        return False
    x, w = step.inputs[0], step.inputs[1]
    x_params, w_params = state.params(x), weights.get(w.name) if w.is_const else None
    if x_params is None or w_params is None:
        return False
    rows = _weight_rows(step, w_params)
    if rows is None:
        return False
    bias = _bias(step, weights, rows.shape[0])
    if bias is False:
        return False
    x_scale, _ = _scalar(x_params)
    x_zp = packing.stored_zero_point(x_params.zero_point)
    out, clamp, absorbed = _output(state, i, step)
    attrs: dict[str, Any] = dict(step.node.attrs)
    if step.op_type == "Conv":  # the rows lose the window's shape: keep it as an attribute
        attrs.setdefault("kernel_shape", list(w.shape[2:]))
    out_params = state.params(out) if clamp is not None else None
    mult = packing.multipliers(x_scale, w_params.scale, None if out_params is None else
                               _scalar(out_params)[0], rows.shape[0])
    attrs.update(flip=int(x_params.zero_point.dtype == np.int8), x_zero_point=x_zp,
                 narrow=int(packing.is_narrow(rows)))
    if out_params is None:  # a float result, for float readers (acc * x_scale * w_scale)
        result = step.outputs[0]
        attrs.update(out_type="f32", y_zero_point=0, lo=0, hi=0)
        outputs = [result]
    else:
        y_zp = _scalar(out_params)[1]
        result = Tensor(f"{out.name}_int8", _INT_DTYPES[out_params.zero_point.dtype], out.shape)
        attrs.update(out_type="u8" if result.dtype == DType.UINT8 else "s8",
                     y_zero_point=y_zp, lo=clamp[0], hi=clamp[1])
        state.ints[id(out)] = result
        outputs = [result]
    state.skip.update(absorbed)
    fused_add = _fuse_add(state, i, out, result, attrs, absorbed) if out_params is not None else None
    if fused_add is not None:
        outputs = [fused_add]
    name = step.node.name
    inputs = [state.int_tensor(x), _const(f"{w.name}_int8", rows),
              _const(f"{name}_bias_folded", packing.folded_bias(rows, bias, x_zp)),
              _const(f"{name}_multiplier", mult)]
    if fused_add is not None:
        inputs.append(attrs.pop("residual"))
    op = "Int8Conv" if step.op_type == "Conv" else "Int8MatMul"
    state.out.append(Step(_node(op, name, attrs), inputs, outputs))
    state._count(op)
    return True


def _output(state: _State, i: int, step: Step) -> tuple[Tensor, tuple[int, int] | None,
                                                         list[int]]:
    """The tensor the integer step produces, its clamp, and the steps it absorbs: the step's own
    annotated output, or the annotated output of a single following Relu/Clip; clamp None means
    a float output."""
    y = step.outputs[0]
    params = state.params(y)
    if params is not None and id(y) not in state.outputs:
        return y, int_range(params.zero_point.dtype), []
    j = state.single_reader(y, i)
    if params is None and j is not None:
        act = state.steps[j]
        z = act.outputs[0]
        act_params = state.params(z)
        bounds = _activation_bounds(act)
        if act_params is not None and bounds is not None and id(z) not in state.outputs and \
                act.inputs[0] is y:
            scale, zp = _scalar(act_params)
            zp_array = np.asarray(zp, act_params.zero_point.dtype)
            # clip in float then quantize == quantize then clamp (rounding is monotone)
            low, high = (limit if bound is None else int(quantize_linear(bound, scale, zp_array))
                         for bound, limit in zip(bounds, int_range(zp_array.dtype)))
            return z, (low, high), [j]
    return y, None, []


def _activation_bounds(step: Step) -> tuple[float | None, float | None] | None:
    if step.node.domain or step.op_type not in ("Relu", "Clip"):
        return None
    if step.op_type == "Relu":
        return 0.0, None
    bounds = []
    for k in (1, 2):
        t = step.inputs[k] if len(step.inputs) > k else None
        if t is not None and not t.is_const:
            return None
        bounds.append(None if t is None else float(t.const.reshape(-1)[0]))
    return bounds[0], bounds[1]


def _fuse_add(state: _State, i: int, out: Tensor, result: Tensor, attrs: dict[str, Any],
              absorbed: list[int]) -> Tensor | None:
    """Fold a QLinearAdd reading step i's requantized output into its epilogue; the residual
    operand must be computed before step i (a graph input or an earlier step's output)."""
    j = state.single_reader(out, max([*absorbed, i]))
    if j is None:
        return None
    add = state.steps[j]
    params = _qadd_params(state, add)
    if params is None or add.inputs[0] is not out or add.inputs[1].shape != out.shape:
        return None
    other, y = add.inputs[1], add.outputs[0]
    if state.produced_at.get(id(other), -1) >= i:
        return None
    fused = Tensor(f"{y.name}_int8", _INT_DTYPES[state.params(y).zero_point.dtype], y.shape)
    if fused.dtype != result.dtype:
        return None
    ra, rb, fixed, lo, hi = params
    attrs.update(ratio_a=float(ra), ratio_b=float(rb), fixed=float(fixed), add_lo=lo,
                 add_hi=hi, residual=state.int_tensor(other))
    state.ints[id(y)] = fused
    state.skip.add(j)
    state._count("fused QLinearAdd")
    return fused


def _qadd_params(state: _State, add: Step) -> tuple | None:
    """(ratio_a, ratio_b, fixed, lo, hi) of an Add of two annotated values into an annotated
    value of one integer type, else None."""
    if add.node.domain or add.op_type != "Add" or len(add.inputs) != 2:
        return None
    a, b = add.inputs
    y = add.outputs[0]
    pa, pb, py = state.params(a), state.params(b), state.params(y)
    if pa is None or pb is None or py is None or id(y) in state.outputs:
        return None
    dtype = py.zero_point.dtype
    if pa.zero_point.dtype != dtype or pb.zero_point.dtype != dtype:
        return None
    (sa, za), (sb, zb), (sc, zc) = _scalar(pa), _scalar(pb), _scalar(py)
    ra, rb, fixed = reference.qladd_params(sa, za, sb, zb, sc, zc)
    lo, hi = int_range(dtype)
    return ra, rb, fixed, lo, hi


# --- the other integer ops ---------------------------------------------------------------------

def _lower_other(state: _State, step: Step) -> bool:
    if step.node.domain:
        return False
    y = step.outputs[0] if step.outputs else None
    py = state.params(y)
    if py is None or id(y) in state.outputs or len(step.outputs) != 1:
        return False
    op = step.op_type
    if op == "MaxPool" and _lower_maxpool(state, step, py):
        return True
    if op in VIEW_OPS:
        return _lower_view(state, step, py)
    if op == "Add":
        return _lower_add(state, step, py)
    if op == "GlobalAveragePool":
        return _lower_global_pool(state, step, py)
    if op == "ReduceMean":
        return _lower_reduce_mean(state, step, py)
    if op == "Concat":
        return _lower_concat(state, step, py)
    return False


def _lower_view(state: _State, step: Step, py: QuantParams) -> bool:
    x = step.inputs[0]
    px = state.params(x)
    if px is None or not _same_params(px, py) or any(
            t is not None and not t.is_const for t in step.inputs[1:]):
        return False
    y = step.outputs[0]
    q = Tensor(f"{y.name}_int8", _INT_DTYPES[py.zero_point.dtype], y.shape)
    state.out.append(Step(step.node, [state.int_tensor(x), *step.inputs[1:]], [q],
                          algorithm=step.algorithm))
    state.ints[id(y)] = q
    state._count(step.op_type)
    return True


def _lower_maxpool(state: _State, step: Step, py: QuantParams) -> bool:
    """A 2-D MaxPool of integers sharing the output's parameters: `Int8MaxPool`, its geometry
    resolved (auto_pad, ceil_mode) into explicit attributes."""
    x, y = step.inputs[0], step.outputs[0]
    px = state.params(x)
    if px is None or not _same_params(px, py) or x.rank != 4:
        return False
    geometry = ConvGeometry.of(step.node, x.shape[2:], y.shape[2:])
    attrs = {"kernel_shape": list(geometry.kernel), "strides": list(geometry.strides),
             "pads": list(geometry.pads), "dilations": list(geometry.dilations)}
    q = Tensor(f"{y.name}_int8", _INT_DTYPES[py.zero_point.dtype], y.shape)
    state.out.append(Step(_node("Int8MaxPool", step.node.name, attrs), [state.int_tensor(x)],
                          [q]))
    state.ints[id(y)] = q
    state._count("Int8MaxPool")
    return True


def _lower_add(state: _State, step: Step, py: QuantParams) -> bool:
    params = _qadd_params(state, step)
    a, b = step.inputs
    if params is None or a.shape != step.outputs[0].shape or b.shape != a.shape and b.size != 1:
        return False
    ra, rb, fixed, lo, hi = params
    y = step.outputs[0]
    q = Tensor(f"{y.name}_int8", _INT_DTYPES[py.zero_point.dtype], y.shape)
    attrs = {"ratio_a": float(ra), "ratio_b": float(rb), "fixed": float(fixed), "lo": lo, "hi": hi}
    state.out.append(Step(_node("Int8Add", step.node.name, attrs),
                          [state.int_tensor(a), state.int_tensor(b)], [q]))
    state.ints[id(y)] = q
    state._count("Int8Add")
    return True


def _lower_global_pool(state: _State, step: Step, py: QuantParams) -> bool:
    x = step.inputs[0]
    px = state.params(x)
    if px is None or px.zero_point.dtype != py.zero_point.dtype or x.rank < 3:
        return False
    (sx, zx), (sy, zy) = _scalar(px), _scalar(py)
    size = int(np.prod(x.shape[2:]))
    scale = np.float32(np.float32(sx) / np.float32(np.float32(sy) * np.float32(size)))
    y = step.outputs[0]
    q = Tensor(f"{y.name}_int8", _INT_DTYPES[py.zero_point.dtype], y.shape)
    attrs = {"x_zero_point": zx, "scale": float(scale), "y_zero_point": zy}
    state.out.append(Step(_node("Int8GlobalAveragePool", step.node.name, attrs),
                          [state.int_tensor(x)], [q]))
    state.ints[id(y)] = q
    state._count("Int8GlobalAveragePool")
    return True


def _trailing_axes(step: Step, rank: int) -> int | None:
    """The first reduced axis of a ReduceMean reducing axes first..rank-1 (first >= 1), else
    None."""
    if len(step.inputs) > 1 and step.inputs[1] is not None:
        axes_input = step.inputs[1]
        if not axes_input.is_const:
            return None
        axes = [int(a) for a in axes_input.const.reshape(-1)]
    else:
        axes = [int(a) for a in step.node.attrs.get("axes", [])]
    axes = sorted({a % rank for a in axes})
    if not axes or axes[0] == 0 or axes != list(range(axes[0], rank)):
        return None
    return axes[0]


def _lower_reduce_mean(state: _State, step: Step, py: QuantParams) -> bool:
    """DequantizeLinear -> ReduceMean over trailing axes -> QuantizeLinear on the integers, as
    `Int8ReduceMean`. onnxruntime has no integer kernel for it: it runs the float ops, so the
    integers depend on its float sum's order (reference.qdq_reduce_mean reproduces it), not
    QLinearGlobalAveragePool's exact integer sum."""
    from graphopt.backend.c.registry import has_emitter

    x, y = step.inputs[0], step.outputs[0]
    px = state.params(x)
    if px is None or px.zero_point.dtype != py.zero_point.dtype or x.rank < 2:
        return False
    first = _trailing_axes(step, x.rank)
    node = _node("Int8ReduceMean", step.node.name, {})
    if first is None or not has_emitter(node):
        return False
    (sx, zx), (sy, zy) = _scalar(px), _scalar(py)
    node.attrs.update(rows=int(np.prod(x.shape[:first])), x_scale=sx, x_zero_point=zx,
                      y_scale=sy, y_zero_point=zy)
    q = Tensor(f"{y.name}_int8", _INT_DTYPES[py.zero_point.dtype], y.shape)
    state.out.append(Step(node, [state.int_tensor(x)], [q]))
    state.ints[id(y)] = q
    state._count("Int8ReduceMean")
    return True


def _lower_concat(state: _State, step: Step, py: QuantParams) -> bool:
    params = [state.params(t) for t in step.inputs]
    if any(p is None for p in params):
        return False
    y = step.outputs[0]
    q = Tensor(f"{y.name}_int8", _INT_DTYPES[py.zero_point.dtype], y.shape)
    sources = [[*_scalar(p), int(p.zero_point.dtype == np.int8)] for p in params]
    attrs = {"axis": int(step.node.attrs.get("axis", 0)) % y.rank, "sources": sources,
             "y_scale": _scalar(py)[0], "y_zero_point": _scalar(py)[1]}
    state.out.append(Step(_node("Int8Concat", step.node.name, attrs),
                          [state.int_tensor(t) for t in step.inputs], [q]))
    state.ints[id(y)] = q
    state._count("Int8Concat")
    return True


def absorb_qdq_nodes(graph: Graph) -> Graph:
    """The graph with explicit QuantizeLinear/DequantizeLinear pairs turned into `Value.quant`
    annotations (the absorb-qdq pass), so QDQ files reach lower_int8 like graphopt's own
    quantized graphs; graphs without Q/DQ nodes are returned as they are."""
    from graphopt_passes.absorb_qdq import has_qdq

    from graphopt.optimizer import optimize

    if not has_qdq(graph):
        return graph
    return optimize(graph, passes="absorb-qdq").graph
