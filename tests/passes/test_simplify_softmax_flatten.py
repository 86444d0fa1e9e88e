"""simplify-softmax-flatten: the version converter's Flatten -> Softmax -> Reshape becomes one
Softmax when at most one dim from the Flatten axis on differs from 1."""
import pytest

from _cleanup_testlib import op_types, run_checked
from graphopt.testing import assert_same_outputs, parse_model, run_passes

PASSES = "simplify-softmax-flatten,eliminate-dead-code"


def converted(op: str = "Softmax", shape: str = "2,10,1,1", axis: int = 1,
              target: str = "t = Shape(x)", out_shape: str | None = None) -> str:
    return f"""g (float[{shape}] x) => (float[{out_shape or shape}] y) {{
        f = Flatten <axis = {axis}> (x)
        s = {op} <axis = -1> (f)
        {target}
        y = Reshape(s, t)
    }}"""


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_flatten_softmax_reshape_becomes_one_softmax(op):
    graph = run_checked(converted(op), PASSES)
    assert op_types(graph) == [op]
    assert graph.nodes[0].attrs["axis"] == 1
    assert graph.outputs[0].name == "y"


def test_constant_reshape_target_equal_to_the_input_shape():
    graph = run_checked(converted(target="t = Constant <value = int64[4] {2, 10, 1, 1}> ()"),
                        PASSES)
    assert op_types(graph) == ["Softmax"]


def test_the_one_non_unit_dim_may_come_after_the_flatten_axis_and_be_symbolic():
    graph = run_checked(converted(shape="2,1,L"), PASSES)
    assert op_types(graph) == ["Softmax"]
    assert graph.nodes[0].attrs["axis"] == 2


def test_squeezenet_tail_from_the_version_converter():
    # Softmax-11 on [N, 10, 1, 1] normalizes over 10*1*1 values; the importer upgrades to 13.
    model = parse_model("""<ir_version: 7, opset_import: ["" : 11]>
        g (float[N,10,1,1] x) => (float[N,10,1,1] y) { y = Softmax <axis = 1> (x) }""")
    graph = run_passes(model, "fold-constants," + PASSES)
    assert op_types(graph) == ["Softmax"]
    assert graph.nodes[0].attrs["axis"] == 1
    assert_same_outputs(model, graph)


def test_flatten_of_everything_with_one_non_unit_dim():
    graph = run_checked(converted(axis=0, shape="1,10,1,1"), PASSES)
    assert op_types(graph) == ["Softmax"]
    assert graph.nodes[0].attrs["axis"] == 1


@pytest.mark.parametrize("case", [
    dict(shape="2,3,4"),  # the row spans two dims, of sizes 3 and 4
    dict(target="t = Constant <value = int64[2] {2, 10}> ()", out_shape="2,10"),  # not x's shape
])
def test_other_shapes_are_left_alone(case):
    graph = run_checked(converted(**case), PASSES)
    assert op_types(graph)[0] == "Flatten" and op_types(graph)[-1] == "Reshape"


def test_softmax_over_the_batch_row_is_left_alone():
    body = """g (float[2,10,1,1] x) => (float[2,10,1,1] y) {
        f = Flatten <axis = 1> (x)
        s = Softmax <axis = 0> (f)
        t = Shape(x)
        y = Reshape(s, t)
    }"""
    graph = run_checked(body, PASSES)
    assert op_types(graph) == ["Flatten", "Softmax", "Shape", "Reshape"]


def test_flatten_read_elsewhere_is_left_alone():
    body = """g (float[2,10,1,1] x) => (float[2,10,1,1] y, float[2,10] f) {
        f = Flatten <axis = 1> (x)
        s = Softmax <axis = -1> (f)
        t = Shape(x)
        y = Reshape(s, t)
    }"""
    graph = run_checked(body, PASSES)
    assert op_types(graph) == ["Flatten", "Softmax", "Shape", "Reshape"]
