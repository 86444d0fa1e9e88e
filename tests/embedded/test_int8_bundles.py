"""INT8 bundles: digits_cnn quantized by graphopt with its real calibration data, an
onnxruntime QDQ model, and a model with integer inputs/outputs.

The example of an INT8 bundle compares with the host C backend's INT8 output (the portable
build of the same lowered program), bit for bit: the integer kernels and their float32
epilogue round identically on every target, so any difference is a bug. onnxruntime's QDQ
execution is not the reference there: its fused QGemm/QLinearConv with a float output rounds
the last layer differently (tests/quantize/test_bitexact_int8.py compares every integer
tensor with it). Bundles are built once per module and shared by the tests reading them.
"""
import re
import subprocess

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import graphopt
from embedded_helpers import (check_linked_footprint, require_tools, run_check,
                              soft_double_calls)
from graphopt import onnx_io
from graphopt.backend import compile as compile_model
from graphopt.backend.int8.ort_qdq import quantize_with_onnxruntime
from graphopt.cli import main
from graphopt.embedded import BudgetError, emit_c
from graphopt.embedded.targets import CORTEX_M4
from graphopt.numerics import run_onnxruntime
from graphopt.testing import sample_model


def digits_model() -> Path:
    return sample_model("digits_cnn.onnx")


KB = 1024


@pytest.fixture(scope="module")
def digits_data():
    return np.load(sample_model("digits_test.npz"))


@pytest.fixture(scope="module")
def digits_int8(digits_data):
    """digits_cnn quantized with its 64 real calibration images (per channel, 7-bit weights)."""
    return graphopt.quantize(str(digits_model()), {"input": digits_data["calib"]}, per_channel=True).graph


@pytest.fixture(scope="module")
def sample(digits_data):
    return {"input": digits_data["images"][:1]}


@pytest.fixture(scope="module")
def host_bundle(digits_int8, sample, tmp_path_factory):
    return emit_c(digits_int8, tmp_path_factory.mktemp("int8") / "host", prefix="digits",
                  inputs=sample)


@pytest.fixture(scope="module")
def m4_bundle(digits_int8, sample, tmp_path_factory):
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
    return emit_c(digits_int8, tmp_path_factory.mktemp("int8") / "m4", target="cortex-m4",
                  prefix="digits", inputs=sample, max_ram=64 * KB, max_flash=256 * KB)


def _steps(bundle) -> list[str]:
    """The step kinds of the bundle, from its footprint table."""
    return [layer.op_type for layer in bundle.footprint.layers]


def test_host_bundle_matches_the_host_c_backend_bit_for_bit(host_bundle, digits_int8, sample):
    steps = _steps(host_bundle)
    assert steps.count("Int8Conv") == 3 and steps.count("Int8MatMul") == 2, steps
    assert steps.count("QuantizeLinear") == 1 and "DequantizeLinear" not in steps
    header = (host_bundle.directory / "digits.h").read_text()
    # float I/O with Q/DQ inside: the API stays float, no quantization macros
    assert "int digits_run(const float* input, float* output);" in header
    assert "_SCALE" not in header and "_ZERO_POINT" not in header
    output = run_check(host_bundle.directory)
    assert "max abs error 0 vs the host C backend (INT8), bit for bit" in output
    # the embedded expectation is the host backend's INT8 output for that image
    expected = compile_model(digits_int8, target="portable").run(sample)[0]
    example = (host_bundle.directory / "example_main.c").read_text()
    first = float(re.search(r"expected_output\[[^]]+\] = \{\s*([^,]+),", example).group(1)
                  .rstrip("f"))
    assert np.float32(first) == expected.reshape(-1)[0]
    # which is also what onnxruntime's fused integer kernels give for the QDQ export
    fused = run_onnxruntime(onnx_io.export_model(digits_int8), sample, optimize=True)[0]
    np.testing.assert_array_equal(fused, expected)
    assert host_bundle.libm == ("nearbyintf", "fmaf")


def test_activations_stay_int8_in_the_arena(host_bundle, tmp_path):
    fp32 = emit_c(digits_model(), tmp_path / "fp32", prefix="digits")
    fp = host_bundle.footprint
    # uint8 activations and a quarter of the fp32 weights (+ biases); both arenas are now mostly
    # GEMM scratch (the int8 one: digits' conv packed B, 9 KiB), so the int8 arena is only smaller
    assert fp.arena < fp32.footprint.arena and fp.weights * 3 < fp32.footprint.weights
    assert sum(layer.macs for layer in fp.layers) == fp32.footprint.macs


def test_aarch64_bundle_gives_the_same_bits_under_qemu(digits_int8, sample, tmp_path):
    require_tools("aarch64-linux-gnu-gcc", "qemu-aarch64")
    bundle = emit_c(digits_int8, tmp_path / "a64", target="aarch64", prefix="digits",
                    inputs=sample)
    output = run_check(bundle.directory, "aarch64")
    assert "max abs error 0 vs the host C backend (INT8), bit for bit" in output
    disassembly = subprocess.run(
        ["aarch64-linux-gnu-objdump", "-d", str(bundle.directory / "build/aarch64/qgemm_tile.o")],
        capture_output=True, text=True).stdout
    assert "smlal" in disassembly  # the NEON micro-kernel (vmlal_s16), not the scalar one


