"""Evaluator: a pure function from (arch, layer, mapping) to cycles, accesses and energy.

Reuse model (the analytical model Timeloop and the Eyeriss analysis framework share):

* Tiles. The extent of a dim at a level is the product of its factors at that level and below.
  An operand's tile is the product of its dims' extents, except the input's rows / columns,
  which are sliding windows: (P-1)*stride + (R-1)*dilation + 1, or P*R rows when the windows
  leave gaps (stride > R: a tile holding one filter row of a stride-4 conv).
* Fills. Flatten the temporal loops above a storage level, outer to inner. A tile is refetched
  each time a loop *relevant* to its operand steps; a run of innermost loops irrelevant to it
  leaves it in place, across level boundaries (weights stay in a PE while the pixel loops run,
  whether those loops sit at the glb or the dram level). fills = product of the loop bounds down
  to the innermost relevant loop.
* Spatial reuse. All PEs step together; each fill delivers pe_tile words to every used PE (NoC
  hops), but the parent reads only the distinct words across the array (multicast), or one copy
  per PE without multicast. Output partial sums flow the other way: drained through the NoC,
  reduced spatially, written to the parent; a parent re-reads a psum it must keep accumulating
  (writes - distinct outputs). Operands the PE scratchpad does not keep have no reuse inside a
  PE: every MAC moves one such word (an input arrives, a psum leaves), and the parent serves the
  array's distinct words of every temporal step. With `register_files.streamed_reads` a MAC
  still reads a streamed weight / input out of the PE's register file (one access per use, the
  Eyeriss framework's RF term with no RF reuse); a streamed psum accumulates as it passes.
  A dataflow that forwards inputs between neighbouring PEs (os, os_a) fetches the ifmap window
  of a run of innermost filter-tap loops once (see _forwarded).
* Scratchpad accesses: each real MAC reads its kept operands (a kept psum is read and written),
  each fill writes the pe tile into every used PE.
* Energy = sum over levels of accesses x energy per word (psum words scaled by psum width),
  plus MACs x MAC energy. Padded iterations (partial folds) cost cycles but no MAC or RF-read
  energy (their tiles are still counted whole on the NoC and in the buffer).
* Cycles. A spatial array retires one MAC per PE per cycle: compute = product of temporal
  bounds. A systolic array runs folds: for every change of the stationary operand it preloads
  it (rows cycles, for weights / inputs), streams the inner run of loops irrelevant to it and
  pays the pipeline skew rows + cols - 2 -- SCALE-Sim's per-fold count (its compute modules
  pad partial folds to the full array). Memory time = DRAM bytes / bandwidth and global-buffer
  words / bank bandwidth; with double buffering the layer takes the max of the three.

Infeasible mappings return an Evaluation with ok=False and a short reason
("rf capacity (weights)", "glb capacity", "spatial fan-out", "coverage"), checked before the
access counts are computed, as Timeloop's PreEvaluationCheck does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from graphopt.npu.arch import OPERANDS, Arch
from graphopt.npu.mapping import COL, DRAM, GLB, RF, ROW, Mapping
from graphopt.npu.workload import DIM_INDEX, DIMS, OPERAND_DIMS, Layer

STORAGE_LEVELS = ("rf", "noc", "glb", "dram")
_G, _N, _M, _C, _P, _Q, _R, _S = range(len(DIMS))
_RELEVANT_IDX = {op: frozenset(DIM_INDEX[d] for d in dims) for op, dims in OPERAND_DIMS.items()}


@dataclass(frozen=True)
class Evaluation:
    ok: bool
    reason: str = ""
    macs: int = 0
    padded_macs: int = 0
    compute_cycles: float = 0.0
    dram_cycles: float = 0.0
    glb_cycles: float = 0.0
    # accesses[level][operand] = words read + written at that level (noc: words moved)
    accesses: dict[str, dict[str, float]] = field(default_factory=dict)
    energy: dict[str, float] = field(default_factory=dict)   # pJ per level incl. "mac"
    dram_words: dict[str, float] = field(default_factory=dict)
    glb_bytes: float = 0.0
    folds: int = 0
    pes_used: int = 0

    @property
    def cycles(self) -> float:
        return max(self.compute_cycles, self.dram_cycles, self.glb_cycles)

    @property
    def total_energy(self) -> float:
        return sum(self.energy.values())

    def utilization(self, num_pes: int) -> float:
        return self.macs / (self.cycles * num_pes) if self.cycles else 0.0


def _fail(reason: str) -> Evaluation:
    return Evaluation(ok=False, reason=reason)


def tile_size(operand: str, ext: list[int], layer: Layer) -> int:
    """Words of `operand` touched by a tile with per-dim extents `ext`."""
    if operand == "weights":
        return ext[_G] * ext[_M] * ext[_C] * ext[_R] * ext[_S]
    if operand == "outputs":
        return ext[_N] * ext[_G] * ext[_M] * ext[_P] * ext[_Q]
    h = _window(ext[_P], ext[_R], layer.stride[0], layer.dilation[0])
    w = _window(ext[_Q], ext[_S], layer.stride[1], layer.dilation[1])
    return ext[_N] * ext[_G] * ext[_C] * h * w


def _window(outputs: int, taps: int, stride: int, dilation: int) -> int:
    """Input rows touched by `outputs` output rows under `taps` filter rows: the sliding-window
    span, or outputs * taps when the windows leave gaps (a stride larger than the taps cover,
    e.g. one filter row of a stride-4 conv touches every 4th row only). Exact for dilation 1,
    an upper bound otherwise."""
    return min((outputs - 1) * stride + (taps - 1) * dilation + 1, outputs * taps)


def _fills(loops: list[tuple[int, int]], relevant: frozenset[int]) -> int:
    """Tile refetches under `loops` (outer to inner (dim index, bound)), see module doc."""
    last = -1
    for i, (dim, _) in enumerate(loops):
        if dim in relevant:
            last = i
    count = 1
    for _, bound in loops[:last + 1]:
        count *= bound
    return count


def _ordered(m: Mapping, level: int, order: tuple[str, ...]) -> list[tuple[int, int]]:
    factors = m.factors[level]
    return [(DIM_INDEX[d], factors[DIM_INDEX[d]]) for d in order if factors[DIM_INDEX[d]] > 1]


def glb_requirement(arch: Arch, layer: Layer, m: Mapping) -> float:
    """Bytes the global buffer must hold for this mapping (tiles double-buffered if refilled)."""
    ext = [m.factors[RF][d] * m.factors[ROW][d] * m.factors[COL][d] * m.factors[GLB][d]
           for d in range(len(DIMS))]
    dram_loops = _ordered(m, DRAM, m.dram_order)
    total = 0.0
    for op in arch.global_buffer.keep:
        words = tile_size(op, ext, layer)
        width = arch.psum_width if op == "outputs" else arch.bits
        refilled = any(d in _RELEVANT_IDX[op] for d, _ in dram_loops)
        copies = 2 if refilled and arch.global_buffer.double_buffered else 1
        total += words * width / 8 * copies
    return total


def check_capacity(arch: Arch, layer: Layer, m: Mapping, reserved_bytes: float = 0.0) -> str:
    """The first capacity violation of `m` as a reason string, or '' when it fits."""
    f = m.factors
    for d, size in enumerate(layer.sizes):
        if f[RF][d] * f[ROW][d] * f[COL][d] * f[GLB][d] * f[DRAM][d] < size:
            return "coverage"
    if math.prod(f[ROW]) > arch.pe_array.rows or math.prod(f[COL]) > arch.pe_array.cols:
        return "spatial fan-out"
    for op in m.rf_keep:
        if tile_size(op, list(f[RF]), layer) > arch.register_files.entries(op):
            return f"rf capacity ({op})"
    if glb_requirement(arch, layer, m) > arch.global_buffer.size_bytes - reserved_bytes:
        return "glb capacity"
    return ""


def evaluate(arch: Arch, layer: Layer, m: Mapping, reserved_bytes: float = 0.0) -> Evaluation:
    """Cycles, per-level accesses and energy of `layer` under mapping `m` on `arch`."""
    reason = check_capacity(arch, layer, m, reserved_bytes)
    if reason:
        return _fail(reason)
    f = m.factors
    n_dims = len(DIMS)
    ext_rf = list(f[RF])
    ext_spatial = [f[ROW][d] * f[COL][d] for d in range(n_dims)]
    ext_arr = [ext_rf[d] * ext_spatial[d] for d in range(n_dims)]
    ext_glb = [ext_arr[d] * f[GLB][d] for d in range(n_dims)]
    n_pe = math.prod(f[ROW]) * math.prod(f[COL])
    dram_loops = _ordered(m, DRAM, m.dram_order)
    glb_loops = _ordered(m, GLB, m.glb_order)
    rf_loops = _ordered(m, RF, m.rf_order)
    temporal = math.prod(f[RF]) * math.prod(f[GLB]) * math.prod(f[DRAM])
    padded = temporal * n_pe
    out_words = tile_size("outputs", list(layer.sizes), layer)

    streamed_reads = arch.register_files.streamed_reads and arch.register_files.present
    acc = {level: {op: 0.0 for op in OPERANDS} for level in STORAGE_LEVELS}
    dram_words = {op: 0.0 for op in OPERANDS}
    for op in OPERANDS:
        relevant = _RELEVANT_IDX[op]
        kept = op in m.rf_keep
        fills = _fills(dram_loops + glb_loops, relevant) if kept else temporal
        pe_tile = tile_size(op, ext_rf, layer) if kept else 1
        arr_tile = tile_size(op, ext_arr if kept else ext_spatial, layer)
        moved = fills * pe_tile * n_pe
        if op == "inputs" and not kept and m.forwards_inputs:
            fills, arr_tile = _forwarded(layer, ext_spatial, dram_loops + glb_loops + rf_loops,
                                         temporal)
        distinct = fills * arr_tile if arch.pe_array.multicast else moved
        in_glb = op in arch.global_buffer.keep
        parent = "glb" if in_glb else "dram"
        # Scratchpad traffic: every real MAC reads its kept operands (a psum is read and
        # written) and every fill writes the scratchpad; idle PEs of a partial fold read nothing.
        if op == "outputs":
            refetch = max(0.0, distinct - out_words)
            acc["noc"][op] += moved + refetch
            acc[parent][op] += distinct + refetch
            if kept:
                acc["rf"][op] += 2 * layer.macs + moved + refetch
        else:
            acc["noc"][op] += moved
            acc[parent][op] += distinct
            if kept:
                acc["rf"][op] += layer.macs + moved
            elif streamed_reads:
                acc["rf"][op] += layer.macs
        if not in_glb:
            dram_words[op] += distinct + (refetch if op == "outputs" else 0.0)
            continue
        glb_fills = _fills(dram_loops, relevant)
        glb_tile = tile_size(op, ext_glb, layer)
        if op == "outputs":
            writes = glb_fills * glb_tile
            reads_back = max(0.0, writes - out_words)
            words = writes + reads_back
        else:
            words = glb_fills * glb_tile / (layer.im2col if op == "inputs" else 1.0)
        dram_words[op] += words
        acc["glb"][op] += words
    for op in OPERANDS:
        acc["dram"][op] = dram_words[op]

    energy = {"mac": layer.macs * arch.energy_pj["mac"]}
    psum_scale = arch.psum_width / arch.bits
    for level in STORAGE_LEVELS:
        per_word = arch.energy_pj[level]
        energy[level] = sum(words * per_word * (psum_scale if op == "outputs" else 1.0)
                            for op, words in acc[level].items())

    compute, folds = _compute_cycles(arch, m, dram_loops + glb_loops + rf_loops, temporal)
    dram_bytes = sum(w * (arch.psum_width if op == "outputs" else arch.bits) / 8
                     for op, w in dram_words.items())
    glb_words = sum(acc["glb"].values())
    return Evaluation(
        ok=True, macs=layer.macs, padded_macs=padded, compute_cycles=compute,
        dram_cycles=dram_bytes / arch.dram_bytes_per_cycle,
        glb_cycles=glb_words / arch.glb_words_per_cycle,
        accesses=acc, energy=energy, dram_words=dram_words,
        glb_bytes=glb_requirement(arch, layer, m), folds=folds, pes_used=n_pe)


def _forwarded(layer: Layer, ext_spatial: list[int], loops: list[tuple[int, int]],
               temporal: int) -> tuple[int, int]:
    """(parent fetches, words per fetch) of a streamed ifmap that PEs pass to their neighbours.

    While the innermost temporal loops only step the filter taps (R, S), the array's input window
    slides by one tap per step and all but its new edge is already in neighbouring PEs
    (convolutional reuse in the array, as ShiDianNao does): the parent serves the window of the
    whole run once instead of once per step. Every MAC still receives its word over one hop.
    """
    ext = list(ext_spatial)
    run = 1
    for dim, bound in reversed(loops):
        if dim not in (_R, _S):
            break
        ext[dim] *= bound
        run *= bound
    return temporal // run, tile_size("inputs", ext, layer)


def _compute_cycles(arch: Arch, m: Mapping, loops: list[tuple[int, int]], temporal: int
                    ) -> tuple[float, int]:
    """(cycles, folds): one MAC per PE per cycle, plus per-fold fill/drain on a systolic array."""
    if arch.pe_array.kind != "systolic" or m.stationary is None:
        return float(temporal), 1
    relevant = _RELEVANT_IDX[m.stationary]
    stream = 1
    for dim, bound in reversed(loops):
        if dim in relevant:
            break
        stream *= bound
    folds = temporal // stream
    rows, cols = arch.pe_array.rows, arch.pe_array.cols
    preload = rows if m.stationary in ("weights", "inputs") else 0
    return float(folds * (stream + preload + rows + cols - 2)), folds
