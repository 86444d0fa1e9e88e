"""Shared by the embedded bundle tests: build a bundle with its own Makefile and run its check.

Every build adds -Werror -Wvla to the Makefile's -std=c99 -Wall -Wextra -pedantic, so a
warning anywhere in a bundle (generated model, weights, copied kernels, example, startup)
fails the test. Cross builds skip with the reason when the toolchain or emulator is missing.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import onnx
import pytest

STRICT_FLAGS = "-Werror -Wvla"
APT_HINT = ("apt-get install gcc-aarch64-linux-gnu qemu-user gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi qemu-system-arm")


def require_tools(*tools: str) -> None:
    """Skip the test, naming what is missing, unless every tool is on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed ({APT_HINT})")


def make(directory: Path, goal: str = "run", target: str = "host", extra: str = "",
         timeout: int = 600) -> subprocess.CompletedProcess:
    """`make GOAL TARGET=...` in the bundle with the strict flags and `extra` (output captured)."""
    require_tools("make")
    return subprocess.run(["make", "-s", goal, f"TARGET={target}",
                           f"EXTRA_CFLAGS={STRICT_FLAGS} {extra}"], cwd=directory,
                          capture_output=True, text=True, timeout=timeout)


def run_check(directory: Path, target: str = "host", extra: str = "") -> str:
    """Build and run the bundle's example for `target`; assert it printed PASS and exited 0."""
    result = make(directory, "run", target, extra)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"make run TARGET={target} failed:\n{output[-3000:]}"
    assert "PASS" in result.stdout, output[-3000:]
    return result.stdout


def drop_final_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its output Softmax removed: random weights saturate it to one-hot,
    and comparing logits checks every element, not just the argmax."""
    last = model.graph.node[-1]
    if last.op_type != "Softmax" or last.output[0] != model.graph.output[0].name:
        return model
    model.graph.output[0].name = last.input[0]
    del model.graph.node[-1]
    return model


def within(predicted: int, actual: int, fraction: float = 0.05) -> bool:
    return abs(predicted - actual) <= fraction * actual


def linked_footprint(bundle, target) -> dict[str, int]:
    """What the toolchain placed for the bundle's model objects (built by `make run` for the
    Cortex-M `target`): flash and RAM from the linker map and from `size` on the objects."""
    from graphopt.embedded.footprint import object_sizes
    from graphopt.embedded.linkmap import contributions

    build = bundle.directory / "build" / target.name
    objects = [f.replace(".c", ".o") for f in bundle.files
               if f.endswith(".c") and f not in ("example_main.c", "startup_mps2.c")]
    placed = contributions((build / "example.map").read_text())
    sizes = [object_sizes(target, build / o) for o in objects]
    return {"map_flash": sum(placed[o].flash for o in objects),
            "map_ram": sum(placed[o].ram for o in objects),
            "size_flash": sum(text + data for text, data, _ in sizes),
            "size_ram": sum(data + bss for _, data, bss in sizes)}


def check_linked_footprint(bundle, target) -> dict[str, int]:
    """Assert the predicted flash and static RAM (arena + data; the stack is a bound, checked
    by the run) agree within 5% with the linker map and `size`; returns the linked figures."""
    linked = linked_footprint(bundle, target)
    fp = bundle.footprint
    static_ram = fp.ram - fp.stack
    assert within(fp.flash, linked["map_flash"]) and within(fp.flash, linked["size_flash"]), \
        (fp.flash, linked)
    assert within(static_ram, linked["map_ram"]) and within(static_ram, linked["size_ram"]), \
        (static_ram, linked)
    return linked


def soft_double_calls(target, objects) -> set[str]:
    """Software double-precision helpers (__aeabi_d*, conversions to/from double) the objects
    call: on a single-precision FPU each is a double computed in software."""
    called = set()
    for obj in objects:
        out = subprocess.run([target.cc.replace("gcc", "nm"), "-u", str(obj)],
                             capture_output=True, text=True, check=True).stdout
        called |= {line.split()[-1] for line in out.splitlines()
                   if line.split() and (line.split()[-1].startswith("__aeabi_d") or
                                        line.split()[-1] in ("__aeabi_f2d", "__aeabi_i2d",
                                                             "__aeabi_ui2d", "__aeabi_l2d"))}
    return called
