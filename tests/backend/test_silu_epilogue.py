"""SiLU written as Sigmoid and Mul (EfficientNet exports) is one epilogue of its Conv/Gemm:
the IR groups the pair, the backend folds it into one Swish op, which the NCHW conv and GEMM
tile callbacks and the blocked kernels' register epilogue apply; outputs match onnxruntime."""
from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper

from backend_helpers import make_model, random_feeds
from graphopt.backend import compile as compile_model
from graphopt.backend.c.ops.conv_blocked import fast_epilogue
from graphopt.ir.fusion import find_fusion_groups
from graphopt.layout.examples import depthwise_blocks
from graphopt.numerics import run_onnxruntime
from graphopt.onnx_io import load
from graphopt.testing import assert_outputs_match

FLOAT = TensorProto.FLOAT


def _conv_silu(gate_first: bool, gate_is_output: bool = False):  # noqa: ANN202
    """x -> Conv(16 -> 16, 3x3) -> SiLU -> Conv 1x1 -> y; Mul(gate, c) when gate_first."""
    rng = np.random.default_rng(0)
    mul_inputs = ["g", "c"] if gate_first else ["c", "g"]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
             helper.make_node("Sigmoid", ["c"], ["g"]),
             helper.make_node("Mul", mul_inputs, ["s"]),
             helper.make_node("Conv", ["s", "w2"], ["y"])]
    inits = {"w": rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 12,
             "b": rng.standard_normal(16).astype(np.float32),
             "w2": rng.standard_normal((16, 16, 1, 1)).astype(np.float32) / 4}
    outputs = ["y", "g"] if gate_is_output else ["y"]
    return make_model(nodes, {"x": (FLOAT, [2, 16, 10, 10])}, outputs, inits)


def _checked(model, target: str, layout: str = "auto"):  # noqa: ANN001, ANN202
    compiled = compile_model(model, optimize=False, target=target, layout=layout)
    feeds = random_feeds(model)
    feeds["x"] = feeds["x"] * 8  # large |x|: e^-x overflows to inf, SiLU must give -0
    assert_outputs_match([o.name for o in model.graph.output], run_onnxruntime(model, feeds),
                         compiled.run(feeds), context=f"{target}, layout {layout}")
    return compiled


def _epilogues(compiled) -> list[tuple[str, list[str]]]:  # noqa: ANN001
    return [(s.op_type, [e.op_type for e in s.epilogue]) for s in compiled.programs()[0].steps]


@pytest.mark.parametrize("gate_first", [False, True])
def test_the_ir_groups_sigmoid_and_mul_with_the_conv(gate_first):
    groups = find_fusion_groups(load(_conv_silu(gate_first)))
    assert [g.describe() for g in groups] == ["Conv -> Sigmoid -> Mul"]


def test_a_sigmoid_read_elsewhere_ends_the_group():
    assert find_fusion_groups(load(_conv_silu(False, gate_is_output=True))) == []


@pytest.mark.parametrize("target", ["native", "portable"])
@pytest.mark.parametrize("layout", ["nchw", "blocked"])
@pytest.mark.parametrize("gate_first", [False, True])
def test_conv_silu_is_one_kernel_and_matches_onnxruntime(target, layout, gate_first):
    compiled = _checked(_conv_silu(gate_first), target, layout)
    convs = [e for op, e in _epilogues(compiled) if op == "Conv"]
    assert convs == [["Swish"], []]
    assert not any(op in ("Sigmoid", "Mul") for op, _ in _epilogues(compiled))
    # blocked: the register epilogue's silu flag (last field) is set, no per-tile callback
    silu_flags = re.findall(r"graphopt_nchwc_epi fe = \{.*, (\d)\};", compiled.source)
    assert silu_flags == (["1", "0"] if layout == "blocked" else [])
    assert ("graphopt_epilogue epi =" in compiled.source) == (layout == "nchw")


def test_gate_read_elsewhere_stays_a_separate_step_and_still_matches():
    compiled = _checked(_conv_silu(True, gate_is_output=True), "native", "nchw")
    assert ("Sigmoid", []) in _epilogues(compiled) and ("Mul", []) in _epilogues(compiled)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_gemm_silu_is_one_kernel_and_matches_onnxruntime(target):
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
             helper.make_node("Sigmoid", ["h"], ["g"]),
             helper.make_node("Mul", ["g", "h"], ["y"])]
    model = make_model(nodes, {"x": (FLOAT, [5, 64])}, ["y"],
                       {"w": rng.standard_normal((48, 64)).astype(np.float32) / 8,
                        "b": rng.standard_normal(48).astype(np.float32)})
    assert _epilogues(_checked(model, target)) == [("Gemm", ["Swish"])]


def test_blocked_register_epilogue_takes_silu_with_a_residual_but_one_activation():
    model = depthwise_blocks(channels=16, size=8, strides=(1,))
    compiled = compile_model(model, optimize=False, layout="blocked")
    steps = compiled.programs()[0].steps
    dw = next(s for s in steps if s.algorithm == "nchwc_depthwise")
    fast = fast_epilogue(dw.epilogue, dw.outputs[0])
    assert fast is not None and fast.silu and fast.residual is None
    project = next(s for s in steps if s.epilogue and s.epilogue[-1].op_type == "Add")
    with_silu = [*project.epilogue, dw.epilogue[-1]]  # residual then SiLU: still registers
    fast = fast_epilogue(with_silu, project.outputs[0])
    assert fast is not None and fast.silu and fast.add_first
    # SiLU then the residual: the kernels apply SiLU last, so that order takes the callback
    assert fast_epilogue([dw.epilogue[-1], *project.epilogue], project.outputs[0]) is None
    relu = [*dw.epilogue, type(dw.epilogue[-1])("Relu", {}, (), 0)]
    assert fast_epilogue(relu, dw.outputs[0]) is None  # two activations: the generic callback
