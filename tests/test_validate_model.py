"""Models that are valid protobuf but can never run: one error line at import, exit 2, no output.

Each bad model is built with onnx.helper and saved without onnx.checker (which refuses some of
them), so graphopt's importer is what sees it. The offending node is always named 'bad'.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.cli import main
from graphopt.errors import BadInputError
from graphopt.onnx_io import import_model, read_model
from graphopt.testing import light_models_dir, sample_models_dir

F = TensorProto.FLOAT


def make(nodes, inputs, initializers=(), value_info=(), opset=17):
    """A model from helper-made nodes; `inputs` maps name -> shape (float); y is the output."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", F, None)],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()]
        if initializers else [], value_info=list(value_info))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def node(op, inputs, name="bad", **attrs):
    return helper.make_node(op, inputs, ["y"], name=name, **attrs)


def i64(*values):
    return np.array(values, dtype=np.int64)


X23 = {"x": [2, 3]}
W = np.ones((4, 2, 3, 3), np.float32)
NEGATIVE_INITIALIZER = TensorProto(name="w", data_type=F, dims=[-1, 3])

# (id, model, fragment of the error line besides the node/tensor name)
BAD_MODELS = [
    ("negative-input-dim", make([node("Relu", ["x"])], {"x": [2, -3]}), "'x' has a negative dim"),
    ("negative-value-info-dim",
     make([helper.make_node("Relu", ["x"], ["a"], name="bad"), node("Relu", ["a"], "r2")], X23,
          value_info=[helper.make_tensor_value_info("a", F, [2, -3])]), "'a' has a negative dim"),
    ("no-broadcast", make([node("Add", ["x", "z"])], {"x": [2, 3], "z": [4]}), "do not broadcast"),
    ("where-no-broadcast",
     make([node("Where", ["c", "x", "z"])], {"x": [2, 3], "z": [2, 1]},
          {"c": np.ones((3, 3), bool)}), "do not broadcast"),
    ("matmul-inner", make([node("MatMul", ["x", "w"])], X23, {"w": np.ones((4, 5), np.float32)}),
     "inner dims differ"),
    ("matmul-batch",
     make([node("MatMul", ["x", "w"])], {"x": [2, 4, 3]}, {"w": np.ones((3, 3, 5), np.float32)}),
     "batch dims"),
    ("gemm-k", make([node("Gemm", ["x", "w"], transB=1)], X23, {"w": np.ones((5, 4), np.float32)}),
     "K=3"),
    ("conv-channels", make([node("Conv", ["x", "w"])], {"x": [1, 3, 8, 8]}, {"w": W}),
     "3 channels"),
    ("conv-rank", make([node("Conv", ["x", "w"])], {"x": [1, 2, 8]}, {"w": W}), "same rank"),
    ("conv-kernel-too-large",
     make([node("Conv", ["x", "w"])], {"x": [1, 2, 2, 2]}, {"w": W}), "larger than input"),
    ("reshape-count", make([node("Reshape", ["x", "s"])], X23, {"s": i64(4, 2)}), "needs 8"),
    ("reshape-allowzero-1",
     make([node("Reshape", ["x", "s"], allowzero=1)], X23, {"s": i64(0, 6)}), "allowzero=1"),
    ("reshape-two-minus-one", make([node("Reshape", ["x", "s"])], X23, {"s": i64(-1, -1)}),
     "more than one -1"),
    ("reshape-not-divisible", make([node("Reshape", ["x", "s"])], X23, {"s": i64(-1, 4)}),
     "not a multiple of 4"),
    ("concat-axis", make([node("Concat", ["x", "x"], axis=2)], X23), "axis 2 is out of range"),
    ("concat-dims", make([node("Concat", ["x", "z"], axis=0)], {"x": [2, 3], "z": [2, 4]}),
     "differ in dim 1"),
    ("softmax-axis", make([node("Softmax", ["x"], axis=2)], X23), "axis 2 is out of range"),
    ("gather-axis", make([node("Gather", ["x", "i"], axis=-3)], X23, {"i": i64(0)}),
     "axis -3 is out of range"),
    ("gather-index", make([node("Gather", ["x", "i"])], X23, {"i": i64(0, 2)}),
     "index 2 in 'i' is out of range"),
    ("gather-negative-index", make([node("Gather", ["x", "i"], axis=1)], X23, {"i": i64(-4)}),
     "index -4 in 'i' is out of range"),
    ("gather-elements-index",
     make([node("GatherElements", ["x", "i"], axis=1)], X23,
          {"i": i64(0, 3, 1, 0, 0, 0).reshape(2, 3)}),
     "index 3 in 'i' is out of range"),
    ("split-axis", make([node("Split", ["x"], axis=2)], X23), "axis 2 is out of range"),
    ("split-sizes", make([node("Split", ["x", "s"], axis=1)], X23, {"s": i64(2)}),
     "does not add up"),
    ("reduce-axes-attr", make([node("ReduceMean", ["x"], axes=[2])], X23, opset=17),
     "axis 2 is out of range"),
    ("reduce-axes-input", make([node("ReduceSum", ["x", "a"])], X23, {"a": i64(-3)}),
     "axis -3 is out of range"),
    ("flatten-axis", make([node("Flatten", ["x"], axis=3)], X23), "axis 3 is out of range"),
    ("squeeze-axis", make([node("Squeeze", ["x", "a"])], X23, {"a": i64(1)}), "not 1"),
    ("unsqueeze-axis", make([node("Unsqueeze", ["x", "a"])], X23, {"a": i64(3)}),
     "axis 3 is out of range"),
    ("transpose-perm", make([node("Transpose", ["x"], perm=[0, 0])], X23), "not a permutation"),
    ("transpose-perm-rank", make([node("Transpose", ["x"], perm=[0, 2, 1])], X23),
     "not a permutation"),
    ("unknown-default-op", make([node("Foo", ["x"])], X23), "'Foo' is not an ONNX operator"),
    ("unknown-default-op-old-opset", make([node("Foo", ["x"])], X23, opset=9),
     "'Foo' is not an ONNX operator"),
]


