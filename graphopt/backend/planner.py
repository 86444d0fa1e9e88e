"""Static memory planning: place buffers with known lifetimes in one arena.

A buffer lives from the step that writes it first to the last step that reads it (inclusive).
Two buffers may share bytes only if their lifetimes are disjoint. Planners return offsets
(multiples of the alignment) and the arena size; `find_overlaps` checks a plan independently.

* `GreedyPlanner` (the default): largest buffers first; each goes into the smallest gap left
  by the already-placed buffers whose lifetimes intersect its own (best fit), else on top.
* `LinearPlanner`: every buffer gets its own bytes; the baseline the greedy plan is compared to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from graphopt.errors import BadInputError


@dataclass(frozen=True)
class Buffer:
    """`size` bytes needed from step `first` to step `last` inclusive."""

    name: str
    size: int
    first: int
    last: int

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class MemoryPlan:
    buffers: tuple[Buffer, ...]
    offsets: tuple[int, ...]
    arena_size: int
    alignment: int

    def offset(self, name: str) -> int:
        for buffer, offset in zip(self.buffers, self.offsets):
            if buffer.name == name:
                return offset
        raise KeyError(name)

    @property
    def total_size(self) -> int:
        """Bytes the buffers would take without any sharing."""
        return sum(align(b.size, self.alignment) for b in self.buffers)


class MemoryPlanner(Protocol):
    name: str

    def plan(self, buffers: Sequence[Buffer], alignment: int = 64) -> MemoryPlan: ...


def align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


class LinearPlanner:
    """No reuse: buffers are laid out one after another."""

    name = "linear"

    def plan(self, buffers: Sequence[Buffer], alignment: int = 64) -> MemoryPlan:
        offsets, top = [], 0
        for buffer in buffers:
            offsets.append(top)
            top += align(buffer.size, alignment)
        return MemoryPlan(tuple(buffers), tuple(offsets), top, alignment)


class GreedyPlanner:
    """Largest first, best fit among the gaps left by lifetime-overlapping buffers."""

    name = "greedy"

    def plan(self, buffers: Sequence[Buffer], alignment: int = 64) -> MemoryPlan:
        order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].first, i))
        offsets: list[int | None] = [None] * len(buffers)
        placed: list[int] = []
        for i in order:
            buffer = buffers[i]
            size = align(buffer.size, alignment)
            busy = sorted((offsets[j], offsets[j] + align(buffers[j].size, alignment))
                          for j in placed if buffers[j].overlaps_in_time(buffer))
            offsets[i] = _best_fit(busy, size)
            placed.append(i)
        final = tuple(int(o) for o in offsets)
        top = max((o + align(b.size, alignment) for o, b in zip(final, buffers)), default=0)
        return MemoryPlan(tuple(buffers), final, top, alignment)


def _best_fit(busy: list[tuple[int, int]], size: int) -> int:
    """Start of the smallest free gap of at least `size` below/between `busy` intervals,
    else the top of the highest one."""
    best, best_gap, cursor = None, None, 0
    for start, end in busy:
        gap = start - cursor
        if gap >= size and (best_gap is None or gap < best_gap):
            best, best_gap = cursor, gap
        cursor = max(cursor, end)
    return cursor if best is None else best


PLANNERS: dict[str, MemoryPlanner] = {"greedy": GreedyPlanner(), "linear": LinearPlanner()}


def get_planner(name: "str | MemoryPlanner") -> MemoryPlanner:
    if not isinstance(name, str):
        return name
    try:
        return PLANNERS[name]
    except KeyError:
        raise BadInputError(f"unknown memory planner '{name}'; choose one of "
                            f"{', '.join(PLANNERS)}") from None


def find_overlaps(plan: MemoryPlan) -> list[tuple[Buffer, Buffer]]:
    """Pairs of buffers that are alive at the same step and share bytes (should be empty),
    plus misaligned or out-of-arena buffers paired with themselves."""
    problems = []
    spans = [(o, o + b.size, b) for o, b in zip(plan.offsets, plan.buffers)]
    for start, end, buffer in spans:
        if start % plan.alignment or end > plan.arena_size or start < 0:
            problems.append((buffer, buffer))
    for i, (s1, e1, b1) in enumerate(spans):
        for s2, e2, b2 in spans[i + 1:]:
            if b1.overlaps_in_time(b2) and s1 < e2 and s2 < e1 and b1.size and b2.size:
                problems.append((b1, b2))
    return problems


def draw_plan(plan: MemoryPlan, width: int = 64) -> str:
    """ASCII picture: one row per step, one column per arena slice; a letter marks the buffer
    occupying that slice at that step ('.' free). Buffers are lettered in list order."""
    if not plan.buffers:
        return "(empty plan)"
    steps = max(b.last for b in plan.buffers) + 1
    first_step = min(b.first for b in plan.buffers)
    scale = max(plan.arena_size / width, 1.0)
    symbols = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    lines = [f"arena {plan.arena_size} bytes, {len(plan.buffers)} buffers, "
             f"1 column = {scale:.0f} bytes"]
    for step in range(max(first_step, 0), steps):
        row = ["."] * width
        for k, (buffer, offset) in enumerate(zip(plan.buffers, plan.offsets)):
            if buffer.first <= step <= buffer.last and buffer.size:
                lo = int(offset / scale)
                hi = max(lo + 1, int((offset + buffer.size) / scale))
                for col in range(lo, min(hi, width)):
                    row[col] = symbols[k % len(symbols)]
        lines.append(f"{step:4d} |{''.join(row)}|")
    return "\n".join(lines)
