"""Codegen-level lowering on a Program: run each IR fusion group as one kernel.

The groups are the IR's (graphopt.ir.fusion, stamped by the group-epilogues pass; the NPU model
reads the same ones): a Conv/Gemm/MatMul step absorbs the steps of its group's epilogue nodes,
one at a time and in order, as epilogue ops applied to each output tile while it is still in
cache, so the intermediate tensors are never written. graphopt.ir.fusion says why that is exact.

The backend may end a group early where its epilogue code cannot express an op (a float32
result, an op in the scalar expression table, at most MAX_OPERANDS pointer operands); the rest
of the group then runs as ordinary steps. Re-checked here on concrete shapes: the consumer keeps
the producer's output shape and its other operands are ready before the producer runs. This
touches only the backend's Program, never the IR graph.
"""
from __future__ import annotations

from graphopt.backend.c import algorithms, exprs
from graphopt.backend.c.epilogue import MAX_OPERANDS, epilogue_problem
from graphopt.backend.program import EpilogueOp, Program, Step, Tensor
from graphopt.ir.types import DType

PRODUCERS = frozenset({"Conv", "Gemm", "MatMul"})


def fuse_epilogues(program: Program) -> int:
    """Fold eligible elementwise steps into their producer; returns how many were folded."""
    folded = 0
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
            if id(result) in outputs or len(users) != 1 or result.dtype != DType.FLOAT:
                continue
            consumer = program.steps[users[0]]
            if not _same_group(step, consumer):
                continue
            op = _as_epilogue_op(consumer, result, i, produced_at)
            if op is None or epilogue_problem([*step.epilogue, op]) or \
                    _pointer_operands([*step.epilogue, op]) > MAX_OPERANDS - 1:
                continue
            step.epilogue.append(op)
            step.outputs[0] = consumer.outputs[0]
            program.steps.remove(consumer)
            folded += 1
            changed = True
            break
    return folded


def _same_group(producer: Step, consumer: Step) -> bool:
    """Whether the IR put the consumer's node in the producer's fusion group."""
    group = producer.node.fusion
    return group is not None and consumer.node.fusion is group and \
        consumer.node in group.epilogue


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


def choose_algorithms(program: Program) -> dict[str, int]:
    """Record on each step the algorithm its emitter runs (c/algorithms.py: the first
    registered one that applies to the step's concrete shapes); returns counts by name."""
    counts: dict[str, int] = {}
    for step in program.steps:
        step.algorithm = algorithms.choose(step)
        if step.algorithm:
            key = f"{step.op_type}/{step.algorithm}"
            counts[key] = counts.get(key, 0) + 1
    return counts
