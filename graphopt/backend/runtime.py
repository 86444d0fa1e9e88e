"""One compiled specialization in memory: the loaded module, its weight blob and arena.

`Executable.run` hands the C entry point pointers to the caller's input arrays, freshly
allocated output arrays, the weight blob and the arena (both 64-byte aligned numpy buffers
owned here). cffi releases the GIL during the call. An Executable is not re-entrant: its arena
is shared by calls, so the CompiledModel serializes runs with a lock.
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
        self.report = Report(
            target=target_name,
            input_shapes=tuple(t.shape for t in self.program.inputs),
            steps=len(self.program.steps), views=code.views, inplace=code.inplace,
            fused_epilogues=fused_epilogues, arena_bytes=code.arena_bytes,
            activation_bytes=code.activation_bytes, weight_bytes=code.weights.nbytes,
            compile_seconds=compile_seconds, cached=built.cached,
            source_path=str(built.source_path))

    def set_threads(self, threads: int) -> None:
        self._lib.graphopt_set_num_threads(int(threads))

    def threads(self) -> int:
        return int(self._lib.graphopt_get_num_threads())

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs for inputs already checked to match this specialization."""
        outputs = [np.empty(t.shape, dtype=t.dtype.numpy) for t in self.program.outputs]
        ffi = self._ffi
        inputs_ptr = ffi.new("void*[]", [ffi.cast("void*", a.ctypes.data) for a in arrays] or 1)
        outputs_ptr = ffi.new("void*[]", [ffi.cast("void*", o.ctypes.data) for o in outputs] or 1)
        status = self._entry(inputs_ptr, outputs_ptr, self._weights_ptr, self._arena_ptr)
        if status:
            step = self.program.steps[status - 1]
            raise BadInputError(f"{step.node.describe()} failed at run time: an index read from "
                                f"the inputs is out of range ({step.describe()})")
        return outputs
