"""Kernel layout declarations as data, and what running a node in a layout costs.

Each kernel declares, per layout it accepts, its efficiency: the fraction of the target's peak
it reaches (FLOP rate for compute-bound ops, memory bandwidth for memory-bound ones). Costs are
in bytes-equivalent, the unit of conversions (a conversion costs the bytes it moves): a FLOP
costs 1 / target.flops_per_byte bytes, the machine balance. A node with no declaration for a
layout cannot run in it; layout-agnostic ops (elementwise) are declared for every layout at the
same efficiency, so they follow their neighbours.

`default_kernels` is a generic table for graph-level choices (choose_layouts) and targets
without measurements; the C backend states its own kernels' measured rates and builds its
problem directly (graphopt/backend/layouts.py). The selection (graphopt.layout.select) only
reads the costs, so tests and targets pass their own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from graphopt.analysis import node_flops
from graphopt.ir import ops
from graphopt.ir.graph import Node
from graphopt.layout.perms import nbytes

NCHW, NHWC = "NCHW", "NHWC"


def blocked(width: int) -> str:
    """The blocked layout name for `width` channels per block, e.g. NCHW8c."""
    return f"NCHW{width}c"


@dataclass(frozen=True)
class Target:
    """What the selection needs to know about the machine."""

    vector_width: int  # floats per SIMD register: the channel block of the blocked layout
    flops_per_byte: float  # machine balance: FLOPs that take as long as moving one byte

    @property
    def layouts(self) -> tuple[str, ...]:
        return (NCHW, NHWC, blocked(self.vector_width))


# Floats per SIMD register for the backend's micro-kernel families (graphopt/backend/c/tiles.py).
VECTOR_WIDTH = {"avx512": 16, "avx2": 8, "neon": 4, "scalar": 1}


def target_for_isa(isa: str, flops_per_byte: float) -> Target:
    """The selection's Target for a backend ISA name ("avx2", "avx512", ...)."""
    return Target(VECTOR_WIDTH[isa], flops_per_byte)


@dataclass(frozen=True)
class KernelDecl:
    """One kernel: `op` (op_type, or a family name from FAMILIES) runs in `layout` at
    `efficiency` of peak when `condition` (a name from CONDITIONS, "" = always) holds."""

    op: str
    layout: str
    efficiency: float
    condition: str = ""
    compute_bound: bool = True


def _kernel(node: Node) -> tuple[int, ...]:
    weight = node.input(1)
    return () if weight is None or weight.shape is None else tuple(weight.shape[2:])


def _is_depthwise(node: Node) -> bool:
    group = int(node.attr("group", 1))
    return group > 1 and node.input(1) is not None and node.input(1).shape is not None \
        and node.input(1).shape[1] == 1


CONDITIONS: dict[str, Callable[[Node], bool]] = {
    "depthwise": _is_depthwise,
    "pointwise": lambda n: all(k == 1 for k in _kernel(n)) and bool(_kernel(n)) and
    all(st == 1 for st in n.attr("strides", [1])),
    "large_kernel": lambda n: any(isinstance(k, int) and k >= 5 for k in _kernel(n)),
    # a first layer: so few input channels times taps that im2col + GEMM runs a thin K
    "shallow": lambda n: n.input(1) is not None and n.input(1).shape is not None and
    math.prod(d if isinstance(d, int) else 64 for d in n.input(1).shape[1:]) < 64,
}

FAMILIES: dict[str, frozenset[ops.OpKey]] = {
    "elementwise": ops.ELEMENTWISE,
    "pool": frozenset(("", op) for op in ("MaxPool", "AveragePool", "GlobalAveragePool",
                                          "GlobalMaxPool")),
}


def default_kernels(target: Target) -> list[KernelDecl]:
    """Placeholder declarations shaped like the C backend's kernels (see the module docstring)."""
    b = blocked(target.vector_width)
    table = [
        KernelDecl("Conv", NCHW, 0.45), KernelDecl("Conv", NHWC, 0.55), KernelDecl("Conv", b, 0.75),
        KernelDecl("Conv", NCHW, 0.15, "depthwise"), KernelDecl("Conv", NHWC, 0.5, "depthwise"),
        KernelDecl("Conv", b, 0.55, "depthwise"),
        KernelDecl("Conv", b, 0.35, "large_kernel"),
    ]
    for layout in target.layouts:
        table.append(KernelDecl("elementwise", layout, 1.0, compute_bound=False))
        table.append(KernelDecl("pool", layout, 0.8 if layout == NCHW else 0.9,
                                compute_bound=False))
        table.append(KernelDecl("Concat", layout, 1.0, compute_bound=False))
    return table


class KernelTable:
    """Looks up the declaration for (node, layout): a matching conditional declaration wins over
    the unconditional one."""

    def __init__(self, decls: Iterable[KernelDecl], target: Target):
        self.decls = list(decls)
        self.target = target

    def _matches(self, decl: KernelDecl, node: Node) -> bool:
        family = FAMILIES.get(decl.op)
        op_ok = node.key in family if family is not None else (node.op_type == decl.op
                                                                and not node.domain)
        return op_ok and (not decl.condition or CONDITIONS[decl.condition](node))

    def lookup(self, node: Node, layout: str) -> KernelDecl | None:
        found = [d for d in self.decls if d.layout == layout and self._matches(d, node)]
        found.sort(key=lambda d: d.condition == "")
        return found[0] if found else None

    def supports_any(self, node: Node) -> bool:
        return any(self._matches(d, node) for d in self.decls)

    def cost(self, node: Node, layout: str) -> float:
        """Bytes-equivalent of running `node` in `layout`; inf when no kernel is declared."""
        decl = self.lookup(node, layout)
        if decl is None:
            return math.inf
        if decl.compute_bound:
            work = node_flops(node) / self.target.flops_per_byte
        else:
            work = sum(nbytes(v) for v in (*node.inputs, *node.outputs) if v is not None
                       and not v.is_const)
        return work * padding_factor(node.outputs[0].shape, layout) / decl.efficiency


def padding_factor(shape: Sequence | None, layout: str) -> float:
    """How much bigger a tensor gets in `layout`: blocked layouts pad C up to the block."""
    if not layout.endswith("c") or shape is None or len(shape) != 4 \
            or not isinstance(shape[1], int) or shape[1] <= 0:
        return 1.0
    width = int(layout[4:-1])
    return math.ceil(shape[1] / width) * width / shape[1]