def test_cortex_m4_bundle_fits_runs_and_matches_its_footprint(m4_bundle):
    fp = m4_bundle.footprint
    assert fp.method == "measured" and fp.ram <= 64 * KB and fp.flash <= 256 * KB
    output = run_check(m4_bundle.directory, "cortex-m4", "-DMEASURE_STACK")
    assert "max abs error 0 vs the host C backend (INT8), bit for bit" in output
    stack_used = int(re.search(r"stack used by the run: at most (\d+) bytes", output).group(1))
    assert 0 < stack_used <= fp.stack
    check_linked_footprint(m4_bundle, CORTEX_M4)
    objects = sorted((m4_bundle.directory / "build" / "cortex-m4").glob("*.o"))
    assert not soft_double_calls(CORTEX_M4, objects)
    # the integer kernels take their work memory (padded planes, gathered rows) from the arena:
    # the run reaches no malloc, so the RAM figure is all the RAM it uses
    assert fp.heap == ()
    assert "heap" not in (m4_bundle.directory / "footprint.txt").read_text()


def test_max_ram_below_the_int8_need_fails_naming_contributors(digits_int8, tmp_path, m4_bundle):
    path = tmp_path / "digits_int8.onnx"  # graphopt's QDQ export, read back through absorb-qdq
    onnx.save(onnx_io.export_model(digits_int8), path)
    need = m4_bundle.footprint.ram
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["emit-c", str(path), "-o", str(out), "--target",
                                       "cortex-m4", "--max-ram", str(need - 1)])
    assert result.exit_code == BudgetError.exit_code, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and not out.exists()
    assert f"needs {need} B of RAM > --max-ram {need - 1}" in message
    assert f"arena {m4_bundle.footprint.arena} B" in message and "Int8Conv" in message
    assert "stack" in message and "heap" not in message


def test_onnxruntime_qdq_model_emits_an_int8_bundle(digits_data, tmp_path):
    feeds = [{"input": digits_data["calib"][i:i + 1]} for i in range(16)]
    qdq = quantize_with_onnxruntime(onnx.load(digits_model()), feeds)
    bundle = emit_c(qdq, tmp_path / "ort", prefix="digits", inputs=feeds[0])
    assert _steps(bundle).count("Int8Conv") == 3
    assert "bit for bit" in run_check(bundle.directory)


def integer_io_model() -> onnx.ModelProto:
    """uint8 x -> DQ -> Conv(DQ int8 weights, DQ int32 bias) -> Relu -> Q -> uint8 y, and a
    float output of the same Conv through DQ: the first output and the input are integer ports."""
    rng = np.random.default_rng(0)
    sx, sw, sy = np.float32(0.02), np.float32(0.01), np.float32(0.05)
    w = rng.integers(-63, 64, (4, 3, 3, 3)).astype(np.int8)
    b = rng.integers(-500, 500, 4).astype(np.int32)
    inits = [numpy_helper.from_array(np.array(v), n) for n, v in [
        ("sx", sx), ("zx", np.uint8(128)), ("w_q", w), ("sw", sw), ("zw", np.int8(0)),
        ("b_q", b), ("sb", np.float32(sx * sw)), ("zb", np.int32(0)), ("sy", sy),
        ("zy", np.uint8(3))]]
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w_q", "sw", "zw"], ["w"]),
             helper.make_node("DequantizeLinear", ["b_q", "sb", "zb"], ["b"]),
             helper.make_node("Conv", ["xf", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["y"], name="q_out")]
    graph = helper.make_graph(
        nodes, "int_io", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_integer_inputs_and_outputs_get_quantization_macros(tmp_path):
    model = integer_io_model()
    x = np.random.default_rng(1).integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    bundle = emit_c(model, tmp_path / "io", prefix="qio", inputs={"x": x})
    header = (bundle.directory / "qio.h").read_text()
    assert "int qio_run(const uint8_t* x, uint8_t* y);" in header
    assert "#define QIO_X_SCALE 0.02f\n#define QIO_X_ZERO_POINT 128" in header
    assert "#define QIO_Y_SCALE 0.05f\n#define QIO_Y_ZERO_POINT 3" in header
    # the integers flow from the caller's buffer through one integer step into the output
    assert _steps(bundle) == ["Int8Conv"]
    assert "bit for bit" in run_check(bundle.directory)
    got = compile_model(model, target="portable").run({"x": x})[0]
    reference = run_onnxruntime(model, {"x": x})[0]  # QLinearConv-style: exact here
    assert np.abs(got.astype(int) - reference.astype(int)).max() <= 1


def test_mlp_int8_host_bundle_matches_the_host_backend_and_onnxruntime(tmp_path):
    """mlp (2.7 MB of fp32 weights) quantized on 16 random images: the bundle's check passes bit
    for bit against the host C backend, whose output is onnxruntime's QDQ export's within the
    INT8 tolerance (one output LSB: onnxruntime's unfused float epilogue rounds differently)."""
    rng = np.random.default_rng(7)
    calib = rng.random((16, 784), dtype=np.float32)  # 16 samples of the [1, 784] input
    mlp = graphopt.quantize(str(sample_model("mlp.onnx")), {"input": calib},
                            per_channel=True).graph
    sample = {"input": calib[:1]}
    bundle = emit_c(mlp, tmp_path / "mlp", prefix="mlp", inputs=sample)
    assert "Int8MatMul" in _steps(bundle)
    assert "max abs error 0 vs the host C backend (INT8), bit for bit" in run_check(bundle.directory)
    got = compile_model(mlp, target="portable").run(sample)[0]
    want = run_onnxruntime(onnx_io.export_model(mlp), sample, optimize=True)[0]
    scale = float(np.max(np.abs(want))) / 127
    np.testing.assert_allclose(got, want, rtol=0, atol=scale)
