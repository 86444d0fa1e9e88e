"""The direct small-plane convolution (csrc/im2col_gather.c, graphopt_conv_direct): output
channel counts that fill, half-fill and overflow a weight block, pixel counts that split into
uneven tiles, strides, dilations, asymmetric pads, 1-D, no bias, a batch, and fused epilogues
(Relu and Clip in registers, a residual Add after), against onnxruntime on the vector and
the portable build."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from backend_helpers import check_against_onnxruntime, conv_algorithms, make_model, \
    scaled_weights
from onnx import TensorProto as TP
from onnx import helper

from graphopt.backend.c.ops.im2col_gather import pack_direct

_w = partial(scaled_weights, np.random.default_rng(29))


def _model():
    nodes = [
        # digits_cnn's layers: 32 channels (two AVX2 blocks) on 8x8 and 4x4, bias + Relu
        helper.make_node("Conv", ["A", "Wa", "Ba"], ["a_conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a_conv"], ["a"]),
        helper.make_node("Conv", ["B", "Wb", "Bb"], ["b_conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b_conv", "R"], ["b"]),  # a residual add in the epilogue
        # 7 channels (a part block), stride 2, asymmetric pads, no bias, a batch of 2
        helper.make_node("Conv", ["C", "Wc"], ["c"], pads=[0, 1, 2, 0], strides=[2, 2]),
        # 33 channels (a block and a sliver), dilation 2
        helper.make_node("Conv", ["D", "Wd", "Bd"], ["d"], dilations=[2, 2], pads=[1, 2, 1, 2]),
        # 1-D, a fused Clip
        helper.make_node("Conv", ["E", "We", "Be"], ["e_conv"], pads=[2, 2]),
        helper.make_node("Clip", ["e_conv", "lo", "hi"], ["e"]),
        # a strided 1x1 window (not pointwise)
        helper.make_node("Conv", ["F", "Wf"], ["f"], strides=[2, 2]),
    ]
    inputs = {"A": (TP.FLOAT, [1, 16, 8, 8]), "B": (TP.FLOAT, [1, 32, 4, 4]),
              "R": (TP.FLOAT, [1, 32, 4, 4]), "C": (TP.FLOAT, [2, 3, 9, 7]),
              "D": (TP.FLOAT, [1, 5, 6, 5]), "E": (TP.FLOAT, [1, 4, 11]),
              "F": (TP.FLOAT, [1, 6, 5, 5])}
    inits = {"Wa": _w(32, 16, 3, 3), "Ba": _w(32), "Wb": _w(32, 32, 3, 3), "Bb": _w(32),
             "Wc": _w(7, 3, 3, 2), "Wd": _w(33, 5, 3, 3), "Bd": _w(33), "We": _w(9, 4, 5),
             "Be": _w(9), "Wf": _w(20, 6, 1, 1), "lo": np.float32(-0.5), "hi": np.float32(0.5)}
    return make_model(nodes, inputs, ["a", "b", "c", "d", "e", "f"], inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_direct_conv_matches_onnxruntime(target):
    model = _model()
    chosen = conv_algorithms(model, target=target, layout="nchw")
    assert set(chosen.values()) == {"direct"}, chosen
    check_against_onnxruntime(model, target=target, layout="nchw")


def test_weights_are_packed_in_channel_blocks():
    w = _w(5, 2, 3, 3)
    packed = pack_direct(w, 4)  # two blocks of 4 channels, the second with 3 zero channels
    assert packed.shape == (2, 18, 4)
    np.testing.assert_array_equal(packed[0, :, 1], w[1].reshape(-1))
    np.testing.assert_array_equal(packed[1, :, 0], w[4].reshape(-1))
    assert not packed[1, :, 1:].any()
