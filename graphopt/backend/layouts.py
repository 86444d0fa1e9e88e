"""Layout selection on a specialized Program: which tensors the C backend keeps blocked (NCHWc).

The choice is graphopt.layout.select's whole-graph min-cut over two layouts, NCHW and the
target's NCHWc (c = block_width: one SIMD register of floats): every step touching a rank-4
activation is a site whose cost per layout is its kernel's predicted time (KERNEL_GMACS, rates
measured per kernel, plus STEP_SECONDS a call; infinite where the backend has no blocked
kernel, with the reason kept for the report), and every producer -> reader edge costs, when
the two differ, the bytes a conversion moves plus its call. Times are for the thread count the
program will run with (THREAD_SPEEDUP per kernel; the caller builds one program per count).
Graph inputs and outputs stay NCHW. Then the program is rewritten: blocked steps' rank-4
outputs become blocked tensors, and a conversion step (ops/conv_blocked.py) is inserted before
the first reader that wants the other layout, shared by later readers. Weights are re-packed by
the blocked emitters at compile time; layout-agnostic elementwise steps (all operands
same-shaped activations or scalars) run on blocked tensors unchanged, so they follow their
neighbours.

Channel counts that are not a multiple of the block width are padded up to whole blocks
(nchwc.py): pad lanes hold zeros, written by ToBlocked and kept so by every blocked step.
blocked_twin is a step as the blocked kernels run it (activations padded, weights and bias
zero-padded, a depthwise conv's group the padded count); the cost model prices the twin, so the
padded lanes' work counts (a 17-channel chain on 16-wide blocks stays NCHW), and blocked_reason
refuses a padded step whose op would write anything but zero into pad lanes (_pad_lanes_problem:
the op or the conv's epilogue evaluated on zero activations and its scalar operands; a Sigmoid
alone gives 0.5). apply_layouts zero-pads the weights of the convs it makes blocked
(pad_conv_weights) and FromBlocked drops the pad lanes.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import weakref
from dataclasses import dataclass

import numpy as np

from graphopt.backend.c.nchwc import (block_width, blocked_shape, is_blocked, logical_shape,
                                      padded_channels)
from graphopt.backend.c.algorithms import choose as choose_algorithm, choosing_for
from graphopt.backend.c.ops.conv_blocked import (DOMAIN, FROM_BLOCKED, TO_BLOCKED,
                                                 blocked_algorithm, blocked_conv_shape,
                                                 blocked_maxpool, blocked_pool_problem,
                                                 blocked_problem, reads_any_layout)
from graphopt.backend.c.ops.conv import ConvShape
from graphopt.backend.c.target import Target
from graphopt.backend.program import EpilogueOp, Program, Step, Tensor, step_reads
from graphopt.errors import BadInputError, GraphoptError
from graphopt.evaluator import Call, evaluate
from graphopt.ir import ops
from graphopt.ir.conv_geometry import ConvGeometry
from graphopt.ir.graph import Node
from graphopt.ir.types import DType
from graphopt.layout.kernels import NCHW, blocked
from graphopt.layout.select import Edge, LayoutChoice, Problem, choose

# auto: the cost model's choice; nchw: no blocked tensor; blocked: every step that has a
# blocked kernel runs it, whatever the conversions cost (to test and measure the kernels)
LAYOUT_MODES = ("auto", "nchw", "blocked")

# The cost model, in seconds on one core, divided by THREAD_SPEEDUP for a run on more (the
# selection's unit is bytes-equivalent: seconds x CONVERSION_BYTES_PER_S, so a conversion on one
# core costs the bytes it moves, plus STEP_SECONDS of a call). Measured on the 2-core
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
# reduction per register tile). Measured (minimum over rounds; the ratios between kernels timed
# in one run are what count). Session 5, load average ~2 (resnet18 | mobilenet_v2, effnet):
#   im2col 3x3 s2 21-24, 1x1 s2 14-20, shallow 18-22 (resnet18's stem: 5.3-6.7 ms against
#   nchwc_direct's 3.7-5.9 in the same runs); im2col_gather 23-30 on 7x7 planes (~35 on
#   digits_cnn's 8x8 and 4x4, whole rows copied as vectors); Winograd 4x4 29-40 on 56x56, 49-58
#   on 28x28 and 14x14, 2x2 38-39 (7x7); nchwc_direct 25 at 56x56 and 28x28 (tile fill 0.93),
#   20-23 at 14x14, 14 at 7x7, 1x1 s2 13-16, shallow 20-32 | pointwise 8-12 on 112x112, 17-21 on
#   56x56, 23-32 below; nchwc_pointwise 19-24 on 112x112, 24-34 below; NCHW depthwise 7 at
#   112x112, 1-5 below (KERNEL_PLANE_SECONDS: its per-plane setup dominates small planes),
#   nchwc_depthwise 17 at 112x112, 6-17 below. direct (small convs, csrc/im2col_gather.c) 28-33
#   on digits_cnn's 8x8 and 4x4 maps, 10 on its 1-channel first layer, where nchwc_direct
#   reaches 14-15 and 4.5. Session 4 (load average 5-7) had Winograd 4x4 at
#   40-78 and nchwc_direct at 36-38: the same order between kernels.
KERNEL_GMACS: dict[str, float] = {
    # NCHW (graphopt/backend/c/ops/conv.py, winograd.py)
    "im2col": 24.0, "im2col 1x1": 18.0, "im2col shallow": 20.0, "im2col_gather": 30.0,
    "pointwise": 27.0, "depthwise": 10.0, "winograd4x4": 50.0, "winograd2x2": 45.0,
    "direct": 30.0, "direct shallow": 10.0,
    # NCHWc (ops/conv_blocked.py); direct scaled by its register tiles' fill (_tile_fill)
    "nchwc_direct": 27.0, "nchwc_direct 1x1": 15.0, "nchwc_direct shallow": 24.0,
    "nchwc_pointwise": 32.0, "nchwc_depthwise": 16.0,
}
# MaxPool: the NCHW kernel (ops/pool.py) loops over each output's window, seconds per tap:
# with padding a bounds test per tap (resnet18's 3x3 s2 pad 1 on 64x112x112: 1.7-1.9 ms,
# 0.9-1.1 ns a tap; 0.5-0.7 on 64x14x14), without it the compiler vectorizes the loop (2x2 s2:
# 64x28x28 in 7-10 us, 32x8x8 in 0.4). The blocked one (csrc/nchwc.c) takes one vector per
# pixel's 8 channels and streams: 64x112x112 in 0.2-0.45 ms (input + output, 9-19 GB/s).
POOL_TAP_SECONDS = {True: 0.9e-9, False: 0.2e-9}  # by "the window can cross a padded border"
BLOCKED_POOL_BYTES_PER_S = 10.0e9
# Seconds one kernel call costs besides its work: its loop nests' set-up and a first touch of
# its operands; a ToBlocked, FromBlocked, blocked or NCHW MaxPool of a 32x8x8 tensor takes
# 0.3-0.6 us in all (csrc/nchwc.c opens no OpenMP team below the grain rule: that alone cost
# 1-2 us). Every step pays it in either layout, every conversion adds it: what keeps a tiny
# tensor's op in NCHW (digits_cnn's 32x8x8 MaxPool: 0.4 us, 2.5 blocked with its conversions).
STEP_SECONDS = 0.3e-6
# Speedup of each kernel on 2 threads over 1, keyed as KERNEL_GMACS ("stream": every
# memory-bound step and the conversions), from
# `benchmarks/bench_layout.py --calibrate --threads 1 2` (ratio of per-kernel minima, load
# average ~2 on the 2 cores, so these are the figures other processes leave, not the cores'):
#   im2col 1.5-1.9 (the stem 1.56), Winograd 1.3-1.7, nchwc_direct 1.3-1.6 (the stem 1.4-1.6),
#   1x1 s2 1.0-1.3, winograd2x2 / im2col_gather (7x7 planes) 1.1-1.3; mobilenet_v2's and
#   effnet's kernels 1.0-1.2 in a run where another process held a core (load average 1).
# Kernels below the grain rule (Target.parallel_min_macs / _bytes) stay on one thread.
THREAD_SPEEDUP: dict[str, float] = {
    "im2col": 1.6, "im2col 1x1": 1.15, "im2col shallow": 1.6, "im2col_gather": 1.25,
    "pointwise": 1.6, "depthwise": 1.6, "winograd4x4": 1.5, "winograd2x2": 1.2,
    "nchwc_direct": 1.45, "nchwc_direct 1x1": 1.15, "nchwc_direct shallow": 1.45,
    "nchwc_pointwise": 1.6, "nchwc_depthwise": 1.6, "stream": 1.5,
}
DEFAULT_SPEEDUP = 1.4
# Seconds a kernel spends per channel plane besides its multiply-adds.
KERNEL_PLANE_SECONDS: dict[str, float] = {"depthwise": 0.4e-6}
SHALLOW_CHANNELS = 8
DEFAULT_GMACS = 10.0  # an algorithm the table does not know (grouped convs, 3-D, ...)
# The direct kernel's register tile: up to 6 pixels of a row x 2 output blocks; fewer
# accumulators than this leave FMA latency exposed.
_TILE_PIXELS, _TILE_ACCUMULATORS = 6, 12

_CHOICES: dict[int, tuple[weakref.ref, LayoutChoice]] = {}


@dataclass(frozen=True)
class Pricing:
    """What the cost model prices steps for: the block width, the threads the program will
    run with, and the grain rule under which a kernel stays on one thread (its Target)."""

    width: int
    threads: int = 1
    min_macs: int = 0
    min_bytes: int = 0

    @classmethod
    def of(cls, target: Target, threads: int = 1) -> "Pricing":
        return cls(block_width(target), max(1, threads) if target.openmp else 1,
                   target.parallel_min_macs, target.parallel_min_bytes)

    def speedup(self, key: str, macs: int = 0, nbytes: int = 0) -> float:
        """How much faster than on one core the kernel `key` runs, doing `macs` multiply-adds
        and moving `nbytes` (under both thresholds it stays on one thread): the 2-thread
        figure, extrapolated linearly beyond (a 2-core machine measured it), at most threads."""
        if self.threads == 1 or (macs < self.min_macs and nbytes < self.min_bytes):
            return 1.0
        gain = THREAD_SPEEDUP.get(key, DEFAULT_SPEEDUP) - 1.0
        return min(float(self.threads), 1.0 + gain * (self.threads - 1))

    def stream_seconds(self, nbytes: int) -> float:
        """A memory-bound kernel's time for `nbytes` read and written (a conversion: twice
        its tensor's bytes count for the grain rule, once for the time, as measured)."""
        return nbytes / (CONVERSION_BYTES_PER_S * self.speedup("stream", nbytes=2 * nbytes))


