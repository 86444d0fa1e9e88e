"""Pooling, reductions, softmax family and normalizations against onnxruntime."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import check_against_onnxruntime, make_model

RNG = np.random.default_rng(11)


def test_pooling():
    nodes = [
        helper.make_node("MaxPool", ["X"], ["max_pad"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("MaxPool", ["X"], ["max_ceil", "max_idx"], kernel_shape=[2, 2],
                         strides=[2, 2], ceil_mode=1),
        helper.make_node("MaxPool", ["X"], ["max_dil"], kernel_shape=[2, 2], dilations=[2, 2]),
        helper.make_node("AveragePool", ["X"], ["avg_excl"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["X"], ["avg_incl"], kernel_shape=[3, 2],
                         pads=[1, 0, 1, 1], count_include_pad=1, strides=[2, 1]),
        helper.make_node("AveragePool", ["X"], ["avg_same"], kernel_shape=[3, 3],
                         auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("LpPool", ["X"], ["lp"], kernel_shape=[2, 2], p=3),
        helper.make_node("MaxPool", ["X1"], ["max1d"], kernel_shape=[3], strides=[2]),
        helper.make_node("GlobalAveragePool", ["X"], ["gap"]),
        helper.make_node("GlobalMaxPool", ["X"], ["gmp"]),
    ]
    model = make_model(nodes, {"X": (TP.FLOAT, [2, 3, 7, 9]), "X1": (TP.FLOAT, [2, 3, 10])},
                       ["max_pad", "max_ceil", "max_idx", "max_dil", "avg_excl", "avg_incl",
                        "avg_same", "lp", "max1d", "gap", "gmp"], opset=18)
    check_against_onnxruntime(model)


def test_reductions():
    reducers = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"]
    nodes, outputs = [], []
    for op in reducers:
        nodes.append(helper.make_node(op, ["X", "axes13"], [f"{op}_13"], keepdims=1))
        nodes.append(helper.make_node(op, ["X", "axes0"], [f"{op}_0"], keepdims=0))
        outputs += [f"{op}_13", f"{op}_0"]
    nodes += [
        helper.make_node("ReduceSum", ["X"], ["sum_all"], keepdims=0),
        helper.make_node("ReduceLogSum", ["P", "axes13"], ["logsum"]),
        helper.make_node("ReduceSum", ["X", "empty"], ["noop"], noop_with_empty_axes=1),
        helper.make_node("ReduceMax", ["I", "axes0"], ["int_max"], keepdims=0),
        helper.make_node("ReduceSum", ["I", "axes13"], ["int_sum"]),
        helper.make_node("ArgMax", ["X"], ["argmax"], axis=2),
        helper.make_node("ArgMin", ["X"], ["argmin"], axis=-1, keepdims=0),
        helper.make_node("ArgMax", ["T"], ["argmax_last"], axis=1, select_last_index=1),
    ]
    outputs += ["sum_all", "logsum", "noop", "int_max", "int_sum", "argmax", "argmin",
                "argmax_last"]
    inits = {"axes13": np.array([1, -1], np.int64), "axes0": np.array([0], np.int64),
             "empty": np.zeros(0, np.int64)}
    inputs = {"X": (TP.FLOAT, [3, 4, 5, 6]), "P": (TP.FLOAT, [3, 4, 5, 6]),
              "I": (TP.INT64, [3, 4, 5, 6]), "T": (TP.FLOAT, [2, 4])}
    model = make_model(nodes, inputs, outputs, inits, opset=18)
    signs = RNG.choice([-1, 1], (3, 4, 5, 6)).astype(np.float32)
    feeds = {"X": RNG.uniform(0.5, 1.5, (3, 4, 5, 6)).astype(np.float32) * signs,
             "P": RNG.uniform(0.5, 2.0, (3, 4, 5, 6)).astype(np.float32),
             "I": RNG.integers(-50, 50, (3, 4, 5, 6)).astype(np.int64),
             "T": np.array([[1, 3, 3, 0], [2, 2, 1, 2]], np.float32)}
    check_against_onnxruntime(model, feeds)


def test_softmax_family():
    nodes = [
        helper.make_node("Softmax", ["X"], ["softmax_last"]),
        helper.make_node("Softmax", ["X"], ["softmax_mid"], axis=1),
        helper.make_node("LogSoftmax", ["X"], ["logsoftmax"], axis=-1),
        helper.make_node("LogSoftmax", ["X"], ["logsoftmax0"], axis=0),
        helper.make_node("Hardmax", ["X"], ["hardmax"], axis=2),
    ]
    model = make_model(nodes, {"X": (TP.FLOAT, [3, 4, 5])},
                       ["softmax_last", "softmax_mid", "logsoftmax", "logsoftmax0", "hardmax"])
    feeds = {"X": (RNG.standard_normal((3, 4, 5)) * 10).astype(np.float32)}
    check_against_onnxruntime(model, feeds)


def test_normalizations():
    c = 6
    nodes = [
        helper.make_node("LayerNormalization", ["S", "gamma", "beta"], ["ln", "ln_mean", "ln_inv"]),
        helper.make_node("LayerNormalization", ["S", "gamma2"], ["ln_axis1"], axis=1, epsilon=1e-3),
        helper.make_node("BatchNormalization", ["X", "scale", "bias", "mean", "var"], ["bn_const"]),
        helper.make_node("BatchNormalization", ["X", "scale_rt", "bias", "mean", "var"], ["bn_rt"],
                         epsilon=1e-3),
        helper.make_node("InstanceNormalization", ["X", "scale", "bias"], ["instnorm"]),
        helper.make_node("LRN", ["X"], ["lrn"], size=3, alpha=1e-3, beta=0.75, bias=2.0),
    ]
    inits = {"gamma": RNG.standard_normal(8).astype(np.float32),
             "beta": RNG.standard_normal(8).astype(np.float32),
             "gamma2": RNG.standard_normal((5, 8)).astype(np.float32),
             "scale": RNG.standard_normal(c).astype(np.float32),
             "bias": RNG.standard_normal(c).astype(np.float32),
             "mean": RNG.standard_normal(c).astype(np.float32),
             "var": RNG.uniform(0.5, 2, c).astype(np.float32)}
    inputs = {"S": (TP.FLOAT, [2, 5, 8]), "X": (TP.FLOAT, [2, c, 4, 5]), "scale_rt": (TP.FLOAT, [c])}
    model = make_model(nodes, inputs, ["ln", "ln_mean", "ln_inv", "ln_axis1", "bn_const", "bn_rt",
                                       "instnorm", "lrn"], inits)
    check_against_onnxruntime(model)
