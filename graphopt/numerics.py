"""Numerical reference: run a model in onnxruntime and compare outputs, by one rule.

The rule (`Tolerance`, `compare_arrays`) is the only output comparison in graphopt: `optimize
--verify`, `--bisect` (the NumericCheck instrument), `graphopt run --verify`, graphopt.testing
and the tests all call it, so a tolerance means the same thing everywhere.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx

from graphopt.errors import BadInputError, VerificationError
from graphopt.inputs import check_inputs
from graphopt.ir.graph import Graph
from graphopt.ir.types import DType
from graphopt.onnx_io.exporter import initializer_bytes, save_model
from graphopt.pass_api import PassCall
from graphopt.pass_manager import Instrument, PassRecord
from graphopt.progress import Progress

log = logging.getLogger(__name__)

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
        if value.default is not None:  # an overridable initializer: its value is valid data
            feeds[value.name] = value.default
            continue
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
        log.warning("inputs file %s: ignoring arrays that are not model inputs: %s", path,
                    ", ".join(extra))
        feeds = {n: feeds[n] for n in names if n in feeds}
    try:
        arrays = check_inputs(graph.inputs, feeds)
    except BadInputError as err:
        raise BadInputError(f"inputs file {path}: {err}") from None
    return dict(zip(names, arrays))


def run_onnxruntime(model: "onnx.ModelProto | str | os.PathLike", feeds: Mapping[str, np.ndarray],
                    optimize: bool = False, threads: int = 0) -> list[np.ndarray]:
    """Run in onnxruntime (graph optimizations off by default, so ORT does not hide our bugs).

    A path is loaded by onnxruntime itself, which maps external data instead of reading it. A
    proto past 1 GB of weights goes through a temporary file with external data (protobuf cannot
    serialize 2 GB), unchecked: onnxruntime validates what it loads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = ["CPUExecutionProvider"]
    if not isinstance(model, onnx.ModelProto):
        return ort.InferenceSession(str(model), options, providers=providers).run(None, dict(feeds))
    with tempfile.TemporaryDirectory(prefix="graphopt-ort-") as tmp:
        if initializer_bytes(model) > 1_000_000_000:
            path = str(Path(tmp) / "model.onnx")
            save_model(model, path, check=False)
            session = ort.InferenceSession(path, options, providers=providers)
        else:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        return session.run(None, dict(feeds))


@dataclass(frozen=True)
class Tolerance:
    """How far a float output may drift: |got - ref| <= atol + rtol * max(|ref|, rms(ref)).

    Reordering a sum (another ISA's SIMD width, FMA contraction, a fused Gemm, Winograd)
    changes each element by about eps * (sum of |terms|), which is the order of the output's
    typical magnitude, not of the element itself: an element that is near zero because its
    terms cancel carries the same absolute noise as its neighbours. So the relative part is
    measured against max(|ref|, rms of the whole output). A real change (a dropped bias, a
    swapped operand, a wrong axis) moves elements by a sizeable fraction of that scale and fails.
    """

    rtol: float
    atol: float

    @property
    def exact(self) -> bool:
        return self.rtol == 0 and self.atol == 0


EXACT = Tolerance(0.0, 0.0)
# Per output dtype; integers, bools and strings must match exactly.
TOLERANCES: dict[DType, Tolerance] = {
    DType.FLOAT: Tolerance(1e-4, 1e-5),
    DType.DOUBLE: Tolerance(1e-9, 1e-12),
    DType.FLOAT16: Tolerance(1e-2, 1e-3),
    DType.BFLOAT16: Tolerance(2e-2, 1e-2),
    DType.COMPLEX64: Tolerance(1e-4, 1e-5),
    DType.COMPLEX128: Tolerance(1e-9, 1e-12),
}


def tolerance_for(dtype: np.dtype) -> Tolerance:
    """The tolerance of an output of numpy `dtype`: from TOLERANCES; the coarsest listed one for
    other floats (float8 ...); exact for integers, bools and strings."""
    kind = _onnx_dtype(np.dtype(dtype))
    if kind in TOLERANCES:
        return TOLERANCES[kind]
    return TOLERANCES[DType.BFLOAT16] if _is_float(np.dtype(dtype)) else EXACT


def _onnx_dtype(dtype: np.dtype) -> DType | None:
    try:
        return DType.from_numpy(dtype)
    except (KeyError, ValueError, TypeError):  # a dtype ONNX has no number for
        return None


