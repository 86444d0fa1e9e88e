"""Conv by im2col and GEMM a block of output columns at a time (csrc graphopt_conv2d_gemm)
against onnxruntime.

A stem-like 7x7 stride-2 convolution has few output channels next to the columns of one
block, so its blocks run im2col then the GEMM while the columns are in cache (several blocks,
the last one partial, the bias, residual Add and Relu applied per block with the block's
column offset); a 3x3 stride-2 convolution with more output channels than a block has
columns takes the whole-im2col route. Batch 2 (the epilogue's row base), odd sizes, on the
native target at 1 and 2 threads and on the portable one.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import make_model, random_feeds
from graphopt.backend import compile as compile_model
from graphopt.numerics import run_onnxruntime
from graphopt.testing import assert_outputs_match

RNG = np.random.default_rng(5)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _model():
    nodes = [
        helper.make_node("Conv", ["X", "Wstem", "Bstem"], ["stem"], pads=[3, 3, 3, 3],
                         strides=[2, 2]),
        helper.make_node("Add", ["stem", "residual"], ["stem_res"]),
        helper.make_node("Relu", ["stem_res"], ["blocked"]),
        helper.make_node("Conv", ["Y", "Wwide", "Bwide"], ["whole"], pads=[1, 0, 1, 1],
                         strides=[2, 2]),
        # deep enough (1080) for the whole-im2col route at any KC; on AVX-512 the lane GEMM
        # (100 columns: 6 register tiles and 4 alone; 40 rows: 3 panels, the last partial)
        helper.make_node("Conv", ["Z", "Wdeep", "Bdeep"], ["deep_conv"], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["deep_conv"], ["deep"]),
    ]
    inputs = {"X": (TP.FLOAT, [2, 3, 67, 61]), "residual": (TP.FLOAT, [2, 32, 34, 31]),
              "Y": (TP.FLOAT, [2, 40, 33, 35]), "Z": (TP.FLOAT, [2, 120, 20, 19])}
    inits = {"Wstem": _w(32, 3, 7, 7), "Bstem": _w(32), "Wwide": _w(72, 40, 3, 3),
             "Bwide": _w(72), "Wdeep": _w(40, 120, 3, 3), "Bdeep": _w(40)}
    return make_model(nodes, inputs, ["blocked", "whole", "deep"], inits)


@pytest.mark.parametrize("target, threads", [("native", 1), ("native", 2), ("portable", 1)])
def test_blocked_im2col_matches_onnxruntime(target, threads):
    model = _model()
    feeds = random_feeds(model, seed=6)
    compiled = compile_model(model, optimize=False, target=target, threads=threads,
                             layout="nchw")
    assert [s.algorithm for s in compiled.programs()[0].steps if s.op_type == "Conv"] == \
        ["im2col", "im2col", "im2col"]
    assert compiled.report.fused_epilogues == 3  # the residual Add and both Relus
    assert_outputs_match(["blocked", "whole", "deep"], run_onnxruntime(model, feeds),
                         compiled.run(feeds), context=f"{target}, {threads} threads")
