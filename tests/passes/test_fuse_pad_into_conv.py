"""fuse-pad-into-conv: a constant zero Pad of the spatial dims becomes Conv padding."""
import numpy as np
import pytest

from graphopt.testing import assert_same_outputs, run_passes
from _fuse_testlib import build, fuse, op_types, reasons, rewritten

PASS = "fuse-pad-into-conv"


@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_fused(group, bias):
    b_decl, b_arg = (", float[8] b", ", b") if bias else ("", "")
    model = build(f"""g (float[1,8,5,5] x, int64[8] p, float[8,{8 // group},3,3] w{b_decl})
        => (float[1,8,6,8] y) {{
            xp = Pad(x, p)
            y = Conv <pads=[0,1,0,1], group={group}> (xp, w{b_arg})
        }}""", weights=("w", "b"), values={"p": [0, 0, 1, 0, 0, 0, 0, 1]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Conv"]
    assert graph.nodes[0].attr("pads") == [1, 1, 0, 2]
    assert rewritten(graph, "pad-into-conv") == 1


def test_pad_with_axes_and_explicit_zero_value():
    model = build("""g (float[1,2,5,5] x, int64[4] p, float v, int64[2] ax, float[3,2,3,3] w)
        => (float[1,3,5,5] y) {
            xp = Pad(x, p, v, ax)
            y = Conv(xp, w)
        }""", weights=("w",), values={"p": [1, 1, 1, 1], "v": 0.0, "ax": [-2, -1]}, opset=18)
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Conv"]
    assert graph.nodes[0].attr("pads") == [1, 1, 1, 1]


def test_conv_with_auto_pad_valid():
    model = build("""g (float[1,2,5,5] x, int64[8] p, float[3,2,3,3] w) => (float[1,3,5,5] y) {
            xp = Pad(x, p)
            y = Conv <auto_pad="VALID"> (xp, w)
        }""", weights=("w",), values={"p": [0, 0, 1, 1, 0, 0, 1, 1]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Conv"]
    assert graph.nodes[0].attr("pads") == [1, 1, 1, 1]
    assert graph.nodes[0].attr("auto_pad") is None


@pytest.mark.parametrize("auto_pad, pads", [("SAME_UPPER", [2, 2, 3, 3]),
                                             ("SAME_LOWER", [3, 3, 2, 2])])
def test_conv_with_auto_pad_same_becomes_explicit(auto_pad, pads):
    model = build(f"""g (float[1,2,5,6] x, int64[8] p, float[3,2,4,4] w) => (float[1,3,7,8] y) {{
            xp = Pad(x, p)
            y = Conv <auto_pad="{auto_pad}"> (xp, w)
        }}""", weights=("w",), values={"p": [0, 0, 1, 1, 0, 0, 1, 1]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Conv"]
    assert graph.nodes[0].attr("pads") == pads and graph.nodes[0].attr("auto_pad") is None
    assert_same_outputs(model, graph)


def test_auto_pad_same_with_symbolic_size_is_refused():
    model = build("""g (float[1,2,H,W] x, int64[8] p, float[3,2,3,3] w) => (float[1,3,?,?] y) {
            xp = Pad(x, p)
            y = Conv <auto_pad="SAME_UPPER"> (xp, w)
        }""", weights=("w",), values={"p": [0, 0, 1, 1, 0, 0, 1, 1]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Pad", "Conv"]
    assert any("symbolic spatial size" in r for r in reasons(graph, "pad-into-conv"))


def _pad_conv(pad_attrs="", pads=(0, 0, 1, 1, 0, 0, 1, 1), value=None, conv_attrs="",
              extra_out="", extra=""):
    v_decl, v_arg = (", float v", ", v") if value is not None else ("", "")
    values = {"p": list(pads)} | ({"v": value} if value is not None else {})
    return build(f"""g (float[1,2,5,5] x, int64[8] p{v_decl}, float[3,2,3,3] w)
        => (float[1,3,5,5] y{extra_out}) {{
            xp = Pad {pad_attrs} (x, p{v_arg})
            y = Conv {conv_attrs} (xp, w)
            {extra}
        }}""", weights=("w",), values=values)


NEGATIVE = {
    "reflect": (lambda: _pad_conv(pad_attrs='<mode="reflect">'), "Pad mode is 'reflect'"),
    "nonzero-value": (lambda: _pad_conv(value=1.5), "Pad value is 1.5, not 0"),
    "batch-padding": (lambda: _pad_conv(pads=(1, 0, 1, 1, 0, 0, 1, 1)),
                        "pads the batch or channel dims"),
    "pad-read-elsewhere": (lambda: _pad_conv(extra_out=", float[1,2,7,7] r", extra="r = Relu(xp)"),
                           "also read outside the pattern (by Relu)"),
}


@pytest.mark.parametrize("case", NEGATIVE.values(), ids=NEGATIVE.keys())
def test_not_fused(case):
    make, reason = case
    graph = fuse(make(), PASS)
    assert "Pad" in op_types(graph)
    found = reasons(graph, "pad-into-conv")
    assert any(reason in r for r in found), found


def test_cropping_pad_is_refused():
    model = build("""g (float[1,2,7,7] x, int64[8] p, float[3,2,3,3] w) => (float[1,3,3,3] y) {
            xp = Pad(x, p)
            y = Conv(xp, w)
        }""", weights=("w",), values={"p": [0, 0, -1, -1, 0, 0, -1, -1]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Pad", "Conv"]
    assert "negative pads" in reasons(graph, "pad-into-conv")[0]


def test_dynamic_pads_are_refused():
    model = build("""g (float[1,2,5,5] x, int64[8] p, float[3,2,3,3] w) => (float[1,3,?,?] y) {
            xp = Pad(x, p)
            y = Conv(xp, w)
        }""", weights=("w",))
    graph = run_passes(model, PASS)
    feeds = {"x": np.ones((1, 2, 5, 5), np.float32), "p": np.array([0, 0, 1, 1, 0, 0, 1, 1])}
    assert_same_outputs(model, graph, feeds=feeds)
    assert op_types(graph) == ["Pad", "Conv"]
    assert reasons(graph, "pad-into-conv") == ["input 1 of Pad is a graph input, not a constant"]
