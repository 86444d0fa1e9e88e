"""fold-constants: constant subgraphs and static shape arithmetic fold, dynamic parts stay."""
from pathlib import Path

import numpy as np
import onnx
import pytest

from _cleanup_testlib import model_of, op_types, run_checked
from graphopt import onnx_io, optimize
from graphopt.testing import assert_same_outputs, run_passes


def fold(body: str, passes: str = "fold-constants,eliminate-dead-code"):
    return run_checked(body, passes)


def test_constant_chain_folds_into_one_initializer():
    graph = fold("""g (float[3] x) => (float[3] y) <float[3] a = {1, 2, 3}, float[3] b = {4, 5, 6}>
        { c = Mul(a, b) d = Neg(c) y = Add(x, d) }""")
    assert op_types(graph) == ["Add"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].const, [-4, -10, -18])


# Reshape(x, [dim0, dim1 * dim2]) computed from Shape(x) the way exporters write it.
FLATTEN_TAIL = """g (float[{batch},3,4] x) => (float[{batch},12] y)
    <int64 i0 = {{0}}, int64 i1 = {{1}}, int64 i2 = {{2}}, int64[1] ax = {{0}}> {{
        s = Shape(x)
        d0 = Gather(s, i0)
        d1 = Gather(s, i1)
        d2 = Gather(s, i2)
        p = Mul(d1, d2)
        u0 = Unsqueeze(d0, ax)
        u1 = Unsqueeze(p, ax)
        shape = Concat <axis=0> (u0, u1)
        y = Reshape(x, shape)
    }}"""


def test_static_shape_chain_collapses_into_a_constant_reshape():
    graph = fold(FLATTEN_TAIL.format(batch=2))
    assert op_types(graph) == ["Reshape"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].const, [2, 12])


def test_symbolic_batch_stays_symbolic_while_static_dims_fold():
    body = FLATTEN_TAIL.format(batch="N")
    graph = fold(body)
    # Gather(s, 1), Gather(s, 2), their Mul and its Unsqueeze folded; the batch path stays.
    assert op_types(graph) == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]
    concat = graph.nodes[3]
    np.testing.assert_array_equal(concat.inputs[1].const, [12])
    assert graph.outputs[0].shape == ("N", 12)
    exported = onnx_io.export_model(graph)
    dims = exported.graph.output[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 12
    batch_of_five = np.random.default_rng(0).standard_normal((5, 3, 4), np.float32)
    assert_same_outputs(model_of(body), graph, feeds={"x": batch_of_five})


def test_shape_with_start_end_folds_the_static_slice():
    graph = fold("""g (float[N,3,4] x) => (float[N,12] y) <int64[1] minus = {-1}> {
            s = Shape <start=1> (x)
            n = ReduceProd <keepdims=1> (s)
            shape = Concat <axis=0> (minus, n)
            y = Reshape(x, shape)
        }""")
    assert op_types(graph) == ["Reshape"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].const, [-1, 12])


def test_slice_of_partly_symbolic_shape_folds_its_static_part():
    graph = fold("""g (float[N,3,4] x) => (float[N,3,4] y)
        <int64[1] s0 = {1}, int64[1] e0 = {3}, int64[1] ax = {0}> {
            s = Shape(x)
            tail = Slice(s, s0, e0, ax)
            z = ConstantOfShape <value = float[1] {0.5}> (tail)
            y = Add(x, z)
        }""")
    assert op_types(graph) == ["Add"]
    assert graph.nodes[0].inputs[1].shape == (3, 4)


def test_size_of_static_value_folds():
    graph = fold("""g (float[2,3] x) => (float[2,3] y) {
            n = Size(x)
            f = Cast <to=1> (n)
            y = Div(x, f)
        }""")
    assert op_types(graph) == ["Div"]
    assert graph.nodes[0].inputs[1].const == np.float32(6)


