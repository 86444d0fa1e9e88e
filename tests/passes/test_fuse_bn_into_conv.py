"""fuse-bn-into-conv: BatchNormalization folds into Conv / ConvTranspose / Gemm weights."""
import pytest

from _fuse_testlib import build, fuse, op_types, reasons, rewritten

BN_PARAMS = ("s", "bb", "m", "v")
BN_DECL = "float[{c}] s, float[{c}] bb, float[{c}] m, float[{c}] v"


@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn(group, bias):
    b_decl, b_arg = (", float[8] b", ", b") if bias else ("", "")
    model = build(f"""g (float[N,8,6,6] x, float[8,{8 // group},3,3] w{b_decl},
                         {BN_DECL.format(c=8)})
        => (float[N,8,6,6] y) {{
            c = Conv <pads=[1,1,1,1], group={group}> (x, w{b_arg})
            y = BatchNormalization <epsilon=0.001> (c, s, bb, m, v)
        }}""", weights=("w", "b", *BN_PARAMS), positive=("v",))
    graph = fuse(model, "fuse-bn-into-conv")
    assert op_types(graph) == ["Conv"]
    assert rewritten(graph, "bn-into-conv") == 1
    conv = graph.nodes[0]
    assert conv.origin == "bn-into-conv" and conv.attr("group") == group
    assert len(conv.inputs) == 3  # the bias is created when the Conv had none
    assert [v.name for v in graph.outputs] == ["y"]


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_bn(group, bias):
    b_decl, b_arg = (", float[6] b", ", b") if bias else ("", "")
    model = build(f"""g (float[1,4,5,5] x, float[4,{6 // group},3,3] w{b_decl},
                         {BN_DECL.format(c=6)})
        => (float[1,6,11,11] y) {{
            c = ConvTranspose <strides=[2,2], group={group}> (x, w{b_arg})
            y = BatchNormalization(c, s, bb, m, v)
        }}""", weights=("w", "b", *BN_PARAMS), positive=("v",))
    graph = fuse(model, "fuse-bn-into-conv")
    assert op_types(graph) == ["ConvTranspose"]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_gemm_bn(trans_b, bias):
    w_shape = "[5,3]" if trans_b else "[3,5]"
    c_decl, c_arg = (", float[5] cc", ", cc") if bias else ("", "")
    model = build(f"""g (float[4,3] x, float{w_shape} w{c_decl}, {BN_DECL.format(c=5)})
        => (float[4,5] y) {{
            c = Gemm <transB={trans_b}, alpha=0.5, beta=2.0> (x, w{c_arg})
            y = BatchNormalization(c, s, bb, m, v)
        }}""", weights=("w", "cc", *BN_PARAMS), positive=("v",))
    graph = fuse(model, "fuse-bn-into-conv")
    assert op_types(graph) == ["Gemm"]
    assert graph.nodes[0].attr("beta") is None  # folded into C


CONV_BN = """g (float[1,4,6,6] x, float[4,4,3,3] w, {bn}) => (float[1,4,4,4] y{extra_out}) {{
        c = Conv(x, w)
        y{bn_outs} = BatchNormalization{bn_attrs}(c, s, bb, m, v)
        {extra}
    }}"""


def _conv_bn(extra_out="", extra="", bn_attrs="", bn_outs="", weights=("w", *BN_PARAMS)):
    text = CONV_BN.format(bn=BN_DECL.format(c=4), extra_out=extra_out, extra=extra,
                          bn_attrs=bn_attrs, bn_outs=bn_outs)
    return build(text, weights=weights, positive=("v",))


NEGATIVE = {
    "conv-output-is-graph-output": (
        lambda: _conv_bn(extra_out=", float[1,4,4,4] c"), "output is a graph output"),
    "conv-output-read-elsewhere": (
        lambda: _conv_bn(extra_out=", float[1,4,4,4] r", extra="r = Relu(c)"),
        "also read outside the pattern (by Relu)"),
    "dynamic-weight": (
        lambda: _conv_bn(weights=BN_PARAMS), "the weight of Conv is not a constant"),
    "dynamic-bn-params": (
        lambda: _conv_bn(weights=("w", "s", "bb", "m")), "not a constant"),
}


@pytest.mark.parametrize("case", NEGATIVE.values(), ids=NEGATIVE.keys())
def test_not_fused(case):
    make, reason = case
    graph = fuse(make(), "fuse-bn-into-conv")
    assert "BatchNormalization" in op_types(graph)
    assert rewritten(graph, "bn-into-conv") == 0
    assert any(reason in r for r in reasons(graph, "bn-into-conv")), reasons(graph, "bn-into-conv")


def test_shared_weight_is_not_duplicated():
    model = build(f"""g (float[1,4,6,6] x, float[4,4,3,3] w, {BN_DECL.format(c=4)})
        => (float[1,4,4,4] y, float[1,4,4,4] z) {{
            c = Conv(x, w)
            y = BatchNormalization(c, s, bb, m, v)
            z = Conv(x, w)
        }}""", weights=("w", *BN_PARAMS), positive=("v",))
    graph = fuse(model, "fuse-bn-into-conv")
    assert op_types(graph) == ["Conv", "BatchNormalization", "Conv"]
    assert "the weight of Conv is shared with 1 other node(s)" in reasons(graph, "bn-into-conv")[0]


def test_standalone_bn_stays():
    model = build(f"""g (float[1,4,6,6] x, {BN_DECL.format(c=4)}) => (float[1,4,6,6] y) {{
            r = Relu(x)
            y = BatchNormalization(r, s, bb, m, v)
        }}""", weights=BN_PARAMS, positive=("v",))
    graph = fuse(model, "fuse-bn-into-conv")
    assert op_types(graph) == ["Relu", "BatchNormalization"]
    assert reasons(graph, "bn-into-conv") == [
        "input 0 of BatchNormalization is computed by Relu, not Conv|ConvTranspose|Gemm"]


def test_training_mode_is_refused():
    model = _conv_bn(bn_attrs=" <training_mode=1>", bn_outs=", rm, rv")
    graph = fuse(model, "fuse-bn-into-conv")
    assert "BatchNormalization" in op_types(graph)
    assert reasons(graph, "bn-into-conv") == [
        "BatchNormalization is in training mode (it updates running statistics)"]
