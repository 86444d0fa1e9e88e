"""Constant evaluation: compute an op on numpy arrays exactly as onnxruntime would.

    from graphopt.evaluator import Call, evaluate, evaluate_node
    evaluate(Call("Add", (a, b)))          -> [a + b]
    evaluate_node(node, [a, b])            -> the node's outputs for these input arrays

Fast numpy kernels are registered per (domain, op_type) with `@kernel` (modules `elementwise`,
`data_movement`, `reductions`); every other op goes through onnx's ReferenceEvaluator
(`reference`).
`shape_values` evaluates shape tensors partially, keeping symbolic dims symbolic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# Importing the kernel modules registers their kernels.
from graphopt.evaluator import data_movement, elementwise, reductions  # noqa: F401
from graphopt.evaluator.registry import KERNELS, Call, evaluate, find_kernel, kernel
from graphopt.ir.graph import Node


def evaluate_node(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """All outputs of `node` for the given input arrays (None for omitted optional inputs)."""
    opset = node.graph.opset_imports.get(node.domain, 1) if node.graph is not None else 17
    call = Call(node.op_type, tuple(inputs), node.attrs, opset, len(node.outputs), node.domain)
    return evaluate(call)


__all__ = ["Call", "evaluate", "evaluate_node", "kernel", "find_kernel", "KERNELS"]