def _is_float(dtype: np.dtype) -> bool:
    """numpy floats and complex, and the ml_dtypes floats (bfloat16, float8...: kind 'V')."""
    kind = _onnx_dtype(dtype)
    return dtype.kind in "fc" or (kind is not None and "FLOAT" in kind.name)


@dataclass(frozen=True)
class Element:
    """One element of an output: where it is, both values, its error and the error allowed."""

    index: tuple[int, ...]
    ref: object
    got: object
    error: float
    allowed: float

    def __str__(self) -> str:
        return f"[{', '.join(map(str, self.index))}]: ref {_fmt(self.ref)}, got {_fmt(self.got)}"


def _fmt(value: object) -> str:
    if isinstance(value, (int, float, complex)) and not isinstance(value, bool):
        return format(value, ".7g")
    return repr(value)


@dataclass(frozen=True)
class Comparison:
    """One output against its reference. `ok` is the verdict; `describe()` the one-line why.

    `off` counts elements beyond the tolerance (the verdict); `off_elementwise` counts those
    beyond the stricter per-element rule atol + rtol * |ref| (reported, never failing: it is
    where reordering noise shows first). `worst` is the element closest to (or furthest past)
    its tolerance.
    """

    name: str
    dtype: str
    tolerance: Tolerance
    elements: int = 0
    scale: float = 0.0
    max_abs: float = 0.0
    off: int = 0
    off_elementwise: int = 0
    worst: Element | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.off == 0

    @property
    def max_rel(self) -> float:
        """Largest error relative to the output's scale (rms), the figure the tolerance bounds."""
        return self.max_abs / self.scale if self.scale else (0.0 if not self.max_abs else np.inf)

    def describe(self) -> str:
        if self.problem is not None:
            return f"{self.name}: {self.problem}"
        if self.tolerance.exact:
            return self._describe_exact()
        if self.max_abs == 0:
            return f"{self.name}: all {self.elements} elements identical"
        tol = self.tolerance
        bound = f"{tol.atol:g} + {tol.rtol:g} x max(|ref|, rms {self.scale:.3g})"
        text = f"{self.name}: max abs err {self.max_abs:.3g}"
        if self.worst is not None:
            w = self.worst
            relation = ">" if w.error > w.allowed else "<="
            text += (f"; worst element {w}, err {w.error:.3g} {relation} tolerance "
                     f"{w.allowed:.3g} ({self.dtype}: {bound})")
        if self.off:
            text += f"; {self.off} of {self.elements} elements beyond tolerance"
        if self.off_elementwise > self.off:
            text += (f"; {self.off_elementwise} of {self.elements} beyond the element-wise bound "
                     f"{tol.atol:g} + {tol.rtol:g} x |ref|")
        return text

    def _describe_exact(self) -> str:
        if self.ok:
            return f"{self.name}: all {self.elements} elements equal ({self.dtype}, exact)"
        return (f"{self.name}: {self.off} of {self.elements} elements differ ({self.dtype} must "
                f"match exactly); first {self.worst}")


def compare_arrays(ref: np.ndarray, got: np.ndarray, name: str = "output",
                   tolerance: Tolerance | None = None) -> Comparison:
    """Compare one output with its reference (the tolerance defaults to the dtype's).

    Shapes and dtypes must agree; NaN and infinities must sit at the same positions (infinities
    with the same sign); integers, bools and strings must be equal; floats follow `Tolerance`.
    """
    ref, got = np.asarray(ref), np.asarray(got)
    tol = tolerance if tolerance is not None else tolerance_for(ref.dtype)
    base = Comparison(name, str(ref.dtype), tol, elements=int(ref.size))
    if ref.shape != got.shape:
        return replace(base, problem=f"shape {list(got.shape)} where the reference has "
                                     f"{list(ref.shape)}")
    if ref.dtype != got.dtype:
        return replace(base, problem=f"dtype {got.dtype} where the reference has {ref.dtype}")
    if not _is_float(ref.dtype):
        return _compare_exact(ref, got, base)
    return _compare_floats(ref, got, base)


def _compare_exact(ref: np.ndarray, got: np.ndarray, base: Comparison) -> Comparison:
    differ = (ref != got).reshape(-1)
    count = int(np.count_nonzero(differ))
    if not count:
        return base
    flat = int(np.argmax(differ))
    element = Element(_index(flat, ref.shape), ref.reshape(-1)[flat].item(),
                      got.reshape(-1)[flat].item(), np.inf, 0.0)
    return replace(base, tolerance=EXACT, off=count, worst=element)


