"""OpenMP fork/join and barrier cost on this machine, per wait policy (a tiny C probe).

The C backend opens one OpenMP parallel region per threaded kernel call, so what a region costs
decides which steps are worth threading (`Target.grain`, graphopt/backend/c/target.py) and how
long libgomp's idle threads should spin before sleeping (graphopt/backend/build.py). The probe
times an almost empty region after a serial gap (0 us: back to back, as between two kernels of
one run; longer: a serial step in between, or the next run), a barrier inside a region, and the
cost of one spin iteration (`pause`: libgomp counts GOMP_SPINCOUNT in these). Each policy runs
in its own process (libgomp reads the variables once, when it loads), interleaved over rounds;
the table gives the median over rounds of each round's median, in microseconds.

    python benchmarks/omp_probe.py
    python benchmarks/omp_probe.py --policies OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=300 --rounds 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine_line
from graphopt.backend.build import toolchain

GAPS_US = (0, 20, 100, 500)
PROBE = r"""
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static void busy_us(double us) { double end = now() + us * 1e-6; while (now() < end) {} }
static int cmp(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}
static volatile int sink[64];

int main(int argc, char** argv) {
    int reps = atoi(argv[1]);
    double* t = malloc(sizeof(double) * reps);
    omp_set_num_threads(2);
#pragma omp parallel
    sink[omp_get_thread_num() * 16]++;
    for (int g = 2; g < argc; ++g) {
        double gap = atof(argv[g]);
        for (int r = 0; r < reps; ++r) {
            busy_us(gap);
            double start = now();
#pragma omp parallel
            sink[omp_get_thread_num() * 16]++;
            t[r] = now() - start;
        }
        qsort(t, reps, sizeof(double), cmp);
        printf("fork/join after %s us: %.3f\n", argv[g], t[reps / 2] * 1e6);
    }
#pragma omp parallel
    {
        double start = now();
        for (int r = 0; r < reps; ++r) {
#pragma omp barrier
        }
#pragma omp master
        printf("barrier: %.3f\n", (now() - start) / reps * 1e6);
    }
#if defined(__x86_64__) || defined(__i386__)
    double best = 1e9;
    for (int r = 0; r < 20; ++r) {
        double start = now();
        for (int i = 0; i < 100000; ++i) __builtin_ia32_pause();
        if (now() - start < best) best = now() - start;
    }
    printf("spin iteration (pause): %.4f\n", best / 100000 * 1e6);
#endif
    return 0;
}
"""


def build_probe(directory: Path) -> Path:
    source, binary = directory / "omp_probe.c", directory / "omp_probe"
    source.write_text(PROBE)
    tools = toolchain()
    if not tools.openmp:
        raise SystemExit(f"{tools.compiler} has no OpenMP: nothing to measure")
    subprocess.run([tools.compiler, "-O2", "-fopenmp", str(source), "-o", str(binary)], check=True)
    return binary


def run_once(binary: Path, policy: str, reps: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    for assignment in filter(None, policy.split(",")):
        name, _, value = assignment.partition("=")
        env[name] = value
    out = subprocess.run([str(binary), str(reps), *map(str, GAPS_US)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return {line.rsplit(":", 1)[0]: float(line.rsplit(":", 1)[1]) for line in out.splitlines()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="*",
                        default=["OMP_WAIT_POLICY=PASSIVE", "GOMP_SPINCOUNT=3000",
                                 "GOMP_SPINCOUNT=10000", ""],
                        help="environment per run, NAME=VALUE[,NAME=VALUE]; '' = libgomp's "
                             "default; GOMP_SPINCOUNT=10000 is what graphopt sets "
                             "(default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"machine: {machine_line()}; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="graphopt-omp-probe-") as tmp:
        binary = build_probe(Path(tmp))
        samples: dict[str, dict[str, list[float]]] = {p: {} for p in args.policies}
        for _ in range(args.rounds):
            for policy in args.policies:
                for key, value in run_once(binary, policy, args.reps).items():
                    samples[policy].setdefault(key, []).append(value)
    keys = list(next(iter(samples.values())))
    print("\n| policy | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for policy, values in samples.items():
        cells = [f"{statistics.median(values[k]):.2f}" for k in keys]
        print(f"| {policy or 'libgomp default'} | " + " | ".join(cells) + " |")
    print(f"\n(microseconds, median of {args.rounds} rounds; load average after "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
