"""The build: disk cache hits, cache directory selection, portable vs native flags, threads."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import make_model
from graphopt.backend import compile as compile_model
from graphopt.backend.c.target import get_target
from graphopt.backend.c.tiles import gemm_tiles


@pytest.fixture(scope="module")
def small_model():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    return make_model(nodes, {"x": (TP.FLOAT, [8, 16])}, ["y"], {"w": w})


def test_second_compile_is_a_cache_hit(small_model, tmp_path):
    first = compile_model(small_model, optimize=False, cache_dir=tmp_path)
    second = compile_model(small_model, optimize=False, cache_dir=tmp_path)
    assert not first.report.cached and second.report.cached
    assert len(list((tmp_path / "modules").iterdir())) == 1
    assert Path(second.report.source_path).is_file()
    assert Path(second.report.source_path).parent.parent == tmp_path / "modules"


def test_cache_dir_comes_from_the_environment(small_model, backend_cache_dir):
    compiled = compile_model(small_model, optimize=False)
    assert Path(compiled.report.source_path).is_relative_to(backend_cache_dir)


def test_portable_build_is_plain_c99_without_openmp(small_model):
    native = compile_model(small_model, optimize=False, target="native")
    portable = compile_model(small_model, optimize=False, target="portable")
    native_flags = json.loads((Path(native.report.source_path).parent / "build.json").read_text())
    flags = json.loads((Path(portable.report.source_path).parent / "build.json").read_text())
    assert "-std=c99" in flags["flags"]
    config = (Path(portable.report.source_path).parent / "graphopt_config.h").read_text()
    assert "#define GRAPHOPT_GEMM_ISA GRAPHOPT_ISA_SCALAR" in config  # the scalar kernels
    assert not any(f.startswith("-march") or "openmp" in f for f in flags["flags"])
    assert "-march=native" in native_flags["flags"]
    assert "#pragma omp" not in portable.source
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    np.testing.assert_allclose(portable.run([x])[0], native.run([x])[0], rtol=1e-5, atol=1e-6)


def test_threads_setting(small_model):
    compiled = compile_model(small_model, optimize=False, threads=1)
    executable = next(iter(compiled._executables.values()))
    compiled.run([np.zeros((8, 16), np.float32)])
    assert executable.threads() == 1
    compiled.set_threads(2)
    compiled.run([np.zeros((8, 16), np.float32)])
    assert executable.threads() in (1, 2)  # 1 when the compiler has no OpenMP


@pytest.mark.parametrize("target", ["native", "portable"])
def test_python_gemm_scratch_bound_covers_csrc(small_model, target):
    """The planner reserves GemmTiles.scratch_bytes(); it must cover what csrc/gemm.c uses."""
    compiled = compile_model(small_model, optimize=False, target=target)
    lib = next(iter(compiled._executables.values()))._lib
    tiles = gemm_tiles(get_target(target))
    for m in (1, 4, 5, 6, 7, 31, 1031, 1032, 1033, 5000):
        for n in (1, 31, 32, 33, 4095, 4097):
            for k in (1, 255, 256, 257, 3000):
                assert tiles.scratch_bytes(m, n, k) >= 4 * lib.graphopt_sgemm_scratch(m, n, k)


def test_wait_policy_is_a_bounded_spin_unless_the_user_chose(monkeypatch):
    """Kernels follow each other within microseconds, so idle OpenMP threads spin
    build.SPIN_COUNT pauses (~0.2 ms) before sleeping; a policy the user set stands."""
    from graphopt.backend import build

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    build._set_wait_policy()
    assert os.environ["GOMP_SPINCOUNT"] == str(build.SPIN_COUNT)
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    build._set_wait_policy()
    assert "GOMP_SPINCOUNT" not in os.environ and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
