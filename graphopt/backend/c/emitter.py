"""The C writer every op emitter shares: indentation, fresh names, loop nests, index expressions.

Op modules describe *what* to compute; loops over tensors of any rank come from `CEmitter.loops`
and element offsets from `index` / `unravel`, so no op hand-writes a nest per rank.

Strides here are in elements. A broadcast operand has stride 0 along the dims it repeats, and
`coalesce` merges adjacent dims that every operand walks contiguously (or all broadcast), so an
elementwise op over same-shaped tensors becomes one flat vectorizable loop.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, Sequence

from graphopt.backend.c.target import Target

Shape = tuple[int, ...]
_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*(\[[^\]]*\])?|[0-9]+")


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    """Row-major element strides of `shape`."""
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(int(dim), 1)
    return strides[::-1]


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Strides that read a tensor of `shape` broadcast (numpy rules) to `out_shape`."""
    pad = len(out_shape) - len(shape)
    if pad < 0:
        raise ValueError(f"cannot broadcast {tuple(shape)} to {tuple(out_shape)}")
    full = [1] * pad + list(shape)
    strides = [0] * pad + contiguous_strides(shape)
    result = []
    for dim, out, stride in zip(full, out_shape, strides):
        if dim == out:
            result.append(stride if out != 1 else 0)
        elif dim == 1:
            result.append(0)
        else:
            raise ValueError(f"cannot broadcast {tuple(shape)} to {tuple(out_shape)}")
    return result


def coalesce(shape: Sequence[int], *stride_lists: Sequence[int]) -> tuple[Shape, list[list[int]]]:
    """Drop size-1 dims and merge neighbours every operand walks in one flat run.

    Dims d, d+1 merge when, for every operand, stride[d] == stride[d+1] * shape[d+1] (this
    covers both "contiguous" and "broadcast along both"). The element order is unchanged.
    """
    dims = [(int(n), [int(s[i]) for s in stride_lists]) for i, n in enumerate(shape) if n != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, strides in dims:
        if merged:
            prev_size, prev_strides = merged[-1]
            if all(p == s * size for p, s in zip(prev_strides, strides)):
                merged[-1] = (prev_size * size, strides)
                continue
        merged.append((size, strides))
    new_shape = tuple(size for size, _ in merged)
    new_strides = [[strides[k] for _, strides in merged] for k in range(len(stride_lists))]
    return new_shape, new_strides


def index(variables: Sequence[str], strides: Sequence[int], offset: int | str = 0) -> str:
    """The flat offset sum(var * stride) (+ offset), skipping zero strides and constant-0 vars.
    A variable that is an expression ("c * 9 + t") is parenthesized before it is scaled."""
    terms = [str(offset)] if offset not in (0, "0") else []
    for var, stride in zip(variables, strides):
        if stride == 0 or var == "0":
            continue
        if stride != 1 and not _is_atom(var):
            var = f"({var})"
        terms.append(var if stride == 1 else f"{var} * {stride}")
    return " + ".join(terms) or "0"


def _is_atom(expr: str) -> bool:
    """A name, number, array element, or an expression wrapped in one pair of parentheses."""
    if _NAME.fullmatch(expr):
        return True
    if not (expr.startswith("(") and expr.endswith(")")):
        return False
    depth = 0
    for position, char in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and position < len(expr) - 1:
            return False
    return True


def unravel(var: str, dims: Sequence[int], strides: Sequence[int]) -> str:
    """Offset of element `var` (a flat row-major index over `dims`) in a tensor with `strides`.

    Coordinate k is (var / inner_k) % dims[k]; the division is dropped for the innermost dim
    and the modulo for the outermost one.
    """
    terms = []
    inner = 1
    for k in range(len(dims) - 1, -1, -1):
        dim, stride = int(dims[k]), int(strides[k])
        if stride != 0 and dim != 1:
            coord = var if inner == 1 else f"({var} / {inner})"
            if k > 0:
                coord = f"({coord} % {dim})"
            terms.append(coord if stride == 1 else f"{coord} * {stride}")
        inner *= dim
    return " + ".join(reversed(terms)) or "0"


def _total(dims: Sequence[int]) -> int:
    total = 1
    for d in dims:
        total *= int(d)
    return total


class CEmitter:
    """Accumulates C source lines with indentation; hands out fresh temporary names."""

    def __init__(self, target: Target, level: int = 0):
        self.target = target
        self._lines: list[str] = []
        self._level = level
        self._counters: dict[str, int] = {}

    # --- text ----------------------------------------------------------------------------------
    def line(self, text: str = "") -> None:
        self._lines.append(("    " * self._level + text) if text else "")

    def comment(self, text: str) -> None:
        for part in text.splitlines() or [""]:
            self.line(f"/* {part} */" if part else "")

    def text(self) -> str:
        return "\n".join(self._lines) + ("\n" if self._lines else "")

    @contextlib.contextmanager
    def block(self, header: str, end: str = "}") -> Iterator[None]:
        """`header {` ... `}` with the body indented."""
        self.line(f"{header} {{")
        self._level += 1
        try:
            yield
        finally:
            self._level -= 1
            self.line(end)

    def temp(self, prefix: str = "t") -> str:
        """A fresh C identifier: t0, t1... per prefix."""
        n = self._counters.get(prefix, 0)
        self._counters[prefix] = n + 1
        return f"{prefix}{n}"

    # --- loops ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def loops(self, shape: Sequence[int], prefix: str = "i", parallel: bool = False,
              work: int | None = None) -> Iterator[list[str]]:
        """A perfect loop nest over `shape`; yields one index expression per dim.

        Size-1 dims get no loop (their index is the constant "0"). With parallel=True and
        enough work (`work` elements touched in total, default the nest's size), the outer loops
        carry an OpenMP pragma, collapsed until they give at least 64 iterations to share.
        """
        names = ["0" if int(n) == 1 else self.temp(prefix) for n in shape]
        looped = [(name, int(n)) for name, n in zip(names, shape) if name != "0"]
        amount = _total(shape) if work is None else work
        pragma = self.target.parallel_pragma(amount) if parallel and looped else None
        if pragma:
            collapse, work = 0, 1
            for _, n in looped:
                collapse += 1
                work *= n
                if work >= 64:
                    break
            self.line(pragma + (f" collapse({collapse})" if collapse > 1 else ""))
        opened = 0
        try:
            for name, n in looped:
                self.line(f"for ({self.target.index_type} {name} = 0; {name} < {n}; ++{name}) {{")
                self._level += 1
                opened += 1
            yield names
        finally:
            for _ in range(opened):
                self._level -= 1
                self.line("}")
