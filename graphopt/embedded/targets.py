"""Embedded bundle targets: a backend `Target` (how the C is generated) plus the toolchain facts
a bundle's Makefile, footprint report and tests need (compiler, flags, size tool, how to run).

Every bundle target is the backend's portable target (plain C99, no OpenMP, scalar GEMM tiles;
NEON on aarch64) changed with `dataclasses.replace`: the emitter core is the same, only the
data differs.
32-bit microcontrollers index loops with int32_t (the emit refuses tensors too large for it)
and sum floats in float, since their FPU is single precision (a double would run in software).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from graphopt.backend.c.target import PORTABLE, CacheSizes, Target
from graphopt.errors import BadInputError

_INDEX_MAX = {"int32_t": (1 << 31) - 1, "int64_t": (1 << 63) - 1}


@dataclass(frozen=True)
class BundleTarget:
    """What a bundle is built for.

    codegen: the backend Target the C is generated with (index type, accumulator, alignment).
    cc / size: compiler and binutils `size` of the toolchain; cflags: compile flags (the Makefile
    adds -std=c99 and warnings); ldflags: link flags of example_main; run: command prefix that
    runs the example (an emulator), empty to run it directly; baremetal: needs the startup code
    and linker script of the bundle (semihosting prints the result); packages: Debian packages
    that provide the toolchain and emulator.
    """

    name: str
    codegen: Target
    cc: str
    size: str
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    baremetal: bool = False
    packages: tuple[str, ...] = ()
    description: str = ""

    @property
    def index_max(self) -> int:
        """Largest tensor (in bytes) the target's loop index type can address."""
        return _INDEX_MAX[self.codegen.index_type]


def _codegen(name: str, **changes: object) -> Target:
    """The portable backend target renamed and changed (16-byte alignment saves RAM vs 64)."""
    return dataclasses.replace(PORTABLE, name=name, alignment=16, **changes)


# No data cache to block for, little RAM: the smallest GEMM blocking (its packing scratch
# lives in the arena).
_MCU_CODEGEN = dict(index_type="int32_t", float_accumulator="float",
                    caches=CacheSizes(l1d=2048, l2=8192, l3=8192))
_QEMU_MPS2 = ("-nographic", "-monitor", "none", "-serial", "none",
              "-semihosting-config", "enable=on,target=native", "-kernel")

HOST = BundleTarget(
    name="host", codegen=_codegen("host"), cc="gcc", size="size", cflags=("-O2",),
    description="this machine, plain C99 (the bundle's reference build)")
AARCH64 = BundleTarget(
    name="aarch64", codegen=_codegen("aarch64", isa="neon"), cc="aarch64-linux-gnu-gcc",
    size="aarch64-linux-gnu-size", cflags=("-O2",), ldflags=("-static",),
    run=("qemu-aarch64",), packages=("gcc-aarch64-linux-gnu", "qemu-user"),
    description="64-bit Arm Linux boards (Raspberry Pi 3/4/5, Jetson), NEON GEMM")


def _cortex_m(name: str, fpu: str, board: str, description: str) -> BundleTarget:
    """A Cortex-M with a single-precision FPU: newlib + semihosting, run on a QEMU MPS2 board."""
    return BundleTarget(
        name=name, codegen=_codegen(name, **_MCU_CODEGEN), cc="arm-none-eabi-gcc",
        size="arm-none-eabi-size",
        cflags=("-O2", f"-mcpu={name}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={fpu}"),
        ldflags=("--specs=rdimon.specs", "-nostartfiles"),
        run=("qemu-system-arm", "-M", board, *_QEMU_MPS2), baremetal=True,
        packages=("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm"),
        description=description)


CORTEX_M4 = _cortex_m("cortex-m4", "fpv4-sp-d16", "mps2-an386",
                      "Cortex-M4F (single-precision FPU), e.g. STM32F4; QEMU's MPS2-AN386")
CORTEX_M7 = _cortex_m("cortex-m7", "fpv5-sp-d16", "mps2-an500",
                      "Cortex-M7 with single-precision FPU, e.g. STM32F7; QEMU's MPS2-AN500")

BUNDLE_TARGETS: dict[str, BundleTarget] = {t.name: t for t in (HOST, CORTEX_M4, CORTEX_M7,
                                                                  AARCH64)}


def get_bundle_target(target: "str | BundleTarget") -> BundleTarget:
    """A BundleTarget from its name (host, cortex-m4, cortex-m7, aarch64) or itself."""
    if isinstance(target, BundleTarget):
        return target
    if target not in BUNDLE_TARGETS:
        raise BadInputError(f"unknown embedded target '{target}'; choose one of "
                            f"{', '.join(BUNDLE_TARGETS)}")
    return BUNDLE_TARGETS[target]
