"""cse: identical nodes and constants merge; random ops, subgraphs, other attributes don't."""
import pytest

from _cleanup_testlib import op_types, run_checked


def merge(body: str):
    return run_checked(body, "cse")


def test_identical_nodes_merge_transitively():
    graph = merge("""g (float[3] x) => (float[3] y) {
            a = Relu(x)
            b = Relu(x)
            c = Neg(a)
            d = Neg(b)
            y = Add(c, d)
        }""")
    assert op_types(graph) == ["Relu", "Neg", "Add"]
    add = graph.nodes[2]
    assert add.inputs[0] is add.inputs[1]


@pytest.mark.parametrize("op,merged", [("Mul", True), ("Sub", False)])
def test_operand_order_matters_only_for_non_commutative_ops(op, merged):
    graph = merge(f"""g (float[3] x, float[3] z) => (float[3] y) {{
            a = {op}(x, z)
            b = {op}(z, x)
            y = Add(a, b)
        }}""")
    assert op_types(graph) == ([op, "Add"] if merged else [op, op, "Add"])


def test_identical_constants_merge_and_make_their_readers_identical():
    graph = merge("""g (float[3] x) => (float[3] y)
        <float[3] a = {1, 2, 3}, float[3] b = {1, 2, 3}> {
            p = Add(x, a)
            q = Add(x, b)
            y = Mul(p, q)
        }""")
    assert op_types(graph) == ["Add", "Mul"]
    assert len(graph.initializers) == 1


def test_constants_differing_in_dtype_or_bytes_stay_apart():
    # 1.0f and 1065353216 share their four bytes; only the dtype tells them apart.
    graph = merge("""g (float[1] x, int32[1] n) => (float[1] y, int32[1] z, int32[1] w)
        <float[1] f = {1.0}, int32[1] i = {1065353216}, int32[1] j = {1065353217}> {
            y = Add(x, f)
            z = Add(n, i)
            w = Add(n, j)
        }""")
    assert sorted(graph.initializers) == ["f", "i", "j"]
    assert op_types(graph) == ["Add", "Add", "Add"]


def test_different_attributes_stay_apart():
    graph = merge("""g (float[2,3] x) => (float[2,3] y) {
            a = Softmax <axis=0> (x)
            b = Softmax <axis=1> (x)
            y = Add(a, b)
        }""")
    assert op_types(graph) == ["Softmax", "Softmax", "Add"]


RANDOM_DRAWS = {
    "random-uniform-like": "RandomUniformLike(x)",
    "dropout-in-training": "Dropout(x, , t)",
}


@pytest.mark.parametrize("draw", RANDOM_DRAWS.values(), ids=RANDOM_DRAWS.keys())
def test_random_ops_never_merge(draw):
    # The draws are multiplied by 0 so the outputs stay comparable in onnxruntime.
    graph = merge(f"""g (float[2] x, bool t) => (float[2] y) <float zero = {{0}}> {{
            r1 = {draw}
            r2 = {draw}
            s = Add(r1, r2)
            z = Mul(s, zero)
            y = Add(x, z)
        }}""")
    op = draw.split("(")[0]
    assert op_types(graph).count(op) == 2


def test_nodes_with_subgraphs_never_merge():
    graph = merge("""g (float[2] x, bool c) => (float[2] y) {
            a = If(c) <then_branch = t1 () => (float[2] o) { o = Neg(x) },
                       else_branch = e1 () => (float[2] o) { o = Abs(x) }>
            b = If(c) <then_branch = t2 () => (float[2] o) { o = Neg(x) },
                       else_branch = e2 () => (float[2] o) { o = Abs(x) }>
            y = Add(a, b)
        }""")
    assert op_types(graph) == ["If", "If", "Add"]


def test_graph_outputs_keep_their_names():
    graph = merge("""g (float[3] x) => (float[3] y, float[3] z) {
            y = Relu(x)
            z = Relu(x)
        }""")
    assert [v.name for v in graph.outputs] == ["y", "z"]
    assert op_types(graph).count("Relu") == 1


def test_duplicate_feeding_an_output_passes_its_name_on():
    graph = merge("""g (float[3] x) => (float[3] y, float[3] z) {
            a = Relu(x)
            z = Relu(x)
            y = Neg(a)
        }""")
    assert op_types(graph) == ["Relu", "Neg"]
    assert graph.nodes[0].outputs[0].name == "z"
    assert [v.name for v in graph.outputs] == ["y", "z"]
