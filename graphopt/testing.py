"""Helpers for tests of passes and backends: build models from ONNX text, compare with onnxruntime.

Public so plugin authors can test their passes the way the built-ins are tested.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnx.parser

from graphopt import onnx_io
from graphopt.ir.graph import Graph
from graphopt.numerics import compare_outputs, format_mismatches, random_inputs, run_onnxruntime


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
    """Check the graph (exported, onnx.checker-clean) gives the reference's outputs in onnxruntime."""
    exported = onnx_io.export_model(graph)
    onnx.checker.check_model(exported)
    if feeds is None:
        feeds = random_inputs(onnx_io.load(reference), seed=seed)
    want = run_onnxruntime(reference, feeds)
    got = run_onnxruntime(exported, feeds)
    names = [o.name for o in reference.graph.output]
    if rtol is not None or atol is not None:
        for name, w, g in zip(names, want, got):
            np.testing.assert_allclose(g, w, rtol=rtol or 0, atol=atol or 0, err_msg=name)
        return
    mismatches = compare_outputs(names, want, got)
    assert all(m.ok for m in mismatches), format_mismatches(mismatches)


def sample_models_dir() -> Path:
    """Folder of the sample models: $GRAPHOPT_SAMPLE_MODELS, else `shared/models` beside the
    checkout (the layout CI and the developers' machines use)."""
    import os

    override = os.environ.get("GRAPHOPT_SAMPLE_MODELS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "models"


def light_models_dir() -> Path:
    """The real architectures the onnx package ships (weights made by ConstantOfShape nodes)."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
