"""Transpose sinking and cancelling, and the model's boundary layout (graphopt.layout).

`sink-transposes` runs in the -O2/-O3 fixed-point group; `io-layout` is in no preset: the CLI
adds it for `--io-layout nchw|nhwc`, since it changes the model's declared interface.
"""
from __future__ import annotations

from graphopt import Graph, PassResult, register_pass
from graphopt.layout import set_io_layout, sink_transposes as _sink
from graphopt.layout.sink import transpose_totals


@register_pass("sink-transposes", level=2)
def sink_transposes(graph: Graph, *, max_rewrites: int = 10_000) -> PassResult:
    """Push Transposes through layout-agnostic and axis-carrying ops and cancel them, only where
    the number of Transposes (then the bytes they move) goes down."""
    before = transpose_totals(graph)
    regions = _sink(graph, max_rewrites=max_rewrites)
    after = transpose_totals(graph)
    return PassResult(regions > 0, {"regions": regions, "transposes_removed": before[0] - after[0]})


@register_pass("io-layout", level=0)
def io_layout(graph: Graph, *, layout: str = "keep") -> PassResult:
    """Give the model's rank-4 inputs and outputs the layout nchw or nhwc (keep: unchanged),
    inserting or removing boundary Transposes; names never change."""
    changed = set_io_layout(graph, layout)
    return PassResult(changed > 0, {"boundary_values": changed})
