"""Blocked NCHWc layout in the C backend: kernels and conversions match onnxruntime on both
targets, layout-agnostic ops follow their neighbours, and the cost model keeps NCHW where
conversions would cost more than the blocked kernels save (and says so)."""
from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from backend_helpers import make_model, random_feeds
from graphopt.backend import compile as compile_model
from graphopt.backend.c.nchwc import block_width
from graphopt.backend.c.target import get_target
from graphopt.backend.lowering import layout_choice
from graphopt.errors import BadInputError
from graphopt.layout.choice_report import format_choice, summarize_choice
from graphopt.layout.examples import depthwise_blocks
from graphopt.layout.kernels import NCHW, blocked
from graphopt.numerics import run_onnxruntime
from graphopt.testing import assert_outputs_match, sample_model

FLOAT = TensorProto.FLOAT


def _kernels(compiled) -> Counter:  # noqa: ANN001
    return Counter(step.algorithm or step.op_type for step in compiled.programs()[0].steps)


def _checked(model: onnx.ModelProto, target: str = "native", layout: str = "auto"):  # noqa: ANN202
    """The model compiled (no graphopt passes), its outputs checked against onnxruntime."""
    compiled = compile_model(model, optimize=False, target=target, layout=layout)
    feeds = random_feeds(model)
    assert_outputs_match([o.name for o in model.graph.output], run_onnxruntime(model, feeds),
                         compiled.run(feeds), context=f"{target}, layout {layout}")
    return compiled


@pytest.mark.parametrize("target,activation,channels,expand", [
    ("native", "relu6", 16, 3), ("native", "silu", 16, 3), ("native", "relu", 48, 3),
    ("portable", "relu", 48, 3)])
def test_depthwise_blocks_run_blocked_and_match_onnxruntime(target, activation, channels, expand):
    # odd sizes put stride-2 windows on both borders; 48 * 3 = 144 channels take two passes
    # of the pointwise kernel's channel blocking (48 is a multiple of every block width, 8 or
    # 16); batch 2 checks the per-image offsets
    model = depthwise_blocks(channels=channels, size=9, expand=expand, strides=(1, 2, 1, 2),
                             activation=activation, batch=2)
    kernels = _kernels(_checked(model, target))
    assert kernels["nchwc_depthwise"] == 4 and kernels["nchwc_pointwise"] == 8
    assert kernels["ToBlocked"] == 1 and kernels["FromBlocked"] == 1
    # SiLU (Sigmoid and Mul) is a register epilogue of the blocked convs like Relu/Clip
    assert kernels["Sigmoid"] == kernels["Mul"] == kernels["Clip"] == kernels["Relu"] == 0


