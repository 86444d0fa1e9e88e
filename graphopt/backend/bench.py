"""Latency measurement: graphopt's compiled model vs onnxruntime at the same thread count.

Both engines get the same inputs, a few warm-up runs, then `repeat` timed runs (stopping early
once `budget_seconds` are spent); the median is reported. onnxruntime runs with its default
graph optimizations (ORT_ENABLE_ALL) and intra-op threads = `threads`, so the comparison is
against onnxruntime at its best, not a handicapped baseline.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import onnx

from graphopt.backend.api import CompiledModel
from graphopt.backend.runtime import Report
from graphopt.progress import Progress


@dataclass(frozen=True)
class Timing:
    threads: int
    graphopt_ms: float
    onnxruntime_ms: float

    @property
    def speedup(self) -> float:
        """onnxruntime time / graphopt time: above 1 means graphopt is faster."""
        return self.onnxruntime_ms / self.graphopt_ms if self.graphopt_ms else 0.0


def median_ms(fn: Callable[[], object], repeat: int = 20, warmup: int = 2,
              budget_seconds: float = 10.0, progress: Progress | None = None,
              label: str = "") -> float:
    """Median wall time of fn() in milliseconds. With `progress`, the timing is a step of it,
    announced when the warm-up runs say it will take a few seconds."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    if progress is not None:
        per_run = (time.perf_counter() - start) / warmup if warmup else 0.0
        expected = min(per_run * repeat, budget_seconds)
        progress.step(f"{label}: {repeat} runs of ~{per_run * 1e3:.3g} ms (at most "
                      f"{budget_seconds:g} s)", expected_seconds=expected)
    times: list[float] = []
    deadline = time.perf_counter() + budget_seconds
    while len(times) < repeat and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def onnxruntime_session(model: "str | os.PathLike | onnx.ModelProto", threads: int):  # noqa: ANN201
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def compare_latency(compiled: CompiledModel, model: "str | os.PathLike | onnx.ModelProto",
                    feeds: Mapping[str, np.ndarray], threads: int, repeat: int = 20,
                    budget_seconds: float = 10.0) -> Timing:
    """Median latency of `compiled` and of onnxruntime on `model`, both with `threads` threads."""
    compiled.set_threads(threads)
    progress = Progress(f"bench ({threads} thread{'s' if threads > 1 else ''})", total=2)
    ours = median_ms(lambda: compiled.run(feeds), repeat, budget_seconds=budget_seconds,
                     progress=progress, label="graphopt")
    session = onnxruntime_session(model, threads)
    theirs = median_ms(lambda: session.run(None, dict(feeds)), repeat,
                       budget_seconds=budget_seconds, progress=progress, label="onnxruntime")
    progress.done()
    return Timing(threads, ours, theirs)


def format_report(name: str, report: Report) -> str:
    """One line about a compiled specialization: steps, memory, compile time. Sizes use the one
    byte format of every graphopt summary (analysis.human_bytes); the arena's share of the
    activations is given only when there are activations to share."""
    from graphopt.analysis import human_bytes

    source = "cached" if report.cached else "compiled"
    if report.activation_bytes:
        arena = (f"arena {human_bytes(report.arena_bytes)} = {100 * report.arena_ratio:.1f}% of "
                 f"{human_bytes(report.activation_bytes)} of activations")
    else:
        arena = f"arena {human_bytes(report.arena_bytes)} (no intermediate tensors)"
    return (f"{name}: {report.steps} kernels ({report.views} views, {report.inplace} in place, "
            f"{report.fused_epilogues} fused epilogues); {arena}; weights "
            f"{human_bytes(report.weight_bytes)}; {source} in {report.compile_seconds:.2f} s for "
            f"{report.target}")
