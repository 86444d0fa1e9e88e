"""Attention chains and GELU chains lowered to one step each (graphopt/backend/fuse_attention.py,
fuse_gelu.py), held to onnxruntime on the export styles of BERT models: heads split by
Reshape + Transpose, scale as Div on the scores or Mul on Q and K, masks added before the
softmax (broadcast per key or full, -inf for padded keys), the Where(IsNaN) guard, and sizes
off the kernel's 4 x 16 tiles."""
from __future__ import annotations

import numpy as np
import pytest
from backend_helpers import make_model, random_feeds
from onnx import TensorProto as TP
from onnx import helper

from graphopt.backend import compile as compile_model
from graphopt.numerics import run_onnxruntime
from graphopt.testing import assert_outputs_match

TARGETS = ["native", "portable"]


def _run(model, feeds=None, target: str = "native"):
    """(steps of the compiled program, its outputs), the outputs held to onnxruntime's."""
    feeds = feeds if feeds is not None else random_feeds(model)
    compiled = compile_model(model, optimize=False, target=target)
    got = compiled.run(feeds)
    assert_outputs_match([o.name for o in model.graph.output], run_onnxruntime(model, feeds), got)
    return compiled.programs()[0].steps, got


def _heads(x: str, out: str, seq: int, heads: int, dim: int, perm: list[int]) -> list:
    """[1, seq, heads * dim] -> Reshape [1, seq, heads, dim] -> Transpose(perm)."""
    return [helper.make_node("Reshape", [x, "heads_shape"], [out + "_r"]),
            helper.make_node("Transpose", [out + "_r"], [out], perm=perm)]