def _mixed_model() -> onnx.ModelProto:
    """Blocked-capable convs around ops with no blocked kernel: a grouped conv, a MaxPool and a
    channel-broadcast Mul; a residual Add + Relu fused after a 1x1 conv; a graph output that
    later blocked steps also read."""
    rng = np.random.default_rng(1)
    c = 16

    def w(*shape):  # noqa: ANN002, ANN202
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["a", "x"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["mid"]),  # also a graph output
        helper.make_node("Conv", ["mid", "w2"], ["d"], kernel_shape=[3, 3], pads=[1] * 4,
                         group=c),
        helper.make_node("Conv", ["d", "w3"], ["e"], kernel_shape=[3, 3], pads=[1] * 4,
                         group=2),
        helper.make_node("Mul", ["e", "scale"], ["f"]),
        helper.make_node("MaxPool", ["f"], ["g"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["g", "w4", "b4"], ["h"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["h", "w5"], ["k"], kernel_shape=[3, 3], pads=[1] * 4,
                         strides=[2, 2], group=c),
        helper.make_node("Clip", ["k", "lo", "hi"], ["y"]),
    ]
    inits = {"w1": w(c, c, 1, 1), "b1": w(c), "w2": w(c, 1, 3, 3), "w3": w(c, c // 2, 3, 3),
             "scale": w(1, c, 1, 1), "w4": w(c, c, 1, 1), "b4": w(c), "w5": w(c, 1, 3, 3),
             "lo": np.array(0, np.float32), "hi": np.array(0.5, np.float32)}
    return make_model(nodes, {"x": (FLOAT, [1, c, 12, 12])}, ["y", "mid"], inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_mixed_layouts_match_onnxruntime_and_report_why_nchw(target):
    compiled = _checked(_mixed_model(), target)
    choice = layout_choice(compiled.programs()[0])
    text = "\n".join([*summarize_choice(choice), *format_choice(choice)])
    assert "no blocked kernel for this window 3x3 stride 1 group 2" in text
    width = block_width(get_target(target))
    layouts = Counter(d.layout for d in choice.decisions)
    assert layouts[NCHW] >= 1 and layouts[blocked(width)] >= 1


def _dense_convs(channels: int) -> onnx.ModelProto:
    """Group-1 convs of other windows (stride 2 with asymmetric pads, dilation 2, a first
    layer on the model's input) between 1x1 convs; batch 2."""
    rng = np.random.default_rng(3)
    c = 16

    def w(*shape):  # noqa: ANN002, ANN202
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["s"], kernel_shape=[3, 3], pads=[1] * 4,
                         strides=[2, 2]),
        helper.make_node("Conv", ["s", "w1"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 0, 0],
                         strides=[2, 2]),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("Conv", ["r", "w3"], ["d"], kernel_shape=[3, 3], pads=[2] * 4,
                         dilations=[2, 2]),
        helper.make_node("Conv", ["d", "w4"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = {"w0": w(c, channels, 3, 3), "b0": w(c), "w1": w(c, c, 1, 1), "w2": w(c, c, 3, 3),
             "w3": w(c, c, 3, 3), "w4": w(c, c, 1, 1)}
    return make_model(nodes, {"x": (FLOAT, [2, channels, 21, 21])}, ["y"], inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_forced_blocked_direct_convs_match_onnxruntime(target):
    kernels = _kernels(_checked(_dense_convs(3), target, layout="blocked"))
    assert kernels["nchwc_direct"] == 3 and kernels["nchwc_pointwise"] == 2
    # the first conv reads the model's 3-channel NCHW input as it is
    assert kernels["FromBlocked"] == 1 and "ToBlocked" not in kernels


def test_forced_nchw_has_no_blocked_step():
    model = depthwise_blocks(channels=16, size=8, expand=2, strides=(1,))
    kernels = _kernels(compile_model(model, optimize=False, layout="nchw"))
    assert not any(name.startswith("nchwc") or name.endswith("Blocked") for name in kernels)


def test_unknown_layout_mode_is_bad_input():
    with pytest.raises(BadInputError, match="unknown layout mode 'nhwc'; choose one of auto"):
        compile_model(depthwise_blocks(channels=8, size=4, expand=1), layout="nhwc")


def _pointwise_chain(count: int, size: int, channels: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes, inits, x = [], {}, "x"
    for i in range(count):
        inits[f"w{i}"] = (rng.standard_normal((channels, channels, 1, 1)) /
                          np.sqrt(channels)).astype(np.float32)
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], kernel_shape=[1, 1]))
        x = f"c{i}"
    nodes.append(helper.make_node("Relu", [x], ["y"]))
    return make_model(nodes, {"x": (FLOAT, [1, channels, size, size])}, ["y"], inits)


def test_cost_model_refuses_blocked_when_conversions_cost_more_than_it_saves():
    # one 1x1 conv between the model's (NCHW) input and output: the blocked kernel is cheaper,
    # but converting in and out moves more bytes than it saves
    compiled = compile_model(_pointwise_chain(1, 8), optimize=False)
    choice = layout_choice(compiled.programs()[0])
    [decision] = choice.decisions
    assert decision.layout == NCHW and decision.alternative is not None
    gain = decision.kernel_costs[NCHW] - decision.kernel_costs[decision.alternative]
    assert 0 < gain < decision.conversion_bytes
    assert choice.conversions == [] and choice.cost == choice.baseline
    assert "conversions would cost more than the kernel saves" in "\n".join(
        summarize_choice(choice))
    assert not any(name.endswith("Blocked") for name in _kernels(compiled))
    assert any(f"kept NCHW: {decision.alternative} would save" in line and
               "of conversions" in line for line in format_choice(choice))
    # 16 such convs, twice as wide (twice the multiply-adds per byte converted): the kernels'
    # savings now pay for the two conversions and their calls
    assert _kernels(_checked(_pointwise_chain(16, 8, channels=32)))["nchwc_pointwise"] == 16


def _stem_model() -> onnx.ModelProto:
    """resnet-style stem on an odd-sized image: conv 3x3 s2 on 3 channels, Relu, MaxPool 3x3 s2
    pad 1, a SAME_UPPER 2x2 MaxPool, then a 3x3 conv; batch 2."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c"], kernel_shape=[3, 3], pads=[1] * 4,
                         strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], pads=[1] * 4,
                         strides=[2, 2]),
        helper.make_node("MaxPool", ["p"], ["q"], kernel_shape=[2, 2], auto_pad="SAME_UPPER",
                         strides=[2, 2]),
        helper.make_node("Conv", ["q", "w1"], ["y"], kernel_shape=[3, 3], pads=[1] * 4),
    ]
    inits = {"w0": (rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32),
             "w1": (rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32)}
    return make_model(nodes, {"x": (FLOAT, [2, 3, 37, 37])}, ["y"], inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_maxpool_runs_blocked_between_blocked_convs(target):
    compiled = _checked(_stem_model(), target, layout="blocked")
    steps = compiled.programs()[0].steps
    pools = [s for s in steps if s.op_type == "MaxPool"]
    assert len(pools) == 2 and all(s.node.domain == "graphopt.layout" for s in pools)
    # the first conv reads the 3-channel input as it is: one conversion, at the output
    assert _kernels(compiled)["ToBlocked"] == 0 and _kernels(compiled)["FromBlocked"] == 1


def test_bench_layout_times_both_layouts_and_reports(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    bench = importlib.import_module("bench_layout")
    model = depthwise_blocks(channels=8, size=8, expand=2, strides=(1,))
    rows, report, choice = bench.bench_model("tiny", model, [1], rounds=1, runs=1)
    [row] = rows
    assert row[:2] == ["tiny", "1"] and float(row[2]) > 0
    assert row[5].endswith("x") and row[6].endswith("x")  # nchw/auto, best-round nchw/auto
    assert report[0].startswith("layout: ") and choice is not None
    sums = bench.kernel_sums("tiny", model, 1, rounds=1)
    assert sums[:2] == ["tiny", "1"] and float(sums[2]) > 0 and sums[4].endswith("x")


def test_nan_passes_through_the_blocked_relu_as_in_nchw():
    model = _pointwise_chain(1, 4)
    x = np.ones((1, 16, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    outputs = [compile_model(model, optimize=False, layout=layout).run([x])[0]
               for layout in ("blocked", "nchw")]
    np.testing.assert_array_equal(np.isnan(outputs[0]), np.isnan(outputs[1]))
    assert np.isnan(outputs[0]).sum() == 16  # every output channel reads channel 0


def test_tiny_maxpool_between_nchw_convs_stays_nchw_and_the_report_says_why():
    # digits_cnn's 32x8x8 MaxPool between NCHW convs: blocked, it took a conversion on each
    # side (7 us of a 38 us model, where the NCHW pool takes under 1)
    path = sample_model("digits_cnn.onnx")
    compiled = compile_model(str(path))
    feeds = random_feeds(onnx.load(str(path)))
    assert_outputs_match([o.name for o in compiled.graph.outputs],
                         run_onnxruntime(onnx.load(str(path)), feeds), compiled.run(feeds))
    choice = layout_choice(compiled.programs()[0])
    assert choice.conversions == [] and not any(k.endswith("Blocked") for k in _kernels(compiled))
    [pool] = [d for d in choice.decisions if d.op == "MaxPool"]
    assert pool.layout == NCHW
    assert "kept NCHW (1 MaxPool): " in "\n".join(summarize_choice(choice))
    assert any(line.startswith("    MaxPool ") for line in format_choice(choice))


def _maxpool(size: int) -> onnx.ModelProto:
    """resnet18's stem MaxPool (3x3 s2 pad 1) on 64 channels of size x size, alone."""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1] * 4)
    return make_model([node], {"x": (FLOAT, [1, 64, size, size])}, ["y"])


def test_conversion_calls_keep_a_small_maxpool_nchw_while_a_large_one_goes_blocked():
    small = layout_choice(_checked(_maxpool(4)).programs()[0])
    [decision] = small.decisions
    assert decision.layout == NCHW and decision.alternative is not None
    # the blocked kernel saves more than its two conversions move (64x4x4 in, 64x2x2 out),
    # but not once each conversion's kernel call is priced
    gain = decision.kernel_costs[NCHW] - decision.kernel_costs[decision.alternative]
    assert 64 * (16 + 4) * 4 < gain < decision.conversion_bytes
    large = _checked(_maxpool(56))
    assert layout_choice(large.programs()[0]).decisions[0].layout != NCHW
    assert _kernels(large)["ToBlocked"] == _kernels(large)["FromBlocked"] == 1


def test_layouts_are_chosen_for_the_thread_count_one_program_per_count():
    model = _maxpool(56)
    compiled = compile_model(model, optimize=False, threads=1)
    feeds = random_feeds(model)
    outputs = [compiled.run(feeds)[0]]
    compiled.set_threads(2)
    outputs.append(compiled.run(feeds)[0])
    compiled.set_threads(1)
    outputs.append(compiled.run(feeds)[0])  # the 1-thread program again, not a third one
    assert [layout_choice(p).priced_for for p in compiled.programs()] == ["1 thread", "2 threads"]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])
    portable = compile_model(model, optimize=False, target="portable", threads=1)
    portable.set_threads(2)
    portable.run(feeds)
    assert len(portable.programs()) == 1  # serial: nothing depends on the count
