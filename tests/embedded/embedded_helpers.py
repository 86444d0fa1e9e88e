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