def check_layout_mode(mode: str) -> str:
    if mode not in LAYOUT_MODES:
        raise BadInputError(f"unknown layout mode '{mode}'; choose one of "
                            f"{', '.join(LAYOUT_MODES)}")
    return mode


def assign_layouts(program: Program, target: Target, mode: str = "auto",
                   threads: int = 1) -> LayoutChoice | None:
    """Choose and apply each activation's layout (see LAYOUT_MODES), pricing the kernels for
    a run on `threads` threads."""
    if check_layout_mode(mode) == "nchw":
        return None
    pricing = Pricing.of(target, threads)
    with choosing_for(target):  # the NCHW kernels priced are the ones `target` would run
        problem = build_program_problem(program, pricing)
    choice = choose(problem, forced=_all_blocked(problem) if mode == "blocked" else None,
                    explained_ops=("MaxPool",))
    choice.seconds_per_byte = 1.0 / CONVERSION_BYTES_PER_S
    choice.priced_for = f"{pricing.threads} thread{'s' if pricing.threads > 1 else ''}"
    if any(label != NCHW for label in choice.labels.values()):
        apply_layouts(program, choice.labels, pricing.width)
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
    """Why `step` (NCHW tensors) cannot run on NCHW{width}c tensors, None when it can; channel
    counts off the block width are padded (blocked_twin), so the pad lanes must stay zero."""
    node = step.node
    twin = blocked_twin(step, width)
    if node.op_type == "Conv" and not node.domain:
        return blocked_problem(twin, width) or _pad_lanes_problem(twin, step)
    if node.op_type == "MaxPool" and not node.domain:
        return blocked_pool_problem(twin, width) or (
            _empty_window_problem(step) if twin is not step else None)
    if not ops.is_a(node, ops.ELEMENTWISE):
        return f"no blocked kernel for {node.op_type}"
    out = twin.outputs[0]
    if len(step.outputs) != 1 or out.dtype != DType.FLOAT or out.rank != 4:
        return "not a rank-4 float elementwise op"
    for t in twin.inputs:
        if t is not None and not (t.size == 1 or (not t.is_const and t.shape == out.shape)):
            return f"operand {t.describe()} broadcasts over the output"
    return _pad_lanes_problem(twin, step)


