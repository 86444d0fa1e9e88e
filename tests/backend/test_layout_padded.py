"""Blocked NCHWc with channel counts that are not multiples of the block width: channels padded
to whole blocks whose pad lanes stay zero (ToBlocked zero-fills them, weights and bias are
zero-padded), checked against onnxruntime on both targets; steps that would write anything
else into pad lanes stay NCHW and say why; the cost model refuses padding that costs more
than the blocked kernels save. Outputs are held to graphopt.numerics' fp32 tolerance.

Channel counts are chosen per block width (16 on AVX-512, 8 on AVX2, 4 on the portable path)
so that every one of them needs padding on the machine the test runs on."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from backend_helpers import make_model
from graphopt.backend import compile as compile_model
from graphopt.backend.c.nchwc import block_width
from graphopt.backend.c.target import get_target
from graphopt.backend.c.tiles import cpu_flags, predefined_macros
from graphopt.backend.layouts import blocked_reason
from graphopt.backend.lowering import layout_choice
from graphopt.layout.choice_report import summarize_choice
from graphopt.layout.examples import depthwise_blocks
from graphopt.layout.kernels import NCHW, blocked
from test_gemm_kernels import X86_ISAS, _x86_target
from test_layout_blocked import _checked, _kernels, _pointwise_chain

FLOAT = TensorProto.FLOAT
# channel counts off the block width: MobileNetV2's 24, EfficientNet's 40, and smaller ones
OFF_BLOCK = {16: (24, 40, 20), 8: (12, 20), 4: (6, 10)}


def _width(target: str) -> int:
    return block_width(get_target(target))


def _cases() -> list[tuple[str, int, str]]:
    cases = []
    for target in ("native", "portable"):
        for i, channels in enumerate(OFF_BLOCK[_width(target)]):
            cases.append((target, channels, ("relu6", "silu", "relu")[i]))
    return cases


@pytest.mark.parametrize("target,channels,activation", _cases())
def test_padded_depthwise_blocks_match_onnxruntime(target, channels, activation):
    # expand 3 keeps the hidden width off the block too (72, 120, 60 on AVX-512); batch 2
    # checks that each image's pad lanes are dropped and refilled, odd sizes put stride-2
    # windows on both borders
    model = depthwise_blocks(channels=channels, size=9, expand=3, strides=(1, 2, 1, 2),
                             activation=activation, batch=2)
    for layout in ("blocked", "auto"):
        kernels = _kernels(_checked(model, target, layout))
        if layout == "blocked":
            assert kernels["nchwc_depthwise"] == 4 and kernels["nchwc_pointwise"] == 8
            assert kernels["ToBlocked"] == kernels["FromBlocked"] == 1


def _runnable_x86_isas() -> list[str]:
    """The x86 GEMM families (X86_ISAS) this compiler targets and this CPU runs."""
    if "__x86_64__" not in predefined_macros(shutil.which("gcc") or "cc", ()):
        return []
    return [isa for isa, (_, needs) in X86_ISAS.items() if needs <= cpu_flags()]


@pytest.mark.parametrize("isa", _runnable_x86_isas())
def test_padded_blocks_of_each_x86_width_match_onnxruntime(isa):
    # AVX2's 8-float blocks on 12 and 20 channels and AVX-512's 16 on 24 and 40, whichever
    # ISA -march=native picks here (an empty parameter set skips on other hosts)
    target = _x86_target(isa)
    width = block_width(target)
    for channels in OFF_BLOCK[width][:2]:
        model = depthwise_blocks(channels=channels, size=7, expand=3, strides=(2, 1),
                                 activation="relu6", batch=2)
        assert _kernels(_checked(model, target, "blocked"))["nchwc_depthwise"] == 2


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _padded_ops_model(c: int) -> onnx.ModelProto:
    """Every blocked step kind on `c` channels (off the block): 1x1 + Relu, depthwise +
    Clip(0, 6), MaxPool 3x3 s2 pad 1, direct 3x3 + residual Add + Relu, an unfused Add and
    Mul of two activations, a 1x1 to 2c + SiLU; then ops with no blocked kernel reading
    padded blocked tensors: a channel Concat (of two padded tensors: the blocks cannot just
    be appended), GlobalAveragePool; batch 2."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c1"], ["a"]),
        helper.make_node("Conv", ["a", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4,
                         group=c),
        helper.make_node("Clip", ["c2", "zero", "six"], ["d"]),
        helper.make_node("MaxPool", ["d"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1] * 4),
        helper.make_node("Conv", ["p", "w3", "b3"], ["c3"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Add", ["c3", "p"], ["r"]),
        helper.make_node("Relu", ["r"], ["q"]),
        helper.make_node("Add", ["q", "p"], ["s"]),  # q is read twice: not an epilogue
        helper.make_node("Mul", ["s", "q"], ["m"]),
        helper.make_node("Conv", ["m", "w4"], ["c4"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c4"], ["g"]),
        helper.make_node("Mul", ["c4", "g"], ["e"]),
        helper.make_node("Concat", ["q", "m"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w5"], ["c5"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c5", "e"], ["f"]),
        helper.make_node("GlobalAveragePool", ["f"], ["y"]),
    ]
    inits = {"w1": _w(rng, c, c, 1, 1), "b1": _w(rng, c), "w2": _w(rng, c, 1, 3, 3),
             "b2": _w(rng, c), "zero": np.array(0, np.float32), "six": np.array(6, np.float32),
             "w3": _w(rng, c, c, 3, 3), "b3": _w(rng, c), "w4": _w(rng, 2 * c, c, 1, 1),
             "w5": _w(rng, 2 * c, 2 * c, 1, 1)}
    return make_model(nodes, {"x": (FLOAT, [2, c, 11, 11])}, ["y", "q"], inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_every_blocked_step_kind_keeps_pad_lanes_zero(target):
    channels = _width(target) + _width(target) // 2  # 24, 12 or 6: half a block of pad
    compiled = _checked(_padded_ops_model(channels), target, "blocked")
    kernels = _kernels(compiled)
    assert kernels["nchwc_pointwise"] == 3 and kernels["nchwc_depthwise"] == 1
    assert kernels["nchwc_direct"] == 1 and kernels["MaxPool"] == 1
    # Concat and GlobalAveragePool have no blocked kernel: they read NCHW copies
    steps = compiled.programs()[0].steps
    concat = next(s for s in steps if s.op_type == "Concat")
    assert all(not t.layout for t in concat.inputs) and not concat.outputs[0].layout


def _direct_convs(c: int) -> onnx.ModelProto:
    """3x3 convs on the model's input of `c` channels (at least a block, off the block), stride
    2 with bias and Relu, then to 2c - 1 channels with asymmetric pads; batch 2."""
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["a"], kernel_shape=[3, 3], pads=[1] * 4,
                         strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w1"], ["y"], kernel_shape=[3, 3], pads=[1, 0, 0, 1]),
    ]
    inits = {"w0": _w(rng, c, c, 3, 3), "b0": _w(rng, c), "w1": _w(rng, 2 * c - 1, c, 3, 3)}
    return make_model(nodes, {"x": (FLOAT, [2, c, 13, 13])}, ["y"], inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_direct_convs_on_padded_channels_match_onnxruntime(target):
    # a first layer of less than a block reads NCHW as it is (test_layout_blocked.py); from a
    # block on, the input is converted, padded, as NCHW reads are slower than whole blocks
    compiled = _checked(_direct_convs(_width(target) + 3), target, "blocked")
    kernels = _kernels(compiled)
    assert kernels["nchwc_direct"] == 2 and kernels["ToBlocked"] == kernels["FromBlocked"] == 1


def _nonzero_pad_model(c: int) -> onnx.ModelProto:
    """Ops that would write something other than zero into pad lanes: a Sigmoid alone (its
    input has another reader, so it is no SiLU), an Add of a constant, a fused Clip whose
    lower bound is above zero; between 1x1 convs on `c` channels."""
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["a"], ["g"]),
        helper.make_node("Add", ["a", "g"], ["h"]),
        helper.make_node("Add", ["h", "one"], ["k"]),
        helper.make_node("Conv", ["k", "w2"], ["b"], kernel_shape=[1, 1]),
        helper.make_node("Clip", ["b", "half", "six"], ["y"]),
    ]
    inits = {"w1": _w(rng, c, c, 1, 1), "w2": _w(rng, c, c, 1, 1),
             "one": np.array(1, np.float32), "half": np.array(0.5, np.float32),
             "six": np.array(6, np.float32)}
    return make_model(nodes, {"x": (FLOAT, [1, c, 8, 8])}, ["y"], inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_steps_that_would_fill_pad_lanes_stay_nchw_and_say_why(target):
    width = _width(target)
    model = _nonzero_pad_model(width + 2)
    compiled = _checked(model, target, "blocked")
    pad = "would turn the zero pad lanes of padded channels into"
    choice = layout_choice(compiled.programs()[0])
    assert f"kept NCHW (1 conv): fused Clip {pad} 0.5" in "\n".join(summarize_choice(choice))
    steps = {s.op_type: s for s in compiled.programs()[0].steps}
    assert not steps["Sigmoid"].outputs[0].layout
    nchw = compile_model(model, optimize=False, target=target, layout="nchw")
    reasons = [(s.op_type, blocked_reason(s, width)) for s in nchw.programs()[0].steps]
    assert reasons == [("Conv", None), ("Sigmoid", f"Sigmoid {pad} 0.5"), ("Add", None),
                       ("Add", f"Add {pad} 1"), ("Conv", f"fused Clip {pad} 0.5")]
    # the same model on whole blocks has nothing to pad: every step runs blocked
    whole = _kernels(_checked(_nonzero_pad_model(2 * _width(target)), target, "blocked"))
    assert whole["nchwc_pointwise"] == 2 and whole["ToBlocked"] == whole["FromBlocked"] == 1


def test_cost_model_refuses_padding_that_costs_more_than_it_saves():
    width = _width("native")
    # one channel past a block: padding nearly doubles each side, (2w)^2 / (w+1)^2 of the
    # multiply-adds, more than the blocked kernel's rate gains back
    compiled = _checked(_pointwise_chain(16, 8, channels=width + 1), "native", "auto")
    choice = layout_choice(compiled.programs()[0])
    assert choice.cost == choice.baseline and choice.conversions == []
    assert all(d.layout == NCHW for d in choice.decisions)
    for decision in choice.decisions:  # the blocked kernel itself is dearer, not its conversions
        assert decision.alternative is None and not decision.reason
        assert decision.kernel_costs[blocked(width)] > decision.kernel_costs[NCHW]
    assert "its NCHW kernel is cheaper" in "\n".join(summarize_choice(choice))
    # the same chain on whole blocks goes blocked (test_layout_blocked.py), and one padded
    # by a quarter of its blocks still does: the blocked kernel's rate pays for the pad lanes
    padded = _kernels(_checked(_pointwise_chain(16, 8, channels=4 * width - 2), "native",
                               "auto"))
    assert padded["nchwc_pointwise"] == 16