def _compare_floats(ref: np.ndarray, got: np.ndarray, base: Comparison) -> Comparison:
    wide = np.complex128 if ref.dtype.kind == "c" else np.float64
    w, g = ref.astype(wide).reshape(-1), got.astype(wide).reshape(-1)
    finite = np.isfinite(w)
    both_nan = np.isnan(w) & np.isnan(g)
    misplaced = ~(finite & np.isfinite(g)) & ~both_nan & (w != g)
    if misplaced.any():
        flat = int(np.argmax(misplaced))
        count = int(np.count_nonzero(misplaced))
        index = ", ".join(map(str, _index(flat, ref.shape)))
        return replace(base, off=count, problem=(
            f"NaN/Inf positions differ at {count} of {ref.size} elements; first at [{index}]: "
            f"ref {w[flat]}, got {g[flat]}"))
    if not finite.any():
        return base
    magnitude = np.where(finite, np.abs(w), 0.0)
    scale = float(np.sqrt(np.mean(np.square(magnitude[finite]))))
    with np.errstate(invalid="ignore"):  # inf - inf at matching infinities, masked out
        error = np.where(finite, np.abs(w - g), 0.0)
    tol = base.tolerance
    allowed = tol.atol + tol.rtol * np.maximum(magnitude, scale)
    strict = tol.atol + tol.rtol * magnitude
    with np.errstate(divide="ignore", invalid="ignore"):  # allowed == 0 under an exact tolerance
        ratio = np.where(error > 0, error / allowed, 0.0)
    flat = int(np.argmax(ratio))
    worst = Element(_index(flat, ref.shape), w[flat].item(), g[flat].item(),
                    float(error[flat]), float(allowed[flat]))
    return replace(base, scale=scale, max_abs=float(error.max()), worst=worst,
                   off=int(np.count_nonzero(error > allowed)),
                   off_elementwise=int(np.count_nonzero(error > strict)))


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


@dataclass(frozen=True)
class OutputComparison:
    """Every output of a model against the reference: `ok` when all are."""

    outputs: tuple[Comparison, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs)

    def __iter__(self) -> Iterator[Comparison]:
        return iter(self.outputs)

    def describe(self) -> str:
        """The failing outputs (all outputs when none fails), one clause each."""
        shown = [c for c in self.outputs if not c.ok] or list(self.outputs)
        return "; ".join(c.describe() for c in shown) or "no outputs"


def compare_outputs(names: Sequence[str], expected: Sequence[np.ndarray],
                    actual: Sequence[np.ndarray],
                    tolerance: Tolerance | None = None) -> OutputComparison:
    """Compare every output with its reference (see `compare_arrays`)."""
    if len(expected) != len(actual):
        problem = f"{len(actual)} outputs where the reference has {len(expected)}"
        return OutputComparison((Comparison("outputs", "", EXACT, problem=problem),))
    return OutputComparison(tuple(compare_arrays(w, g, name, tolerance)
                                  for name, w, g in zip(names, expected, actual)))


def check_outputs(names: Sequence[str], expected: Sequence[np.ndarray],
                  actual: Sequence[np.ndarray], failure: str,
                  tolerance: Tolerance | None = None) -> OutputComparison:
    """compare_outputs, raising VerificationError("<failure>: <which output, by how much>")."""
    result = compare_outputs(names, expected, actual, tolerance)
    if not result.ok:
        raise VerificationError(f"{failure}: {result.describe()}")
    return result


class NumericCheck(Instrument):
    """After each pass that changed the graph, run it in onnxruntime and compare with the reference
    outputs of the input model; raise VerificationError naming the first pass that diverges.

    Each check is a step of a `Progress` job named "bisect", so a long run says where it is."""

    def __init__(self, feeds: Mapping[str, np.ndarray], reference: Sequence[np.ndarray],
                 output_names: Sequence[str]):
        self.feeds, self.reference = dict(feeds), list(reference)
        self.output_names = list(output_names)
        self.checked = 0
        self.progress = Progress("bisect", after_seconds=5.0)
        self._last_check_seconds = 0.0

    def after_pass(self, call: PassCall, graph: Graph, record: PassRecord) -> None:
        if not record.changed:
            return
        from graphopt.onnx_io.exporter import export_model

        self.checked += 1
        self.progress.step(f"checking the outputs after pass '{call.name}'",
                           expected_seconds=self._last_check_seconds)
        start = time.perf_counter()
        got = run_onnxruntime(export_model(graph), self.feeds)
        self._last_check_seconds = time.perf_counter() - start
        result = check_outputs(self.output_names, self.reference, got,
                               f"pass '{call.name}' changed the outputs")
        log.debug("after pass '%s': %s", call.name, result.describe())
