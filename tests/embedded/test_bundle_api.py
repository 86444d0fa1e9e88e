"""A small model built with onnx.helper, through the bundle: the API it gets (sanitized names,
several outputs, an int64 output), the target as data (int32 indices and float sums on
Cortex-M), the caller-supplied arena, and an example that reports FAIL on a wrong output."""
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from embedded_helpers import STRICT_FLAGS, make, require_tools, run_check
from graphopt.embedded import emit_c


def small_model() -> onnx.ModelProto:
    """Conv -> Relu -> ReduceMean -> Softmax, and ArgMax of the Conv (int64), names with '/'."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [helper.make_node("Conv", ["in/x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv/0"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r", "axes"], ["m"], keepdims=0, name="mean"),
             helper.make_node("Softmax", ["m"], ["out:probs"], axis=1, name="softmax"),
             helper.make_node("ArgMax", ["c"], ["out:arg"], axis=1, keepdims=0, name="argmax")]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("in/x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("out:probs", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("out:arg", TensorProto.INT64, [1, 6, 6])],
        [weight, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture(scope="module")
def host_bundle(tmp_path_factory):
    return emit_c(small_model(), tmp_path_factory.mktemp("small") / "b", prefix="small")


def test_api_names_sizes_and_check(host_bundle):
    header = (host_bundle.directory / "small.h").read_text()
    assert ("int small_run(const float* in_x, float* out_probs, int64_t* out_arg);"
            in header)
    assert "#define SMALL_OUT_PROBS_SIZE 4" in header
    assert "#define SMALL_OUT_ARG_DIMS {1, 6, 6}" in header
    assert host_bundle.libm == ()  # Softmax's exp is the inline graphopt_expf (graphopt_math.h)
    assert "libm functions used: none." in (host_bundle.directory / "README.md").read_text()
    assert "PASS" in run_check(host_bundle.directory)


def test_example_fails_on_a_wrong_output(host_bundle, tmp_path):
    directory = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(host_bundle.directory), str(directory)], check=True)
    example = directory / "example_main.c"
    text = example.read_text()
    start = text.index("{", text.index("static const float expected_")) + 1
    example.write_text(text[:start] + "\n1000.0f," + text[start:].split(",", 1)[1])
    result = make(directory)
    assert result.returncode != 0
    assert "FAIL" in result.stdout and "got" in result.stdout


def test_caller_supplied_arena_drops_the_static_one(host_bundle, tmp_path):
    require_tools("gcc", "nm")
    obj = tmp_path / "small.o"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-pedantic", *STRICT_FLAGS.split(),
                    "-DSMALL_NO_STATIC_ARENA", "-I", str(host_bundle.directory), "-c",
                    str(host_bundle.directory / "small.c"), "-o", str(obj)], check=True)
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout
    assert "small_run_with_arena" in symbols
    assert "small_arena" not in symbols and " small_run\n" not in symbols


def test_cortex_m_bundle_uses_int32_indices_and_float_sums(tmp_path):
    bundle = emit_c(small_model(), tmp_path / "m4", target="cortex-m4", prefix="small")
    model_c = (bundle.directory / "small.c").read_text()
    assert "for (int32_t" in model_c  # the emitter's loop nests; some ops' own loops are int64
    assert "double" not in model_c
    run_check(bundle.directory)  # the same C on the host (int32 indices are plain C99)
