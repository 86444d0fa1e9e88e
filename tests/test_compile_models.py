"""Real models through the C backend, compared with onnxruntime by graphopt.numerics' rule.

The onnx `light` architectures' weights are made by ConstantOfShape nodes (uniform values, so every output is the same
number and a match would prove little). After -O2 folds them into initializers, each float weight
is replaced by scaled random values, then the model is compiled (optimize=False: the graph is
already optimized) and compared at the fp32 tolerance.
"""
import numpy as np
import pytest

from graphopt import onnx_io
from graphopt.backend import compile as compile_model
from graphopt.numerics import random_inputs, run_onnxruntime
from graphopt.optimizer import optimize
from graphopt.testing import (
    assert_outputs_match,
    light_models_dir,
    randomize_weights,
    sample_models_dir,
)

MODELS = sorted(light_models_dir().glob("*.onnx"))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_light_model_compiles_and_matches(path, tmp_path):
    graph = optimize(path, level=2).graph
    randomize_weights(graph)
    reference_model = onnx_io.export_model(graph)
    feeds = random_inputs(graph, seed=1)
    want = run_onnxruntime(reference_model, feeds)
    compiled = compile_model(graph, optimize=False, threads=1)
    got = compiled.run(feeds)
    names = [o.name for o in graph.outputs]
    for name, w in zip(names, want):
        assert np.std(w) > 0 or w.size == 1, f"{name}: constant output, the check proves nothing"
    assert_outputs_match(names, want, got, context=path.stem)


SHARED = [p for p in sorted(sample_models_dir().glob("*.onnx"))
          if p.stem in ("resnet18", "mobilenet_v2", "mobilenet_v2_raw", "minilm")]


@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.stem)
def test_sample_model_compiles_and_matches(path):
    """The larger sample models (real exporter output), -O2 then C, against onnxruntime on the
    original model, at the fp32 tolerance."""
    original = onnx_io.read_model(path)
    feeds = random_inputs(onnx_io.load(original), seed=2)
    want = run_onnxruntime(original, feeds)
    got = compile_model(path, level=2, threads=1).run(feeds)
    assert_outputs_match([o.name for o in original.graph.output], want, got, context=path.stem)
