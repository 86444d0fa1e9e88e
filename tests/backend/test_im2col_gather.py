"""The gathered im2col (csrc/im2col_gather.c) on output rows that tile a GEMM panel exactly
(widths 8, 4, 2, 1 at stride 1 along x, copied as whole output rows) and on rows that do not
(gathered column by column), against onnxruntime on the vector and the portable build; on
AVX-512 the GEMM after it is the lane path's (graphopt_lane_sgemm)."""
from __future__ import annotations

import numpy as np
import pytest
from backend_helpers import check_against_onnxruntime, make_model
from onnx import TensorProto as TP
from onnx import helper

from graphopt.backend import compile as compile_model
from graphopt.backend.c.ops import im2col_gather

RNG = np.random.default_rng(23)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _model():
    """Output widths 8, 4, 2, 1 (a vertical stride and a dilation leave the last panel with
    rows past the output, which must read as zeros), and width 3 for the per-column gather."""
    nodes = [
        helper.make_node("Conv", ["X8", "W8", "B8"], ["w8_conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["w8_conv"], ["w8"]),
        helper.make_node("Conv", ["X4", "W4"], ["w4_strided"], pads=[1, 1, 1, 1],
                         strides=[2, 1]),
        helper.make_node("Conv", ["X2", "W2"], ["w2_dilated"], dilations=[2, 1]),
        helper.make_node("Conv", ["X1", "W1"], ["w1"]),
        helper.make_node("Conv", ["X3", "W3"], ["w3_gathered"], pads=[0, 1, 0, 1],
                         strides=[1, 2]),
        # more rows than one 16-row panel of the AVX-512 lane GEMM, 49 and 42 columns (16 per
        # register tile, then 1 column alone / a partial tile of 10), batch 2, bias + Relu
        helper.make_node("Conv", ["X7", "W7", "B7"], ["w7_conv"], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["w7_conv"], ["w7"]),
        helper.make_node("Conv", ["X6", "W6"], ["w6"], pads=[1, 1, 1, 1]),
    ]
    inputs = {"X8": (TP.FLOAT, [1, 5, 8, 8]), "X4": (TP.FLOAT, [1, 3, 9, 4]),
              "X2": (TP.FLOAT, [1, 4, 7, 3]), "X1": (TP.FLOAT, [1, 3, 6, 3]),
              "X3": (TP.FLOAT, [1, 2, 5, 5]), "X7": (TP.FLOAT, [2, 24, 14, 14]),
              "X6": (TP.FLOAT, [1, 8, 7, 6])}
    inits = {"W8": _w(6, 5, 3, 3), "B8": _w(6), "W4": _w(7, 3, 3, 3), "W2": _w(5, 4, 2, 2),
             "W1": _w(4, 3, 3, 3), "W3": _w(3, 2, 3, 3), "W7": _w(37, 24, 3, 3), "B7": _w(37),
             "W6": _w(20, 8, 3, 3)}
    return make_model(nodes, inputs, ["w8", "w4_strided", "w2_dilated", "w1", "w3_gathered",
                                      "w7", "w6"], inits)


@pytest.fixture(autouse=True)
def no_direct(monkeypatch):
    """These convolutions are small enough for the direct kernel: leave it out."""
    monkeypatch.setattr(im2col_gather, "DIRECT_MAX_MACS", 0)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_gathered_im2col_matches_onnxruntime(target):
    check_against_onnxruntime(_model(), target=target, layout="nchw")


def test_every_conv_here_takes_the_gathered_im2col():
    compiled = compile_model(_model(), optimize=False, layout="nchw")
    chosen = {step.outputs[0].name: step.algorithm for step in compiled.programs()[0].steps
              if step.op_type == "Conv"}
    assert set(chosen.values()) == {"im2col_gather"}, chosen
