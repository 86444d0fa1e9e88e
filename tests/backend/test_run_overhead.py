"""CompiledModel.run's fast path (signatures checked once, caller-provided outputs), the
profile build behind `layer_times` and the overhead measurement of `graphopt bench`."""
from __future__ import annotations

import numpy as np
import pytest
from backend_helpers import make_model
from onnx import TensorProto as TP
from onnx import helper

from graphopt.backend import api
from graphopt.backend import compile as compile_model
from graphopt.backend.bench import format_layers, run_overhead
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


def test_a_known_signature_skips_the_checks(compiled, monkeypatch):
    model, w = compiled
    x = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    model.run({"x": x})

    def refuse(*args, **kwargs):
        raise AssertionError("the inputs were checked again")

    monkeypatch.setattr(api, "check_inputs", refuse)
    x.flags.writeable = False  # read-only inputs take the fast path too
    for inputs in ([x], {"x": x}, x):
        np.testing.assert_allclose(model.run(inputs)[0], np.maximum(x @ w, 0), rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(AssertionError, match="checked again"):  # a new shape is checked
        model.run([np.zeros((7, 6), np.float32)])


def test_results_are_fresh_arrays_by_default(compiled):
    model, _ = compiled
    x = np.ones((3, 6), np.float32)
    first, second = model.run([x]), model.run([x])
    assert all(not np.may_share_memory(a, b) for a in first for b in second)


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
    with pytest.raises(BadInputError, match="overlaps"):  # the kernels assume no aliasing
        model.run([x], outputs=[y, y])
    shared = np.ones(40, np.float32)  # an output that is a view of the input's memory
    with pytest.raises(BadInputError, match="overlaps"):
        model.run([shared[:18].reshape(3, 6)], outputs=[shared[15:30].reshape(3, 5), z[:3]])


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


def test_layer_times_come_from_a_separate_profile_build(compiled):
    model, _ = compiled
    x = np.ones((3, 6), np.float32)
    times = model.layer_times([x], runs=3)
    program = model._profiled.programs()[0]
    assert [step for step, _ in times] == [s for s in program.steps if s.op_type != "Reshape"]
    assert all(seconds >= 0 for _, seconds in times) and sum(t for _, t in times) > 0
    assert "graphopt_now_ns" in model._profiled.source and "graphopt_now_ns" not in model.source
    table = format_layers(times, top=1)
    assert table.splitlines()[0].split() == ["us", "share", "GFLOP/s", "layer"]
    assert f"({len(times) - 1} more layers)" in table and f"all {len(times)} kernels" in table


def test_profile_build_compiles_on_the_portable_target():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = compile_model(make_model(nodes, {"x": (TP.FLOAT, [2, 3])}, ["y"]), optimize=False,
                          target="portable")
    [(step, seconds)] = model.layer_times([np.ones((2, 3), np.float32)], runs=2)
    assert step.op_type == "Relu" and seconds >= 0


def test_run_overhead_is_measured_against_the_bare_entry(compiled):
    model, _ = compiled
    overhead = run_overhead(model, {"x": np.ones((3, 6), np.float32)}, rounds=2, calls=20)
    assert overhead.run_us > 0 and overhead.entry_us > 0
    assert overhead.python_us == pytest.approx(overhead.run_us - overhead.entry_us)


def test_fresh_outputs_outlive_their_chunk(compiled):
    """Fresh outputs are cut from chunks of FreshOutputs.per_chunk runs: results kept across
    more runs than a chunk holds stay intact and never share memory."""
    model, w = compiled
    xs = [np.full((2, 6), i, np.float32) for i in range(3)]
    fresh = model.executable([xs[0]])[0]._fresh
    kept = [model.run([xs[i % 3]]) for i in range(fresh.per_chunk + 5)]
    for i, (y, z) in enumerate(kept):
        np.testing.assert_allclose(z, -(xs[i % 3] @ w), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y, np.maximum(xs[i % 3] @ w, 0), rtol=1e-5, atol=1e-6)
        assert y.flags.c_contiguous and y.flags.writeable and y.shape == (2, 5)
    arrays = [a for run in kept for a in run]
    assert not any(np.may_share_memory(a, b) for i, a in enumerate(arrays) for b in arrays[:i])


def test_scalar_outputs_come_back_as_arrays():
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Neg", ["x"], ["n"])]
    model = compile_model(make_model(nodes, {"x": (TP.FLOAT, [3])}, ["s", "n"]), optimize=False)
    for i in range(70):  # past a chunk
        total, negated = model.run([np.full(3, i, np.float32)])
        assert isinstance(total, np.ndarray) and total.shape == () and total == 3 * i
        np.testing.assert_array_equal(negated, np.full(3, -i, np.float32))
