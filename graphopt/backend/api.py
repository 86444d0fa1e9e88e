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

Value inputs: a small graph input read as an op parameter (Slice starts, Reduce axes, Reshape
shape, Pad pads, Resize sizes...) is specialized on its value too (specialize.value_inputs), so
the key of a specialization is (input shapes, values of those inputs). Such a model has no
default specialization: compile() only checks its ops, and the first run builds the program.

compile_many() compiles many models (each for its sample inputs) with one C compiler run.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import onnx

from graphopt import onnx_io
from graphopt.backend.build import BuiltModule, build
from graphopt.backend.c.codegen import GeneratedCode, generate
from graphopt.backend.c.registry import const_inputs, has_emitter
from graphopt.backend.c.target import Target, get_target
from graphopt.backend.int8.lowering import absorb_qdq_nodes, lower_int8
from graphopt.backend.layouts import assign_layouts, check_layout_mode
from graphopt.backend.lowering import choose_algorithms, fuse_epilogues
from graphopt.ir.fusion import ensure_fusion_groups
from graphopt.backend.planner import get_planner
from graphopt.backend.program import Program, Step
from graphopt.backend.runtime import Executable, NotContiguousError, Report
from graphopt.backend.thread_governor import ThreadGovernor
from graphopt.backend.specialize import check_emitters, specialize, value_inputs
from graphopt.errors import BadInputError, CodegenError, GraphoptError, UnsupportedError
from graphopt.inputs import Inputs, check_inputs
from graphopt.ir.graph import Graph, Value

log = logging.getLogger(__name__)

ModelLike = Union[str, os.PathLike, onnx.ModelProto, Graph]


@dataclass(frozen=True)
class CompileOptions:
    """How a model is compiled. `threads` None leaves OpenMP's default (all cores).
    `fold_constants=False` runs nodes with constant inputs as C instead of evaluating them at
    compile time (Shape/Size still fold): a way to test the emitters of such ops."""

    target: Target
    cache_dir: str | None = None
    threads: int | None = None
    planner: str = "greedy"
    fuse_epilogues: bool = True
    dims: dict[str, int] = field(default_factory=dict)
    fold_constants: bool = True
    profile: bool = False  # time every kernel (CompiledModel.layer_times builds such a twin)
    # runs may drop to 1 thread while other load makes `threads` slower (thread_governor.py)
    adaptive_threads: bool = True
    layout: str = "auto"  # "nchw": keep every tensor NCHW (backend/layouts.py)


@dataclass(frozen=True)
class Specialization:
    """What one compiled program is specialized to: every input's shape, and the bytes of the
    value inputs (position -> raw data), which are constants of that program."""

    shapes: tuple[tuple[int, ...], ...]
    values: tuple[tuple[int, bytes], ...] = ()
    threads: int = 0  # the thread count its layouts were chosen for (0: none depends on it)


def compile(model: ModelLike,  # noqa: A001
            optimize: bool = True, level: int = 2, target: "str | Target" = "native", *,
            passes: str | None = None,
            cache_dir: "str | os.PathLike | None" = None, threads: int | None = None,
            planner: str = "greedy", fuse_epilogues: bool = True,
            dims: Mapping[str, int] | None = None, layout: str = "auto",
            adaptive_threads: bool = True) -> "CompiledModel":
    """Compile an ONNX model (path, ModelProto or IR Graph) to native code.

    optimize/level/passes: run graphopt's pipeline first. A Graph argument is never changed:
    it is copied first (Graph.copy shares the weight arrays), as graphopt.optimize does.
    target: "native" (this CPU, OpenMP) or "portable" (plain C99, single thread).
    cache_dir: where built modules are kept (default: $GRAPHOPT_CACHE_DIR or ~/.cache/graphopt).
    threads: OpenMP threads for runs. planner: "greedy" or "linear" arena planning.
    fuse_epilogues: fold activations/residual adds into Conv/Gemm/MatMul epilogues.
    dims: values of symbolic dims for the first specialization (others default to 1).
    layout: "auto" (blocked NCHWc where the cost model says it pays), "nchw", or "blocked"
      (wherever a blocked kernel exists, whatever the conversions cost).
    adaptive_threads: with threads > 1, let a run drop to 1 thread while other load on the
      machine makes `threads` slower, and come back when it is not (thread_governor.py).
    """
    options = _options(target, cache_dir, threads, planner, fuse_epilogues, dims, layout,
                       adaptive_threads)
    return CompiledModel(_prepare_graph(model, optimize, level, passes), options)


