"""Reference workloads built with onnx.helper, for paper comparisons and tests.

`alexnet_227` is the original two-GPU AlexNet (Krizhevsky et al. 2012) as Eyeriss evaluated
it: a 227x227x3 input and the five CONV layers with their ReLUs and max-pools, conv2, conv4 and
conv5 split into two groups. Its CONV layers hold 666 M MACs per image:
96*3*11*11*55*55 + 256*48*5*5*27*27 + 384*256*3*3*13*13 + 384*192*3*3*13*13 + 256*192*3*3*13*13.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

# (name, in channels, out channels, kernel, stride, pad, groups, max-pool after)
ALEXNET_CONVS = (
    ("conv1", 3, 96, 11, 4, 0, 1, True),
    ("conv2", 96, 256, 5, 1, 2, 2, True),
    ("conv3", 256, 384, 3, 1, 1, 1, False),
    ("conv4", 384, 384, 3, 1, 1, 2, False),
    ("conv5", 384, 256, 3, 1, 1, 2, True),
)


def alexnet_227(batch: int = 1) -> onnx.ModelProto:
    """The CONV part of the grouped 227x227 AlexNet (weights are zeros: only shapes matter)."""
    nodes, inits = [], []
    current = "image"
    for name, cin, cout, k, stride, pad, groups, pool in ALEXNET_CONVS:
        weight = np.zeros((cout, cin // groups, k, k), dtype=np.float32)
        inits += [helper.make_tensor(f"{name}_w", TensorProto.FLOAT, weight.shape,
                                     weight.ravel().tolist()),
                  helper.make_tensor(f"{name}_b", TensorProto.FLOAT, (cout,), [0.0] * cout)]
        nodes.append(helper.make_node("Conv", [current, f"{name}_w", f"{name}_b"], [f"{name}_y"],
                                      name=name, kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[pad] * 4, group=groups))
        nodes.append(helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"], name=f"{name}_relu"))
        current = f"{name}_r"
        if pool:
            nodes.append(helper.make_node("MaxPool", [current], [f"{name}_p"],
                                          name=f"{name}_pool", kernel_shape=[3, 3],
                                          strides=[2, 2]))
            current = f"{name}_p"
    graph = helper.make_graph(
        nodes, "alexnet_227_conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 227, 227])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)
