"""simplify-constant-chain: Add(Add(x, a), b) and Mul(Mul(x, a), b) merge their constants."""
import numpy as np
import pytest

from _fuse_testlib import build, fuse, op_types, reasons, rewritten

PASS = "simplify-constant-chain"


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("order", ["t = {op}(x, a)\n y = {op}(t, b)",
                                   "t = {op}(a, x)\n y = {op}(b, t)"])
def test_two_constants_merge_into_one(op, order):
    model = build(f"""g (float[2,3,4] x, float[3,4] a, float[1,1,4] b) => (float[2,3,4] y) {{
            {order.format(op=op)}
        }}""", weights=("a", "b"))
    graph = fuse(model, PASS)
    assert op_types(graph) == [op]
    assert graph.nodes[0].inputs[1].shape == (1, 3, 4)
    assert rewritten(graph, f"{op.lower()}-constant-chain") == 1


def test_bert_embedding_sum():
    # word embedding + token-type embedding (folded) + position embedding (folded).
    model = build("""g (int64[1,5] ids, float[10,4] table, float[1,5,4] tok, float[1,5,4] pos)
        => (float[1,5,4] y) {
            w = Gather(table, ids)
            e = Add(w, tok)
            y = Add(e, pos)
        }""", weights=("table", "tok", "pos"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Gather", "Add"]


def test_integer_chain_is_exact():
    model = build("""g (int64[4] x, int64[4] a, int64[1] b) => (int64[4] y) {
            t = Mul(x, a)
            y = Mul(t, b)
        }""", values={"a": [3, -2, 7, 1 << 40], "b": [1 << 30]})
    graph = fuse(model, PASS, rtol=0, atol=0)
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].const,
                                  np.array([3, -2, 7, 1 << 40]) * (1 << 30))


def test_merged_constant_larger_than_both_is_refused():
    model = build("""g (float[1,4] x, float[3,1] a, float[4] b) => (float[3,4] y) {
            t = Add(x, a)
            y = Add(t, b)
        }""", weights=("a", "b"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Add", "Add"]
    assert "larger than the two" in reasons(graph, "add-constant-chain", at="y")[0]


def test_add_then_mul_is_left_alone():
    model = build("""g (float[4] x, float[4] a, float[4] b) => (float[4] y) {
            t = Add(x, a)
            y = Mul(t, b)
        }""", weights=("a", "b"))
    assert op_types(fuse(model, PASS)) == ["Add", "Mul"]


def test_intermediate_read_elsewhere_is_left_alone():
    model = build("""g (float[4] x, float[4] a, float[4] b) => (float[4] z, float[4] w) {
            u = Mul(x, a)
            z = Mul(u, b)
            w = Relu(u)
        }""", weights=("a", "b"))
    assert op_types(fuse(model, PASS)) == ["Mul", "Mul", "Relu"]
