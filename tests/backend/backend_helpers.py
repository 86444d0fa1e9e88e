"""Helpers for backend tests: build small ONNX models, compile them, compare with onnxruntime."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphopt.backend import compile as compile_model
from graphopt.numerics import run_onnxruntime
from graphopt.testing import assert_outputs_match, tolerance_from


def make_model(nodes: Sequence[onnx.NodeProto], inputs: Mapping[str, tuple[int, Sequence]],
               outputs: Sequence[str], initializers: Mapping[str, np.ndarray] | None = None,
               opset: int = 17) -> onnx.ModelProto:
    """A checked model; output types come from onnx shape inference."""
    graph_inputs = [helper.make_tensor_value_info(n, t, list(s)) for n, (t, s) in inputs.items()]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()]
    known = {v.name: v for v in graph_inputs}
    known.update((t.name, helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
                 for t in inits)
    probe = helper.make_graph(list(nodes), "test", graph_inputs,
                              [known.get(o) or helper.make_tensor_value_info(o, 0, None)
                               for o in outputs], inits)
    model = helper.make_model(probe, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    types = {**known, **{v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)
                         if v.type.tensor_type.elem_type}}
    del model.graph.output[:]
    model.graph.output.extend(types[o] for o in outputs)
    onnx.checker.check_model(model)
    return model


def random_feeds(model: onnx.ModelProto, seed: int = 0,
                 overrides: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    inits = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in inits:
            continue
        if overrides and value.name in overrides:
            feeds[value.name] = overrides[value.name]
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_value for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if dtype == np.bool_:
            feeds[value.name] = rng.random(shape) > 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(-5, 6, size=shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def check_against_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray] | None = None,
                              target: str = "native", rtol: float | None = None,
                              atol: float | None = None, **compile_options) -> list[np.ndarray]:
    """Compile (no graphopt passes), run, and assert every output matches onnxruntime by
    graphopt.numerics' rule: the dtype's tolerance unless `rtol`/`atol` replace it."""
    feeds = dict(feeds) if feeds is not None else random_feeds(model)
    compiled = compile_model(model, optimize=False, target=target, **compile_options)
    got = compiled.run(feeds)
    want = run_onnxruntime(model, feeds)
    names = [o.name for o in model.graph.output]
    assert_outputs_match(names, want, got, tolerance_from(rtol, atol),
                         context="C backend vs onnxruntime")
    return got


def scaled_weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """float32 weights ~N(0, 1/fan_in) (fan_in: the product of shape[1:]), so each layer's
    outputs keep the scale of its inputs."""
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def conv_algorithms(model: onnx.ModelProto, **compile_options) -> dict[str, str]:
    """The algorithm lowering chose for each Conv of `model` (compiled without graphopt's
    passes), by output name."""
    compiled = compile_model(model, optimize=False, **compile_options)
    return {step.outputs[0].name: step.algorithm for step in compiled.programs()[0].steps
            if step.op_type == "Conv"}
