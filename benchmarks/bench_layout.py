"""Layout selection in the C backend: each model compiled with layout selection (blocked NCHWc
where the cost model says it pays) and forced to NCHW, timed in the same process at 1 and 2
threads, with onnxruntime (ORT_ENABLE_ALL) as a reference column, then the layout report.

Engines are interleaved per round (auto, nchw, onnxruntime, next round), so load from other
processes hits them alike; each latency is the median of the round medians. The ratio is
nchw / auto: above 1, layout selection is faster; "best-round" is the ratio of the fastest
rounds' medians, the one least disturbed by other load. The layouts are chosen for the thread
count (auto runs the program its set_threads picks), so the report comes once per count.

    python benchmarks/bench_layout.py
    python benchmarks/bench_layout.py --models effnet --threads 1 --rounds 3 --explain
    python benchmarks/bench_layout.py --kernels --threads 1   # per-kernel chains
    python benchmarks/bench_layout.py --calibrate --models resnet18   # cost model vs kernels
    python benchmarks/bench_layout.py --kernel-sums   # sums of per-kernel minima: steadier

--calibrate times every Conv, MaxPool and conversion of a model compiled blocked and NCHW
(per-kernel timings, engines interleaved, the minimum over rounds: the least disturbed by other
load) and prints each kernel's rate next to the time the cost model predicts for it at that
thread count: the measurements graphopt/backend/layouts.py's tables come from (KERNEL_GMACS at
1 thread, THREAD_SPEEDUP from the ratio of the 1- and 2-thread tables).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import numpy as np
import onnx

from _common import SETTLE_SECONDS, format_table, machine_line
from graphopt.backend import compile as compile_model
from graphopt.backend.bench import onnxruntime_session
from graphopt.backend import layouts
from graphopt.backend.lowering import layout_choice
from graphopt.backend.c.target import get_target
from graphopt.backend.program import Step
from graphopt.layout.choice_report import format_choice, summarize_choice
from graphopt.layout.examples import conv_chain, depthwise_blocks
from graphopt.layout.kernels import NCHW, blocked
from graphopt.layout.select import LayoutChoice
from graphopt.numerics import random_inputs
from graphopt.testing import sample_models_dir

MODELS: dict[str, Callable[[], "str | onnx.ModelProto"]] = {
    "resnet18": lambda: str(sample_models_dir() / "resnet18.onnx"),
    "mobilenet_v2": lambda: str(sample_models_dir() / "mobilenet_v2.onnx"),
    # EfficientNet-B0's stage 3 shape: 40 channels x6 expansion at 28x28, SiLU
    "effnet": lambda: depthwise_blocks(channels=40, size=56, expand=6, strides=(2, 1, 1)),
}
# --kernels: mobilenet_v2's depthwise and pointwise shapes, 8 layers each (conv_chain)
KERNEL_CHAINS = [(kind, c, s) for kind, shapes in (
    ("depthwise", ((96, 112), (144, 56), (192, 28), (576, 14), (960, 7))),
    ("pointwise", ((32, 112), (96, 56), (192, 28), (576, 14), (960, 7)))) for c, s in shapes]
ENGINES = ("auto", "nchw", "onnxruntime")


def _median_of_rounds(fns: dict[str, Callable[[], object]], rounds: int, runs: int
                      ) -> dict[str, tuple[float, float]]:
    """Per engine, the median and the minimum over rounds of the median of `runs` timed calls
    (ms): on a loaded machine the minimum is the round least disturbed. Each engine's turn
    starts after a pause (SETTLE_SECONDS) for the previous one's worker threads to go idle."""
    per_round: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(SETTLE_SECONDS)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            per_round[name].append(statistics.median(times))
    return {name: (statistics.median(values) * 1e3, min(values) * 1e3)
            for name, values in per_round.items()}


def bench_model(name: str, model: "str | onnx.ModelProto", threads: list[int], rounds: int,
                runs: int) -> tuple[list[list[str]], list[str], "LayoutChoice | None"]:
    """Table rows (one per thread count), the layout report lines (per thread count: the
    layouts are chosen for it) and the last count's choice of one model."""
    auto = compile_model(model, layout="auto")
    nchw = compile_model(model, layout="nchw")
    feeds = random_inputs(auto.graph, seed=0)
    names = [v.name for v in auto.graph.inputs]
    arrays = [feeds[n] for n in names]
    diff = float(np.max(np.abs(auto.run(arrays)[0] - nchw.run(arrays)[0])))
    rows, report, choice = [], [], None
    for count in threads:
        auto.set_threads(count)
        nchw.set_threads(count)
        choice = layout_choice(auto.executable(arrays)[0].program)
        report += [] if choice is None else [*summarize_choice(choice)]
        session = onnxruntime_session(model, count)
        ms = _median_of_rounds({"auto": lambda: auto.run(arrays),
                                "nchw": lambda: nchw.run(arrays),
                                "onnxruntime": lambda: session.run(None, feeds)}, rounds, runs)
        med = {e: ms[e][0] for e in ENGINES}
        rows.append([name, str(count)] + [f"{med[e]:.2f}" for e in ENGINES] +
                    [f"{med['nchw'] / med['auto']:.2f}x",
                     f"{ms['nchw'][1] / ms['auto'][1]:.2f}x",
                     f"{med['onnxruntime'] / med['auto']:.2f}x", f"{diff:.1e}"])
    return rows, report, choice


