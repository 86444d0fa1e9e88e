"""simplify-flatten-matmul-add: batched MatMul + bias becomes a Gemm on flattened rows where the
Reshapes it needs merge with neighbouring ones."""
import numpy as np
import pytest

from _fuse_testlib import build, fuse, op_types
from graphopt.testing import assert_same_outputs, run_passes

PASS = "simplify-flatten-matmul-add"
WITH_RESHAPES = PASS + ",fuse-transpose-reshape,remove-identity,eliminate-dead-code"


def _projection(name: str, target: str) -> str:
    return f"""m{name} = MatMul(h, w{name})
            a{name} = Add(b{name}, m{name})
            {name} = Reshape(a{name}, {target})"""


def _qkv(batch: str = "1", target: str = "hs") -> str:
    weights = ", ".join(f"float[16,16] w{n}, float[16] b{n}" for n in "qkv")
    heads = f"float[{batch},8,2,8]"
    return f"""g (float[{batch},8,16] x, {weights}, int64[4] hs)
        => ({heads} q, {heads} k, {heads} v) {{
            h = Relu(x)
            {_projection("q", target)}
            {_projection("k", target)}
            {_projection("v", target)}
        }}"""


QKV_WEIGHTS = [f"{p}{n}" for n in "qkv" for p in "wb"]


def test_query_key_value_projections_share_one_reshape():
    model = build(_qkv(), weights=QKV_WEIGHTS, values={"hs": [1, 8, 2, 8]})
    graph = fuse(model, PASS)
    assert op_types(graph) == ["Relu", "Reshape", "Gemm", "Reshape", "Gemm", "Reshape", "Gemm",
                               "Reshape"]
    assert graph.nodes[1].outputs[0].shape == (8, 16)


def test_copy_entries_of_the_target_are_resolved():
    model = build(_qkv(), weights=QKV_WEIGHTS, values={"hs": [0, 0, 2, 8]})
    graph = fuse(model, PASS)
    assert op_types(graph).count("Gemm") == 3
    targets = [n.inputs[1].const.tolist() for n in graph.nodes[3::2]]
    assert targets == [[1, 8, 2, 8]] * 3


def test_symbolic_batch_with_inferred_target():
    model = build(_qkv(batch="N"), weights=QKV_WEIGHTS, values={"hs": [-1, 8, 2, 8]})
    graph = run_passes(model, PASS)
    assert op_types(graph).count("Gemm") == 3
    x = np.random.default_rng(0).standard_normal((3, 8, 16)).astype(np.float32)
    assert_same_outputs(model, graph, feeds={"x": x}, rtol=1e-4, atol=1e-5)


def test_symbolic_copy_entry_is_left_alone():
    model = build(_qkv(batch="N"), weights=QKV_WEIGHTS, values={"hs": [0, 8, 2, 8]})
    graph = run_passes(model, PASS)
    assert "Gemm" not in op_types(graph)


def test_reshaped_input_read_once_needs_no_new_reshape():
    model = build("""g (float[8,16] x, float[16,4] w, float[4] b, int64[3] s3, int64[1] s1)
        => (float[32] y) {
            r = Reshape(x, s3)
            m = MatMul(r, w)
            a = Add(m, b)
            y = Reshape(a, s1)
        }""", weights=("w", "b"), values={"s3": [2, 4, 16], "s1": [32]})
    graph = fuse(model, WITH_RESHAPES)
    assert op_types(graph) == ["Gemm", "Reshape"]  # Reshape(x, [-1, 16]) of x [8, 16] goes too


@pytest.mark.parametrize("source, bias, tail, out", [
    ("Relu(x)", "[4]", "Reshape(a, s)", "[16,4]"),        # the new input Reshape costs a node
    ("Reshape(x, s3)", "[8,1]", "Reshape(a, s)", "[16,4]"),  # the bias varies per row
    ("Reshape(x, s3)", "[4]", "Relu(a)", "[2,8,4]"),       # nothing absorbs the output Reshape
])
def test_rewrites_that_would_not_save_nodes_are_left_alone(source, bias, tail, out):
    model = build(f"""g (float[2,8,16] x, float[16,4] w, float{bias} b, int64[2] s, int64[3] s3)
        => (float{out} y) {{
            h = {source}
            m = MatMul(h, w)
            a = Add(m, b)
            y = {tail}
        }}""", weights=("w", "b"), values={"s": [16, 4], "s3": [2, 8, 16]})
    graph = fuse(model, PASS)
    assert "Gemm" not in op_types(graph)
