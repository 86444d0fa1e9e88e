"""Workload extraction from the IR: loop nests, vector work, host placement."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from graphopt.npu import build_layers
from graphopt.npu.entry import optimized_graph
from graphopt.npu.reference_models import alexnet_227


def test_grouped_alexnet_227_has_666m_macs():
    layers = build_layers(optimized_graph(alexnet_227(), passes="eliminate-dead-code"))
    convs = [layer for layer in layers if layer.op_type == "Conv"]
    assert [c.size("G") for c in convs] == [1, 2, 1, 2, 2]
    assert sum(c.macs for c in convs) == 665_784_864
    assert convs[0].sizes == (1, 1, 96, 3, 55, 55, 11, 11) and convs[0].stride == (4, 4)


def test_batch_multiplies_activations_only():
    graph = optimized_graph(alexnet_227(), passes="eliminate-dead-code")
    one, four = build_layers(graph, 1), build_layers(graph, 4)
    assert sum(x.macs for x in four) == 4 * sum(x.macs for x in one)
    assert four[0].weight_elements == one[0].weight_elements


def _model() -> onnx.ModelProto:
    """Depthwise conv -> Relu -> Add -> MaxPool, a MatMul with constant weights and a Shape."""
    f = TensorProto.FLOAT
    inits = [helper.make_tensor("dw", f, [8, 1, 3, 3], [0.1] * 72),
             helper.make_tensor("bias", f, [1, 8, 10, 10], [0.0] * 800),
             helper.make_tensor("b", f, [6, 5], [0.2] * 30)]
    nodes = [helper.make_node("Conv", ["x", "dw"], ["c"], group=8, pads=[1] * 4,
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["r", "bias"], ["e"]),
             helper.make_node("MaxPool", ["e"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MatMul", ["a", "b"], ["z"]),
             helper.make_node("Shape", ["x"], ["s"])]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", f, [1, 8, 10, 10]),
                       helper.make_tensor_value_info("a", f, [4, 6])],
        [helper.make_tensor_value_info("y", f, None), helper.make_tensor_value_info("z", f, None),
         helper.make_tensor_value_info("s", TensorProto.INT64, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def test_depthwise_matmul_vector_and_host_layers():
    layers = {layer.op_type: layer for layer in build_layers(optimized_graph(
        _model(), passes="eliminate-dead-code"))}
    conv = layers["Conv"]
    assert conv.kind == "mac" and conv.sizes == (8, 1, 1, 1, 10, 10, 3, 3)
    assert conv.macs == 8 * 100 * 9
    # Relu and the constant Add are the conv's fusion group: vector work as outputs drain.
    assert "Relu" not in layers and "Add" not in layers
    assert conv.vector_ops == 800 + 800 and conv.outputs == (("e", 800),)
    matmul = layers["MatMul"]
    assert matmul.sizes[:4] == (1, 4, 5, 6)
    assert matmul.macs == 4 * 5 * 6
    assert layers["MaxPool"].vector_ops == 200 * 4
    assert layers["Shape"].kind == "host" and "Shape" in layers["Shape"].reason


def test_constant_subgraphs_are_compile_time():
    node = helper.make_node("ConstantOfShape", ["shape"], ["w"],
                            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]))
    conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])
    graph = helper.make_graph(
        [node, conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor("shape", TensorProto.INT64, [4], [3, 2, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    layers = build_layers(optimized_graph(onnx.shape_inference.infer_shapes(model),
                                          passes="eliminate-dead-code"))
    assert [layer.kind for layer in layers] == ["const", "mac"]
