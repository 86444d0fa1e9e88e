"""Layout selection on a specialized Program: which tensors the C backend keeps blocked (NCHWc).

The choice is graphopt.layout.select's whole-graph min-cut over two layouts, NCHW and the
target's NCHWc (c = block_width: one SIMD register of floats): every step touching a rank-4
activation is a site whose cost per layout is its kernel's (graphopt.layout.kernels
.backend_kernels; infinite where the backend has no blocked kernel, with the reason kept for the
report), and every producer -> reader edge costs the bytes a conversion moves when the two
differ. Graph inputs and outputs stay NCHW. Then the program is rewritten: blocked steps' rank-4
outputs become blocked tensors, and a conversion step (ops/conv_blocked.py) is inserted before
the first reader that wants the other layout, shared by later readers. Weights are re-packed by
the blocked emitters at compile time; layout-agnostic elementwise steps (all operands
same-shaped activations or scalars) run on blocked tensors unchanged, so they follow their
neighbours.
"""
from __future__ import annotations

import dataclasses
import math
import weakref

from graphopt.backend.c.nchwc import block_width, blocked_shape, is_blocked, logical_shape
from graphopt.backend.c.algorithms import choose as choose_algorithm
from graphopt.backend.c.ops.conv_blocked import (DOMAIN, FROM_BLOCKED, TO_BLOCKED,
                                                 blocked_problem, reads_any_layout)
from graphopt.backend.c.target import Target
from graphopt.backend.program import Program, Step, Tensor, step_reads
from graphopt.errors import BadInputError
from graphopt.ir import ops
from graphopt.ir.graph import Node
from graphopt.ir.types import DType
from graphopt.layout import kernels
from graphopt.layout.kernels import NCHW, KernelTable, backend_kernels, blocked
from graphopt.layout.select import Edge, LayoutChoice, Problem, choose

# auto: the cost model's choice; nchw: no blocked tensor; blocked: every step that has a
# blocked kernel runs it, whatever the conversions cost (to test and measure the kernels)
LAYOUT_MODES = ("auto", "nchw", "blocked")
# Machine balance for the cost model: FLOPs one core does in the time it moves one byte
# through a layout conversion (a strided gather, ~4 GB/s against ~60 GFLOP/s on AVX2).
FLOPS_PER_BYTE = 16.0

# How much faster than im2col the cost model takes the NCHW Winograd kernels to be: below their
# multiply ratios (4x for F(4x4, 3x3), 2.25x for F(2x2, 3x3)) for the transforms' cost; an
# estimate, not a per-layer measurement.
WINOGRAD_SAVING = {"winograd2x2": 1.6, "winograd4x4": 2.0}

_CHOICES: dict[int, tuple[weakref.ref, LayoutChoice]] = {}


def check_layout_mode(mode: str) -> str:
    if mode not in LAYOUT_MODES:
        raise BadInputError(f"unknown layout mode '{mode}'; choose one of "
                            f"{', '.join(LAYOUT_MODES)}")
    return mode


def assign_layouts(program: Program, target: Target, mode: str = "auto") -> LayoutChoice | None:
    """Choose and apply each activation's layout (see LAYOUT_MODES)."""
    if check_layout_mode(mode) == "nchw":
        return None
    width = block_width(target)
    table = KernelTable(backend_kernels(width), kernels.Target(width, FLOPS_PER_BYTE))
    problem = build_program_problem(program, table, width)
    choice = choose(problem, forced=_all_blocked(problem) if mode == "blocked" else None)
    if any(label != NCHW for label in choice.labels.values()):
        apply_layouts(program, choice.labels, width)
    _CHOICES[id(program)] = (weakref.ref(program), choice)
    weakref.finalize(program, _CHOICES.pop, id(program), None)
    return choice


def _all_blocked(problem: Problem) -> dict[str, str]:
    blocked_layout = problem.layouts[1]
    return {site: blocked_layout if site.startswith("step:") and math.isfinite(costs[
        blocked_layout]) else NCHW for site, costs in problem.unary.items()}


def layout_choice(program: Program) -> LayoutChoice | None:
    """The choice assign_layouts made for `program` (None when it kept NCHW by request)."""
    entry = _CHOICES.get(id(program))
    return entry[1] if entry is not None and entry[0]() is program else None


def _activation(t: object) -> bool:
    return isinstance(t, Tensor) and not t.is_const and (t.rank == 4 or is_blocked(t.layout))


def blocked_reason(step: Step, width: int) -> str | None:
    """Why `step` cannot run on NCHW{width}c tensors, None when it can."""
    node = step.node
    if node.op_type == "Conv" and not node.domain:
        return blocked_problem(step, width)
    if not ops.is_a(node, ops.ELEMENTWISE):
        return f"no blocked kernel for {node.op_type}"
    out = step.outputs[0]
    if len(step.outputs) != 1 or out.dtype != DType.FLOAT or out.rank != 4:
        return "not a rank-4 float elementwise op"
    if out.shape[1] % width:
        return f"{out.shape[1]} channels not a multiple of {width}"
    for t in step.inputs:
        if t is not None and not (t.size == 1 or (not t.is_const and t.shape == out.shape)):
            return f"operand {t.describe()} broadcasts over the output"
    return None


