"""One `graphopt optimize` run: load, optimize, verify, and the lines the CLI prints about it."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import onnx

from graphopt import onnx_io
from graphopt.analysis import (ModelStats, has_symbolic_dims, human, human_bytes, model_stats,
                               with_dims_of)
from graphopt.errors import BadInputError, VerificationError
from graphopt.numerics import (NumericCheck, compare_outputs, load_inputs, random_inputs,
                               run_onnxruntime)
from graphopt.optimizer import build_pipeline, run_pipeline
from graphopt.pass_manager import DumpIR, Instrument, PassManager


class OptimizeRun:
    """Holds the input model, the optimized graph and what happened in between."""

    def __init__(self, model_path: str | os.PathLike, level: int = 2, passes: str | None = None,
                 inputs: str | None = None, dims: Mapping[str, int] | None = None,
                 dump_ir: str | None = None, skip: Iterable[str] = (),
                 fold_input_initializers: bool = False):
        self.model_path = Path(model_path)
        start = time.perf_counter()
        self.original: onnx.ModelProto = onnx_io.read_model(self.model_path)
        self.graph = onnx_io.import_model(self.original, fold_input_initializers)
        # The graph holds the weights now and onnxruntime reads the reference from the file
        # itself: keeping them in the proto too would double the memory of a large model.
        self.original = onnx_io.exporter.copy_without_initializers(self.original)
        self.load_seconds = time.perf_counter() - start
        self.before: ModelStats = model_stats(self.graph)
        self._before_graph = self.graph.copy()  # weights shared; read by the summary
        self.steps = build_pipeline(level, passes, skip)
        self.level, self.passes = level, passes
        self.inputs_path, self.dims, self.dump_ir = inputs, dict(dims or {}), dump_ir
        self.manager: PassManager | None = None
        self.optimize_seconds = self.save_seconds = 0.0
        self._feeds: dict[str, np.ndarray] | None = None
        self._reference: list[np.ndarray] | None = None

    # --- steps -------------------------------------------------------------------------------
    def preamble(self) -> Iterator[str]:
        preset = "" if self.passes is not None else f"-O{self.level}: "
        pipeline = preset + (", ".join(map(str, self.steps)) or "(empty)")
        yield f"{self.model_path}: opset {self.graph.opset}, {self.before.nodes} nodes"
        if self.before.unknown_ops:
            yield ("ops graphopt does not know, passed through untouched: "
                   + ", ".join(self.before.unknown_ops))
        defaults = [v.name for v in self.graph.inputs if v.default is not None]
        if defaults:
            yield (f"{len(defaults)} initializer(s) are also graph inputs (overridable), kept as "
                   f"inputs and not folded: {_shortlist(defaults)} (--fold-input-initializers "
                   "folds them)")
        yield f"pipeline {pipeline}"

    def feeds(self) -> dict[str, np.ndarray]:
        if self._feeds is None:
            if self.inputs_path:
                self._feeds = load_inputs(self.inputs_path, self.graph)
            else:
                self._feeds = random_inputs(self.graph, dims=self.dims)
        return self._feeds

    def reference(self) -> list[np.ndarray]:
        """onnxruntime's outputs on the input model; BadInputError when onnxruntime cannot run
        it (a custom-domain op it does not register). The CLI asks for this before any pass."""
        if self._reference is None:
            self._reference = _run_or_explain(self.model_path, self.feeds(), "the input model",
                                              BadInputError, self.before.unknown_ops)
        return self._reference

    def optimize(self, check_each_pass: bool = False) -> None:
        instruments: list[Instrument] = []  # run_pipeline adds VerifyIR
        if self.dump_ir:
            instruments.append(DumpIR(self.dump_ir))
        if check_each_pass:
            names = [o.name for o in self.original.graph.output]
            self.reference()  # before the graph changes
            instruments.append(NumericCheck(self.feeds(), self.reference(), names))
        start = time.perf_counter()
        self.manager = run_pipeline(self.graph, self.steps, instruments)
        self.optimize_seconds = time.perf_counter() - start

    def export(self) -> onnx.ModelProto:
        """The optimized model; onnx.checker runs on it when it is saved (save_model)."""
        return onnx_io.export_model(self.graph)

    def verify_outputs(self, exported: onnx.ModelProto) -> Iterator[str]:
        names = [o.name for o in self.original.graph.output]
        got = _run_or_explain(exported, self.feeds(), "the optimized model", VerificationError)
        result = compare_outputs(names, self.reference(), got)
        if not result.ok:
            raise VerificationError(f"optimized outputs differ: {result.describe()}; "
                                    "rerun with --bisect to find the pass responsible")
        source = self.inputs_path or "random inputs"
        yield f"verified against onnxruntime on {source}: outputs match ({result.describe()})"

    # --- reports -----------------------------------------------------------------------------
    def summary(self, output: str | os.PathLike) -> Iterator[str]:
        after = model_stats(self.graph)
        # FLOPs before are counted with the dims the optimized graph resolved, so a symbolic dim
        # means the same number on both sides of the table.
        before_graph = with_dims_of(self._before_graph, self.graph)
        before = model_stats(before_graph)
        size_in = _file_size(self.model_path)
        size_out = _file_size(Path(output))
        ops_seen = sorted(set(before.op_counts) | set(after.op_counts))
        width = max([14] + [len(op) + 4 for op in ops_seen])
        yield f"{'':{width}s}{'before':>12s}{'after':>12s}"
        for label, a, b in (("nodes", human(before.nodes), human(after.nodes)),
                            ("parameters", human(before.parameters), human(after.parameters)),
                            ("FLOPs", human(before.flops), human(after.flops)),
                            ("file size", human_bytes(size_in), human_bytes(size_out))):
            yield f"{label:{width}s}{a:>12s}{b:>12s}"
        for op in ops_seen:
            a, b = before.op_counts.get(op, 0), after.op_counts.get(op, 0)
            mark = "" if a == b else f"  ({b - a:+d})"
            yield f"  {op:{width - 2}s}{a:>12d}{b:>12d}{mark}"
        if has_symbolic_dims(before_graph) or has_symbolic_dims(self.graph):
            yield "(FLOPs count each symbolic dim as 1, before and after alike)"
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


def _run_or_explain(model: onnx.ModelProto | Path, feeds: Mapping[str, np.ndarray], what: str,
                    error: type[Exception], unknown_ops: list[str] | None = None
                    ) -> list[np.ndarray]:
    """run_onnxruntime, with onnxruntime's own failure turned into one graphopt error line."""
    try:
        return run_onnxruntime(model, feeds)
    except Exception as err:
        if not type(err).__module__.startswith("onnxruntime"):
            raise
        reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ", "", " ".join(str(err).split()))
        ops = f" (ops it may not know: {', '.join(unknown_ops)})" if unknown_ops else ""
        raise error(f"cannot verify: onnxruntime does not run {what}{ops}: {reason[:200]}") from err


def _file_size(path: Path) -> int:
    size = path.stat().st_size if path.exists() else 0
    data = path.with_name(path.name + ".data")
    return size + (data.stat().st_size if data.exists() else 0)


def _shortlist(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
