"""Indexing, scans, selection, Einsum, ConvTranspose, normalizations, quantization and losses:
small models (several ops each, shapes unlike the node tests') against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from backend_helpers import check_against_onnxruntime, make_model
from graphopt.backend import compile as compile_model
from graphopt.errors import UnsupportedError

I64 = np.int64
RNG = np.random.default_rng(7)


def _normal(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_indexing_scans_and_selection(target):
    nodes = [
        helper.make_node("Trilu", ["M", "one"], ["upper"]),
        helper.make_node("Trilu", ["M", "minus_one"], ["lower"], upper=0),
        helper.make_node("CumSum", ["M", "axis1"], ["cumsum"], exclusive=1, reverse=1),
        helper.make_node("OneHot", ["labels", "depth", "on_off"], ["onehot"], axis=1),
        helper.make_node("ScatterElements", ["M", "scatter_idx", "updates"], ["scattered"],
                         axis=2, reduction="add"),
        helper.make_node("ScatterND", ["M", "nd_idx", "nd_updates"], ["scattered_nd"],
                         reduction="mul"),
        helper.make_node("GatherND", ["M", "gather_idx"], ["gathered"], batch_dims=1),
        helper.make_node("TopK", ["M", "k"], ["smallest", "smallest_at"], axis=1, largest=0),
    ]
    inits = {"one": np.array(1, I64), "minus_one": np.array(-1, I64), "axis1": np.array(1, I64),
             "depth": np.array(5, I64), "on_off": np.array([-1.0, 2.0], np.float32),
             "scatter_idx": np.array([[[0, 4, 4]], [[1, 1, 2]]], I64),
             "updates": _normal(2, 1, 3),
             "nd_idx": np.array([[1, 2], [0, 0], [1, 2]], I64), "nd_updates": _normal(3, 5),
             "gather_idx": np.array([[[2], [0]], [[1], [1]]], I64), "k": np.array([2], I64)}
    model = make_model(nodes, {"M": (TP.FLOAT, [2, 3, 5]), "labels": (TP.INT64, [2, 3])},
                       ["upper", "lower", "cumsum", "onehot", "scattered",
                        "scattered_nd", "gathered", "smallest", "smallest_at"], inits, opset=18)
    feeds = {"M": _normal(2, 3, 5), "labels": np.array([[0, 4, -1], [2, -5, 3]], I64)}
    check_against_onnxruntime(model, feeds, target=target)


def test_einsum_forms():
    nodes = [helper.make_node("Einsum", ["A", "B"], ["batched"], equation="...ij,...jk->...ik"),
             helper.make_node("Einsum", ["S"], ["diagonal"], equation="ii->i"),
             helper.make_node("Einsum", ["A2", "B2"], ["implicit"], equation="ij,jk"),
             helper.make_node("Einsum", ["A2"], ["total"], equation="ij->")]
    model = make_model(nodes, {"A": (TP.FLOAT, [2, 3, 4]), "B": (TP.FLOAT, [1, 4, 5]),
                               "S": (TP.FLOAT, [4, 4]), "A2": (TP.FLOAT, [3, 4]),
                               "B2": (TP.FLOAT, [4, 2])},
                       ["batched", "diagonal", "implicit", "total"])
    check_against_onnxruntime(model)


def test_conv_transpose_variants():
    nodes = [helper.make_node("ConvTranspose", ["X", "W", "B"], ["strided"], strides=[2, 2],
                              pads=[1, 0, 0, 1], output_padding=[1, 1], dilations=[1, 2]),
             helper.make_node("ConvTranspose", ["X", "Wg"], ["grouped"], group=2,
                              output_shape=[9, 11], strides=[2, 2], auto_pad="SAME_UPPER"),
             helper.make_node("ConvTranspose", ["X1", "W1"], ["one_d"], strides=[3])]
    inits = {"W": _normal(4, 3, 3, 2), "B": _normal(3), "Wg": _normal(4, 1, 3, 3),
             "W1": _normal(2, 3, 4)}
    model = make_model(nodes, {"X": (TP.FLOAT, [2, 4, 5, 6]), "X1": (TP.FLOAT, [1, 2, 7])},
                       ["strided", "grouped", "one_d"], inits)
    check_against_onnxruntime(model)


def test_normalizations():
    nodes = [helper.make_node("RMSNormalization", ["X", "scale_last"], ["rms"], axis=-1),
             helper.make_node("GroupNormalization", ["X", "scale_c", "bias_c"], ["group"],
                              num_groups=2, epsilon=1e-3),
             helper.make_node("LpNormalization", ["X"], ["l1"], axis=1, p=1),
             helper.make_node("LpNormalization", ["X"], ["l2"], axis=-1, p=2),
             helper.make_node("MeanVarianceNormalization", ["X"], ["mvn"], axes=[0, 3]),
             helper.make_node("InstanceNormalization", ["X", "scale_c", "bias_c"], ["inst"])]
    inits = {"scale_last": _normal(5), "scale_c": _normal(4), "bias_c": _normal(4)}
    shape = [2, 4, 3, 5]  # every output has X's shape (GroupNormalization has no shape inference)
    graph = helper.make_graph(
        nodes, "norms", [helper.make_tensor_value_info("X", TP.FLOAT, shape)],
        [helper.make_tensor_value_info(n.output[0], TP.FLOAT, shape) for n in nodes],
        [numpy_helper.from_array(a, name) for name, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    check_against_onnxruntime(model)


def test_quantization():
    nodes = [helper.make_node("QuantizeLinear", ["X", "scale_axis", "zero_axis"], ["q_axis"],
                              axis=1),
             helper.make_node("DequantizeLinear", ["q_axis", "scale_axis", "zero_axis"],
                              ["dq_axis"], axis=1),
             helper.make_node("QuantizeLinear", ["X", "scale_block", "zero_block"], ["q_block"],
                              axis=2, block_size=2),
             helper.make_node("DynamicQuantizeLinear", ["X2"], ["dq", "dq_scale", "dq_zero"]),
             helper.make_node("QLinearMatMul", ["A", "a_scale", "a_zero", "B", "b_scale",
                                                "b_zero", "y_scale", "y_zero"], ["qmm"]),
             helper.make_node("MatMulInteger", ["A", "B", "a_zero", "b_zero"], ["imm"])]
    inits = {"scale_axis": np.array([0.05, 0.1, 0.2], np.float32),
             "zero_axis": np.array([-3, 0, 5], np.int8),
             "scale_block": np.abs(_normal(2, 3, 2)) + 0.05,
             "zero_block": RNG.integers(0, 20, (2, 3, 2)).astype(np.uint8),
             "a_scale": np.array(0.02, np.float32), "a_zero": np.array(3, np.uint8),
             "b_scale": np.array(0.03, np.float32), "b_zero": np.array(120, np.uint8),
             "y_scale": np.array(0.05, np.float32), "y_zero": np.array(10, np.uint8)}
    model = make_model(nodes, {"X": (TP.FLOAT, [2, 3, 4]), "X2": (TP.FLOAT, [3, 5]),
                               "A": (TP.UINT8, [2, 4, 6]), "B": (TP.UINT8, [6, 3])},
                       ["q_axis", "dq_axis", "q_block", "dq", "dq_scale", "dq_zero", "qmm",
                        "imm"], inits, opset=21)
    feeds = {"X": _normal(2, 3, 4) * 4, "X2": _normal(3, 5),
             "A": RNG.integers(0, 256, (2, 4, 6)).astype(np.uint8),
             "B": RNG.integers(0, 256, (6, 3)).astype(np.uint8)}
    check_against_onnxruntime(model, feeds)


def test_losses_pooling_indices_and_small_ops():
    nodes = [helper.make_node("NegativeLogLikelihoodLoss", ["logp", "target", "weight"],
                              ["nll"], ignore_index=1),
             helper.make_node("SoftmaxCrossEntropyLoss", ["scores", "target"], ["sce", "log_prob"],
                              reduction="sum"),
             helper.make_node("MaxPool", ["img"], ["pooled", "argmax"], kernel_shape=[2, 3],
                              strides=[2, 2], storage_order=1),
             helper.make_node("LogSoftmax", ["big"], ["log_softmax"]),
             helper.make_node("Shrink", ["big"], ["shrunk"], lambd=2.0, bias=0.5),
             helper.make_node("CenterCropPad", ["img", "crop_shape"], ["cropped"], axes=[2, 3])]
    inits = {"weight": np.abs(_normal(4)), "crop_shape": np.array([3, 8], I64)}
    model = make_model(nodes, {"logp": (TP.FLOAT, [3, 4, 2]), "scores": (TP.FLOAT, [3, 4, 2]),
                               "target": (TP.INT64, [3, 2]), "img": (TP.FLOAT, [1, 2, 5, 7]),
                               "big": (TP.FLOAT, [2, 4])},
                       ["nll", "sce", "log_prob", "pooled", "argmax", "log_softmax", "shrunk",
                        "cropped"], inits, opset=18)
    feeds = {"logp": _normal(3, 4, 2), "scores": _normal(3, 4, 2),
             "target": np.array([[0, 1], [3, 2], [1, 1]], I64), "img": _normal(1, 2, 5, 7),
             "big": np.array([[1e4, 1e4 + 1, 1e4 + 2, 1e4 + 3], [-3, 0.5, 2.5, 1]], np.float32)}
    check_against_onnxruntime(model, feeds)


def test_recurrent_layers():
    """Sequence lengths, both directions, initial states, peepholes, clip, linear_before_reset
    and non-default activations, against onnxruntime (which has no layout=1: the node tests
    cover it)."""
    hidden, inputs, seq, batch = 3, 4, 5, 2
    nodes = [
        helper.make_node("LSTM", ["X", "Wl", "Rl", "Bl", "lens", "h0", "c0", "P"],
                         ["lstm_y", "lstm_h", "lstm_c"], hidden_size=hidden,
                         direction="bidirectional", clip=0.5),
        helper.make_node("GRU", ["X", "Wg", "Rg", "Bg"], ["gru_y", "gru_h"],
                         hidden_size=hidden, linear_before_reset=1),
        helper.make_node("GRU", ["X", "Wg", "Rg", "Bg", "lens"], ["gru0_y"], hidden_size=hidden,
                         direction="reverse"),
        helper.make_node("RNN", ["X", "Wr", "Rr", "", "lens"], ["rnn_y", "rnn_h"],
                         hidden_size=hidden, activations=["LeakyRelu"], activation_alpha=[0.2]),
    ]
    inits = {"Wl": 3 * _normal(2, 4 * hidden, inputs), "Rl": 3 * _normal(2, 4 * hidden, hidden),
             "Bl": _normal(2, 8 * hidden), "h0": _normal(2, batch, hidden),
             "c0": _normal(2, batch, hidden), "P": _normal(2, 3 * hidden),
             "Wg": _normal(1, 3 * hidden, inputs), "Rg": _normal(1, 3 * hidden, hidden),
             "Bg": _normal(1, 6 * hidden), "Wr": _normal(1, hidden, inputs),
             "Rr": _normal(1, hidden, hidden), "lens": np.array([5, 3], np.int32)}
    model = make_model(nodes, {"X": (TP.FLOAT, [seq, batch, inputs])},
                       ["lstm_y", "lstm_h", "lstm_c", "gru_y", "gru_h", "gru0_y", "rnn_y",
                        "rnn_h"], inits)
    check_against_onnxruntime(model)


def test_linear_algebra_sequences_unpooling_and_rotary():
    nodes = [helper.make_node("Det", ["M"], ["det"]),
             helper.make_node("ReverseSequence", ["S", "lens"], ["reversed"], batch_axis=0,
                              time_axis=1),
             helper.make_node("MaxPool", ["img"], ["pooled", "where"], kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("MaxUnpool", ["pooled", "where"], ["unpooled"], kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Col2Im", ["cols", "image", "block"], ["image_out"],
                              strides=[2, 1], pads=[1, 0, 0, 1], dilations=[1, 2]),
             helper.make_node("RotaryEmbedding", ["Q", "cos", "sin", "pos"], ["rotated"],
                              rotary_embedding_dim=4, interleaved=1)]
    inits = {"lens": np.array([3, 1, 4], I64), "image": np.array([5, 6], I64),
             "block": np.array([2, 2], I64), "cos": _normal(8, 2), "sin": _normal(8, 2),
             "pos": np.array([[0, 3, 7], [1, 1, 2]], I64)}
    model = make_model(nodes, {"M": (TP.FLOAT, [2, 4, 4]), "S": (TP.FLOAT, [3, 4, 2]),
                               "img": (TP.FLOAT, [1, 2, 4, 6]), "cols": (TP.FLOAT, [1, 8, 15]),
                               "Q": (TP.FLOAT, [2, 2, 3, 6])},
                       ["det", "reversed", "unpooled", "image_out", "rotated"], inits, opset=23)
    check_against_onnxruntime(model)


def test_function_bodies_constant_if_and_plain_matmul():
    """Attention (no emitter) runs as its ONNX function body; an If with a constant condition
    compiles the branch it takes; MatMul on double runs as a plain loop."""
    then_branch = helper.make_graph([helper.make_node("Neg", ["Q"], ["taken"])], "then", [],
                                    [helper.make_tensor_value_info("taken", TP.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Abs", ["Q"], ["other"])], "else", [],
                                    [helper.make_tensor_value_info("other", TP.FLOAT, None)])
    nodes = [helper.make_node("Attention", ["Q", "K", "V"], ["attended"], is_causal=1),
             helper.make_node("If", ["flag"], ["branch"], then_branch=then_branch,
                              else_branch=else_branch),
             helper.make_node("MatMul", ["D1", "D2"], ["double"])]
    graph = helper.make_graph(
        nodes, "expansions",
        [helper.make_tensor_value_info(n, TP.FLOAT, [2, 3, 4, 8]) for n in ("Q", "K", "V")] +
        [helper.make_tensor_value_info("D1", TP.DOUBLE, [2, 3, 4]),
         helper.make_tensor_value_info("D2", TP.DOUBLE, [4, 5])],
        [helper.make_tensor_value_info("attended", TP.FLOAT, [2, 3, 4, 8]),
         helper.make_tensor_value_info("branch", TP.FLOAT, [2, 3, 4, 8]),
         helper.make_tensor_value_info("double", TP.DOUBLE, [2, 3, 5])],
        [numpy_helper.from_array(np.array(True), "flag")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    check_against_onnxruntime(model)


def test_fourier_transforms():
    nodes = [helper.make_node("DFT", ["real", "", "axis1"], ["spectrum"]),
             helper.make_node("DFT", ["real", "len12", "axis1"], ["padded"], onesided=1),
             helper.make_node("DFT", ["cplx", "", "axis1"], ["inverse"], inverse=1),
             helper.make_node("STFT", ["signal", "step", "window"], ["stft"], onesided=1),
             helper.make_node("STFT", ["signal", "step", "", "frame"], ["stft_full"],
                              onesided=0)]
    inits = {"axis1": np.array(1, I64), "len12": np.array(12, I64), "step": np.array(5, I64),
             "window": np.hanning(8).astype(np.float32), "frame": np.array(6, I64)}
    model = make_model(nodes, {"real": (TP.FLOAT, [2, 10, 1]), "cplx": (TP.FLOAT, [2, 9, 2]),
                               "signal": (TP.FLOAT, [2, 40, 1])},
                       ["spectrum", "padded", "inverse", "stft", "stft_full"], inits, opset=20)
    check_against_onnxruntime(model)


def test_grid_sample_modes_and_padding():
    combos = [("linear", "zeros", 0), ("nearest", "border", 1), ("cubic", "reflection", 0),
              ("linear", "reflection", 1), ("cubic", "zeros", 1), ("nearest", "reflection", 0)]
    nodes = [helper.make_node("GridSample", ["X", "grid"], [f"y{i}"], mode=mode,
                              padding_mode=padding, align_corners=align)
             for i, (mode, padding, align) in enumerate(combos)]
    model = make_model(nodes, {"X": (TP.FLOAT, [2, 3, 5, 6]), "grid": (TP.FLOAT, [2, 4, 7, 2])},
                       [f"y{i}" for i in range(len(combos))], opset=20)
    feeds = {"X": _normal(2, 3, 5, 6),
             "grid": RNG.uniform(-1.3, 1.3, (2, 4, 7, 2)).astype(np.float32)}
    check_against_onnxruntime(model, feeds)
    cubic_border = make_model([helper.make_node("GridSample", ["X", "grid"], ["y"], mode="cubic",
                                                padding_mode="border")],
                              {"X": (TP.FLOAT, [1, 1, 3, 3]), "grid": (TP.FLOAT, [1, 2, 2, 2])},
                              ["y"], opset=20)
    with pytest.raises(UnsupportedError, match="onnxruntime .* only clamps the taps"):
        compile_model(cubic_border, optimize=False)

