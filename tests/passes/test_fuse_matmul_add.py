"""fuse-matmul-add: MatMul + constant bias Add -> Gemm for 2-D operands."""
import pytest

from _fuse_testlib import build, fuse, op_types, reasons, rewritten

PASS = "fuse-matmul-add"


@pytest.mark.parametrize("bias_shape", ["[5]", "[1,5]", "[4,5]", "[4,1]", "[1]", ""])
@pytest.mark.parametrize("bias_first", [False, True])
def test_fused(bias_shape, bias_first):
    add = "Add(bias, mm)" if bias_first else "Add(mm, bias)"
    model = build(f"""g (float[4,3] a, float[3,5] w, float{bias_shape} bias) => (float[4,5] y) {{
            mm = MatMul(a, w)
            y = {add}
        }}""", weights=("w", "bias"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Gemm"]
    assert rewritten(graph, "matmul-add-to-gemm") == 1
    assert graph.nodes[0].origin == "matmul-add-to-gemm"
    assert [v.name for v in graph.outputs] == ["y"]


def test_symbolic_rows_with_row_vector_bias():
    model = build("""g (float[N,3] a, float[3,5] w, float[5] bias) => (float[N,5] y) {
            mm = MatMul(a, w)
            y = Add(mm, bias)
        }""", weights=("w", "bias"))
    assert op_types(fuse(model, PASS)) == ["Gemm"]


def test_intermediate_keeps_its_name_for_later_readers():
    model = build("""g (float[4,3] a, float[3,5] w, float[5] bias) => (float[4,5] y) {
            mm = MatMul(a, w)
            h = Add(mm, bias)
            y = Relu(h)
        }""", weights=("w", "bias"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Gemm", "Relu"]
    assert graph.nodes[0].outputs[0].name == "h"


NEGATIVE = {
    "batched-a": ("""g (float[2,4,3] a, float[3,5] w, float[5] bias) => (float[2,4,5] y) {
            mm = MatMul(a, w)
            y = Add(mm, bias) }""", "A has rank 3; Gemm needs a 2-D A"),
    "dynamic-weight": ("""g (float[4,3] a, float[3,5] w, float[5] bias) => (float[4,5] y) {
            mm = MatMul(a, w)
            y = Add(mm, bias) }""",
        "input 1 of MatMul is a graph input, not a constant", ("bias",)),
    "bias-enlarges-output": ("""g (float[4,3] a, float[3,5] w, float[2,4,5] bias)
            => (float[2,4,5] y) {
            mm = MatMul(a, w)
            y = Add(mm, bias) }""", "bias of shape [2, 4, 5] has rank > 2"),
    "bias-rows-unknown": ("""g (float[N,3] a, float[3,5] w, float[4,5] bias) => (float[N,5] y) {
            mm = MatMul(a, w)
            y = Add(mm, bias) }""", "does not broadcast to [N, 5]"),
    "matmul-is-graph-output": ("""g (float[4,3] a, float[3,5] w, float[5] bias)
            => (float[4,5] y, float[4,5] mm) {
            mm = MatMul(a, w)
            y = Add(mm, bias) }""", "the inner MatMul's output is a graph output"),
    "matmul-read-elsewhere": ("""g (float[4,3] a, float[3,5] w, float[5] bias)
            => (float[4,5] y, float[4,5] r) {
            mm = MatMul(a, w)
            y = Add(mm, bias)
            r = Relu(mm) }""", "also read outside the pattern (by Relu)"),
    "integer": ("""g (int32[4,3] a, int32[3,5] w, int32[5] bias) => (int32[4,5] y) {
            mm = MatMul(a, w)
            y = Add(mm, bias) }""", "dtype int32 is not one Gemm supports"),
}


@pytest.mark.parametrize("case", NEGATIVE.values(), ids=NEGATIVE.keys())
def test_not_fused(case):
    text, reason, *weights = case
    weights = weights[0] if weights else ("w", "bias")
    graph = fuse(build(text, weights=weights), PASS)
    assert "Gemm" not in op_types(graph)
    found = reasons(graph, "matmul-add-to-gemm")
    assert any(reason in r for r in found), found
