"""What `graphopt emit-c` refuses, before writing anything: unsupported ops and dtypes (named
by node, exit 3), sizes the target's index type cannot address, budgets the bundle exceeds
(exit 2, naming the biggest contributors), bad options."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from graphopt.cli import main
from graphopt.embedded import BudgetError, emit_c
from graphopt.errors import BadInputError, UnsupportedError
from graphopt.testing import sample_model


def digits_model() -> Path:
    return sample_model("digits_cnn.onnx")


FLOAT_1x4 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])


def save(path, nodes, inputs, outputs, initializers=(), domains=()) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return str(path)


def emit_cli(*args: str):
    return CliRunner().invoke(main, ["emit-c", *args])


def refused_models(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (model path, what the message must name)."""
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    custom = save(tmp_path / "custom.onnx",
                  [helper.make_node("Relu", ["x"], ["t"], name="relu"),
                   helper.make_node("MyOp", ["t"], ["y"], domain="acme", name="mine")],
                  [FLOAT_1x4], [y], domains=["acme"])
    nonzero = save(tmp_path / "nonzero.onnx", [helper.make_node("NonZero", ["x"], ["y"],
                                                                name="nz")],
                   [FLOAT_1x4], [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    strings = save(tmp_path / "strings.onnx",
                   [helper.make_node("Identity", ["s"], ["o"], name="ident")],
                   [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
                   [helper.make_tensor_value_info("o", TensorProto.STRING, [2])])
    return {"custom": (custom, "'mine'"), "nonzero": (nonzero, "'nz'"),
            "strings": (strings, "'ident'")}


@pytest.mark.parametrize("case", ["custom", "nonzero", "strings"])
def test_unsupported_model_is_refused_naming_the_node(case, tmp_path):
    path, node = refused_models(tmp_path)[case]
    out = tmp_path / "out"
    result = emit_cli(path, "-o", str(out))
    assert result.exit_code == UnsupportedError.exit_code, result.output
    assert node in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_ram_budget_below_need_fails_naming_contributors(tmp_path):
    out = tmp_path / "out"
    result = emit_cli(str(digits_model()), "-o", str(out), "--target", "cortex-m4", "--max-ram", "10000")
    assert result.exit_code == BudgetError.exit_code, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "RAM > --max-ram 10000" in message and "arena" in message and "stack" in message
    assert "scratch:" in message or "_output_" in message  # the largest arena buffers
    assert not out.exists()


def test_flash_budget_below_need_names_the_largest_weights(tmp_path):
    with pytest.raises(BudgetError, match=r"--max-flash 100000: weights \d+ B \(largest: "
                                          r"'10.weight' 131072 B"):
        emit_c(str(digits_model()), tmp_path / "out", target="cortex-m4", max_flash=100_000)
    assert not (tmp_path / "out").exists()


def test_within_budget_writes_the_bundle_and_prints_the_footprint(tmp_path):
    out = tmp_path / "out"
    result = emit_cli(str(digits_model()), "-o", str(out), "--target", "cortex-m4", "--prefix", "digits",
                      "--max-ram", "65536", "--max-flash", "262144")
    assert result.exit_code == 0, result.output
    assert "flash" in result.output and "RAM" in result.output and "Conv" in result.output
    assert (out / "digits.h").is_file() and (out / "footprint.txt").is_file()


def test_tensor_beyond_the_index_type_is_refused(tmp_path):
    """Expand to 2^29 x 2 floats (4 GiB): fine for int64 indices, not for a Cortex-M's int32."""
    shape = numpy_helper.from_array(np.array([1 << 29, 2], np.int64), "shape")
    path = save(tmp_path / "big.onnx", [helper.make_node("Expand", ["x", "shape"], ["y"],
                                                         name="grow")],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 29, 2])], [shape])
    with pytest.raises(UnsupportedError, match=r"'grow'.*int32_t"):
        emit_c(path, tmp_path / "out", target="cortex-m4")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, exit_code, fragment", [
    (["--prefix", "2fast"], BadInputError.exit_code, "'2fast' is not a C identifier"),
    (["--target", "z80"], 2, "'z80' is not one of")])
def test_bad_options(options, exit_code, fragment, tmp_path):
    result = emit_cli(str(digits_model()), "-o", str(tmp_path / "out"), *options)
    assert result.exit_code == exit_code, result.output
    assert fragment in result.output  # refused for this option, not for another reason
    assert not (tmp_path / "out").exists()
