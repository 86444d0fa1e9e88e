"""`graphopt run` and `graphopt bench` (the backend's click commands)."""
from __future__ import annotations

from graphopt.testing import sample_models_dir
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graphopt.cli_backend import bench_command, run_command

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


def test_bench_prints_both_engines():
    result = CliRunner().invoke(bench_command, [str(MLP), "--no-optimize", "--repeat", "3",
                                                "--threads", "1"])
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()[-2:]
    assert header.split() == ["threads", "graphopt", "ms", "onnxruntime", "ms", "speedup"]
    threads, ours, theirs, speedup = row.split()
    assert threads == "1" and float(ours) > 0 and float(theirs) > 0 and speedup.endswith("x")
