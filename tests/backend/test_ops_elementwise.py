"""Elementwise ops against onnxruntime: many ops per compiled model to keep builds few."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import check_against_onnxruntime, make_model, random_feeds

FLOAT_UNARY = ["Abs", "Neg", "Exp", "Relu", "Sigmoid", "Tanh", "Erf", "Floor", "Ceil", "Sign",
               "Sin", "Cos", "Atan", "Sinh", "Cosh", "Asinh", "Softplus", "Softsign", "Selu",
               "HardSwish", "Identity", "IsNaN", "IsInf", "Mish"]
POSITIVE_UNARY = ["Log", "Sqrt", "Reciprocal"]
BOUNDED_UNARY = ["Asin", "Acos", "Atanh", "Tan"]
WITH_ATTRS = [("Elu", {"alpha": 0.7}), ("LeakyRelu", {"alpha": 0.2}), ("Celu", {"alpha": 1.5}),
              ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("ThresholdedRelu", {"alpha": 0.5}),
              ("Gelu", {}), ("Gelu", {"approximate": "tanh"})]


def _unary_model():
    nodes, outputs = [], []
    for op, source in ([(o, "X") for o in FLOAT_UNARY] + [(o, "P") for o in POSITIVE_UNARY]
                       + [(o, "U") for o in BOUNDED_UNARY]):
        nodes.append(helper.make_node(op, [source], [f"{op}_out"]))
        outputs.append(f"{op}_out")
    for i, (op, attrs) in enumerate(WITH_ATTRS):
        nodes.append(helper.make_node(op, ["X"], [f"{op}{i}_out"], **attrs))
        outputs.append(f"{op}{i}_out")
    nodes.append(helper.make_node("Add", ["P", "one"], ["P1"]))
    nodes.append(helper.make_node("Acosh", ["P1"], ["Acosh_out"]))
    nodes.append(helper.make_node("Round", ["H"], ["Round_out"]))
    nodes.append(helper.make_node("Clip", ["X", "lo", "hi"], ["Clip_both"]))
    nodes.append(helper.make_node("Clip", ["X", "", "hi"], ["Clip_max"]))
    nodes.append(helper.make_node("Clip", ["X", "lo"], ["Clip_min"]))
    outputs += ["Acosh_out", "Round_out", "Clip_both", "Clip_max", "Clip_min"]
    shape = [3, 4, 5]
    inputs = {name: (TP.FLOAT, shape) for name in "XPU"}
    inputs["H"] = (TP.FLOAT, [8])
    inits = {"one": np.float32(1.0), "lo": np.float32(-0.5), "hi": np.float32(0.75)}
    return make_model(nodes, inputs, outputs, inits, opset=20)


@pytest.fixture(scope="module")
def unary_feeds():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32) * 2
    x[0, 0, :3] = [np.nan, np.inf, -np.inf]
    return {"X": x, "P": rng.uniform(0.2, 3.0, (3, 4, 5)).astype(np.float32),
            "U": rng.uniform(-0.9, 0.9, (3, 4, 5)).astype(np.float32),
            "H": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -3.7], np.float32)}


@pytest.mark.parametrize("target", ["native", "portable"])
def test_unary_float_ops(target, unary_feeds):
    check_against_onnxruntime(_unary_model(), unary_feeds, target=target)


def test_binary_ops_with_broadcasting():
    ops = ["Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "LessOrEqual",
           "GreaterOrEqual"]
    nodes = [helper.make_node(op, ["A", "B"], [f"{op}_out"]) for op in ops]
    nodes += [
        helper.make_node("Pow", ["P", "C"], ["Pow_out"]),
        helper.make_node("Max", ["A", "B", "C"], ["Max_out"]),
        helper.make_node("Min", ["A", "B", "C"], ["Min_out"]),
        helper.make_node("Sum", ["A", "B", "C"], ["Sum_out"]),
        helper.make_node("Mean", ["A", "B", "C"], ["Mean_out"]),
        helper.make_node("Mod", ["A", "B"], ["Mod_out"], fmod=1),
        helper.make_node("PRelu", ["A", "slope"], ["PRelu_out"]),
        helper.make_node("Mul", ["A", "two"], ["Scalar_out"]),
        helper.make_node("Sub", ["two", "C"], ["ScalarLeft_out"]),
        helper.make_node("Greater", ["A", "B"], ["cond"]),
        helper.make_node("Where", ["cond", "A", "C"], ["Where_out"]),
        helper.make_node("Not", ["cond"], ["Not_out"]),
        helper.make_node("Less", ["B", "C"], ["cond2"]),
        helper.make_node("And", ["cond", "cond2"], ["And_out"]),
        helper.make_node("Or", ["cond", "cond2"], ["Or_out"]),
        helper.make_node("Xor", ["cond", "cond2"], ["Xor_out"]),
    ]
    outputs = [f"{op}_out" for op in ops] + ["Pow_out", "Max_out", "Min_out", "Sum_out", "Mean_out",
                                             "Mod_out", "PRelu_out", "Scalar_out",
                                             "ScalarLeft_out", "Where_out", "Not_out", "And_out",
                                             "Or_out", "Xor_out"]
    inputs = {"A": (TP.FLOAT, [2, 3, 4]), "B": (TP.FLOAT, [3, 1]), "C": (TP.FLOAT, [4]),
              "P": (TP.FLOAT, [2, 3, 4])}
    inits = {"slope": np.array([[0.1], [0.2], [0.3]], np.float32), "two": np.float32(2.0)}
    model = make_model(nodes, inputs, outputs, inits)
    feeds = random_feeds(model, overrides={"P": np.random.default_rng(1).uniform(
        0.5, 2.0, (2, 3, 4)).astype(np.float32)})
    check_against_onnxruntime(model, feeds)


def test_integer_ops_and_casts():
    nodes = [helper.make_node(op, ["I", "J"], [f"{op}_out"]) for op in
             ("Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less")]
    nodes += [
        helper.make_node("Mod", ["I", "J"], ["Mod_out"]),
        helper.make_node("Mod", ["I", "J"], ["Fmod_out"], fmod=1),
        helper.make_node("Abs", ["I"], ["Abs_out"]),
        helper.make_node("Neg", ["I"], ["Neg_out"]),
        helper.make_node("Clip", ["I", "ilo", "ihi"], ["Clip_out"]),
        helper.make_node("Cast", ["I"], ["I_to_f"], to=TP.FLOAT),
        helper.make_node("Cast", ["F"], ["F_to_i"], to=TP.INT64),
        helper.make_node("Cast", ["F"], ["F_to_b"], to=TP.BOOL),
        helper.make_node("Cast", ["F_to_b"], ["B_to_f"], to=TP.FLOAT),
        helper.make_node("Cast", ["K"], ["K_to_i64"], to=TP.INT64),
        helper.make_node("Cast", ["F"], ["F_to_d"], to=TP.DOUBLE),
        helper.make_node("CastLike", ["K", "F"], ["K_like_f"]),
        helper.make_node("Add", ["K", "K"], ["K2"]),
        helper.make_node("BitShift", ["S", "shift"], ["Shl_out"], direction="LEFT"),
        helper.make_node("BitShift", ["S", "shift"], ["Shr_out"], direction="RIGHT"),
    ]
    outputs = [f"{op}_out" for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less",
                                      "Mod", "Fmod", "Abs", "Neg", "Clip", "Shl", "Shr")]
    outputs += ["I_to_f", "F_to_i", "F_to_b", "B_to_f", "K_to_i64", "F_to_d", "K_like_f", "K2"]
    inputs = {"I": (TP.INT64, [3, 4]), "J": (TP.INT64, [4]), "F": (TP.FLOAT, [5]),
              "K": (TP.INT32, [2, 2]), "S": (TP.UINT8, [6])}
    inits = {"ilo": np.int64(-2), "ihi": np.int64(3), "shift": np.array([1, 2, 3, 0, 1, 2], np.uint8)}
    model = make_model(nodes, inputs, outputs, inits)
    rng = np.random.default_rng(5)
    feeds = {"I": rng.integers(-20, 20, (3, 4)).astype(np.int64),
             "J": np.array([3, -4, 5, 7], np.int64),
             "F": np.array([-2.7, -0.0, 0.4, 3.9, 100.5], np.float32),
             "K": rng.integers(-100, 100, (2, 2)).astype(np.int32),
             "S": np.array([1, 3, 7, 200, 64, 255], np.uint8)}
    check_against_onnxruntime(model, feeds)


def test_rank6_broadcast_and_scalars():
    nodes = [helper.make_node("Add", ["A", "B"], ["sum6"]),
             helper.make_node("Mul", ["S", "T"], ["scalar_product"]),
             helper.make_node("Sub", ["A", "S"], ["minus_scalar"])]
    inputs = {"A": (TP.FLOAT, [2, 1, 3, 1, 2, 2]), "B": (TP.FLOAT, [3, 3, 2, 1]),
              "S": (TP.FLOAT, []), "T": (TP.FLOAT, [])}
    model = make_model(nodes, inputs, ["sum6", "scalar_product", "minus_scalar"])
    check_against_onnxruntime(model)


def test_inplace_chain_is_correct_and_drops_restrict():
    from graphopt.backend import compile as compile_model

    nodes = [helper.make_node("Add", ["X", "Y"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Mul", ["r", "Y"], ["m"]), helper.make_node("Exp", ["m"], ["out"])]
    model = make_model(nodes, {"X": (TP.FLOAT, [4, 8]), "Y": (TP.FLOAT, [4, 8])}, ["out"])
    check_against_onnxruntime(model)
    compiled = compile_model(model, optimize=False)
    assert compiled.report.inplace == 3  # Relu, Mul and Exp each overwrite their input
    assert compiled.report.arena_bytes == 0  # ... which is the graph output buffer itself
    # pointers that share a buffer lose `restrict`; the others keep it
    source = compiled.source
    assert "static int k1_Relu(const float* p_X, float* p_Y)" in source
    assert "static int k2_Mul(const float* p_A, const float* restrict p_B, float* p_C)" in source


def test_spec_edge_cases_against_the_onnx_reference():
    """Cases where onnxruntime's C++ is undefined behaviour (shifts past the width) or that it
    does not implement (float Mod with fmod=0): compared with onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    from graphopt.backend import compile as compile_model

    nodes = [helper.make_node("BitShift", ["I", "S"], ["shl"], direction="LEFT"),
             helper.make_node("BitShift", ["I", "S"], ["shr"], direction="RIGHT"),
             helper.make_node("Mod", ["F", "G"], ["fmod0"]),
             helper.make_node("Clip", ["F", "hi", "lo"], ["clip_min_above_max"])]
    model = make_model(nodes, {"I": (TP.INT32, [6]), "S": (TP.INT32, [6]), "F": (TP.FLOAT, [6]),
                               "G": (TP.FLOAT, [6])},
                       ["shl", "shr", "fmod0", "clip_min_above_max"],
                       {"hi": np.float32(1.0), "lo": np.float32(-1.0)})
    feeds = {"I": np.array([-8, 4, -1, 5, 7, -3], np.int32),
             "S": np.array([32, 33, -1, 2, 100, 1], np.int32),
             "F": np.array([-4.5, 4.5, -7.0, 7.0, 0.0, 3.25], np.float32),
             "G": np.array([2.0, -2.0, 3.0, -3.0, 5.0, 1.5], np.float32)}
    got = compile_model(model, optimize=False).run(feeds)
    want = ReferenceEvaluator(model).run(None, feeds)
    for name, g, w in zip(["shl", "shr", "fmod0", "clip"], got, want):
        np.testing.assert_array_equal(g, w, err_msg=name)