# Pad lanes (channels added to fill the last block) hold zeros, which every blocked step must
# keep: a Conv reads them through zero weights, but 0 x inf or 0 x NaN would reach its real
# channels. So a step whose tensors are padded runs blocked only when its op maps zero pad
# lanes to zero: checked by evaluating it on zeros (activations) and its scalar operands.
ZERO_AT_ZERO = frozenset({"Gelu", "Swish"})  # f(0) = 0 where the evaluator lacks the op


def _pad_lanes_problem(twin: Step, step: Step) -> str | None:
    """Why the padded `twin` of `step` would write something other than zero into its pad
    lanes (bias and epilogue of a Conv, the op itself otherwise), None when it would not."""
    if twin is step:
        return None
    opset = step.node.graph.opset_imports.get("", 17) if step.node.graph is not None else 17
    if step.op_type == "Conv":
        value = 0.0  # zero weights and bias
        for op in step.epilogue:
            value = _op_at_pad(op.op_type, op.attrs, _pad_operands(op, value), opset)
            if value != 0.0:
                return _pad_message(op.op_type, value, "fused ")
        return None
    args = tuple(None if t is None else _pad_lane(t) for t in step.inputs)
    value = _op_at_pad(step.op_type, step.node.attrs, args, opset)
    return None if value == 0.0 else _pad_message(step.op_type, value)


