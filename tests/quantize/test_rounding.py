"""The one rounding policy (graphopt.quantization.rounding) against onnxruntime, bit for bit."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.quantization.rounding import (dequantize_linear, quantize_linear, requant_multiplier,
                                            requantize, round_half_to_even)
from quant_helpers import run


def _quantize_model(scale: np.ndarray, zero_point: np.ndarray, shape: list[int],
                    axis: int | None) -> onnx.ModelProto:
    qtype = helper.np_dtype_to_tensor_dtype(zero_point.dtype)
    attrs = {} if axis is None else {"axis": axis}
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], **attrs)], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", qtype, shape)],
        [numpy_helper.from_array(scale.astype(np.float32), "s"),
         numpy_helper.from_array(zero_point, "zp")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _edge_values(scale: float) -> np.ndarray:
    """Exact halves (x.5 in units of scale), values next to them, and far out-of-range values."""
    halves = (np.arange(-300, 301) + 0.5) * scale
    near = np.concatenate([np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf)])
    extreme = np.array([-1e30, -1e6, -129.5, -128.5, 127.5, 128.5, 255.5, 256.5, 1e6, 1e30,
                        0.0, -0.0]) * scale
    return np.concatenate([halves, near, extreme]).astype(np.float32)


def test_round_half_to_even_ties():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 2.4999999], np.float32)
    assert round_half_to_even(x).tolist() == [0, 2, 2, -0, -2, -2, 4, 2]


@pytest.mark.parametrize("scale", [1.0, 0.25, 0.0173, 3.7])
@pytest.mark.parametrize("zp", [np.uint8(0), np.uint8(128), np.uint8(255), np.int8(0),
                                np.int8(-128), np.int8(5)])
def test_quantize_linear_matches_onnxruntime(scale, zp):
    x = _edge_values(scale)
    zero_point = np.asarray(zp)
    want = run(_quantize_model(np.asarray(scale), zero_point, [x.size], None), {"x": x})[0]
    got = quantize_linear(x, np.float32(scale), zero_point)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_quantize_linear_per_channel_matches_onnxruntime():
    rng = np.random.default_rng(0)
    scale = np.array([0.5, 0.01, 2.0, 0.3], np.float32)
    zero_point = np.zeros(4, np.int8)
    x = (rng.integers(-400, 400, (4, 50)) + 0.5).astype(np.float32) * scale[:, None]
    want = run(_quantize_model(scale, zero_point, [4, 50], 0), {"x": x})[0]
    np.testing.assert_array_equal(quantize_linear(x, scale, zero_point, axis=0), want)


def test_dequantize_inverts_quantize_on_the_grid():
    q = np.arange(256, dtype=np.uint8)
    x = dequantize_linear(q, np.float32(0.1), np.uint8(10))
    np.testing.assert_array_equal(quantize_linear(x, np.float32(0.1), np.uint8(10)), q)


@pytest.mark.parametrize("per_column", [False, True])
def test_requantize_matches_onnxruntime_qlinearmatmul(per_column):
    """int32 accumulator -> uint8 as QLinearMatMul computes it. Weights are 7-bit so that x86
    kernels without VNNI (vpmaddubsw saturates int16 pair sums) are exact too."""
    rng = np.random.default_rng(1)
    m, k, n = 8, 64, 12
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(-63, 64, (k, n)).astype(np.int8)
    a_scale, a_zp = np.float32(0.0173), np.uint8(7)
    b_scale = (rng.random(n) * 0.01 + 0.001).astype(np.float32) if per_column else np.float32(0.003)
    y_scale, y_zp = np.float32(0.37), np.uint8(128)
    inits = [(a_scale, "as"), (a_zp, "azp"), (b, "b"), (b_scale, "bs"),
             (np.zeros(np.shape(b_scale), np.int8), "bzp"), (y_scale, "ys"), (y_zp, "yzp")]
    graph = helper.make_graph(
        [helper.make_node("QLinearMatMul", ["a", "as", "azp", "b", "bs", "bzp", "ys", "yzp"],
                          ["y"])], "qmm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [m, n])],
        [numpy_helper.from_array(np.asarray(v), name) for v, name in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    want = run(model, {"a": a})[0]
    acc = (a.astype(np.int32) - int(a_zp)) @ b.astype(np.int32)
    got = requantize(acc, requant_multiplier(a_scale, b_scale, y_scale), np.asarray(y_zp),
                     axis=1 if per_column else None)
    np.testing.assert_array_equal(got, want)


def test_requantize_saturates():
    acc = np.array([-10 ** 9, -200, 0, 200, 10 ** 9], np.int32)
    got = requantize(acc, np.float32(1.0), np.asarray(np.int8(0)))
    assert got.tolist() == [-128, -128, 0, 127, 127]
