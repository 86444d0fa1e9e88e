"""One compiled specialization in memory: the loaded module, its weight blob and arena.

`Executable.run` hands the C entry point pointers to the caller's input arrays, output arrays
(fresh ones, or the caller's own with `outputs=`), the weight blob and the arena (both 64-byte
aligned numpy buffers owned here), through pointer tables built once. cffi releases the GIL
during the call. An Executable is not re-entrant: its arena and pointer tables are shared by
calls, so the CompiledModel serializes runs with a lock.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graphopt.backend.build import BuiltModule
from graphopt.backend.c.codegen import GeneratedCode
from graphopt.errors import BadInputError

log = logging.getLogger(__name__)


def aligned_bytes(nbytes: int, alignment: int = 64) -> np.ndarray:
    """A uint8 array of `nbytes` whose data pointer is a multiple of `alignment`."""
    raw = np.zeros(nbytes + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + nbytes]


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
        self._outputs_ptr = self._ffi.new("void*[]", max(len(self.program.outputs), 1))
        self._output_specs = [(t.shape, np.dtype(t.dtype.numpy)) for t in self.program.outputs]
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
        """Outputs for inputs already checked to match this specialization, written into
        `outputs` when given (checked here: one writable C-contiguous array per output, of its
        exact shape and dtype), else into new arrays."""
        if outputs is None:
            outputs = [np.empty(shape, dtype) for shape, dtype in self._output_specs]
        else:
            outputs = self._check_outputs(outputs)
        ffi = self._ffi
        buffers = [ffi.from_buffer(a) for a in arrays] + \
            [ffi.from_buffer(o, require_writable=True) for o in outputs]
        for i in range(len(arrays)):
            self._inputs_ptr[i] = buffers[i]
        for i in range(len(outputs)):
            self._outputs_ptr[i] = buffers[len(arrays) + i]
        status = self._entry(self._inputs_ptr, self._outputs_ptr, self._weights_ptr,
                             self._arena_ptr)
        if status:
            step = self.program.steps[status - 1]
            raise BadInputError(f"{step.node.describe()} failed at run time: an index read from "
                                f"the inputs is out of range ({step.describe()})")
        return outputs

    def _check_outputs(self, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs = list(outputs)
        if len(outputs) != len(self._output_specs):
            raise BadInputError(f"got {len(outputs)} output array(s); the model has "
                                f"{len(self._output_specs)} outputs")
        for t, (shape, dtype), out in zip(self.program.outputs, self._output_specs, outputs):
            if type(out) is not np.ndarray or out.shape != shape or out.dtype != dtype or \
                    not out.flags.c_contiguous or not out.flags.writeable:
                got = f"{out.dtype}{list(out.shape)}" if isinstance(out, np.ndarray) else \
                    type(out).__name__
                raise BadInputError(f"output array for '{t.name}' is {got}; it must be a "
                                    f"writable C-contiguous {np.dtype(dtype)}{list(shape)}")
        return outputs
