"""absorb-qdq: onnxruntime's and graphopt's QDQ files become the same annotated float IR, and
exporting it writes QDQ that onnxruntime runs to exactly the same outputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphopt import onnx_io
from graphopt.backend.int8.ort_qdq import quantize_with_onnxruntime, random_feeds
from graphopt.numerics import run_onnxruntime
from graphopt.testing import run_passes
from tests.backend.int8_models import residual_net

ORT_OPT = {"graph_optimization_level": "all"}


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _roundtrip(qdq: onnx.ModelProto) -> tuple[onnx.ModelProto, object]:
    graph = run_passes(qdq, "absorb-qdq")
    return onnx_io.export_model(graph), graph


def _assert_identical(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict) -> None:
    for x, y in zip(run_onnxruntime(a, feeds), run_onnxruntime(b, feeds)):
        np.testing.assert_array_equal(x, y)


def test_onnxruntime_qdq_roundtrip_is_bit_exact():
    model = residual_net()
    qdq = quantize_with_onnxruntime(model, random_feeds(model, 4))
    exported, graph = _roundtrip(qdq)
    # only the pair making the graph output itself fake-quantized stays (an output keeps its float
    # value in graphopt's representation, so that pair is not an annotation)
    left = [n for n in graph.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert [n.op_type for n in left] == ["QuantizeLinear", "DequantizeLinear"]
    assert left[1].outputs[0] in graph.outputs
    annotated = [v for v in graph.values() if v.quant is not None]
    assert any(v.is_const for v in annotated) and any(not v.is_const for v in annotated)
    assert sorted(_ops(exported)) == sorted(_ops(qdq))
    for feed in random_feeds(model, 3, seed=7):
        _assert_identical(qdq, exported, feed)


def test_graphopt_qdq_gives_the_same_annotations():
    from graphopt.quantization.api import QuantizeOptions, quantize_graph
    model = residual_net()
    graph = onnx_io.import_model(model)
    quantize_graph(graph, {"x": np.stack([f["x"] for f in random_feeds(model, 4)])},
                   None, QuantizeOptions(per_channel=True))
    original = {v.name: v.quant for v in graph.values() if v.quant is not None}
    exported = onnx_io.export_model(graph)
    again, absorbed = _roundtrip(exported)
    found = {v.name: v.quant for v in absorbed.values() if v.quant is not None}
    assert set(found) == set(original)
    for name, params in original.items():
        assert found[name].axis == params.axis, name
        np.testing.assert_array_equal(found[name].scale, params.scale)
        np.testing.assert_array_equal(found[name].zero_point, params.zero_point)
        assert found[name].zero_point.dtype == params.zero_point.dtype
    _assert_identical(exported, again, random_feeds(model, 1, seed=3)[0])


def test_a_float_reader_of_the_quantized_value_keeps_the_pair():
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y, float[4] z) <float s = {0.5}, uint8 zp = {3}> {
            q = QuantizeLinear(x, s, zp)
            d = DequantizeLinear(q, s, zp)
            y = Relu(d)
            z = Neg(x)
        }""")
    graph = run_passes(model, "absorb-qdq")
    assert [n.op_type for n in graph.nodes].count("QuantizeLinear") == 1
    assert all(v.quant is None for v in graph.values())


def test_large_int32_bias_stays_explicit():
    big = np.array([2 ** 30 + 1, 5], np.int32)
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) <int32[2] b = {{{big[0]}, {big[1]}}}, float s = {{1e-3}},
                                        int32 zp = {{0}}> {{
            d = DequantizeLinear(b, s, zp)
            y = Add(x, d)
        }}""")
    graph = run_passes(model, "absorb-qdq")
    assert [n.op_type for n in graph.nodes].count("DequantizeLinear") == 1


@pytest.mark.parametrize("name", ["digits_cnn"])
def test_sample_model_roundtrip(name, tmp_path):
    from graphopt.testing import sample_model
    path = sample_model(f"{name}.onnx")
    model = onnx.load(path)
    qdq = quantize_with_onnxruntime(model, random_feeds(model, 2))
    exported, _ = _roundtrip(qdq)
    _assert_identical(qdq, exported, random_feeds(model, 1, seed=5)[0])
