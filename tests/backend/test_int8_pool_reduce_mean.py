"""The QDQ ReduceMean (DequantizeLinear -> ReduceMean over trailing axes -> QuantizeLinear)
kept on integers: onnxruntime has no integer kernel for it and runs the three ops in float, so
its integers depend on the order its ReduceMean sums a row (Eigen's 4-float packets, aligned
in the buffer). reference.onnxruntime_row_sums reproduces that order: checked here on
onnxruntime's float ReduceMean, then csrc/qpool.c's graphopt_qreduce_mean on every path and
onnxruntime's QDQ model against the reference, bit for bit, with values chosen so that the
summation order matters (means near a rounding tie)."""
from __future__ import annotations

import ctypes

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from test_int8_depthwise import build_paths, runnable

from graphopt.backend.build import CSRC_DIR
from graphopt.backend.int8 import reference

SOURCES = [str(CSRC_DIR / n) for n in ("qpool.c", "qplane.c", "qepilogue.c")]

# input shapes reduced over their trailing two axes: rows of 49 (mobilenet_v2's 7x7 head),
# rows shorter than a packet, of one packet, odd packet counts, one row (N = C = 1)
SHAPES = [(1, 64, 7, 7), (2, 5, 1, 3), (1, 6, 2, 2), (1, 7, 3, 4), (1, 3, 5, 5), (1, 1, 6, 6),
          (1, 9, 1, 1), (1, 4, 14, 14), (2, 3, 11, 13)]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _reduce_mean_model(shape: tuple, elem: int = TensorProto.FLOAT,
                       qdq: tuple | None = None) -> onnx.ModelProto:
    """ReduceMean over axes [2, 3] (keepdims 0); with qdq = (x scale, x zero point, y scale,
    y zero point, integer type): between DequantizeLinear and QuantizeLinear."""
    out_shape = list(shape[:2])
    nodes, inits = [], []
    src, out = "x", "y"
    if qdq is not None:
        xs, xz, ys, yz, np_type = qdq
        inits = [helper.make_tensor("xs", TensorProto.FLOAT, [], [xs]),
                 onnx.numpy_helper.from_array(np.array(xz, np_type), "xz"),
                 helper.make_tensor("ys", TensorProto.FLOAT, [], [ys]),
                 onnx.numpy_helper.from_array(np.array(yz, np_type), "yz")]
        nodes.append(helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]))
        src, out = "xf", "yf"
    nodes.append(helper.make_node("ReduceMean", [src], [out], axes=[2, 3], keepdims=0))
    if qdq is not None:
        nodes.append(helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, shape)],
                              [helper.make_tensor_value_info("y", elem, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("shape", SHAPES)
def test_row_sums_are_onnxruntime_reduce_mean(shape):
    """Float ReduceMean: values of very different magnitudes, so any other order rounds
    differently on most rows."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e3], shape)).astype(np.float32)
    got = _session(_reduce_mean_model(shape)).run(None, {"x": x})[0]
    rows = shape[0] * shape[1]
    sums = reference.onnxruntime_row_sums(x.reshape(rows, -1))
    expected = (sums / np.float32(x[0, 0].size)).astype(np.float32).reshape(got.shape)
    np.testing.assert_array_equal(got, expected)


def _qdq_case(shape: tuple, dtype: type, seed: int) -> tuple:
    """Integers and parameters putting the exact mean of most rows on a rounding tie: y scale =
    2 x scale, so mean / y scale = S / (2 n) for a row's integer sum S (of x - zero point) over
    n elements, and each row's last element is set so that S = 2 n k + n where the type
    allows: the float rounding of the sum then decides which way the row rounds."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    rows, n = shape[0] * shape[1], int(np.prod(shape[2:]))
    x = rng.integers(info.min, info.max + 1, (rows, n)).astype(np.int64)
    x_zero = int(rng.integers(info.min // 2, info.max // 2))
    for row in x:
        rest = int((row[:-1] - x_zero).sum())
        target = rest + int(row[-1]) - x_zero
        target += (n - target) % (2 * n)  # the next S with S mod 2n == n
        last = target - rest + x_zero
        for candidate in (last, last - 2 * n):
            if info.min <= candidate <= info.max:
                row[-1] = candidate
                break
    x_scale = np.float32(0.0235294)
    y_zero = int(rng.integers(info.min // 4, info.max // 4))
    return x.astype(dtype).reshape(shape), (x_scale, dtype(x_zero), np.float32(2 * x_scale),
                                            dtype(y_zero))


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return build_paths(tmp_path_factory.mktemp("qpool"), SOURCES)


@pytest.mark.parametrize("path", ["scalar", "avx2", "avx512"])  # VBMI: no other code
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("shape", SHAPES)
def test_qreduce_mean_is_onnxruntime_qdq(libraries, path, dtype, shape):
    lib = runnable(libraries, path)
    x, (xs, xz, ys, yz) = _qdq_case(shape, dtype, sum(shape) + (dtype == np.int8))
    rows = shape[0] * shape[1]
    expected = reference.qdq_reduce_mean(x, rows, xs, xz, ys, yz)
    elem = TensorProto.INT8 if dtype == np.int8 else TensorProto.UINT8
    model = _reduce_mean_model(shape, elem, (float(xs), int(xz), float(ys), int(yz), dtype))
    theirs = _session(model).run(None, {"x": x})[0].reshape(-1)
    np.testing.assert_array_equal(expected, theirs)
    got = np.zeros(rows + 64, dtype)  # 64 guard elements: nothing written past the rows
    lib.graphopt_qreduce_mean(ctypes.c_void_p(x.ctypes.data), ctypes.c_int64(rows),
                              ctypes.c_int64(x.size // rows), int(dtype == np.int8),
                              int(xz), ctypes.c_float(xs), int(yz), ctypes.c_float(ys),
                              ctypes.c_void_p(got.ctypes.data))
    np.testing.assert_array_equal(got[:rows], expected)
    assert not got[rows:].any()


def test_the_order_matters():
    """The cases above tell orders apart: a left-to-right float sum, or the exact integer sum
    (QLinearGlobalAveragePool's arithmetic), give other integers on some rows."""
    shape, dtype = (1, 64, 7, 7), np.uint8  # mean / y scale = S / 98
    x, (xs, xz, ys, yz) = _qdq_case(shape, dtype, sum(shape))
    values = (x.reshape(64, -1).astype(np.int32) - int(xz)).astype(np.float32) * xs
    plain = np.zeros(64, np.float32)
    for i in range(values.shape[1]):
        plain = plain + values[:, i]
    naive = np.rint((plain / np.float32(49)) / ys) + int(yz)
    expected = reference.qdq_reduce_mean(x, 64, xs, xz, ys, yz)
    exact = np.rint(((x.reshape(64, -1).astype(np.int64) - int(xz)).sum(axis=1) / 98)) + int(yz)
    assert (naive.clip(0, 255).astype(np.uint8) != expected).any()  # left to right
    assert (exact.clip(0, 255).astype(np.uint8) != expected).any()  # integer sums


def _qdq_head_model(shape: tuple, xs: float, xz: int, ys: float, yz: int) -> onnx.ModelProto:
    """x -> Q -> DQ -> ReduceMean (axes 2, 3) -> Q -> DQ -> Relu -> y: a classifier head's
    pooling as onnxruntime's quantizer writes it (a float reader after it: a Q/DQ pair right
    before a graph output is not absorbed, and Relu is exact)."""
    consts = [helper.make_tensor("xs", TensorProto.FLOAT, [], [xs]),
              helper.make_tensor("xz", TensorProto.UINT8, [], [xz]),
              helper.make_tensor("ys", TensorProto.FLOAT, [], [ys]),
              helper.make_tensor("yz", TensorProto.UINT8, [], [yz])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
             helper.make_node("ReduceMean", ["xf"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("QuantizeLinear", ["m", "ys", "yz"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "ys", "yz"], ["md"]),
             helper.make_node("Relu", ["md"], ["y"])]
    graph = helper.make_graph(nodes, "head",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             list(shape[:2]))], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_reduce_mean_lowered_like_onnxruntime():
    """The lowering keeps the QDQ ReduceMean on integers (`Int8ReduceMean`) and the compiled
    model gives onnxruntime's outputs, on inputs whose rows sit on rounding ties."""
    from graphopt.backend import compile as compile_model
    from graphopt.backend.c.registry import has_emitter
    from graphopt.ir.graph import Node

    if not has_emitter(Node("Int8ReduceMean", [], [])):
        pytest.skip("the C backend has no Int8ReduceMean emitter: ReduceMean stays float")
    shape = (1, 96, 7, 7)
    ints, (xs, xz, ys, yz) = _qdq_case(shape, np.uint8, 7)
    model = _qdq_head_model(shape, float(xs), int(xz), float(ys), int(yz))
    compiled = compile_model(model)
    ops = [s.op_type for s in compiled.programs()[0].steps]
    assert "Int8ReduceMean" in ops and "ReduceMean" not in ops, ops
    x = ((ints.astype(np.float32) - np.float32(xz)) * xs).astype(np.float32)  # quantizes to ints
    np.testing.assert_array_equal(compiled.run({"x": x})[0],
                                  _session(model).run(None, {"x": x})[0])
