"""Conv by Winograd F(4x4, 3x3) and F(2x2, 3x3) (ops/winograd.py, csrc/winograd.c) against
onnxruntime.

The same model runs the im2col algorithms on the convolutions Winograd leaves (gathered for
output rows shorter than a GEMM panel, packed in runs for wider ones). Odd sizes: H and W not
multiples of the tile, channels not multiples of any vector width,
padding 0, 1 and asymmetric, batch 2 (the epilogue's row base), bias + residual + Relu fused
into the epilogue; on the native (vectorized, OpenMP) and the portable (scalar C99) target.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import make_model, random_feeds
from test_gemm_kernels import X86_ISAS, _x86_target
from graphopt.backend import compile as compile_model
from graphopt.backend.c.ops import winograd
from graphopt.backend.c.tiles import cpu_flags, gemm_tiles
from graphopt.numerics import run_onnxruntime
from graphopt.testing import assert_outputs_match

RNG = np.random.default_rng(11)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _model():
    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "residual"], ["c_res"]),
        helper.make_node("Relu", ["c_res"], ["fused"]),
        helper.make_node("Conv", ["X", "W"], ["valid"]),
        helper.make_node("Conv", ["X", "W", "B"], ["asymmetric"], pads=[0, 1, 2, 1]),
        helper.make_node("Conv", ["X", "Wsmall"], ["few_outputs"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["X", "W"], ["strided"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["Small", "W2", "B2"], ["small_plane"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["small_plane"], ["small_relu"]),
        helper.make_node("Conv", ["Wide", "Wwide", "Bwide"], ["wide"], pads=[1, 0, 2, 1]),
        # rows of more tiles than a vector has lanes (AVX-512: 16), F(4x4) and F(2x2)
        helper.make_node("Conv", ["Long", "Wlong"], ["long4"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["Flat", "Wflat"], ["long2"], pads=[1, 1, 1, 1]),
    ]
    inputs = {"X": (TP.FLOAT, [2, 37, 17, 15]), "residual": (TP.FLOAT, [2, 66, 17, 15]),
              "Small": (TP.FLOAT, [2, 96, 7, 9]), "Wide": (TP.FLOAT, [2, 5, 6, 37]),
              "Long": (TP.FLOAT, [1, 32, 5, 70]), "Flat": (TP.FLOAT, [1, 128, 3, 41])}
    inits = {"W": _w(66, 37, 3, 3), "B": _w(66), "Wsmall": _w(16, 37, 3, 3),
             "W2": _w(80, 96, 3, 3), "B2": _w(80), "Wwide": _w(7, 5, 3, 3), "Bwide": _w(7),
             "Wlong": _w(64, 32, 3, 3), "Wflat": _w(64, 128, 3, 3)}
    outputs = ["fused", "valid", "asymmetric", "few_outputs", "strided", "small_relu", "wide",
               "long4", "long2"]
    return make_model(nodes, inputs, outputs, inits)


def _algorithms(compiled) -> dict[str, str]:
    return {step.outputs[0].name: step.algorithm for step in compiled.programs()[0].steps
            if step.op_type == "Conv"}


@pytest.mark.parametrize("target", ["native", "portable"])
def test_winograd_matches_onnxruntime_on_odd_sizes(target):
    _check_odd_sizes(target)


@pytest.mark.parametrize("isa", list(X86_ISAS))
def test_both_x86_paths_match_onnxruntime(isa):
    """AVX-512 builds run csrc/winograd.c's lane path, AVX2 ones the generic path through the
    GEMM micro-kernel: whichever the native build is not, built for its ISA and run where the
    CPU has it."""
    missing = X86_ISAS[isa][1] - cpu_flags()  # (an x86 CPU with them: gcc targets x86-64)
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(sorted(missing))}")
    target = _x86_target(isa)
    assert winograd.lane_path(gemm_tiles(target)) == (isa == "avx512")
    _check_odd_sizes(target)


def _check_odd_sizes(target) -> None:
    model = _model()
    feeds = random_feeds(model, seed=3)
    # NCHW throughout: the layout model may run the tiny 'wide' layer blocked
    compiled = compile_model(model, optimize=False, target=target, layout="nchw")
    chosen = _algorithms(compiled)
    assert chosen["fused"] == chosen["valid"] == chosen["asymmetric"] == "winograd4x4"
    assert chosen["small_relu"] == "winograd2x2"  # 7x9: F(4x4) would have 6 tiles
    assert chosen["long4"] == "winograd4x4" and chosen["long2"] == "winograd2x2"  # 18, 21 wide
    # too small for Winograd's transforms to pay: the direct small-conv kernel
    assert chosen["strided"] == chosen["few_outputs"] == chosen["wide"] == "direct"
    assert compiled.report.fused_epilogues == 3  # the residual Add and both Relus
    want = run_onnxruntime(model, feeds)
    got = compiled.run(feeds)
    assert_outputs_match([o.name for o in model.graph.output], want, got, context=str(target))


def test_winograd_two_threads_share_the_phases():
    """Large enough (36 * M * C * tiles past the threading grain) to run its parallel region."""
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["Y"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"X": (TP.FLOAT, [1, 64, 30, 29])}, ["Y"],
                       {"W": _w(64, 64, 3, 3), "B": _w(64)})
    feeds = random_feeds(model, seed=4)
    compiled = compile_model(model, optimize=False, threads=2)
    assert _algorithms(compiled)["Y"] == "winograd4x4"
    assert_outputs_match(["Y"], run_onnxruntime(model, feeds), compiled.run(feeds))


# B^T and A^T of each F(tile x tile, 3x3), as csrc/winograd.c applies them.
INPUT_TRANSFORMS = {
    4: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
}
OUTPUT_TRANSFORMS = {
    4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    2: [[1, 1, 1, 0], [0, 1, -1, -1]],
}


@pytest.mark.parametrize("tile", [4, 2])
def test_weight_transform_reproduces_direct_correlation(tile):
    """Y = A^T [(G w G^T) . (B^T d B)] A equals the 3x3 correlation of an input tile (float64)."""
    bt, at = np.array(INPUT_TRANSFORMS[tile], float), np.array(OUTPUT_TRANSFORMS[tile], float)
    rng = np.random.default_rng(0)
    weights, patch = rng.standard_normal((1, 1, 3, 3)), rng.standard_normal((tile + 2,) * 2)
    u = winograd.transform_weights(weights, tile)[:, :, 0, 0]
    got = at @ (u * (bt @ patch @ bt.T)) @ at.T
    want = np.array([[np.sum(patch[i:i + 3, j:j + 3] * weights[0, 0]) for j in range(tile)]
                     for i in range(tile)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_eligibility_follows_the_measured_thresholds():
    from graphopt.backend.c.ops.conv import ConvShape

    def shape(channels: int, out_channels: int, hw: int, stride: int = 1) -> ConvShape:
        out = (hw - 1) // stride + 1
        return ConvShape(1, channels, out_channels, 1, (hw, hw), (out, out), (3, 3),
                         (stride, stride), (1, 1), (1, 1))

    for limits in (winograd.GENERIC, winograd.LANES):
        assert winograd.choose_tile(shape(64, 64, 56), limits) == 4
        assert winograd.choose_tile(shape(256, 256, 14), limits) == 4  # 16 tiles of 4x4
        assert winograd.choose_tile(shape(512, 512, 7), limits) == 2  # 4 of 4x4, 16 of 2x2
        assert winograd.choose_tile(shape(512, 512, 4), limits) is None  # 4 tiles even of 2x2
        assert winograd.choose_tile(shape(64, 64, 56, stride=2), limits) is None
        assert winograd.choose_tile(shape(4, 64, 56), limits) is None  # too few input channels
    # the generic path (AVX2 GEMM micro-kernel) needs more channels
    assert winograd.choose_tile(shape(16, 64, 56), winograd.GENERIC) is None
    assert winograd.choose_tile(shape(64, 32, 56), winograd.GENERIC) is None
    assert winograd.choose_tile(shape(64, 64, 7), winograd.GENERIC) == 2
    # the AVX-512 lane path pays from 8 -> 16 channels, but leaves layers of few tiles that
    # the direct small-conv kernel takes to it
    assert winograd.choose_tile(shape(16, 64, 56), winograd.LANES) == 4
    assert winograd.choose_tile(shape(8, 16, 28), winograd.LANES) == 4  # 49 tiles
    assert winograd.choose_tile(shape(64, 64, 7), winograd.LANES) is None  # direct
    assert winograd.choose_tile(shape(32, 32, 14), winograd.LANES) is None  # 16 tiles: direct


def test_algorithms_are_tried_most_specialized_first():
    from graphopt.backend.c import algorithms

    names = algorithms.registered("Conv")
    assert names.index("winograd4x4") < names.index("winograd2x2") < \
        names.index("im2col_gather") < names.index("im2col") == len(names) - 1
    with pytest.raises(ValueError, match="no algorithm 'nope' to precede"):
        algorithms.register_algorithm("Conv", "x", applies=lambda s: False,
                                      before="nope")(lambda k: None)


def test_algorithms_are_chosen_for_the_target_compiled_for():
    """A 16-channel 3x3 conv: the AVX-512 lane path's Winograd pays from 8 / 16 channels, the
    AVX2 path's only from 32 / 64, so an AVX2 build made on any machine keeps im2col (lowering
    chooses under algorithms.choosing_for(target), not for the CPU it runs on)."""
    if "avx2" not in cpu_flags():
        pytest.skip("this CPU lacks avx2")
    nodes = [helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"X": (TP.FLOAT, [1, 16, 56, 56])}, ["Y"], {"W": _w(16, 16, 3, 3)})
    feeds = random_feeds(model, seed=5)
    avx2 = compile_model(model, optimize=False, target=_x86_target("avx2"), layout="nchw")
    assert _algorithms(avx2)["Y"] == "im2col"
    assert_outputs_match(["Y"], run_onnxruntime(model, feeds), avx2.run(feeds))
    if "avx512f" in cpu_flags():  # the native build here takes the lane path's Winograd
        native = compile_model(model, optimize=False, layout="nchw")
        assert _algorithms(native)["Y"] == "winograd4x4"
