"""fuse-gelu: erf- and tanh-form GELU subgraphs become Gelu at opset 20."""
import math

import pytest

from _fuse_testlib import build, fuse, op_types, reasons, rewritten

PASS = "fuse-gelu"
CONSTS = {"half": 0.5, "one": 1.0, "two": 2.0, "sqrt2": math.sqrt(2.0),
          "inv_sqrt2": 1 / math.sqrt(2.0), "k": 0.044715, "three": 3.0,
          "c": math.sqrt(2 / math.pi)}
DECL = ", ".join(f"float {name}" for name in CONSTS)

ERF_TERM = "e = Div(x, sqrt2)\n p = Erf(e)\n t = Add(one, p)"
ERF_TERM_MUL = "e = Mul(inv_sqrt2, x)\n p = Erf(e)\n t = Add(p, one)"
TANH_TERM = """x3 = Pow(x, three)
            k3 = Mul(k, x3)
            inner = Add(x, k3)
            arg = Mul(inner, c)
            th = Tanh(arg)
            t = Add(th, one)"""
TANH_TERM_CUBE_BY_MUL = TANH_TERM.replace("x3 = Pow(x, three)", "xx = Mul(x, x)\n x3 = Mul(xx, x)")

PRODUCTS = {
    "(x*t)*0.5": "xt = Mul(x, t)\n y = Mul(xt, half)",
    "(0.5*x)*t": "hx = Mul(half, x)\n y = Mul(t, hx)",
    "x*(t*0.5)": "th2 = Mul(t, half)\n y = Mul(x, th2)",
    "(x*t)/2": "xt = Mul(t, x)\n y = Div(xt, two)",
}


def _gelu(term: str, product: str, opset: int = 20, extra: str = "", extra_out: str = ""):
    return build(f"""g (float[2,16] x, {DECL}) => (float[2,16] y{extra_out}) {{
            {term}
            {product}
            {extra}
        }}""", values=CONSTS, opset=opset)


@pytest.mark.parametrize("product", PRODUCTS.values(), ids=PRODUCTS.keys())
@pytest.mark.parametrize("term", [ERF_TERM, ERF_TERM_MUL], ids=["div-sqrt2", "mul-inv-sqrt2"])
def test_erf_gelu(term, product):
    graph = fuse(_gelu(term, product), PASS)
    assert op_types(graph) == ["Gelu"]
    assert graph.nodes[0].attr("approximate") is None
    assert rewritten(graph, "gelu-erf") == 1


@pytest.mark.parametrize("term", [TANH_TERM, TANH_TERM_CUBE_BY_MUL], ids=["pow", "mul-mul"])
@pytest.mark.parametrize("product", [PRODUCTS["(x*t)*0.5"], PRODUCTS["(0.5*x)*t"]],
                         ids=["(x*t)*0.5", "(0.5*x)*t"])
def test_tanh_gelu(term, product):
    graph = fuse(_gelu(term, product), PASS)
    assert op_types(graph) == ["Gelu"]
    assert graph.nodes[0].attr("approximate") == "tanh"


def test_opset_17_records_the_reason():
    graph = fuse(_gelu(ERF_TERM, PRODUCTS["(x*t)*0.5"], opset=17), PASS)
    assert "Gelu" not in op_types(graph)
    assert reasons(graph, "gelu-erf", at="y") == ["opset 17 < 20"]


def test_upgrade_opset_when_every_op_keeps_its_meaning():
    model = _gelu(ERF_TERM, PRODUCTS["(x*t)*0.5"], opset=17)
    graph = fuse(model, PASS + "{upgrade_opset=true}")
    assert op_types(graph) == ["Gelu"]
    assert graph.opset == 20


def test_upgrade_opset_blocked_by_changed_op():
    # ReduceMean-18 moved `axes` from an attribute to an input: relabelling would break it.
    model = _gelu(ERF_TERM, PRODUCTS["(x*t)*0.5"], opset=17, extra_out=", float[2,1] r",
                  extra="r = ReduceMean <axes=[1]> (x)")
    graph = fuse(model, PASS + "{upgrade_opset=true}")
    assert "Gelu" not in op_types(graph) and graph.opset == 17
    assert reasons(graph, "gelu-erf", at="y") == [
        "opset 17 < 20; raising it would change ReduceMean-18"]


NEGATIVE = {
    "wrong-half": (dict(product="xt = Mul(x, t)\n y = Mul(xt, k)"),
                   "is the constant [0.044714998453855515], not 0.5"),
    "erf-of-other-tensor": (dict(term="z = Neg(x)\n " + ERF_TERM.replace("Div(x,", "Div(z,")),
                            "is not the same value as 'x'"),
    "inner-is-graph-output": (dict(extra_out=", float[2,16] t"),
                              "the inner Add's output is a graph output"),
}


@pytest.mark.parametrize("case", NEGATIVE.values(), ids=NEGATIVE.keys())
def test_not_fused(case):
    kwargs, reason = case
    args = {"term": ERF_TERM, "product": PRODUCTS["(x*t)*0.5"]} | kwargs
    graph = fuse(_gelu(**args), PASS)
    assert "Gelu" not in op_types(graph)
    found = reasons(graph, "gelu-erf", at="y")
    assert any(reason in r for r in found), found
