"""graphopt.evaluator: each kernel gives onnxruntime's exact values and dtypes."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphopt.errors import UnsupportedError
from graphopt.evaluator import Call, evaluate, find_kernel
from graphopt.ir.types import DType
from graphopt.numerics import run_onnxruntime

OPSET = 18


def run_in_onnxruntime(op: str, inputs: list, attrs: dict, num_outputs: int = 1,
                       domain: str = "") -> list[np.ndarray]:
    """Run one node in onnxruntime; inputs given as None are omitted optional inputs."""
    names = ["" if a is None else f"in{i}" for i, a in enumerate(inputs)]
    outs = [f"out{i}" for i in range(num_outputs)]
    node = helper.make_node(op, names, outs, domain=domain, **attrs)
    graph = helper.make_graph(
        [node], "one",
        [helper.make_tensor_value_info(n, int(DType.from_numpy(a.dtype)), a.shape)
         for n, a in zip(names, inputs) if a is not None],
        [onnx.ValueInfoProto(name=n) for n in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    return run_onnxruntime(model, {n: a for n, a in zip(names, inputs) if a is not None})


def check_exact(op: str, inputs: list, attrs: dict | None = None, num_outputs: int = 1) -> None:
    attrs = attrs or {}
    want = run_in_onnxruntime(op, inputs, attrs, num_outputs)
    # The IR holds tensor attributes as numpy arrays (as the importer makes them).
    ir_attrs = {k: numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v
                for k, v in attrs.items()}
    got = evaluate(Call(op, tuple(inputs), ir_attrs, OPSET, num_outputs))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_array_equal(g, w)


i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731 - short literals keep the table readable
i32 = lambda *v: np.array(v, dtype=np.int32)  # noqa: E731
f32 = lambda *v: np.array(v, dtype=np.float32)  # noqa: E731
ramp = np.arange(24, dtype=np.float32).reshape(2, 3, 4)

EXACT_CASES = {
    "div-int64-truncates": ("Div", [i64(-7, 7, -7, 7, 0), i64(2, -2, -2, 2, 3)], {}),
    "div-int32": ("Div", [i32(-9, 9), i32(4, -4)], {}),
    "div-float32": ("Div", [f32(1, 2, 3), f32(3, 7, -0.0)], {}),
    "mod-int-divisor-sign": ("Mod", [i64(-7, 7, -7, 7), i64(2, -2, -2, 2)], {}),
    "mod-int-fmod": ("Mod", [i32(-7, 7, -7, 7), i32(2, -2, -2, 2)], {"fmod": 1}),
    "add-int32-wraps": ("Add", [i32(2**31 - 1), i32(1)], {}),
    "mul-broadcast": ("Mul", [ramp, f32(0.5, 2, -1, 3)], {}),
    "sum-variadic": ("Sum", [f32(1e8, 1), f32(1, 1e-8), f32(-1e8, 3)], {}),
    "max-variadic": ("Max", [i64(1, 5), i64(3, 2), i64(2, 9)], {}),
    "equal-int": ("Equal", [i64(1, 2, 3), i64(1, 0, 3)], {}),
    "where": ("Where", [np.array([True, False]), f32(1, 2), f32(3, 4)], {}),
    "cast-float-to-int32": ("Cast", [f32(-2.7, 2.7, 1e9)], {"to": onnx.TensorProto.INT32}),
    "cast-int64-to-float16": ("Cast", [i64(2049, 65504, -3)], {"to": onnx.TensorProto.FLOAT16}),
    "cast-float-to-bool": ("Cast", [f32(0, -0.0, 0.5, np.nan)], {"to": onnx.TensorProto.BOOL}),
    "reshape-zero-and-minus-one": ("Reshape", [ramp, i64(0, -1)], {}),
    "transpose": ("Transpose", [ramp], {"perm": [2, 0, 1]}),
    "concat-negative-axis": ("Concat", [ramp, ramp], {"axis": -1}),
    "split-uneven": ("Split", [np.arange(7, dtype=np.int64)], {"num_outputs": 3}),
    "gather-negative-indices": ("Gather", [ramp, i64(-1, 0)], {"axis": 1}),
    "gather-scalar-index": ("Gather", [i64(5, 6, 7), np.array(-2, np.int64)], {}),
    "gather-elements": ("GatherElements", [ramp, np.zeros((2, 3, 1), np.int64) - 1], {"axis": 2}),
    "slice-negative-step": ("Slice", [ramp, i64(-1), i64(-100), i64(2), i64(-2)], {}),
    "slice-clamped": ("Slice", [ramp, i64(1, -5), i64(99, 2), i64(1, 0)], {}),
    "squeeze-axes": ("Squeeze", [np.zeros((1, 3, 1), np.float32), i64(-1)], {}),
    "unsqueeze-axes": ("Unsqueeze", [f32(1, 2), i64(0, -1)], {}),
    "expand-bidirectional": ("Expand", [np.ones((3, 1), np.int32), i64(2, 1, 4)], {}),
    "tile": ("Tile", [i64(1, 2), i64(3)], {}),
    "flatten-negative-axis": ("Flatten", [ramp], {"axis": -1}),
    "shape-start-end": ("Shape", [ramp], {"start": -2, "end": 10}),
    "size": ("Size", [ramp], {}),
    "constant-of-shape-int32": ("ConstantOfShape", [i64(2, 3)], {
        "value": helper.make_tensor("v", onnx.TensorProto.INT32, [1], [7])}),
    # Large enough to come back as a read-only broadcast view (see data_movement): same values.
    "constant-of-shape-large": ("ConstantOfShape", [i64(64, 32, 3, 3)], {
        "value": helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.02])}),
    "range-int32": ("Range", [np.array(v, np.int32) for v in (10, -3, -4)], {}),
    "range-float-running-sum": ("Range", [np.array(0.1, np.float32), np.array(3.0, np.float32),
                                          np.array(0.1, np.float32)], {}),
    "reduce-sum-int32-keeps-dtype": ("ReduceSum", [np.full((3, 4), 2**28, np.int32), i64(1)], {}),
    "reduce-prod-shape": ("ReduceProd", [i64(2, 3, 4)], {"keepdims": 0}),
    "reduce-min-axes": ("ReduceMin", [i32(5, -2, 7, 1).reshape(2, 2), i64(-1)], {}),
    "reduce-sum-noop-empty-axes": ("ReduceSum", [i32(1, 2), i64()], {"noop_with_empty_axes": 1}),
    "argmax-is-int64": ("ArgMax", [ramp], {"axis": 1}),
}


@pytest.mark.parametrize("op,inputs,attrs", EXACT_CASES.values(), ids=EXACT_CASES.keys())
def test_matches_onnxruntime_exactly(op, inputs, attrs):
    num_outputs = 3 if op == "Split" else 1
    check_exact(op, inputs, attrs, num_outputs)


def test_large_constant_of_shape_is_a_read_only_view_that_exports():
    """Nothing may write into it (passes never write into constants), and whoever needs its
    bytes (export, the C backend's weight table) copies them."""
    value = np.array([1.5], np.float32)  # the IR holds tensor attributes as arrays
    [big] = evaluate(Call("ConstantOfShape", (i64(128, 64),), {"value": value}, OPSET))
    [small] = evaluate(Call("ConstantOfShape", (i64(2, 3),), {"value": value}, OPSET))
    assert not big.flags.writeable and small.flags.writeable
    exported = numpy_helper.to_array(numpy_helper.from_array(big))
    np.testing.assert_array_equal(exported, np.full((128, 64), 1.5, np.float32))


@pytest.mark.parametrize("op", ["Erf", "Exp", "Tanh", "Sigmoid"])
def test_transcendental_fallback_within_an_ulp_or_two(op):
    x = np.linspace(-4, 4, 101, dtype=np.float32)
    want = run_in_onnxruntime(op, [x], {})[0]
    got = evaluate(Call(op, (x,), {}, OPSET))[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_matmul_fallback_accumulates_in_float32():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 64), np.float32), rng.standard_normal((64, 5), np.float32)
    want = run_in_onnxruntime("MatMul", [a, b], {})[0]
    got = evaluate(Call("MatMul", (a, b), {}, OPSET))[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_common_shape_ops_have_fast_kernels():
    for op in ("Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Slice", "Cast", "Div"):
        assert find_kernel("", op, OPSET) is not None, op


def test_integer_division_by_zero_is_refused():
    with pytest.raises(UnsupportedError, match="divides an integer by zero"):
        evaluate(Call("Div", (i64(1, 2), i64(1, 0))))


def test_undefined_float_to_int_cast_is_refused():
    with pytest.raises(UnsupportedError, match="undefined"):
        evaluate(Call("Cast", (f32(np.nan),), {"to": onnx.TensorProto.INT64}))


def test_unknown_custom_op_is_refused_with_its_name():
    with pytest.raises(UnsupportedError, match="Frobnicate"):
        evaluate(Call("Frobnicate", (f32(1),), {}, 1, 1, "com.example"))


def test_overflowing_integer_reduction_is_refused():
    # onnxruntime returns INT_MAX here, not numpy's wrapped 0.
    with pytest.raises(UnsupportedError, match="overflows"):
        evaluate(Call("ReduceSum", (np.full(4, 2**30, np.int32), i64(0)), {}, OPSET))


def test_out_of_range_gather_is_refused():
    with pytest.raises(UnsupportedError, match="outside"):
        evaluate(Call("Gather", (i64(1, 2), i64(2))))


def test_integer_division_property_against_onnxruntime():
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    values = st.lists(st.integers(-1000, 1000), min_size=1, max_size=6)

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(values, values)
    def check(a, b):
        n = min(len(a), len(b))
        divisor = [d if d != 0 else 1 for d in b[:n]]
        for op in ("Div", "Mod"):
            check_exact(op, [i32(*a[:n]), i32(*divisor)])

    check()
