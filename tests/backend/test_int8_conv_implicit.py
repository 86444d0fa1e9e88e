"""csrc/qconv.c's implicit GEMM (graphopt_qconv_implicit: stride-1 windows read straight from
padded planes of 4 interleaved channels, K ordered tap-outer / channel-group-inner, the weights
packed by packing.pack_implicit_a) bit for bit against reference.py on every ISA path (VNNI reads
the planes in the micro-kernel; the others pack 64-byte groups from them): output rows of 56
(3 * 16 + 8), odd widths and heights, channels not a multiple of 4, s8 input (flip), a fused
Relu and residual QLinearAdd, several output-row panels, 2 threads (OpenMP build), and a compiled
model (grouped, batch 2, residual add) against onnxruntime.
"""
from __future__ import annotations

import ctypes

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt import onnx_io
from graphopt.backend import compile as compile_model
from graphopt.backend.c.ops.qlinear import QConvShape
from graphopt.backend.int8 import packing, reference
from graphopt.backend.int8.lowering import absorb_qdq_nodes
from graphopt.backend.int8.ort_qdq import quantize_with_onnxruntime, random_feeds
from tests.backend.test_int8_kernels import (PATHS, QEpilogue, _build, _conv_case,  # noqa: F401
                                             _lib, _ptr, libraries)

# (channels, height, width, kernel, stride, pad, dilation): resnet18's 56x56 (fewer channels)
# and 28x28, odd widths past and below a panel, channels past a multiple of 4, no padding, 5x5
CASES = [(16, 56, 56, 3, 1, 1, 1), (8, 28, 28, 3, 1, 1, 1), (5, 29, 31, 3, 1, 1, 1),
         (7, 13, 37, 3, 1, 1, 1), (3, 9, 30, 3, 1, 0, 1), (6, 30, 28, 5, 1, 2, 1),
         (4, 3, 17, 3, 1, 1, 1)]


def _run(lib, case, m, seed, flip, slots=1, residual=False, batch=1):
    """graphopt_qconv_implicit over `batch` images (one work memory, garbage-filled) and
    reference.py's output for each. Weights in [-64, 64] with flip (AVX2's vpmaddubsw), full
    8-bit ones without (its widened path)."""
    got, expected = [], []
    work = None
    wmax = 64 if flip else 127
    for n in range(batch):
        shape, x, x_pad, cols, rng = _conv_case(case, seed + n, flip)
        c, k = case[0], case[3]
        kdim, cols_n = c * k * k, cols.shape[3] * cols.shape[4]
        rng = np.random.default_rng(seed)  # the same weights for every image
        w = rng.integers(-wmax, wmax + 1, (m, kdim)).astype(np.int8)
        bias = rng.integers(-3000, 3000, m).astype(np.int32)
        acc = w.astype(np.int64) @ (cols.reshape(kdim, cols_n) - x_pad)
        mult = (rng.uniform(0.5, 2.0, m) / (np.std(acc) + 1.0) * 150).astype(np.float32)
        zp = 90 if residual else 7
        expected_n = reference.qgemm(w, cols.reshape(kdim, cols_n) - x_pad, bias, mult,
                                     np.uint8(zp), low=zp if residual else None)
        folded = packing.folded_bias(w, bias, x_pad)
        e = QEpilogue(bias=folded.ctypes.data, mult=mult.ctypes.data, out_type=0, zero_point=zp,
                      lo=zp if residual else 0, hi=255, narrow=int(packing.is_narrow(w)))
        if residual:
            b = rng.integers(0, 256, (m, cols_n)).astype(np.uint8)
            ra, rb, fixed = reference.qladd_params(0.03, zp, 0.05, 17, 0.045, 3)
            expected_n = reference.qladd(expected_n, b, (ra, rb, fixed), np.uint8)
            e.add, e.add_rs, e.add_cs = b.ctypes.data, cols_n, 1
            e.ratio_a, e.ratio_b, e.fixed, e.add_lo, e.add_hi = ra, rb, fixed, 0, 255
        if work is None:
            lib.graphopt_qconv_implicit_work.restype = ctypes.c_int64
            size = int(lib.graphopt_qconv_implicit_work(ctypes.byref(shape), slots))
            assert size == packing.qconv_implicit_work_bytes(
                c, (shape.out_height, shape.out_width), (k, k), slots)
            work = np.full(size, 0xCD, np.uint8)
        ap = packing.pack_implicit_a(w, c)
        y = np.zeros((m, cols_n), np.uint8)
        lib.graphopt_qconv_implicit(_ptr(x), ctypes.byref(shape), ctypes.c_int64(m), _ptr(ap),
                                    ctypes.c_uint8(x_pad), flip, ctypes.byref(e), _ptr(y),
                                    _ptr(work), slots)
        got.append(y)
        expected.append(expected_n)
    return np.stack(got), np.stack(expected)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("m, flip", [(16, 0), (13, 1)])
