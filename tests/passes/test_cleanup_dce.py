"""eliminate-dead-code: unread nodes and constants go; partly read nodes and inputs stay."""
from _cleanup_testlib import model_of, op_types, run_checked


def eliminate(body: str):
    return run_checked(body, "eliminate-dead-code")


def test_multi_output_node_with_one_read_output_stays():
    graph = eliminate("""g (float[4] x) => (float[2] y) {
            a, b = Split <num_outputs=2> (x)
            y = Relu(a)
            unused = Neg(b)
        }""")
    assert op_types(graph) == ["Split", "Relu"]
    assert len(graph.nodes[0].outputs) == 2


def test_unread_chain_that_reads_no_graph_input_goes_with_its_constants():
    graph = eliminate("""g (float[2] x) => (float[2] y) <float[2] a = {1, 2}, int64[1] s = {2}> {
            z = ConstantOfShape(s)
            w = Add(z, a)
            y = Relu(x)
        }""")
    assert op_types(graph) == ["Relu"]
    assert graph.initializers == {}


def test_unused_graph_input_is_kept():
    graph = eliminate("g (float[2] x, float[2] unused) => (float[2] y) { y = Relu(x) }")
    assert [v.name for v in graph.inputs] == ["x", "unused"]


def test_unread_random_node_goes():
    graph = eliminate("""g (float[2] x) => (float[2] y) {
            r = RandomUniformLike(x)
            y = Relu(x)
        }""")
    assert op_types(graph) == ["Relu"]


def test_constant_graph_output_is_kept():
    graph = eliminate("""g (float[2] x) => (float[2] y, float[2] c) <float[2] c = {1, 2}>
        { y = Relu(x) }""")
    assert "c" in graph.initializers


def test_nothing_dead_reports_no_change():
    from graphopt import optimize

    model = model_of("g (float[2] x) => (float[2] y) { y = Relu(x) }")
    result = optimize(model, passes="eliminate-dead-code")
    assert not result.manager.records[0].changed