def compile_many(models: Sequence[ModelLike], inputs: Sequence[Inputs | None] | None = None,
                 optimize: bool = True, level: int = 2, target: "str | Target" = "native", *,
                 passes: str | None = None, cache_dir: "str | os.PathLike | None" = None,
                 threads: int | None = None, planner: str = "greedy",
                 fuse_epilogues: bool = True, layout: str = "auto"
                 ) -> list["CompiledModel | GraphoptError"]:
    """Compile several models with one C compiler run (options as in compile()).

    Model i is specialized for `inputs[i]` (sample inputs, checked like run()'s; None: its
    declared shapes), all programs go into one translation unit and one shared object, so N
    small models cost one compiler run instead of N (the ONNX node tests: ~100x fewer).
    Returns per model its CompiledModel, or the GraphoptError that refused it (an
    UnsupportedError, a BadInputError...), so one refusal does not stop the others. When the
    batch fails to build (an emitter bug), each program is built alone so the CodegenError
    lands on the model whose C is at fault.
    """
    options = _options(target, cache_dir, threads, planner, fuse_epilogues, None, layout)
    samples = list(inputs) if inputs is not None else [None] * len(models)
    if len(samples) != len(models):
        raise BadInputError(f"compile_many got {len(models)} models but {len(samples)} inputs")
    results: list[CompiledModel | GraphoptError] = []
    pending: list[tuple[int, Specialization, GeneratedCode, float]] = []
    for i, (model, sample) in enumerate(zip(models, samples)):
        try:
            compiled = CompiledModel(_prepare_graph(model, optimize, level, passes), options,
                                     build_default=False)
            spec = compiled._default_specialization() if sample is None else \
                compiled._specialization(compiled._check_inputs(sample))
            code, seconds = compiled._generate(spec, prefix=f"m{i}_")
            pending.append((i, spec, code, seconds))
            results.append(compiled)
        except GraphoptError as err:
            results.append(err)
    for i, built in _build_together([code for _, _, code, _ in pending], options).items():
        index, spec, code, seconds = pending[i]
        if isinstance(built, GraphoptError):
            results[index] = built
        else:
            results[index]._install(spec, code, built, seconds)
    return results


def _build_together(codes: list[GeneratedCode],
                    options: CompileOptions) -> dict[int, "BuiltModule | GraphoptError"]:
    """One module for all `codes`; on a compiler error, one module per code."""
    if not codes:
        return {}
    source = codes[0].prelude + "".join(code.body for code in codes)
    try:
        built = build(source, options.target, options.cache_dir, [c.entry for c in codes])
        return {i: built for i in range(len(codes))}
    except CodegenError as err:
        if len(codes) == 1:
            return {0: err}
        log.warning("the batch of %d programs failed to build; building them one by one",
                    len(codes))
    results: dict[int, BuiltModule | GraphoptError] = {}
    for i, code in enumerate(codes):
        try:
            results[i] = build(code.source, options.target, options.cache_dir, [code.entry])
        except CodegenError as err:
            results[i] = err
    return results


def _options(target: "str | Target", cache_dir: "str | os.PathLike | None", threads: int | None,
             planner: str, fuse: bool, dims: Mapping[str, int] | None,
             layout: str = "auto", adaptive_threads: bool = True) -> CompileOptions:
    get_planner(planner)  # fail early on a bad name
    return CompileOptions(get_target(target), None if cache_dir is None else str(cache_dir),
                          threads, planner, fuse, dict(dims or {}),
                          adaptive_threads=adaptive_threads, layout=check_layout_mode(layout))


def _prepare_graph(model: ModelLike, optimize: bool, level: int, passes: str | None) -> Graph:
    """The graph to compile; a Graph argument is copied (the pipeline copies it, and later
    annotations such as fusion groups must not land on the caller's graph)."""
    graph = _load_graph(model)
    absorbed = absorb_qdq_nodes(graph)  # QDQ files: Q/DQ nodes -> Value.quant (int8 lowering)
    if optimize:
        from graphopt.optimizer import optimize as run_pipeline

        return run_pipeline(absorbed, level=level, passes=passes).graph
    return graph.copy() if absorbed is model else absorbed


