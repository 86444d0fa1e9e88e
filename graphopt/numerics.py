"""Numerical reference: run a model in onnxruntime and compare outputs with per-dtype tolerances.

Used by `--verify`, `--bisect` (NumericCheck instrument) and the tests.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx

from graphopt.errors import BadInputError, VerificationError
from graphopt.ir.graph import Graph
from graphopt.onnx_io.exporter import initializer_bytes, save_model
from graphopt.inputs import check_inputs
from graphopt.ir.types import DType
from graphopt.pass_api import PassCall
from graphopt.pass_manager import Instrument, PassRecord

# (rtol, atol) per output dtype. fp32 fused chains reassociate sums, hence not bit-exact.
TOLERANCES: dict[DType, tuple[float, float]] = {
    DType.FLOAT: (1e-4, 1e-5),
    DType.DOUBLE: (1e-9, 1e-12),
    DType.FLOAT16: (1e-2, 1e-3),
    DType.BFLOAT16: (2e-2, 1e-2),
}
DEFAULT_DIM = 1


def random_inputs(graph: Graph, seed: int = 0, dims: Mapping[str, int] | None = None,
                  ) -> dict[str, np.ndarray]:
    """Random feeds for every graph input; symbolic dims take `dims[name]` or 1.

    Integer inputs get small non-negative values so index-like inputs (token ids) stay valid.
    """
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    feeds = {}
    for value in graph.inputs:
        if value.type is None or value.type.shape is None:
            raise BadInputError(f"input '{value.name}' has no known shape; pass --inputs file.npz")
        shape = [d if isinstance(d, int) else dims.get(d or "", DEFAULT_DIM) for d in value.type.shape]
        np_type = value.type.dtype.numpy
        if value.type.dtype == DType.BOOL:
            feeds[value.name] = np.asarray(rng.random(shape) > 0.5)
        elif np.issubdtype(np_type, np.integer):
            feeds[value.name] = np.asarray(rng.integers(0, 2, size=shape)).astype(np_type)
        else:
            feeds[value.name] = np.asarray(rng.standard_normal(shape)).astype(np_type)
    return feeds


def load_inputs(path: str | os.PathLike, graph: Graph) -> dict[str, np.ndarray]:
    """Inputs from an .npz file, keyed by input name, checked against the graph's inputs."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"inputs file {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
    except Exception as err:
        raise BadInputError(f"inputs file {path}: not a readable .npz ({err})") from None
    names = [v.name for v in graph.inputs]
    extra = [k for k in feeds if k not in names]
    if extra:  # an .npz may carry more arrays (labels...): keep only the model's inputs
        feeds = {n: feeds[n] for n in names if n in feeds}
    try:
        arrays = check_inputs(graph.inputs, feeds)
    except BadInputError as err:
        raise BadInputError(f"inputs file {path}: {err}") from None
    return dict(zip(names, arrays))


def run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                    optimize: bool = False, threads: int = 0) -> list[np.ndarray]:
    """Run in onnxruntime (graph optimizations off by default, so ORT does not hide our bugs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory(prefix="graphopt-ort-") as tmp:
        if initializer_bytes(model) > 1_000_000_000:
            path = str(Path(tmp) / "model.onnx")
            save_model(model, path)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        else:
            session = ort.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
        return session.run(None, dict(feeds))


@dataclass(frozen=True)
class Mismatch:
    output: str
    max_abs: float
    max_rel: float
    ok: bool


def compare_outputs(names: Sequence[str], expected: Sequence[np.ndarray],
                    actual: Sequence[np.ndarray]) -> list[Mismatch]:
    """Per output: max abs/rel error and whether it is within the dtype's tolerance."""
    result = []
    for name, want, got in zip(names, expected, actual):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape or want.dtype != got.dtype:
            result.append(Mismatch(name, float("inf"), float("inf"), False))
            continue
        if want.dtype.kind not in "fc":
            bad = not np.array_equal(want, got)
            result.append(Mismatch(name, float(bad), float(bad), not bad))
            continue
        rtol, atol = TOLERANCES.get(DType.from_numpy(want.dtype), (1e-4, 1e-5))
        w, g = want.astype(np.float64), got.astype(np.float64)
        same_nan = np.isnan(w) == np.isnan(g)
        finite = np.isfinite(w) & np.isfinite(g)
        diff = np.where(finite, np.abs(w - g), 0.0)
        abs_err = float(diff.max(initial=0.0))
        rel_err = float((diff / np.maximum(np.abs(w), 1e-30)).max(initial=0.0))
        inf_ok = np.array_equal(w[~finite & ~np.isnan(w)], g[~finite & ~np.isnan(w)])
        ok = bool(same_nan.all() and inf_ok and np.all(diff <= atol + rtol * np.abs(w)))
        result.append(Mismatch(name, abs_err, rel_err, ok))
    return result


def format_mismatches(mismatches: Sequence[Mismatch]) -> str:
    bad = [m for m in mismatches if not m.ok] or list(mismatches)
    return "; ".join(f"{m.output}: max abs err {m.max_abs:.3g}, max rel err {m.max_rel:.3g}"
                     for m in bad)


class NumericCheck(Instrument):
    """After each pass that changed the graph, run it in onnxruntime and compare with the reference
    outputs of the input model; raise VerificationError naming the first pass that diverges."""

    def __init__(self, feeds: Mapping[str, np.ndarray], reference: Sequence[np.ndarray],
                 output_names: Sequence[str]):
        self.feeds, self.reference, self.output_names = dict(feeds), list(reference), list(output_names)
        self.checked = 0

    def after_pass(self, call: PassCall, graph: Graph, record: PassRecord) -> None:
        if not record.changed:
            return
        from graphopt.onnx_io.exporter import export_model

        self.checked += 1
        got = run_onnxruntime(export_model(graph), self.feeds)
        mismatches = compare_outputs(self.output_names, self.reference, got)
        if not all(m.ok for m in mismatches):
            raise VerificationError(f"pass '{call.name}' changed the outputs: "
                                    f"{format_mismatches(mismatches)}")
