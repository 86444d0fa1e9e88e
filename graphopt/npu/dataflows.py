"""Dataflows as constraint sets over the one shared evaluator.

A dataflow says which operands the PE scratchpad keeps, which dims may fan out over PE rows and
columns (in order of preference), which dims may loop inside a PE, and which operand is
stationary (held while the inner loops stream past it). The mapper searches tilings and loop
orders inside those constraints; the evaluator is the same for all of them.

    ws   weight-stationary: PEs keep weights; reduction dims (C,R,S) on rows, M on columns.
    os   output-stationary: PEs keep partial sums; output pixels (P,Q,N) on rows, M on columns
         (multiple output channels and pixels: Chen et al.'s OS_B, MOC-MOP).
    os_a output-stationary over one ofmap plane (OS_A, SOC-MOP, ShiDianNao-like): output rows and
         columns on the array and in the PE, one output channel and image at a time.
         os and os_a step the filter taps inside the PE and pass ifmap values between
         neighbouring PEs (the convolutional reuse Chen et al. credit them with).
    os_c output-stationary over output channels (OS_C, MOC-SOP): output channels on the array
         and in the PE, one output pixel at a time.
    is   input-stationary: PEs keep inputs; reduction dims on rows, output pixels on columns.
    rs   row-stationary (Eyeriss): filter rows R on PE rows, output rows P on PE columns; each
         PE runs a 1-D row convolution with weights, an input window and psums in its
         scratchpads; the remaining rows / columns take more channels, filters or images.
    nlr  no-local-reuse: no scratchpads; inputs broadcast along columns, psums reduced along rows.

On a systolic array a layer runs as its im2col GEMM (Layer.as_gemm: N = pixels, C = C*R*S) and
only the three classic systolic dataflows apply (ws, os, is); groups never fan out there, since
every column shares one input stream.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from graphopt.errors import NPUConfigError
from graphopt.npu.arch import Arch
from graphopt.npu.workload import DIMS, OPERAND_DIMS, Layer


@dataclass(frozen=True)
class Dataflow:
    name: str
    title: str
    rf_keep: frozenset[str]
    stationary: str | None
    row_dims: tuple[str, ...]
    col_dims: tuple[str, ...]
    rf_dims: tuple[str, ...]
    systolic_rows: tuple[str, ...] = ()
    systolic_cols: tuple[str, ...] = ()
    forwards_inputs: bool = False

    def spatial_dims(self, arch: Arch) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if arch.pe_array.kind == "systolic":
            return self.systolic_rows, self.systolic_cols
        return self.row_dims, self.col_dims

    def prepare(self, arch: Arch, layer: Layer) -> Layer:
        """The loop nest this dataflow maps: the im2col GEMM on a systolic array."""
        if arch.pe_array.kind == "systolic":
            if not self.systolic_rows:
                raise NPUConfigError(
                    f"dataflow '{self.name}' needs a spatial (NoC) PE array, but architecture "
                    f"'{arch.name}' has pe_array.kind = \"systolic\"; use ws, os or is")
            return layer.as_gemm()
        return layer

    def rf_order(self) -> tuple[str, ...]:
        """Loop order inside a PE, outer to inner: keep the stationary operand innermost-reused."""
        return loop_order(self.stationary_priority())

    def stationary_priority(self) -> tuple[str, ...]:
        first = self.stationary or "outputs"
        rest = [op for op in ("weights", "inputs", "outputs") if op != first]
        return (first, *rest)


def loop_order(priority: tuple[str, ...]) -> tuple[str, ...]:
    """Outer-to-inner dim order whose innermost loops are irrelevant to priority[0], then to
    priority[1], ...: the order that keeps priority[0]'s tile in place longest."""
    inner_first: list[str] = []
    for op in priority:
        inner_first += [d for d in DIMS if d not in OPERAND_DIMS[op] and d not in inner_first]
    inner_first += [d for d in DIMS if d not in inner_first]
    return tuple(reversed(inner_first))


CANONICAL_ORDERS = tuple(loop_order(p) for p in
                         itertools.permutations(("weights", "inputs", "outputs")))

DATAFLOWS: dict[str, Dataflow] = {df.name: df for df in (
    Dataflow("ws", "weight-stationary", frozenset({"weights"}), "weights",
             row_dims=("C", "R", "S"), col_dims=("M", "G"), rf_dims=("M", "C", "R", "S"),
             systolic_rows=("C",), systolic_cols=("M",)),
    Dataflow("os", "output-stationary", frozenset({"outputs"}), "outputs",
             row_dims=("Q", "P", "N"), col_dims=("M", "G"),
             rf_dims=("N", "M", "P", "Q", "R", "S"),
             systolic_rows=("N",), systolic_cols=("M",), forwards_inputs=True),
    Dataflow("os_a", "output-stationary, one output plane (SOC-MOP)", frozenset({"outputs"}),
             "outputs", row_dims=("P", "Q"), col_dims=("Q", "P"), rf_dims=("P", "Q", "R", "S"),
             forwards_inputs=True),
    Dataflow("os_c", "output-stationary, one output pixel (MOC-SOP)", frozenset({"outputs"}),
             "outputs", row_dims=("M", "G"), col_dims=("M", "G"), rf_dims=("M",)),
    Dataflow("is", "input-stationary", frozenset({"inputs"}), "inputs",
             row_dims=("C", "R", "S", "G"), col_dims=("Q", "P", "N"),
             rf_dims=("N", "C", "P", "Q"),
             systolic_rows=("C",), systolic_cols=("N",)),
    Dataflow("rs", "row-stationary", frozenset({"weights", "inputs", "outputs"}), None,
             row_dims=("R", "C", "M", "G"), col_dims=("P", "N", "M", "G"),
             rf_dims=("M", "C", "S", "Q")),
    Dataflow("nlr", "no-local-reuse", frozenset(), None,
             row_dims=("C", "R", "S"), col_dims=("M", "G", "N"), rf_dims=()),
)}


def get_dataflow(name: str) -> Dataflow:
    try:
        return DATAFLOWS[name.lower()]
    except KeyError:
        raise NPUConfigError(f"unknown dataflow '{name}'; choose one of "
                             f"{', '.join(DATAFLOWS)}") from None
