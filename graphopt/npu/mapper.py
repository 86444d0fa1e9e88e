"""Mapper: search spatial fan-out, tilings and loop orders for one layer under a dataflow.

Search, deterministic and staged so a whole network maps in seconds:

1. spatial: for each side of the PE array, fill it with the dataflow's preferred dims in order,
   each taking either as much of the side as the dim allows (a partial last fold) or its largest
   divisor that fits; the best few per side by useful PE fraction are combined;
2. scratchpad tile: the maximal tiles over the dataflow's rf dims that fit every kept
   operand's scratchpad (largest first, plus the all-ones tile);
3. global-buffer tile: the maximal tiles (over a few divisors of what is left of each dim) that
   fit the buffer, minus bytes reserved for tensors kept on chip between layers, plus for each
   operand the largest tiles over only the dims it ignores (they keep it stationary);
4. each candidate is evaluated with the dataflow's natural loop order, the best few are then
   re-evaluated under every canonical dram x glb loop order (6 x 6).

The objective is energy, latency (cycles) or EDP; ties break on the other metric and then on
the mapping text, so the result never depends on iteration order. Every rejected candidate adds
its reason to `reasons`; a layer with no feasible mapping gets a MapResult with ok=False.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable

from graphopt.errors import NPUConfigError
from graphopt.npu.arch import Arch
from graphopt.npu.dataflows import CANONICAL_ORDERS, Dataflow, get_dataflow
from graphopt.npu.evaluator import Evaluation, evaluate, glb_requirement, tile_size
from graphopt.npu.mapping import Mapping
from graphopt.npu.workload import DIM_INDEX, DIMS, OPERAND_DIMS, Layer

OBJECTIVES = ("energy", "latency", "edp")
MAX_SIDE_OPTIONS = 4
MAX_RF_TILES = 4
MAX_GLB_TILES = 48
MAX_DIVISORS = 6
REFINE_TOP = 3
BRANCH_DIMS = 3


@dataclass(frozen=True)
class MapResult:
    layer: Layer                      # the loop nest that was mapped (im2col on systolic)
    mapping: Mapping | None
    evaluation: Evaluation | None
    evaluated: int
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.mapping is not None

    def failure_message(self, arch: Arch, name: str = "") -> str:
        counts = ", ".join(f"{r} x{n}" for r, n in sorted(self.reasons.items()))
        hint = ("enlarge global_buffer.size_kb" if "glb capacity" in self.reasons
                else "enlarge register_files")
        return (f"{self.layer.op_type} layer '{name or self.layer.name}' has no mapping that fits "
                f"architecture '{arch.name}' ({counts}); {hint}")


def objective_key(objective: str, ev: Evaluation) -> tuple[float, float]:
    energy, cycles = ev.total_energy, ev.cycles
    if objective == "energy":
        return (energy, cycles)
    if objective == "latency":
        return (cycles, energy)
    return (energy * cycles, energy)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _trim(values: list[int], limit: int) -> list[int]:
    """At most `limit` values, always keeping the smallest and the largest, spread evenly."""
    if len(values) <= limit:
        return values
    picks = {round(i * (len(values) - 1) / (limit - 1)) for i in range(limit)}
    return [values[i] for i in sorted(picks)]


def _side_options(dims: tuple[str, ...], remaining: dict[str, int], capacity: int
                  ) -> list[dict[str, int]]:
    """Ways to fill one array side of `capacity` PEs with `dims` (see module doc, step 1)."""
    found: dict[tuple, dict[str, int]] = {}

    def walk(i: int, room: int, chosen: dict[str, int]) -> None:
        if i == len(dims) or room == 1:
            found.setdefault(tuple(sorted(chosen.items())), dict(chosen))
            return
        dim = dims[i]
        size = remaining[dim]
        if size == 1:
            walk(i + 1, room, chosen)
            return
        options = {min(size, room), max(d for d in _divisors(size) if d <= room)}
        for factor in sorted(options, reverse=True):
            walk(i + 1, room // factor, {**chosen, dim: factor})

    walk(0, capacity, {})

    def useful(option: dict[str, int]) -> float:
        value = 1.0
        for dim, factor in option.items():
            size = remaining[dim]
            value *= size / math.ceil(size / factor)
        return value

    ranked = sorted(found.values(), key=lambda o: (-useful(o), sorted(o.items())))
    return ranked[:MAX_SIDE_OPTIONS]


def _maximal_tiles(dims: list[str], limits: dict[str, list[int]], fits) -> list[dict[str, int]]:
    """Near-maximal tiles: per dim (small dims first) the largest factor that still fits, and for
    the first BRANCH_DIMS dims also the next smaller one. Unfit all-minimum tiles are dropped."""
    order = sorted(dims, key=lambda d: (limits[d][-1], d))
    results: list[dict[str, int]] = []

    def walk(i: int, chosen: dict[str, int]) -> None:
        if i == len(order):
            results.append(dict(chosen))
            return
        dim = order[i]
        values = list(reversed(limits[dim]))
        first = next((k for k, v in enumerate(values) if fits({**chosen, dim: v})), None)
        if first is None:
            return
        picks = values[first:first + (2 if i < BRANCH_DIMS else 1)]
        for value in picks:
            walk(i + 1, {**chosen, dim: value})

    walk(0, {})
    unique = {tuple(sorted(t.items())): t for t in results}
    return sorted(unique.values(), key=lambda t: (-math.prod(t.values()), sorted(t.items())))


class Mapper:
    """Maps layers for one (arch, dataflow, objective); caches results per layer shape."""

    def __init__(self, arch: Arch, dataflow: Dataflow | str, objective: str = "energy"):
        if objective not in OBJECTIVES:
            raise NPUConfigError(f"unknown objective '{objective}'; choose one of "
                                 f"{', '.join(OBJECTIVES)}")
        self.arch = arch
        self.dataflow = get_dataflow(dataflow) if isinstance(dataflow, str) else dataflow
        self.objective = objective
        self._cache: dict[tuple, MapResult] = {}
        self.reasons: Counter[str] = Counter()
        self.evaluated = 0

    # --- public ------------------------------------------------------------------------------
    def map(self, layer: Layer, reserved_bytes: float = 0.0) -> MapResult:
        """The best mapping of a MAC layer, or a MapResult with ok=False and reason counts."""
        prepared = self.dataflow.prepare(self.arch, layer)
        key = (prepared.shape_key(), int(reserved_bytes))
        if key not in self._cache:
            result = self._search(prepared, reserved_bytes)
            self.reasons.update(result.reasons)
            self.evaluated += result.evaluated
            self._cache[key] = result
        cached = self._cache[key]
        return replace(cached, layer=replace(cached.layer, name=layer.name))

    # --- search stages -------------------------------------------------------------------------
    def _search(self, layer: Layer, reserved: float) -> MapResult:
        reasons: Counter[str] = Counter()
        scored: list[tuple[tuple, Mapping, Evaluation]] = []
        evaluated = 0
        for mapping in self._candidates(layer, reserved, reasons):
            ev = evaluate(self.arch, layer, mapping, reserved)
            evaluated += 1
            if not ev.ok:
                reasons[ev.reason] += 1
                continue
            scored.append((objective_key(self.objective, ev), mapping, ev))
        if not scored:
            return MapResult(layer, None, None, evaluated, dict(reasons))
        scored.sort(key=lambda item: (item[0], item[1].describe()))
        best = scored[0]
        for _, mapping, _ in scored[:REFINE_TOP]:
            for dram_order in CANONICAL_ORDERS:
                for glb_order in CANONICAL_ORDERS:
                    trial = replace(mapping, dram_order=dram_order, glb_order=glb_order)
                    ev = evaluate(self.arch, layer, trial, reserved)
                    evaluated += 1
                    if ev.ok:
                        item = (objective_key(self.objective, ev), trial, ev)
                        if (item[0], trial.describe()) < (best[0], best[1].describe()):
                            best = item
        return MapResult(layer, best[1], best[2], evaluated, dict(reasons))

    def _candidates(self, layer: Layer, reserved: float, reasons: Counter) -> Iterable[Mapping]:
        sizes = dict(zip(DIMS, layer.sizes))
        df = self.dataflow
        row_dims, col_dims = df.spatial_dims(self.arch)
        order = df.rf_order()
        for rows in _side_options(row_dims, sizes, self.arch.pe_array.rows):
            left = {d: math.ceil(sizes[d] / rows.get(d, 1)) for d in DIMS}
            for cols in _side_options(col_dims, left, self.arch.pe_array.cols):
                after_spatial = {d: math.ceil(left[d] / cols.get(d, 1)) for d in DIMS}
                for rf in self._rf_tiles(layer, after_spatial, reasons):
                    rest = {d: math.ceil(after_spatial[d] / rf.get(d, 1)) for d in DIMS}
                    base = [[rf.get(d, 1) for d in DIMS], [rows.get(d, 1) for d in DIMS],
                            [cols.get(d, 1) for d in DIMS]]
                    for glb in self._glb_tiles(layer, base, rest, reserved, reasons):
                        factors = base + [[glb[d] for d in DIMS],
                                          [rest[d] // glb[d] for d in DIMS]]
                        yield Mapping(tuple(tuple(f) for f in factors), order, order, order,
                                      df.rf_keep, df.stationary, df.name, df.forwards_inputs)

    def _rf_tiles(self, layer: Layer, left: dict[str, int], reasons: Counter
                  ) -> list[dict[str, int]]:
        dims = [d for d in self.dataflow.rf_dims if left[d] > 1] if self.dataflow.rf_keep else []
        if not dims:
            return [{}]
        limits = {d: _divisors(left[d]) for d in dims}
        entries = {op: self.arch.register_files.entries(op) for op in self.dataflow.rf_keep}

        def fits(choice: dict[str, int]) -> bool:
            ext = [choice.get(d, 1) for d in DIMS]
            for op, cap in entries.items():
                if tile_size(op, ext, layer) > cap:
                    reasons[f"rf capacity ({op})"] += 1
                    return False
            return True

        tiles = _maximal_tiles(dims, limits, fits)[:MAX_RF_TILES]
        ones = {d: 1 for d in dims}
        if fits(ones) and ones not in tiles:
            tiles.append(ones)
        return tiles

    def _glb_tiles(self, layer: Layer, base: list[list[int]], rest: dict[str, int],
                   reserved: float, reasons: Counter) -> list[dict[str, int]]:
        dims = [d for d in DIMS if rest[d] > 1]
        limits = {d: _trim(_divisors(rest[d]), MAX_DIVISORS) for d in dims}
        capacity = self.arch.global_buffer.size_bytes - reserved
        order = self.dataflow.rf_order()

        def full(choice: dict[str, int]) -> dict[str, int]:
            return {d: choice.get(d, 1) for d in DIMS}

        def fits(choice: dict[str, int]) -> bool:
            glb = full(choice)
            factors = tuple(tuple(f) for f in base + [[glb[d] for d in DIMS],
                                                      [rest[d] // glb[d] for d in DIMS]])
            probe = Mapping(factors, order, order, order, self.dataflow.rf_keep,
                            self.dataflow.stationary, self.dataflow.name)
            if glb_requirement(self.arch, layer, probe) > capacity:
                reasons["glb capacity"] += 1
                return False
            return True

        if not dims:
            return [full({})] if fits({}) else []
        tiles = _maximal_tiles(dims, limits, fits)[:MAX_GLB_TILES]
        # Tiles that grow only the dims one operand ignores keep that operand stationary across
        # the glb/dram boundary (e.g. a long pixel stream under fixed weights).
        for operand in OPERAND_DIMS:
            ignored = [d for d in dims if d not in OPERAND_DIMS[operand]]
            for tile in _maximal_tiles(ignored, limits, fits)[:2] if ignored else []:
                if tile not in tiles:
                    tiles.append(tile)
        return [full(t) for t in tiles]


__all__ = ["Mapper", "MapResult", "OBJECTIVES", "objective_key", "DIM_INDEX"]
