"""remove-identity: no-op nodes disappear, graph interfaces keep their names, outputs unchanged."""
import pytest

from _cleanup_testlib import model_of, op_types, run_checked


def remove(body: str):
    return run_checked(body, "remove-identity")


REMOVED = {
    "identity": "g (float[2,3] x) => (float[2,3] y) { a = Identity(x) y = Relu(a) }",
    "dropout-inference": """g (float[2,3] x) => (float[2,3] y)
        { a = Dropout <seed=1> (x) y = Relu(a) }""",
    "dropout-training-false": """g (float[2,3] x) => (float[2,3] y)
        <float r = {0.5}, bool t = {0}> { a, m = Dropout(x, r, t) y = Relu(a) }""",
    "reshape-static": """g (float[2,3] x) => (float[2,3] y) <int64[2] s = {2, 3}>
        { a = Reshape(x, s) y = Relu(a) }""",
    "reshape-symbolic-0-and-minus-1": """g (float[N,3,4] x) => (float[N,3,4] y)
        <int64[3] s = {0, 3, -1}> { a = Reshape(x, s) y = Relu(a) }""",
    "transpose-identity-perm": """g (float[2,3] x) => (float[2,3] y)
        { a = Transpose <perm=[0, 1]> (x) y = Relu(a) }""",
    "cast-same-dtype": "g (float[2,3] x) => (float[2,3] y) { a = Cast <to=1> (x) y = Relu(a) }",
    "pad-zeros": """g (float[2,3] x) => (float[2,3] y) <int64[4] p = {0, 0, 0, 0}>
        { a = Pad(x, p) y = Relu(a) }""",
    "slice-whole": """g (float[N,3] x) => (float[N,3] y)
        <int64[2] s = {0, 0}, int64[2] e = {9223372036854775807, 3}>
        { a = Slice(x, s, e) y = Relu(a) }""",
    "expand-same-shape": """g (float[N,3] x) => (float[N,3] y) <int64[2] s = {1, 3}>
        { a = Expand(x, s) y = Relu(a) }""",
    "squeeze-nothing": "g (float[2,3] x) => (float[2,3] y) { a = Squeeze(x) y = Relu(a) }",
    "unsqueeze-no-axes": """g (float[2,3] x) => (float[2,3] y) <int64[0] ax = {}>
        { a = Unsqueeze(x, ax) y = Relu(a) }""",
    "concat-one-input": """g (float[2,3] x) => (float[2,3] y)
        { a = Concat <axis=0> (x) y = Relu(a) }""",
    "add-zero-left": """g (float[2,3] x) => (float[2,3] y) <float[3] z = {0, 0, 0}>
        { a = Add(z, x) y = Relu(a) }""",
    "sub-zero": "g (float[2,3] x) => (float[2,3] y) <float z = {0}> { a = Sub(x, z) y = Relu(a) }",
    "mul-one": """g (int64[2,3] x) => (int64[2,3] y) <int64[1,3] o = {1, 1, 1}>
        { a = Mul(x, o) y = Neg(a) }""",
    "div-one": "g (float[2,3] x) => (float[2,3] y) <float o = {1}> { a = Div(x, o) y = Relu(a) }",
}


@pytest.mark.parametrize("body", REMOVED.values(), ids=REMOVED.keys())
def test_noop_is_removed(body):
    graph = remove(body)
    assert op_types(graph) in (["Relu"], ["Neg"])
    assert [v.name for v in graph.outputs] == ["y"]


