"""fuse-transpose-reshape: Transpose pairs and reshape chains collapse."""
import numpy as np
import pytest

from _fuse_testlib import build, fuse, op_types, reasons, rewritten

PASS = "fuse-transpose-reshape"


def test_transpose_pair_composes():
    model = build("""g (float[2,3,4] x) => (float[3,4,2] y) {
            t = Transpose <perm=[1,0,2]> (x)
            y = Transpose <perm=[0,2,1]> (t)
        }""")
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Transpose"]
    assert graph.nodes[0].attr("perm") == [1, 2, 0]
    assert rewritten(graph, "transpose-pair") == 1


@pytest.mark.parametrize("perms", [("<perm=[0,2,1]>", "<perm=[0,2,1]>"), ("", "")],
                         ids=["explicit", "default-reverse"])
def test_transpose_pair_identity_disappears(perms):
    model = build(f"""g (float[2,3,4] x) => (float[2,3,4] y) {{
            t = Transpose {perms[0]} (x)
            u = Transpose {perms[1]} (t)
            y = Relu(u)
        }}""")
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Relu"]


def test_transpose_chain_of_three():
    model = build("""g (float[2,3,4,5] x) => (float[5,3,2,4] y) {
            a = Transpose <perm=[0,2,3,1]> (x)
            b = Transpose <perm=[2,0,1,3]> (a)
            y = Transpose <perm=[0,3,2,1]> (b)
        }""")
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Transpose"]


def test_identity_pair_between_graph_input_and_output_is_kept():
    model = build("""g (float[2,3] x) => (float[2,3] y) {
            t = Transpose(x)
            y = Transpose(t)
        }""")
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Transpose", "Transpose"]
    assert [v.name for v in graph.outputs] == ["y"]
    assert "renaming the model's output" in reasons(graph, "transpose-pair", at="y")[0]


def test_shared_inner_transpose_is_kept():
    model = build("""g (float[2,3,4] x) => (float[3,4,2] y, float[3,2,4] t) {
            t = Transpose <perm=[1,0,2]> (x)
            y = Transpose <perm=[0,2,1]> (t)
        }""")
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Transpose", "Transpose"]
    assert reasons(graph, "transpose-pair", at="y") == [
        "the inner Transpose's output is a graph output"]


def _reshape_pair(x_shape: str, y_shape: str, s1: list, s2: list):
    """Reshape(Reshape(x, s1), s2), checked by onnxruntime before/after the pass."""
    model = build(f"""g (float{x_shape} x, int64[{len(s1)}] s1, int64[{len(s2)}] s2)
        => (float{y_shape} y) {{
            r = Reshape(x, s1)
            y = Reshape(r, s2)
        }}""", values={"s1": s1, "s2": s2})
    return fuse(model, PASS)


def test_reshape_of_reshape_dynamic_batch():
    graph = _reshape_pair("[N,6,4]", "[N,4,6]", [0, 24], [-1, 4, 6])
    assert op_types(graph) == ["Reshape"]
    assert graph.nodes[0].input(0).name == "x"
    assert rewritten(graph, "reshape-of-reshape") == 1


def test_zero_in_outer_shape_resolved_when_static():
    graph = _reshape_pair("[2,6,4]", "[2,2,12]", [0, 24], [0, 2, 12])
    assert op_types(graph) == ["Reshape"]
    assert graph.nodes[0].input(1).const.tolist() == [2, 2, 12]


def test_zero_in_outer_shape_refused_when_dynamic():
    graph = _reshape_pair("[N,6,4]", "[N,2,12]", [0, 24], [0, 2, 12])
    assert op_types(graph) == ["Reshape", "Reshape"]
    assert reasons(graph, "reshape-of-reshape", at="y") == [
        "target shape [0, 2, 12] copies dim 0 of the inner output, unknown"]
    assert reasons(graph, "reshape-chain-static", at="y") == [
        "output shape f32[Nx2x12] is not static"]


def test_flatten_unsqueeze_chain_becomes_one_reshape():
    model = build("""g (float[2,3,4] x, int64[1] ax) => (float[2,1,12] y) {
            f = Flatten <axis=1> (x)
            y = Unsqueeze(f, ax)
        }""", values={"ax": [1]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Reshape"]
    assert graph.nodes[0].input(1).const.tolist() == [2, 1, 12]
    assert rewritten(graph, "reshape-chain-static") == 1


def test_unsqueeze_squeeze_pair_disappears():
    model = build("""g (float[2,3] x, int64[1] ax) => (float[2,3] y) {
            u = Unsqueeze(x, ax)
            q = Squeeze(u, ax)
            y = Relu(q)
        }""", values={"ax": [1]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Relu"]


def test_squeeze_reshape_with_constant_shape():
    model = build("""g (float[N,1,8] x, int64[1] ax, int64[3] s) => (float[N,2,4] y) {
            q = Squeeze(x, ax)
            y = Reshape(q, s)
        }""", values={"ax": [1], "s": [-1, 2, 4]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Reshape"]


def test_dynamic_chain_is_kept():
    model = build("""g (float[N,3,4] x, int64[1] ax) => (float[N,1,12] y) {
            f = Flatten <axis=1> (x)
            y = Unsqueeze(f, ax)
        }""", values={"ax": [1]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Flatten", "Unsqueeze"]
    assert reasons(graph, "reshape-chain-static", at="y") == [
        "output shape f32[Nx1x12] is not static"]


def test_mixed_chain_reaches_fixed_point():
    model = build("""g (float[2,3,4] x, int64[1] ax, int64[2] s) => (float[4,6] y) {
            t1 = Transpose <perm=[1,0,2]> (x)
            t2 = Transpose <perm=[1,0,2]> (t1)
            f = Flatten <axis=2> (t2)
            u = Unsqueeze(f, ax)
            y = Reshape(u, s)
        }""", values={"ax": [0], "s": [4, 6]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Reshape"]
    assert graph.nodes[0].input(0).name == "x"
    assert np.array_equal(graph.nodes[0].input(1).const, [4, 6])
