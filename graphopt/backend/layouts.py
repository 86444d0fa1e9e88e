"""Layout selection on a specialized Program: which tensors the C backend keeps blocked (NCHWc).

The choice is graphopt.layout.select's whole-graph min-cut over two layouts, NCHW and the
target's NCHWc (c = block_width: one SIMD register of floats): every step touching a rank-4
activation is a site whose cost per layout is its kernel's predicted time (KERNEL_GMACS, rates
measured per kernel; infinite where the backend has no blocked kernel, with the reason kept for
the report), and every producer -> reader edge costs the bytes a conversion moves when the two
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
                                                 blocked_algorithm, blocked_conv_shape,
                                                 blocked_maxpool, blocked_pool_problem,
                                                 blocked_problem, reads_any_layout)
from graphopt.backend.c.ops.conv import ConvShape
from graphopt.backend.c.target import Target
from graphopt.backend.program import Program, Step, Tensor, step_reads
from graphopt.errors import BadInputError
from graphopt.ir import ops
from graphopt.ir.graph import Node
from graphopt.ir.types import DType
from graphopt.layout.kernels import NCHW, blocked
from graphopt.layout.select import Edge, LayoutChoice, Problem, choose

# auto: the cost model's choice; nchw: no blocked tensor; blocked: every step that has a
# blocked kernel runs it, whatever the conversions cost (to test and measure the kernels)
LAYOUT_MODES = ("auto", "nchw", "blocked")

# The cost model, in seconds on one core (the selection's unit is bytes-equivalent: seconds x
# CONVERSION_BYTES_PER_S, so a conversion costs the bytes it moves). Measured on the 2-core
# Zen 3 (AVX2) with `benchmarks/bench_layout.py --calibrate` (per-kernel minimum over rounds of
# resnet18, mobilenet_v2 and effnet, every conv timed in both layouts), which prints these
# predictions next to the measured times.
# A conversion (ToBlocked / FromBlocked) streams 3-4 GB/s from a 3 MB tensor, ~10 from a
# cached one.
CONVERSION_BYTES_PER_S = 4.0e9
# Multiply-adds per second each Conv kernel sustains on one core, GMAC/s; Winograd's are the
# direct convolution's MACs (its transforms do fewer). Keyed by algorithm, or algorithm +
# " shallow" for an image's first layer (fewer than SHALLOW_CHANNELS input channels per group:
# im2col then copies a thin, very wide matrix) and + " 1x1" for a strided 1x1 window (a short
# reduction per register tile). Measured (minimum over rounds, load average 5-7, so the lower
# figures are the disturbed ones; the ratios between kernels timed in one run are what count):
#   im2col 3x3 s2 20-33, 1x1 s2 17-27, shallow 17-26; im2col_gather 7x7 ~30 (~35 on digits_cnn's
#   8x8 and 4x4 planes, whole rows copied as vectors); Winograd 4x4
#   40-78 (56x56 to 14x14), 2x2 ~53 (7x7); pointwise 1x1 25-31 (15-25 on 112x112);
#   nchwc_direct 36-38 x tile fill (29 at 14x14, 20 at 7x7 s2), 1x1 s2 14-21, shallow 15-32
#   (resnet18's stem: 3.7 ms against im2col's 4.5 in the same run);
#   nchwc_pointwise 32-39; nchwc_depthwise 11-23; NCHW depthwise 9 at 112x112, 1-3 below
#   (KERNEL_PLANE_SECONDS: its per-plane setup dominates small planes).
KERNEL_GMACS: dict[str, float] = {
    # NCHW (graphopt/backend/c/ops/conv.py, winograd.py)
    "im2col": 28.0, "im2col 1x1": 22.0, "im2col shallow": 24.0, "im2col_gather": 35.0,
    "pointwise": 27.0, "depthwise": 10.0, "winograd4x4": 60.0, "winograd2x2": 50.0,
    # NCHWc (ops/conv_blocked.py); direct scaled by its register tiles' fill (_tile_fill)
    "nchwc_direct": 36.0, "nchwc_direct 1x1": 17.0, "nchwc_direct shallow": 30.0,
    "nchwc_pointwise": 35.0, "nchwc_depthwise": 16.0,
}
# Bytes per second (read + written) of memory-bound kernels whose speed differs by layout; any
# other step streams at CONVERSION_BYTES_PER_S in both. MaxPool 3x3 s2 on resnet18's
# 64x112x112: 1.7-1.9 ms in NCHW (a scalar loop per output), 0.44 ms blocked (a vector per
# pixel's 8 channels).
STREAM_BYTES_PER_S: dict[tuple[str, bool], float] = {
    ("MaxPool", False): 2.3e9, ("MaxPool", True): 8.0e9}
# Seconds a kernel spends per channel plane besides its multiply-adds.
KERNEL_PLANE_SECONDS: dict[str, float] = {"depthwise": 0.4e-6}
SHALLOW_CHANNELS = 8
DEFAULT_GMACS = 10.0  # an algorithm the table does not know (grouped convs, 3-D, ...)
# The direct kernel's register tile: up to 6 pixels of a row x 2 output blocks; fewer
# accumulators than this leave FMA latency exposed.
_TILE_PIXELS, _TILE_ACCUMULATORS = 6, 12

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
    problem = build_program_problem(program, width)
    choice = choose(problem, forced=_all_blocked(problem) if mode == "blocked" else None)
    choice.seconds_per_byte = 1.0 / CONVERSION_BYTES_PER_S
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
    if node.op_type == "MaxPool" and not node.domain:
        return blocked_pool_problem(step, width)
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


def _reads_any(step: Step, width: int) -> bool:
    """Whether the step's blocked kernel reads its NCHW input as is: the direct kernel does,
    when the channels do not fill blocks (a first layer). With whole blocks, reading NCHW is
    ~2.5x slower than NCHWc (resnet18's 64 -> 128 3x3 s2: 12 against 31 GMAC/s), so it gets a
    conversion."""
    return step.op_type == "Conv" and not step.node.domain and reads_any_layout(step) and \
        step.inputs[0].shape[1] % width != 0


def conv_macs(step: Step) -> int:
    """Multiply-adds of a Conv step as a direct convolution (blocked tensors read logically)."""
    shape = blocked_conv_shape(step)
    return shape.batch * shape.out_channels * shape.plane_out * shape.cg * \
        shape.kernel[0] * shape.kernel[1]


def _tile_fill(step: Step, width: int) -> float:
    """The share of the FMA units the direct kernel's register tiles keep busy: rows split in
    tiles of at most 6 pixels, output blocks in pairs (csrc/nchwc.c graphopt_nchwc_conv2d)."""
    shape = blocked_conv_shape(step)
    ow = shape.out_hw[1]
    pixels = ow / math.ceil(ow / _TILE_PIXELS)
    blocks = min(2, shape.out_channels // width)
    return min(1.0, pixels * blocks / _TILE_ACCUMULATORS)


def _rate_key(shape: ConvShape, algorithm: str) -> str:
    if shape.cg < SHALLOW_CHANNELS and f"{algorithm} shallow" in KERNEL_GMACS:
        return f"{algorithm} shallow"
    if shape.kernel == (1, 1) and f"{algorithm} 1x1" in KERNEL_GMACS:
        return f"{algorithm} 1x1"
    return algorithm


def kernel_seconds(step: Step, algorithm: str, width: int) -> float:
    """What the cost model predicts a Conv step takes on one core with `algorithm`."""
    shape = blocked_conv_shape(step)
    rate = KERNEL_GMACS.get(_rate_key(shape, algorithm), DEFAULT_GMACS) * 1e9
    if algorithm == "nchwc_direct":
        rate *= _tile_fill(step, width)
    planes = shape.batch * shape.out_channels
    return conv_macs(step) / rate + planes * KERNEL_PLANE_SECONDS.get(algorithm, 0.0)


def predicted_seconds(step: Step) -> float | None:
    """The cost model's time for a lowered Conv step with its recorded algorithm (None for
    other steps): what --calibrate compares with the measured one."""
    if step.op_type != "Conv" or step.node.domain or not step.algorithm:
        return None
    y = step.outputs[0]
    width = y.shape[-1] if is_blocked(y.layout) else 1
    return kernel_seconds(step, step.algorithm, width)


def _step_cost(step: Step, layout: str, width: int) -> float:
    """Bytes-equivalent of the step's kernel in `layout`: a Conv's predicted seconds times
    CONVERSION_BYTES_PER_S; any other step the activation bytes it reads and writes, alike in
    both layouts (elementwise kernels stream either)."""
    if step.op_type == "Conv" and not step.node.domain and step.inputs[0].rank == 4:
        algorithm = blocked_algorithm(step) if layout != NCHW else choose_algorithm(step)
        return kernel_seconds(step, algorithm, width) * CONVERSION_BYTES_PER_S
    traffic = sum(t.nbytes for t in (*step_reads(step), *step.outputs) if not t.is_const)
    rate = STREAM_BYTES_PER_S.get((step.op_type, layout != NCHW), CONVERSION_BYTES_PER_S)
    return traffic * CONVERSION_BYTES_PER_S / rate


def build_program_problem(program: Program, width: int) -> Problem:
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
        problem.unary[site] = {NCHW: _step_cost(step, NCHW, width),
                               layout: math.inf if reason else _step_cost(step, layout, width)}
        if reason:
            problem.reasons[site] = reason
        elif step.op_type == "Conv":
            problem.notes[site] = (f"NCHW runs it as {choose_algorithm(step)}, {layout} as "
                                   f"{blocked_algorithm(step)}")
        free = layout if not reason and _reads_any(step, width) else ""
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
        any_input = mine != NCHW and _reads_any(step, width)
        step.inputs = [t if k == 0 and any_input else read(t, mine)
                       for k, t in enumerate(step.inputs)]
        step.epilogue = [dataclasses.replace(op, operands=tuple(read(t, mine)
                                                                for t in op.operands))
                         for op in step.epilogue]
        steps.append(step)
        if mine == NCHW:
            continue
        if step.op_type == "MaxPool" and not step.node.domain:
            step.node = blocked_maxpool(step)  # before its tensors get their blocked shapes
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
