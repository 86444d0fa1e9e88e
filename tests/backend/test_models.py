"""The shared sample models compiled to C and compared with onnxruntime (graphopt.numerics' rule)."""
from __future__ import annotations

from pathlib import Path

from graphopt.testing import sample_models_dir
import numpy as np
import onnx
import pytest

from graphopt.backend import compile as compile_model
from graphopt.numerics import run_onnxruntime
from graphopt.testing import assert_outputs_match

MODELS = sample_models_dir()
pytestmark = pytest.mark.skipif(not (MODELS / "mlp.onnx").is_file(), reason="sample models missing")


def _compare(compiled, model_path: Path, feeds: dict) -> None:
    got = compiled.run(feeds)
    model = onnx.load(str(model_path))
    want = run_onnxruntime(model, feeds)
    assert_outputs_match([o.name for o in model.graph.output], want, got, context=model_path.stem)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_mlp_matches_onnxruntime(target):
    compiled = compile_model(MODELS / "mlp.onnx", optimize=False, target=target)
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    _compare(compiled, MODELS / "mlp.onnx", {"input": x})
    assert compiled.report.fused_epilogues == 2  # both ReLUs run inside the Gemm epilogues


@pytest.mark.parametrize("target", ["native", "portable"])
def test_digits_cnn_dynamic_batch(target):
    data = np.load(MODELS / "digits_test.npz")
    compiled = compile_model(MODELS / "digits_cnn.onnx", optimize=False, target=target)
    assert compiled.report.input_shapes == ((1, 1, 8, 8),)  # symbolic batch defaults to 1
    for batch in (1, 5):
        _compare(compiled, MODELS / "digits_cnn.onnx", {"input": data["images"][:batch]})
    images = data["images"]
    logits = compiled.run({"input": images})[0]
    accuracy = float((logits.argmax(axis=1) == data["labels"]).mean())
    assert accuracy == pytest.approx(0.9924, abs=0.003)  # the model's documented fp32 accuracy
    assert {r.input_shapes for r in compiled.reports()} == {((1, 1, 8, 8),), ((5, 1, 8, 8),),
                                                            (images.shape,)}


def test_digits_cnn_through_the_optimizer():
    """compile() runs graphopt's -O2 pipeline by default."""
    compiled = compile_model(MODELS / "digits_cnn.onnx", threads=1)
    x = np.load(MODELS / "digits_test.npz")["images"][:3]
    _compare(compiled, MODELS / "digits_cnn.onnx", {"input": x})


def test_light_squeezenet_with_random_weights():
    """A model from onnx's light zoo (weights made by ConstantOfShape), given random weights so
    the comparison is meaningful: Concat, Dropout, ceil-mode MaxPool, GlobalAveragePool."""
    path = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
    model = onnx.version_converter.convert_version(onnx.load(str(path)), 13)
    model = randomize_constant_of_shape(model)
    compiled = compile_model(model, optimize=False)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = compiled.run([x])[0]
    want = run_onnxruntime(model, {"data_0": x})[0]
    assert_outputs_match([model.graph.output[0].name], [want], [got], context=path.stem)


def randomize_constant_of_shape(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace each ConstantOfShape with a random initializer of the same shape: weights
    uniform in +-1/sqrt(fan_in) (fan_in = product of dims after the first)."""
    from onnx import numpy_helper

    rng = np.random.default_rng(seed)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    kept = []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in consts:
            shape = [int(d) for d in consts[node.input[0]]]
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            bound = 1.0 / np.sqrt(fan_in)
            low = 0.5 if len(shape) == 1 else -bound  # 1-D: positive (batch-norm variances)
            array = rng.uniform(low, max(bound, 1.0) if len(shape) == 1 else bound, shape)
            model.graph.initializer.append(numpy_helper.from_array(array.astype(np.float32),
                                                                   node.output[0]))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def test_api_forms_of_inputs_and_outputs():
    from graphopt import onnx_io

    graph = onnx_io.load(MODELS / "digits_cnn.onnx")
    before = str(graph)
    compiled = compile_model(graph, dims={"batch": 2})
    assert str(graph) == before  # a Graph argument is optimized on a copy
    assert compiled.report.input_shapes == ((2, 1, 8, 8),)
    x = np.load(MODELS / "digits_test.npz")["images"][:2]
    by_name = compiled.run({"input": x})
    by_list = compiled.run([x])
    single = compiled.run(x)
    chosen = compiled.run({"input": x}, output_names=[compiled.output_names[0]])
    for other in (by_list, single, chosen):
        np.testing.assert_array_equal(by_name[0], other[0])
    strided = np.asfortranarray(x)  # non-contiguous input is copied, not misread
    np.testing.assert_array_equal(compiled.run([strided])[0], by_name[0])