def _pad_message(op_type: str, value: float | None, fused: str = "") -> str:
    result = "an unknown value" if value is None else f"{value:g}"
    return f"{fused}{op_type} would turn the zero pad lanes of padded channels into {result}"


def _pad_lane(t: Tensor | float) -> float:
    """An operand's value in a pad lane: an activation's is zero, a scalar's its value."""
    if isinstance(t, Tensor):
        return float(t.const.reshape(-1)[0]) if t.is_const and t.size == 1 else 0.0
    return float(t)


def _pad_operands(op: EpilogueOp, value: float) -> tuple[float | None, ...]:
    args: list[float | None] = [None if t is None else _pad_lane(t) for t in op.operands]
    args.insert(op.position, value)
    return tuple(args)


_PAD_VALUES: dict[tuple, float | None] = {}


def _op_at_pad(op_type: str, attrs: dict, args: tuple[float | None, ...], opset: int
               ) -> float | None:
    """What an elementwise op computes in a pad lane from these scalars (None: unknown),
    through the constant evaluator; remembered per op, attributes and scalars."""
    key = (op_type, repr(sorted(attrs.items())), args, opset)
    if key not in _PAD_VALUES:
        arrays = tuple(None if a is None else np.array(a, np.float32) for a in args)
        try:
            with np.errstate(all="ignore"):  # 0 / 0 is an answer here (NaN), not a warning
                [out] = evaluate(Call(op_type, arrays, attrs, opset, 1, ""))
            _PAD_VALUES[key] = float(np.asarray(out).reshape(-1)[0])
        except (GraphoptError, ValueError, TypeError, NotImplementedError):
            _PAD_VALUES[key] = 0.0 if op_type in ZERO_AT_ZERO and len(args) == 1 and \
                args[0] == 0.0 else None
    return _PAD_VALUES[key]


def _empty_window_problem(step: Step) -> str | None:
    """Why a padded MaxPool's pad lanes would not stay zero: a window with no tap inside the
    image gives -inf (csrc graphopt_nchwc_maxpool)."""
    x, y = step.inputs[0], step.outputs[0]
    g = ConvGeometry.of(step.node, x.shape[2:], y.shape[2:])
    for size, out, k, s, d, pad in zip(x.shape[2:], y.shape[2:], g.kernel, g.strides,
                                       g.dilations, g.pads_begin):
        for o in range(out):
            if not any(0 <= o * s - pad + t * d < size for t in range(k)):
                return "a window with no tap inside the image would write -inf into pad lanes"
    return None


def blocked_twin(step: Step, width: int) -> Step:
    """`step` as the blocked kernels would run it, its NCHW activations' channels padded to
    whole blocks of `width` (a Conv that reads NCHW input as it comes keeps that input), a
    Conv's weights and bias zero-padded to match; `step` itself when nothing is padded.
    What the cost model prices (the padded work) and what blocked_reason checks."""
    keep = step.inputs[0] if _reads_any(step, width) else None
    inputs = [t if t is keep else _padded(t, width) for t in step.inputs]
    outputs = [_padded(t, width) for t in step.outputs]
    if all(a is b for a, b in zip([*inputs, *outputs], [*step.inputs, *step.outputs])):
        return step
    epilogue = [dataclasses.replace(op, operands=tuple(_padded(t, width) for t in op.operands))
                for op in step.epilogue]
    twin = Step(step.node, inputs, outputs, epilogue, step.algorithm)
    if step.op_type == "Conv" and not step.node.domain:
        pad_conv_weights(twin)
    return twin


