"""The backend's view of a model: concrete tensors and the steps that compute them.

A `Program` is a graph specialized to concrete input shapes: every tensor has a static shape,
shape-derived subgraphs (Shape -> Gather -> Concat -> Reshape...) are folded into constants,
and what is left is the list of `Step`s the C code executes, in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.ir.graph import Node
from graphopt.ir.types import DType


@dataclass(eq=False)
class Tensor:
    """One value with a concrete shape; `const` holds its data when known at compile time."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    const: np.ndarray | None = None
    # "" for ONNX row-major; a blocked layout name ("NCHW8c") set by layout selection, the
    # shape then being the physical one, [N, C/c, H, W, c] (graphopt/backend/c/nchwc.py)
    layout: str = ""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def describe(self) -> str:
        dims = "x".join(map(str, self.shape)) or "scalar"
        constant = " (constant)" if self.is_const else ""
        return f"'{self.name}' {self.dtype.short}[{dims}]{constant}"

    def __repr__(self) -> str:
        return f"<Tensor {self.describe()}>"


@dataclass(frozen=True)
class EpilogueOp:
    """An elementwise op applied to a Conv/Gemm/MatMul result before it is stored.

    `operands` are the op's other inputs (the accumulated value is operand `position`):
    tensors broadcast against the producing kernel's output, float literals, or None for an
    omitted optional input.
    """

    op_type: str
    attrs: dict[str, Any]
    operands: tuple[Tensor | float | None, ...] = ()
    position: int = 0
    origin: str = ""  # name of the node folded into the epilogue


@dataclass(eq=False)
class Step:
    """One node to execute, with concrete inputs (None for omitted optionals) and outputs."""

    node: Node
    inputs: list[Tensor | None]
    outputs: list[Tensor]
    epilogue: list[EpilogueOp] = field(default_factory=list)
    algorithm: str = ""  # how the emitter computes it, chosen in lowering (c/algorithms.py)

    @property
    def op_type(self) -> str:
        return self.node.op_type

    def describe(self) -> str:
        ins = ", ".join("-" if t is None else t.describe() for t in self.inputs)
        outs = ", ".join(t.describe() for t in self.outputs)
        return f"{self.node.describe()} ({ins}) -> ({outs})"


@dataclass
class Program:
    """Concrete inputs and outputs, constants read by steps, and the steps in execution order."""

    inputs: list[Tensor]
    outputs: list[Tensor]
    steps: list[Step]
    opset: int

    def readers(self) -> dict[int, list[int]]:
        """id(tensor) -> indices of the steps that read it (epilogue operands included)."""
        result: dict[int, list[int]] = {}
        for i, step in enumerate(self.steps):
            for t in step_reads(step):
                result.setdefault(id(t), []).append(i)
        return result


def step_reads(step: Step) -> list[Tensor]:
    """Every tensor a step reads: its inputs and its epilogue operands."""
    reads = [t for t in step.inputs if t is not None]
    for op in step.epilogue:
        reads.extend(t for t in op.operands if isinstance(t, Tensor))
    return reads
