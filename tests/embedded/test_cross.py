"""Bundles cross-compiled and run under emulation, and the predicted footprint checked against
the cross toolchain: aarch64 (gcc-aarch64-linux-gnu, run by qemu-aarch64) and Cortex-M4F/M7
(gcc-arm-none-eabi + newlib, run by qemu-system-arm on MPS2-AN386/AN500 with semihosting).
Each run prints the example's check (PASS); the footprint must agree with arm-none-eabi-size
and the linker map within 5%, the predicted stack bound the one the run used, and the objects
call neither malloc nor software double routines. Skipped, naming the missing tools, where
they are absent."""
import re

import pytest

from embedded_helpers import (check_linked_footprint, make, require_tools, run_check,
                              soft_double_calls)
from graphopt.embedded import emit_c
from graphopt.embedded.targets import CORTEX_M4
from graphopt.testing import sample_model

MODELS = ["mlp", "digits_cnn"]


@pytest.mark.parametrize("name", MODELS)
def test_aarch64_bundle_runs_under_qemu(name, tmp_path):
    require_tools("aarch64-linux-gnu-gcc", "qemu-aarch64")
    bundle = emit_c(sample_model(f"{name}.onnx"), tmp_path / name, target="aarch64")
    assert "PASS" in run_check(bundle.directory, "aarch64")


@pytest.mark.parametrize("name", MODELS)
def test_cortex_m4_bundle_runs_on_mps2_and_matches_its_footprint(name, tmp_path):
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
    bundle = emit_c(sample_model(f"{name}.onnx"), tmp_path / name, target="cortex-m4")
    assert bundle.footprint.method == "measured"
    output = run_check(bundle.directory, "cortex-m4", "-DMEASURE_STACK")
    stack_used = int(re.search(r"stack used by the run: at most (\d+) bytes", output).group(1))
    assert 0 < stack_used <= bundle.footprint.stack  # the prediction is an upper bound
    check_linked_footprint(bundle, CORTEX_M4)
    assert bundle.footprint.heap == ()  # the run reaches no malloc: all its RAM is counted
    # no double arithmetic on the single-precision FPU (it would run in software)
    objects = (bundle.directory / "build" / "cortex-m4").glob("*.o")
    assert not soft_double_calls(CORTEX_M4, [o for o in objects if o.stem != "example_main"])


def test_cortex_m7_bundle_runs_on_mps2_an500(tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm")
    bundle = emit_c(sample_model("digits_cnn.onnx"), tmp_path / "d", target="cortex-m7")
    assert "PASS" in run_check(bundle.directory, "cortex-m7")
    assert make(bundle.directory, "lib", "cortex-m7").returncode == 0
