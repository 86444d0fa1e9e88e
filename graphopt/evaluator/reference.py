"""Fallback evaluation through onnx's ReferenceEvaluator, for ops without a numpy kernel.

The op is wrapped in a one-node model whose inputs are typed from the arrays. onnx shape inference
on that model gives the output dtypes the ONNX spec (and onnxruntime) produce; a reference result of
another dtype (some reference ops compute in float64) is refused rather than silently kept, so a
fold never changes a value's type.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
from onnx import helper

from graphopt.errors import UnsupportedError
from graphopt.evaluator.registry import Call
from graphopt.ir.types import DType
from graphopt.onnx_io.exporter import attribute_to_proto

log = logging.getLogger(__name__)


def _single_node_model(call: Call) -> onnx.ModelProto:
    in_names = ["" if a is None else f"in{i}" for i, a in enumerate(call.inputs)]
    while in_names and not in_names[-1]:
        in_names.pop()
    out_names = [f"out{i}" for i in range(call.num_outputs)]
    node = onnx.NodeProto(op_type=call.op_type, domain=call.domain)
    node.input.extend(in_names)
    node.output.extend(out_names)
    node.attribute.extend(attribute_to_proto(k, v) for k, v in call.attrs.items())
    inputs = []
    for name, array in zip(in_names, call.inputs):
        if array is not None:
            elem = DType.STRING if array.dtype == object else DType.from_numpy(array.dtype)
            inputs.append(helper.make_tensor_value_info(name, int(elem), array.shape))
    outputs = [helper.make_tensor_value_info(n, 0, None) for n in out_names]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    opsets = [helper.make_opsetid(call.domain, call.opset)]
    if call.domain:
        opsets.append(helper.make_opsetid("", 17))
    ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def _expected_dtypes(model: onnx.ModelProto) -> list[int]:
    """Output element types per onnx inference (0 where it cannot tell)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as err:  # inference rejects the node: the reference would too
        raise UnsupportedError(f"onnx rejects the node: {str(err).splitlines()[0][:160]}") from None
    return [o.type.tensor_type.elem_type for o in inferred.graph.output]


def evaluate_with_reference(call: Call) -> list[np.ndarray]:
    """Run `call` in onnx.reference.ReferenceEvaluator; raise UnsupportedError when it cannot."""
    from onnx.reference import ReferenceEvaluator

    model = _single_node_model(call)
    expected = _expected_dtypes(model)
    feeds = {f"in{i}": a for i, a in enumerate(call.inputs) if a is not None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow/invalid warnings mirror runtime behaviour
            results = ReferenceEvaluator(model).run(None, feeds)
    except Exception as err:
        raise UnsupportedError(f"cannot evaluate {call.describe()} with onnx's reference "
                               f"evaluator: {type(err).__name__}: {str(err)[:160]}") from None
    arrays = [np.asarray(r) for r in results]
    for i, (array, elem) in enumerate(zip(arrays, expected)):
        got = DType.STRING if array.dtype == object else DType.from_numpy(array.dtype)
        if elem and int(got) != elem:
            raise UnsupportedError(f"the reference evaluator gave {call.describe()} output {i} "
                                   f"dtype {got.name}, but ONNX defines {DType(elem).name}")
    return arrays

