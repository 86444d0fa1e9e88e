"""`graphopt run` and `graphopt bench` (the backend's click commands)."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graphopt.cli_backend import bench_command, run_command
from graphopt.testing import sample_models_dir

MLP = sample_models_dir() / "mlp.onnx"
pytestmark = pytest.mark.skipif(not MLP.is_file(), reason="sample models missing")


def test_run_with_inputs_output_and_verify(tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input=x)
    result = CliRunner().invoke(run_command, [str(MLP), "--no-optimize", "--inputs",
                                              str(tmp_path / "in.npz"), "--output",
                                              str(tmp_path / "out.npz"), "--verify"])
    assert result.exit_code == 0, result.output
    assert "output: float32[1, 10]" in result.output and "matches onnxruntime" in result.output
    assert "arena" in result.output and "fused epilogues" in result.output
    saved = np.load(tmp_path / "out.npz")["output"]
    from graphopt.numerics import run_onnxruntime
    from graphopt.testing import assert_outputs_match

    want = run_onnxruntime(onnx.load(str(MLP)), {"input": x})
    assert_outputs_match(["output"], want, [saved])


def test_run_reports_bad_inputs_as_one_error(tmp_path):
    np.savez(tmp_path / "bad.npz", input=np.zeros((1, 3), np.float32))
    result = CliRunner().invoke(run_command, [str(MLP), "--no-optimize", "--inputs",
                                              str(tmp_path / "bad.npz")])
    assert result.exit_code == 2
    assert "error: inputs file" in result.output
    assert "input 'input' has shape (1, 3): dim 1 is 3, expected 784" in result.output


def test_bench_prints_both_engines_and_the_call_overhead():
    result = CliRunner().invoke(bench_command, [str(MLP), "--no-optimize", "--repeat", "3",
                                                "--threads", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    header, row, overhead = lines[-3:]
    assert header.split() == ["threads", "graphopt", "ms", "onnxruntime", "ms", "speedup"]
    threads, ours, theirs, speedup = row.split()
    assert threads == "1" and float(ours) > 0 and float(theirs) > 0 and speedup.endswith("x")
    assert re.fullmatch(r"per call: -?[\d.]+ us of Python around the C \(run [\d.]+ us, bare C "
                        r"entry [\d.]+ us, 1 thread\)", overhead)
    assert "slowest layers" not in result.output


def test_bench_layers_lists_the_slowest_kernels():
    result = CliRunner().invoke(bench_command, [str(MLP), "--no-optimize", "--repeat", "3",
                                                "--threads", "1", "--layers", "2"])
    assert result.exit_code == 0, result.output
    table = result.output.split("slowest layers at 1 thread (median of 3 runs):\n")[1]
    lines = table.strip().splitlines()
    assert lines[0].split() == ["us", "share", "GFLOP/s", "layer"]
    assert len(lines) == 5 and "(1 more layers)" in lines[3] and "all 3 kernels" in lines[4]
    slowest = [float(line.split()[0]) for line in lines[1:3]]
    assert slowest == sorted(slowest, reverse=True) and "Gemm+Relu '/0/Gemm'" in table
    assert float(lines[4].split()[0]) >= sum(slowest)


def test_bench_layers_refuses_a_bad_count():
    result = CliRunner().invoke(bench_command, [str(MLP), "--layers", "0"])
    assert result.exit_code == 2 and "--layers" in result.output


def _conv_models(tmp_path):
    """A MobileNetV2-like depthwise stack and a single 3x3 conv on a 4x4 plane, as files (16
    channels: a multiple of every block width, so the tiny conv could be blocked)."""
    from graphopt.layout.examples import depthwise_blocks

    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w")
    tiny = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)], "tiny",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16, 4, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16, 4, 4])], [w]),
        opset_imports=[onnx.helper.make_opsetid("", 17)])
    paths = tmp_path / "mbv2.onnx", tmp_path / "tiny.onnx"
    onnx.save(depthwise_blocks(channels=16, size=16, activation="relu6"), str(paths[0]))
    onnx.save(tiny, str(paths[1]))
    return paths


def _blocked_name() -> str:
    from graphopt.backend.c.nchwc import block_width
    from graphopt.backend.c.target import get_target

    return f"NCHW{block_width(get_target('native'))}c"


def test_run_summarizes_and_explains_the_layout_choice(tmp_path):
    mbv2, tiny = _conv_models(tmp_path)
    blocked = _blocked_name()
    result = CliRunner().invoke(run_command, [str(mbv2), "--explain-layout", "--verify"])
    assert result.exit_code == 0, result.output
    assert "matches onnxruntime" in result.output
    summary = re.search(r"layout: (\d+) (\S+) convs; (\d+) conversions moving ([\d.]+) KiB",
                        result.output)
    # 9 convs blocked; only the model's input and output are converted: 16x16x16 floats in,
    # 16x8x8 out (the middle block has stride 2)
    assert summary and summary.groups() == ("9", blocked, "2", "20.00"), result.output
    assert f"convert %x: NCHW -> {blocked}, 16.00 KiB" in result.output
    assert f"convert %y: {blocked} -> NCHW, 4.00 KiB" in result.output
    per_conv = re.findall(rf"Conv '\S+': {blocked}  \(kernel cost per layout", result.output)
    assert len(per_conv) == 9
    # one chain of 9 blocked convs: its figures, and the values that stay blocked inside it
    assert re.search(rf"chain 1: {blocked}, 9 conv\(s\)( \+ [^;]+)?; kernels save "
                     r"[\d.]+ KiB-eq ~[\d.]+ ms, conversions inserted 2 moving 20.00 KiB: net",
                     result.output), result.output
    assert "value(s) pass inside in" in result.output
    assert "layout: no Transpose moved" in result.output  # optimize's Transposes (none here)

    result = CliRunner().invoke(run_command, [str(tiny), "--explain-layout"])
    assert result.exit_code == 0, result.output
    assert "layout: 1 NCHW convs; 0 conversions moving 0 B" in result.output
    assert "kept NCHW (1 conv): its NCHW kernel is cheaper (NCHW runs it as" in result.output
    assert re.search(rf"Conv 'Conv': NCHW  \(kernel cost per layout: NCHW [\d.]+ KiB-eq "
                     rf"~[\d.]+ ms, {blocked} [\d.]+ KiB-eq ~[\d.]+ ms\)", result.output), \
        result.output


def test_layout_modes_on_the_command_line(tmp_path):
    mbv2, _ = _conv_models(tmp_path)
    result = CliRunner().invoke(run_command, [str(mbv2), "--layout", "nchw"])
    assert result.exit_code == 0, result.output
    assert "layout: every tensor NCHW (--layout nchw)" in result.output
    assert "kernel cost per layout" not in result.output  # no --explain-layout: summary only
    result = CliRunner().invoke(bench_command, [str(mbv2), "--layout", "blocked", "--repeat",
                                                "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert f"layout: 9 {_blocked_name()} convs" in result.output
    result = CliRunner().invoke(run_command, [str(mbv2), "--layout", "nhwc"])
    assert result.exit_code == 2
    assert "Invalid value for '--layout': 'nhwc' is not one of 'auto', 'nchw', 'blocked'" in \
        result.output and "Traceback" not in result.output


def test_a_model_without_convs_has_a_one_line_layout_section():
    result = CliRunner().invoke(run_command, [str(MLP), "--no-optimize"])
    assert result.exit_code == 0, result.output
    assert "layout: every tensor NCHW (no convolution to choose a layout for)" in result.output
