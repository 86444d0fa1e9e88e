"""A small example model that exercises the optimizer, made on demand (`graphopt make-example`).

It looks like a typical exporter's output: Conv + BatchNormalization + Relu blocks, a shape chain
(Shape -> Gather -> Concat -> Reshape) in front of the classifier, MatMul + Add instead of Gemm,
a leftover Identity and Dropout. Weights are seeded random numbers.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
from onnx import numpy_helper


def make_example_model(seed: int = 0) -> onnx.ModelProto:
    """The example CNN described above (input [1, 1, 8, 8] float, output `probs` [1, 10]),
    with weights drawn from `seed`; checked with onnx.checker."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, name))
        return name

    def conv_bn_relu(x: str, cin: int, cout: int, tag: str) -> str:
        w = const(f"{tag}.w", rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.2)
        nodes.append(oh.make_node("Conv", [x, w], [f"{tag}.conv"], pads=[1, 1, 1, 1]))
        bn = [const(f"{tag}.{k}", v) for k, v in (
            ("scale", rng.uniform(0.5, 1.5, cout).astype(np.float32)),
            ("bias", rng.standard_normal(cout).astype(np.float32) * 0.1),
            ("mean", rng.standard_normal(cout).astype(np.float32) * 0.1),
            ("var", rng.uniform(0.5, 2.0, cout).astype(np.float32)))]
        nodes.append(oh.make_node("BatchNormalization", [f"{tag}.conv", *bn], [f"{tag}.bn"]))
        nodes.append(oh.make_node("Relu", [f"{tag}.bn"], [f"{tag}.out"]))
        return f"{tag}.out"

    x = conv_bn_relu("input", 1, 8, "block1")
    x = conv_bn_relu(x, 8, 16, "block2")
    nodes.append(oh.make_node("MaxPool", [x], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(oh.make_node("Identity", ["pooled"], ["pooled_id"]))
    nodes.append(oh.make_node("Dropout", ["pooled_id"], ["dropped"]))
    # Flatten written the way exporters do it: the batch size read from Shape at run time.
    nodes.append(oh.make_node("Shape", ["dropped"], ["shape"]))
    nodes.append(oh.make_node("Gather", ["shape", const("zero", np.array(0, np.int64))], ["n"]))
    nodes.append(oh.make_node("Unsqueeze", ["n", const("axes0", np.array([0], np.int64))], ["n1"]))
    nodes.append(oh.make_node("Concat", ["n1", const("minus1", np.array([-1], np.int64))],
                              ["flat_shape"], axis=0))
    nodes.append(oh.make_node("Reshape", ["dropped", "flat_shape"], ["flat"]))
    w = const("fc.w", rng.standard_normal((16 * 4 * 4, 10)).astype(np.float32) * 0.05)
    nodes.append(oh.make_node("MatMul", ["flat", w], ["fc.mm"]))
    nodes.append(oh.make_node("Add", ["fc.mm", const("fc.b", np.zeros(10, np.float32))], ["logits"]))
    nodes.append(oh.make_node("Softmax", ["logits"], ["probs"], axis=1))

    graph = oh.make_graph(
        nodes, "example_cnn",
        [oh.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
        [oh.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, [1, 10])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)],
                          producer_name="graphopt.examples")
    onnx.checker.check_model(model)
    return model
