"""How fast a model could run at best when every inference must read its weights once.

A batch-1 model with large weights and little compute per weight (mlp: 2.6 MiB of float32
weights, one multiply-add per weight) is bound by how fast one core, or two, can stream those
bytes from the cache level they live in, not by its arithmetic. This script measures that
floor on this machine: a tiny C probe (OpenMP, vectorized by the compiler) sums a buffer the
size of the model's weights over and over, as repeated inferences re-read the same weights,
and reports the fastest read; then graphopt and onnxruntime run the model interleaved in the
same process (as benchmarks/bench_backend.py does). The table says how close graphopt is to
the floor and whether a latency of half onnxruntime's is possible at all.

    python benchmarks/stream_floor.py
    python benchmarks/stream_floor.py --models mlp resnet18 --threads 1 2 --rounds 7
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
from bench_backend import SHARED, interleaved_ms
from graphopt.backend import compile as compile_model
from graphopt.backend.bench import onnxruntime_session
from graphopt.backend.build import toolchain
from graphopt.numerics import random_inputs

PROBE = r"""
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

int main(int argc, char** argv) {
    int64_t bytes = atoll(argv[1]);
    int threads = atoi(argv[2]), reps = atoi(argv[3]);
    int64_t n = bytes / 4;
    uint32_t* a = aligned_alloc(64, (size_t)((n * 4 + 63) / 64 * 64));
    for (int64_t i = 0; i < n; ++i) a[i] = (uint32_t)i;
    omp_set_num_threads(threads);
    volatile uint32_t sink = read_all(a, n);
    double best = 1e9;
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


def read_floor_us(binary: Path, nbytes: int, threads: int, reps: int = 2000) -> float:
    """Fastest time, in microseconds, to read `nbytes` of hot-in-cache data on `threads`."""
    out = subprocess.run([str(binary), str(nbytes), str(threads), str(reps)], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


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
    with tempfile.TemporaryDirectory(prefix="graphopt-stream-") as tmp:
        binary = build_probe(Path(tmp))
        for name in args.models:
            path = SHARED / f"{name}.onnx"
            nbytes = weight_bytes(onnx.load(str(path)))
            compiled = compile_model(path)
            feeds = random_inputs(compiled.graph, seed=0)
            for count in args.threads:
                compiled.set_threads(count)
                session = onnxruntime_session(path, count)
                ms = interleaved_ms({"graphopt": lambda: compiled.run(feeds),
                                     "onnxruntime": lambda s=session: s.run(None, dict(feeds))},
                                    args.rounds, args.round_seconds)
                floor = read_floor_us(binary, nbytes, count)
                ours, theirs = 1e3 * ms["graphopt"], 1e3 * ms["onnxruntime"]
                rows.append((name, nbytes / 2**20, count, floor, ours, theirs))
    print("| model | weights MiB | threads | read floor us | graphopt us | onnxruntime us | "
          "graphopt / floor | half of onnxruntime / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mib, count, floor, ours, theirs in rows:
        print(f"| {name} | {mib:.2f} | {count} | {floor:.1f} | {ours:.1f} | {theirs:.1f} | "
              f"{ours / floor:.2f} | {theirs / 2 / floor:.2f} |")
    print("\n(read floor: fastest of 2000 reads of a buffer of the weights' size, hot in cache; "
          "latencies: median of round medians. 'half of onnxruntime / floor' below 1 means a "
          f"2x lead over onnxruntime would need weights read faster than this machine can; load "
          f"average after {', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
