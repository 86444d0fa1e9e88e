"""Specialization on input values, compile_many batches, and emitters of normally folded ops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from backend_helpers import check_against_onnxruntime, make_model
from graphopt import onnx_io
from graphopt.backend import compile as compile_model
from graphopt.backend import compile_many
from graphopt.backend.api import CompiledModel, CompileOptions
from graphopt.backend.c.target import NATIVE
from graphopt.errors import BadInputError, CodegenError, UnsupportedError
from graphopt.numerics import run_onnxruntime

I64 = np.int64


@pytest.fixture(scope="module")
def slice_model():
    """Slice with starts/ends read from graph inputs, and a Pad whose pads are computed from one."""
    nodes = [helper.make_node("Slice", ["X", "starts", "ends", "axes"], ["sliced"]),
             helper.make_node("Mul", ["margin", "two"], ["pads"]),
             helper.make_node("Pad", ["sliced", "pads"], ["Y"])]
    return make_model(nodes, {"X": (TP.FLOAT, [4, 6]), "starts": (TP.INT64, [1]),
                              "ends": (TP.INT64, [1]), "margin": (TP.INT64, [4])}, ["Y"],
                      {"axes": np.array([1], I64), "two": np.array(2, I64)})


def _feeds(start: int, end: int, margin: list[int]) -> dict[str, np.ndarray]:
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    return {"X": x, "starts": np.array([start], I64), "ends": np.array([end], I64),
            "margin": np.array(margin, I64)}


def test_parameter_inputs_are_specialized_on_their_values(slice_model):
    compiled = compile_model(slice_model, optimize=False)
    assert [compiled.input_names[i] for i in compiled.value_inputs] == ["starts", "ends", "margin"]
    with pytest.raises(BadInputError, match="no program is built yet"):
        compiled.report  # noqa: B018 - nothing to report before the first run
    for feeds in (_feeds(1, 4, [0, 1, 0, 0]), _feeds(-5, 100, [1, 0, 2, 1]),
                  _feeds(1, 4, [0, 1, 0, 0])):
        got = compiled.run(feeds)[0]
        np.testing.assert_array_equal(got, run_onnxruntime(slice_model, feeds)[0])
    assert len(compiled.reports()) == 2  # the third run reused the first program
    assert "starts" in compiled.source and "const float* restrict p_data" in compiled.source


def test_parameter_input_feeding_a_missing_emitter_is_refused_at_compile_time():
    nodes = [helper.make_node("Slice", ["X", "starts", "ends", "axes"], ["s"]),
             helper.make_node("Multinomial", ["s"], ["Y"], sample_size=3)]
    inputs = [helper.make_tensor_value_info("X", TP.FLOAT, [2, 4]),
              helper.make_tensor_value_info("starts", TP.INT64, [1]),
              helper.make_tensor_value_info("ends", TP.INT64, [1])]
    graph = helper.make_graph(nodes, "sample", inputs,
                              [helper.make_tensor_value_info("Y", TP.INT32, [2, 3])],
                              [numpy_helper.from_array(np.array([1], I64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedError, match="no C emitter for op 'Multinomial'"):
        compile_model(model, optimize=False)


def test_compile_many_builds_one_module_and_returns_refusals_in_place(slice_model):
    relu = make_model([helper.make_node("Relu", ["X"], ["Y"])], {"X": (TP.FLOAT, [3])}, ["Y"])
    unique = make_model([helper.make_node("Unique", ["X"], ["Y"])], {"X": (TP.FLOAT, [3])}, ["Y"])
    x = np.array([-1, 0, 2], np.float32)
    feeds = _feeds(0, 3, [1, 1, 1, 1])
    results = compile_many([relu, unique, slice_model], [[x], [x], feeds], optimize=False)
    assert isinstance(results[1], UnsupportedError) and "Unique" in str(results[1])
    first, third = results[0], results[2]
    assert Path(first.report.source_path) == Path(third.report.source_path)  # one module
    np.testing.assert_array_equal(first.run([x])[0], np.maximum(x, 0))
    np.testing.assert_array_equal(third.run(feeds)[0], run_onnxruntime(slice_model, feeds)[0])


def test_compile_many_isolates_a_program_that_does_not_build(tmp_path):
    import test_errors  # noqa: F401  (registers the EmitsBrokenC test op)

    broken_node = helper.make_node("EmitsBrokenC", ["X"], ["Y"], domain=test_errors.TEST_DOMAIN)
    graph = helper.make_graph([broken_node], "broken",
                              [helper.make_tensor_value_info("X", TP.FLOAT, [2])],
                              [helper.make_tensor_value_info("Y", TP.FLOAT, [2])])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(test_errors.TEST_DOMAIN, 1)]
    broken = helper.make_model(graph, opset_imports=opsets)
    good = make_model([helper.make_node("Neg", ["X"], ["Y"])], {"X": (TP.FLOAT, [2])}, ["Y"])
    results = compile_many([good, broken], optimize=False, cache_dir=tmp_path)
    assert isinstance(results[1], CodegenError) and "this_is_not_c" in str(results[1])
    np.testing.assert_array_equal(results[0].run([np.ones(2, np.float32)])[0], -np.ones(2))


def test_emitters_of_folded_ops_match_the_reference():
    """ConstantOfShape, Range, EyeLike and the windows fold at compile time; with folding off
    their emitters run, and must compute what onnx's reference computes."""
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["filled"],
                         value=helper.make_tensor("v", TP.INT32, [1], [7])),
        helper.make_node("Range", ["start", "limit", "delta"], ["range"]),
        helper.make_node("EyeLike", ["E"], ["eye"], k=1, dtype=TP.DOUBLE),
        helper.make_node("HannWindow", ["size"], ["hann"], periodic=0),
        helper.make_node("HammingWindow", ["size"], ["hamming"]),
        helper.make_node("BlackmanWindow", ["size"], ["blackman"]),
    ]
    inits = {"shape": np.array([2, 3], I64), "start": np.array(1.5, np.float32),
             "limit": np.array(7.0, np.float32), "delta": np.array(0.75, np.float32),
             "size": np.array(9, I64)}
    model = make_model(nodes, {"E": (TP.FLOAT, [3, 4])},
                       ["filled", "range", "eye", "hann", "hamming", "blackman"], inits, opset=17)
    options = CompileOptions(NATIVE, fold_constants=False)
    compiled = CompiledModel(onnx_io.import_model(model), options)
    assert {s.op_type for p in compiled.programs() for s in p.steps} >= {
        "ConstantOfShape", "Range", "HannWindow"}
    e = np.zeros((3, 4), np.float32)
    for got, want in zip(compiled.run([e]), ReferenceEvaluator(model).run(None, {"E": e})):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_value_inputs_in_a_model_checked_against_onnxruntime():
    """Reshape/Expand/Tile/ReduceSum/TopK parameters given as inputs, in one model."""
    nodes = [helper.make_node("Reshape", ["X", "shape"], ["r"]),
             helper.make_node("Expand", ["r", "expand"], ["e"]),
             helper.make_node("Tile", ["e", "repeats"], ["t"]),
             helper.make_node("ReduceSum", ["t", "axes"], ["s"], keepdims=0),
             helper.make_node("TopK", ["s", "k"], ["values", "indices"])]
    inputs = [helper.make_tensor_value_info("X", TP.FLOAT, [2, 6])]
    inputs += [helper.make_tensor_value_info(n, TP.INT64, [size]) for n, size in
               (("shape", 3), ("expand", 3), ("repeats", 3), ("axes", 1), ("k", 1))]
    outputs = [helper.make_tensor_value_info("values", TP.FLOAT, [2, 4]),
               helper.make_tensor_value_info("indices", TP.INT64, [2, 4])]
    model = helper.make_model(helper.make_graph(nodes, "params", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 18)])
    rng = np.random.default_rng(0)
    feeds = {"X": rng.standard_normal((2, 6)).astype(np.float32),
             "shape": np.array([2, 1, 6], I64), "expand": np.array([2, 3, 6], I64),
             "repeats": np.array([1, 2, 1], I64), "axes": np.array([1], I64),
             "k": np.array([4], I64)}
    check_against_onnxruntime(model, feeds)
