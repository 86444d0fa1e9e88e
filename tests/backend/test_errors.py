"""Errors are raised before any C runs and name what is wrong: inputs, ops, types, C compiler."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import make_model
from graphopt.backend import compile as compile_model
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.registry import register_op
from graphopt.errors import BadInputError, CodegenError, UnsupportedError

TEST_DOMAIN = "graphopt.test"


@register_op("EmitsBrokenC", domain=TEST_DOMAIN)
def _emit_broken(k: Kernel) -> None:
    k.em.line(f"{k.arg(k.outputs[0])}[0] = this_is_not_c;")


@pytest.fixture(scope="module")
def two_input_model():
    nodes = [helper.make_node("Add", ["a", "b"], ["s"])]
    model = make_model(nodes, {"a": (TP.FLOAT, ["batch", 3]), "b": (TP.FLOAT, ["batch", 3])}, ["s"])
    return compile_model(model, optimize=False)


def test_unknown_and_missing_input_names(two_input_model):
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(BadInputError, match=r"unknown input\(s\) 'c'.*inputs are 'a' f32\[batchx3\]"):
        two_input_model.run({"a": x, "c": x})
    with pytest.raises(BadInputError, match=r"missing input\(s\) 'b'"):
        two_input_model.run({"a": x})
    with pytest.raises(BadInputError, match="got 1 input array"):
        two_input_model.run([x])


def test_wrong_dtype(two_input_model):
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(BadInputError, match=r"input 'b' has dtype float64; the model expects float32"):
        two_input_model.run({"a": x, "b": x.astype(np.float64)})


def test_wrong_shapes(two_input_model):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(BadInputError, match=r"input 'a' has shape \(2, 4\): dim 1 is 4, expected 3"):
        two_input_model.run({"a": np.zeros((2, 4), np.float32), "b": x})
    with pytest.raises(BadInputError, match="rank 1, expected 2"):
        two_input_model.run({"a": np.zeros(3, np.float32), "b": x})
    with pytest.raises(BadInputError, match=r"dim 0 \('batch'\) is 2 but input 'a' set 'batch' to 4"):
        two_input_model.run({"a": np.zeros((4, 3), np.float32), "b": x})
    assert two_input_model.run({"a": x, "b": x})[0].shape == (2, 3)  # a consistent batch runs


def test_op_without_emitter_is_named_with_types_and_shapes():
    nodes = [helper.make_node("Multinomial", ["x"], ["z"], sample_size=3)]
    model = make_model(nodes, {"x": (TP.FLOAT, [2, 5])}, ["z"])
    with pytest.raises(UnsupportedError) as info:
        compile_model(model, optimize=False)
    message = str(info.value)
    assert "no C emitter for op 'Multinomial'" in message
    assert "'x' f32[2x5]" in message and "'z' i32[2x3]" in message


def test_unsupported_dtype_and_attribute():
    model = make_model([helper.make_node("Add", ["x", "x"], ["y"])], {"x": (TP.FLOAT16, [4])}, ["y"])
    with pytest.raises(UnsupportedError, match="element type FLOAT16 of 'x'"):
        compile_model(model, optimize=False)
    w = np.zeros((2, 1, 1, 1, 1), np.float32)
    conv3d = make_model([helper.make_node("Conv", ["x", "w"], ["y"])],
                        {"x": (TP.FLOAT, [1, 1, 2, 2, 2])}, ["y"], {"w": w})
    with pytest.raises(UnsupportedError, match=r"Conv node.*3-D convolution is not implemented"):
        compile_model(conv3d, optimize=False)


def test_custom_domain_op_is_refused():
    node = helper.make_node("MyOp", ["x"], ["y"], domain="my.company")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TP.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("my.company", 1)])
    with pytest.raises(UnsupportedError, match="my.company::MyOp.*custom domain 'my.company'"):
        compile_model(model, optimize=False)


def test_data_dependent_shape_is_refused():
    model = make_model([helper.make_node("NonZero", ["x"], ["y"])], {"x": (TP.FLOAT, [5])}, ["y"])
    with pytest.raises(UnsupportedError, match="NonZero node.*shape of output 'y' is not known"):
        compile_model(model, optimize=False)


def test_compiler_error_names_the_generated_source():
    node = helper.make_node("EmitsBrokenC", ["x"], ["y"], domain=TEST_DOMAIN)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TP.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(TEST_DOMAIN, 1)])
    with pytest.raises(CodegenError) as info:
        compile_model(model, optimize=False)
    message = str(info.value)
    path = Path(re.search(r"generated source (\S+model\.c)", message).group(1))
    assert path.is_file() and "this_is_not_c" in path.read_text()
    assert "this_is_not_c" in message  # the compiler's own diagnostic is included


def test_missing_model_file():
    with pytest.raises(BadInputError, match="no such file"):
        compile_model("/nonexistent/model.onnx")


def test_bad_target_and_planner_names():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (TP.FLOAT, [2])}, ["y"])
    with pytest.raises(BadInputError, match="unknown target 'gpu'"):
        compile_model(model, optimize=False, target="gpu")
    with pytest.raises(BadInputError, match="unknown memory planner 'magic'"):
        compile_model(model, optimize=False, planner="magic")




def test_training_dropout_and_sequence_inputs_are_refused():
    dropout = make_model([helper.make_node("Dropout", ["x", "ratio", "train"], ["y"])],
                         {"x": (TP.FLOAT, [4])}, ["y"],
                         {"ratio": np.float32(0.5), "train": np.array(True)})
    with pytest.raises(UnsupportedError, match="Dropout in training mode"):
        compile_model(dropout, optimize=False)
    seq_type = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TP.FLOAT, [2]))
    graph = helper.make_graph([helper.make_node("SequenceLength", ["s"], ["n"])], "g",
                              [helper.make_value_info("s", seq_type)],
                              [helper.make_tensor_value_info("n", TP.INT64, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedError, match="graph input 's' is a sequence type"):
        compile_model(model, optimize=False)
