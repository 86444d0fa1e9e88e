"""Fold a constant zero Pad into the pads of the Conv that reads it.

    Conv(Pad(x, pads, 0), W, B) {pads=p}  ->  Conv(x, W, B) {pads=p + spatial part of pads}

Conv's own padding inserts zeros around the spatial dims, so padding with zeros first and then
convolving is the same as convolving with larger pads. Only mode="constant" with value 0, no
padding of the batch or channel dims and non-negative amounts qualify. The Conv's own pads are
read through ConvGeometry, so auto_pad VALID (none) and SAME_UPPER/SAME_LOWER (resolved against
the padded input's static size) become explicit pads before the Pad's amounts are added.
"""
from __future__ import annotations

import numpy as np

from graphopt import Graph, PassResult, register_pass
from graphopt.ir.axes import normalize_axes
from graphopt.ir.conv_geometry import ConvGeometry
from graphopt.ir.graph import Node, Value
from graphopt.rewrite import Const, Match, Op, Opt, Rewriter, Rule, Var, apply_rules

PASS_NAME = "fuse-pad-into-conv"

_PAD = Op("Pad", Var("x"), Const("pads"), Opt(Const("value")), Opt(Const("axes")), name="pad")
_PATTERN = Op("Conv", _PAD, Var("w"), Opt(Var("b")), name="conv")


def _full_pads(m: Match) -> np.ndarray | str:
    """Pad amounts as [begin_0..begin_{r-1}, end_0..end_{r-1}] over all dims of x, or a reason."""
    x = m["x"]
    if x.shape is None:
        return "the rank of the Pad input is unknown"
    rank = len(x.shape)
    pads = m.const("pads").astype(np.int64).reshape(-1)
    axes = m.const("axes")
    if axes is not None and not all(-rank <= int(a) < rank for a in axes.reshape(-1)):
        return f"Pad axes {axes.reshape(-1).tolist()} are out of range for rank {rank}"
    axes = list(range(rank)) if axes is None else list(normalize_axes(axes.reshape(-1), rank))
    if pads.size != 2 * len(axes):
        return f"pads has {pads.size} entries for {len(axes)} axes"
    full = np.zeros(2 * rank, dtype=np.int64)
    for i, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
    return full


def _check(m: Match) -> str | None:
    pad, conv = m.node("pad"), m.node("conv")
    mode = pad.attr("mode", "constant")
    if mode != "constant":
        return f"Pad mode is '{mode}', not 'constant'"
    value = m.const("value")
    if value is not None and value.size and np.any(value != 0):
        return f"Pad value is {value.reshape(-1)[0].item()!r}, not 0"
    auto_pad = conv.attr("auto_pad", "NOTSET")
    if auto_pad.startswith("SAME") and not _static_spatial(conv):
        return f"Conv has auto_pad={auto_pad} and a symbolic spatial size"
    full = _full_pads(m)
    if isinstance(full, str):
        return full
    rank = full.size // 2
    if full[[0, 1, rank, rank + 1]].any():
        return f"Pad pads the batch or channel dims (pads {full.tolist()})"
    if (full < 0).any():
        return f"Pad crops (negative pads {full.tolist()})"
    return None


def _static_spatial(conv: Node) -> bool:
    shapes = (conv.input(0).shape, conv.outputs[0].shape)
    return all(s is not None and all(isinstance(d, int) for d in s[2:]) for s in shapes)


def _replace(rw: Rewriter, m: Match) -> Value:
    conv = m.node("conv")
    full = _full_pads(m)
    rank = full.size // 2
    old = ConvGeometry.of(conv).pads  # auto_pad resolved to explicit pads
    added = list(full[2:rank]) + list(full[rank + 2:])
    attrs = dict(conv.attrs, pads=[int(a) + int(b) for a, b in zip(old, added)])
    attrs.pop("auto_pad", None)
    inputs = [m["x"], m["w"]] + ([m["b"]] if m["b"] is not None else [])
    return rw.make_node("Conv", inputs, attrs).outputs[0]


RULES = [Rule("pad-into-conv", _PATTERN, _replace, check=_check)]


@register_pass(PASS_NAME)
def fuse_pad_into_conv(graph: Graph) -> PassResult:
    """Fold a constant zero Pad of the spatial dims into the following Conv's pads."""
    return apply_rules(graph, RULES, pass_name=PASS_NAME)