def _load_graph(model: ModelLike, copy: bool = False) -> Graph:
    if isinstance(model, Graph) and copy:
        return onnx_io.import_model(onnx_io.export_model(model))
    if isinstance(model, (str, os.PathLike)) and not os.path.exists(model):
        raise BadInputError(f"model file {model}: no such file")
    return onnx_io.load(model)


class CompiledModel:
    """A model compiled to C; `run` mirrors onnxruntime.InferenceSession.run.

    Holds one Executable per Specialization met so far. `build_default=False` skips building
    the default specialization (compile_many builds the one for its sample inputs instead).
    """

    def __init__(self, graph: Graph, options: CompileOptions, build_default: bool = True):
        self.graph = graph
        self.options = options
        self.inputs: list[Value] = list(graph.inputs)
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self._executables: dict[Specialization, Executable] = {}
        # checked input signature -> (program, its runner, the governor of its thread count)
        self._signatures: dict[tuple, tuple[Executable, Callable, ThreadGovernor]] = {}
        self._governors: dict[Specialization, ThreadGovernor] = {}
        self._lock = threading.Lock()
        self._profiled: CompiledModel | None = None  # the timing twin of layer_times
        for role, values in (("input", self.inputs), ("output", graph.outputs)):
            for value in values:
                if value.type is None and value.onnx_type is not None:
                    kind = value.onnx_type.WhichOneof("value") or "non-tensor"
                    raise UnsupportedError(f"graph {role} '{value.name}' is a "
                                           f"{kind.replace('_', ' ')}; the C backend takes and "
                                           "returns tensors only")
        for value in self.inputs:
            if value.type is None or value.type.shape is None:
                raise BadInputError(f"graph input '{value.name}' has no known rank; the C backend "
                                    "needs typed inputs (fix the model's input declaration)")
        self.value_inputs: list[int] = value_inputs(graph, const_inputs, has_emitter)
        if build_default and not self.value_inputs:
            self._executable(self._default_specialization())
        else:  # no program yet: refuse ops without an emitter now, build at the first run
            check_emitters(graph, [self.input_names[i] for i in self.value_inputs], has_emitter)

    # --- public API ----------------------------------------------------------------------------
    def run(self, inputs: Inputs, output_names: Sequence[str] | None = None, *,
            outputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Outputs (in model order, or `output_names` order) for `inputs` given as a dict by
        input name, a list in input order, or a single array for single-input models.

        The returned arrays are new on every call (never reused by a later run), unless
        `outputs` is given: arrays to write the results into, one per model output in model
        order, each writable, C-contiguous, of the output's exact shape and dtype and
        overlapping no input; then no output memory is allocated and these arrays are what
        is returned (zero-copy).

        Cost: the first call with a new input signature (dtypes and shapes) checks the inputs
        and finds or builds the program; later calls with C-contiguous ndarrays of that
        signature do one dict lookup and run a prebuilt closure around the C call: about
        2.6 us of Python per call on a Zen 3 core (docs/BACKEND.md; `graphopt bench` prints
        it for a model)."""
        known, arrays = self._known_signature(inputs)
        results = None
        if known is not None:
            try:
                if outputs is None:
                    results = known[1](arrays)
                else:
                    with self._lock:
                        results = self._run_locked(known[0], arrays, outputs, known[2])
            except NotContiguousError:  # the checked path copies it
                pass
        if results is None:
            arrays = self._check_inputs(inputs)
            with self._lock:
                spec = self._specialization(arrays)
                executable = self._executable(spec)
                governor = self._governor(spec)
                if not self.value_inputs:
                    self._signatures[_signature(arrays)] = (
                        executable, executable.runner(self._lock, governor), governor)
                results = self._run_locked(executable, arrays, outputs, governor)
        if output_names is None:
            return results
        unknown = [n for n in output_names if n not in self.output_names]
        if unknown:
            raise BadInputError(f"unknown output name(s) {', '.join(unknown)}; the model's outputs "
                                f"are {', '.join(self.output_names)}")
        return [results[self.output_names.index(n)] for n in output_names]

    def _threads(self) -> int | None:
        return self.options.threads

    def _governor(self, spec: Specialization) -> ThreadGovernor:
        """The thread-count governor of one program (each has its own latency to watch)."""
        if spec not in self._governors:
            self._governors[spec] = ThreadGovernor(self._threads, self.options.adaptive_threads)
        return self._governors[spec]

    def _run_locked(self, executable: Executable, arrays: Sequence[np.ndarray],
                    outputs: Sequence[np.ndarray] | None,
                    governor: ThreadGovernor) -> list[np.ndarray]:
        """Executable.run at the governor's thread count, timed for it; the caller holds the
        lock."""
        count = governor.threads()
        if count:
            executable.set_threads(count)
        start = time.perf_counter()
        results = executable.run(arrays, outputs)
        governor.record(time.perf_counter() - start)
        return results

    def thread_runs(self) -> dict[int, int]:
        """Runs per thread count chosen by the thread governors (thread_governor.py), over the
        runs they watch: those asked for more than one thread with adaptive_threads on."""
        total: Counter[int] = Counter()
        for governor in self._governors.values():
            total.update(governor.runs)
        return dict(total)

    def set_threads(self, threads: int) -> None:
        """OpenMP threads used by later runs (native target; the portable build is serial).
        With layout="auto" a later run may use another program: the layouts are chosen for
        the thread count (backend/layouts.py), one program per count, built when first run."""
        before = self._layout_threads()
        self.options = dataclasses.replace(self.options, threads=int(threads))
        if self._layout_threads() != before:
            self._signatures.clear()  # their programs were chosen for the old count

    def executable(self, inputs: Inputs) -> tuple[Executable, list[np.ndarray]]:
        """The program that runs `inputs` (built now if need be) and the checked inputs."""
        arrays = self._check_inputs(inputs)
        with self._lock:
            return self._executable(self._specialization(arrays)), arrays

    def layer_times(self, inputs: Inputs, runs: int = 20,
                    budget_seconds: float = 10.0) -> list[tuple[Step, float]]:
        """Median seconds of each kernel over `runs` runs on `inputs` (fewer once
        `budget_seconds` are spent, at least 3), in execution order; steps realized as views
        take no time and are not listed. The timings come from a twin of this model built with
        a timer around every kernel call (a GRAPHOPT_PROFILE build, cached separately), so
        this model's own code carries no timing cost; its thread count is this model's."""
        if self._profiled is None:
            options = dataclasses.replace(self.options, profile=True, adaptive_threads=False)
            self._profiled = CompiledModel(self.graph, options, build_default=False)
        twin = self._profiled
        twin.options = dataclasses.replace(twin.options, threads=self.options.threads)
        twin._signatures.clear()  # the thread count may pick another program (set_threads)
        executable, arrays = twin.executable(inputs)  # builds (or loads) the profile program
        twin.run(arrays)  # warm-up
        samples = []
        deadline = time.perf_counter() + budget_seconds
        while len(samples) < max(runs, 1) and (len(samples) < 3 or
                                                time.perf_counter() < deadline):
            twin.run(arrays)
            samples.append(executable.step_ns.copy())
        medians = np.median(np.stack(samples), axis=0) * 1e-9
        steps = executable.program.steps
        return [(steps[i], float(t)) for i, t in zip(executable.code.profiled, medians)]

    @property
    def report(self) -> Report:
        """Facts about the first specialization built (the default one unless there is none)."""
        return self._first().report

    def reports(self) -> list[Report]:
        return [e.report for e in self._executables.values()]

    def programs(self) -> list[Program]:
        """The specialized programs built so far (what each one runs, step by step)."""
        return [e.program for e in self._executables.values()]

    @property
    def source(self) -> str:
        """The generated C of the first specialization built."""
        return self._first().code.source

    # --- internals -----------------------------------------------------------------------------
    def _first(self) -> Executable:
        if not self._executables:
            names = ", ".join(f"'{self.input_names[i]}'" for i in self.value_inputs)
            raise BadInputError(f"no program is built yet: the model is specialized on the "
                                f"values of {names}; run it once (or use compile_many with "
                                "sample inputs) first")
        return next(iter(self._executables.values()))

    def _default_specialization(self) -> Specialization:
        if self.value_inputs:
            raise BadInputError("the model is specialized on input values; give sample inputs")
        return Specialization(tuple(self._default_shape(v) for v in self.inputs),
                              threads=self._layout_threads())

    def _specialization(self, arrays: Sequence[np.ndarray]) -> Specialization:
        return Specialization(tuple(a.shape for a in arrays),
                              tuple((i, arrays[i].tobytes()) for i in self.value_inputs),
                              self._layout_threads())

    def _layout_threads(self) -> int:
        """The thread count the layout choice prices kernels for: the runs' (unset: OpenMP's
        default, every core); 0 when no choice depends on it (a forced layout, a serial
        target)."""
        if self.options.layout != "auto" or not self.options.target.openmp:
            return 0
        return self.options.threads or os.cpu_count() or 1

    def _default_shape(self, value: Value) -> tuple[int, ...]:
        if value.default is not None:  # an overridable input: the shape of its default
            return tuple(value.default.shape)
        shape = []
        for d in value.type.shape:
            if isinstance(d, int):
                shape.append(d)
            else:
                shape.append(int(self.options.dims.get(d or "", 1)))
        return tuple(shape)

    def _executable(self, spec: Specialization) -> Executable:
        if spec not in self._executables:
            code, seconds = self._generate(spec)
            started = time.perf_counter()
            built = build(code.source, self.options.target, self.options.cache_dir, [code.entry])
            self._install(spec, code, built, seconds + time.perf_counter() - started)
        return self._executables[spec]

    def _generate(self, spec: Specialization, prefix: str = "") -> tuple[GeneratedCode, float]:
        """The C of one specialization and the seconds it took (specialize, lower, emit)."""
        started = time.perf_counter()
        values = {}
        for i, raw in spec.values:
            dtype = self.inputs[i].type.dtype.numpy
            values[self.input_names[i]] = np.frombuffer(raw, dtype).reshape(spec.shapes[i])
        if self.options.fuse_epilogues:
            ensure_fusion_groups(self.graph)  # stamped by -O2; found here for other pipelines
        program = specialize(self.graph, dict(zip(self.input_names, spec.shapes)), has_emitter,
                             values, self.options.fold_constants)
        lower_int8(program, self.graph)  # Value.quant-annotated groups -> integer steps
        if self.options.fuse_epilogues:
            fuse_epilogues(program)
        assign_layouts(program, self.options.target, self.options.layout, spec.threads or 1)
        choose_algorithms(program, self.options.target)
        code = generate(program, self.options.target, get_planner(self.options.planner), prefix,
                        self.options.profile)
        return code, time.perf_counter() - started

    def _install(self, spec: Specialization, code: GeneratedCode, built: BuiltModule,
                 seconds: float) -> None:
        fused = sum(len(step.epilogue) for step in code.program.steps)
        self._executables[spec] = Executable(code, built, self.options.target.name, fused, seconds)
        log.info("compiled %s for input shapes %s in %.2fs (arena %d bytes)",
                 self.graph.info.graph_name, spec.shapes, seconds, code.arena_bytes)

    def _known_signature(self, inputs: Inputs
                         ) -> tuple[tuple[Executable, Callable] | None, Sequence[np.ndarray]]:
        """The program and its Executable.runner for inputs of a signature checked before
        (every input a plain ndarray), so a repeated call skips the checks; (None, ())
        otherwise. Models specialized on input values always take the checked path. This is
        the hot path of a tiny model: one dict lookup, no Python-level loop over the checks."""
        signatures = self._signatures
        if not signatures:
            return None, ()
        kind = type(inputs)
        if kind is dict:
            names = self.input_names
            if len(inputs) != len(names):
                return None, ()
            try:
                values: Sequence[np.ndarray] = [inputs[names[0]]] if len(names) == 1 else \
                    [inputs[name] for name in names]
            except KeyError:
                return None, ()
        elif kind is list or kind is tuple:
            values = inputs
        elif kind is np.ndarray:
            values = (inputs,)
        else:
            return None, ()
        if len(values) == 1:  # most models: no comprehension (a frame per call in 3.11)
            a = values[0]
            if type(a) is not np.ndarray:  # anything else: the checked path converts or refuses
                return None, ()
            key: tuple | None = (a.dtype, a.shape)
        else:
            key = _signature(values)
        return signatures.get(key), values

    def _check_inputs(self, inputs: Inputs) -> list[np.ndarray]:
        """The inputs as contiguous arrays in model order; BadInputError on any mismatch."""
        return check_inputs(self.inputs, inputs)


def _signature(arrays: Sequence[np.ndarray]) -> tuple | None:
    """The key of checked inputs in CompiledModel._signatures (as _known_signature builds it):
    what the checks depend on: dtype and shape of each plain ndarray (a bare pair for one
    input), None if one is anything else. Contiguity is not part of it: Executable.run
    refuses a non-contiguous input (the checked path copies it)."""
    if any(type(a) is not np.ndarray for a in arrays):
        return None
    if len(arrays) == 1:
        return (arrays[0].dtype, arrays[0].shape)
    return tuple([(a.dtype, a.shape) for a in arrays])