def test_folding_refreshes_downstream_types():
    graph = fold("""g (float[2,6] x) => (float[2,2,3] y) <int64[2] a = {2, 2}, int64[1] b = {3}> {
            shape = Concat <axis=0> (a, b)
            r = Reshape(x, shape)
            y = Relu(r)
        }""")
    assert op_types(graph) == ["Reshape", "Relu"]
    assert graph.nodes[0].outputs[0].shape == (2, 2, 3)


def test_integer_arithmetic_matches_onnxruntime():
    graph = fold("""g (int64[4] x) => (int64[4] y)
        <int64[4] a = {-7, 7, -7, 7}, int64[4] b = {2, -2, -2, 2}> {
            q = Div(a, b)
            r = Mod(a, b)
            s = Add(q, r)
            y = Mul(x, s)
        }""")
    assert op_types(graph) == ["Mul"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].const, [-3 + 1, -3 - 1, 3 - 1, 3 + 1])


def test_graph_output_keeps_its_name_when_folded():
    graph = fold("""g (float[2] x) => (float[2] y, float[2] c) <float[2] a = {1, 2}>
        { y = Relu(x) c = Neg(a) }""")
    assert "Neg" not in op_types(graph)
    assert [v.name for v in graph.outputs] == ["y", "c"]
    rerun = optimize(graph, passes="fold-constants")
    assert not rerun.manager.records[0].changed  # the name-keeping Identity is not re-folded


def test_generator_that_broadcasts_an_activation_keeps_the_growth_cap():
    # x + zeros(shape) is how exporters broadcast x: folding it would only bloat the model.
    graph = fold("""g (float[1,64] x) => (float[64,64] y) <int64[2] s = {64, 64}>
        { z = ConstantOfShape <value = float[1] {0.0}> (s) y = Add(x, z) }""")
    assert op_types(graph) == ["ConstantOfShape", "Add"]


def test_generator_read_as_a_bias_folds_above_the_growth_cap():
    graph = fold("""g (float[64,64] x) => (float[64,64] y) <int64[2] s = {64, 64}>
        { z = ConstantOfShape <value = float[1] {1.0}> (s) y = Add(x, z) }""")
    assert op_types(graph) == ["Add"]
    assert graph.nodes[0].inputs[1].shape == (64, 64)


# A Conv whose 16x8x3x3 weight (1152 elements, from an 4-element shape) and BatchNormalization
# statistics come from ConstantOfShape, as in the onnx backend's `light` models.
GENERATED_CONV_BN = """g (float[1,8,6,6] x) => (float[1,16,6,6] y)
    <int64[4] ws = {16, 8, 3, 3}, int64[1] cs = {16}> {
        w = ConstantOfShape <value = float[1] {0.02}> (ws)
        g = ConstantOfShape <value = float[1] {1.5}> (cs)
        c = Conv <pads = [1, 1, 1, 1]> (x, w)
        y = BatchNormalization (c, g, g, g, g)
    }"""


def test_generated_conv_weight_folds_so_batchnorm_folds_into_the_conv():
    graph = fold(GENERATED_CONV_BN, "fold-constants,eliminate-dead-code,fuse-bn-into-conv")
    assert op_types(graph) == ["Conv"]
    assert graph.nodes[0].inputs[1].shape == (16, 8, 3, 3)


@pytest.mark.parametrize("option", ["max_weight_elements=0", "max_weight_elements=1151"])
def test_max_weight_elements_option_keeps_generated_weights(option):
    graph = fold(GENERATED_CONV_BN, f"fold-constants{{{option}}},eliminate-dead-code")
    assert op_types(graph) == ["ConstantOfShape", "Conv", "BatchNormalization"]


def test_weight_passing_through_transpose_and_a_constant_scale_is_a_parameter():
    graph = fold("""g (float[2,48] x) => (float[2,32] y)
        <int64[2] s = {32, 48}, float k = {0.5}> {
            w = ConstantOfShape <value = float[1] {0.25}> (s)
            t = Transpose <perm = [1, 0]> (w)
            scaled = Mul(t, k)
            y = MatMul(x, scaled)
        }""")
    assert op_types(graph) == ["MatMul"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].const, np.full((48, 32), 0.125))


