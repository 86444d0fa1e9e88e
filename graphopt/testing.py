"""Helpers for tests of passes and backends: build models from ONNX text, compare with onnxruntime.

Public so plugin authors can test their passes the way the built-ins are tested.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnx.parser

from graphopt import onnx_io
from graphopt.ir.graph import Graph
from graphopt.ir.types import DType
from graphopt.numerics import (
    TOLERANCES,
    OutputComparison,
    Tolerance,
    compare_outputs,
    random_inputs,
    run_onnxruntime,
)


def parse_model(text: str) -> onnx.ModelProto:
    """An ONNX model from ONNX text syntax (onnx.parser), checked."""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model)
    return model


def run_passes(model: onnx.ModelProto | Graph, passes: str) -> Graph:
    """Import and run an explicit pass list (with IR verification after each pass)."""
    from graphopt.optimizer import optimize

    return optimize(model, passes=passes).graph


def assert_same_outputs(reference: onnx.ModelProto, graph: Graph, seed: int = 0,
                        feeds: Mapping[str, np.ndarray] | None = None,
                        rtol: float | None = None, atol: float | None = None) -> None:
    """Check the graph (exported, onnx.checker-clean) gives the reference's outputs in onnxruntime.

    The comparison is graphopt.numerics' rule; `rtol`/`atol` replace the dtype's tolerance
    (`rtol=0, atol=0`: bit-exact)."""
    exported = onnx_io.export_model(graph)
    onnx.checker.check_model(exported)
    if feeds is None:
        feeds = random_inputs(onnx_io.load(reference), seed=seed)
    want = run_onnxruntime(reference, feeds)
    got = run_onnxruntime(exported, feeds)
    names = [o.name for o in reference.graph.output]
    assert_outputs_match(names, want, got, tolerance=tolerance_from(rtol, atol))


def assert_outputs_match(names: Sequence[str], expected: Sequence[np.ndarray],
                         actual: Sequence[np.ndarray], tolerance: Tolerance | None = None,
                         context: str = "") -> OutputComparison:
    """Assert every output matches its reference by graphopt.numerics' rule (the dtype's
    tolerance unless `tolerance` is given); the message names the worst element of each
    failing output with its error and tolerance."""
    result = compare_outputs(names, expected, actual, tolerance)
    assert result.ok, f"{context}: {result.describe()}" if context else result.describe()
    return result


def tolerance_from(rtol: float | None = None, atol: float | None = None) -> Tolerance | None:
    """A Tolerance from test-style rtol/atol (a missing one is fp32's); None (= each output's
    dtype decides) when neither is given."""
    if rtol is None and atol is None:
        return None
    fp32 = TOLERANCES[DType.FLOAT]
    return Tolerance(fp32.rtol if rtol is None else rtol, fp32.atol if atol is None else atol)


def sample_models_dir() -> Path:
    """Folder of the sample models: $GRAPHOPT_SAMPLE_MODELS, else `shared/models` beside the
    checkout (the layout CI and the developers' machines use)."""
    import os

    override = os.environ.get("GRAPHOPT_SAMPLE_MODELS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "models"


def sample_model(name: str) -> Path:
    """Path of one file of the sample models; the calling test is skipped (not failed) when the
    folder is not beside this checkout, e.g. in a clone made elsewhere."""
    path = sample_models_dir() / name
    if not path.is_file():
        import pytest

        pytest.skip(f"sample model file {name} not found in {sample_models_dir()} "
                    "(set GRAPHOPT_SAMPLE_MODELS to the folder of ../shared/models)")
    return path


def light_models_dir() -> Path:
    """The real architectures the onnx package ships (weights made by ConstantOfShape nodes)."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def randomize_weights(graph: Graph, seed: int = 0) -> None:
    """Replace float weights in place by N(0, 1/fan_in) values so activations stay in a sane
    range; 1-D parameters (biases, BatchNormalization statistics) get U(0.5, 1.5), positive
    like a variance. For models whose own weights are uniform (the `light` architectures),
    where every output would be the same number and a match would prove little."""
    rng = np.random.default_rng(seed)
    for value in graph.initializers.values():
        array = value.const
        if array.dtype != np.float32 or array.size < 2:
            continue
        if array.ndim == 1:
            value.const = rng.uniform(0.5, 1.5, array.shape).astype(np.float32)
            continue
        fan_in = int(np.prod(array.shape[1:]))
        value.const = (rng.standard_normal(array.shape) / np.sqrt(fan_in)).astype(np.float32)
