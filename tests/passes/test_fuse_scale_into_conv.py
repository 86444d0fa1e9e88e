"""fuse-scale-into-conv: constant Mul/Add around Conv, ConvTranspose and Gemm fold into weights."""
import pytest

from _fuse_testlib import build, fuse, op_types, reasons, rewritten

PASS = "fuse-scale-into-conv"


def _conv_then(op, c_shape, group=1, bias=True):
    b_decl, b_arg = (", float[8] b", ", b") if bias else ("", "")
    return build(f"""g (float[1,8,6,8] x, float[8,{8 // group},3,3] w{b_decl}, float{c_shape} c)
        => (float[1,8,6,8] y) {{
            t = Conv <pads=[1,1,1,1], group={group}> (x, w{b_arg})
            y = {op}(t, c)
        }}""", weights=("w", "b", "c"))


@pytest.mark.parametrize("c_shape", ["[8,1,1]", "[1,8,1,1]", "[1]", ""])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_mul_after_conv(c_shape, group, bias):
    graph = fuse(_conv_then("Mul", c_shape, group, bias), PASS)
    assert op_types(graph) == ["Conv"]
    assert rewritten(graph, "mul-after-conv") == 1
    assert len(graph.nodes[0].inputs) == (3 if bias else 2)


@pytest.mark.parametrize("bias", [True, False])
def test_add_after_conv(bias):
    graph = fuse(_conv_then("Add", "[8,1,1]", bias=bias), PASS)
    assert op_types(graph) == ["Conv"]
    assert len(graph.nodes[0].inputs) == 3


def test_conv_mul_add_chain():
    model = build("""g (float[1,4,5,5] x, float[6,4,3,3] w, float[6,1,1] a, float[6,1,1] c)
        => (float[1,6,3,3] y) {
            t = Conv(x, w)
            s = Mul(a, t)
            y = Add(s, c)
        }""", weights=("w", "a", "c"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Conv"]


@pytest.mark.parametrize("c_shape", ["[5]", "[1,5]", ""])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_mul_after_gemm(c_shape, trans_b):
    w_shape = "[5,3]" if trans_b else "[3,5]"
    model = build(f"""g (float[4,3] x, float{w_shape} w, float[5] cc, float{c_shape} c)
        => (float[4,5] y) {{
            t = Gemm <transB={trans_b}, beta=0.5> (x, w, cc)
            y = Mul(t, c)
        }}""", weights=("w", "cc", "c"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Gemm"]


def test_add_after_gemm_without_bias():
    model = build("""g (float[4,3] x, float[3,5] w, float[1,5] c) => (float[4,5] y) {
            t = Gemm(x, w)
            y = Add(t, c)
        }""", weights=("w", "c"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Gemm"]
    assert len(graph.nodes[0].inputs) == 3


def test_mul_after_grouped_conv_transpose():
    model = build("""g (float[1,4,5,5] x, float[4,3,3,3] w, float[6,1,1] c) => (float[1,6,7,7] y) {
            t = ConvTranspose <group=2> (x, w)
            y = Mul(t, c)
        }""", weights=("w", "c"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["ConvTranspose"]


@pytest.mark.parametrize("c_shape", ["", "[8,1,1]"])
@pytest.mark.parametrize("group", [1, 2])
def test_mul_before_padded_conv(c_shape, group):
    model = build(f"""g (float[1,8,6,6] x, float{c_shape} c, float[4,{8 // group},3,3] w,
                         float[4] b)
        => (float[1,4,6,6] y) {{
            s = Mul(x, c)
            y = Conv <pads=[1,1,1,1], group={group}> (s, w, b)
        }}""", weights=("w", "b", "c"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Conv"]
    assert rewritten(graph, "mul-before-conv") == 1


def test_scalar_mul_before_gemm_goes_into_alpha():
    model = build("""g (float[4,3] x, float c, float[3,5] w) => (float[4,5] y) {
            s = Mul(c, x)
            y = Gemm <alpha=2.0> (s, w)
        }""", weights=("w", "c"), values={"c": 0.25})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Gemm"]
    assert graph.nodes[0].attr("alpha") == pytest.approx(0.5)


NEGATIVE = {
    "last-axis-vector": (lambda: _conv_then("Mul", "[8]"), "mul-after-conv",
                         "constant of shape [8] is not per-channel along axis 1"),
    "shared-weight": (lambda: build("""g (float[1,4,5,5] x, float[4,4,3,3] w, float[4,1,1] c)
        => (float[1,4,3,3] y, float[1,4,3,3] z) {
            t = Conv(x, w)
            y = Mul(t, c)
            z = Conv(x, w)
        }""", weights=("w", "c")), "mul-after-conv", "the weight of Conv is shared"),
    "conv-read-elsewhere": (lambda: build("""g (float[1,4,5,5] x, float[4,4,3,3] w, float[4,1,1] c)
        => (float[1,4,3,3] y, float[1,4,3,3] r) {
            t = Conv(x, w)
            y = Mul(t, c)
            r = Relu(t)
        }""", weights=("w", "c")), "mul-after-conv", "also read outside the pattern (by Relu)"),
    "dynamic-scale": (lambda: build("""g (float[1,4,5,5] x, float[4,4,3,3] w, float[4,1,1] c)
        => (float[1,4,3,3] y) {
            t = Conv(x, w)
            y = Mul(t, c)
        }""", weights=("w",)), "mul-after-conv", "is a graph input, not a constant"),
    "vector-before-gemm": (lambda: build("""g (float[4,3] x, float[3] c, float[3,5] w)
        => (float[4,5] y) {
            s = Mul(x, c)
            y = Gemm(s, w)
        }""", weights=("w", "c")), "mul-before-gemm", "only a float scalar folds into alpha"),
}


@pytest.mark.parametrize("case", NEGATIVE.values(), ids=NEGATIVE.keys())
def test_not_fused(case):
    make, rule, reason = case
    model = make()
    graph = fuse(model, PASS)
    assert len(graph.nodes) == len(model.graph.node)
    found = reasons(graph, rule, at="y")
    assert any(reason in r for r in found), found


def test_add_before_conv_is_not_folded():
    # Shifting X would also shift the zeros Conv pads with, so there is no rule for it.
    model = build("""g (float[1,2,5,5] x, float c, float[3,2,3,3] w) => (float[1,3,5,5] y) {
            s = Add(x, c)
            y = Conv <pads=[1,1,1,1]> (s, w)
        }""", weights=("w", "c"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Add", "Conv"]
