"""Core IR behaviour: use-def chains, mutation methods, verification, printing."""
import numpy as np
import pytest

from graphopt import DType, Graph, TensorType
from graphopt.errors import IRError

F32x4 = TensorType(DType.FLOAT, (4,))


def small_graph():
    g = Graph()
    x = g.add_input("x", F32x4)
    c = g.add_constant(np.ones(4, np.float32), "c")
    add = g.make_node("Add", [x, c], types=[F32x4])
    relu = g.make_node("Relu", [add.outputs[0]], types=[F32x4])
    g.outputs.append(relu.outputs[0])
    return g, x, c, add, relu


def test_uses_track_every_read():
    g, x, c, add, relu = small_graph()
    assert [(u.node, u.index) for u in x.uses()] == [(add, 0)]
    assert add.outputs[0].users == [relu]
    assert relu.outputs[0].producer is relu
    g.verify()


def test_replace_input_updates_both_use_lists():
    g, x, c, add, relu = small_graph()
    add.replace_input(1, x)
    assert c.uses() == []
    assert len(x.uses()) == 2
    g.verify()


def test_replace_all_uses_keeps_output_name():
    g, x, c, add, relu = small_graph()
    out_name = relu.outputs[0].name
    g.replace_all_uses_with(relu.outputs[0], add.outputs[0])
    g.remove(relu)
    assert g.outputs[0] is add.outputs[0]
    assert g.outputs[0].name == out_name
    g.verify()


def test_replacing_output_by_input_inserts_identity():
    g, x, c, add, relu = small_graph()
    out_name = relu.outputs[0].name
    g.replace_all_uses_with(relu.outputs[0], x)
    g.remove([relu, add])
    assert [n.op_type for n in g.nodes] == ["Identity"]
    assert g.outputs[0].name == out_name and g.inputs[0].name == "x"
    g.verify()


def test_safe_remove_checks_before_changing():
    g, x, c, add, relu = small_graph()
    with pytest.raises(IRError, match="still read"):
        g.remove(add)
    assert g.nodes == [add, relu] and x.uses()  # untouched


def test_remove_refuses_graph_output():
    g, *_, relu = small_graph()
    with pytest.raises(IRError, match="graph output"):
        g.remove(relu)


def test_insertion_point_places_nodes_in_order():
    g, x, c, add, relu = small_graph()
    with g.inserting_before(relu):
        a = g.make_node("Neg", [add.outputs[0]], types=[F32x4])
        b = g.make_node("Abs", [a.outputs[0]], types=[F32x4])
    assert g.nodes == [add, a, b, relu]


def test_sort_restores_topological_order():
    g, x, c, add, relu = small_graph()
    g.nodes.reverse()
    with pytest.raises(IRError, match="used before it is defined"):
        g.verify()
    g.sort()
    assert g.nodes == [add, relu]
    g.verify()


def test_sort_reports_cycles():
    g, x, c, add, relu = small_graph()
    add.replace_input(1, relu.outputs[0])
    with pytest.raises(IRError, match="cycle"):
        g.sort()


def test_verify_message_shows_neighbourhood():
    g, x, c, add, relu = small_graph()
    g.nodes.reverse()
    with pytest.raises(IRError) as err:
        g.verify()
    assert ">> %" in str(err.value) and "graph.sort()" in str(err.value)


def test_fresh_names_are_unique():
    g, *_ = small_graph()
    names = {g.fresh_name("x") for _ in range(5)}
    assert len(names) == 5 and "x" not in names


def test_printer_shows_types_and_attrs():
    g, x, c, add, relu = small_graph()
    relu.attrs["alpha"] = 0.5
    text = str(g)
    assert "graph graph(%x: f32[4])" in text
    assert "= Relu(%add_out) {alpha=0.5}  : f32[4]" in text


def test_tensor_type_facts():
    t = TensorType(DType.FLOAT, ("N", 3, 8, 8), layout="NCHW")
    assert not t.is_static and t.num_elements is None and str(t) == "f32[Nx3x8x8]@NCHW"
    s = TensorType(DType.INT8, (2, 3))
    assert s.nbytes == 6 and s.rank == 2


def test_copy_is_independent_and_shares_weights():
    g, x, c, _, relu = small_graph()
    twin = g.copy()
    twin.verify()
    assert str(twin) == str(g)
    assert twin.initializers["c"].const is c.const  # weights are shared, not duplicated
    assert twin.inputs[0] is not x and twin.nodes[0] is not g.nodes[0]
    # Mutating the copy leaves the original untouched: nodes, use lists, outputs.
    new_out = twin.nodes[0].outputs[0]
    twin.replace_all_uses_with(twin.outputs[0], new_out)
    twin.remove(twin.nodes[-1])
    assert len(g.nodes) == 2 and len(twin.nodes) == 1
    assert [u.node for u in x.uses()] == [g.nodes[0]]
    assert g.outputs[0] is relu.outputs[0] and relu.graph is g
    assert all(node.graph is twin for node in twin.nodes)
    assert twin.fresh_name(x.name) != x.name  # reserved names carry over
