"""Footprint of a bundle before it is flashed: flash, RAM, and per-layer MACs and arena use.

flash = code (model, csrc kernels) + const weights + initialized data;
RAM   = arena + other static data of the model + a stack estimate.

Weights and arena are exact (they are the bytes the bundle declares). Code, static data and
stack come from compiling the bundle's sources with the target's own compiler when it is
installed (`measured`): object section sizes from its `size` tool, the stack from the call
graph with frame sizes gcc writes with -fcallgraph-info=su. Without that compiler they are
estimated from the C text (`estimated`), which is coarse for code but small next to the
weights of most models.
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
from graphopt.backend.program import Step
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
    heap: tuple[str, ...] = ()  # functions the run reaches that use malloc (not counted)

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
        heap = f", plus the heap malloc takes in {', '.join(self.heap)}" if self.heap else ""
        return (f"arena {self.arena} B{at} (largest buffers: {buffers}), stack {self.stack} B, "
                f"static data {self.data + self.bss} B{heap}")

    def table(self) -> str:
        """A human-readable report: totals, then one row per layer."""
        lines = [f"footprint ({self.target}, code and stack {self.method}):",
                 f"  flash {self.flash} B = code {self.code} + weights {self.weights} + data "
                 f"{self.data}",
                 f"  RAM   {self.ram} B = arena {self.arena} + static {self.data + self.bss} + "
                 f"stack {self.stack}",
                 f"  MACs  {self.macs}",
                 *([f"  heap  not counted: the run calls malloc in {', '.join(self.heap)}"]
                   if self.heap else []),
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
                            step.outputs[0].shape if step.outputs else (), _macs(step),
                            sum(b.size for b, _ in live),
                            max((o + b.size for b, o in live), default=0)))
    return result


_MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_INT8_MAC_OPS = frozenset({"Int8Conv", "Int8MatMul"})


def _macs(step: Step) -> int:
    """Multiply-adds of a Conv/Gemm/MatMul step. Integer steps are Program-only nodes: their
    weight rows are [outputs, K], so each output element costs K."""
    if step.op_type in _INT8_MAC_OPS:
        return step.outputs[0].size * step.inputs[1].shape[1]
    return node_flops(step.node) // 2 if step.op_type in _MAC_OPS else 0


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
        heap: tuple[str, ...] = ()
    else:
        code_bytes, data, bss, stack, heap = measured
        bss = max(bss - code.arena_bytes, 0)
        method = "measured"
    consts = {id(t): t for step in code.program.steps for t in step.inputs
              if t is not None and t.is_const}
    weights = sorted(((t.name, t.nbytes) for t in consts.values()), key=lambda item: -item[1])
    buffers = sorted(((b.name, b.size) for b in code.plan.buffers), key=lambda item: -item[1])
    return Footprint(target.name, method, code_bytes, weight_bytes, data, code.arena_bytes, bss,
                     stack, tuple(layers(code)), tuple(weights[:WORST_CONTRIBUTORS]),
                     tuple(buffers[:WORST_CONTRIBUTORS]), heap)


def _measure(sources: Mapping[str, str],
             target: BundleTarget) -> tuple[int, int, int, int, tuple[str, ...]] | None:
    """(text, data, bss, stack, functions using the heap) of the compiled sources, or None
    without the toolchain."""
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
                   "-fcallgraph-info=su", "-I", str(work), "-c", str(work / name), "-o", str(obj)]
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
        graph = CallGraph.read(work)
        return text, data, bss, graph.stack(), tuple(graph.heap_users())


def object_sizes(target: BundleTarget, path: Path) -> tuple[int, int, int]:
    """(text, data, bss) of an object or executable, from the toolchain's Berkeley `size`."""
    out = subprocess.run([target.size, str(path)], capture_output=True, text=True, check=True)
    fields = out.stdout.strip().splitlines()[-1].split()
    return int(fields[0]), int(fields[1]), int(fields[2])


# gcc's -fcallgraph-info=su: one VCG graph per object, functions with their frame, calls.
_CI_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_CI_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_CI_FRAME = re.compile(r"\\n(\d+) bytes \(")
_ENTRY = re.compile(r"_run(_with_arena)?$")
_INDIRECT = "__indirect_call"
_ALLOCATORS = frozenset({"malloc", "calloc", "realloc", "free"})
# A call into the C library (memcpy, memset, nearbyintf...), whose frames are not compiled here:
# newlib's and glibc's are leaf functions of a few words.
LIBRARY_CALL_STACK = 64


@dataclass
class CallGraph:
    """The bundle's functions (gcc titles a static one "file:name"), their frames and calls,
    merged over its objects; functions of the C library appear only as call targets."""

    frames: dict[str, int]
    calls: dict[str, set[str]]

    @classmethod
    def read(cls, directory: Path) -> CallGraph:
        """From the .ci files gcc -fcallgraph-info=su wrote into `directory`."""
        frames: dict[str, int] = {}
        calls: dict[str, set[str]] = {}
        for graph in directory.glob("*.ci"):
            text = graph.read_text()
            for title, label in _CI_NODE.findall(text):
                frame = _CI_FRAME.search(label)
                if frame:
                    frames[title] = int(frame.group(1))
            for source, target in _CI_EDGE.findall(text):
                calls.setdefault(source, set()).add(target)
        return cls(frames, calls)

    def entries(self) -> list[str]:
        """The API entry points (NAME_run...), or every function no one calls directly."""
        called = {t for targets in self.calls.values() for t in targets}
        roots = [f for f in self.frames if f not in called]
        return [f for f in roots if _ENTRY.search(f)] or roots

    def callbacks(self) -> list[str]:
        """What a call through a pointer may reach: static functions nothing calls directly
        (gcc would have dropped them unless their address is taken), e.g. GEMM epilogues."""
        called = {t for targets in self.calls.values() for t in targets}
        return [f for f in self.frames if ":" in f and f not in called]

    def stack(self) -> int:
        """An upper bound of the stack a run uses: the deepest chain from the entry points,
        a call through a pointer costing the deepest chain of any callback and a call into the
        C library LIBRARY_CALL_STACK."""
        def deepest(function: str, indirect: int, memo: dict[str, int], active: set[str]) -> int:
            if function == _INDIRECT:
                return indirect
            if function not in self.frames:
                return LIBRARY_CALL_STACK
            if function in active:  # recursion: generated code and csrc kernels have none
                return 0
            if function not in memo:
                active.add(function)
                memo[function] = self.frames[function] + max(
                    (deepest(c, indirect, memo, active) for c in self.calls.get(function, ())),
                    default=0)
                active.discard(function)
            return memo[function]

        callbacks = max((deepest(f, 0, {}, set()) for f in self.callbacks()), default=0)
        memo: dict[str, int] = {}
        return max((deepest(f, callbacks, memo, set()) for f in self.entries()), default=0)

    def heap_users(self) -> list[str]:
        """Functions a run may reach that call malloc/calloc/realloc/free (the heap is not in
        the footprint)."""
        seen: set[str] = set()
        pending = list(self.entries())
        while pending:
            function = pending.pop()
            if function in seen:
                continue
            seen.add(function)
            for callee in self.calls.get(function, ()):
                pending.extend(self.callbacks() if callee == _INDIRECT else [callee])
        return sorted(f.rsplit(":", 1)[-1] for f in seen
                      if self.calls.get(f, set()) & _ALLOCATORS)
