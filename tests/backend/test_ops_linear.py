"""Gemm, MatMul and Conv against onnxruntime, including the csrc GEMM's blocking edges."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import check_against_onnxruntime, make_model

RNG = np.random.default_rng(7)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_gemm_variants(target):
    nodes = [
        helper.make_node("Gemm", ["A", "Wt", "bias"], ["plain"], transB=1),
        helper.make_node("Gemm", ["At", "W", "C"], ["trans_a_beta"], transA=1, alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["A", "Bt_rt", "Crt"], ["runtime_c_beta"], transB=1, beta=0.25),
        helper.make_node("Gemm", ["A", "W"], ["no_c"], alpha=3.0),
        helper.make_node("Gemm", ["A", "W", "scalar_c"], ["scalar_c_out"]),
        helper.make_node("Gemm", ["Small", "W", "bias"], ["small_m"]),
        helper.make_node("Relu", ["plain"], ["relu"]),  # folded into the epilogue
    ]
    inputs = {"A": (TP.FLOAT, [37, 300]), "At": (TP.FLOAT, [300, 37]),
              "Bt_rt": (TP.FLOAT, [70, 300]), "Crt": (TP.FLOAT, [37, 70]),
              "Small": (TP.FLOAT, [3, 300])}
    inits = {"Wt": _w(70, 300), "W": _w(300, 70), "bias": _w(70), "C": _w(37, 1),
             "scalar_c": np.float32(0.5)}
    model = make_model(nodes, inputs, ["relu", "trans_a_beta", "runtime_c_beta", "no_c",
                                       "scalar_c_out", "small_m"], inits)
    check_against_onnxruntime(model, target=target)


def test_matmul_shapes():
    nodes = [
        helper.make_node("MatMul", ["X3", "W"], ["folded_batch"]),
        helper.make_node("MatMul", ["Q", "K"], ["batched"]),
        helper.make_node("MatMul", ["Q", "K1"], ["broadcast_batch"]),
        helper.make_node("MatMul", ["v", "W"], ["vec_mat"]),
        helper.make_node("MatMul", ["X3", "u"], ["mat_vec"]),
        helper.make_node("MatMul", ["Big", "Wide"], ["blocked"]),
        helper.make_node("Add", ["batched", "bias"], ["batched_bias"]),
    ]
    inputs = {"X3": (TP.FLOAT, [2, 5, 40]), "Q": (TP.FLOAT, [2, 3, 9, 16]),
              "K": (TP.FLOAT, [2, 3, 16, 11]), "K1": (TP.FLOAT, [3, 16, 11]),
              "v": (TP.FLOAT, [40]), "u": (TP.FLOAT, [40]),
              "Big": (TP.FLOAT, [1100, 20]), "Wide": (TP.FLOAT, [20, 4200])}
    inits = {"W": _w(40, 24), "bias": _w(11)}
    model = make_model(nodes, inputs, ["folded_batch", "batched_bias", "broadcast_batch", "vec_mat",
                                       "mat_vec", "blocked"], inits)
    check_against_onnxruntime(model)


def test_matmul_deep_k_crosses_kc_blocks():
    model = make_model([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                       {"A": (TP.FLOAT, [13, 700]), "B": (TP.FLOAT, [700, 45])}, ["Y"])
    check_against_onnxruntime(model, rtol=2e-4)


def _conv_model():
    nodes = [
        helper.make_node("Conv", ["X", "W3"], ["padded"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["X", "W3", "B8"], ["strided"], strides=[2, 2], pads=[0, 1, 2, 1]),
        helper.make_node("Conv", ["X", "W3", "B8"], ["dilated"], dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["X", "Wg", "B8"], ["grouped"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["X", "Wdw", "B4"], ["depthwise"], group=4, pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Conv", ["X", "Wmult"], ["depth_multiplier"], group=4),
        helper.make_node("Conv", ["X", "W1", "B8"], ["pointwise"]),
        helper.make_node("Conv", ["X", "W3"], ["same_upper"], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Conv", ["X", "W3"], ["same_lower"], auto_pad="SAME_LOWER"),
        helper.make_node("Conv", ["X1d", "W1d", "B8"], ["conv1d"], pads=[2, 1], strides=[2]),
        helper.make_node("Conv", ["X", "W3", "B8"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "residual"], ["c_res"]),
        helper.make_node("Clip", ["c_res", "zero", "six"], ["c_res_clip"]),
    ]
    inputs = {"X": (TP.FLOAT, [2, 4, 9, 11]), "X1d": (TP.FLOAT, [2, 4, 15]),
              "residual": (TP.FLOAT, [2, 8, 9, 11])}
    inits = {"W3": _w(8, 4, 3, 3), "Wg": _w(8, 2, 3, 3), "Wdw": _w(4, 1, 3, 3),
             "Wmult": _w(8, 1, 2, 2), "W1": _w(8, 4, 1, 1), "W1d": _w(8, 4, 5), "B8": _w(8),
             "B4": _w(4), "zero": np.float32(0.0), "six": np.float32(1.0)}
    outputs = ["padded", "strided", "dilated", "grouped", "depthwise", "depth_multiplier",
               "pointwise", "same_upper", "same_lower", "conv1d", "c_res_clip"]
    return make_model(nodes, inputs, outputs, inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_conv_variants(target):
    check_against_onnxruntime(_conv_model(), target=target)


def test_conv_epilogue_fusion_is_used():
    from graphopt.backend import compile as compile_model

    compiled = compile_model(_conv_model(), optimize=False)
    assert compiled.report.fused_epilogues == 2  # Add(residual) and Clip folded into the Conv
    assert "epilogue: Add, Clip" in compiled.source


def test_conv_algorithm_is_chosen_per_layer_and_recorded():
    from graphopt.backend import compile as compile_model

    # NCHW algorithms (layout selection may run some of these blocked: test_layout_blocked.py)
    compiled = compile_model(_conv_model(), optimize=False, layout="nchw")
    chosen = {step.outputs[0].name: step.algorithm for step in compiled.programs()[0].steps
              if step.op_type == "Conv"}
    assert chosen["depthwise"] == "depthwise"
    assert chosen["pointwise"] == "pointwise"
    assert chosen["padded"] == chosen["strided"] == chosen["conv1d"] == "direct"  # small
    assert chosen["depth_multiplier"] == "im2col"  # group == C but M != C: not depthwise


@pytest.mark.parametrize("target", ["native", "portable"])
def test_depthwise_unit_stride_rows_in_vector_blocks(target):
    """Rows wider than the vector blocks, borders on both sides, dilation, asymmetric pads,
    a kernel wider than the row, planes narrower than a vector (the flat span over rows), a
    vertical stride, with a fused Relu and bias."""
    nodes = [
        helper.make_node("Conv", ["X", "W3", "B"], ["c3"], group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["c3_relu"]),
        helper.make_node("Conv", ["X", "W3"], ["dilated"], group=3, pads=[2, 0, 2, 3],
                         dilations=[2, 2]),
        helper.make_node("Conv", ["X", "W3"], ["dilated_same"], group=3, pads=[2, 2, 2, 2],
                         dilations=[2, 2]),
        helper.make_node("Conv", ["Narrow", "W5"], ["wide_kernel"], group=3, pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["Small", "W3", "B"], ["small_plane"], group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["Small", "W3"], ["strided_rows"], group=3, pads=[1, 1, 1, 1],
                         strides=[2, 1]),
    ]
    inputs = {"X": (TP.FLOAT, [2, 3, 5, 77]), "Narrow": (TP.FLOAT, [1, 3, 4, 3]),
              "Small": (TP.FLOAT, [1, 3, 7, 7])}
    inits = {"W3": _w(3, 1, 3, 3), "W5": _w(3, 1, 5, 5), "B": _w(3)}
    model = make_model(nodes, inputs, ["c3_relu", "dilated", "dilated_same", "wide_kernel",
                                       "small_plane", "strided_rows"], inits)
    check_against_onnxruntime(model, target=target)
