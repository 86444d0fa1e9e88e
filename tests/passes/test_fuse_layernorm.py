"""fuse-layernorm: the decomposed layer-norm subgraph becomes LayerNormalization."""
import pytest

from _fuse_testlib import build, fuse, op_types, reasons, rewritten

PASS = "fuse-layernorm"


def _layernorm(opset=17, square="Pow(d, two)", norm="Div(d, std)", affine="both",
               axes=(-1,), var_axes=None, gamma_shape="[6]", x_shape="[2,5,6]",
               extra_out="", eps_shape="", before_norm=""):
    """A decomposed layer norm in ONNX text; axes as attribute (opset < 18) or input."""
    var_axes = axes if var_axes is None else var_axes
    if opset >= 18:
        mean_call, var_call = "ReduceMean(x, ax)", "ReduceMean(sq, vax)"
        axes_decl = f", int64[{len(axes)}] ax, int64[{len(var_axes)}] vax"
        values = {"ax": list(axes), "vax": list(var_axes)}
    else:
        mean_call = f"ReduceMean <axes=[{','.join(map(str, axes))}]> (x)"
        var_call = f"ReduceMean <axes=[{','.join(map(str, var_axes))}]> (sq)"
        axes_decl, values = "", {}
    values |= {"two": 2.0, "eps": [1e-5] * 6 if eps_shape else 1e-5}
    norm_out = {"both": "n", "gamma": "n", "none": "y"}[affine]
    tail = {"both": "sc = Mul(n, gamma)\n y = Add(beta, sc)",
            "gamma": "y = Mul(gamma, n)", "none": ""}[affine]
    return build(f"""g (float{x_shape} x, float two, float{eps_shape} eps, float{gamma_shape} gamma,
                        float[6] beta{axes_decl}) => (float{x_shape} y{extra_out}) {{
            mean = {mean_call}
            d = Sub(x, mean)
            sq = {square}
            var = {var_call}
            ve = Add(var, eps)
            std = Sqrt(ve)
            {before_norm}
            {norm_out} = {norm}
            {tail}
        }}""", weights=("gamma", "beta"), values=values, opset=opset)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("square", ["Pow(d, two)", "Mul(d, d)"])
@pytest.mark.parametrize("affine", ["both", "gamma", "none"])
def test_fused(opset, square, affine):
    graph = fuse(_layernorm(opset=opset, square=square, affine=affine), PASS)
    assert op_types(graph) == ["LayerNormalization"]
    node = graph.nodes[0]
    assert node.attr("axis") == 2 and node.attr("epsilon") == pytest.approx(1e-5)
    assert len(node.inputs) == (3 if affine == "both" else 2)


def test_reciprocal_form_and_broadcast_gamma():
    model = _layernorm(before_norm="rs = Reciprocal(std)", norm="Mul(d, rs)",
                       gamma_shape="[1,1,6]")
    graph = fuse(model, PASS)
    assert op_types(graph) == ["LayerNormalization"]
    assert graph.nodes[0].input(1).shape == (6,)


def test_two_trailing_axes():
    model = build("""g (float[2,4,6] x, float two, float eps) => (float[2,4,6] y) {
            mean = ReduceMean <axes=[1,2]> (x)
            d = Sub(x, mean)
            sq = Pow(d, two)
            var = ReduceMean <axes=[-2,-1]> (sq)
            ve = Add(var, eps)
            std = Sqrt(ve)
            y = Div(d, std)
        }""", values={"two": 2.0, "eps": 1e-5})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["LayerNormalization"]
    assert graph.nodes[0].attr("axis") == 1
    assert rewritten(graph, "layernorm-no-affine") == 1


NEGATIVE = {
    "not-trailing-axes": (dict(axes=(1,), x_shape="[2,6,6]"), "are not the trailing axes"),
    "different-axes": (dict(axes=(-1,), var_axes=(1,), x_shape="[2,6,6]"),
                       "reduce different axes"),
    "diff-is-graph-output": (dict(extra_out=", float[2,5,6] d"),
                             "the inner Sub's output is a graph output"),
    "old-opset": (dict(opset=16), "opset 16 < 17"),
    "vector-epsilon": (dict(eps_shape="[6]"), "epsilon has shape [6], not a scalar"),
}


@pytest.mark.parametrize("case", NEGATIVE.values(), ids=NEGATIVE.keys())
def test_not_fused(case):
    kwargs, reason = case
    model = _layernorm(**kwargs)
    graph = fuse(model, PASS)
    assert "LayerNormalization" not in op_types(graph)
    found = reasons(graph, "layernorm", at="y")
    assert any(reason in r for r in found), found


def test_mean_of_another_tensor_is_not_layernorm():
    model = build("""g (float[2,6] x, float[2,6] z, float two, float eps) => (float[2,6] y) {
            mean = ReduceMean <axes=[-1]> (z)
            d = Sub(x, mean)
            sq = Pow(d, two)
            var = ReduceMean <axes=[-1]> (sq)
            ve = Add(var, eps)
            std = Sqrt(ve)
            y = Div(d, std)
        }""", values={"two": 2.0, "eps": 1e-5})
    graph = fuse(model, PASS)
    assert "LayerNormalization" not in op_types(graph)
    assert reasons(graph, "layernorm-no-affine", at="y") == [
        "input 0 of ReduceMean is not the same value as 'x'"]
