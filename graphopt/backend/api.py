"""`compile(model) -> CompiledModel` and `CompiledModel.run(inputs)`: the backend's Python API.

    model = graphopt.backend.compile("resnet18.onnx", target="native")
    [logits] = model.run({"input": image})        # or model.run([image])

compile() optimizes the graph (graphopt.optimizer.optimize at `level`, unless optimize=False),
then specializes it to concrete input shapes, generates C, builds it (cached on disk) and loads
it. Inputs are checked against the model's declared names, dtypes and shapes before any C runs.

Dynamic shapes: the C code is specialized per concrete input shapes (every loop bound is a
compile-time constant, which is what lets the C compiler vectorize well). compile() builds the
specialization with every symbolic dim set to `dims.get(name, 1)`; a run with another batch size
builds (or loads from the disk cache) one more specialization and keeps it for later runs.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import onnx

from graphopt import onnx_io
from graphopt.backend.build import build
from graphopt.backend.c.codegen import generate
from graphopt.backend.c.registry import has_emitter
from graphopt.backend.c.target import Target, get_target
from graphopt.backend.lowering import fuse_epilogues
from graphopt.backend.planner import get_planner
from graphopt.backend.runtime import Executable, Report
from graphopt.backend.specialize import specialize
from graphopt.errors import BadInputError, UnsupportedError
from graphopt.ir.graph import Graph, Value

log = logging.getLogger(__name__)

Inputs = Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray


@dataclass(frozen=True)
class CompileOptions:
    """How a model is compiled. `threads` None leaves OpenMP's default (all cores)."""

    target: Target
    cache_dir: str | None = None
    threads: int | None = None
    planner: str = "greedy"
    fuse_epilogues: bool = True
    dims: dict[str, int] = field(default_factory=dict)


def compile(model: "str | os.PathLike | onnx.ModelProto | Graph",  # noqa: A001
            optimize: bool = True, level: int = 2, target: "str | Target" = "native", *, passes: str | None = None,
            cache_dir: "str | os.PathLike | None" = None, threads: int | None = None,
            planner: str = "greedy", fuse_epilogues: bool = True,
            dims: Mapping[str, int] | None = None) -> "CompiledModel":
    """Compile an ONNX model (path, ModelProto or IR Graph) to native code.

    optimize/level/passes: run graphopt's pipeline first (a Graph argument is copied, not
    changed). target: "native" (this CPU, OpenMP) or "portable" (plain C99, single thread).
    cache_dir: where built modules are kept (default: $GRAPHOPT_CACHE_DIR or ~/.cache/graphopt).
    threads: OpenMP threads for runs. planner: "greedy" or "linear" arena planning.
    fuse_epilogues: fold activations/residual adds into Conv/Gemm/MatMul epilogues.
    dims: values of symbolic dims for the first specialization (others default to 1).
    """
    graph = _load_graph(model, copy=optimize)
    if optimize:
        from graphopt.optimizer import optimize as run_pipeline

        graph = run_pipeline(graph, level=level, passes=passes).graph
    options = CompileOptions(get_target(target), None if cache_dir is None else str(cache_dir),
                             threads, planner, fuse_epilogues, dict(dims or {}))
    get_planner(planner)  # fail early on a bad name
    return CompiledModel(graph, options)


def _load_graph(model: "str | os.PathLike | onnx.ModelProto | Graph", copy: bool) -> Graph:
    if isinstance(model, Graph) and copy:
        return onnx_io.import_model(onnx_io.export_model(model))
    if isinstance(model, (str, os.PathLike)) and not os.path.exists(model):
        raise BadInputError(f"model file {model}: no such file")
    return onnx_io.load(model)


