"""Quantizing small models: QDQ export that stock onnxruntime runs, Value.quant, dynamic, pass API,
exclusion, and the --max-drop fallback."""
from collections import Counter

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import graphopt
from graphopt.cli import main
from graphopt.errors import BadInputError
from graphopt.optimizer import optimize
from graphopt.quantization.histogram import StreamingHistogram
from graphopt.testing import sample_models_dir
from quant_helpers import conv_net, conv_samples, cosine, mlp, mlp_samples, run, save_npz


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _fused_ops(model: onnx.ModelProto, tmp_path) -> Counter:
    """The ops onnxruntime runs after its own QDQ fusions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return _ops(onnx.load(tmp_path / "fused.onnx"))


def test_conv_net_qdq_runs_in_onnxruntime_and_fuses(tmp_path):
    float_model = conv_net()
    result = graphopt.quantize(float_model, {"x": conv_samples(16)}, per_channel=True)
    graph = result.graph
    w1 = graph.value("w1")
    assert w1.quant is not None and w1.quant.axis == 0 and w1.quant.scale.shape == (8,)
    assert graph.value("x").quant.zero_point.dtype == np.uint8
    assert graph.value("b1").quant.zero_point.dtype == np.int32
    qdq = result.export()
    onnx.checker.check_model(qdq)
    assert _ops(qdq)["QuantizeLinear"] == 6 and _ops(qdq)["Conv"] == 2
    fused = _fused_ops(qdq, tmp_path)
    assert fused["QLinearConv"] == 2 and "Conv" not in fused
    assert _initializer(qdq, "w1_quantized").dtype == np.int8
    assert np.abs(_initializer(qdq, "w1_quantized")).max() <= 63  # 7-bit weights by default
    assert _initializer(qdq, "b1_quantized").dtype == np.int32
    x = conv_samples(4, seed=7)[:, 0]
    want = run(float_model, {"x": x}, optimize=False)[0]
    fused = run(qdq, {"x": x})[0]  # onnxruntime's QLinearConv/QGemm
    simulated = run(qdq, {"x": x}, optimize=False)[0]  # the same QDQ model in float
    assert cosine(want, fused) > 0.99
    np.testing.assert_allclose(fused, simulated, atol=0.05 * np.abs(want).max())
    assert (want.argmax(1) == fused.argmax(1)).mean() >= 0.75


def test_qdq_export_leaves_the_ir_float_and_the_interface_unchanged():
    result = graphopt.quantize(conv_net(), {"x": conv_samples(4)})
    assert result.graph.value("w1").const.dtype == np.float32
    qdq = result.export()
    assert [i.name for i in qdq.graph.input] == ["x"] and [o.name for o in qdq.graph.output] == ["y"]
    conv1 = next(n for n in qdq.graph.node if n.name == "conv1")
    assert conv1.input[0] == "x_dequantized" and conv1.input[1] == "w1"


def test_mlp_static_quantization_keeps_outputs_close():
    float_model = mlp()
    result = graphopt.quantize(float_model, {"x": mlp_samples(32)}, method="percentile")
    qdq = result.export()
    assert result.report.quantized == 2
    for x in mlp_samples(8, seed=5):
        assert cosine(run(float_model, {"x": x})[0], run(qdq, {"x": x})[0]) > 0.99


def test_dynamic_quantization_matmul_integer_pattern():
    float_model = mlp()
    result = graphopt.quantize(float_model, dynamic=True)
    ops = _ops(result.export())
    assert ops["DynamicQuantizeLinear"] == 2 and ops["MatMulInteger"] == 2 and "MatMul" not in ops
    weights = [v for v in result.graph.initializers.values() if v.quant is not None]
    assert len(weights) == 2 and all(v.const.dtype == np.int8 for v in weights)
    for x in mlp_samples(4, seed=3):
        assert cosine(run(float_model, {"x": x})[0], run(result.export(), {"x": x})[0]) > 0.99


def test_pass_api_and_exclude(tmp_path):
    calib = save_npz(tmp_path / "c.npz", x=conv_samples(4))
    graph = optimize(conv_net(), passes=f"quantize-int8{{calib={calib},exclude=conv1;fc}}").graph
    assert graph.value("w1").quant is None and graph.value("w3").quant is None
    assert graph.value("w2").quant is not None
    assert "quantize-int8" in graphopt.pass_api.registered_passes()
    with pytest.raises(BadInputError, match="nope"):
        graphopt.quantize(conv_net(), {"x": conv_samples(2)}, exclude=["nope"])


def test_max_drop_returns_the_sensitive_layer_to_float():
    """An outlier in the calibration data ruins mm1's input scale (and only that: w1 ignores the
    outlier's feature), so mm1, and only mm1, must go back to float."""
    model = mlp()
    w1 = next(t for t in model.graph.initializer if t.name == "w1")
    weights = onnx.numpy_helper.to_array(w1).copy()
    weights[0] = 0.0
    w1.CopyFrom(onnx.numpy_helper.from_array(weights, "w1"))
    calib = mlp_samples(16)
    calib[0, 0, 0] = 5000.0
    evaluation = {"x": mlp_samples(32, seed=9)}
    plain = graphopt.quantize(model, {"x": calib}, eval=evaluation)
    assert plain.report.drop > 5.0
    result = graphopt.quantize(model, {"x": calib}, eval=evaluation, max_drop=5.0)
    report = result.report
    assert [s.layer for s in report.fallback] == ["mm1"]
    assert report.fallback[0].cost > 5.0 and report.drop <= 5.0
    assert report.layers[0].name == "mm1" and report.layers[0].rank == 1
    assert result.graph.value("x").quant is None and result.graph.value("w2").quant is not None
    assert any("kept in float" in line for line in report.lines())


