"""The importer takes nodes in file order when that order is valid and sorts them otherwise,
subgraph reads of outer values included; a cycle or an undefined read is a clear error."""
import onnx
import pytest
from onnx import TensorProto, helper

from graphopt import onnx_io
from graphopt.errors import BadInputError

_F = TensorProto.FLOAT


def _model(nodes: list[onnx.NodeProto], inputs: tuple[str, ...] = ("x",),
           outputs: tuple[str, ...] = ("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "order", [helper.make_tensor_value_info(n, _F, [2]) for n in inputs],
        [helper.make_tensor_value_info(n, _F, [2]) for n in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _chain(reverse: bool) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Neg", ["a"], ["b"], name="second"),
             helper.make_node("Abs", ["b"], ["y"], name="third")]
    return _model(nodes[::-1] if reverse else nodes)


@pytest.mark.parametrize("reverse", [False, True], ids=["sorted", "reversed"])
def test_nodes_come_in_topological_order(reverse):
    graph = onnx_io.load(_chain(reverse))
    assert [n.name for n in graph.nodes] == ["first", "second", "third"]
    graph.verify()


def test_subgraph_read_of_a_later_value_moves_the_reader_after_it():
    """An If whose branch reads `a` by name, listed before the node that makes `a`."""
    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["a"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", _F, [2])])

    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch("t", "Neg"),
                              else_branch=branch("e", "Abs")),
             helper.make_node("Relu", ["x"], ["a"], name="relu")]
    model = _model(nodes)
    model.graph.input.append(cond)
    graph = onnx_io.load(model)
    assert [n.name for n in graph.nodes] == ["relu", "if"]
    assert [v.name for v in graph.nodes[1].implicit_inputs] == ["a"]
    graph.verify()


def test_cycle_is_reported():
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="one"),
             helper.make_node("Neg", ["a"], ["b"], name="two"),
             helper.make_node("Abs", ["a"], ["y"], name="three")]
    with pytest.raises(BadInputError, match="cycle"):
        onnx_io.load(_model(nodes))


def test_undefined_read_names_the_value():
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]
    with pytest.raises(BadInputError, match="reads 'ghost'"):
        onnx_io.load(_model(nodes))
