"""The thread governor against a fixed thread count, optionally under artificial load.

graphopt/backend/thread_governor.py lets a run drop from the requested thread count to one
thread while that is faster (another process holding a core makes every OpenMP join wait for a
switched-out worker). This script runs, in one process and interleaved per round, a model
compiled three ways: `threads` with the governor (the default), `threads` fixed
(`adaptive_threads=False`) and one thread; `--busy K` starts K processes that spin for the
whole run, as other jobs on a shared machine would. Per configuration: the median of round
medians and the 10th/50th/90th percentiles of all runs, and the share of the governed runs
that took one thread.

    python benchmarks/governor_ab.py --models mlp mobilenet_v2
    python benchmarks/governor_ab.py --models mlp --busy 1
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

import numpy as np

from _common import machine_line
from bench_backend import SHARED
from graphopt.backend import compile as compile_model
from graphopt.numerics import random_inputs


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def run_model(name: str, threads: int, rounds: int, round_seconds: float) -> str:
    path = SHARED / f"{name}.onnx"
    models = {"governed": compile_model(path, threads=threads),
              "fixed": compile_model(path, threads=threads, adaptive_threads=False),
              "one thread": compile_model(path, threads=1)}
    feeds = random_inputs(models["one thread"].graph, seed=0)
    calls = {}
    for label, model in models.items():  # warm up, size a round
        model.run(feeds)
        start = time.perf_counter()
        model.run(feeds)
        calls[label] = max(3, min(200, int(round_seconds / (time.perf_counter() - start))))
    medians: dict[str, list[float]] = {label: [] for label in models}
    samples: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(rounds):
        for label, model in models.items():
            time.sleep(0.3)
            times = []
            for _ in range(calls[label]):
                start = time.perf_counter()
                model.run(feeds)
                times.append(time.perf_counter() - start)
            medians[label].append(statistics.median(times))
            samples[label] += times
    runs = models["governed"].thread_runs()
    lines = []
    for label in models:
        p10, p50, p90 = np.percentile(np.array(samples[label]) * 1e3, [10, 50, 90])
        note = f" ({100 * runs.get(1, 0) / max(sum(runs.values()), 1):.0f}% on one thread)" \
            if label == "governed" else ""
        lines.append(f"| {name} | {label}{note} | {1e3 * statistics.median(medians[label]):.3f} "
                     f"| {p10:.3f} | {p50:.3f} | {p90:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["mlp", "mobilenet_v2"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--round-seconds", type=float, default=0.3)
    parser.add_argument("--busy", type=int, default=0,
                        help="processes spinning during the run (artificial load)")
    args = parser.parse_args(argv)
    print(f"machine: {machine_line()}; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}; {args.busy} busy process(es)\n")
    busy = [multiprocessing.Process(target=spin, args=(3600.0,), daemon=True)
            for _ in range(args.busy)]
    for process in busy:
        process.start()
    try:
        rows = [run_model(name, args.threads, args.rounds, args.round_seconds)
                for name in args.models]
    finally:
        for process in busy:
            process.terminate()
    print(f"| model | {args.threads} threads | median ms | p10 ms | p50 ms | p90 ms |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
