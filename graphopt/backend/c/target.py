"""Compilation targets: the few facts that differ between machines, as data on one class.

A target decides compiler flags, whether OpenMP is used, the `restrict` spelling and buffer
alignment. The emitter and the op modules read these attributes; they never branch into a
separate code path per machine. New targets (NEON, a microcontroller) are new instances.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.errors import BadInputError


@dataclass(frozen=True)
class Target:
    """How generated C is compiled and which features it may use.

    cflags: flags for the generated model and csrc kernels (optimization, ISA, language level).
    openmp: add `#pragma omp` to parallel loops and link OpenMP (when the compiler supports it).
    restrict: spelling of C99 `restrict` (empty to disable, e.g. for a C89 toolchain).
    alignment: byte alignment of every arena buffer and packed weight.
    defines: preprocessor macros for the csrc kernels (GRAPHOPT_PORTABLE picks scalar tiles).
    parallel_min_elements: loops over fewer elements stay serial (threading costs more).
    """

    name: str
    cflags: tuple[str, ...]
    openmp: bool
    restrict: str = "restrict"
    alignment: int = 64
    defines: tuple[str, ...] = ()
    parallel_min_elements: int = 1 << 17
    description: str = field(default="", compare=False)

    def parallel_pragma(self, elements: int) -> str | None:
        """The OpenMP pragma for a loop nest over `elements` items, or None to stay serial."""
        if not self.openmp or elements < self.parallel_min_elements:
            return None
        return "#pragma omp parallel for schedule(static)"


NATIVE = Target(
    name="native",
    # -std=c99 turns off FMA contraction (ISO C rule); -ffp-contract=fast turns it back on,
    # which doubles GEMM throughput on FMA hardware (a*b+c rounded once: slightly more exact).
    cflags=("-O3", "-march=native", "-std=c99", "-ffp-contract=fast", "-fno-math-errno"),
    openmp=True,
    description="this machine's ISA (AVX2/AVX-512 via -march=native), OpenMP when available",
)

PORTABLE = Target(
    name="portable",
    cflags=("-O2", "-std=c99"),
    openmp=False,
    defines=("GRAPHOPT_PORTABLE",),
    description="plain C99, no ISA flags, no OpenMP, single thread",
)

TARGETS: dict[str, Target] = {t.name: t for t in (NATIVE, PORTABLE)}


def get_target(target: "str | Target") -> Target:
    """A Target from its name ('native', 'portable') or the Target itself."""
    if isinstance(target, Target):
        return target
    try:
        return TARGETS[target]
    except KeyError:
        raise BadInputError(f"unknown target '{target}'; choose one of "
                            f"{', '.join(TARGETS)}") from None
