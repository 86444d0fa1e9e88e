"""Initializers that are also graph inputs: overridable defaults at IR >= 4, constants at IR 3."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.cli import main
from graphopt.errors import BadInputError
from graphopt.inputs import check_inputs
from graphopt.testing import assert_outputs_match

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT
WEIGHT = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
SCALE = RNG.uniform(0.5, 1.5, 3).astype(np.float32)
OTHER_SCALE = RNG.uniform(-2, 2, 3).astype(np.float32)
STATS = {name: RNG.uniform(0.5, 1.5, 3).astype(np.float32) for name in ("bias", "mean", "var")}
X = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)


def conv_bn_model(ir_version: int) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Mul by (scale * 2) -> Relu, where the BN `scale` is an
    initializer also listed as a graph input: fuse-bn-into-conv and fold-constants would both
    consume it if it were a constant."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"],
                         name="bn"),
        helper.make_node("Mul", ["scale", "two"], ["scale2"], name="double"),
        helper.make_node("Unsqueeze", ["scale2", "axes"], ["scale3"], name="unsqueeze"),
        helper.make_node("Mul", ["b", "scale3"], ["m"], name="mul"),
        helper.make_node("Relu", ["m"], ["y"], name="relu"),
    ]
    initializers = {"w": WEIGHT, "scale": SCALE, "two": np.array(2.0, np.float32),
                    "axes": np.array([1, 2], np.int64), **STATS}
    inputs = [helper.make_tensor_value_info("x", F, [1, 2, 4, 4]),
              helper.make_tensor_value_info("scale", F, [3])]
    if ir_version < 4:  # IR 3: every initializer is listed as an input
        inputs += [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                                 a.shape)
                   for n, a in initializers.items() if n != "scale"]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", F, None)],
                              [numpy_helper.from_array(a, n) for n, a in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                             ir_version=ir_version)


def onnxruntime_run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert_outputs_match(["y"], [want], [got])


@pytest.fixture
def optimized(tmp_path):
    original = conv_bn_model(8)
    path = tmp_path / "m.onnx"
    onnx.save_model(original, path)
    out = tmp_path / "out.onnx"
    graphopt.save(graphopt.optimize(str(path), level=3).graph, out)
    return original, onnx.load(str(out)), path


def test_optimize_keeps_them_as_inputs_with_their_default(optimized):
    _, model, _ = optimized
    assert [v.name for v in model.graph.input] == ["x", "scale"]
    default = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["scale"]
    np.testing.assert_array_equal(default, SCALE)
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" in ops  # not folded into the Conv: its scale may change
    assert any(n.op_type == "Mul" and "scale" in n.input for n in model.graph.node)  # not folded


@pytest.mark.parametrize("feeds", [{"x": X}, {"x": X, "scale": OTHER_SCALE}],
                         ids=["default", "overridden"])
def test_onnxruntime_gives_the_same_outputs_fed_or_not(optimized, feeds):
    original, model, _ = optimized
    assert_close(onnxruntime_run(model, feeds), onnxruntime_run(original, feeds))


def test_overriding_changes_the_outputs(optimized):
    original, _, _ = optimized
    fed = onnxruntime_run(original, {"x": X, "scale": OTHER_SCALE})
    assert not np.allclose(fed, onnxruntime_run(original, {"x": X}))


def test_c_backend_accepts_them_as_inputs(optimized):
    original, _, path = optimized
    compiled = graphopt.compile(str(path))
    assert compiled.input_names == ["x", "scale"]
    for feeds in ({"x": X}, {"x": X, "scale": OTHER_SCALE}):
        assert_close(compiled.run(feeds)[0], onnxruntime_run(original, feeds))
    assert_close(compiled.run([X])[0], onnxruntime_run(original, {"x": X}))


def test_fold_flag_makes_them_constants_and_says_so(tmp_path, caplog):
    path, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save_model(conv_bn_model(8), path)
    result = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out),
                                       "--fold-input-initializers", "--verify"])
    assert result.exit_code == 0, result.output
    assert "folding 1 initializer(s) that are also graph inputs" in caplog.text + result.stderr
    model = onnx.load(str(out))
    assert [v.name for v in model.graph.input] == ["x"]
    assert "BatchNormalization" not in [n.op_type for n in model.graph.node]


def test_cli_says_it_keeps_them(tmp_path):
    path, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save_model(conv_bn_model(8), path)
    result = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--verify"])
    assert result.exit_code == 0, result.output
    assert "also graph inputs (overridable), kept as inputs and not folded: scale" in result.stdout


def test_ir3_initializers_listed_as_inputs_are_constants(tmp_path):
    original = conv_bn_model(3)
    graph = graphopt.load(original)
    assert [v.name for v in graph.inputs] == ["x"]  # IR 3 had to list every initializer
    path = tmp_path / "out.onnx"
    graphopt.save(graphopt.optimize(graph).graph, path)
    model = onnx.load(str(path))
    assert model.ir_version >= 4 and [v.name for v in model.graph.input] == ["x"]
    assert_close(onnxruntime_run(model, {"x": X}), onnxruntime_run(original, {"x": X}))


def test_input_checks_fill_in_defaults():
    graph = graphopt.load(conv_bn_model(8))
    by_name = check_inputs(graph.inputs, {"x": X})
    by_position = check_inputs(graph.inputs, [X])
    for arrays in (by_name, by_position):
        np.testing.assert_array_equal(arrays[1], SCALE)
    with pytest.raises(BadInputError, match=r"missing input\(s\) 'x'"):
        check_inputs(graph.inputs, {"scale": SCALE})


def test_ir_verifier_knows_where_defaults_belong():
    from graphopt.errors import IRError

    graph = graphopt.load(conv_bn_model(8))
    graph.verify()
    graph.initializers["two"].default = np.array(3.0, np.float32)
    with pytest.raises(IRError, match="only graph inputs have one"):
        graph.verify()


def test_run_command_takes_the_default_when_the_npz_lacks_it(tmp_path):
    path, inputs = tmp_path / "m.onnx", tmp_path / "in.npz"
    onnx.save_model(conv_bn_model(8), path)
    np.savez(inputs, x=X)
    result = CliRunner().invoke(main, ["run", str(path), "--inputs", str(inputs), "--verify"])
    assert result.exit_code == 0, result.output
    assert "matches onnxruntime" in result.stdout
