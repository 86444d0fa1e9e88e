"""Codegen-level lowering of scaled dot-product attention into one fused step.

Exported BERT-style models compute each attention layer as

    S = (Q * a) @ (K^T * b)   [scaled: Mul/Div by scalars on Q, K or S]
    S = S + M                 [optional mask, broadcast to S]
    P = Softmax(S, axis=-1)   [then optionally P = Where(IsNaN(P), 0, P)]
    O = P @ V

with Q, K, V reaching the MatMuls through Transposes of the heads out of [B, S, H*D] (and the
output leaving through one). This rewrite replaces that chain by one `FusedAttention` step
(ops/attention.py) whose kernel takes Q, K, V and O in their stored layouts (the Transposes
become strides) and processes one (batch, head) pair per task with the score rows in cache.

Exact up to float rounding: the scalars multiply the scores once (scale = product of the a, b
and score scalars, applied to Q before the dot products; the scores are still scaled before
the mask is added), the softmax is the one the Softmax step runs, and NaN probabilities are
zeroed element by element as Where(IsNaN) does. Only chains whose intermediates nothing else
reads are fused; the mask must be float and broadcast to the scores. This touches only the
backend's Program, never the IR graph (which keeps standard ONNX at every -O level).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from graphopt.backend.c.emitter import broadcast_strides, contiguous_strides
from graphopt.backend.planner import align
from graphopt.backend.program import EpilogueOp, Program, Step, Tensor
from graphopt.ir.graph import Node
from graphopt.ir.types import DType

OP_TYPE = "FusedAttention"
RANK = 4  # operands are handled as [batch, heads, rows, features]
# Per-task scratch (packed K^T and V of one head plus one block of rows) is capped at 1 MiB:
# 271 KiB at sequence 512 and head size 64 (BERT-base). Longer sequences keep the unfused steps.
MAX_TASK_FLOATS = 1 << 18


@dataclass
class _Operand:
    """A MatMul operand traced back to the tensor stored in memory: tensor + per-dim strides."""

    tensor: Tensor
    shape: tuple[int, ...]
    strides: list[int]
    steps: list[int] = field(default_factory=list)  # Transposes / scalings absorbed
    scale: float = 1.0


@dataclass
class _Match:
    steps: set[int]  # step indices the fused step replaces
    anchor: int  # where the fused step goes (the P @ V MatMul)
    step: Step


def fuse_attention(program: Program) -> int:
    """Replace every attention chain the docstring describes by one step; returns how many."""
    fused = 0
    while True:
        match = _find(program)
        if match is None:
            return fused
        steps = []
        for i, step in enumerate(program.steps):
            if i == match.anchor:
                steps.append(match.step)
            elif i not in match.steps:
                steps.append(step)
        program.steps[:] = steps
        fused += 1


def _find(program: Program) -> _Match | None:
    ctx = _Context(program)
    for i, step in enumerate(program.steps):
        if step.op_type == "Softmax" and not step.node.domain:
            match = ctx.match(i)
            if match is not None:
                return match
    return None


class _Context:
    """Readers and producers of one Program state, and the matcher over them."""

    def __init__(self, program: Program):
        self.program = program
        self.readers = program.readers()
        self.producer = {id(t): i for i, s in enumerate(program.steps) for t in s.outputs}
        self.outputs = {id(t) for t in program.outputs}

    # --- graph facts ---------------------------------------------------------------------------
    def only_reader(self, tensor: Tensor) -> int | None:
        """The one step reading `tensor` if it is not a program output, else None."""
        users = self.readers.get(id(tensor), [])
        if id(tensor) in self.outputs or len(users) != 1:
            return None
        return users[0]

    # --- the match -----------------------------------------------------------------------------
    def match(self, softmax_index: int) -> _Match | None:
        steps = self.program.steps
        softmax = steps[softmax_index]
        scores, probs = softmax.inputs[0], softmax.outputs[0]
        if scores.dtype != DType.FLOAT or scores.rank < 2 or scores.rank > RANK or \
                int(softmax.node.attrs.get("axis", -1)) % scores.rank != scores.rank - 1:
            return None
        consumed = {softmax_index}
        ops: list[EpilogueOp] = []
        while True:  # walk back over elementwise score ops to the Q @ K^T MatMul
            i = self.producer.get(id(scores))
            if i is None or self.only_reader(scores) is None:
                return None
            step = steps[i]
            if step.op_type == "MatMul" and not step.node.domain:
                break
            op = self._score_op(step)
            if op is None:
                return None
            ops.insert(0, op)
            consumed.add(i)
            scores = step.inputs[op.position]
        qk = steps[i]
        consumed.add(i)
        scale_mask = _scale_and_mask([*qk.epilogue, *ops], qk.outputs[0].shape)
        if scale_mask is None:
            return None
        scale, mask = scale_mask
        probs, nan_to_zero = self._nan_to_zero(probs, consumed)
        pv_index = self.only_reader(probs)
        if pv_index is None:
            return None
        pv = steps[pv_index]
        if pv.op_type != "MatMul" or pv.node.domain or pv.epilogue or pv.inputs[0] is not probs:
            return None
        consumed.add(pv_index)
        q = self.trace(qk.inputs[0])
        k = self.trace(qk.inputs[1])
        v = self.trace(pv.inputs[1], scalings=False)  # a scaled V scales O, not the scores
        out = self.output(pv)
        if not _shapes_fit(q, k, v, mask, scores.shape):
            return None
        for operand in (q, k, v, out):
            consumed.update(operand.steps)
        scale *= q.scale * k.scale
        if not math.isfinite(scale):  # written into the C source as a literal
            return None
        return _Match(consumed, pv_index, _fused_step(q, k, v, mask, out, scale, nan_to_zero,
                                                      pv.node.name))

    def _nan_to_zero(self, probs: Tensor, consumed: set[int]) -> tuple[Tensor, bool]:
        """Where(IsNaN(P), 0, P): the guard exporters add for fully masked rows."""
        users = self.readers.get(id(probs), [])
        if id(probs) in self.outputs or len(users) != 2:
            return probs, False
        a, b = (self.program.steps[u] for u in users)
        isnan, where = (a, b) if a.op_type == "IsNaN" else (b, a)
        if isnan.op_type != "IsNaN" or where.op_type != "Where" or isnan.epilogue or \
                self.only_reader(isnan.outputs[0]) != self.program.steps.index(where):
            return probs, False
        cond, zero, same = where.inputs
        if cond is not isnan.outputs[0] or same is not probs or zero is None or \
                zero.const is None or zero.size != 1 or float(zero.const.reshape(-1)[0]) != 0.0 \
                or where.outputs[0].shape != probs.shape:
            return probs, False
        consumed.update(users)
        return where.outputs[0], True

    def trace(self, tensor: Tensor, scalings: bool = True) -> _Operand:
        """Follow single-reader Transposes (and, with `scalings`, Mul/Div by scalars, whose
        factors multiply `.scale`) back to the stored tensor."""
        perm = list(range(tensor.rank))
        operand = _Operand(tensor, tensor.shape, [])
        while True:
            i = self.producer.get(id(operand.tensor))
            if i is None or self.only_reader(operand.tensor) is None:
                break
            step = self.program.steps[i]
            if step.node.domain or step.epilogue:
                break
            if step.op_type == "Transpose":
                order = step.node.attrs.get("perm") or list(reversed(range(tensor.rank)))
                perm = [int(order[p]) for p in perm]
                operand.tensor = step.inputs[0]
            else:
                op = self._score_op(step) if scalings else None
                if op is None or op.op_type == "Add":
                    break
                operand.scale *= _factor(op)
                operand.tensor = step.inputs[op.position]
            operand.steps.append(i)
        stored = contiguous_strides(operand.tensor.shape)
        operand.strides = [stored[p] for p in perm]
        return operand

    def _score_op(self, step: Step) -> EpilogueOp | None:
        """`step` as an op on its data input (at `.position`): Mul/Div by a scalar constant, or
        Add of a tensor; the data input is the computed one of the output's shape (for an Add
        of two such, the first whose other operand is ready)."""
        if step.op_type not in ("Mul", "Div", "Add") or step.node.domain or step.epilogue or \
                len(step.inputs) != 2 or step.outputs[0].dtype != DType.FLOAT:
            return None
        out = step.outputs[0]
        for position in (0, 1):
            x, other = step.inputs[position], step.inputs[1 - position]
            if x is None or other is None or x.shape != out.shape or \
                    other.dtype != DType.FLOAT or id(x) not in self.producer:
                continue
            if step.op_type == "Add" or other.const is not None and other.size == 1 and (
                    step.op_type == "Mul" or position == 0):
                return EpilogueOp(step.op_type, {}, (other,), position, step.node.name)
        return None

    def output(self, pv: Step) -> _Operand:
        """Where O goes: through a single-reader Transpose when there is one."""
        out = pv.outputs[0]
        operand = _Operand(out, out.shape, contiguous_strides(out.shape))
        reader = self.only_reader(out)
        if reader is None:  # a program output, or read by several steps: written as it is
            return operand
        step = self.program.steps[reader]
        if step.op_type != "Transpose" or step.node.domain or step.epilogue:
            return operand
        order = step.node.attrs.get("perm") or list(reversed(range(out.rank)))
        stored = contiguous_strides(step.outputs[0].shape)
        strides = [0] * out.rank
        for position, dim in enumerate(order):
            strides[int(dim)] = stored[position]
        return _Operand(step.outputs[0], out.shape, strides, [reader])


def _factor(op: EpilogueOp) -> float:
    """The factor a scalar Mul/Div applies (inf for a division by 0: the match is refused)."""
    value = float(np.asarray(op.operands[0].const).reshape(-1)[0])
    if op.op_type == "Mul":
        return value
    return 1.0 / value if value else math.inf


def _scale_and_mask(ops: list[EpilogueOp], shape: tuple[int, ...]
                    ) -> tuple[float, Tensor | None] | None:
    """(scale, mask) for score ops that are scalings then at most one mask Add, else None."""
    scale, mask = 1.0, None
    for op in ops:
        operand = op.operands[0] if len(op.operands) == 1 else None
        if not isinstance(operand, Tensor):
            return None
        if op.op_type == "Add" and mask is None and _broadcasts(operand.shape, shape):
            mask = operand
        elif op.op_type in ("Mul", "Div") and mask is None and operand.const is not None and \
                operand.size == 1 and (op.op_type == "Mul" or op.position == 0):
            scale *= _factor(op)
        else:
            return None
    return scale, mask


def _broadcasts(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        broadcast_strides(shape, target)
    except ValueError:
        return False
    return True


def _padded(operand: _Operand) -> tuple[list[int], list[int]]:
    """Shape and strides as [batch, heads, rows, features] (leading dims of 1 added)."""
    extra = RANK - len(operand.shape)
    return [1] * extra + list(operand.shape), [0] * extra + list(operand.strides)


def _shapes_fit(q: _Operand, k: _Operand, v: _Operand, mask: Tensor | None,
                scores: tuple[int, ...]) -> bool:
    """Plain [.., S, D] operands of one float type whose batch dims agree, and a task small
    enough for its scratch to stay in cache."""
    if any(len(o.shape) != len(scores) or o.tensor.dtype != DType.FLOAT for o in (q, k, v)):
        return False
    (qs, _), (ks, _), (vs, _) = _padded(q), _padded(k), _padded(v)
    if qs[:2] != ks[:2] or qs[:2] != vs[:2] or qs[3] != ks[2] or ks[3] != vs[2]:
        return False
    depth, keys, width = qs[3], ks[3], vs[3]
    return task_floats(depth, keys, width) <= MAX_TASK_FLOATS and (
        mask is None or mask.dtype == DType.FLOAT)


# Tile sizes of csrc/graphopt_rows.h's attention tiles (GRAPHOPT_ATTN_ROWS / _COLS).
ATTN_ROWS, ATTN_COLS = 6, 16


def task_floats(depth: int, keys: int, width: int) -> int:
    """Scratch floats of one (batch, head) task: K^T and V packed, Q, scores and O of one block."""
    keys_p, width_p = align(keys, ATTN_COLS), align(width, ATTN_COLS)
    return depth * keys_p + keys * width_p + ATTN_ROWS * (depth + keys_p + width_p)


def _fused_step(q: _Operand, k: _Operand, v: _Operand, mask: Tensor | None, out: _Operand,
                scale: float, nan_to_zero: bool, name: str) -> Step:
    (qs, q_str), (_, k_str), (vs, v_str), (_, o_str) = map(_padded, (q, k, v, out))
    batch, heads, rows, depth = qs
    # K arrives as [.., D, S_k] (the MatMul's right operand): index it as [.., S_k, D].
    k_str = [k_str[0], k_str[1], k_str[3], k_str[2]]
    keys = k.shape[-1]
    attrs: dict[str, object] = {
        "dims": [batch, heads, rows, keys, depth, vs[3]], "scale": float(scale),
        "nan_to_zero": int(nan_to_zero), "q_strides": q_str, "k_strides": k_str,
        "v_strides": v_str, "y_strides": o_str,
    }
    if mask is not None:
        score_shape = (batch, heads, rows, keys)
        attrs["mask_strides"] = broadcast_strides(mask.shape, score_shape)
    node = Node(OP_TYPE, [], [], attrs, name=name)
    node.origin = "fuse-attention"
    return Step(node, [q.tensor, k.tensor, v.tensor, mask], [out.tensor])
