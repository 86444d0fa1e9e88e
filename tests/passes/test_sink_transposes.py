"""sink-transposes: Transposes move through layout-agnostic and axis-carrying ops and cancel, and
never where that would add Transposes or bytes; io-layout changes the interface only on request."""
import numpy as np
import pytest

from _fuse_testlib import build, fuse, op_types
from _layout_models import tf_style_model

from graphopt import onnx_io
from graphopt.layout import layout_report, set_io_layout
from graphopt.layout.sink import transpose_totals
from graphopt.numerics import random_inputs, run_onnxruntime
from graphopt.optimizer import optimize
from graphopt.testing import assert_outputs_match, assert_same_outputs

PASS = "sink-transposes"
X = "float[2,3,4,5] x"  # NCHW with distinct dims, so a wrong perm changes a shape
TO_NHWC, TO_NCHW = "<perm=[0,2,3,1]>", "<perm=[0,3,1,2]>"


def _sandwich(body: str, out: str, weights=(), values=None, opset: int = 17, inputs=()):
    """x (NCHW) -> Transpose to NHWC -> `body` (reads t, writes y); `weights` become constants,
    `inputs` stay graph inputs."""
    inputs = ", ".join([X, *weights, *inputs])
    names = [w.split()[-1] for w in weights]
    text = f"g ({inputs}) => ({out}) {{\n t = Transpose {TO_NHWC} (x)\n{body}\n}}"
    return build(text, weights=names, values=values, opset=opset)


