"""Benchmark the C backend against onnxruntime and OpenVINO (f32), with the machine's SGEMM peak.

Every engine runs in this one process, interleaved per round (round r times graphopt, then
onnxruntime, then OpenVINO, then the next round), at 1 and 2 threads, so load from other
processes hits all of them alike; each engine's latency is the median of its round medians.
Per model: latency per engine, the ratios (above 1: graphopt is faster), graphopt's GFLOP/s
(Conv/Gemm/MatMul work of the compiled program) and its fraction of the SGEMM peak, which is
numpy's 1024^3 float32 matmul measured in the same run (the `matmul1024` row is graphopt on
that same product). OpenVINO runs with INFERENCE_PRECISION_HINT=f32 and is skipped with a note
when it is not installed (`pip install -e .[bench]`).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_backend.py
    python benchmarks/bench_backend.py --models mlp resnet18 --threads 1 --rounds 5

(OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, where set, make numpy's OpenBLAS pick a slower kernel;
unset them for this command only so the SGEMM peak is the real one.)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from _common import SETTLE_SECONDS, machine_line
from graphopt.backend import compile as compile_model
from graphopt.backend.bench import one_thread_share, onnxruntime_session, step_flops
from graphopt.backend.program import Program
from graphopt.numerics import random_inputs
from graphopt.testing import sample_models_dir

SHARED = sample_models_dir()
DEFAULT_MODELS = ("mlp", "digits_cnn", "mobilenet_v2", "resnet18", "minilm")
PEAK_SIZE = 1024


@dataclass
class Result:
    name: str
    flops: int
    ms: dict[tuple[str, int], float] = field(default_factory=dict)  # (engine, threads) -> ms
    max_abs_diff: float = 0.0
    error: str = ""
    # threads -> share of graphopt's runs the thread governor ran on 1 thread (other load)
    one_thread_share: dict[int, float] = field(default_factory=dict)


def program_flops(program: Program) -> int:
    """Multiply-add work (2 flops each) of the Conv/Gemm/MatMul steps of a compiled program."""
    return sum(step_flops(step) for step in program.steps)


def matmul_model(n: int) -> onnx.ModelProto:
    """Y = A @ B for two n x n float inputs (the SGEMM row)."""
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("A", "B")]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "matmul", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def openvino_runner(model: Path, threads: int) -> Callable[[dict], object] | None:
    """A callable running `model` on OpenVINO's CPU plugin in f32, or None if not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
              "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(core.read_model(str(model)), "CPU", config)
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds)


def numpy_runner(threads: int) -> Callable[[dict], object]:
    """numpy's float32 matmul (OpenBLAS SGEMM) limited to `threads`."""
    from threadpoolctl import threadpool_limits

    def run(feeds: dict) -> object:
        with threadpool_limits(threads):
            return np.matmul(feeds["A"], feeds["B"])

    return run


def interleaved_ms(runners: dict[str, Callable[[], object]], rounds: int,
                   round_seconds: float,
                   clock: Callable[[], float] = time.perf_counter,
                   gap_seconds: float = SETTLE_SECONDS) -> dict[str, float]:
    """Median over rounds of each runner's median time in a round; runners alternate, with a
    pause of `gap_seconds` before each one's turn. `clock`: wall time by default;
    time.process_time counts only this process's CPU time."""
    calls = {}
    for name, fn in runners.items():  # warm up and size a round to ~round_seconds
        fn()
        start = clock()
        fn()
        calls[name] = max(1, min(50, int(round_seconds / max(clock() - start, 1e-6))))
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            time.sleep(gap_seconds)
            times = []
            for _ in range(calls[name]):
                start = clock()
                fn()
                times.append(clock() - start)
            per_round[name].append(statistics.median(times))
    return {name: 1e3 * statistics.median(values) for name, values in per_round.items()}


def bench_model(name: str, model: Path, threads: list[int], rounds: int, round_seconds: float,
                with_numpy: bool = False) -> Result:
    compiled = compile_model(model)
    feeds = random_inputs(compiled.graph, seed=0)
    result = Result(name, program_flops(compiled.programs()[0]))
    ours = compiled.run(feeds)
    theirs = onnxruntime_session(model, 1).run(None, dict(feeds))
    result.max_abs_diff = max(float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
                              for a, b in zip(ours, theirs))
    for count in threads:
        compiled.set_threads(count)
        session = onnxruntime_session(model, count)
        runners = {"graphopt": lambda: compiled.run(feeds),
                   "onnxruntime": lambda s=session: s.run(None, dict(feeds))}
        openvino = openvino_runner(model, count)
        if openvino is not None:
            runners["openvino"] = lambda ov=openvino: ov(dict(feeds))
        if with_numpy:
            runners["numpy"] = lambda np_run=numpy_runner(count): np_run(feeds)
        before = compiled.thread_runs()
        for engine, ms in interleaved_ms(runners, rounds, round_seconds).items():
            result.ms[(engine, count)] = ms
        share = one_thread_share(compiled, before, count)
        if share:
            result.one_thread_share[count] = share
    return result



def format_table(results: list[Result], count: int, peak: float) -> str:
    engines = ["onnxruntime", "openvino"]
    head = ["model", "graphopt ms", "ORT ms", "OpenVINO ms", "ORT/graphopt", "OpenVINO/graphopt",
            "graphopt GFLOP/s", "% of SGEMM peak", "max abs diff"]
    title = f"### {count} thread{'s' if count > 1 else ''} (SGEMM peak, numpy: {peak:.1f} GFLOP/s)"
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | failed: {r.error} |")
            continue
        ours = r.ms[("graphopt", count)]
        cells = [r.name, f"{ours:.3f}"]
        cells += [f"{r.ms[(e, count)]:.3f}" if (e, count) in r.ms else "-" for e in engines]
        cells += [f"{r.ms[(e, count)] / ours:.2f}x" if (e, count) in r.ms else "-"
                  for e in engines]
        gflops = r.flops / ours / 1e6
        cells += [f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%" if peak else "-",
                  f"{r.max_abs_diff:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    governed = [f"{r.name} {100 * r.one_thread_share[count]:.0f}%" for r in results
                if r.one_thread_share.get(count)]
    if governed:
        lines.append(f"\nRuns graphopt's thread governor moved to 1 thread because {count} "
                     f"were slower (other load): {', '.join(governed)}")
    return "\n".join(lines)


def _load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS),
                        help="sample model stems (default: %(default)s)")
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--round-seconds", type=float, default=0.15)
    args = parser.parse_args(argv)
    print(f"machine: {machine_line()}; load average {_load()}", flush=True)
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("note: OpenVINO is not installed (pip install -e .[bench]); its columns are empty")
    matmul = Path(tempfile.mkdtemp(prefix="graphopt-bench-")) / f"matmul{PEAK_SIZE}.onnx"
    onnx.save(matmul_model(PEAK_SIZE), matmul)
    peak_row = bench_model(matmul.stem, matmul, args.threads, args.rounds, args.round_seconds,
                           with_numpy=True)
    results = [peak_row]
    for name in args.models:
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        try:
            results.append(bench_model(name, SHARED / f"{name}.onnx", args.threads, args.rounds,
                                       args.round_seconds))
        except Exception as err:  # one failing model must not hide the others' numbers
            results.append(Result(name, 0, error=f"{type(err).__name__}: {err}"[:200]))
    for count in args.threads:
        peak = 2 * PEAK_SIZE ** 3 / peak_row.ms[("numpy", count)] / 1e6
        print()
        print(format_table(results, count, peak))
    print(f"\nload average after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
