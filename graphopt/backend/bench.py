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
from graphopt.backend.program import Step
from graphopt.backend.runtime import Report
from graphopt.progress import Progress


@dataclass(frozen=True)
class Timing:
    threads: int
    graphopt_ms: float
    onnxruntime_ms: float
    one_thread_share: float = 0.0  # of graphopt's runs, moved to 1 thread by its governor

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
    before = compiled.thread_runs()
    ours = median_ms(lambda: compiled.run(feeds), repeat, budget_seconds=budget_seconds,
                     progress=progress, label="graphopt")
    share = one_thread_share(compiled, before, threads)
    session = onnxruntime_session(model, threads)
    theirs = median_ms(lambda: session.run(None, dict(feeds)), repeat,
                       budget_seconds=budget_seconds, progress=progress, label="onnxruntime")
    progress.done()
    return Timing(threads, ours, theirs, share)


def one_thread_share(compiled: CompiledModel, before: Mapping[int, int], threads: int) -> float:
    """Share of the runs since `before` (an earlier compiled.thread_runs()) that the thread
    governor ran on one thread instead of `threads`, because `threads` was slower under other
    load (backend/thread_governor.py)."""
    after = compiled.thread_runs()
    runs = {n: after.get(n, 0) - before.get(n, 0) for n in (1, threads)}
    total = sum(runs.values())
    return runs[1] / total if threads > 1 and total else 0.0


@dataclass(frozen=True)
class Overhead:
    """Microseconds per call of CompiledModel.run and of its bare C entry point: the fastest
    call of each (a call that a busy machine preempts or slows says nothing about run())."""

    run_us: float
    entry_us: float

    @property
    def python_us(self) -> float:
        """What run() adds around the C: signature lookup, output allocation, pointer binding."""
        return self.run_us - self.entry_us


def run_overhead(compiled: CompiledModel, feeds: Mapping[str, np.ndarray], rounds: int = 15,
                 calls: int = 200, budget_seconds: float = 2.0) -> Overhead:
    """run(feeds) against the bare C call on the same arrays, interleaved in `rounds` rounds
    of up to `calls` calls each (so load from other processes hits both alike), fewer calls
    for a slow model so the whole takes about `budget_seconds`; the fastest call of each.
    run() also allocates fresh outputs and its Python evicts some of the C's data from L1,
    so a real model's figure is above a one-op model's."""
    executable, arrays = compiled.executable(feeds)
    clock = time.perf_counter
    start = clock()
    outputs = compiled.run(feeds)
    per_call = clock() - start
    calls = max(1, min(calls, int(budget_seconds / (2 * rounds * max(per_call, 1e-7)))))
    run_times: list[float] = []
    entry_times: list[float] = []
    for _ in range(rounds):
        for _ in range(calls):
            start = clock()
            compiled.run(feeds)
            run_times.append(clock() - start)
        entry_times += executable.time_entry(arrays, outputs, calls)
    return Overhead(min(run_times) * 1e6, min(entry_times) * 1e6)


def step_flops(step: Step) -> int:
    """Multiply-add work (2 flops each) of a Conv/Gemm/MatMul step on its concrete shapes; 0
    for other ops (their cost is memory traffic, not arithmetic)."""
    out = step.outputs[0]
    if step.op_type == "Conv":
        w = step.inputs[1]
        return 2 * out.size * (w.size // w.shape[0])
    if step.op_type in ("Gemm", "MatMul"):
        a = step.inputs[0]
        depth = a.shape[0] if step.node.attrs.get("transA", 0) else a.shape[-1]
        return 2 * out.size * depth
    return 0


def format_layers(times: list[tuple[Step, float]], top: int = 10) -> str:
    """The `top` slowest kernels of CompiledModel.layer_times, slowest first: time, share of
    the kernels' total, GFLOP/s where the op does arithmetic, and what the kernel computes."""
    total = sum(seconds for _, seconds in times)
    ranked = sorted(times, key=lambda item: -item[1])
    lines = [f"{'us':>9}  {'share':>6}  {'GFLOP/s':>7}  layer"]
    for step, seconds in ranked[:top]:
        share = f"{100 * seconds / total:.1f}%" if total else "-"
        flops = step_flops(step)
        rate = f"{flops / seconds / 1e9:.1f}" if flops and seconds else "-"
        op = step.op_type + (f"[{step.algorithm}]" if step.algorithm else "") + \
            "".join(f"+{e.op_type}" for e in step.epilogue)
        out = step.outputs[0]
        dims = "x".join(map(str, out.shape)) or "scalar"
        lines.append(f"{seconds * 1e6:>9.1f}  {share:>6}  {rate:>7}  {op} '{step.node.name}' -> "
                     f"{out.dtype.short}[{dims}]")
    rest = ranked[top:]
    if rest:
        lines.append(f"{sum(s for _, s in rest) * 1e6:>9.1f}  "
                     f"{100 * sum(s for _, s in rest) / total if total else 0:>5.1f}%  "
                     f"{'':>7}  ({len(rest)} more layers)")
    lines.append(f"{total * 1e6:>9.1f}  {'100%':>6}  {'':>7}  all {len(times)} kernels")
    return "\n".join(lines)


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
