"""The specialized paths of the blocked (NCHWc) kernels against onnxruntime, on every x86 GEMM
family this CPU runs (AVX-512: 16-float blocks, AVX2: 8) and on the portable path (4): the
first-layer 3x3 conv on the model's NCHW input with its window unrolled (stride 1 and 2, with
and without padding, next to a 5x5 one that keeps the generic loop), the depthwise 3x3 whose
row loads are shared by the taps (stride 1 and 2, rows of several 6-pixel groups plus a
remainder), and the 1x1 conv whose weights are too large to stay in cache (they are
prefetched pair by pair, an odd number of output blocks leaving a last lone block). Outputs
are held to graphopt.numerics' fp32 tolerance."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from backend_helpers import make_model
from graphopt.backend.c.target import get_target
from test_gemm_kernels import _x86_target
from test_layout_blocked import _checked, _kernels
from test_layout_padded import _runnable_x86_isas

FLOAT = TensorProto.FLOAT
TARGETS = ["portable", *_runnable_x86_isas()]


def _target(name: str):  # noqa: ANN202
    return get_target(name) if name == "portable" else _x86_target(name)


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _first_layers(size: int) -> onnx.ModelProto:
    """3x3 convs on the 3-channel input: stride 2 pad 1 + Clip(0, 6) (MobileNet's stem),
    stride 1 pad 1, stride 1 no padding (every tile inside) and stride 2 with asymmetric
    pads; a 5x5 stride 2 (the generic window); 32 output channels (two blocks of 16) and 24
    (a lone last block on AVX-512). Each output goes through a 1x1 conv so it stays
    blocked until the end."""
    rng = np.random.default_rng(11)
    convs = [("s2", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4), 32),
             ("s1", dict(kernel_shape=[3, 3], pads=[1] * 4), 32),
             ("valid", dict(kernel_shape=[3, 3]), 24),
             ("asym", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]), 24),
             ("k5", dict(kernel_shape=[5, 5], strides=[2, 2], pads=[2] * 4), 32)]
    nodes, outputs = [], []
    inits = {"zero": np.array(0, np.float32), "six": np.array(6, np.float32)}
    for name, attrs, m in convs:
        nodes += [helper.make_node("Conv", ["x", f"w_{name}", f"b_{name}"], [f"c_{name}"],
                                   **attrs),
                  helper.make_node("Clip", [f"c_{name}", "zero", "six"], [f"r_{name}"]),
                  helper.make_node("Conv", [f"r_{name}", f"p_{name}"], [f"y_{name}"],
                                   kernel_shape=[1, 1])]
        k = attrs["kernel_shape"][0]
        inits |= {f"w_{name}": _w(rng, m, 3, k, k), f"b_{name}": _w(rng, m),
                  f"p_{name}": _w(rng, 16, m, 1, 1)}
        outputs.append(f"y_{name}")
    return make_model(nodes, {"x": (FLOAT, [2, 3, size, size])}, outputs, inits)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("size", [23, 40])
def test_first_layer_3x3_convs_match_onnxruntime(target, size):
    # 23: rows of a few short tiles; 40: 20-pixel output rows of several 6-pixel tiles
    kernels = _kernels(_checked(_first_layers(size), _target(target), "blocked"))
    assert kernels["nchwc_direct"] == 5 and "ToBlocked" not in kernels


def _depthwise(c: int, size: int) -> onnx.ModelProto:
    """Depthwise 3x3 pad 1 at stride 1 and 2 (+ Clip, then a residual Add after a 1x1)."""
    rng = np.random.default_rng(12)
    nodes = [
        helper.make_node("Conv", ["x", "d1", "e1"], ["a"], kernel_shape=[3, 3], pads=[1] * 4,
                         group=c),
        helper.make_node("Clip", ["a", "zero", "six"], ["b"]),
        helper.make_node("Conv", ["b", "d2", "e2"], ["s"], kernel_shape=[3, 3], pads=[1] * 4,
                         strides=[2, 2], group=c),
        helper.make_node("Conv", ["s", "p"], ["t"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["t", "s"], ["y"]),
    ]
    inits = {"d1": _w(rng, c, 1, 3, 3), "e1": _w(rng, c), "d2": _w(rng, c, 1, 3, 3),
             "e2": _w(rng, c), "p": _w(rng, c, c, 1, 1), "zero": np.array(0, np.float32),
             "six": np.array(6, np.float32)}
    return make_model(nodes, {"x": (FLOAT, [1, c, size, size])}, ["y", "b"], inits)


@pytest.mark.parametrize("target", TARGETS)
def test_depthwise_3x3_rows_match_onnxruntime(target):
    # 33 columns: 31 interior ones at stride 1 (five 6-pixel groups + 1), 15 at stride 2
    kernels = _kernels(_checked(_depthwise(32, 33), _target(target), "blocked"))
    assert kernels["nchwc_depthwise"] == 2


def _large_pointwise() -> onnx.ModelProto:
    """1x1 convs with weights above the cold threshold (368 x 400 floats, 589 KB): 400 output
    channels are 25 blocks of 16 (the last pair a lone block) or 50 of 8; + Relu, and one
    back to 368 channels with a residual Add, on a 7x7 plane (two pixel chunks)."""
    rng = np.random.default_rng(13)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c", "x"], ["y"]),
    ]
    inits = {"w1": _w(rng, 400, 368, 1, 1), "b1": _w(rng, 400), "w2": _w(rng, 368, 400, 1, 1),
             "b2": _w(rng, 368)}
    return make_model(nodes, {"x": (FLOAT, [1, 368, 7, 7])}, ["y"], inits)


@pytest.mark.parametrize("target", TARGETS)
def test_pointwise_with_cold_weights_matches_onnxruntime(target):
    kernels = _kernels(_checked(_large_pointwise(), _target(target), "blocked"))
    assert kernels["nchwc_pointwise"] == 2
