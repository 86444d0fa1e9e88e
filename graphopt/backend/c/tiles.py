"""GEMM micro-kernel families and the blocking a target gets: one source for Python and C.

csrc/gemm.c has one register-tiled micro-kernel written with each ISA's intrinsics (through a
few vector macros): an MR x NR tile of C is held in MR * NR / VLEN vector accumulators while
K streams through a packed A panel (MR rows) and a packed B panel (NR columns). Which family
a build uses is decided here, from the target: `Target.isa`, or for "auto" the widest family
whose feature macros the compiler predefines under the target's flags (what `-march=native`
enables is what the compiler says, not what /proc/cpuinfo says). The cache blocking around it
(KC deep slices, MC rows, NC columns) is sized from `Target.caches`:

    KC: a B micro-panel slice (KC x NR) fills at most a quarter of L2 and 1024 rows:
        the micro-kernel streams it from L2 while an A panel streams past, and long slices
        store each C tile fewer times (on Zen 3 the 1024^3 product runs ~15% faster at KC
        1024 than at an L1-sized 256); each thread packs the B slices it reads into such a
        buffer of its own (on its stack: 64 KiB for AVX2, 2 KiB on an MCU with 8 KiB of L2);
    MC: the packed A block (MC x KC) fills about half of L2;
    NC: KC x NC floats fill about half of the L3 share of one core: an operand up to that
        size is packed whole at run time, shared by the threads (`pack_whole`).

The result reaches the C side through the generated `graphopt_config.h` (`c/config.py`) and
the Python side (scratch sizes, weights packed at compile time) through `gemm_tiles()`, so the
two can never disagree. An integer micro-kernel (int8 with int32 accumulators) is another
`MicroKernel` entry keyed by its own family name beside these.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphopt.backend.c.target import Target
from graphopt.errors import BadInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MicroKernel:
    """One register tile: `mr` x `nr` floats in vectors of `vlen`, needing `macros` defined."""

    isa: str
    code: int  # GRAPHOPT_ISA_* value in graphopt_config.h
    mr: int
    nr: int
    vlen: int
    macros: tuple[str, ...]


# Widest first: "auto" takes the first family whose macros the compiler defines.
MICRO_KERNELS: dict[str, MicroKernel] = {m.isa: m for m in (
    # 14 x 32: 28 zmm accumulators + 2 B vectors + 1 broadcast of the 32 registers
    MicroKernel("avx512", 2, 14, 32, 16, ("__AVX512F__", "__FMA__")),
    # 6 x 16: 12 ymm accumulators + 2 B vectors + 1 broadcast of the 16 registers
    MicroKernel("avx2", 1, 6, 16, 8, ("__AVX2__", "__FMA__")),
    # 8 x 12: 24 q-register accumulators + 3 B vectors + 1 broadcast of the 32 registers
    MicroKernel("neon", 3, 8, 12, 4, ("__ARM_NEON",)),
    # 4 x 8 scalars: what a plain C compiler keeps in registers on any machine
    MicroKernel("scalar", 0, 4, 8, 1, ()),
)}

SMALL_M = 4  # up to this many rows (A not packed), the GEMM skips packing altogether


@dataclass(frozen=True)
class GemmTiles:
    """The micro-kernel and cache blocking of one build (see the module docstring)."""

    kernel: MicroKernel
    kc: int
    mc: int
    nc: int
    small_m: int = SMALL_M

    @property
    def pack_whole(self) -> int:
        """Floats up to which an operand not packed at compile time is packed whole at run
        time (then the threads share it without further barriers): the size of one KC x NC
        block, about half of the L3 share of one core."""
        return self.kc * self.nc

    @property
    def mr(self) -> int:
        return self.kernel.mr

    @property
    def nr(self) -> int:
        return self.kernel.nr

    def scratch_bytes(self, m: int, n: int, k: int, a_packed: bool = False,
                      b_packed: bool = False) -> int:
        """Bytes of scratch graphopt_sgemm_ex needs: none when both operands come packed or
        M is small and A does not (no packing: the small-M loops read A in place). Else A's
        panels unless A comes packed: the whole of A when it fits `pack_whole`, else one
        MC x KC block (and nothing for B). With A whole but larger than an MC x KC block and B
        packed or fitting `pack_whole` (the row items), also B's panels unless B comes packed
        (the threads share them) and a flag per row and column panel (which are packed yet);
        otherwise each thread packs the B panels it reads into a buffer of its own."""
        if m <= 0 or n <= 0 or k <= 0 or (a_packed and b_packed):
            return 0
        if not a_packed and m <= self.small_m:
            return 0
        a_whole, b_whole = self.packed_a_floats(m, k), self.packed_b_floats(k, n)
        if not a_packed and a_whole > self.pack_whole:
            return 4 * _round_up(min(m, self.mc), self.mr) * min(k, self.kc)
        row_items = a_whole > self.mc * self.kc and (b_packed or b_whole <= self.pack_whole)
        if not row_items:
            return 4 * (0 if a_packed else a_whole)
        flags = _round_up(m, self.mr) // self.mr + _round_up(n, self.nr) // self.nr  # int32s
        return 4 * ((0 if a_packed else a_whole) + (0 if b_packed else b_whole) + flags)

    def packed_a_floats(self, m: int, k: int) -> int:
        """Size of an [M, K] A operand packed by pack_a."""
        return _round_up(m, self.mr) * k

    def packed_b_floats(self, k: int, n: int) -> int:
        """Size of a [K, N] B operand packed by pack_b (or graphopt_im2col_packed)."""
        return k * _round_up(n, self.nr)

    def pack_a(self, a: np.ndarray) -> np.ndarray:
        """A [M, K] as MR-row panels over the whole K: out[p, k, r] = A[p*MR + r, k] (zero
        rows pad M to a multiple of MR), the layout graphopt_sgemm_ex reads as `Ap`."""
        return _panels(np.asarray(a, np.float32), self.mr)

    def pack_b(self, b: np.ndarray) -> np.ndarray:
        """B [K, N] as NR-column panels over the whole K: out[p, k, w] = B[k, p*NR + w],
        the layout graphopt_sgemm_ex reads as `Bp`."""
        return _panels(np.asarray(b, np.float32).T, self.nr)


def _panels(rows: np.ndarray, width: int) -> np.ndarray:
    """rows [R, K] -> [ceil(R / width), K, width], zero-padded."""
    count, depth = rows.shape
    padded = np.zeros((_round_up(max(count, 1), width), depth), np.float32)
    padded[:count] = rows
    return np.ascontiguousarray(padded.reshape(-1, width, depth).transpose(0, 2, 1))


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def _round_down(x: int, m: int) -> int:
    return max(x // m * m, m)


def gemm_tiles(target: Target, compiler: str | None = None) -> GemmTiles:
    """The GEMM tiling of `target` (built with `compiler`, default $CC/gcc)."""
    return _tiles(target, compiler or default_compiler())


@functools.cache
def _tiles(target: Target, compiler: str) -> GemmTiles:
    kernel = micro_kernel(target, compiler)
    caches = target.caches
    kc = min(max(_round_down(caches.l2 // (4 * kernel.nr * 4), 16), 64), 1024)
    mc = min(_round_down(caches.l2 // (2 * kc * 4), kernel.mr), 1024 // kernel.mr * kernel.mr)
    nc = min(_round_down(caches.l3 // (2 * kc * 4), kernel.nr), 8192)
    tiles = GemmTiles(kernel, kc, max(mc, kernel.mr), max(nc, kernel.nr))
    log.debug("target %s: GEMM %s %dx%d, KC %d, MC %d, NC %d", target.name, kernel.isa,
              kernel.mr, kernel.nr, tiles.kc, tiles.mc, tiles.nc)
    return tiles


def micro_kernel(target: Target, compiler: str) -> MicroKernel:
    """The family `target.isa` names, or for "auto" the widest the compiler enables."""
    if target.isa != "auto":
        try:
            return MICRO_KERNELS[target.isa]
        except KeyError:
            raise BadInputError(f"target '{target.name}': unknown isa '{target.isa}'; choose "
                                f"one of auto, {', '.join(MICRO_KERNELS)}") from None
    defined = predefined_macros(compiler, target.cflags)
    for kernel in MICRO_KERNELS.values():
        if all(m in defined for m in kernel.macros):
            return kernel
    return MICRO_KERNELS["scalar"]


def default_compiler() -> str:
    """$CC, else gcc, else cc (the compiler build.py runs)."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or "cc"


@functools.cache
def predefined_macros(compiler: str, cflags: tuple[str, ...]) -> frozenset[str]:
    """Names of the macros `compiler` predefines under `cflags` (empty if it cannot say)."""
    try:
        result = subprocess.run([compiler, *cflags, "-dM", "-E", "-x", "c", os.devnull],
                                capture_output=True, text=True, timeout=60, check=False)
    except OSError as err:
        log.warning("cannot ask %s for its predefined macros (%s): scalar GEMM", compiler, err)
        return frozenset()
    names = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "#define":
            names.add(parts[1])
    return frozenset(names)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This CPU's feature flags as Linux lists them (avx2, fma, avx512f...), empty elsewhere:
    whether kernels compiled for an ISA can run here (tests skip the ones that cannot)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()
