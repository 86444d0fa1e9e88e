"""Benchmark graphopt's INT8 C backend against onnxruntime and OpenVINO on onnxruntime's own
static QDQ models, with graphopt's fp32 build of the same model for the int8/fp32 ratio.

The QDQ models are made here with onnxruntime.quantization.quantize_static (QDQ format,
per-channel, u8 activations, s8 weights, calibrated on 4 random inputs; reduce_range=True so
onnxruntime's AVX2 kernels are exact on CPUs without VNNI). Every engine runs in this one
process, interleaved per round (bench_backend.interleaved_ms), at 1 and 2 threads; a latency is
the median of the round medians. OpenVINO is skipped with a note when not installed.
On a machine other processes load, --cpu-time times 1-thread runs by this process's CPU time
(what the engines themselves spend, which the others' load does not inflate).

    python benchmarks/bench_int8.py
    python benchmarks/bench_int8.py --models resnet18 --threads 1 --rounds 5
    python benchmarks/bench_int8.py --threads 1 --cpu-time
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from _common import machine_line
from bench_backend import interleaved_ms, openvino_runner

from graphopt.backend import compile as compile_model
from graphopt.backend.bench import one_thread_share, onnxruntime_session
from graphopt.backend.int8.ort_qdq import quantize_with_onnxruntime, random_feeds
from graphopt.testing import sample_models_dir

ENGINES = ("graphopt int8", "onnxruntime int8", "openvino int8", "graphopt fp32")


def bench(name: str, threads: list[int], rounds: int, round_seconds: float, workdir: Path,
          clock: Callable[[], float]) -> tuple[dict[tuple[str, int], float], str]:
    """Latencies (engine, threads) -> ms, and a note on agreement with onnxruntime."""
    path = sample_models_dir() / f"{name}.onnx"
    model = onnx.load(path)
    qdq_path = workdir / f"{name}.qdq.onnx"
    onnx.save(quantize_with_onnxruntime(model, random_feeds(model, 4)), qdq_path)
    int8 = compile_model(qdq_path)
    fp32 = compile_model(path)
    feeds = random_feeds(model, 1, seed=1)[0]
    ours = int8.run(feeds)[0]
    theirs = onnxruntime_session(qdq_path, 1).run(None, feeds)[0]
    steps = int8.programs()[0].steps
    integer = sum(s.op_type.startswith("Int8") for s in steps)
    note = (f"{name}: {integer}/{len(steps)} steps integer; max |graphopt - onnxruntime| on the "
            f"output {float(np.max(np.abs(ours - theirs))):.3g}")
    results: dict[tuple[str, int], float] = {}
    for count in threads:
        int8.set_threads(count)
        fp32.set_threads(count)
        session = onnxruntime_session(qdq_path, count)
        runners = {"graphopt int8": lambda: int8.run(feeds),
                   "onnxruntime int8": lambda s=session: s.run(None, feeds),
                   "graphopt fp32": lambda: fp32.run(feeds)}
        openvino = openvino_runner(qdq_path, count)
        if openvino is not None:
            runners["openvino int8"] = lambda ov=openvino: ov(dict(feeds))
        before = {"int8": int8.thread_runs(), "fp32": fp32.thread_runs()}
        for engine, ms in interleaved_ms(runners, rounds, round_seconds, clock).items():
            results[(engine, count)] = ms
        for kind, compiled in (("int8", int8), ("fp32", fp32)):
            share = one_thread_share(compiled, before[kind], count)
            if share:
                note += (f"; graphopt {kind} at {count} threads: {100 * share:.0f}% of runs on "
                         "1 thread (thread governor: other load)")
    return results, note


def table(rows: dict[str, dict[tuple[str, int], float]], count: int) -> str:
    head = ["model", *(f"{e} ms" for e in ENGINES), "ORT/graphopt", "OpenVINO/graphopt",
            "graphopt fp32/int8"]
    lines = [f"### {count} thread{'s' if count > 1 else ''}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, ms in rows.items():
        ours = ms[("graphopt int8", count)]
        cells = [name] + [f"{ms[(e, count)]:.2f}" if (e, count) in ms else "-" for e in ENGINES]
        for other in ("onnxruntime int8", "openvino int8", "graphopt fp32"):
            cells.append(f"{ms[(other, count)] / ours:.2f}x" if (other, count) in ms else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--round-seconds", type=float, default=0.2)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by this process's CPU time (1 thread only)")
    args = parser.parse_args(argv)
    if args.cpu_time and args.threads != [1]:
        print("error: --cpu-time needs --threads 1 (the CPU time of several threads is their "
              "sum, not a latency)", file=sys.stderr)
        return 2
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"machine: {machine_line()}" + ("; CPU time" if args.cpu_time else ""), flush=True)
    if importlib.util.find_spec("openvino") is None:
        print("note: OpenVINO is not installed (pip install openvino); its column is empty")
    rows, notes = {}, []
    with tempfile.TemporaryDirectory(prefix="graphopt-int8-") as tmp:
        for name in args.models:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            rows[name], note = bench(name, args.threads, args.rounds, args.round_seconds,
                                     Path(tmp), clock)
            notes.append(note)
    for count in args.threads:
        print()
        print(table(rows, count))
    print()
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
