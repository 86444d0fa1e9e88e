"""ConvGeometry: one resolution of kernel, strides, dilations and pads, checked against onnx."""
import itertools

import onnx
import pytest
from onnx import TensorProto, helper

from graphopt import load
from graphopt.ir.conv_geometry import ConvGeometry


def _conv_graph(size: int, kernel: int, stride: int, dilation: int, **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, size, size + 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 2, kernel, kernel], [0.0] * 6 * kernel ** 2)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[stride, stride],
                            dilations=[dilation, dilation], **attrs)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    return load(onnx.shape_inference.infer_shapes(model))


@pytest.mark.parametrize("auto_pad, size, kernel, stride, dilation", [
    (pad, size, k, s, d) for pad, size, k, s, d in itertools.product(
        ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"], [7, 8], [1, 3], [1, 2], [1, 2])])
def test_output_size_matches_onnx_inference(auto_pad, size, kernel, stride, dilation):
    attrs = {"pads": [1, 0, 0, 1]} if auto_pad == "NOTSET" else {"auto_pad": auto_pad}
    graph = _conv_graph(size, kernel, stride, dilation, **attrs)
    conv = graph.nodes[0]
    geometry = ConvGeometry.of(conv)
    assert geometry.kernel == (kernel, kernel) and geometry.strides == (stride, stride)
    assert geometry.output_size(conv.input(0).shape[2:]) == tuple(conv.outputs[0].shape[2:])
    if auto_pad.startswith("SAME"):
        total = [b + e for b, e in zip(geometry.pads_begin, geometry.pads_end)]
        odd_at_end = auto_pad == "SAME_UPPER"
        for begin, end, t in zip(geometry.pads_begin, geometry.pads_end, total):
            assert (end >= begin) if odd_at_end else (begin >= end)
            assert begin + end == t


def test_explicit_pads_and_group():
    graph = _conv_graph(6, 3, 1, 1, pads=[1, 2, 3, 4], group=1)
    geometry = ConvGeometry.of(graph.nodes[0])
    assert geometry.pads_begin == (1, 2) and geometry.pads_end == (3, 4)
    assert geometry.pads == (1, 2, 3, 4) and geometry.group == 1
    assert geometry.window_macs(2) == 18