def _bert_attention(seq: int, keys: int, heads: int, dim: int, sdpa: bool, mask: str):
    """One attention layer as exporters write it. sdpa: torch's scaled_dot_product_attention
    export (sqrt(scale) Muls on Q and K^T, Where(IsNaN) guard); else the classic BERT export
    (Div by sqrt(dim) on the scores). mask: "keys" ([1, 1, 1, keys] additive), "full"
    ([1, 1, seq, keys]) or "none"."""
    hidden = heads * dim
    inputs = {"q": (TP.FLOAT, [1, seq, hidden]), "k": (TP.FLOAT, [1, keys, hidden]),
              "v": (TP.FLOAT, [1, keys, hidden])}
    nodes = _heads("q", "qh", seq, heads, dim, [0, 2, 1, 3])
    nodes += _heads("k", "kh", keys, heads, dim, [0, 2, 3, 1])
    nodes += _heads("v", "vh", keys, heads, dim, [0, 2, 1, 3])
    inits = {"heads_shape": np.array([1, -1, heads, dim], np.int64),
             "out_shape": np.array([1, seq, hidden], np.int64)}
    if sdpa:
        inits["root_scale"] = np.array(dim ** -0.25, np.float32)
        nodes += [helper.make_node("Mul", ["qh", "root_scale"], ["qs"]),
                  helper.make_node("Mul", ["kh", "root_scale"], ["ks"]),
                  helper.make_node("MatMul", ["qs", "ks"], ["scores"])]
    else:
        inits["divisor"] = np.array(np.sqrt(dim), np.float32)
        nodes += [helper.make_node("MatMul", ["qh", "kh"], ["raw"]),
                  helper.make_node("Div", ["raw", "divisor"], ["scores"])]
    logits = "scores"
    if mask != "none":
        inputs["mask"] = (TP.FLOAT, [1, 1, 1, keys] if mask == "keys" else [1, 1, seq, keys])
        nodes.append(helper.make_node("Add", ["scores", "mask"], ["masked"]))
        logits = "masked"
    nodes.append(helper.make_node("Softmax", [logits], ["probs"], axis=-1))
    probs = "probs"
    if sdpa:
        inits["zero"] = np.array([0.0], np.float32)
        nodes += [helper.make_node("IsNaN", ["probs"], ["nan"]),
                  helper.make_node("Where", ["nan", "zero", "probs"], ["guarded"])]
        probs = "guarded"
    nodes += [helper.make_node("MatMul", [probs, "vh"], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx_t", "out_shape"], ["y"])]
    return make_model(nodes, inputs, ["y"], inits)


def _mask(shape: list[int], rng: np.random.Generator, fill: float) -> np.ndarray:
    """0 where attended, `fill` on a padded tail of keys; the last query row fully masked."""
    mask = np.zeros(shape, np.float32)
    mask[..., shape[-1] * 2 // 3:] = fill
    if shape[-2] > 1:
        mask[..., -1, :] = fill
    return mask


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("seq,keys,heads,dim,sdpa,mask", [
    (9, 9, 2, 16, True, "full"),       # SDPA export, fully masked row -> zeros
    (7, 13, 3, 20, False, "keys"),     # BERT export, sizes off the 4 x 16 tiles
    (5, 5, 1, 8, True, "none"),
    (20, 24, 2, 32, False, "full"),    # MiniLM-like: 8 x 8 K^T blocks, V rows read in place
])
def test_attention_is_one_step_and_matches(target, seq, keys, heads, dim, sdpa, mask):
    model = _bert_attention(seq, keys, heads, dim, sdpa, mask)
    rng = np.random.default_rng(seq)
    feeds = {name: rng.standard_normal([1, n, heads * dim]).astype(np.float32)
             for name, n in (("q", seq), ("k", keys), ("v", keys))}
    if mask != "none":
        shape = [1, 1, 1, keys] if mask == "keys" else [1, 1, seq, keys]
        fill = -np.inf if sdpa else -1e4
        feeds["mask"] = _mask(shape, rng, fill)
    steps, got = _run(model, feeds, target)
    ops = [s.op_type for s in steps]
    assert ops.count("FusedAttention") == 1
    assert not {"Softmax", "Transpose", "MatMul"} & set(ops)
    if sdpa and mask == "full":
        assert np.all(got[0][0, -1] == 0)  # the fully masked row: NaN probabilities zeroed


def test_rank3_attention_with_scaled_scores():
    """[heads, S, D] operands, K^T by Transpose(perm=[0, 2, 1]), Mul on the scores, no mask;
    a scaled V keeps its Mul (it scales the output, not the scores)."""
    inputs = {n: (TP.FLOAT, [3, 10, 12]) for n in ("q", "k", "v")}
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["raw"]),
             helper.make_node("Mul", ["raw", "scale"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=2),
             helper.make_node("Mul", ["v", "two"], ["v2"]),
             helper.make_node("MatMul", ["probs", "v2"], ["y"])]
    inits = {"scale": np.array([0.3], np.float32), "two": np.array(2.0, np.float32)}
    steps, _ = _run(make_model(nodes, inputs, ["y"], inits))
    assert [s.op_type for s in steps] == ["Mul", "FusedAttention"]


def test_attention_not_fused_when_intermediate_escapes():
    """The probabilities are also a model output: nothing is fused, results still match."""
    model = _bert_attention(6, 6, 2, 8, False, "keys")
    model.graph.output.append(helper.make_tensor_value_info("probs", TP.FLOAT, None))
    steps, _ = _run(model)
    assert "FusedAttention" not in [s.op_type for s in steps]


def _gelu_mlp(tanh: bool):
    """MatMul + bias, then GELU spelled out (erf or tanh form), then a second MatMul."""
    rng = np.random.default_rng(3)
    inits = {"w1": rng.standard_normal([24, 40]).astype(np.float32) * 0.3,
             "b1": rng.standard_normal([40]).astype(np.float32),
             "w2": rng.standard_normal([40, 24]).astype(np.float32) * 0.3,
             "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h"])]
    if tanh:
        inits.update(c=np.array(0.044715, np.float32), three=np.array(3.0, np.float32),
                     root=np.array(np.sqrt(2 / np.pi), np.float32))
        nodes += [helper.make_node("Pow", ["h", "three"], ["cube"]),
                  helper.make_node("Mul", ["cube", "c"], ["cubic"]),
                  helper.make_node("Add", ["h", "cubic"], ["inner"]),
                  helper.make_node("Mul", ["inner", "root"], ["arg"]),
                  helper.make_node("Tanh", ["arg"], ["t"])]
    else:
        inits["sqrt2"] = np.array(np.sqrt(2.0), np.float32)
        nodes += [helper.make_node("Div", ["h", "sqrt2"], ["arg"]),
                  helper.make_node("Erf", ["arg"], ["t"])]
    nodes += [helper.make_node("Add", ["t", "one"], ["t1"]),
              helper.make_node("Mul", ["h", "t1"], ["ht"]),
              helper.make_node("Mul", ["ht", "half"], ["g"]),
              helper.make_node("MatMul", ["g", "w2"], ["y"])]
    return make_model(nodes, {"x": (TP.FLOAT, [2, 9, 24])}, ["y"], inits)


@pytest.mark.parametrize("tanh", [False, True])
def test_gelu_chain_becomes_an_epilogue(tanh):
    steps, _ = _run(_gelu_mlp(tanh))
    assert [s.op_type for s in steps] == ["MatMul", "MatMul"]
    assert [e.op_type for e in steps[0].epilogue] == ["Add", "Gelu"]
    assert steps[0].epilogue[1].attrs == ({"approximate": "tanh"} if tanh else {})