@pytest.fixture(params=BAD_MODELS, ids=[case[0] for case in BAD_MODELS])
def bad_model(request, tmp_path):
    _, model, fragment = request.param
    path = tmp_path / "bad.onnx"
    onnx.save_model(model, path)
    return path, fragment


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), stderr
    return lines[0]


def test_optimize_refuses_with_one_line_and_no_output(bad_model, tmp_path):
    path, fragment = bad_model
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out)])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert fragment in line
    assert "node 'bad'" in line or "input 'x'" in line
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_compile_raises_the_same_error_before_any_c(bad_model, monkeypatch):
    path, fragment = bad_model

    def no_build(*args, **kwargs):
        raise AssertionError("the C compiler was reached")

    monkeypatch.setattr("graphopt.backend.api.build", no_build)
    with pytest.raises(BadInputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        graphopt.compile(str(path))
    with pytest.raises(BadInputError):
        graphopt.compile(onnx.load(str(path)), optimize=False)


def test_run_command_refuses_before_compiling(tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save_model(BAD_MODELS[2][1], path)
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2
    assert "do not broadcast" in one_error_line(result.stderr)


def test_negative_initializer_dims_name_the_tensor():
    graph = helper.make_graph([node("Add", ["x", "w"])], "g",
                              [helper.make_tensor_value_info("x", F, [2, 3])],
                              [helper.make_tensor_value_info("y", F, None)],
                              initializer=[NEGATIVE_INITIALIZER])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(BadInputError, match="initializer 'w' has negative dims"):
        import_model(model)


# --- valid models stay valid ---------------------------------------------------------------------
VALID_MODELS = [
    ("reshape-allowzero-0-copies", make([node("Reshape", ["x", "s"])], X23, {"s": i64(0, 3)})),
    ("reshape-allowzero-1-literal-zero",
     make([node("Reshape", ["x", "s"], allowzero=1)], {"x": [0, 3]}, {"s": i64(3, 0)})),
    ("reshape-minus-one", make([node("Reshape", ["x", "s"])], X23, {"s": i64(-1)})),
    ("symbolic-broadcast", make([node("Add", ["x", "z"])], {"x": ["n", 3], "z": ["m", 1, 1]})),
    ("gather-negative-index", make([node("Gather", ["x", "i"], axis=1)], X23, {"i": i64(-3, 2)})),
    ("flatten-axis-equal-rank", make([node("Flatten", ["x"], axis=2)], X23)),
    ("conv-groups", make([node("Conv", ["x", "w"], group=2, pads=[1, 1, 1, 1])],
                         {"x": [1, 4, 3, 3]}, {"w": W})),
    ("matmul-vector", make([node("MatMul", ["x", "w"])], {"x": [3]}, {"w": np.ones((2, 3, 5),
                                                                               np.float32)})),
]


@pytest.mark.parametrize("model", [m for _, m in VALID_MODELS], ids=[i for i, _ in VALID_MODELS])
def test_valid_edge_cases_import(model):
    import_model(model)


def _shipped_models():
    paths = sorted(sample_models_dir().glob("*.onnx")) + sorted(light_models_dir().glob("*.onnx"))
    return [pytest.param(p, id=p.name) for p in paths]


@pytest.mark.parametrize("path", _shipped_models())
def test_sample_and_light_models_pass_validation(path):
    import_model(read_model(path))


# onnx's backend node tests of the ops the validator checks (importing a case module runs its
# exports; collecting all ~1900 cases would take half a minute). All 1884 cases pass, see
# tests/backend/test_onnx_node_tests.py, which imports every case through the same importer.
NODE_TEST_MODULES = ("reshape", "gather", "gatherelements", "concat", "softmax", "logsoftmax",
                     "split", "reducesum", "reducemean", "flatten", "squeeze", "unsqueeze",
                     "transpose", "conv", "convtranspose", "gemm", "matmul", "add", "where",
                     "expand", "prelu", "argmax")


def test_onnx_node_test_models_pass_validation():
    import importlib
    import warnings

    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for module in NODE_TEST_MODULES:
            importlib.import_module(f"onnx.backend.test.case.node.{module}")
    cases = getattr(node_cases, "_NodeTestCases", None)
    if cases is None:
        pytest.skip("this onnx version keeps its node test cases elsewhere")
    checked = 0
    for case in cases:
        if case.model.graph.node[0].op_type.lower() not in NODE_TEST_MODULES:
            continue
        try:
            import_model(case.model)
        except BadInputError as err:
            pytest.fail(f"{case.name}: {err}")
        checked += 1
    assert checked > 150


# --- node names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("names", [["n", "n", "n"], ["", "", "r"], ["y", "a", ""]],
                         ids=["duplicate", "empty", "named-like-values"])
def test_node_names_become_unique(names, tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name=names[0]),
             helper.make_node("Neg", ["a"], ["b"], name=names[1]),
             helper.make_node("Add", ["a", "b"], ["y"], name=names[2])]
    path, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save_model(make(nodes, X23), path)
    result = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "-O0"])
    assert result.exit_code == 0, result.output
    written = [n.name for n in onnx.load(str(out)).graph.node]
    assert all(written) and len(set(written)) == 3
    assert {n for n in names if n} <= set(written)  # first uses of a name are kept
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.zeros((2, 3), np.float32))
