"""The -O2 preset on real models: each simplification fires where the model needs it, and the node
count stays at or below what onnxsim 0.8.1 / onnxslim 0.1.98 leave (their counts, measured with
benchmarks/optimize_vs_peers.py). Outputs are checked against onnxruntime by
tests/test_optimize_models.py for every model."""
from pathlib import Path

import onnx
import pytest

from graphopt.optimizer import optimize

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "models"

# model -> (fewest nodes a peer leaves, ops that must be gone after -O2)
CASES = {
    LIGHT / "light_squeezenet.onnx": (65, {"Flatten", "Reshape", "ConstantOfShape"}),
    LIGHT / "light_densenet121.onnx": (491, {"Mul", "Add", "ConstantOfShape"}),
    LIGHT / "light_resnet50.onnx": (123, {"BatchNormalization", "ConstantOfShape"}),
    LIGHT / "light_inception_v2.onnx": (154, {"BatchNormalization", "Mul", "Add"}),
    SHARED / "minilm.onnx": (230, {"ConstantOfShape", "Shape"}),
}


@pytest.mark.parametrize("path", list(CASES), ids=lambda p: p.stem)
def test_o2_leaves_no_more_nodes_than_the_peers(path):
    if not path.exists():
        pytest.skip(f"{path} not available")
    peers, gone = CASES[path]
    graph = optimize(str(path), level=2).graph
    counts = graph.op_counts()
    assert len(graph.nodes) <= peers, counts
    assert not gone & set(counts), counts


def test_minilm_projections_become_gemms_and_embeddings_fold():
    path = SHARED / "minilm.onnx"
    if not path.exists():
        pytest.skip("sample model not available")
    counts = optimize(str(path), level=2).graph.op_counts()
    # 6 layers x query/key/value; the token-type lookup folds, leaving word embedding + mask.
    assert counts["Gemm"] == 18 and counts["Gather"] == 2
