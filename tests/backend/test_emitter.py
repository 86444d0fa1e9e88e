"""The emission scaffolding on its own: strides, coalescing, loop nests, expressions, registry,
and the C text of a small kernel (golden)."""
from __future__ import annotations

import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import make_model
from graphopt.backend.c import exprs
from graphopt.backend.c.emitter import (CEmitter, broadcast_strides, coalesce, contiguous_strides,
                                        index, unravel)
from graphopt.backend.c.registry import register_op, registered_ops
from graphopt.backend.c.target import NATIVE, PORTABLE
from graphopt.ir.types import DType


def test_strides_and_broadcasting():
    assert contiguous_strides((2, 3, 4)) == [12, 4, 1]
    assert broadcast_strides((3, 1), (2, 3, 4)) == [0, 1, 0]
    assert broadcast_strides((), (2, 3)) == [0, 0]
    with pytest.raises(ValueError):
        broadcast_strides((3,), (2, 4))


def test_coalesce_merges_contiguous_runs_and_drops_unit_dims():
    shape, (out, a, b) = coalesce((2, 3, 4), [12, 4, 1], [12, 4, 1], [0, 0, 1])
    assert shape == (6, 4) and out == [4, 1] and a == [4, 1] and b == [0, 1]
    shape, (out, a) = coalesce((2, 1, 3, 4), [12, 12, 4, 1], [12, 12, 4, 1])
    assert shape == (24,) and out == [1] and a == [1]
    assert coalesce((), [])[0] == ()


def test_index_and_unravel():
    assert index(["i0", "0", "i2"], [12, 4, 1]) == "i0 * 12 + i2"
    assert index(["i0"], [0]) == "0"
    assert index(["i0"], [1], offset=5) == "5 + i0"
    assert unravel("row", (2, 8), (0, 1)) == "(row % 8)"
    assert unravel("row", (2, 8), (8, 1)) == "(row / 8) * 8 + (row % 8)"
    assert unravel("col", (5,), (0,)) == "0"


def test_loop_nest_golden():
    em = CEmitter(NATIVE)
    assert 2 * 200000 * 4 >= NATIVE.parallel_min_bytes  # 1.6 MB: above the grain rule
    with em.loops((2, 1, 200000), parallel=True) as idx:
        em.line(f"y[{index(idx, [200000, 200000, 1])}] = 0;")
    assert em.text() == (
        "#pragma omp parallel for schedule(static) collapse(2)\n"
        "for (int64_t i0 = 0; i0 < 2; ++i0) {\n"
        "    for (int64_t i1 = 0; i1 < 200000; ++i1) {\n"
        "        y[i0 * 200000 + i1] = 0;\n"
        "    }\n"
        "}\n")
    small = CEmitter(NATIVE)
    half = NATIVE.parallel_min_bytes // 16  # 2 x half floats: half the grain, one thread
    with small.loops((2, half), parallel=True):
        pass
    assert "pragma" not in small.text()
    serial = CEmitter(PORTABLE)
    with serial.loops((2, 70000), parallel=True):
        pass
    assert "pragma" not in serial.text()


def test_expression_table_composes():
    em = CEmitter(NATIVE)
    a, dtype = exprs.render(em, "LeakyRelu", {"alpha": 0.1}, [("x", DType.FLOAT)])
    b, _ = exprs.render(em, "Clip", {}, [(a, dtype), ("(-1.0f)", dtype), None])
    c, bool_type = exprs.render(em, "Less", {}, [(b, dtype), ("y", dtype)])
    assert bool_type == DType.BOOL
    assert em.text() == (
        "const float v0 = (x < 0 ? 0.1f * x : x);\n"
        "const float v1 = ((v0 < (-1.0f) ? (-1.0f) : v0) > 3.4028235e+38f ? 3.4028235e+38f : "
        "(v0 < (-1.0f) ? (-1.0f) : v0));\n"
        "const uint8_t v2 = (v1 < y);\n")
    assert exprs.support_problem("Sqrt", {}, [DType.INT64]) == \
        "Sqrt is not defined for INT64 in the C backend"


def test_registry_refuses_duplicates_and_lists_families():
    ops = registered_ops()
    assert ("", "Conv") in ops and ops[("", "Conv")].module.endswith("ops.conv")
    assert ops[("", "Reshape")].alias and ops[("", "Add")].inplace
    with pytest.raises(ValueError, match="two C emitters for ai.onnx::Relu"):
        register_op("Relu")(lambda k: None)


def test_generated_kernel_reads_like_the_spec():
    from graphopt.backend import compile as compile_model

    model = make_model([helper.make_node("Add", ["A", "B"], ["C"], name="add_bias")],
                       {"A": (TP.FLOAT, [4, 3]), "B": (TP.FLOAT, [3])}, ["C"])
    source = compile_model(model, optimize=False).source
    kernel = source[source.index("/* Add node"):source.index("int graphopt_run")]
    assert kernel == (
        "/* Add node 'add_bias' ('A' f32[4x3], 'B' f32[3]) -> ('C' f32[4x3]) */\n"
        "static int k0_Add(const float* restrict p_A, const float* restrict p_B, "
        "float* restrict p_C) {\n"
        "    for (int64_t i0 = 0; i0 < 4; ++i0) {\n"
        "        for (int64_t i1 = 0; i1 < 3; ++i1) {\n"
        "            const float x0 = p_A[i0 * 3 + i1];\n"
        "            const float x1 = p_B[i1];\n"
        "            const float v0 = (x0 + x1);\n"
        "            p_C[i0 * 3 + i1] = v0;\n"
        "        }\n"
        "    }\n"
        "    return 0;\n"
        "}\n\n")