def test_generator_that_is_also_read_as_data_keeps_the_growth_cap():
    graph = fold("""g (float[2,48] x) => (float[2,32] y, float[48,32] z) <int64[2] s = {48, 32}> {
            w = ConstantOfShape <value = float[1] {0.25}> (s)
            y = MatMul(x, w)
            z = Relu(w)
        }""")
    assert op_types(graph) == ["ConstantOfShape", "MatMul", "Relu"]


def test_small_generator_folds():
    graph = fold("""g (float[4,4] x) => (float[4,4] y) <int64[2] s = {4, 4}>
        { z = ConstantOfShape <value = float[1] {1.0}> (s) y = Add(x, z) }""")
    assert op_types(graph) == ["Add"]


def test_max_output_elements_option_is_respected():
    body = """g (float[6] x) => (float[12] y) <float[6] a = {1, 2, 3, 4, 5, 6}>
        { b = Neg(a) y = Concat <axis = 0> (x, b) }"""
    assert op_types(fold(body, "fold-constants{max_output_elements=4}")) == ["Neg", "Concat"]
    assert op_types(fold(body, "fold-constants{max_output_elements=6}")) == ["Concat"]


def test_parameter_reads_have_their_own_cap():
    body = """g (float[6] x) => (float[6] y) <float[6] a = {1, 2, 3, 4, 5, 6}>
        { b = Neg(a) y = Add(x, b) }"""
    assert op_types(fold(body, "fold-constants{max_output_elements=4}")) == ["Add"]
    limited = "fold-constants{max_output_elements=4,max_weight_elements=5}"
    assert op_types(fold(body, limited)) == ["Neg", "Add"]


def test_nondeterministic_ops_are_not_folded():
    # r * 0 makes the output deterministic, so onnxruntime can still compare it.
    graph = fold("""g (float[2] x) => (float[2] y) <float[2] like = {1, 2}, float zero = {0}> {
            r = RandomUniformLike(like)
            z = Mul(r, zero)
            y = Add(x, z)
        }""")
    assert op_types(graph) == ["RandomUniformLike", "Mul", "Add"]


def test_dropout_in_training_mode_is_not_folded():
    graph = fold("""g (float[64] x) => (float[64] y) <float[64] a = {%s}, bool t = {1}> {
            d, m = Dropout <seed=0> (a, , t)
            z = Mul(d, a)
            y = Add(x, z)
        }""" % ", ".join(["0"] * 64))  # a is zero, so y is deterministic for the comparison
    assert op_types(graph) == ["Dropout", "Mul", "Add"]


def test_control_flow_is_not_folded():
    graph = fold("""g (float[2] x) => (float[2] y) <bool c = {1}, float[2] a = {1, 2}> {
            t = If(c) <then_branch = t1 () => (float[2] o) { o = Identity(a) },
                       else_branch = t2 () => (float[2] o) { o = Neg(a) }>
            y = Add(x, t)
        }""")
    assert op_types(graph) == ["If", "Add"]


def test_dead_constant_nodes_are_left_to_dce():
    model = model_of("""g (float[2] x) => (float[2] y) <float[2] a = {1, 2}>
        { unused = Neg(a) y = Relu(x) }""")
    graph = run_passes(model, "fold-constants")
    assert op_types(graph) == ["Neg", "Relu"]
    assert_same_outputs(model, graph)


def test_minilm_shape_chains_fold_away():
    path = Path(__file__).resolve().parents[3] / "shared" / "models" / "minilm.onnx"
    if not path.exists():
        pytest.skip("sample model not available")
    reference = onnx.load(path)
    graph = run_passes(reference, "fold-constants,eliminate-dead-code")
    counts = graph.op_counts()
    assert "Shape" not in counts and "ConstantOfShape" not in counts and "Concat" not in counts
    assert graph.outputs[0].shape == (1, 128, 384)
    assert_same_outputs(reference, graph)
