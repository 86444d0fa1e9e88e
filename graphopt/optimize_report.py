"""One `graphopt optimize` run: load, optimize, verify, and the lines the CLI prints about it."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx

from graphopt import onnx_io
from graphopt.analysis import ModelStats, human, model_stats
from graphopt.errors import VerificationError
from graphopt.numerics import (NumericCheck, compare_outputs, format_mismatches, load_inputs,
                               random_inputs, run_onnxruntime)
from graphopt.optimizer import build_pipeline
from graphopt.pass_manager import DumpIR, Instrument, PassManager, VerifyIR


class OptimizeRun:
    """Holds the input model, the optimized graph and what happened in between."""

    def __init__(self, model_path: str | os.PathLike, level: int = 2, passes: str | None = None,
                 inputs: str | None = None, dims: Mapping[str, int] | None = None,
                 dump_ir: str | None = None):
        self.model_path = Path(model_path)
        start = time.perf_counter()
        self.original: onnx.ModelProto = onnx_io.read_model(self.model_path)
        self.graph = onnx_io.import_model(self.original)
        self.load_seconds = time.perf_counter() - start
        self.before: ModelStats = model_stats(self.graph)
        self.steps = build_pipeline(level, passes)
        self.level, self.passes = level, passes
        self.inputs_path, self.dims, self.dump_ir = inputs, dict(dims or {}), dump_ir
        self.manager: PassManager | None = None
        self.optimize_seconds = self.save_seconds = 0.0
        self._feeds: dict[str, np.ndarray] | None = None
        self._reference: list[np.ndarray] | None = None

    # --- steps -------------------------------------------------------------------------------
    def preamble(self) -> Iterator[str]:
        pipeline = self.passes or f"-O{self.level}: " + ", ".join(map(str, self.steps))
        yield f"{self.model_path}: opset {self.graph.opset}, {self.before.nodes} nodes"
        if self.before.unknown_ops:
            yield ("ops graphopt does not know, passed through untouched: "
                   + ", ".join(self.before.unknown_ops))
        yield f"pipeline {pipeline or '(empty)'}"

    def feeds(self) -> dict[str, np.ndarray]:
        if self._feeds is None:
            if self.inputs_path:
                self._feeds = load_inputs(self.inputs_path, self.graph)
            else:
                self._feeds = random_inputs(self.graph, dims=self.dims)
        return self._feeds

    def reference(self) -> list[np.ndarray]:
        if self._reference is None:
            self._reference = run_onnxruntime(self.original, self.feeds())
        return self._reference

    def optimize(self, check_each_pass: bool = False) -> None:
        instruments: list[Instrument] = [VerifyIR()]
        if self.dump_ir:
            instruments.append(DumpIR(self.dump_ir))
        if check_each_pass:
            names = [o.name for o in self.original.graph.output]
            self.reference()  # before the graph changes
            instruments.append(NumericCheck(self.feeds(), self.reference(), names))
        self.manager = PassManager(self.steps, instruments)
        start = time.perf_counter()
        self.manager.run(self.graph)
        self.optimize_seconds = time.perf_counter() - start

    def export(self) -> onnx.ModelProto:
        """The optimized model; onnx.checker runs on it when it is saved (save_model)."""
        return onnx_io.export_model(self.graph)

    def verify_outputs(self, exported: onnx.ModelProto) -> Iterator[str]:
        names = [o.name for o in self.original.graph.output]
        got = run_onnxruntime(exported, self.feeds())
        mismatches = compare_outputs(names, self.reference(), got)
        if not all(m.ok for m in mismatches):
            raise VerificationError(f"optimized outputs differ: {format_mismatches(mismatches)}; "
                                    "rerun with --bisect to find the pass responsible")
        worst = max((m.max_abs for m in mismatches), default=0.0)
        source = self.inputs_path or "random inputs"
        yield f"verified against onnxruntime on {source}: outputs match (max abs err {worst:.3g})"

    # --- reports -----------------------------------------------------------------------------
    def summary(self, output: str | os.PathLike) -> Iterator[str]:
        after = model_stats(self.graph)
        before = self.before
        size_in = _file_size(self.model_path)
        size_out = _file_size(Path(output))
        ops_seen = sorted(set(before.op_counts) | set(after.op_counts))
        width = max([14] + [len(op) + 4 for op in ops_seen])
        yield f"{'':{width}s}{'before':>12s}{'after':>12s}"
        for label, a, b in (("nodes", before.nodes, after.nodes),
                            ("parameters", before.parameters, after.parameters),
                            ("FLOPs", before.flops, after.flops),
                            ("file bytes", size_in, size_out)):
            yield f"{label:{width}s}{human(a):>12s}{human(b):>12s}"
        for op in ops_seen:
            a, b = before.op_counts.get(op, 0), after.op_counts.get(op, 0)
            mark = "" if a == b else f"  ({b - a:+d})"
            yield f"  {op:{width - 2}s}{a:>12d}{b:>12d}{mark}"
        if self.manager is not None and self.manager.records:
            yield "pass                          runs   changed   node delta   time (ms)"
            for row in self.manager.summary():
                yield (f"{row['pass']:30s}{row['runs']:4d}{row['changed']:10d}"
                       f"{row['node_delta']:13d}{row['seconds'] * 1000:12.1f}")
        yield (f"load {self.load_seconds:.2f}s, optimize {self.optimize_seconds:.2f}s, "
               f"save {self.save_seconds:.2f}s -> {output}")

    def fusion_explanations(self) -> Iterator[str]:
        """Which fusion rules rewrote what, and why near-miss candidates were refused."""
        from graphopt.rewrite.log import fusion_report

        yield from fusion_report(self.graph)


def _file_size(path: Path) -> int:
    size = path.stat().st_size if path.exists() else 0
    data = path.with_name(path.name + ".data")
    return size + (data.stat().st_size if data.exists() else 0)
