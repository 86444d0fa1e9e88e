"""One compiled specialization in memory: the loaded module, its weight blob and arena.

`Executable.run` hands the C entry point pointers to the caller's input arrays, output arrays
(fresh ones, or the caller's own with `outputs=`), the weight blob and the arena (both 64-byte
aligned numpy buffers owned here), through pointer tables. Fresh outputs come from
FreshOutputs (cut from chunks allocated many runs at a time). `runner` makes the locked per-call
path of CompiledModel.run one closure. cffi releases the GIL during the call. An Executable is
not re-entrant: its arena and pointer tables are shared by calls, so the CompiledModel
serializes runs with a lock. A profile build (codegen's
`profile=True`) leaves each kernel's time of the last run in `step_ns`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from graphopt.backend.build import BuiltModule
from graphopt.backend.c.codegen import GeneratedCode
from graphopt.backend.thread_governor import ThreadGovernor
from graphopt.errors import BadInputError

log = logging.getLogger(__name__)


def aligned_bytes(nbytes: int, alignment: int = 64) -> np.ndarray:
    """A uint8 array of `nbytes` whose data pointer is a multiple of `alignment`."""
    raw = np.zeros(nbytes + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + nbytes]


class NotContiguousError(ValueError):
    """An input array handed to Executable.run is not C-contiguous (CompiledModel.run's fast
    path then takes the checked path, which copies it)."""


class FreshOutputs:
    """New output arrays for every run, cut from chunks allocated `per_chunk` runs at a time,
    and the entry point's outputs table (`table`), rewritten with each run's addresses.

    Allocating each output (np.empty), wrapping it for cffi (from_buffer) and storing the
    pointer into a cffi table costs about 0.9 us per output per run on a loaded Zen 3 core;
    here a run costs a list index and one store into a numpy-owned table (0.55 us with the
    chunk's allocation shared out, one output). A chunk is never reused: the arrays handed
    out are the caller's for as long as it keeps them, and a chunk lives while any of its
    arrays does, so a kept result holds at most CHUNK_BYTES. Outputs larger than that get a chunk of one
    run each (their run dwarfs the allocation)."""

    CHUNK_BYTES = 16384
    MAX_RUNS = 64

    def __init__(self, ffi, specs: Sequence[tuple[tuple[int, ...], np.dtype]],  # noqa: ANN001
                 trailing: object = None):
        self._specs = list(specs)
        run_bytes = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self._specs)
        self.per_chunk = max(1, min(self.MAX_RUNS, self.CHUNK_BYTES // max(run_bytes, 1)))
        # the table the entry point reads: one address per output, then `trailing` (the
        # profile build's step_ns) if any
        self._table = np.zeros(max(len(self._specs) + (trailing is not None), 1), np.uintp)
        if trailing is not None:
            self._table[-1] = int(ffi.cast("uintptr_t", trailing))
        self.table = ffi.cast("void**", self._table.ctypes.data)
        self._next = self.per_chunk  # the first take() allocates
        self._runs: list[list[np.ndarray]] = []  # per run of the chunk: its output arrays
        self._addresses: list = []  # per run: its output's address (a tuple if several)

    def take(self) -> list[np.ndarray]:
        """Fresh output arrays, their addresses written into `table` for the next call."""
        k = self._next
        if k == self.per_chunk:
            self._allocate()
            k = 0
        self._next = k + 1
        table = self._table
        if len(self._specs) == 1:
            table[0] = self._addresses[k]
        else:
            for i, address in enumerate(self._addresses[k]):
                table[i] = address
        return self._runs[k]

    def _allocate(self) -> None:
        n = self.per_chunk
        chunks = [np.empty((n, *shape), dtype) for shape, dtype in self._specs]
        # chunk[k, ...] keeps a 0-d output an array (iterating would give numpy scalars)
        views = [list(chunk) if chunk.ndim > 1 else [chunk[k, ...] for k in range(n)]
                 for chunk in chunks]
        self._runs = [list(run) for run in zip(*views)]
        bases = [(chunk.ctypes.data, chunk.strides[0]) for chunk in chunks]
        addresses = [[base + k * stride for k in range(n)] for base, stride in bases]
        self._addresses = addresses[0] if len(chunks) == 1 else list(zip(*addresses))


@dataclass(frozen=True)
class Report:
    """Facts about one compiled specialization, for `graphopt run/bench` and the benchmarks."""

    target: str
    input_shapes: tuple[tuple[int, ...], ...]
    steps: int
    views: int
    inplace: int
    fused_epilogues: int
    arena_bytes: int
    activation_bytes: int
    weight_bytes: int
    compile_seconds: float
    cached: bool
    source_path: str

    @property
    def arena_ratio(self) -> float:
        """Arena size over the sum of all intermediate tensors (lower is better)."""
        return self.arena_bytes / self.activation_bytes if self.activation_bytes else 0.0


class Executable:
    def __init__(self, code: GeneratedCode, built: BuiltModule, target_name: str,
                 fused_epilogues: int, compile_seconds: float):
        self.code = code
        self.program = code.program
        self._ffi = built.module.ffi
        self._lib = built.module.lib
        self._entry = getattr(self._lib, code.entry)
        blob = code.weights.blob()
        self._weights = aligned_bytes(blob.size, code.plan.alignment)
        self._weights[:] = blob
        self._arena = aligned_bytes(max(code.arena_bytes, 1), code.plan.alignment)
        self._weights_ptr = self._ffi.cast("const char*", self._weights.ctypes.data)
        self._arena_ptr = self._ffi.cast("char*", self._arena.ctypes.data)
        # built once, refilled per call: the pointer tables the entry point reads
        self._inputs_ptr = self._ffi.new("void*[]", max(len(self.program.inputs), 1))
        outputs = len(self.program.outputs)
        self._outputs_ptr = self._ffi.new("void*[]", max(outputs + bool(code.profiled), 1))
        # profile build: the entry point writes each kernel's ns into the slot after the outputs
        self.step_ns = np.zeros(len(code.profiled), np.int64)
        if code.profiled:
            self._step_ns_ptr = self._ffi.from_buffer(self.step_ns)
            self._outputs_ptr[outputs] = self._step_ns_ptr
        self._output_specs = [(t.shape, np.dtype(t.dtype.numpy)) for t in self.program.outputs]
        self._fresh = FreshOutputs(self._ffi, self._output_specs,
                                   self._step_ns_ptr if code.profiled else None)
        self._from_buffer = self._ffi.from_buffer  # bound once: run() is the hot path
        self.report = Report(
            target=target_name,
            input_shapes=tuple(t.shape for t in self.program.inputs),
            steps=len(self.program.steps), views=code.views, inplace=code.inplace,
            fused_epilogues=fused_epilogues, arena_bytes=code.arena_bytes,
            activation_bytes=code.activation_bytes, weight_bytes=code.weights.nbytes,
            compile_seconds=compile_seconds, cached=built.cached,
            source_path=str(built.source_path))

    def set_threads(self, threads: int) -> None:
        """OpenMP threads for later calls from this OS thread. Set on every call, never cached:
        the setting is shared by every module on the same OpenMP runtime and anyone (another
        CompiledModel, threadpoolctl) may change it in between."""
        self._lib.graphopt_set_num_threads(int(threads))

    def threads(self) -> int:
        return int(self._lib.graphopt_get_num_threads())

    def run(self, arrays: Sequence[np.ndarray],
            outputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Outputs for inputs already checked to match this specialization (arrays of its
        shapes and dtypes; NotContiguousError if one is not C-contiguous), written into
        `outputs` when given (checked here: one writable C-contiguous array per output, of its
        exact shape and dtype, overlapping no input and no other output), else into fresh
        arrays (FreshOutputs). Not serialized: see `runner` for the locked hot path."""
        if outputs is None:
            outputs, outputs_ptr = self._fresh.take(), self._fresh.table
        else:
            outputs = self._check_outputs(outputs, arrays)
            outputs_ptr, from_buffer = self._outputs_ptr, self._from_buffer
            for i in range(len(outputs)):
                outputs_ptr[i] = from_buffer(outputs[i])
        self._bind_inputs(arrays)
        status = self._entry(self._inputs_ptr, outputs_ptr, self._weights_ptr, self._arena_ptr)
        if status:
            self._failed(status)
        return outputs

    def runner(self, lock: threading.Lock, governor: ThreadGovernor
               ) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
        """run(arrays) into fresh outputs as one closure, everything it touches bound once:
        the per-call path of CompiledModel.run for a checked signature. Under `lock` it sets
        the OpenMP thread count `governor` gives (if not None/0; set on every call, see
        set_threads), takes the outputs, binds the inputs (NotContiguousError if one is not
        C-contiguous), calls the entry point and tells the governor how long the call took."""
        entry, weights, arena = self._entry, self._weights_ptr, self._arena_ptr
        inputs_ptr, from_buffer, set_threads = self._inputs_ptr, self._from_buffer, \
            self._lib.graphopt_set_num_threads
        take, table, bind = self._fresh.take, self._fresh.table, self._bind_inputs
        threads, record, clock = governor.threads, governor.record, time.perf_counter
        single = len(self.program.inputs) == 1

        def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            with lock:
                count = threads()
                if count:
                    set_threads(count)
                outputs = take()
                if single:  # inline: a call costs as much as the binding
                    try:
                        inputs_ptr[0] = from_buffer(arrays[0])
                    except ValueError as err:
                        raise NotContiguousError(str(err)) from None
                else:
                    bind(arrays)
                start = clock()
                status = entry(inputs_ptr, table, weights, arena)
                record(clock() - start)
            if status:
                self._failed(status)
            return outputs
        return run

    def _bind_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        """The inputs' addresses into the entry's input table. The arrays outlive the call,
        so the raw pointers stay valid without their cdata; from_buffer refuses an array that
        is not C-contiguous (ValueError)."""
        inputs_ptr, from_buffer = self._inputs_ptr, self._from_buffer
        try:
            for i in range(len(arrays)):
                inputs_ptr[i] = from_buffer(arrays[i])
        except ValueError as err:
            raise NotContiguousError(str(err)) from None

    def _failed(self, status: int) -> None:
        step = self.program.steps[status - 1]
        raise BadInputError(f"{step.node.describe()} failed at run time: an index read from "
                            f"the inputs is out of range ({step.describe()})")

    def time_entry(self, arrays: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                   runs: int) -> list[float]:
        """Seconds of each of `runs` bare calls of the C entry point on checked `arrays` and
        `outputs`, pointers bound once: run() minus its Python work (bench.run_overhead).
        Not serialized with run(): for a benchmark's own thread."""
        buffers = [self._from_buffer(a) for a in (*arrays, *outputs)]  # alive during the calls
        for i, buffer in enumerate(buffers[:len(arrays)]):
            self._inputs_ptr[i] = buffer
        for i, buffer in enumerate(buffers[len(arrays):]):
            self._outputs_ptr[i] = buffer
        args = (self._inputs_ptr, self._outputs_ptr, self._weights_ptr, self._arena_ptr)
        entry, clock, times = self._entry, time.perf_counter, []
        for _ in range(runs):
            start = clock()
            entry(*args)
            times.append(clock() - start)
        return times

    def _check_outputs(self, outputs: Sequence[np.ndarray],
                       arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs = list(outputs)
        if len(outputs) != len(self._output_specs):
            raise BadInputError(f"got {len(outputs)} output array(s); the model has "
                                f"{len(self._output_specs)} outputs")
        for i, (t, (shape, dtype), out) in enumerate(zip(self.program.outputs,
                                                         self._output_specs, outputs)):
            if type(out) is not np.ndarray or out.shape != shape or out.dtype != dtype or \
                    not out.flags.c_contiguous or not out.flags.writeable:
                got = f"{out.dtype}{list(out.shape)}" if isinstance(out, np.ndarray) else \
                    type(out).__name__
                raise BadInputError(f"output array for '{t.name}' is {got}; it must be a "
                                    f"writable C-contiguous {np.dtype(dtype)}{list(shape)}")
            # the kernels assume outputs alias nothing they read or write
            for other in (*arrays, *outputs[:i]):
                if np.may_share_memory(out, other):
                    raise BadInputError(f"output array for '{t.name}' overlaps an input or "
                                        "another output array; give separate arrays")
        return outputs