def _padded(t: object, width: int) -> object:
    """An NCHW activation with its channels rounded up to whole blocks (a stand-in of its
    padded blocked tensor, for pricing and checks); anything else as it is."""
    if not _activation(t) or is_blocked(t.layout):
        return t
    n, c, h, w = t.shape
    padded = padded_channels(c, width)
    return t if padded == c else Tensor(t.name, t.dtype, (n, padded, h, w))


def _channels(t: Tensor) -> int:
    return (logical_shape(t.shape) if is_blocked(t.layout) else t.shape)[1]


def pad_conv_weights(step: Step) -> None:
    """Zero-pad the weights and bias of a Conv step (group 1 or depthwise) to the channel
    counts of its input and output tensors, which may be padded: pad output channels get zero
    weights and bias, so they compute zero; pad input channels get zero weights, so they add
    nothing. A depthwise conv's group becomes the padded count (a copy of its node)."""
    cin, cout = _channels(step.inputs[0]), _channels(step.outputs[0])
    w = step.inputs[1]
    group = int(step.node.attr("group", 1))
    depthwise = group > 1 and w.shape[1] == 1 and group == w.shape[0]
    if group != 1 and not depthwise:
        return
    shape = (cout, 1 if depthwise else cin, *w.shape[2:])
    if shape == w.shape:
        return
    step.inputs[1] = _zero_padded(w, shape)
    if len(step.inputs) > 2 and step.inputs[2] is not None:
        step.inputs[2] = _zero_padded(step.inputs[2], (cout,))
    if depthwise:
        step.node = copy.copy(step.node)
        step.node.attrs = {**step.node.attrs, "group": cout}


