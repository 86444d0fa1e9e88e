"""Sample and light models as host bundles: built with gcc -std=c99 -Wall -Wextra -Werror
-pedantic -Wvla from their own Makefile, and each example_main checks the outputs against
onnxruntime's (computed at emit time, on the model before graphopt's optimizations)."""
from pathlib import Path

import pytest

from embedded_helpers import drop_final_softmax, run_check

from graphopt import onnx_io
from graphopt.embedded import emit_c
from graphopt.optimizer import optimize
from graphopt.testing import light_models_dir, randomize_weights, sample_model


@pytest.mark.parametrize("name", ["mlp", "digits_cnn"])
def test_sample_model_bundle_matches_onnxruntime(name, tmp_path):
    bundle = emit_c(sample_model(f"{name}.onnx"), tmp_path / name)
    files = set(bundle.files)
    assert {f"{name}.h", f"{name}.c", f"{name}_weights.c", "Makefile", "README.md",
            "example_main.c", "graphopt_kernels.h", "gemm.c"} <= files
    header = (tmp_path / name / f"{name}.h").read_text()
    upper = name.upper()
    assert f"int {name}_run(const float* input, float* " in header
    assert f"#define {upper}_INPUT_SIZE {784 if name == 'mlp' else 64}" in header
    assert f"#define {upper}_ARENA_BYTES {bundle.footprint.arena}" in header
    weights = (tmp_path / name / f"{name}_weights.c").read_text()
    assert f"const uint32_t {name}_weights[" in weights
    assert max(len(line) for line in weights.splitlines()) < 200  # many values per line
    assert "PASS" in run_check(tmp_path / name)


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet"])
def test_light_model_bundle_matches_onnxruntime(name, tmp_path):
    graph = optimize(light_models_dir() / f"light_{name}.onnx", level=2).graph
    randomize_weights(graph)
    model = drop_final_softmax(onnx_io.export_model(graph))
    bundle = emit_c(model, tmp_path / name, prefix=name, optimize=False)
    assert bundle.footprint.macs > 10_000_000
    run_check(Path(bundle.directory))