KEPT = {
    "add-zero-broadcasts-larger": """g (float[3] x) => (float[2,3] y)
        <float[2,3] z = {0, 0, 0, 0, 0, 0}> { a = Add(x, z) y = Relu(a) }""",
    "zero-minus-x": "g (float[3] x) => (float[3] y) <float z = {0}> { a = Sub(z, x) y = Relu(a) }",
    "add-nonzero": "g (float[3] x) => (float[3] y) <float z = {0.5}> { a = Add(x, z) y = Relu(a) }",
    "dropout-mask-read": """g (float[2,3] x) => (float[2,3] y, bool[2,3] m)
        { a, m = Dropout(x) y = Relu(a) }""",
    "reshape-changes-shape": """g (float[N,6] x) => (float[N,2,3] y) <int64[3] s = {0, 2, 3}>
        { a = Reshape(x, s) y = Relu(a) }""",
    "reshape-symbolic-minus-1-elsewhere": """g (float[N,4] x) => (float[M,2] y)
        <int64[2] s = {-1, 2}> { a = Reshape(x, s) y = Relu(a) }""",
    "transpose-swaps": "g (float[2,3] x) => (float[3,2] y) { a = Transpose(x) y = Relu(a) }",
    "cast-other-dtype": """g (float[2,3] x) => (float[2,3] y)
        { a = Cast <to=10> (x) b = Cast <to=1> (a) y = Relu(b) }""",
    "slice-part": """g (float[4,3] x) => (float[3,3] y) <int64[1] s = {1}, int64[1] e = {4}>
        { a = Slice(x, s, e) y = Relu(a) }""",
    "slice-symbolic-bounded-end": """g (float[N,3] x) => (float[M,3] y)
        <int64[1] s = {0}, int64[1] e = {1000}> { a = Slice(x, s, e) y = Relu(a) }""",
    "expand-grows": """g (float[1,3] x) => (float[2,3] y) <int64[2] s = {2, 3}>
        { a = Expand(x, s) y = Relu(a) }""",
    "squeeze-empty-axes-squeezes-all": """g (float[1,3] x) => (float[3] y) <int64[0] ax = {}>
        { a = Squeeze(x, ax) y = Relu(a) }""",
    "squeeze-symbolic-could-be-one": """g (float[N,3] x) => (float[N,3] y)
        { a = Squeeze(x) y = Relu(a) }""",
}


@pytest.mark.parametrize("body", KEPT.values(), ids=KEPT.keys())
def test_real_work_is_kept(body):
    before = len(model_of(body).graph.node)
    graph = remove(body)
    assert len(graph.nodes) == before


def test_graph_output_keeps_its_name_when_forwarding():
    graph = remove("g (float[3] x) => (float[3] y) { a = Relu(x) y = Identity(a) }")
    assert op_types(graph) == ["Relu"]
    assert graph.nodes[0].outputs[0] is graph.outputs[0]
    assert graph.outputs[0].name == "y"


def test_identity_from_graph_input_to_output_is_kept():
    graph = remove("g (float[3] x) => (float[3] y) { y = Identity(x) }")
    assert op_types(graph) == ["Identity"]
    assert [v.name for v in graph.inputs] == ["x"] and [v.name for v in graph.outputs] == ["y"]


def test_noop_between_graph_input_and_output_becomes_identity():
    graph = remove("""g (float[2,3] x) => (float[2,3] y) <int64[2] s = {2, 3}>
        { y = Reshape(x, s) }""")
    assert op_types(graph) == ["Identity"]
    assert graph.outputs[0].name == "y"


def test_two_outputs_of_one_value_stay_distinct():
    graph = remove("""g (float[3] x) => (float[3] y, float[3] z)
        { y = Relu(x) z = Identity(y) }""")
    assert op_types(graph) == ["Relu", "Identity"]
    assert [v.name for v in graph.outputs] == ["y", "z"]


def test_shared_value_feeds_every_reader():
    graph = remove("""g (float[3] x) => (float[3] y, float[3] z)
        { a = Relu(x) b = Identity(a) y = Neg(b) z = Abs(b) }""")
    assert op_types(graph) == ["Relu", "Neg", "Abs"]
    relu_out = graph.nodes[0].outputs[0]
    assert all(n.inputs[0] is relu_out for n in graph.nodes[1:])
