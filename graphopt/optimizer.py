"""`optimize()`: the library entry point behind `graphopt optimize`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

import onnx

from graphopt import onnx_io
from graphopt.ir.graph import Graph
from graphopt.pass_api import parse_pass_spec
from graphopt.pass_manager import Instrument, PassManager, Step, VerifyIR
from graphopt.pipelines import non_builtin_passes, preset_pipeline


@dataclass
class OptimizeResult:
    graph: Graph
    manager: PassManager
    steps: list[Step] = field(default_factory=list)


def build_pipeline(level: int = 2, passes: str | None = None) -> list[Step]:
    """An explicit pass list (`a,b{opt=1}`) when given, else the -O `level` preset."""
    if passes:
        return list(parse_pass_spec(passes))
    return preset_pipeline(level, non_builtin_passes())


def optimize(model: "str | os.PathLike | onnx.ModelProto | Graph", level: int = 2,
             passes: str | None = None, instruments: Iterable[Instrument] = (),
             verify_ir: bool = True) -> OptimizeResult:
    """Import `model`, run the pipeline in place and return the graph with the run's records."""
    graph = onnx_io.load(model)
    steps = build_pipeline(level, passes)
    all_instruments: list[Instrument] = list(instruments)
    if verify_ir:
        all_instruments.insert(0, VerifyIR())
    manager = PassManager(steps, all_instruments)
    manager.run(graph)
    return OptimizeResult(graph, manager, steps)
