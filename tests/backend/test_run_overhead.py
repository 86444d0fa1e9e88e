"""CompiledModel.run's fast path: signatures checked once, caller-provided outputs."""
from __future__ import annotations

import numpy as np
import pytest
from backend_helpers import make_model
from onnx import TensorProto as TP
from onnx import helper

from graphopt.backend import compile as compile_model
from graphopt.backend.build import toolchain
from graphopt.errors import BadInputError


@pytest.fixture(scope="module")
def compiled():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"]),
             helper.make_node("Neg", ["h"], ["z"])]
    w = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    model = make_model(nodes, {"x": (TP.FLOAT, ["batch", 6])}, ["y", "z"], {"w": w})
    return compile_model(model, optimize=False), w


def test_repeated_runs_reuse_the_checked_signature(compiled):
    model, w = compiled
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    first = model.run([x])
    assert model._signatures  # the first run's signature is remembered
    for inputs in ([x], (x,), {"x": x}, x):
        again = model.run(inputs)
        np.testing.assert_allclose(again[0], np.maximum(x @ w, 0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(again[1], first[1])
    strided = np.asfortranarray(x)  # not C-contiguous: the checked path copies it
    np.testing.assert_array_equal(model.run([strided])[1], first[1])


def test_a_new_signature_is_still_checked(compiled):
    model, _ = compiled
    model.run([np.zeros((2, 6), np.float32)])
    with pytest.raises(BadInputError, match="dtype"):
        model.run([np.zeros((2, 6), np.float64)])
    with pytest.raises(BadInputError):
        model.run([np.zeros((2, 7), np.float32)])
    with pytest.raises(BadInputError, match="input"):
        model.run({"x": np.zeros((2, 6), np.float32), "extra": np.zeros(1)})


def test_results_go_into_caller_arrays(compiled):
    model, w = compiled
    x = np.ones((4, 6), np.float32)
    y, z = np.empty((4, 5), np.float32), np.empty((4, 5), np.float32)
    got = model.run([x], outputs=[y, z])
    assert got[0] is y and got[1] is z
    np.testing.assert_allclose(z, -(x @ w), rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInputError, match="writable C-contiguous float32"):
        model.run([x], outputs=[y, np.empty((4, 5), np.float64)])
    with pytest.raises(BadInputError, match="2 outputs"):
        model.run([x], outputs=[y])


def test_thread_count_is_set_on_every_run(compiled):
    """Two models on the same loaded module (one OpenMP runtime) keep their own counts."""
    model, _ = compiled
    one = compile_model(model.graph, optimize=False, threads=1)
    two = compile_model(model.graph, optimize=False, threads=2)
    x = np.ones((2, 6), np.float32)
    openmp = toolchain().openmp
    for first, second, want in ((one, two, 2), (two, one, 1)):
        first.run([x])
        second.run([x])
        assert next(iter(second._executables.values())).threads() == (want if openmp else 1)