def _reads_any(step: Step) -> bool:
    return step.op_type == "Conv" and not step.node.domain and reads_any_layout(step)


def _step_cost(table: KernelTable, step: Step, layout: str) -> float:
    """Bytes-equivalent of the step's kernel in `layout` (graphopt.layout.kernels units); an
    NCHW conv the backend runs as Winograd does WINOGRAD_SAVING times fewer multiplies."""
    decl = table.lookup(step.node, layout)
    traffic = sum(t.nbytes for t in (*step_reads(step), *step.outputs) if not t.is_const)
    if decl is None:
        return traffic if layout == NCHW else math.inf
    if not decl.compute_bound:
        return traffic / decl.efficiency
    x, w, y = step.inputs[0], step.inputs[1], step.outputs[0]
    flops = 2.0 * y.size * (x.shape[1] // int(step.node.attrs.get("group", 1)))
    flops *= math.prod(w.shape[2:])
    if layout == NCHW:
        flops /= WINOGRAD_SAVING.get(choose_algorithm(step), 1.0)
    return flops / table.target.flops_per_byte / decl.efficiency


def build_program_problem(program: Program, table: KernelTable, width: int) -> Problem:
    """The sites (graph inputs/outputs and steps touching rank-4 activations), their costs in
    NCHW and NCHW{width}c, and the producer -> reader edges."""
    layout = blocked(width)
    problem = Problem((NCHW, layout))
    pinned = {NCHW: 0.0, layout: math.inf}
    site_of: dict[int, str] = {}
    for t in program.inputs:
        if _activation(t):
            site_of[id(t)] = f"input:{t.name}"
            problem.unary[site_of[id(t)]] = dict(pinned)
    for i, step in enumerate(program.steps):
        reads = list({id(t): t for t in step_reads(step) if _activation(t)}.values())
        outs = [t for t in step.outputs if _activation(t)]
        if not reads and not outs:
            continue
        site = f"step:{i}"
        problem.nodes[site] = step.node
        reason = blocked_reason(step, width)
        problem.unary[site] = {NCHW: _step_cost(table, step, NCHW),
                               layout: math.inf if reason else _step_cost(table, step, layout)}
        if reason:
            problem.reasons[site] = reason
        elif step.op_type == "Conv":
            problem.notes[site] = f"NCHW runs it as {choose_algorithm(step)}"
        free = layout if not reason and _reads_any(step) else ""
        for t in reads:
            if id(t) in site_of:
                problem.edges.append(Edge(site_of[id(t)], site, t.name, t.nbytes, t.shape,
                                          free if t is step.inputs[0] else ""))
        for t in outs:
            site_of[id(t)] = site
    for t in program.outputs:
        if _activation(t) and id(t) in site_of:
            problem.unary[f"output:{t.name}"] = dict(pinned)
            problem.edges.append(Edge(site_of[id(t)], f"output:{t.name}", t.name, t.nbytes,
                                      t.shape))
    return problem


def apply_layouts(program: Program, labels: dict[str, str], width: int) -> None:
    """Rewrite `program` to the labels of its step sites (see the module docstring)."""
    layout = blocked(width)
    converted: dict[tuple[int, str], Tensor] = {}
    outputs = {id(t) for t in program.outputs}
    steps: list[Step] = []

    def read(t: object, want: str) -> object:
        if not _activation(t) or (t.layout or NCHW) == want:
            return t
        key = (id(t), want)
        if key not in converted:
            to_blocked = want != NCHW
            shape = blocked_shape(t.shape, width) if to_blocked else logical_shape(t.shape)
            new = Tensor(f"{t.name}_{want.lower()}", t.dtype, shape,
                         layout=want if to_blocked else "")
            steps.append(_conversion(t, new, to_blocked))
            converted[key] = new
        return converted[key]

    for i, step in enumerate(program.steps):
        mine = labels.get(f"step:{i}", NCHW)
        any_input = mine != NCHW and _reads_any(step)
        step.inputs = [t if k == 0 and any_input else read(t, mine)
                       for k, t in enumerate(step.inputs)]
        step.epilogue = [dataclasses.replace(op, operands=tuple(read(t, mine)
                                                                for t in op.operands))
                         for op in step.epilogue]
        steps.append(step)
        if mine == NCHW:
            continue
        for j, out in enumerate(step.outputs):
            if not _activation(out):
                continue
            if id(out) in outputs:  # the model's output stays NCHW: convert after the step
                new = Tensor(f"{out.name}_{layout.lower()}", out.dtype,
                             blocked_shape(out.shape, width), layout=layout)
                step.outputs[j] = new
                steps.append(_conversion(new, out, to_blocked=False))
                converted[(id(out), layout)] = new
            else:
                out.shape, out.layout = blocked_shape(out.shape, width), layout
    program.steps[:] = steps


def _conversion(source: Tensor, result: Tensor, to_blocked: bool) -> Step:
    op = TO_BLOCKED if to_blocked else FROM_BLOCKED
    return Step(Node(op, [], [], name=f"{source.name}_{op}", domain=DOMAIN), [source], [result])
