"""Benchmark the C backend against onnxruntime on the sample models and onnx's light models.

For each model: compile time, arena bytes and their ratio to the sum of all activations, the
median latency of graphopt and onnxruntime at 1 and 2 threads (same count for both) with the
ratio, and the largest difference between the two engines' outputs. Prints a markdown table
with the machine it ran on.

    python benchmarks/bench_backend.py                   # everything
    python benchmarks/bench_backend.py --models mlp resnet18 --threads 1 --no-optimize
"""
from __future__ import annotations

from graphopt.testing import sample_models_dir
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphopt.backend import compile as compile_model
from graphopt.backend.bench import compare_latency, onnxruntime_session
from graphopt.numerics import random_inputs

SHARED = sample_models_dir()
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@dataclass
class Row:
    name: str
    compile_seconds: float
    arena_mb: float
    activation_mb: float
    timings: dict[int, tuple[float, float]]  # threads -> (graphopt ms, onnxruntime ms)
    max_abs_diff: float
    error: str = ""


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                     if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} logical cores, load average {load}"


def discover(names: list[str] | None) -> list[Path]:
    paths = sorted(SHARED.glob("*.onnx")) + sorted(LIGHT.glob("*.onnx"))
    if names:
        paths = [p for p in paths if p.stem in names or p.stem.replace("light_", "") in names]
    return paths


def bench_one(path: Path, threads: list[int], optimize: bool, level: int, repeat: int,
              cache_dir: str | None) -> Row:
    name = path.stem.replace("light_", "light/")
    started = time.perf_counter()
    compiled = compile_model(path, optimize=optimize, level=level, cache_dir=cache_dir)
    compile_seconds = time.perf_counter() - started
    report = compiled.report
    feeds = random_inputs(compiled.graph, seed=0)
    ours = compiled.run(feeds)
    theirs = onnxruntime_session(path, 1).run(None, feeds)
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
               for a, b in zip(ours, theirs))
    timings = {}
    for count in threads:
        timing = compare_latency(compiled, path, feeds, count, repeat, budget_seconds=15.0)
        timings[count] = (timing.graphopt_ms, timing.onnxruntime_ms)
    mb = 1 / (1 << 20)
    return Row(name, compile_seconds, report.arena_bytes * mb, report.activation_bytes * mb,
               timings, diff)


def format_table(rows: list[Row], threads: list[int]) -> str:
    head = ["model", "compile s", "arena MB", "activations MB", "arena/act"]
    for count in threads:
        head += [f"graphopt {count}T ms", f"ORT {count}T ms", f"ORT/graphopt {count}T"]
    head.append("max abs diff")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if row.error:
            lines.append(f"| {row.name} | failed: {row.error} |")
            continue
        cells = [row.name, f"{row.compile_seconds:.2f}", f"{row.arena_mb:.2f}",
                 f"{row.activation_mb:.2f}", f"{row.arena_mb / max(row.activation_mb, 1e-9):.3f}"]
        for count in threads:
            ours, theirs = row.timings[count]
            cells += [f"{ours:.3f}", f"{theirs:.3f}", f"{theirs / ours:.2f}x"]
        cells.append(f"{row.max_abs_diff:.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="model stems (default: all)")
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--level", type=int, default=2)
    parser.add_argument("--no-optimize", action="store_true", help="skip graphopt's passes")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="compile into an empty cache (compile times without cache hits)")
    args = parser.parse_args(argv)
    cache = tempfile.mkdtemp(prefix="graphopt-bench-") if args.fresh_cache else None
    print(f"machine: {machine()}", flush=True)
    rows = []
    for path in discover(args.models):
        print(f"benchmarking {path.name} ...", file=sys.stderr, flush=True)
        try:
            rows.append(bench_one(path, args.threads, not args.no_optimize, args.level,
                                  args.repeat, cache))
        except Exception as err:  # one failing model must not hide the others' numbers
            rows.append(Row(path.stem, 0, 0, 0, {}, 0, f"{type(err).__name__}: {err}"[:200]))
    print(format_table(rows, args.threads))
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
