"""Helpers for the fusion pass tests: models as ONNX text with random constant weights.

A test writes its graph in ONNX text syntax with the weights as graph inputs and names them in
`weights`; `build` turns those inputs into random initializers (so the text stays readable and
the numbers realistic), and `fuse` runs passes and compares onnxruntime outputs before/after.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.ir.graph import Graph
from graphopt.rewrite import fusion_log
from graphopt.testing import assert_same_outputs, parse_model, run_passes

# Fusions reassociate fp32 arithmetic (folded weights, fused kernels); the project-wide target.
RTOL, ATOL = 1e-4, 1e-5


def build(graph_text: str, weights: Iterable[str] = (), opset: int = 17, seed: int = 0,
          positive: Iterable[str] = (), values: Mapping[str, np.ndarray] | None = None,
          ) -> onnx.ModelProto:
    """Parse `graph_text` and make the named inputs constants: random normal, or uniform in
    [0.5, 1.5) for names in `positive` (variances), or the array given in `values`."""
    ir = 10 if opset >= 21 else 9 if opset >= 19 else 8
    model = parse_model(f'<ir_version: {ir}, opset_import: ["" : {opset}]>\n{graph_text}')
    rng = np.random.default_rng(seed)
    wanted, positive, values = set(weights), set(positive), dict(values or {})
    wanted |= set(values)
    kept = []
    for info in model.graph.input:
        if info.name not in wanted:
            kept.append(info)
            continue
        tensor_type = info.type.tensor_type
        shape = [d.dim_value for d in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if info.name in values:
            array = np.asarray(values[info.name], dtype=dtype).reshape(shape)
        elif info.name in positive:
            array = (rng.random(shape) + 0.5).astype(dtype)
        else:
            array = rng.standard_normal(shape).astype(dtype)
        model.graph.initializer.append(numpy_helper.from_array(array, info.name))
    del model.graph.input[:]
    model.graph.input.extend(kept)
    onnx.checker.check_model(model)
    return model


def fuse(model: onnx.ModelProto, passes: str, rtol: float = RTOL, atol: float = ATOL) -> Graph:
    """Run `passes` and check onnxruntime gives the same outputs (within rtol/atol)."""
    graph = run_passes(model, passes)
    assert_same_outputs(model, graph, rtol=rtol, atol=atol)
    return graph


def op_types(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def rewritten(graph: Graph, rule: str) -> int:
    return len(fusion_log(graph).rewritten(rule))


def reasons(graph: Graph, rule: str, at: str | None = None) -> list[str]:
    """Why `rule` did not rewrite, for every candidate or only the one whose output is `at`
    (test models leave nodes unnamed, so the log labels them by their first output)."""
    return [r.reason for r in fusion_log(graph).failures(rule)
            if at is None or r.node.endswith(f"%{at}")]