def _kernel_minima(model: "str | onnx.ModelProto", modes: tuple[str, ...], threads: int,
                   rounds: int) -> dict[str, dict[str, tuple[Step, float]]]:
    """Per layout mode, each profiled step's minimum time (s) over `rounds` interleaved
    layer_times calls, keyed by node name + op (conversions included)."""
    compiled = {mode: compile_model(model, layout=mode) for mode in modes}
    feeds = random_inputs(compiled[modes[0]].graph, seed=0)
    best: dict[str, dict[str, tuple[Step, float]]] = {mode: {} for mode in modes}
    for _ in range(rounds):
        for mode, m in compiled.items():
            m.set_threads(threads)
            arrays = [feeds[v.name] for v in m.graph.inputs]
            for step, seconds in m.layer_times(arrays, runs=3, budget_seconds=2.0):
                key = f"{step.node.name}:{step.op_type}"
                if key not in best[mode] or seconds < best[mode][key][1]:
                    best[mode][key] = (step, seconds)
    return best


def calibrate(model: "str | onnx.ModelProto", threads: int, rounds: int) -> list[list[str]]:
    """Rows per Conv and MaxPool: its NCHW and blocked kernels' measured ms (and GMAC/s)
    beside the ms the cost model predicts for each on `threads` threads (layouts.step_seconds);
    then each conversion's GB/s and predicted ms."""
    best = _kernel_minima(model, ("nchw", "blocked"), threads, rounds)
    pricing = layouts.Pricing.of(get_target("native"), threads)
    rows = []
    for key, (step, nchw_s) in best["nchw"].items():
        if step.op_type not in ("Conv", "MaxPool") or key not in best["blocked"]:
            continue
        blocked_step, blocked_s = best["blocked"][key]
        macs = layouts.conv_macs(step) if step.op_type == "Conv" else 0
        figures = []
        for s, seconds, layout in ((step, nchw_s, NCHW),
                                   (blocked_step, blocked_s, blocked(pricing.width))):
            predicted = layouts.step_seconds(step, layout, pricing)
            figures += [s.algorithm or s.op_type, f"{seconds * 1e3:.3f}",
                        f"{macs / seconds * 1e-9:.1f}" if macs else "-", f"{predicted * 1e3:.3f}"]
        rows.append([step.node.name[-28:], f"{macs * 1e-6:.1f}" if macs else "-"] + figures)
    for key, (step, seconds) in best["blocked"].items():
        if step.node.domain == layouts.DOMAIN and step.op_type != "MaxPool":
            moved = step.outputs[0].nbytes
            predicted = layouts.STEP_SECONDS + pricing.stream_seconds(moved)
            rows.append([step.node.name[-28:], "-", step.op_type, f"{seconds * 1e3:.3f}",
                         f"{moved / seconds * 1e-9:.1f} GB/s", f"{predicted * 1e3:.3f}"] +
                        [""] * 4)
    return rows


def kernel_sums(name: str, model: "str | onnx.ModelProto", threads: int, rounds: int
                ) -> list[str]:
    """A table row: auto's and nchw's sums of per-kernel minima over `rounds` (ms), and their
    ratio: each kernel's least disturbed time, so a steadier comparison on a loaded machine
    than whole runs (what it leaves out: the gaps between kernels, alike in both)."""
    best = _kernel_minima(model, ("auto", "nchw"), threads, rounds)
    sums = {mode: sum(seconds for _, seconds in steps.values()) * 1e3
            for mode, steps in best.items()}
    return [name, str(threads), f"{sums['auto']:.3g}", f"{sums['nchw']:.3g}",
            f"{sums['nchw'] / sums['auto']:.2f}x"]


CALIBRATE_HEADER = ["step", "MMAC", "nchw kernel", "ms", "GMAC/s", "model ms", "blocked kernel",
                    "ms", "GMAC/s", "model ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per round")
    parser.add_argument("--explain", action="store_true", help="the full per-conv report")
    parser.add_argument("--kernels", action="store_true",
                        help="time 8-layer chains of mobilenet_v2's conv shapes instead")
    parser.add_argument("--calibrate", action="store_true",
                        help="per-kernel times against the cost model's predictions")
    parser.add_argument("--kernel-sums", action="store_true",
                        help="compare sums of per-kernel minima instead of whole runs")
    args = parser.parse_args(argv)
    print(machine_line())
    if args.kernel_sums:
        rows = [kernel_sums(name, MODELS[name](), count, args.rounds)
                for name in args.models for count in args.threads]
        print(f"load average: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(format_table(["model", "threads", "auto ms", "nchw ms", "nchw/auto"], rows))
        return 0
    if args.calibrate:
        for name in args.models:
            for count in args.threads:
                rows = calibrate(MODELS[name](), count, args.rounds)
                print(f"\n{name}, {count} thread(s), load average "
                      f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}:")
                print(format_table(CALIBRATE_HEADER, rows))
        return 0
    rows, reports = [], []
    models = {f"{kind} {c}x{s}x{s}": (lambda k=kind, c=c, s=s: conv_chain(k, c, s))
              for kind, c, s in KERNEL_CHAINS} if args.kernels else \
        {name: MODELS[name] for name in args.models}
    for name, make in models.items():
        model_rows, report, choice = bench_model(name, make(), args.threads, args.rounds,
                                                 args.runs)
        rows += model_rows
        reports.append((name, report, choice))
    print(f"load average: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(format_table(["model", "threads", "auto ms", "nchw ms", "onnxruntime ms",
                        "nchw/auto", "best-round nchw/auto", "ort/auto", "max |auto-nchw|"],
                       rows))
    for name, report, choice in reports:
        print(f"\n{name}:")
        for line in report:
            print(line)
        if args.explain and choice is not None:
            for line in format_choice(choice):
                print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
