"""The modeled NPU: map and schedule an optimized graph onto a parameterized accelerator.

Four things are kept apart (docs/NPU.md):
    arch        graphopt.npu.arch       the hardware, from a TOML / JSON file or a preset
    workload    graphopt.npu.workload   per-layer loop nests read from the IR
    mapping     graphopt.npu.mapping    tiling, loop order and spatial fan-out of one layer
    evaluator   graphopt.npu.evaluator  a pure function (arch, layer, mapping) -> cycles, energy
The dataflows constrain the mapper's search; the scheduler runs the whole graph.
"""
from graphopt.npu.arch import Arch, arch_from_dict, load_arch, preset_names
from graphopt.npu.dataflows import DATAFLOWS, get_dataflow
from graphopt.npu.evaluator import Evaluation, evaluate
from graphopt.npu.mapper import Mapper, MapResult
from graphopt.npu.mapping import Mapping
from graphopt.npu.scheduler import ScheduleReport, Scheduler, schedule
from graphopt.npu.workload import Layer, build_layers

__all__ = ["Arch", "arch_from_dict", "load_arch", "preset_names", "DATAFLOWS", "get_dataflow",
           "Evaluation", "evaluate", "Mapper", "MapResult", "Mapping", "ScheduleReport",
           "Scheduler", "schedule", "Layer", "build_layers"]