def test_implicit_conv_matches_reference(libraries, path, case, m, flip):
    got, expected = _run(_lib(libraries, path), case, m, 3, flip)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", [(16, 56, 56, 3, 1, 1, 1), (5, 11, 29, 3, 1, 1, 1)])
def test_implicit_conv_residual_add_batch(libraries, path, case):
    """A fused Relu and residual QLinearAdd (the vector epilogue's masked row tails), 2 images
    through the same work memory."""
    got, expected = _run(_lib(libraries, path), case, 24, 8, 0, residual=True, batch=2)
    np.testing.assert_array_equal(got, expected)


def test_implicit_conv_two_threads(libraries, tmp_path):
    """Built with OpenMP and given 2 slots: the bits of the single-threaded scalar build."""
    lib = ctypes.CDLL(str(_build(tmp_path, "omp", ["-O3", "-march=native", "-fopenmp"])))
    for case, m in [((64, 56, 56, 3, 1, 1, 1), 64), ((32, 28, 28, 3, 1, 1, 1), 40)]:
        two, expected = _run(lib, case, m, 5, 0, slots=2)
        np.testing.assert_array_equal(two, expected)


def test_pack_implicit_a_orders_taps_outer():
    """Weight (r, c, tap) lands at k = tap * 4 * ceil(C / 4) + c of pack_a's layout."""
    c, taps, m = 5, 9, 4
    w = np.arange(m * c * taps, dtype=np.int64).reshape(m, c * taps) % 127
    ordered = np.zeros((m, taps * 8), np.int8)
    for ci in range(c):
        for t in range(taps):
            ordered[:, t * 8 + ci] = w[:, ci * taps + t]
    np.testing.assert_array_equal(packing.pack_implicit_a(w.astype(np.int8), c),
                                  packing.pack_a(ordered))


def _grouped_residual_model() -> onnx.ModelProto:
    """x [2, 6, 20, 18] -> grouped 3x3 Conv (2 groups of 3 channels: not a multiple of 4) + Relu
    -> 3x3 Conv + the Relu's output (a fused residual add) -> Relu -> 1x1 Conv: the 3x3 ones
    run implicitly."""
    rng = np.random.default_rng(2)

    def init(name: str, shape: tuple, scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    n = helper.make_node
    nodes = [n("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], group=2),
             n("Relu", ["c0"], ["r0"]),
             n("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             n("Add", ["c1", "r0"], ["a1"]),
             n("Relu", ["a1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["y"])]  # quantizes the Add's output
    graph = helper.make_graph(
        nodes, "implicit", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 20, 18])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 20, 18])],
        [init("w0", (8, 3, 3, 3), 0.3), init("b0", (8,), 0.1), init("w1", (8, 8, 3, 3), 0.2),
         init("b1", (8,), 0.1), init("w2", (4, 8, 1, 1), 0.3), init("b2", (4,), 0.1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_implicit_conv_in_a_model_matches_onnxruntime():
    """Through the compiler (packing, emitter, arena): grouped, channels past a multiple of 4,
    batch 2 and a fused residual add, portable and native builds against onnxruntime's QDQ
    model."""
    model = _grouped_residual_model()
    qdq = quantize_with_onnxruntime(model, random_feeds(model, 4, seed=0))
    graph = absorb_qdq_nodes(onnx_io.import_model(qdq))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_io.export_model(graph).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    for target in ("portable", "native"):
        compiled = compile_model(graph, target=target)
        steps = [s for s in compiled.programs()[0].steps if s.op_type == "Int8Conv"]
        implicit = [s for s in steps if packing.implicit_applies(
            *(getattr(QConvShape.of(s), f) for f in ("kernel", "strides", "dilations", "out_hw")))]
        assert len(implicit) == 2 and len(implicit[1].inputs) == 5  # the fused residual add
        for feed in random_feeds(model, 2, seed=7):
            np.testing.assert_array_equal(compiled.run(feed)[0], session.run(None, feed)[0])
