"""Codegen-level lowering on a Program: run each IR fusion group as one kernel.

The groups are the IR's (graphopt.ir.fusion, stamped by the group-epilogues pass; the NPU model
reads the same ones): a Conv/Gemm/MatMul step absorbs the steps of its group's epilogue nodes,
one at a time and in order (a SiLU's Sigmoid and Mul together, as one Swish op), as epilogue
ops applied to each output tile while it is still in cache, so the intermediate tensors are
never written. graphopt.ir.fusion says why that is exact.

The backend may end a group early where its epilogue code cannot express an op (a float32
result, an op in the scalar expression table, at most MAX_OPERANDS pointer operands); the rest
of the group then runs as ordinary steps. Re-checked here on concrete shapes: the consumer keeps
the producer's output shape and its other operands are ready before the producer runs. This
touches only the backend's Program, never the IR graph.
"""
from __future__ import annotations

from graphopt.backend.c import algorithms, exprs
from graphopt.backend.c.target import Target
from graphopt.backend.c.epilogue import MAX_OPERANDS, epilogue_problem
from graphopt.backend.fuse_attention import fuse_attention
from graphopt.backend.fuse_gelu import fuse_gelu_epilogues
from graphopt.backend.layouts import LAYOUT_MODES, assign_layouts, layout_choice  # noqa: F401
from graphopt.backend.program import EpilogueOp, Program, Step, Tensor
from graphopt.ir.types import DType

PRODUCERS = frozenset({"Conv", "Gemm", "MatMul"})


def fuse_epilogues(program: Program) -> int:
    """Fold eligible elementwise steps into their producer; returns how many were folded."""
    folded = fuse_attention(program)  # attention chains first: one step each (fuse_attention.py)
    changed = True
    while changed:
        changed = False
        readers = program.readers()
        produced_at = {id(t): i for i, s in enumerate(program.steps) for t in s.outputs}
        outputs = {id(t) for t in program.outputs}
        for i, step in enumerate(program.steps):
            if step.op_type not in PRODUCERS or step.node.domain:
                continue
            result = step.outputs[0]
            users = readers.get(id(result), [])
            if id(result) in outputs or result.dtype != DType.FLOAT:
                continue
            consumers = [program.steps[u] for u in users]
            if not consumers or not all(_same_group(step, c) for c in consumers):
                continue
            if len(consumers) == 1:
                op = _as_epilogue_op(consumers[0], result, i, produced_at)
            else:
                consumers, op = _as_silu(consumers, result, readers, outputs)
            if op is None or epilogue_problem([*step.epilogue, op]) or \
                    _pointer_operands([*step.epilogue, op]) > MAX_OPERANDS - 1:
                continue
            step.epilogue.append(op)
            step.outputs[0] = consumers[-1].outputs[0]
            for consumer in consumers:
                program.steps.remove(consumer)
            folded += len(consumers)
            changed = True
            break
    return folded + fuse_gelu_epilogues(program)  # GELU chains: one epilogue op (fuse_gelu.py)


def _same_group(producer: Step, consumer: Step) -> bool:
    """Whether the IR put the consumer's node in the producer's fusion group."""
    group = producer.node.fusion
    return group is not None and consumer.node.fusion is group and \
        consumer.node in group.epilogue


def _as_silu(consumers: list[Step], result: Tensor, readers: dict[int, list[int]],
             outputs: set[int]) -> tuple[list[Step], EpilogueOp | None]:
    """[Sigmoid, Mul] and one SiLU op (Swish, alpha 1: x / (1 + e^-x) = x * sigmoid(x)) when
    the two readers of `result` are the Sigmoid and Mul of a SiLU the IR grouped
    (graphopt.ir.fusion.silu_readers); re-checked on the steps' concrete tensors."""
    kinds = {c.op_type: c for c in consumers if not c.node.domain and not c.epilogue}
    sigmoid, mul = kinds.get("Sigmoid"), kinds.get("Mul")
    if len(consumers) != 2 or sigmoid is None or mul is None:
        return consumers, None
    gate = sigmoid.outputs[0]
    if sorted(map(id, mul.inputs)) != sorted((id(result), id(gate))) or id(gate) in outputs or \
            len(readers.get(id(gate), [])) != 1 or mul.outputs[0].shape != result.shape or \
            mul.outputs[0].dtype != DType.FLOAT:
        return consumers, None
    return [sigmoid, mul], EpilogueOp("Swish", {"alpha": 1.0}, (), 0, mul.node.name)


def _as_epilogue_op(consumer: Step, result: Tensor, producer_index: int,
                    produced_at: dict[int, int]) -> EpilogueOp | None:
    node = consumer.node
    key = exprs.table_key(node.op_type, node.attrs)
    if node.domain or len(consumer.outputs) != 1 or key is None:
        return None
    entry = exprs.SCALAR_OPS[key]
    out = consumer.outputs[0]
    if entry.result != "same" or entry.variadic and len(consumer.inputs) != 2:
        return None
    if out.dtype != DType.FLOAT or out.shape != result.shape:
        return None
    positions = [k for k, t in enumerate(consumer.inputs) if t is result]
    if len(positions) != 1:
        return None
    others: list[Tensor | None] = []
    for k, t in enumerate(consumer.inputs):
        if k == positions[0]:
            continue
        if t is not None and (t.dtype != DType.FLOAT or not _ready(t, producer_index, produced_at)):
            return None
        others.append(t)
    return EpilogueOp(node.op_type, dict(node.attrs), tuple(others), positions[0], node.name)


def _ready(tensor: Tensor, producer_index: int, produced_at: dict[int, int]) -> bool:
    """Constant, graph input, or computed by a step before the producer."""
    return tensor.is_const or produced_at.get(id(tensor), -1) < producer_index


def _pointer_operands(ops: list[EpilogueOp]) -> int:
    return len({id(t) for op in ops for t in op.operands
                if isinstance(t, Tensor) and not (t.is_const and t.size == 1)})


def choose_algorithms(program: Program, target: Target) -> dict[str, int]:
    """Record on each step the algorithm its emitter runs on `target` (c/algorithms.py: the
    first registered one that applies to the step's concrete shapes); returns counts by
    name."""
    counts: dict[str, int] = {}
    with algorithms.choosing_for(target):
        for step in program.steps:
            step.algorithm = algorithms.choose(step)
            if step.algorithm:
                key = f"{step.op_type}/{step.algorithm}"
                counts[key] = counts.get(key, 0) + 1
    return counts
