"""Every sample model and every onnx `light` model: -O3 succeeds, the output passes onnx.checker,
and onnxruntime outputs match the input model's by graphopt.numerics' rule (fp32: 1e-5 +
1e-4 x max(|ref|, rms of the output))."""

import pytest

from graphopt import onnx_io
from graphopt.numerics import random_inputs, run_onnxruntime
from graphopt.optimizer import optimize
from graphopt.testing import assert_outputs_match, light_models_dir, sample_models_dir

LIGHT = light_models_dir()
SHARED = sample_models_dir()
MODELS = sorted(LIGHT.glob("*.onnx")) + sorted(SHARED.glob("*.onnx"))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_optimized_model_is_valid_and_equivalent(path, tmp_path):
    original = onnx_io.read_model(path)
    result = optimize(original, level=3)
    out = tmp_path / "out.onnx"
    onnx_io.save(result.graph, out)  # runs onnx.checker before the file appears
    optimized = onnx_io.read_model(out)
    feeds = random_inputs(onnx_io.load(original), seed=0, dims={"batch": 2})
    names = [o.name for o in original.graph.output]
    comparison = assert_outputs_match(names, run_onnxruntime(original, feeds),
                                      run_onnxruntime(optimized, feeds), context=path.stem)
    print(comparison.describe())  # pytest -s / -rP shows the real error against the tolerance
    assert len(result.graph.nodes) <= len(original.graph.node)
