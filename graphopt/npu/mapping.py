"""Mapping: how one layer's loop nest is split over the storage levels and the PE array.

Levels, innermost first:

    rf    temporal loops inside one PE (its scratchpad tile)
    row   spatial fan-out over PE rows
    col   spatial fan-out over PE columns
    glb   temporal loops over global-buffer tiles
    dram  temporal loops over DRAM (the outermost)

`factors[level][dim]` is the loop bound of `dim` at `level`; their product over levels covers the
dim (it may exceed it: the last tile is then partly idle, e.g. 55 output rows over 14 columns
run as 4 folds of 14). The glb and dram loops are ordered (outer to inner) because the order
decides which operand stays put while the inner loops run. `rf_keep` lists the operands the PE
scratchpad holds (the others stream through a one-word register), `stationary` names the operand
that stays in the array across a stream on a systolic array, `forwards_inputs` says that PEs
holding adjacent output pixels pass streamed ifmap values to each other (convolutional reuse
in the array) instead of each fetching them from the buffer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from graphopt.npu.workload import DIMS

LEVELS = ("rf", "row", "col", "glb", "dram")
RF, ROW, COL, GLB, DRAM = range(5)
SHORT_OPERAND = {"weights": "W", "inputs": "I", "outputs": "O"}


@dataclass(frozen=True)
class Mapping:
    factors: tuple[tuple[int, ...], ...]
    glb_order: tuple[str, ...]
    dram_order: tuple[str, ...]
    rf_order: tuple[str, ...]
    rf_keep: frozenset[str]
    stationary: str | None
    dataflow: str
    forwards_inputs: bool = False     # PEs pass the ifmap window to their neighbours

    def factor(self, level: str, dim: str) -> int:
        return self.factors[LEVELS.index(level)][DIMS.index(dim)]

    @property
    def pes_used(self) -> int:
        return math.prod(self.factors[ROW]) * math.prod(self.factors[COL])

    def _loops(self, level: int, order: tuple[str, ...]) -> str:
        parts = [f"{d}{self.factors[level][DIMS.index(d)]}" for d in order
                 if self.factors[level][DIMS.index(d)] > 1]
        return " ".join(parts) or "-"

    def describe(self) -> str:
        """Compact text, outer to inner: `dram[..] glb[..] row[..] col[..] rf[..]`."""
        return (f"dram[{self._loops(DRAM, self.dram_order)}] "
                f"glb[{self._loops(GLB, self.glb_order)}] "
                f"row[{self._loops(ROW, DIMS)}] col[{self._loops(COL, DIMS)}] "
                f"rf[{self._loops(RF, self.rf_order)}]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataflow": self.dataflow,
            "loops": {level: {d: self.factors[i][j] for j, d in enumerate(DIMS)
                              if self.factors[i][j] > 1}
                      for i, level in enumerate(LEVELS)},
            "glb_order": list(self.glb_order),
            "dram_order": list(self.dram_order),
            "rf_keep": sorted(self.rf_keep),
            "stationary": self.stationary,
            "forwards_inputs": self.forwards_inputs,
            "text": self.describe(),
        }
