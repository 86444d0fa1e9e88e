"""Where each tensor lives: caller's input/output arrays, the weight blob, or the arena.

Tensors are grouped into storage groups that share one buffer:
  * views: the output of a Reshape-family op (registered with alias=True) joins its input's
    group, so Reshape/Flatten/Squeeze/Unsqueeze/Identity cost nothing;
  * in place: an elementwise op (inplace=True) whose output has the size of an input that is
    read for the last time by that op writes over that input's buffer.
A group is bound to at most one external place (a graph input, a graph output, or a constant);
merges that would need two are refused, and the step then runs as a real copy.
Graph outputs that are graph inputs or constants (or repeat another output) are copied at the
end of the run.

Each unbound group becomes one arena `Buffer` living from its first write to its last read;
the planner packs them (see planner.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from graphopt.backend.planner import Buffer
from graphopt.backend.program import Program, Step, Tensor, step_reads


@dataclass(frozen=True)
class Binding:
    kind: str  # "input", "output", "weight" or "arena"
    index: int = -1


ARENA = Binding("arena")


@dataclass
class Storage:
    """The result of grouping: who shares with whom and what is bound where."""

    program: Program
    parent: dict[int, Tensor] = field(default_factory=dict)
    members: dict[int, list[Tensor]] = field(default_factory=dict)  # by id(root), roots only
    binding: dict[int, Binding] = field(default_factory=dict)  # by id(root)
    views: set[int] = field(default_factory=set)  # indices of steps realized as views
    inplace: set[int] = field(default_factory=set)  # indices of steps writing over an input
    final_copies: list[tuple[Tensor, int]] = field(default_factory=list)  # (source, output)
    read: set[int] = field(default_factory=set)  # ids of tensors some step or the caller reads

    def root(self, tensor: Tensor) -> Tensor:
        while id(tensor) in self.parent:
            tensor = self.parent[id(tensor)]
        return tensor

    def bound(self, tensor: Tensor) -> Binding:
        return self.binding.get(id(self.root(tensor)), ARENA)

    def shares(self, a: Tensor, b: Tensor) -> bool:
        return self.root(a) is self.root(b)

    def is_read(self, tensor: Tensor) -> bool:
        """Whether a later step or the caller reads the tensor (unused outputs may be skipped)."""
        return id(tensor) in self.read

    def group(self, tensor: Tensor) -> list[Tensor]:
        root = self.root(tensor)
        return self.members.get(id(root), [root])

    def merge(self, a: Tensor, b: Tensor) -> None:
        """Put a's and b's groups in one; the external binding (at most one) is kept."""
        ra, rb = self.root(a), self.root(b)
        if ra is rb:
            return
        bind = self.binding.pop(id(ra), None)
        if bind is not None:
            self.binding[id(rb)] = bind
        self.parent[id(ra)] = rb
        self.members[id(rb)] = self.group(rb) + self.members.pop(id(ra), [ra])

    def arena_buffers(self) -> list[tuple[Tensor, Buffer]]:
        """(root tensor, Buffer) per arena group: first write to last read, largest member."""
        spans: dict[int, list[int]] = {}
        roots: dict[int, Tensor] = {}
        for i, step in enumerate(self.program.steps):
            if i in self.views:
                continue
            for t in step.outputs:
                r = self.root(t)
                if self.bound(r) == ARENA:
                    roots[id(r)] = r
                    span = spans.setdefault(id(r), [i, i])
                    span[0], span[1] = min(span[0], i), max(span[1], i)
        for i, step in enumerate(self.program.steps):
            for t in step_reads(step):
                span = spans.get(id(self.root(t)))
                if span is not None:
                    span[1] = max(span[1], i)
        result = []
        for key, r in roots.items():
            size = max(t.nbytes for t in self.group(r))
            result.append((r, Buffer(r.name, size, spans[key][0], spans[key][1])))
        return result


def assign_storage(program: Program, can_view: Callable[[Step], bool],
                   can_overwrite: Callable[[Step], bool]) -> Storage:
    """Group tensors into shared buffers (see module docstring).

    can_view(step): output 0 may be a view of input 0 (same bytes, new shape).
    can_overwrite(step): output 0 may take the buffer of an input of the same byte size that
    this step reads for the last time (elementwise ops).
    """
    storage = Storage(program)
    for i, t in enumerate(program.inputs):
        storage.binding[id(t)] = Binding("input", i)
    seen_outputs: set[int] = set()
    external = {id(t) for t in program.inputs}
    for j, t in enumerate(program.outputs):
        if t.is_const or id(t) in external or id(t) in seen_outputs:
            storage.final_copies.append((t, j))
        else:
            storage.binding[id(t)] = Binding("output", j)
        seen_outputs.add(id(t))
    last_read = _last_reads(program)
    storage.read = set(last_read)
    for i, step in enumerate(program.steps):
        for t in step_reads(step):
            if t.is_const:
                storage.binding.setdefault(id(t), Binding("weight"))
        if can_view(step) and _try_view(storage, step):
            storage.views.add(i)
        elif can_overwrite(step) and _try_overwrite(storage, step, i, last_read):
            storage.inplace.add(i)
    return storage


def _try_view(storage: Storage, step: Step) -> bool:
    source, out = step.inputs[0], step.outputs[0]
    if source is None or source.nbytes != out.nbytes or any(
            storage.is_read(t) for t in step.outputs[1:]):
        return False
    if storage.bound(out) != ARENA and storage.bound(source) != ARENA:
        return False  # e.g. a graph input reshaped into a graph output: needs a copy
    storage.merge(out, source)
    return True


def _try_overwrite(storage: Storage, step: Step, index: int, last_read: dict[int, int]) -> bool:
    out = step.outputs[0]
    for source in step.inputs:
        if source is None or source.is_const or source.nbytes != out.nbytes:
            continue
        if source.dtype.itemsize != out.dtype.itemsize or storage.bound(source) != ARENA:
            continue
        if max(last_read.get(id(t), -1) for t in storage.group(source)) != index:
            continue
        storage.merge(source, out)
        return True
    return False


def _last_reads(program: Program) -> dict[int, int]:
    """id(tensor) -> index of the last step reading it (len(steps) for graph outputs)."""
    last: dict[int, int] = {}
    for i, step in enumerate(program.steps):
        for t in step_reads(step):
            last[id(t)] = i
    for t in program.outputs:
        last[id(t)] = len(program.steps)
    return last
