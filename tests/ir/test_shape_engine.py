"""graphopt's one shape engine (graphopt.evaluator.infer) against onnx's whole-model inference."""
import pytest
from onnx import TensorProto, helper

from graphopt import load
from graphopt.evaluator.infer import infer_node, infer_types
from graphopt.ir.types import DType, TensorType
from graphopt.testing import light_models_dir, sample_models_dir

LIGHT = light_models_dir()


def _without_node_types(graph):
    expected = {v.name: v.type for n in graph.nodes for v in n.outputs}
    for node in graph.nodes:
        for value in node.outputs:
            if value not in graph.outputs:
                value.type = None
    return expected


def _canonical(t):
    """onnx names unknown dims unk__N; graphopt leaves them unknown (None)."""
    if t is None or t.shape is None:
        return t
    return t.dtype, tuple(None if isinstance(d, str) and d.startswith("unk__") else d
                          for d in t.shape)


@pytest.mark.parametrize("path", [
    *(LIGHT / f"light_{m}.onnx" for m in ("squeezenet", "shufflenet", "inception_v1")),
    "digits_cnn", "mlp"])
def test_engine_recovers_every_type_onnx_infers(path):
    if isinstance(path, str):
        path = sample_models_dir() / f"{path}.onnx"
        if not path.exists():
            pytest.skip(f"sample model {path} not found")
    graph = load(path)
    expected = _without_node_types(graph)
    infer_types(graph)
    for node in graph.nodes:
        for value in node.outputs:
            assert _canonical(value.type) == _canonical(expected[value.name]), node.describe()


def test_symbolic_reshape_through_shape_arithmetic():
    """Reshape(x, Concat(Gather(Shape(x), 0), [-1])) keeps the symbolic batch and infers -1."""
    i64 = TensorProto.INT64
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
             helper.make_node("Unsqueeze", ["batch", "axes"], ["b1"]),
             helper.make_node("Concat", ["b1", "minus_one"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("zero", i64, [], [0]), helper.make_tensor("axes", i64, [1], [0]),
         helper.make_tensor("minus_one", i64, [1], [-1])])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for node in g.nodes:
        for value in node.outputs:
            value.type = None
    infer_types(g)
    assert g.value("y").type == TensorType(DType.FLOAT, ("N", 128))


def test_infer_node_with_concrete_shapes_and_values():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[2, 0, 1])], "g",
                              [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    (node,) = g.nodes
    (out,) = infer_node(node, [TensorType(DType.FLOAT, (5, 6, 7))])
    assert out == TensorType(DType.FLOAT, (7, 5, 6))
    (unknown,) = infer_node(node, [None])
    assert unknown is None