# Each case: the op in the NHWC frame, then back to NCHW (or no Transpose when the op drops the
# permuted axes); after the pass no Transpose is left and onnxruntime agrees.
CASES = {
    "relu": ("o = Relu(t)\n y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y", (), None),
    "clip": ("o = Clip(t, lo, hi)\n y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y",
             ("float lo", "float hi"), {"lo": -0.5, "hi": 0.5}),
    "cast": ("o = Cast <to=11> (t)\n y = Transpose <perm=[0,3,1,2]> (o)", "double[2,3,4,5] y",
             (), None),
    "bias-add": ("o = Add(t, b)\n y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y",
                 ("float[3] b",), None),
    "channel-mul-4d": ("o = Mul(s, t)\n y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y",
                       ("float[1,1,1,3] s",), None),
    "row-div": ("o = Div(t, d)\n y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y",
                ("float[5,3] d",), {"d": np.arange(1, 16, dtype=np.float32).reshape(5, 3)}),
    "softmax": ("o = Softmax <axis=3> (t)\n y = Transpose <perm=[0,3,1,2]> (o)",
                "float[2,3,4,5] y", (), None),
    "reduce-keepdims": ("o = ReduceMean <axes=[1,2]> (t)\n y = Transpose <perm=[0,3,1,2]> (o)",
                        "float[2,3,1,1] y", (), None),
    "reduce-to-nc": ("y = ReduceMean <axes=[1,2], keepdims=0> (t)", "float[2,3] y", (), None),
    "reducesum-input-axes": ("o = ReduceSum <keepdims=0> (t, ax)\n"
                             " y = Transpose <perm=[0,2,1]> (o)",
                             "float[2,3,5] y", ("int64[1] ax",), {"ax": [1]}),
    "argmax": ("y = ArgMax <axis=3, keepdims=0> (t)", "int64[2,4,5] y", (), None),
    "concat": ("o = Concat <axis=3> (t, t)\n y = Transpose <perm=[0,3,1,2]> (o)",
               "float[2,6,4,5] y", (), None),
    "split": ("a, b = Split <axis=2> (t, sp)\n o = Concat <axis=2> (b, a)\n"
              " y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y", ("int64[2] sp",),
              {"sp": [2, 3]}),
    "slice": ("o = Slice(t, st, en, ax)\n y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,2,5] y",
              ("int64[1] st", "int64[1] en", "int64[1] ax"), {"st": [1], "en": [3], "ax": [1]}),
    "slice-default-axes": ("o = Slice(t, st, en)\n y = Transpose <perm=[0,3,1,2]> (o)",
                           "float[1,3,3,5] y", ("int64[2] st", "int64[2] en"),
                           {"st": [1, 1], "en": [2, 4]}),
    "pad": ("o = Pad(t, pads)\n y = Transpose <perm=[0,3,1,2]> (o)", "float[2,5,5,7] y",
            ("int64[8] pads",), {"pads": [0, 0, 1, 2, 0, 1, 0, 0]}),
    "gather-scalar": ("y = Gather <axis=3> (t, i)", "float[2,4,5] y", ("int64 i",), {"i": 1}),
    "gather-vector": ("o = Gather <axis=1> (t, i)\n y = Transpose <perm=[0,3,1,2]> (o)",
                      "float[2,3,2,5] y", ("int64[2] i",), {"i": [3, 0]}),
    "unsqueeze": ("o = Unsqueeze(t, ax)\n y = Transpose <perm=[0,1,4,2,3]> (o)",
                  "float[2,1,3,4,5] y", ("int64[1] ax",), {"ax": [1]}),
    "resize": ("o = Resize <mode=\"nearest\"> (t, roi, sc)\n y = Transpose <perm=[0,3,1,2]> (o)",
               "float[2,3,8,10] y", ("float[0] roi", "float[4] sc"),
               {"roi": np.zeros(0), "sc": [1, 2, 2, 1]}),
    "qdq": ("q = QuantizeLinear(t, s, z)\n o = DequantizeLinear(q, s, z)\n"
            " y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y",
            ("float s", "uint8 z"), {"s": 0.05, "z": 128}),
    "qdq-per-channel": ("q = QuantizeLinear <axis=3> (t, s, z)\n"
                        " o = DequantizeLinear <axis=3> (q, s, z)\n"
                        " y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y",
                        ("float[3] s", "uint8[3] z"), {"s": [0.05, 0.1, 0.2], "z": [128, 0, 7]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_transpose_sinks_through_op_and_cancels(case):
    body, out, weights, values = CASES[case]
    model = _sandwich(body, out, weights, values)
    graph = fuse(model, PASS)  # reductions sum in another order: fp32 tolerance
    assert "Transpose" not in op_types(graph), op_types(graph)


OPSET18 = {
    "pad-axes": ("o = Pad(t, pads, cv, ax)\n y = Transpose <perm=[0,3,1,2]> (o)",
                 "float[2,3,7,5] y", ("int64[2] pads", "float cv", "int64[1] ax"),
                 {"pads": [1, 2], "cv": 0.5, "ax": [1]}),
    "reducemean-axes-input": ("y = ReduceMean <keepdims=0> (t, ax)", "float[2,3] y",
                              ("int64[2] ax",), {"ax": [1, 2]}),
    "resize-sizes": ("o = Resize <mode=\"nearest\"> (t, , , sz)\n"
                     " y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,8,5] y",
                     ("int64[4] sz",), {"sz": [2, 8, 5, 3]}),
}


@pytest.mark.parametrize("case", list(OPSET18))
def test_opset18_axes_inputs_are_renumbered(case):
    body, out, weights, values = OPSET18[case]
    graph = fuse(_sandwich(body, out, weights, values, opset=18), PASS)
    assert "Transpose" not in op_types(graph), op_types(graph)


def test_squeeze_drops_the_permuted_axis():
    model = build(f"""g (float[2,1,4,5] x, int64[1] ax) => (float[2,4,5] y) {{
            t = Transpose {TO_NHWC} (x)
            y = Squeeze(t, ax)
        }}""", weights=["ax"], values={"ax": [3]})
    graph = fuse(model, PASS, rtol=0, atol=0)
    assert "Transpose" not in op_types(graph)


def test_residual_add_of_two_transposed_branches_keeps_one_transpose():
    model = build(f"""g ({X}) => (float[2,4,5,3] y) {{
            a = Transpose {TO_NHWC} (x)
            r = Relu(x)
            b = Transpose {TO_NHWC} (r)
            y = Add(a, b)
        }}""")
    graph = fuse(model, PASS)
    assert op_types(graph).count("Transpose") == 1
    assert graph.outputs[0].name == "y" and graph.outputs[0].shape == (2, 4, 5, 3)


def test_pair_merges_into_one_and_identity_pair_vanishes():
    model = build(f"""g ({X}) => (float[2,4,5,3] y, float[2,5,3,4] z) {{
            t = Transpose {TO_NHWC} (x)
            u = Transpose {TO_NCHW} (t)
            y = Transpose {TO_NHWC} (u)
            z = Transpose <perm=[0,2,3,1]> (t)
        }}""")
    graph = fuse(model, PASS, rtol=0, atol=0)
    assert op_types(graph) == ["Transpose", "Transpose"]
    assert {tuple(n.attr("perm")) for n in graph.nodes} == {(0, 2, 3, 1), (0, 3, 1, 2)}


def test_reduction_moves_the_transpose_to_its_smaller_output():
    model = _sandwich("y = ReduceMax <axes=[-2], keepdims=0> (t)", "float[2,4,3] y")
    before = transpose_totals(onnx_io.load(model))
    graph = fuse(model, PASS)
    assert op_types(graph) == ["ReduceMax", "Transpose"]
    after = transpose_totals(graph)
    assert after[0] == before[0] and after[1] == before[1] // 5  # W (5) reduced first


def test_one_new_transpose_on_a_side_input_pays_for_two():
    model = _sandwich("o = Add(t, z)\n y = Transpose <perm=[0,3,1,2]> (o)", "float[2,3,4,5] y",
                      inputs=["float[2,4,5,3] z"])
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Transpose", "Add"]
    assert graph.nodes[0].input(0).name == "z"


@pytest.mark.parametrize("body, why", [
    ("y = Relu(t)", "the output needs the Transpose anyway"),
    ("o = Add(t, z)\n y = Mul(o, o)", "z would need a Transpose and y one too"),
    ("a = Relu(t)\n b = Sigmoid(t)\n y = Add(a, b)", "fan-out to the output"),
    ("y = Cast <to=11> (t)", "a Transpose after the Cast would move twice the bytes"),
])
def test_no_rewrite_where_it_does_not_pay(body, why):
    out = "double[2,4,5,3] y" if "Cast" in body else "float[2,4,5,3] y"
    model = _sandwich(body, out, inputs=("float[2,4,5,3] z",) if "z)" in body else ())
    graph = fuse(model, PASS)
    assert op_types(graph).count("Transpose") == 1, why
    assert graph.nodes[0].op_type == "Transpose" and graph.nodes[0].input(0).name == "x"


def test_transposes_and_bytes_never_grow_on_a_fan_out():
    model = build(f"""g ({X}) => (float[2,4,5,3] a, float[2,4,5,3] b) {{
            t = Transpose {TO_NHWC} (x)
            a = Relu(t)
            b = Neg(t)
        }}""")
    graph = onnx_io.load(model)
    before = transpose_totals(graph)
    graph = fuse(model, PASS)
    assert transpose_totals(graph) <= before


def test_fewer_transposes_moving_more_bytes_is_refused():
    """Sinking both small Transposes past the broadcast Add would leave one Transpose of the
    large output: one node fewer, 20x the bytes."""
    model = build("""g (float[1,3,1,1] a, float[1,3,1,1] b, float[2,4,5,3] c) => (float[2,4,5,3] y) {
            ta = Transpose <perm=[0,2,3,1]> (a)
            tb = Transpose <perm=[0,2,3,1]> (b)
            s = Add(ta, tb)
            y = Add(s, c)
        }""", weights=["c"])
    before = transpose_totals(onnx_io.load(model))
    graph = fuse(model, PASS)
    after = transpose_totals(graph)
    assert after[0] <= before[0] and after[1] <= before[1], (before, after)


# --- the TensorFlow-style model -------------------------------------------------------------------
def test_tf_style_model_ends_with_one_transpose():
    model = tf_style_model()
    assert sum(n.op_type == "Transpose" for n in model.graph.node) == 8
    graph = optimize(model, level=2).graph
    transposes = [n for n in graph.nodes if n.op_type == "Transpose"]
    assert len(transposes) == 1 and transposes[0].input(0).name == "x"
    assert [v.name for v in graph.inputs] == ["x"] and graph.inputs[0].shape == (1, 8, 8, 3)
    assert [v.name for v in graph.outputs] == ["y"]
    assert_same_outputs(model, graph)
    report = list(layout_report(graph))
    assert report[-1].startswith("layout: Transposes 8 -> 1")
    assert sum(line.lstrip().startswith("Conv '") for line in report) == 4


def test_tf_style_model_with_nhwc_output_keeps_the_two_boundary_transposes():
    model = tf_style_model(nhwc_output=True)
    graph = optimize(model, level=2).graph
    transposes = [n for n in graph.nodes if n.op_type == "Transpose"]
    assert len(transposes) == 2
    assert transposes[0].input(0).name == "x" and transposes[1].outputs[0].name == "y"
    assert graph.outputs[0].shape == (1, 8, 8, 32)
    assert_same_outputs(model, graph)


@pytest.mark.parametrize("nhwc_output", [False, True])
def test_io_layout_nchw_leaves_no_transpose_and_keeps_names(nhwc_output):
    model = tf_style_model(nhwc_output=nhwc_output)
    graph = optimize(model, level=2).graph
    assert set_io_layout(graph, "nchw") == 1 + nhwc_output
    assert "Transpose" not in op_types(graph)
    assert [v.name for v in graph.inputs] == ["x"] and [v.name for v in graph.outputs] == ["y"]
    assert graph.inputs[0].shape == (1, 3, 8, 8)
    feeds = random_inputs(onnx_io.load(model), seed=1)
    want = run_onnxruntime(model, feeds)
    if nhwc_output:
        want = [want[0].transpose(0, 3, 1, 2)]
    got = run_onnxruntime(onnx_io.export_model(graph), {"x": feeds["x"].transpose(0, 3, 1, 2)})
    assert_outputs_match(["y"], want, got)


def test_io_layout_nhwc_adds_boundary_transposes_and_keep_changes_nothing():
    model = build(f"""g ({X}, float[6,3,3,3] w) => (float[2,6,4,5] y) {{
            c = Conv <pads=[1,1,1,1]> (x, w)
            y = Relu(c)
        }}""", weights=["w"])
    graph = optimize(model, level=2).graph
    assert set_io_layout(graph, "keep") == 0
    assert set_io_layout(graph, "nhwc") == 2
    assert [v.name for v in graph.inputs] == ["x"] and [v.name for v in graph.outputs] == ["y"]
    assert graph.inputs[0].shape == (2, 4, 5, 3) and graph.outputs[0].shape == (2, 4, 5, 6)
    assert op_types(graph).count("Transpose") == 2
    feeds = random_inputs(onnx_io.load(model), seed=1)
    want = run_onnxruntime(model, feeds)[0].transpose(0, 2, 3, 1)
    got = run_onnxruntime(onnx_io.export_model(graph), {"x": feeds["x"].transpose(0, 2, 3, 1)})
    assert_outputs_match(["y"], [want], got)