def test_report_tables():
    report = graphopt.quantize(conv_net(), {"x": conv_samples(8)}, sensitivity=True).report
    assert [o.name for o in report.outputs] == ["y"] and report.outputs[0].top1_agreement is not None
    assert {t.kind for t in report.tensors} == {"activation", "weight", "bias"}
    assert sorted(l.rank for l in report.layers) == list(range(1, len(report.layers) + 1))
    text = "\n".join(report.lines())
    assert "outputs vs float" in text and "sensitivity rank" in text


def test_cli_quantize_writes_a_model(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save_model(conv_net(), src)
    calib = save_npz(tmp_path / "c.npz", pics=conv_samples(8))
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["quantize", str(src), "-o", str(out), "--calib",
                                       f"{calib}:pics=x", "--per-channel", "--method", "entropy"])
    assert result.exit_code == 0, result.output
    assert "quantized 6 of 6 layers" in result.stdout and out.exists()
    onnx.checker.check_model(onnx.load(out))


@pytest.mark.skipif(not (sample_models_dir() / "digits_cnn.onnx").exists(),
                    reason="sample models not available")
def test_digits_cnn_int8_top1_within_half_a_point():
    models = sample_models_dir()
    data = np.load(models / "digits_test.npz")
    result = graphopt.quantize(models / "digits_cnn.onnx",
                               str(models / "digits_test.npz") + ":calib=input", per_channel=True)
    qdq = result.export()
    float_top1 = (run(onnx.load(models / "digits_cnn.onnx"), {"input": data["images"]})[0]
                  .argmax(1) == data["labels"]).mean()
    int8_top1 = (run(qdq, {"input": data["images"]})[0].argmax(1) == data["labels"]).mean()
    assert 100 * (float_top1 - int8_top1) <= 0.5


def test_streaming_histogram_doubling_is_exact():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(0, s, 500) for s in (0.1, 1.0, 7.0)]
    hist = StreamingHistogram(bins=64)
    for chunk in chunks:
        hist.update(chunk)
    direct, _ = np.histogram(np.concatenate(chunks).astype(np.float32), bins=hist.edges)
    np.testing.assert_array_equal(hist.counts, direct)
    lo, hi = hist.range("minmax")
    assert lo == min(c.min() for c in chunks).astype(np.float32)
    plo, phi = hist.range("percentile", 99.0)
    assert lo < plo < 0 < phi < hi


def test_s8_activations_and_full_range_weights():
    float_model = conv_net()
    result = graphopt.quantize(float_model, {"x": conv_samples(8)}, activation_type="s8",
                               reduce_range=False)
    assert result.graph.value("p1").quant.zero_point.dtype == np.int8
    assert int(result.graph.value("p1").quant.zero_point) == 0  # s8 activations are symmetric
    qdq = result.export()
    assert np.abs(_initializer(qdq, "w2_quantized")).max() == 127
    x = conv_samples(2, seed=4)[:, 0]
    assert cosine(run(float_model, {"x": x})[0], run(qdq, {"x": x}, optimize=False)[0]) > 0.99


def test_layers_sharing_a_quantized_input_are_one_sensitivity_group():
    """Two MatMuls reading the same x (as Q/K/V projections do): x stays int8 while either is,
    so they are ranked and returned to float together."""
    rng = np.random.default_rng(0)
    w = [onnx.numpy_helper.from_array(rng.normal(0, 0.3, (16, 4)).astype(np.float32), f"w{i}")
         for i in (1, 2)]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w1"], ["a"], name="q"),
         onnx.helper.make_node("MatMul", ["x", "w2"], ["b"], name="k"),
         onnx.helper.make_node("Add", ["a", "b"], ["y"], name="add")], "shared",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], w)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    report = graphopt.quantize(model, {"x": mlp_samples(8)}, sensitivity=True).report
    assert [layer.members for layer in report.layers] == [("q", "k")]
    assert report.layers[0].name == "q (+1 sharing its input)"


def test_dynamic_quantization_of_gemm_with_transposed_weight_and_bias():
    float_model = conv_net()  # its "fc" is Gemm(transB=1) with a bias
    result = graphopt.quantize(float_model, dynamic=True, per_channel=True)
    assert result.report.quantized == 1
    qdq = result.export()
    assert "Gemm" not in _ops(qdq) and _ops(qdq)["MatMulInteger"] == 1
    x = conv_samples(3, seed=2)[:, 0]
    want, got = run(float_model, {"x": x})[0], run(qdq, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max())
