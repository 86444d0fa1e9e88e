"""Graph scheduler: run every layer of the optimized graph in order on the modeled NPU.

* MAC layers go through the mapper (one mapping per distinct shape, cached).
* Vector layers (pooling, elementwise, normalization, fused epilogues) run on `arch.lanes`
  ALUs at one op per lane per cycle, each op costing one MAC's energy; their tensors move
  between DRAM (or the global buffer) and the lanes.
* Copies (Concat, Transpose, Slice, ...) are DMA work: read and write every byte.
* Free ops (Reshape, Flatten, ...) are views: their output aliases their input.
* Const layers (all inputs constant) were folded at compile time and cost nothing.
* Host layers (ops the NPU cannot run) pay the link both ways plus host compute time and energy.

On-chip residency ("fused groups kept on chip"): an output whose readers all run on the NPU and
which is not a graph output stays in the global buffer while it fits in
`global_buffer.resident_fraction` of it; its producer skips the DRAM write and its readers the
DRAM read, and every layer mapped while it is live gets that much less buffer. A layer that
cannot be mapped with the reduced buffer spills the resident tensors (charged as DRAM writes).

DMA/compute overlap: with a double-buffered global buffer a layer takes
max(compute, DRAM, buffer) cycles; without it, compute + DRAM.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from graphopt.errors import NPUConfigError
from graphopt.ir.graph import Graph
from graphopt.npu.arch import OPERANDS, Arch
from graphopt.npu.mapper import Mapper
from graphopt.npu.workload import Layer, build_layers

log = logging.getLogger(__name__)
ENERGY_LEVELS = ("mac", "rf", "noc", "glb", "dram", "host")


@dataclass
class LayerReport:
    name: str
    op_type: str
    kind: str
    macs: int = 0
    vector_ops: int = 0
    mapping: str = ""
    mapping_detail: dict[str, Any] | None = None
    start: float = 0.0                 # cycles
    compute_cycles: float = 0.0
    dma_cycles: float = 0.0
    cycles: float = 0.0
    utilization: float = 0.0
    accesses: dict[str, float] = field(default_factory=dict)   # words per level
    energy: dict[str, float] = field(default_factory=dict)     # pJ per level
    dram_bytes: float = 0.0
    resident_in: list[str] = field(default_factory=list)
    resident_out: bool = False
    note: str = ""

    @property
    def total_energy(self) -> float:
        return sum(self.energy.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "kind": self.kind, "macs": self.macs,
                "vector_ops": self.vector_ops, "mapping": self.mapping_detail or self.mapping,
                "start_cycle": self.start, "compute_cycles": self.compute_cycles,
                "dma_cycles": self.dma_cycles, "cycles": self.cycles,
                "utilization": self.utilization, "accesses_words": self.accesses,
                "energy_pj": self.energy, "energy_total_pj": self.total_energy,
                "dram_bytes": self.dram_bytes, "resident_inputs": self.resident_in,
                "resident_output": self.resident_out, "note": self.note}


@dataclass
class ScheduleReport:
    arch: Arch
    dataflow: str
    objective: str
    batch: int
    layers: list[LayerReport]
    evaluated: int
    infeasible_reasons: dict[str, int]

    @property
    def cycles(self) -> float:
        return max((lr.start + lr.cycles for lr in self.layers), default=0.0)

    @property
    def latency_s(self) -> float:
        return self.cycles / (self.arch.clock_mhz * 1e6)

    @property
    def energy_pj(self) -> float:
        return sum(lr.total_energy for lr in self.layers)

    @property
    def macs(self) -> int:
        return sum(lr.macs for lr in self.layers)

    def energy_by_level(self) -> dict[str, float]:
        return {lvl: sum(lr.energy.get(lvl, 0.0) for lr in self.layers) for lvl in ENERGY_LEVELS}

    def totals(self) -> dict[str, float]:
        energy_j = self.energy_pj * 1e-12
        ops = 2 * self.macs
        return {"macs": self.macs, "cycles": self.cycles, "latency_s": self.latency_s,
                "energy_j": energy_j, "edp_js": energy_j * self.latency_s,
                "tops_per_w": ops / energy_j / 1e12 if energy_j else 0.0,
                "tops": ops / self.latency_s / 1e12 if self.latency_s else 0.0,
                "frames_per_s": self.batch / self.latency_s if self.latency_s else 0.0,
                **{f"energy_{k}_j": v * 1e-12 for k, v in self.energy_by_level().items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.name, "dataflow": self.dataflow, "objective": self.objective,
                "batch": self.batch, "datatype": self.arch.datatype,
                "clock_mhz": self.arch.clock_mhz, "totals": self.totals(),
                "mapper": {"evaluated": self.evaluated,
                           "infeasible_reasons": self.infeasible_reasons},
                "layers": [lr.to_dict() for lr in self.layers]}


class _Residency:
    """Which tensors live in the global buffer, with aliases through free (view) ops."""

    def __init__(self, budget: float):
        self.budget = budget
        self.live: dict[str, float] = {}
        self.alias: dict[str, str] = {}

    def root(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def is_resident(self, name: str) -> bool:
        return self.root(name) in self.live

    @property
    def used(self) -> float:
        return sum(self.live.values())

    def try_keep(self, name: str, nbytes: float) -> bool:
        if self.used + nbytes <= self.budget:
            self.live[name] = nbytes
            return True
        return False


class Scheduler:
    """Schedules a whole graph; one Mapper (and its shape cache) per scheduler."""

    def __init__(self, arch: Arch, dataflow: str | None = None, objective: str = "energy"):
        self.arch = arch
        self.mapper = Mapper(arch, dataflow or arch.dataflow, objective)

    def run(self, graph: Graph, batch: int = 1) -> ScheduleReport:
        layers = build_layers(graph, batch)
        return self.run_layers(layers, batch, graph_outputs={v.name for v in graph.outputs})

    def run_layers(self, layers: list[Layer], batch: int = 1,
                   graph_outputs: set[str] | None = None) -> ScheduleReport:
        arch = self.arch
        outputs = graph_outputs or set()
        readers = _readers(layers)
        last_read = {name: max(idxs) for name, idxs in readers.items()}
        on_host = {i for i, layer in enumerate(layers) if layer.kind == "host"}
        gb = arch.global_buffer
        residency = _Residency(gb.resident_fraction * gb.size_bytes)
        reports: list[LayerReport] = []
        clock = 0.0
        for i, layer in enumerate(layers):
            if layer.kind == "free":
                for (out, _), (src, _) in zip(layer.outputs, layer.inputs[:1]):
                    residency.alias[out] = src
            report = self._run_one(layer, residency)
            if layer.kind in ("mac", "vector", "copy"):
                self._keep_outputs(layer, report, residency, readers, on_host, outputs)
            report.start = clock
            clock += report.cycles
            reports.append(report)
            for name in list(residency.live):
                ends = [last_read.get(a, -1) for a in _aliases_of(name, residency)]
                if max(ends + [last_read.get(name, -1)]) <= i:
                    del residency.live[name]
        return ScheduleReport(arch, self.mapper.dataflow.name, self.mapper.objective, batch,
                              reports, self.mapper.evaluated, dict(self.mapper.reasons))

    # --- one layer -----------------------------------------------------------------------------
    def _run_one(self, layer: Layer, residency: _Residency) -> LayerReport:
        report = LayerReport(layer.name, layer.op_type, layer.kind, macs=layer.macs,
                             vector_ops=layer.vector_ops, note=layer.reason)
        if layer.kind == "mac":
            self._run_mac(layer, report, residency)
        elif layer.kind in ("vector", "copy"):
            self._run_stream(layer, report, residency)
        elif layer.kind == "host":
            self._run_host(layer, report)
        report.energy = {lvl: report.energy.get(lvl, 0.0) for lvl in ENERGY_LEVELS}
        return report

    def _run_mac(self, layer: Layer, report: LayerReport, residency: _Residency) -> None:
        arch = self.arch
        reserved = _round_up(residency.used, arch.global_buffer.size_bytes / 16)
        result = self.mapper.map(layer, reserved)
        if not result.ok and reserved:
            spilled = sum(residency.live.values())
            residency.live.clear()
            report.note = f"spilled {spilled:.0f} B of resident tensors"
            report.energy["dram"] = spilled / arch.word_bytes * arch.energy_pj["dram"]
            report.dram_bytes += spilled
            result = self.mapper.map(layer, 0.0)
        if not result.ok:
            raise NPUConfigError(result.failure_message(arch, layer.name))
        ev = result.evaluation
        dram_words = dict(ev.dram_words)
        resident = [name for name in (layer.input_value, layer.weight_value)
                    if name and residency.is_resident(name)]
        for name in resident:
            op = "inputs" if name == layer.input_value else "weights"
            dram_words[op] = 0.0
        report.resident_in = resident
        accesses = {lvl: sum(per_op.values()) for lvl, per_op in ev.accesses.items()}
        saved = sum(ev.dram_words[op] - dram_words[op] for op in OPERANDS)
        accesses["dram"] = sum(dram_words.values())
        accesses["glb"] = max(0.0, accesses["glb"] - saved)
        energy = dict(ev.energy)
        for lvl in ("dram", "glb"):
            energy[lvl] = energy[lvl] * (accesses[lvl] / max(sum(ev.accesses[lvl].values()), 1e-9))
        energy["mac"] += layer.vector_ops * arch.energy_pj["mac"]
        for lvl, value in energy.items():
            report.energy[lvl] = report.energy.get(lvl, 0.0) + value
        report.accesses = accesses
        report.mapping = result.mapping.describe()
        report.mapping_detail = result.mapping.to_dict()
        report.compute_cycles = ev.compute_cycles   # the epilogue runs as outputs drain
        report.dram_bytes += self._dram_bytes(dram_words)
        report.dma_cycles = report.dram_bytes / arch.dram_bytes_per_cycle
        self._finish(report)

    def _dram_bytes(self, dram_words: dict[str, float]) -> float:
        arch = self.arch
        return sum(w * (arch.psum_width if op == "outputs" else arch.bits) / 8
                   for op, w in dram_words.items())

    def _run_stream(self, layer: Layer, report: LayerReport, residency: _Residency) -> None:
        """Vector and copy layers: every input read once, every output written once."""
        arch = self.arch
        in_dram = sum(n for name, n in layer.inputs if not residency.is_resident(name))
        report.resident_in = [name for name, _ in layer.inputs if residency.is_resident(name)]
        out_words = layer.output_elements
        glb_words = layer.input_elements + out_words
        report.accesses = {"glb": float(glb_words), "dram": float(in_dram + out_words)}
        report.energy = {"mac": layer.vector_ops * arch.energy_pj["mac"],
                         "glb": glb_words * arch.energy_pj["glb"],
                         "dram": (in_dram + out_words) * arch.energy_pj["dram"]}
        report.compute_cycles = layer.vector_ops / arch.lanes
        report.dram_bytes = (in_dram + out_words) * arch.word_bytes
        report.dma_cycles = report.dram_bytes / arch.dram_bytes_per_cycle
        self._finish(report)

    def _run_host(self, layer: Layer, report: LayerReport) -> None:
        arch, host = self.arch, self.arch.host
        moved = (layer.input_elements + layer.output_elements) * arch.word_bytes
        seconds = moved / (host.link_gbps * 1e9) + layer.vector_ops / (host.gops * 1e9)
        report.cycles = seconds * arch.clock_mhz * 1e6
        report.dma_cycles = moved / (host.link_gbps * 1e9) * arch.clock_mhz * 1e6
        report.compute_cycles = report.cycles - report.dma_cycles
        report.energy = {"host": moved * host.pj_per_byte + layer.vector_ops * host.pj_per_op}
        report.note = f"host: {layer.reason}"

    def _finish(self, report: LayerReport) -> None:
        glb_cycles = report.accesses.get("glb", 0.0) / self.arch.glb_words_per_cycle
        if self.arch.global_buffer.double_buffered:
            report.cycles = max(report.compute_cycles, report.dma_cycles, glb_cycles)
        else:
            report.cycles = max(report.compute_cycles, glb_cycles) + report.dma_cycles
        peak = report.cycles * self.arch.pe_array.num_pes
        report.utilization = report.macs / peak if peak and report.macs else 0.0

    def _keep_outputs(self, layer: Layer, report: LayerReport, residency: _Residency,
                      readers: dict[str, list[int]], on_host: set[int], outputs: set[str]
                      ) -> None:
        """Keep the layer's outputs on chip when every reader runs on the NPU and they fit."""
        arch = self.arch
        for name, count in layer.outputs:
            users = readers.get(name, [])
            if name in outputs or not users or any(u in on_host for u in users):
                continue
            nbytes = count * arch.word_bytes
            if residency.try_keep(name, nbytes):
                report.resident_out = True
                words = float(count)
                report.accesses["dram"] = max(0.0, report.accesses.get("dram", 0.0) - words)
                report.energy["dram"] = max(0.0, report.energy["dram"]
                                            - words * arch.energy_pj["dram"])
                report.dram_bytes = max(0.0, report.dram_bytes - nbytes)
                report.dma_cycles = report.dram_bytes / arch.dram_bytes_per_cycle
                self._finish(report)


def _readers(layers: list[Layer]) -> dict[str, list[int]]:
    readers: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        names = {name for name, _ in layer.inputs}
        for name in names:
            readers.setdefault(name, []).append(i)
    # A view's readers read the tensor it aliases.
    for i, layer in enumerate(layers):
        if layer.kind == "free" and layer.inputs:
            src = layer.inputs[0][0]
            for out, _ in layer.outputs:
                readers.setdefault(src, []).extend(readers.get(out, []))
    return readers


def _aliases_of(name: str, residency: _Residency) -> list[str]:
    return [a for a in residency.alias if residency.root(a) == name]


def _round_up(value: float, step: float) -> float:
    return math.ceil(value / step) * step if value > 0 else 0.0


def schedule(graph: Graph, arch: Arch, dataflow: str | None = None, objective: str = "energy",
             batch: int = 1) -> ScheduleReport:
    """Map and schedule every layer of `graph` (after the passes) on `arch`."""
    return Scheduler(arch, dataflow, objective).run(graph, batch)
