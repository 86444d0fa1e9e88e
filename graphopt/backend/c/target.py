"""Compilation targets: the few facts that differ between machines, as data on one class.

A target decides compiler flags, whether OpenMP is used, the `restrict` spelling, buffer
alignment, the GEMM micro-kernel family (`isa`) and the cache sizes its blocking is sized from.
The emitter and the op modules read these attributes; they never branch into a separate code
path per machine. New targets (NEON, a microcontroller) are new instances. What the csrc
kernels read of a target reaches them through a generated header (`c/config.py`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from graphopt.errors import BadInputError
from graphopt.ir.types import DType

log = logging.getLogger(__name__)

_SYS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True)
class CacheSizes:
    """Data cache sizes in bytes (per core for L1/L2; the L3 share one core may use)."""

    l1d: int = 32 * 1024
    l2: int = 512 * 1024
    l3: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class ThreadGrain:
    """When work is shared between threads: the one grain rule every parallel loop and csrc
    kernel applies (`Target.parallel_min_macs` / `parallel_min_bytes`, also in
    graphopt_config.h). A step stays on one thread unless its estimated one-core time reaches
    `ratio` fork/joins, so threading never costs more than 1/ratio of the work, and is
    estimated from its multiply-adds or its bytes moved, whichever says longer.

    Defaults from 2-core AMD EPYC guests (benchmarks/omp_probe.py): with build.py's bounded
    spin an OpenMP fork/join of 2 threads costs ~0.7 us while the team is awake (within a run)
    and 20-40 us when it has gone to sleep (the first region of a run); `fork_join_us` is a
    run's average plus the imbalance of splitting small work. One core sustains ~20 GMAC/s in
    the GEMM and streams ~10 GB/s (Zen 3; Zen 4 is faster, which only makes the rule cautious).
    """

    fork_join_us: float = 6.0
    macs_per_us: float = 20_000.0
    bytes_per_us: float = 10_000.0
    ratio: float = 5.0

    @property
    def min_macs(self) -> int:
        return int(self.ratio * self.fork_join_us * self.macs_per_us)

    @property
    def min_bytes(self) -> int:
        return int(self.ratio * self.fork_join_us * self.bytes_per_us)


def machine_caches(root: Path = _SYS_CACHE) -> CacheSizes:
    """This machine's cache sizes from sysfs (Linux), else the CacheSizes defaults.

    L3 is divided by the number of CPUs sharing it, so blocking sized from it leaves room for
    the other cores' blocks."""
    sizes: dict[str, int] = {}
    try:
        for index in sorted(root.glob("index*")):
            kind = (index / "type").read_text().strip()
            if kind == "Instruction":
                continue
            level = (index / "level").read_text().strip()
            size = _parse_size((index / "size").read_text().strip())
            sharing = _count_cpus((index / "shared_cpu_list").read_text().strip())
            key = {"1": "l1d", "2": "l2", "3": "l3"}.get(level)
            if key and size:
                sizes[key] = size // max(sharing, 1) if key == "l3" else size
    except (OSError, ValueError) as err:
        log.debug("cache sizes unreadable (%s); using defaults", err)
    return CacheSizes(**sizes)


def _parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024 * 1024, "G": 1024 ** 3}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text or 0)


def _count_cpus(cpu_list: str) -> int:
    """Number of CPUs in a sysfs list such as '0-3,8'."""
    count = 0
    for part in filter(None, cpu_list.split(",")):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


@dataclass(frozen=True)
class Target:
    """How generated C is compiled and which features it may use.

    cflags: flags for the generated model and csrc kernels (optimization, ISA, language level).
    openmp: add `#pragma omp` to parallel loops and link OpenMP (when the compiler supports it).
    restrict: spelling of C99 `restrict` (empty to disable, e.g. for a C89 toolchain).
    alignment: byte alignment of every arena buffer and packed weight.
    defines: extra preprocessor macros for the generated model and the csrc kernels.
    index_type: C type of emitted loop indices (int32_t on 32-bit MCUs, where the embedded
      bundle refuses tensors too large for it).
    float_accumulator: type of float sums (reductions); "float" on single-precision FPUs.
    isa: GEMM micro-kernel family (`c/tiles.py`: "avx512", "avx2", "neon", "scalar"), or
      "auto": the widest one whose feature macros the compiler defines under `cflags`.
    caches: cache sizes the GEMM blocking (KC, MC, NC) is derived from.
    grain: when a loop or kernel call is shared between threads (ThreadGrain).
    """

    name: str
    cflags: tuple[str, ...]
    openmp: bool
    restrict: str = "restrict"
    alignment: int = 64
    defines: tuple[str, ...] = ()
    index_type: str = "int64_t"
    float_accumulator: str = "double"
    description: str = field(default="", compare=False)
    isa: str = "auto"
    caches: CacheSizes = field(default_factory=CacheSizes)
    grain: ThreadGrain = field(default_factory=ThreadGrain)

    @property
    def parallel_min_macs(self) -> int:
        """A GEMM or convolution with fewer multiply-adds runs on one thread."""
        return self.grain.min_macs

    @property
    def parallel_min_bytes(self) -> int:
        """A memory-bound kernel moving fewer bytes runs on one thread."""
        return self.grain.min_bytes

    def wide_float(self, dtype: DType) -> str:
        """C type of a float intermediate whose width cannot change the result (a rounded
        quotient plus a zero point, before clamping): `float_accumulator` for float data, so a
        single-precision FPU never runs it as software double; double data stays double."""
        return "double" if dtype == DType.DOUBLE else self.float_accumulator

    def parallel_pragma(self, elements: int) -> str | None:
        """The OpenMP pragma for a loop nest touching `elements` values (4 bytes each, the
        float case), or None to stay serial (the grain rule)."""
        if not self.openmp or 4 * elements < self.parallel_min_bytes:
            return None
        return "#pragma omp parallel for schedule(static)"


NATIVE = Target(
    name="native",
    # -std=c99 turns off FMA contraction (ISO C rule); -ffp-contract=fast turns it back on,
    # which doubles GEMM throughput on FMA hardware (a*b+c rounded once: slightly more exact).
    cflags=("-O3", "-march=native", "-std=c99", "-ffp-contract=fast", "-fno-math-errno"),
    openmp=True,
    description="this machine's ISA (AVX2/AVX-512 via -march=native), OpenMP when available",
    caches=machine_caches(),
)

PORTABLE = Target(
    name="portable",
    cflags=("-O2", "-std=c99"),
    openmp=False,
    description="plain C99, no ISA flags, no OpenMP, single thread",
    isa="scalar",
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
