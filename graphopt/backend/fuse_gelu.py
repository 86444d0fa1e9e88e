"""Codegen-level lowering: GELU written out in elementary ops becomes a Gelu epilogue op.

BERT-style exports compute GELU after each feed-forward MatMul as
0.5 * x * (1 + Erf(x / sqrt(2))) (or the tanh form): five elementwise steps, each a full pass
over the widest activation of the layer, which no epilogue absorbs because x is read twice.
The IR pass fuse-gelu turns them into the Gelu op only where the opset allows it (>= 20); here
the same patterns (graphopt_passes.fuse_gelu.ERF_GELU / TANH_GELU) are matched on the nodes of
the Program's steps at any opset, and when x is the output of a Conv/Gemm/MatMul step the
chain becomes one "Gelu" epilogue op of that step: the expression table's Gelu is the
definition the pattern spells out, evaluated once per output element while the tile is in
cache. This touches only the backend's Program, never the IR graph.
"""
from __future__ import annotations

from graphopt.backend.c.epilogue import epilogue_problem
from graphopt.backend.program import EpilogueOp, Program, Step
from graphopt.ir.types import DType
from graphopt.rewrite.pattern import Trace, match_root
from graphopt_passes.fuse_gelu import ERF_GELU, TANH_GELU

PRODUCERS = frozenset({"Conv", "Gemm", "MatMul"})
_FORMS = ((ERF_GELU, {}), (TANH_GELU, {"approximate": "tanh"}))


def fuse_gelu_epilogues(program: Program) -> int:
    """Fold every matched GELU chain into its producer's epilogue; returns how many."""
    fused = 0
    while _fuse_one(program):
        fused += 1
    return fused


def _fuse_one(program: Program) -> bool:
    steps = program.steps
    at = {id(s.node): i for i, s in enumerate(steps)}
    producer = {t.name: i for i, s in enumerate(steps) for t in s.outputs}
    readers = program.readers()
    outputs = {id(t) for t in program.outputs}
    for root_index, root in enumerate(steps):
        if root.op_type not in ("Mul", "Div") or root.node.domain or root.epilogue:
            continue
        for pattern, attrs in _FORMS:
            for bindings in match_root(pattern, root.node, Trace()):
                x = bindings.values["x"]
                chain = [at.get(id(node)) for node in bindings.order]
                source = producer.get(x.name) if x is not None else None
                if source is None or None in chain:
                    continue
                anchor = steps[source]
                if _foldable(anchor, root, set(chain), root_index, readers, outputs, steps):
                    op = EpilogueOp("Gelu", dict(attrs), (), 0, root.node.name)
                    anchor.epilogue.append(op)
                    anchor.outputs[0] = root.outputs[0]
                    program.steps[:] = [s for i, s in enumerate(steps) if i not in set(chain)]
                    return True
    return False


def _foldable(anchor: Step, root: Step, chain: set[int], root_index: int,
              readers: dict[int, list[int]], outputs: set[int], steps: list[Step]) -> bool:
    """The chain reads x = the anchor's float output and nothing else reads its values."""
    x = anchor.outputs[0]
    if anchor.op_type not in PRODUCERS or anchor.node.domain or x.dtype != DType.FLOAT or \
            id(x) in outputs or root.outputs[0].shape != x.shape:
        return False
    if not set(readers.get(id(x), [])) <= chain:
        return False
    for i in chain - {root_index}:
        for t in steps[i].outputs:
            if id(t) in outputs or not set(readers.get(id(t), [])) <= chain:
                return False
    return epilogue_problem([*anchor.epilogue, EpilogueOp("Gelu", {}, (), 0)]) is None