def _zero_padded(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    const = None if t.const is None else np.pad(
        t.const, [(0, new - old) for new, old in zip(shape, t.shape)])
    return Tensor(f"{t.name}_pad{shape[0]}", t.dtype, shape, const)


def _reads_any(step: Step, width: int) -> bool:
    """Whether the step's blocked kernel reads its NCHW input as is: the direct kernel does,
    when the channels do not fill one block (a first layer). With whole blocks, reading NCHW
    is ~2.5x slower than NCHWc (resnet18's 64 -> 128 3x3 s2: 12 against 31 GMAC/s), so it gets
    a conversion, padded when the channels end in a partial block."""
    return step.op_type == "Conv" and not step.node.domain and reads_any_layout(step) and \
        step.inputs[0].shape[1] < width


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


def kernel_seconds(step: Step, algorithm: str, pricing: Pricing) -> float:
    """What the cost model predicts a Conv step takes with `algorithm` (a kernel call)."""
    shape = blocked_conv_shape(step)
    key = _rate_key(shape, algorithm)
    rate = KERNEL_GMACS.get(key, DEFAULT_GMACS) * 1e9
    if algorithm == "nchwc_direct":
        rate *= _tile_fill(step, pricing.width)
    macs = conv_macs(step)
    one_core = macs / rate + shape.batch * shape.out_channels * KERNEL_PLANE_SECONDS.get(
        algorithm, 0.0)
    return STEP_SECONDS + one_core / pricing.speedup(key, macs, step.outputs[0].nbytes)


def _pool_seconds(step: Step, blocked_kernel: bool, pricing: Pricing) -> float:
    """A MaxPool step's time in either layout (see POOL_TAP_SECONDS)."""
    x, y = step.inputs[0], step.outputs[0]
    geometry = ConvGeometry.of(step.node, x.shape[2:], y.shape[2:])
    taps = y.size * math.prod(geometry.kernel)
    if blocked_kernel:
        one_core, grain = (x.nbytes + y.nbytes) / BLOCKED_POOL_BYTES_PER_S, x.nbytes + y.nbytes
    else:  # ops/pool.py's grain: 4 bytes per tap
        padded = any(geometry.pads_begin) or any(geometry.pads_end)
        one_core, grain = taps * POOL_TAP_SECONDS[padded], 4 * taps
    return STEP_SECONDS + one_core / pricing.speedup("stream", nbytes=grain)


def step_seconds(step: Step, layout: str, pricing: Pricing) -> float:
    """What the cost model predicts `step` (NCHW tensors) takes in `layout` (blocked: its
    channels padded to whole blocks, blocked_twin): a Conv by its kernel's rate, a MaxPool
    by its window taps or bytes, any other step its activation bytes streamed alike in both
    layouts (elementwise kernels stream either)."""
    blocked_kernel = layout != NCHW
    if blocked_kernel:
        step = blocked_twin(step, pricing.width)  # the padded channels' work
    if step.op_type == "Conv" and not step.node.domain and step.inputs[0].rank == 4:
        algorithm = blocked_algorithm(step) if blocked_kernel else choose_algorithm(step)
        return kernel_seconds(step, algorithm, pricing)
    if step.op_type == "MaxPool" and not step.node.domain and step.inputs[0].rank == 4:
        return _pool_seconds(step, blocked_kernel, pricing)
    traffic = sum(t.nbytes for t in (*step_reads(step), *step.outputs) if not t.is_const)
    return STEP_SECONDS + pricing.stream_seconds(traffic)


def build_program_problem(program: Program, pricing: Pricing) -> Problem:
    """The sites (graph inputs/outputs and steps touching rank-4 activations), their costs in
    NCHW and NCHW{width}c (step_seconds in bytes-equivalent), and the producer -> reader edges
    (a conversion: its bytes plus a kernel call)."""
    width, unit = pricing.width, CONVERSION_BYTES_PER_S
    call = STEP_SECONDS * unit

    def edge(src: str, dst: str, t: Tensor, free: str = "") -> Edge:
        per_byte = pricing.stream_seconds(t.nbytes) * unit / t.nbytes if t.nbytes else 1.0
        return Edge(src, dst, t.name, t.nbytes, t.shape, free, call, per_byte)

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
        problem.unary[site] = {NCHW: step_seconds(step, NCHW, pricing) * unit,
                               layout: math.inf if reason else
                               step_seconds(step, layout, pricing) * unit}
        if reason:
            problem.reasons[site] = reason
        elif step.op_type == "Conv":
            problem.notes[site] = (f"NCHW runs it as {choose_algorithm(step)}, {layout} as "
                                   f"{blocked_algorithm(step)}")
        elif step.op_type == "MaxPool":
            problem.notes[site] = (f"NCHW loops over each output's window taps, {layout} "
                                   f"takes {width} channels per vector")
        free = layout if not reason and _reads_any(step, width) else ""
        for t in reads:
            if id(t) in site_of:
                problem.edges.append(edge(site_of[id(t)], site, t,
                                          free if t is step.inputs[0] else ""))
        for t in outs:
            site_of[id(t)] = site
    for t in program.outputs:
        if _activation(t) and id(t) in site_of:
            problem.unary[f"output:{t.name}"] = dict(pinned)
            problem.edges.append(edge(site_of[id(t)], f"output:{t.name}", t))
    return problem


def apply_layouts(program: Program, labels: dict[str, str], width: int) -> None:
    """Rewrite `program` to the labels of its step sites (see the module docstring)."""
    layout = blocked(width)
    converted: dict[tuple[int, str], Tensor] = {}
    nchw_shapes: dict[int, tuple[int, ...]] = {}  # blocked tensor -> its NCHW shape (unpadded)
    outputs = {id(t) for t in program.outputs}
    steps: list[Step] = []

    def read(t: object, want: str) -> object:
        if not _activation(t) or (t.layout or NCHW) == want:
            return t
        key = (id(t), want)
        if key not in converted:
            to_blocked = want != NCHW
            shape = blocked_shape(t.shape, width) if to_blocked else nchw_shapes[id(t)]
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
                nchw_shapes[id(out)] = out.shape
                out.shape, out.layout = blocked_shape(out.shape, width), layout
        if step.op_type == "Conv" and not step.node.domain:
            pad_conv_weights(step)  # to the (padded) channels of its blocked tensors
    program.steps[:] = steps


def _conversion(source: Tensor, result: Tensor, to_blocked: bool) -> Step:
    op = TO_BLOCKED if to_blocked else FROM_BLOCKED
    return Step(Node(op, [], [], name=f"{source.name}_{op}", domain=DOMAIN), [source], [result])