class CompiledModel:
    """A model compiled to C; `run` mirrors onnxruntime.InferenceSession.run."""

    def __init__(self, graph: Graph, options: CompileOptions):
        self.graph = graph
        self.options = options
        self.inputs: list[Value] = list(graph.inputs)
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self._executables: dict[tuple, Executable] = {}
        self._lock = threading.Lock()
        for value in self.inputs:
            if value.type is None and value.onnx_type is not None:
                kind = value.onnx_type.WhichOneof("value") or "non-tensor"
                raise UnsupportedError(f"graph input '{value.name}' is a {kind.replace('_', ' ')}; "
                                       "the C backend takes tensor inputs only")
            if value.type is None or value.type.shape is None:
                raise BadInputError(f"graph input '{value.name}' has no known rank; the C backend "
                                    "needs typed inputs (fix the model's input declaration)")
        default = tuple(self._default_shape(v) for v in self.inputs)
        self._executable(default)

    # --- public API ----------------------------------------------------------------------------
    def run(self, inputs: Inputs, output_names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Outputs (in model order, or `output_names` order) for `inputs` given as a dict by
        input name, a list in input order, or a single array for single-input models."""
        arrays = self._check_inputs(inputs)
        with self._lock:
            executable = self._executable(tuple(a.shape for a in arrays))
            if self.options.threads:
                executable.set_threads(self.options.threads)
            outputs = executable.run(arrays)
        if output_names is None:
            return outputs
        unknown = [n for n in output_names if n not in self.output_names]
        if unknown:
            raise BadInputError(f"unknown output name(s) {', '.join(unknown)}; the model's outputs "
                                f"are {', '.join(self.output_names)}")
        return [outputs[self.output_names.index(n)] for n in output_names]

    def set_threads(self, threads: int) -> None:
        """OpenMP threads used by later runs (native target; the portable build is serial)."""
        self.options = dataclasses.replace(self.options, threads=int(threads))

    @property
    def report(self) -> Report:
        """Facts about the first (default) specialization."""
        return next(iter(self._executables.values())).report

    def reports(self) -> list[Report]:
        return [e.report for e in self._executables.values()]

    @property
    def source(self) -> str:
        """The generated C of the default specialization."""
        return next(iter(self._executables.values())).code.source

    # --- internals -----------------------------------------------------------------------------
    def _default_shape(self, value: Value) -> tuple[int, ...]:
        shape = []
        for d in value.type.shape:
            if isinstance(d, int):
                shape.append(d)
            else:
                shape.append(int(self.options.dims.get(d or "", 1)))
        return tuple(shape)

    def _executable(self, shapes: tuple[tuple[int, ...], ...]) -> Executable:
        if shapes not in self._executables:
            self._executables[shapes] = self._build(shapes)
        return self._executables[shapes]

    def _build(self, shapes: tuple[tuple[int, ...], ...]) -> Executable:
        started = time.perf_counter()
        program = specialize(self.graph, dict(zip(self.input_names, shapes)), has_emitter)
        fused = fuse_epilogues(program) if self.options.fuse_epilogues else 0
        code = generate(program, self.options.target, get_planner(self.options.planner))
        built = build(code.source, self.options.target, self.options.cache_dir)
        seconds = time.perf_counter() - started
        log.info("compiled %s for input shapes %s in %.2fs (arena %d bytes)",
                 self.graph.info.graph_name, shapes, seconds, code.arena_bytes)
        return Executable(code, built, self.options.target.name, fused, seconds)

    def _check_inputs(self, inputs: Inputs) -> list[np.ndarray]:
        """The inputs as contiguous arrays in model order; BadInputError on any mismatch."""
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if isinstance(inputs, Mapping):
            unknown = [n for n in inputs if n not in self.input_names]
            missing = [n for n in self.input_names if n not in inputs]
            if unknown or missing:
                parts = []
                if unknown:
                    parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
                if missing:
                    parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
                raise BadInputError(f"{'; '.join(parts)}; the model's inputs are "
                                    f"{self._describe_inputs()}")
            values = [inputs[n] for n in self.input_names]
        else:
            values = list(inputs)
            if len(values) != len(self.inputs):
                raise BadInputError(f"got {len(values)} input array(s); the model takes "
                                    f"{len(self.inputs)}: {self._describe_inputs()}")
        arrays = []
        bound: dict[str, tuple[int, str]] = {}
        for value, array in zip(self.inputs, values):
            array = np.asarray(array)
            expected = value.type.dtype.numpy
            if array.dtype != expected:
                raise BadInputError(f"input '{value.name}' has dtype {array.dtype}; the model "
                                    f"expects {expected} (convert with .astype(np.{expected}))")
            self._check_shape(value, array.shape, bound)
            arrays.append(array if array.flags.c_contiguous else np.ascontiguousarray(array))
        return arrays

    def _check_shape(self, value: Value, shape: tuple[int, ...],
                     bound: dict[str, tuple[int, str]]) -> None:
        declared = value.type.shape
        problem = None
        if len(shape) != len(declared):
            problem = f"rank {len(shape)}, expected {len(declared)}"
        else:
            for axis, (got, want) in enumerate(zip(shape, declared)):
                if isinstance(want, int) and got != want:
                    problem = f"dim {axis} is {got}, expected {want}"
                elif isinstance(want, str) and want:
                    seen = bound.setdefault(want, (got, value.name))
                    if seen[0] != got:
                        problem = (f"dim {axis} ('{want}') is {got} but input '{seen[1]}' "
                                   f"set '{want}' to {seen[0]}")
                if problem:
                    break
        if problem:
            raise BadInputError(f"input '{value.name}' has shape {tuple(shape)}: {problem} "
                                f"(declared {value.type})")

    def _describe_inputs(self) -> str:
        return ", ".join(f"'{v.name}' {v.type}" for v in self.inputs)
