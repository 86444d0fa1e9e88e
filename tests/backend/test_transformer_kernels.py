"""The transformer kernels: vectorized exp/erf/tanh (csrc/graphopt_math.h) and the Softmax and
Layer/RMS normalization row kernels (csrc/graphopt_rows.h), on the native and portable targets.

Accuracy of the math functions is held to the bounds graphopt_math.h states, against float64
references over dense grids and edge values; the ops are held to onnxruntime on odd sizes,
masked rows (-inf, -1e4) and extreme inputs.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from backend_helpers import check_against_onnxruntime, make_model
from onnx import TensorProto as TP
from onnx import helper

from graphopt.backend import compile as compile_model
from graphopt.numerics import run_onnxruntime
from graphopt.testing import assert_outputs_match

TARGETS = ["native", "portable"]
RNG = np.random.default_rng(18)
EDGES = np.array([-np.inf, -1e30, -104.0, -88.0, -87.31, -87.29, -50.0, -4.5, -1e-3, -1e-30,
                  0.0, 1e-30, 3e-4, 1e-3, 3.9, 4.1, 8.9, 9.1, 50.0, 88.7, 88.73, 1e30, np.inf,
                  np.nan], dtype=np.float32)


def _grid(low: float, high: float, count: int) -> np.ndarray:
    return np.concatenate([np.linspace(low, high, count, dtype=np.float32), EDGES])


def _unary_outputs(ops: list[str], x: np.ndarray, target: str) -> dict[str, np.ndarray]:
    nodes = [helper.make_node(op, ["X"], [op.lower()]) for op in ops]
    model = make_model(nodes, {"X": (TP.FLOAT, [x.size])}, [op.lower() for op in ops])
    compiled = compile_model(model, optimize=False, target=target)
    for name in ("graphopt_expf", "graphopt_erff", "graphopt_tanhf"):
        assert name in compiled.source  # the table routes float exp/erf/tanh to graphopt_math.h
    return dict(zip((op.lower() for op in ops), compiled.run({"X": x})))


@pytest.mark.parametrize("target", TARGETS)
def test_exp_erf_tanh_within_stated_error(target):
    x = _grid(-110.0, 90.0, 200_003)
    got = _unary_outputs(["Exp", "Erf", "Tanh"], x, target)
    wide = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        exp = np.exp(wide)
    erf = np.array([math.erf(v) if np.isfinite(v) else np.sign(v) for v in wide])
    erf[np.isnan(wide)] = np.nan
    tanh = np.tanh(wide)
    normal = (x >= np.float32(-87.3)) & (exp <= np.finfo(np.float32).max)
    assert np.max(np.abs(got["exp"][normal] - exp[normal]) / exp[normal]) < 1e-7
    assert np.all(got["exp"][x < np.float32(-87.3)] == 0)  # flushed below e^-87.3 (< 1.3e-38)
    assert np.all(np.isposinf(got["exp"][wide > 88.73]))
    assert np.max(np.abs(got["erf"][~np.isnan(wide)] - erf[~np.isnan(wide)])) < 5e-7
    assert np.all(np.abs(got["erf"][np.abs(wide) >= 4]) == 1)
    finite = ~np.isnan(wide)
    assert np.max(np.abs(got["tanh"][finite] - tanh[finite])) < 5e-7
    small = finite & (tanh != 0)
    assert np.max(np.abs(got["tanh"][small] - tanh[small]) / np.abs(tanh[small])) < 5e-7
    assert np.all(np.abs(got["tanh"][np.abs(wide) >= 9]) == 1)
    for name in ("exp", "erf", "tanh"):
        assert np.all(np.isnan(got[name][np.isnan(wide)]))


@pytest.mark.parametrize("target", TARGETS)
def test_activations_built_on_exp_erf_tanh_match_onnxruntime(target):
    """Odd length (no whole vector), values around the clamps of every function."""
    nodes = [helper.make_node("Sigmoid", ["X"], ["sig"]),
             helper.make_node("Gelu", ["X"], ["gelu"]),
             helper.make_node("Gelu", ["X"], ["gelu_tanh"], approximate="tanh"),
             helper.make_node("Elu", ["X"], ["elu"]),
             helper.make_node("Softplus", ["X"], ["softplus"]),
             helper.make_node("Mish", ["X"], ["mish"])]
    model = make_model(nodes, {"X": (TP.FLOAT, [1027])},
                       ["sig", "gelu", "gelu_tanh", "elu", "softplus", "mish"], opset=20)
    x = np.concatenate([np.linspace(-12, 12, 1000, dtype=np.float32),
                        np.array([-1e4, -100, -90, -88, -87.3, -20, -9, -4, -1e-5, 0, 1e-5, 4,
                                  9, 20, 87, 88, 88.7, 89, 100, 1e4, -3e38, 3e38, -1e-38,
                                  1e-38, 0.5, -0.5, 2], dtype=np.float32)])
    check_against_onnxruntime(model, {"X": x}, target=target)


def _softmax_model(shape: list[int], axis: int = -1, dtype: int = TP.FLOAT):
    nodes = [helper.make_node("Softmax", ["X"], ["soft"], axis=axis),
             helper.make_node("LogSoftmax", ["X"], ["log_soft"], axis=axis)]
    return make_model(nodes, {"X": (dtype, shape)}, ["soft", "log_soft"], opset=17)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("n", [1, 3, 17, 40, 129])
def test_softmax_rows_of_odd_lengths(target, n):
    x = (RNG.standard_normal((5, n)) * 6).astype(np.float32)
    x[1] += 80.0  # large logits: exp stays finite only because the max is subtracted
    x[2] -= 1e4
    check_against_onnxruntime(_softmax_model([5, n]), {"X": x}, target=target)


@pytest.mark.parametrize("target", TARGETS)
def test_softmax_masked_rows(target):
    """Attention masks: -1e4 and -inf entries, a fully masked (-inf) row (NaN, as onnxruntime),
    and a row whose max sits among masked entries."""
    x = RNG.standard_normal((6, 37)).astype(np.float32)
    x[0, ::3] = -np.inf
    x[1, 5:] = -1e4
    x[2, :] = -np.inf
    x[3, :] = -1e4
    x[4, :-1] = -np.inf
    x[5, ::2] = -3.4e38
    got = check_against_onnxruntime(_softmax_model([6, 37]), {"X": x}, target=target)
    soft = got[0]
    assert np.all(soft[0, ::3] == 0) and np.all(np.isnan(soft[2]))
    np.testing.assert_allclose(soft[3], np.full(37, 1 / 37, np.float32), rtol=1e-6)
    assert soft[4, -1] == 1 and np.all(soft[4, :-1] == 0)
    np.testing.assert_allclose(np.nansum(soft[[0, 1, 3, 4, 5]], axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_softmax_other_layouts_and_double(target):
    """Not the row kernel: a middle axis (strided rows) and double keep the generic loop."""
    x = RNG.standard_normal((3, 7, 5)).astype(np.float32)
    x[0, :, 1] = -np.inf
    check_against_onnxruntime(_softmax_model([3, 7, 5], axis=1), {"X": x}, target=target)
    check_against_onnxruntime(_softmax_model([4, 9], dtype=TP.DOUBLE),
                              {"X": RNG.standard_normal((4, 9)) * 30}, target=target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("inner", [1, 7, 37, 385])
def test_layer_norm_rows_of_odd_lengths(target, inner):
    nodes = [helper.make_node("LayerNormalization", ["X", "S", "B"], ["y", "mean", "inv"],
                              epsilon=1e-12),
             helper.make_node("LayerNormalization", ["X", "S"], ["y_no_bias"], epsilon=1e-5),
             helper.make_node("LayerNormalization", ["X", "S1", "B"], ["y_broadcast"])]
    inits = {"S": RNG.standard_normal(inner).astype(np.float32),
             "B": RNG.standard_normal(inner).astype(np.float32),
             "S1": np.array([1.5], np.float32)}
    model = make_model(nodes, {"X": (TP.FLOAT, [3, inner])},
                       ["y", "mean", "inv", "y_no_bias", "y_broadcast"], inits, opset=17)
    x = RNG.standard_normal((3, inner)).astype(np.float32) * 3
    x[1] += 1e3  # a large offset: the two-pass variance keeps it exact
    x[2] = 0.25  # a constant row: variance 0, y = bias
    check_against_onnxruntime(model, {"X": x}, target=target)


@pytest.mark.parametrize("target", TARGETS)
def test_layer_norm_on_inner_block_and_rms_norm(target):
    """axis=1 of a rank-3 input (rows of 2 dims) and RMSNormalization (no centering)."""
    nodes = [helper.make_node("LayerNormalization", ["X", "S", "B"], ["y"], axis=1),
             helper.make_node("RMSNormalization", ["X", "S"], ["rms"], axis=-1)]
    inits = {"S": RNG.standard_normal((5, 19)).astype(np.float32),
             "B": RNG.standard_normal((5, 19)).astype(np.float32)}
    model = make_model(nodes[:1], {"X": (TP.FLOAT, [2, 5, 19])}, ["y"], inits, opset=17)
    check_against_onnxruntime(model, target=target)
    rms_init = {"S": RNG.standard_normal(19).astype(np.float32)}
    rms = make_model(nodes[1:], {"X": (TP.FLOAT, [4, 19])}, ["rms"], rms_init, opset=23)
    x = RNG.standard_normal((4, 19)).astype(np.float32)
    got = compile_model(rms, optimize=False, target=target).run({"X": x})[0]
    want = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(got, want * rms_init["S"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_attention_block_with_batched_matmuls_on_threads(target):
    """Scores Q K^T (two activations, per head) scaled, masked (-1e4 / -inf), Softmax, times V:
    heads too small to thread inside the GEMM share the batch between threads (native), each
    with its own scratch and its own copy of the mask-add epilogue."""
    # 8 x 97 x 97 x 32 = 2.4M multiply-adds per MatMul: above the grain rule (2M), threaded;
    # 301K per head: under it, so the heads (not the GEMM) are shared between threads
    heads, seq, dim = 8, 97, 32
    nodes = [helper.make_node("MatMul", ["Q", "Kt"], ["scores"]),
             helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
             helper.make_node("MatMul", ["probs", "V"], ["out"])]
    mask = np.zeros((1, 1, seq, seq), np.float32)
    mask[..., 61:] = -1e4
    mask[..., 5] = -np.inf
    # probs is an output too, so the chain stays unfused (not one FusedAttention step) and the
    # batched MatMuls run (tests/backend/test_fused_attention.py covers the fused step)
    model = make_model(nodes, {"Q": (TP.FLOAT, [1, heads, seq, dim]),
                               "Kt": (TP.FLOAT, [1, heads, dim, seq]),
                               "V": (TP.FLOAT, [1, heads, seq, dim])}, ["out", "probs"],
                       {"scale": np.array(dim ** -0.5, np.float32), "mask": mask})
    feeds = {name: RNG.standard_normal(shape).astype(np.float32) * 3 for name, shape in
             (("Q", (1, heads, seq, dim)), ("Kt", (1, heads, dim, seq)),
              ("V", (1, heads, seq, dim)))}
    compiled = compile_model(model, target=target, threads=2)
    if target == "native":
        assert "epi_b.row_base" in compiled.source and "#pragma omp parallel for" in compiled.source
    want = run_onnxruntime(model, feeds)
    assert_outputs_match(["out", "probs"], want, compiled.run(feeds), context=target)
