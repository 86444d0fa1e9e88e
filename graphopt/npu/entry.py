"""Library entry point behind `graphopt npu`: optimize a model, then schedule it on an NPU."""
from __future__ import annotations

import logging
import os

import onnx

from graphopt.errors import BadInputError
from graphopt.ir.graph import Graph
from graphopt.npu.arch import Arch, load_arch
from graphopt.npu.scheduler import ScheduleReport, Scheduler

log = logging.getLogger(__name__)
FALLBACK_PASSES = "eliminate-dead-code"


def optimized_graph(model: "str | os.PathLike | onnx.ModelProto | Graph", level: int = 2,
                    passes: str | None = None) -> Graph:
    """The graph after `passes` (or the -O `level` preset). When the preset names a pass that is
    not registered in this build, fall back to dead-code elimination and say so in the log."""
    from graphopt.optimizer import optimize

    if passes:
        return optimize(model, passes=passes).graph
    try:
        return optimize(model, level=level).graph
    except BadInputError as err:
        if "unknown pass" not in str(err):
            raise
        log.warning("-O%d is not available (%s); scheduling after '%s' only", level, err,
                    FALLBACK_PASSES)
        return optimize(model, passes=FALLBACK_PASSES).graph


def run_npu(model: "str | os.PathLike | onnx.ModelProto | Graph", arch: "Arch | str",
            dataflow: str | None = None, objective: str = "energy", batch: int = 1,
            datatype: str | None = None, level: int = 2, passes: str | None = None
            ) -> ScheduleReport:
    """Optimize `model` and schedule it on `arch` (a preset name, a file path or an Arch)."""
    hardware = arch if isinstance(arch, Arch) else load_arch(arch)
    if datatype:
        hardware = hardware.with_datatype(datatype)
    graph = optimized_graph(model, level, passes)
    return Scheduler(hardware, dataflow, objective).run(graph, batch)
