"""`optimize()`: the library entry point behind `graphopt optimize`."""
from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import onnx

from graphopt import onnx_io
from graphopt.ir.graph import Graph
from graphopt.pass_manager import Instrument, PassManager, Step, VerifyIR
from graphopt.pipelines import (non_builtin_passes, parse_pipeline, preset_pipeline,
                                without_passes)


@dataclass
class OptimizeResult:
    """The optimized graph, the pass manager's records, the steps run, and whether the model
    was already the output of this pipeline (then nothing ran)."""

    graph: Graph
    manager: PassManager
    steps: list[Step] = field(default_factory=list)
    skipped: bool = False


def build_pipeline(level: int = 2, passes: str | None = None,
                   skip: Iterable[str] = ()) -> list[Step]:
    """An explicit pass list (`a,b{opt=1},fixed-point(c,d)`) when given, else the -O `level`
    preset; the passes named in `skip` are then dropped (an unregistered name is a
    BadInputError)."""
    if passes is not None:  # "" is an empty pipeline, not the preset
        steps = parse_pipeline(passes)
    else:
        steps = preset_pipeline(level, non_builtin_passes())
    return without_passes(steps, skip)


# Model metadata key recording the pipeline a model was optimized with (see optimize()).
PIPELINE_KEY = "graphopt.pipeline"


def pipeline_signature(steps: Iterable[Step]) -> str:
    """What a pipeline is, as recorded in an optimized model: graphopt's version and the steps."""
    from graphopt import __version__

    return f"graphopt {__version__}: " + ", ".join(map(str, steps))


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a model is imported and optimized.

    Import and the passes allocate many small objects (nodes, values, use entries, match
    bindings) while the graph, which holds tens of thousands of long-lived objects, stays alive;
    the allocations keep triggering collections that walk the whole graph again and find almost
    nothing to free (removed nodes are freed by reference counting): about 14% of the optimize
    time of onnx's light_densenet121. Collection resumes afterwards; nesting is fine.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_pipeline(graph: Graph, steps: list[Step], instruments: Iterable[Instrument] = (),
                 verify_ir: bool = True) -> PassManager:
    """Run `steps` on `graph` in place and record the pipeline in the graph's metadata.

    The one place a pipeline runs: optimize() and the `graphopt optimize` command both call it.
    The IR is verified once per fixed-point round, or after every changing pass when other
    instruments are attached (--dump-ir, --bisect: a debugging run, where blame matters most).
    """
    all_instruments: list[Instrument] = list(instruments)
    if verify_ir:
        all_instruments.insert(0, VerifyIR(each_pass=bool(all_instruments)))
    manager = PassManager(steps, all_instruments)
    with paused_gc():
        manager.run(graph)
    graph.info.metadata_props[PIPELINE_KEY] = pipeline_signature(steps)
    return manager


def already_optimized(graph: Graph, steps: Iterable[Step]) -> bool:
    """Whether `graph` came out of this very pipeline (its exported model says so): running it
    again would reach the same fixed point, so consumers skip it."""
    return graph.info.metadata_props.get(PIPELINE_KEY) == pipeline_signature(steps)


def optimize(model: "str | os.PathLike | onnx.ModelProto | Graph", level: int = 2,
             passes: str | None = None, instruments: Iterable[Instrument] = (),
             verify_ir: bool = True, skip: Iterable[str] = ()) -> OptimizeResult:
    """Import `model`, run the pipeline and return the optimized graph with the run's records.

    A Graph argument is copied first (Graph.copy shares the weight arrays, so this costs no
    weight memory): the caller's graph is never changed, as with graphopt.backend.compile.
    A model that an earlier run of the same pipeline wrote (`graphopt optimize` output handed to
    `graphopt run`, say) is not optimized again; `result.skipped` says so.
    """
    with paused_gc():
        graph = model.copy() if isinstance(model, Graph) else onnx_io.load(model)
        steps = build_pipeline(level, passes, skip)
        if already_optimized(graph, steps) and not instruments:
            return OptimizeResult(graph, PassManager(steps, []), steps, skipped=True)
        manager = run_pipeline(graph, steps, instruments, verify_ir)
    return OptimizeResult(graph, manager, steps)
