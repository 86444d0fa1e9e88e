"""The registry of C emitters, keyed by (domain, op_type).

Adding an op means writing one function in the module of its family under
graphopt/backend/c/ops/ and decorating it:

    @register_op("Relu", dtypes=cdtypes.NUMERIC)
    def emit_relu(k: Kernel) -> None: ...

`dtypes` restricts the element type of the op's main operand (input 0, or output 0 for ops
without inputs); `check(step)` returns why a step cannot be compiled (or None), for refusals
that must happen before memory planning (e.g. a Dropout in training mode is not a view);
`inplace=True` lets the memory planner give the output the buffer of a same-sized input that
dies at this op (elementwise ops only); `alias=True` marks ops whose
output 0 is input 0 reinterpreted (Reshape family): the planner makes it a view and the emitter
only runs (as a copy) when a view is impossible. `const_inputs` lists the inputs the emitter
reads at compile time (axes, pads, starts/ends, shape, repeats, scales/sizes...): when a graph
input feeds one of them, its run-time value becomes part of the specialization key, exactly
like input shapes (see api.CompiledModel and specialize.value_inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from graphopt.ir.graph import Node
from graphopt.ir.types import DType

if TYPE_CHECKING:
    from graphopt.backend.c.kernel import Kernel
    from graphopt.backend.program import Step

EmitFunction = Callable[["Kernel"], None]
CheckFunction = Callable[["Step"], Optional[str]]


@dataclass(frozen=True)
class OpEmitter:
    domain: str
    op_type: str
    emit: EmitFunction
    dtypes: frozenset[DType] | None
    inplace: bool
    alias: bool
    module: str
    check: CheckFunction | None = None
    const_inputs: tuple[int, ...] = ()


_EMITTERS: dict[tuple[str, str], OpEmitter] = {}


def register_op(*op_types: str, domain: str = "", dtypes: Iterable[DType] | None = None,
                inplace: bool = False, alias: bool = False, check: CheckFunction | None = None,
                const_inputs: Iterable[int] = ()) -> Callable[[EmitFunction], EmitFunction]:
    """Register the decorated function as the C emitter of `op_types` in `domain`."""

    def decorate(fn: EmitFunction) -> EmitFunction:
        for op_type in op_types:
            key = (domain, op_type)
            if key in _EMITTERS:
                raise ValueError(f"two C emitters for {domain or 'ai.onnx'}::{op_type}: "
                                 f"{_EMITTERS[key].module} and {fn.__module__}")
            _EMITTERS[key] = OpEmitter(domain, op_type, fn,
                                       None if dtypes is None else frozenset(dtypes),
                                       inplace, alias, fn.__module__, check,
                                       tuple(const_inputs))
        return fn

    return decorate


def lookup(node: Node) -> OpEmitter | None:
    _load_ops()
    return _EMITTERS.get((node.domain, node.op_type))


def has_emitter(node: Node) -> bool:
    return lookup(node) is not None


def const_inputs(node: Node) -> tuple[int, ...]:
    """Input positions of `node` its emitter needs as compile-time constants."""
    emitter = lookup(node)
    return emitter.const_inputs if emitter is not None else ()


def registered_ops() -> dict[tuple[str, str], OpEmitter]:
    """Every registered emitter (for docs and coverage reports)."""
    _load_ops()
    return dict(sorted(_EMITTERS.items()))


def _load_ops() -> None:
    import graphopt.backend.c.ops  # noqa: F401  (importing the package registers every family)
