"""How fast a model could run at best on this machine: its weight-read and arithmetic floors.

Every inference reads all the weights once and does all the multiply-adds once. A batch-1
model with large weights and one multiply-add per weight (mlp: 2.6 MiB of float32 weights) is
bound by how fast one core, or two, can stream those bytes from the cache level they live in;
a small CNN (digits_cnn) by the cores' multiply-add rate. This script measures both floors in
one run: the read floor with a tiny C probe (OpenMP, vectorized by the compiler) that sums a
buffer the size of the model's weights over and over, as repeated inferences re-read the same
weights (fastest read); the arithmetic floor as the model's Conv/Gemm/MatMul work at the
cores' multiply-add rate, measured by the same probe (independent chains in registers). Then graphopt and onnxruntime run the model
interleaved in the same process (as benchmarks/bench_backend.py does). The table says how close
graphopt is to the higher floor and whether a latency of half onnxruntime's is possible at all
without an algorithm doing fewer multiply-adds (Winograd) or reading fewer bytes.

    python benchmarks/latency_floor.py
    python benchmarks/latency_floor.py --models mlp resnet18 --threads 1 2 --rounds 7
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from _common import machine_line
from bench_backend import SHARED, interleaved_ms, program_flops
from graphopt.backend import compile as compile_model
from graphopt.backend.bench import onnxruntime_session
from graphopt.backend.build import toolchain
from graphopt.numerics import random_inputs

PROBE = r"""
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Sum of n words, split evenly between the threads of one parallel region (as a kernel's
   weight stream is); integer adds so the compiler vectorizes without reassociation flags. */
static uint32_t read_all(const uint32_t* a, int64_t n) {
    uint32_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) total += a[i];
    return total;
}

/* Independent multiply-add chains in registers on every thread: the cores' arithmetic
   ceiling (64-byte vectors: one zmm, or two ymm where the CPU has no AVX-512). */
typedef float v16 __attribute__((vector_size(64)));
#define CHAINS 12
static float fma_flops(int64_t iters, double* seconds) {
    float total = 0;
    double start = now();
#pragma omp parallel reduction(+ : total)
    {
        v16 acc[CHAINS], x, y;
        for (int i = 0; i < 16; ++i) { x[i] = 0.999f; y[i] = 1e-3f; }
        for (int c = 0; c < CHAINS; ++c) acc[c] = x * (float)c;
        for (int64_t it = 0; it < iters; ++it)
            for (int c = 0; c < CHAINS; ++c) acc[c] = acc[c] * x + y;
        for (int c = 0; c < CHAINS; ++c) total += acc[c][0];
    }
    *seconds = now() - start;
    return total;
}

int main(int argc, char** argv) {
    int threads = atoi(argv[2]), reps = atoi(argv[3]);
    omp_set_num_threads(threads);
    double best = 1e9;
    if (strcmp(argv[1], "fma") == 0) {  /* prints GFLOP/s */
        int64_t iters = 2000000;
        volatile float sink = 0;
        for (int r = 0; r < reps; ++r) {
            double t;
            sink += fma_flops(iters, &t);
            if (t < best) best = t;
        }
        printf("%.3f\n", 2.0 * 16 * CHAINS * iters * threads / best * 1e-9);
        return 0;
    }
    int64_t bytes = atoll(argv[1]), n = bytes / 4;  /* prints microseconds */
    uint32_t* a = aligned_alloc(64, (size_t)((n * 4 + 63) / 64 * 64));
    for (int64_t i = 0; i < n; ++i) a[i] = (uint32_t)i;
    volatile uint32_t sink = read_all(a, n);
    for (int r = 0; r < reps; ++r) {
        double start = now();
        sink += read_all(a, n);
        double t = now() - start;
        if (t < best) best = t;
    }
    printf("%.3f\n", best * 1e6);
    return 0;
}
"""


def build_probe(directory: Path) -> Path:
    source, binary = directory / "stream_probe.c", directory / "stream_probe"
    source.write_text(PROBE)
    tools = toolchain()
    flags = ["-O3", "-march=native"] + (["-fopenmp"] if tools.openmp else [])
    subprocess.run([tools.compiler, *flags, str(source), "-o", str(binary)], check=True)
    return binary


def probe(binary: Path, what: str, threads: int, reps: int) -> float:
    out = subprocess.run([str(binary), what, str(threads), str(reps)], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


def read_floor_us(binary: Path, nbytes: int, threads: int) -> float:
    """Fastest time, in microseconds, to read `nbytes` of hot-in-cache data on `threads`."""
    return probe(binary, str(nbytes), threads, 2000)


def fma_gflops(binary: Path, threads: int) -> float:
    """The cores' float32 multiply-add rate (GFLOP/s, best of 5 tries of ~0.1 s)."""
    return probe(binary, "fma", threads, 5)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's initializers (its weights)."""
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["mlp", "digits_cnn"])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--round-seconds", type=float, default=0.15)
    args = parser.parse_args(argv)
    print(f"machine: {machine_line()}; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphopt-floor-") as tmp:
        binary = build_probe(Path(tmp))
        for name in args.models:
            path = SHARED / f"{name}.onnx"
            nbytes = weight_bytes(onnx.load(str(path)))
            compiled = compile_model(path)
            flops = program_flops(compiled.programs()[0])
            feeds = random_inputs(compiled.graph, seed=0)
            for count in args.threads:
                compiled.set_threads(count)
                session = onnxruntime_session(path, count)
                ms = interleaved_ms({"graphopt": lambda: compiled.run(feeds),
                                     "onnxruntime": lambda s=session: s.run(None, dict(feeds))},
                                    args.rounds, args.round_seconds)
                read = read_floor_us(binary, nbytes, count)
                compute = flops / (1e3 * fma_gflops(binary, count))
                rows.append((name, nbytes / 2**20, count, read, compute,
                             1e3 * ms["graphopt"], 1e3 * ms["onnxruntime"]))
    print("| model | weights MiB | threads | read floor us | arithmetic floor us | graphopt us | "
          "onnxruntime us | graphopt / floor | half of onnxruntime / floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mib, count, read, compute, ours, theirs in rows:
        floor = max(read, compute)
        print(f"| {name} | {mib:.2f} | {count} | {read:.1f} | {compute:.1f} | {ours:.1f} | "
              f"{theirs:.1f} | {ours / floor:.2f} | {theirs / 2 / floor:.2f} |")
    print("\n(read floor: fastest of 2000 reads of a buffer of the weights' size, hot in cache; "
          "arithmetic floor: the model's Conv/Gemm/MatMul flops at the cores' multiply-add "
          "rate (register-only chains, best of 5); floor: the higher of the two; latencies: "
          "median of round medians. 'half of onnxruntime / floor' below 1: a 2x lead over "
          "onnxruntime needs fewer bytes or multiply-adds than the model has (Winograd, "
          "smaller weights) or a faster machine. Load average after "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
