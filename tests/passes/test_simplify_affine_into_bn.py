"""simplify-affine-into-bn: constant per-channel Mul/Add/Sub/Div after BatchNormalization fold
into its scale and bias."""
import pytest

from _fuse_testlib import build, fuse, op_types, reasons, rewritten

PASS = "simplify-affine-into-bn"


def _bn_then(ops_text: str, c_shape: str = "[4,1,1]", dtype: str = "float") -> str:
    return f"""g ({dtype}[2,4,3,3] x, {dtype}[4] g, {dtype}[4] b, {dtype}[4] mu, {dtype}[4] var,
                  {dtype}{c_shape} c, {dtype}{c_shape} d) => ({dtype}[2,4,3,3] y) {{
        t = BatchNormalization <epsilon = 0.001> (x, g, b, mu, var)
        {ops_text}
    }}"""


WEIGHTS = dict(weights=("g", "b", "mu", "var", "c", "d"), positive=("var",))


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
@pytest.mark.parametrize("c_shape", ["[4,1,1]", "[1,4,1,1]", "[1]", ""])
def test_one_op_folds_into_the_batchnorm(op, c_shape):
    model = build(_bn_then(f"y = {op}(t, c)", c_shape), weights=WEIGHTS["weights"],
                  positive=("var", "c"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["BatchNormalization"]
    assert rewritten(graph, f"{op.lower()}-into-bn") == 1


@pytest.mark.parametrize("ops_text", ["s = Mul(c, t)\n y = Add(d, s)",
                                      "s = Div(t, c)\n y = Sub(s, d)"])
def test_scale_layer_folds_in_one_rewrite(ops_text):
    model = build(_bn_then(ops_text), weights=WEIGHTS["weights"], positive=("var", "c"))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["BatchNormalization"]
    assert rewritten(graph, "scale-layer-into-bn") == 1


def test_constant_along_another_axis_is_left_alone():
    graph = fuse(build(_bn_then("y = Mul(t, c)", "[3,1]"), **WEIGHTS), PASS)
    assert op_types(graph) == ["BatchNormalization", "Mul"]
    assert "not per-channel" in reasons(graph, "mul-into-bn")[0]


def test_subtracting_the_batchnorm_from_a_constant_is_left_alone():
    graph = fuse(build(_bn_then("y = Sub(c, t)"), **WEIGHTS), PASS)
    assert op_types(graph) == ["BatchNormalization", "Sub"]


def test_batchnorm_read_elsewhere_is_left_alone():
    model = build("""g (float[2,4,3,3] x, float[4] g, float[4] b, float[4] mu, float[4] var,
                        float[4,1,1] c) => (float[2,4,3,3] y, float[2,4,3,3] t) {
            t = BatchNormalization (x, g, b, mu, var)
            y = Mul(t, c)
        }""", **WEIGHTS)
    graph = fuse(model, PASS)
    assert op_types(graph) == ["BatchNormalization", "Mul"]


def test_division_by_a_zero_channel_is_left_alone():
    model = build(_bn_then("y = Div(t, c)"), **WEIGHTS,
                  values={"c": [[[1.0]], [[0.0]], [[2.0]], [[3.0]]]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["BatchNormalization", "Div"]
    assert reasons(graph, "div-into-bn") == ["the divisor has zeros"]
