"""Algorithms an op may be computed with, chosen per step in lowering and recorded on the step.

An op family registers each algorithm with the condition under which it applies, most
specialized first; `choose(step)` names the first that applies, `lowering.choose_algorithms`
records it as `Step.algorithm`, and the op's emitter dispatches on that name. A new algorithm
(Winograd, direct convolution on a blocked layout, an int8 kernel...) is one registration:

    @register_algorithm("Conv", "depthwise", applies=lambda step: ...)
    def emit_depthwise(k: Kernel) -> None: ...

Which algorithm is fastest can depend on the ISA (AVX-512 builds run Winograd on 16-lane
kernels that pay from fewer channels than the AVX2 ones): `applies` reads the target being
compiled for from `choice_target()`, which `choosing_for(target)` sets around a compilation's
choices (native by default).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from graphopt.backend.c.kernel import Kernel
    from graphopt.backend.c.target import Target
    from graphopt.backend.program import Step

_CHOICE_TARGET: ContextVar["Target | None"] = ContextVar("algorithm_choice_target", default=None)


@contextlib.contextmanager
def choosing_for(target: Target) -> Iterator[None]:
    """Algorithms chosen inside the block (lowering, the layout cost model, emitters choosing
    late) are the ones that fit `target`."""
    token = _CHOICE_TARGET.set(target)
    try:
        yield
    finally:
        _CHOICE_TARGET.reset(token)


def choice_target() -> Target:
    """The target algorithms are being chosen for: `choosing_for`'s, else native."""
    from graphopt.backend.c.target import NATIVE

    return _CHOICE_TARGET.get() or NATIVE


@dataclass(frozen=True)
class Algorithm:
    name: str
    applies: Callable[[Step], bool]
    emit: Callable[[Kernel], None]


_ALGORITHMS: dict[str, list[Algorithm]] = {}


def register_algorithm(op_type: str, name: str, applies: Callable[[Step], bool],
                       before: str | None = None
                       ) -> Callable[[Callable[[Kernel], None]], Callable[[Kernel], None]]:
    """Register `emit` as algorithm `name` of `op_type`, used where `applies(step)` holds.
    Registration order is priority order: register the most specialized first, or name with
    `before` the registered algorithm this one must be tried ahead of (a module registering
    a specialization of another module's algorithms)."""
    def wrap(emit: Callable[[Kernel], None]) -> Callable[[Kernel], None]:
        entries = _ALGORITHMS.setdefault(op_type, [])
        names = [a.name for a in entries]
        if before is not None and before not in names:
            raise ValueError(f"{op_type} algorithm '{name}': no algorithm '{before}' to precede")
        position = names.index(before) if before is not None else len(entries)
        entries.insert(position, Algorithm(name, applies, emit))
        return emit
    return wrap


def registered(op_type: str) -> list[str]:
    """Names of `op_type`'s algorithms in the order `choose` tries them."""
    import graphopt.backend.c.ops  # noqa: F401  (importing the package registers every family)

    return [a.name for a in _ALGORITHMS.get(op_type, [])]


def choose(step: Step) -> str:
    """The first registered algorithm of the step's op that applies ("" if the op has none)."""
    import graphopt.backend.c.ops  # noqa: F401  (importing the package registers every family)

    for algorithm in _ALGORITHMS.get(step.op_type, []) if not step.node.domain else []:
        if algorithm.applies(step):
            return algorithm.name
    return ""


def emit_chosen(k: Kernel) -> None:
    """Run the emitter of the step's recorded algorithm (chosen now if lowering did not)."""
    name = k.step.algorithm
    if not name:
        with choosing_for(k.target):
            name = choose(k.step)
    for algorithm in _ALGORITHMS.get(k.step.op_type, []):
        if algorithm.name == name:
            algorithm.emit(k)
            return
    k.unsupported(f"no algorithm '{name}' is registered for {k.step.op_type}")
