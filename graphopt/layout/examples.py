"""Small convolution models for layout tests and benchmarks, built with onnx.helper.

`depthwise_blocks`: an EfficientNet/MobileNetV2-style stack of inverted-residual blocks
(1x1 expand + activation, 3x3 depthwise + activation, 1x1 project, residual Add when the shape
allows), on an NCHW input; `conv_chain`: one conv kind repeated, for per-kernel timings.
Weights are seeded random numbers.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
from onnx import numpy_helper


def depthwise_blocks(channels: int = 32, size: int = 56, expand: int = 4,
                     strides: tuple[int, ...] = (1, 2, 1), activation: str = "silu",
                     batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    """Blocks of `channels` -> channels * expand -> channels at the given depthwise strides;
    input `x` [batch, channels, size, size], output `y`. activation: "silu" (Sigmoid and Mul,
    as in EfficientNet), "relu6" (Clip 0..6, MobileNetV2) or "relu"."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, k: int, stride: int, group: int, tag: str) -> str:
        scale = 1.0 / np.sqrt(cin // group * k * k)
        w = const(f"{tag}.w", rng.standard_normal((cout, cin // group, k, k)) * scale)
        b = const(f"{tag}.b", rng.standard_normal(cout) * 0.1)
        nodes.append(oh.make_node("Conv", [x, w, b], [tag], group=group, strides=[stride] * 2,
                                  pads=[k // 2] * 4, kernel_shape=[k, k]))
        return tag

    def act(x: str) -> str:
        if activation == "silu":
            nodes.append(oh.make_node("Sigmoid", [x], [f"{x}.sig"]))
            nodes.append(oh.make_node("Mul", [x, f"{x}.sig"], [f"{x}.act"]))
        elif activation == "relu6":
            nodes.append(oh.make_node("Clip", [x, const(f"{x}.lo", np.array(0.0)),
                                               const(f"{x}.hi", np.array(6.0))], [f"{x}.act"]))
        else:
            nodes.append(oh.make_node("Relu", [x], [f"{x}.act"]))
        return f"{x}.act"

    x, hidden, side = "x", channels * expand, size
    for i, stride in enumerate(strides):
        h = act(conv(x, channels, hidden, 1, 1, 1, f"b{i}.expand"))
        h = act(conv(h, hidden, hidden, 3, stride, hidden, f"b{i}.dw"))
        h = conv(h, hidden, channels, 1, 1, 1, f"b{i}.project")
        if stride == 1:
            nodes.append(oh.make_node("Add", [x, h], [f"b{i}.out"]))
            h = f"b{i}.out"
        x, side = h, (side - 1) // stride + 1
    nodes.append(oh.make_node("Identity", [x], ["y"]))
    graph = oh.make_graph(
        nodes, "depthwise_blocks",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, channels, size, size])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, channels, side, side])],
        inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def conv_chain(kind: str, channels: int, size: int, count: int = 8,
               seed: int = 0) -> onnx.ModelProto:
    """`count` same-shaped convs with bias and Relu, one kind per chain: "depthwise" (3x3,
    stride 1, pad 1) or "pointwise" (1x1): per-kernel timings where the two conversions at the
    ends are amortized over `count` layers."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    depthwise = kind == "depthwise"
    shape = (channels, 1, 3, 3) if depthwise else (channels, channels, 1, 1)
    options = dict(group=channels, pads=[1] * 4, kernel_shape=[3, 3]) if depthwise else \
        dict(kernel_shape=[1, 1])
    x = "x"
    for i in range(count):
        weights = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array(weights.astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}"))
        nodes.append(oh.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], **options))
        nodes.append(oh.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    value = [1, channels, size, size]
    graph = oh.make_graph(nodes, f"{kind}_chain",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, value)],
                          [oh.make_tensor_value_info(x, onnx.TensorProto.FLOAT, value)], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
