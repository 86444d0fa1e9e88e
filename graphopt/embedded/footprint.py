"""Footprint of a bundle before it is flashed: flash, RAM, and per-layer MACs and arena use.

flash = code (model, csrc kernels) + const weights + initialized data;
RAM   = arena + other static data of the model + a stack estimate.

Weights and arena are exact (they are the bytes the bundle declares). Code, static data and
stack come from compiling the bundle's sources with the target's own compiler when it is
installed (`measured`): object section sizes from its `size` tool and frames from
`-fstack-usage`. Without that compiler they are estimated from the C text (`estimated`), which
is coarse for code but small next to the weights of most models.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from graphopt.analysis import node_flops
from graphopt.backend.c.codegen import GeneratedCode
from graphopt.embedded.targets import BundleTarget

log = logging.getLogger(__name__)

# Estimates used without the target compiler: bytes of code per non-blank line of C, and the
# stack of the call chain run -> entry -> kernel -> csrc -> micro-kernel/epilogue.
CODE_BYTES_PER_LINE = 14
STACK_ESTIMATE = 1024
WORST_CONTRIBUTORS = 3


@dataclass(frozen=True)
class Layer:
    """One step of the program: what it computes and how much arena is live while it runs."""

    index: int
    op_type: str
    name: str
    output_shape: tuple[int, ...]
    macs: int
    arena_live: int  # bytes of planned buffers live during the step
    arena_peak: int  # highest arena byte in use during the step


@dataclass(frozen=True)
class Footprint:
    """Predicted memory of a bundle (bytes) and where it goes."""

    target: str
    method: str  # "measured" (compiled with the target compiler) or "estimated"
    code: int  # .text + .rodata of the model and kernel objects, weights excluded
    weights: int  # the const weight array
    data: int  # initialized static data (flash and RAM)
    arena: int
    bss: int  # zeroed static data besides the arena
    stack: int
    layers: tuple[Layer, ...]
    largest_weights: tuple[tuple[str, int], ...]  # (tensor, bytes), largest first
    largest_buffers: tuple[tuple[str, int], ...]  # (arena buffer, bytes), largest first

    @property
    def flash(self) -> int:
        return self.code + self.weights + self.data

    @property
    def ram(self) -> int:
        return self.arena + self.data + self.bss + self.stack

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def flash_reason(self) -> str:
        """The flash figure and its biggest contributors, in one line."""
        weights = ", ".join(f"'{n}' {b} B" for n, b in self.largest_weights) or "none"
        return (f"weights {self.weights} B (largest: {weights}), code {self.code} B, "
                f"data {self.data} B")

    def ram_reason(self) -> str:
        """The RAM figure and its biggest contributors, in one line."""
        peak = max(self.layers, key=lambda layer: layer.arena_live, default=None)
        at = f", peak at step {peak.index} {peak.op_type} '{peak.name}'" if peak else ""
        buffers = ", ".join(f"{n} {b} B" for n, b in self.largest_buffers) or "none"
        return (f"arena {self.arena} B{at} (largest buffers: {buffers}), stack {self.stack} B, "
                f"static data {self.data + self.bss} B")

    def table(self) -> str:
        """A human-readable report: totals, then one row per layer."""
        lines = [f"footprint ({self.target}, code and stack {self.method}):",
                 f"  flash {self.flash} B = code {self.code} + weights {self.weights} + data "
                 f"{self.data}",
                 f"  RAM   {self.ram} B = arena {self.arena} + static {self.data + self.bss} + "
                 f"stack {self.stack}",
                 f"  MACs  {self.macs}",
                 f"  {'step':>4} {'op':<18} {'MACs':>12} {'arena live':>11} {'arena peak':>11}"
                 "  output"]
        for layer in self.layers:
            shape = "x".join(map(str, layer.output_shape)) or "scalar"
            lines.append(f"  {layer.index:>4} {layer.op_type:<18} {layer.macs:>12} "
                         f"{layer.arena_live:>11} {layer.arena_peak:>11}  {shape}  {layer.name}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"target": self.target, "method": self.method, "flash": self.flash,
                "ram": self.ram, "code": self.code, "weights": self.weights, "data": self.data,
                "arena": self.arena, "bss": self.bss, "stack": self.stack, "macs": self.macs,
                "layers": [layer.__dict__ for layer in self.layers]}


def layers(code: GeneratedCode) -> list[Layer]:
    """Per step: MACs (Conv/Gemm/MatMul) and the arena bytes live and at their peak."""
    plan = code.plan
    result = []
    for i, step in enumerate(code.program.steps):
        live = [(b, o) for b, o in zip(plan.buffers, plan.offsets) if b.first <= i <= b.last]
        result.append(Layer(i, step.op_type, step.node.name or f"#{i}",
                            step.outputs[0].shape if step.outputs else (),
                            node_flops(step.node) // 2 if step.op_type in _MAC_OPS else 0,
                            sum(b.size for b, _ in live),
                            max((o + b.size for b, o in live), default=0)))
    return result


_MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def predict(code: GeneratedCode, sources: Mapping[str, str], weight_bytes: int,
            target: BundleTarget) -> Footprint:
    """The footprint of a bundle whose model and kernel files are `sources` (name -> text;
    weights excluded: `weight_bytes` is their exact size), measured with the target compiler
    when it is installed."""
    measured = _measure(sources, target)
    if measured is None:
        lines = sum(1 for text in sources.values() for line in text.splitlines() if line.strip())
        code_bytes, data, bss, stack, method = lines * CODE_BYTES_PER_LINE, 0, 0, \
            STACK_ESTIMATE, "estimated"
    else:
        code_bytes, data, bss, stack = measured
        bss = max(bss - code.arena_bytes, 0)
        method = "measured"
    consts = {id(t): t for step in code.program.steps for t in step.inputs
              if t is not None and t.is_const}
    weights = sorted(((t.name, t.nbytes) for t in consts.values()), key=lambda item: -item[1])
    buffers = sorted(((b.name, b.size) for b in code.plan.buffers), key=lambda item: -item[1])
    return Footprint(target.name, method, code_bytes, weight_bytes, data, code.arena_bytes, bss,
                     stack, tuple(layers(code)), tuple(weights[:WORST_CONTRIBUTORS]),
                     tuple(buffers[:WORST_CONTRIBUTORS]))


def _measure(sources: Mapping[str, str],
             target: BundleTarget) -> tuple[int, int, int, int] | None:
    """(text, data, bss, stack) of the compiled sources, or None without the toolchain."""
    if not (shutil.which(target.cc) and shutil.which(target.size)):
        log.info("%s or %s not found: code and stack are estimated", target.cc, target.size)
        return None
    with tempfile.TemporaryDirectory(prefix="graphopt-footprint-") as tmp:
        work = Path(tmp)
        for name, text in sources.items():
            (work / name).write_text(text)
        objects = []
        for name in sources:
            if not name.endswith(".c"):
                continue
            obj = work / (Path(name).stem + ".o")
            cmd = [target.cc, *target.cflags, "-std=c99",
                   *(f"-D{d}" for d in target.codegen.defines),
                   "-fstack-usage", "-I", str(work), "-c", str(work / name), "-o", str(obj)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                log.warning("measuring the footprint failed (%s); estimating instead: %s",
                            " ".join(cmd[:2]), result.stderr.strip()[:300])
                return None
            objects.append(obj)
        text = data = bss = 0
        for obj in objects:
            t, d, b = object_sizes(target, obj)
            text, data, bss = text + t, data + d, bss + b
        return text, data, bss, _stack(work)


def object_sizes(target: BundleTarget, path: Path) -> tuple[int, int, int]:
    """(text, data, bss) of an object or executable, from the toolchain's Berkeley `size`."""
    out = subprocess.run([target.size, str(path)], capture_output=True, text=True, check=True)
    fields = out.stdout.strip().splitlines()[-1].split()
    return int(fields[0]), int(fields[1]), int(fields[2])


_LEVELS = (re.compile(r"graphopt_run$"), re.compile(r"_run_with_arena$"), re.compile(r"_run$"),
           re.compile(r"_k\d+_\w+$"), re.compile(r"^graphopt_"))


def _stack(work: Path) -> int:
    """An upper bound of the deepest call chain from the -fstack-usage frames: the run calls
    down through the levels (run, run_with_arena, entry, kernel, csrc entry), then at most two
    more (a csrc helper, an epilogue callback): sum of the largest frame at each level plus the
    two largest of the rest."""
    worst = [0] * len(_LEVELS)
    rest: list[int] = []
    for su in work.glob("*.su"):
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2 or not parts[1].strip().isdigit():
                continue
            function, frame = parts[0].rsplit(":", 1)[-1], int(parts[1])
            level = next((i for i, rx in enumerate(_LEVELS) if rx.search(function)
                          and not function.endswith("_epilogue")), None)
            if level is None:
                rest.append(frame)
            else:
                worst[level] = max(worst[level], frame)
    return sum(worst) + sum(sorted(rest)[-2:])
