"""Small float models for the INT8 backend tests (onnx.helper), quantized by onnxruntime or by
graphopt in the tests."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def residual_net(seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu -> [Conv+Relu -> Conv] + skip -> Relu -> depthwise Conv+Relu -> MaxPool ->
    Concat(with a grouped 1x1 Conv of it) -> GlobalAveragePool -> Flatten -> Gemm: one of each
    int8 op."""
    rng = np.random.default_rng(seed)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        n("Add", ["c2", "r0"], ["a2"], name="add"),
        n("Relu", ["a2"], ["r2"], name="relu2"),
        n("Conv", ["r2", "wd", "bd"], ["cd"], name="dw", pads=[1, 1, 1, 1], group=8),
        n("Relu", ["cd"], ["rd"], name="relud"),
        n("MaxPool", ["rd"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p", "wp", "bp"], ["cp"], name="pw", group=2),
        n("Concat", ["p", "cp"], ["cat"], name="cat", axis=1),
        n("GlobalAveragePool", ["cat"], ["g"], name="gap"),
        n("Flatten", ["g"], ["f"], name="flatten"),
        n("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1),
    ]
    inits = [_init("w0", rng.normal(0, 0.3, (8, 3, 3, 3))), _init("b0", rng.normal(0, .1, 8)),
             _init("w1", rng.normal(0, 0.2, (8, 8, 3, 3))), _init("b1", rng.normal(0, .1, 8)),
             _init("w2", rng.normal(0, 0.2, (8, 8, 3, 3))), _init("b2", rng.normal(0, .1, 8)),
             _init("wd", rng.normal(0, 0.4, (8, 1, 3, 3))), _init("bd", rng.normal(0, .1, 8)),
             _init("wp", rng.normal(0, 0.4, (8, 4, 1, 1))), _init("bp", rng.normal(0, .1, 8)),
             _init("w3", rng.normal(0, 0.5, (5, 16))), _init("b3", rng.normal(0, .1, 5))]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
