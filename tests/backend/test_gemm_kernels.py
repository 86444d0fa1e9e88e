"""The per-ISA GEMM micro-kernels: odd sizes on every target, and each ISA's kernels compiled
here (run only where the CPU has the instructions; otherwise the test says why it skips)."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from backend_helpers import check_against_onnxruntime, make_model
from onnx import TensorProto as TP
from onnx import helper

from graphopt.backend import compile as compile_model
from graphopt.backend.build import csrc_objects
from graphopt.backend.c.config import config_header
from graphopt.backend.c.target import NATIVE, PORTABLE, Target
from graphopt.backend.c.tiles import (
    MICRO_KERNELS,
    cpu_flags,
    gemm_tiles,
    predefined_macros,
)

RNG = np.random.default_rng(11)
KC = max(gemm_tiles(NATIVE).kc, gemm_tiles(PORTABLE).kc)

# name -> (flags that enable the ISA on x86-64 gcc/clang, /proc/cpuinfo flags needed to run it)
X86_ISAS = {
    "avx512": (("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"), {"avx512f", "fma"}),
    "avx2": (("-mavx2", "-mfma"), {"avx2", "fma"}),
}


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def _odd_sizes_model():
    """MatMul/Gemm with M, N, K off the tile multiples, K = 1, N = 1, M = 1, K across KC
    blocks; constant B (packed at compile time) and run-time B; Conv with odd planes."""
    deep = KC + 37
    nodes = [
        helper.make_node("MatMul", ["A", "W"], ["const_b"]),
        helper.make_node("MatMul", ["A", "Brt"], ["runtime_b"]),
        helper.make_node("MatMul", ["K1", "W1"], ["k_is_1"]),
        helper.make_node("MatMul", ["A", "Wcol"], ["n_is_1"]),
        helper.make_node("MatMul", ["Row", "W"], ["m_is_1"]),
        helper.make_node("MatMul", ["Deep", "Wdeep"], ["deep_const"]),
        helper.make_node("MatMul", ["Deep", "Bdeep"], ["deep_runtime"]),
        helper.make_node("Gemm", ["Deep", "WdeepT", "bias"], ["gemm_t"], transB=1),
        helper.make_node("Relu", ["gemm_t"], ["gemm_relu"]),
        helper.make_node("Conv", ["X", "Wc", "Bc"], ["conv"], pads=[1, 2, 0, 1], strides=[1, 2]),
        helper.make_node("Conv", ["X", "Wdeepc"], ["conv_deep"], pads=[1, 1, 1, 1]),
    ]
    inputs = {"A": (TP.FLOAT, [23, 19]), "Brt": (TP.FLOAT, [19, 29]), "K1": (TP.FLOAT, [7, 1]),
              "Row": (TP.FLOAT, [1, 19]), "Deep": (TP.FLOAT, [9, deep]),
              "Bdeep": (TP.FLOAT, [deep, 17]), "X": (TP.FLOAT, [1, 40, 7, 9])}
    inits = {"W": _w(19, 29), "W1": _w(1, 13), "Wcol": _w(19, 1), "Wdeep": _w(deep, 17),
             "WdeepT": _w(33, deep), "bias": _w(33), "Wc": _w(7, 40, 2, 3), "Bc": _w(7),
             "Wdeepc": _w(5, 40, 3, 3)}
    outputs = ["const_b", "runtime_b", "k_is_1", "n_is_1", "m_is_1", "deep_const",
               "deep_runtime", "gemm_relu", "conv", "conv_deep"]
    return make_model(nodes, inputs, outputs, inits)


@pytest.mark.parametrize("target", ["native", "portable"])
def test_odd_sizes_match_onnxruntime(target):
    check_against_onnxruntime(_odd_sizes_model(), target=target, rtol=2e-4, atol=2e-4)


def _threaded_model():
    """GEMMs above the one-thread grain, cut among 2 threads every way csrc/gemm.c does: A in
    L2 with B packed per thread (wide C, a transposed run-time B), A beyond L2 by row blocks
    (constant B packed at compile time, run-time B packed whole), A packed per MC x KC block
    (too large to pack whole)."""
    tiles = gemm_tiles(NATIVE)
    depth = 2 * tiles.kc + 3
    tall = tiles.pack_whole // depth + tiles.mr + 1  # A just over what is packed whole
    nodes = [
        helper.make_node("MatMul", ["A", "B"], ["wide"]),
        helper.make_node("MatMul", ["Tall", "Wnarrow"], ["narrow"]),
        helper.make_node("MatMul", ["Big", "Bbig"], ["blocked"]),
        helper.make_node("Gemm", ["A", "Bt"], ["transposed"], transB=1),
        helper.make_node("MatMul", ["Tall", "Bmid"], ["tall_runtime_b"]),
    ]
    inputs = {"A": (TP.FLOAT, [70, 300]), "B": (TP.FLOAT, [300, 260]),
              "Tall": (TP.FLOAT, [1500, 300]), "Big": (TP.FLOAT, [tall, depth]),
              "Bbig": (TP.FLOAT, [depth, 21]), "Bt": (TP.FLOAT, [250, 300]),
              "Bmid": (TP.FLOAT, [300, 40])}
    assert 1500 * 300 > tiles.mc * tiles.kc  # "Tall" takes the row blocks
    return make_model(nodes, inputs, ["wide", "narrow", "blocked", "transposed",
                                      "tall_runtime_b"], {"Wnarrow": _w(300, 10)})


@pytest.mark.parametrize("target", ["native", "portable"])
def test_threaded_gemm_matches_onnxruntime(target):
    assert 70 * 260 * 300 >= NATIVE.parallel_min_macs  # the smallest one is threaded
    check_against_onnxruntime(_threaded_model(), target=target, threads=2, rtol=2e-4,
                              atol=2e-4)


def _small_m_model():
    """Few rows (M <= SMALL_M) on constant B, the GEMV path: every row count, a transposed
    (strided) A, N ending in a pair of panels, a lone panel and a partial one, epilogues, and a
    product large enough to be threaded."""
    tiles = gemm_tiles(NATIVE)
    odd_n = 3 * tiles.nr + 5  # a pair of full panels, then a lone partial one
    nodes = [
        helper.make_node("Gemm", ["At", "Wt", "bias"], ["rows3_t"], transA=1),
        helper.make_node("Relu", ["rows3_t"], ["rows3"]),
        helper.make_node("MatMul", ["A2", "W"], ["rows2"]),
        helper.make_node("MatMul", ["A1", "Wn1"], ["n_is_1"]),
        helper.make_node("MatMul", ["A4", "Wbig"], ["rows4_big"]),
        helper.make_node("Relu", ["rows4_big"], ["rows4"]),
        helper.make_node("MatMul", ["A1b", "Wbig"], ["row_batch"]),
    ]
    depth = 300
    big_n = NATIVE.parallel_min_macs // (4 * depth) + 2 * tiles.nr + 3
    inputs = {"At": (TP.FLOAT, [depth, 3]), "A2": (TP.FLOAT, [2, depth]),
              "A1": (TP.FLOAT, [1, depth]), "A4": (TP.FLOAT, [4, depth]),
              "A1b": (TP.FLOAT, [1, 1, depth])}
    inits = {"Wt": _w(depth, odd_n), "bias": _w(odd_n), "W": _w(depth, odd_n),
             "Wn1": _w(depth, 1), "Wbig": _w(depth, big_n)}
    return make_model(nodes, inputs, ["rows3", "rows2", "n_is_1", "rows4", "row_batch"], inits)


@pytest.mark.parametrize("target", ["native", "portable"])
@pytest.mark.parametrize("threads", [1, 2])
def test_small_m_on_packed_weights_matches_onnxruntime(target, threads):
    check_against_onnxruntime(_small_m_model(), target=target, threads=threads, rtol=2e-4,
                              atol=2e-4)


def test_constant_weights_are_packed_once_at_compile_time():
    compiled = compile_model(_odd_sizes_model(), optimize=False)
    source = compiled.source
    assert "B_panels" in source and "Bt_panels" in source  # MatMul/Gemm B panels
    # every packed constant GEMM operand is passed as panels, never re-packed per call
    assert source.count("graphopt_sgemm_ex(") >= 8


def test_native_target_picks_the_widest_kernel_the_compiler_enables():
    macros = predefined_macros(shutil.which("gcc") or "cc", NATIVE.cflags)
    tiles = gemm_tiles(NATIVE)
    assert all(m in macros for m in tiles.kernel.macros)
    wider = list(MICRO_KERNELS)[:list(MICRO_KERNELS).index(tiles.kernel.isa)]
    assert not any(all(m in macros for m in MICRO_KERNELS[w].macros) for w in wider)
    assert gemm_tiles(PORTABLE).kernel.isa == "scalar"
    assert tiles.mc % tiles.mr == 0 and tiles.nc % tiles.nr == 0 and tiles.kc >= 64


def test_config_header_carries_the_python_tiles():
    tiles = gemm_tiles(NATIVE)
    header = config_header(NATIVE)
    for name, value in (("MR", tiles.mr), ("NR", tiles.nr), ("KC", tiles.kc), ("MC", tiles.mc),
                        ("NC", tiles.nc)):
        assert f"#define GRAPHOPT_GEMM_{name} {value}\n" in header


def test_panel_layouts():
    tiles = gemm_tiles(NATIVE)
    a, b = _w(tiles.mr + 3, 5), _w(5, tiles.nr + 2)
    pa, pb = tiles.pack_a(a), tiles.pack_b(b)
    assert pa.shape == (2, 5, tiles.mr) and pb.shape == (2, 5, tiles.nr)
    assert pa[1, 4, 2] == a[tiles.mr + 2, 4] and pa[1, 0, 3] == 0.0
    assert pb[1, 3, 1] == b[3, tiles.nr + 1] and pb[1, 3, 2] == 0.0


def _x86_target(isa: str) -> Target:
    flags, _ = X86_ISAS[isa]
    cflags = tuple(f for f in NATIVE.cflags if not f.startswith("-march")) + flags
    return dataclasses.replace(NATIVE, name=f"x86-{isa}", cflags=cflags, isa=isa)


@pytest.mark.parametrize("isa", list(X86_ISAS))
def test_x86_kernels_compile_and_run_where_the_cpu_has_them(isa, backend_cache_dir):
    if "__x86_64__" not in predefined_macros(shutil.which("gcc") or "cc", ()):
        pytest.skip("the compiler does not target x86-64")
    target = _x86_target(isa)
    assert gemm_tiles(target).kernel.isa == isa
    assert all(o.is_file() for o in csrc_objects(target))  # compiles on any x86-64 host
    missing = X86_ISAS[isa][1] - cpu_flags()
    if missing:
        pytest.skip(f"{isa} kernels compiled; not run: this CPU lacks {', '.join(sorted(missing))}")
    check_against_onnxruntime(_odd_sizes_model(), target=target, rtol=2e-4, atol=2e-4)


def test_neon_kernels_compile_with_a_cross_compiler():
    compiler = shutil.which("aarch64-linux-gnu-gcc")
    if compiler is None:
        pytest.skip("no aarch64-linux-gnu-gcc to compile the NEON kernels with")
    target = Target(name="aarch64-neon", cflags=("-O3", "-std=c99", "-march=armv8-a"),
                    openmp=False)
    assert gemm_tiles(target, compiler).kernel.isa == "neon"
    assert all(o.is_file() for o in csrc_objects(target, compiler=compiler))


def test_avx512_tile_geometry_runs_here_through_the_avx2_macros(monkeypatch, backend_cache_dir):
    """The AVX-512 family's 14 x 32 tile cannot run on a CPU without AVX-512, but everything
    except the vector width is the same generic code: run that geometry with 8-wide AVX2 vectors
    (4 vectors per tile row instead of 2), so the tile, packing and edge logic of the widest
    kernel is exercised on every machine that has AVX2."""
    if not {"avx2", "fma"} <= cpu_flags():
        pytest.skip("this CPU lacks AVX2/FMA")
    wide = MICRO_KERNELS["avx512"]
    monkeypatch.setitem(MICRO_KERNELS, "avx2", dataclasses.replace(
        MICRO_KERNELS["avx2"], mr=wide.mr, nr=wide.nr))
    target = dataclasses.replace(_x86_target("avx2"), name="x86-avx2-as-avx512-tile")
    tiles = gemm_tiles(target)
    assert (tiles.mr, tiles.nr) == (wide.mr, wide.nr)
    check_against_onnxruntime(_odd_sizes_model(), target=target, rtol=2e-4, atol=2e-4)
    from test_winograd import _model as winograd_model  # the Winograd GEMMs on that tile too

    check_against_onnxruntime(winograd_model(), target=target)
