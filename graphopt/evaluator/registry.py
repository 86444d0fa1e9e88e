"""The constant-evaluation kernel registry and its dispatcher.

A kernel computes one op on numpy arrays. Kernels are registered by decorator, keyed by
(domain, op_type) with an opset range, and receive a `Call` (inputs, attributes, opset, number of
outputs). Ops without a kernel fall back to onnx's ReferenceEvaluator
(graphopt.evaluator.reference).

Contract of a kernel: produce exactly the values and dtypes onnxruntime produces for the same
inputs. Integer, boolean and data-movement ops are bit-exact; float arithmetic stays in the input
dtype (no silent float64), so +, -, *, / and sqrt are IEEE-exact too. A kernel that cannot honour
the contract for some input (integer division by zero, an exotic dtype) raises `UnsupportedError`,
and the caller leaves the node alone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import NotImplementedType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from graphopt.errors import UnsupportedError
from graphopt.ir.ops import OpKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """One evaluation request: the op's inputs (None for omitted optional inputs) and attributes."""

    op_type: str
    inputs: tuple[np.ndarray | None, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    opset: int = 17
    num_outputs: int = 1
    domain: str = ""

    def input(self, index: int) -> np.ndarray | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def ints(self, index: int, attr: str) -> list[int] | None:
        """An int list given as input `index` (newer opsets) or attribute `attr` (older ones)."""
        value = self.input(index)
        if value is not None:
            return [int(v) for v in np.asarray(value).reshape(-1)]
        listed = self.attrs.get(attr)
        return None if listed is None else [int(v) for v in listed]

    def describe(self) -> str:
        op = f"{self.domain}::{self.op_type}" if self.domain else self.op_type
        shapes = ", ".join("-" if a is None else f"{a.dtype}{list(a.shape)}" for a in self.inputs)
        return f"{op}({shapes})"


KernelFn = Callable[[Call], "np.ndarray | Sequence[np.ndarray] | NotImplementedType"]


@dataclass(frozen=True)
class Kernel:
    fn: KernelFn
    since: int
    until: int | None  # last opset version it implements; None = still current

    def covers(self, opset: int) -> bool:
        return self.since <= opset and (self.until is None or opset <= self.until)


KERNELS: dict[OpKey, list[Kernel]] = {}


def kernel(*op_types: str, domain: str = "", since: int = 1,
           until: int | None = None) -> Callable[[KernelFn], KernelFn]:
    """Register `fn` as the kernel of each op in `op_types` for opsets since..until."""
    def decorate(fn: KernelFn) -> KernelFn:
        for op_type in op_types:
            KERNELS.setdefault((domain, op_type), []).append(Kernel(fn, since, until))
        return fn

    return decorate


def find_kernel(domain: str, op_type: str, opset: int) -> KernelFn | None:
    for entry in KERNELS.get((domain, op_type), ()):
        if entry.covers(opset):
            return entry.fn
    return None


def evaluate(call: Call) -> list[np.ndarray]:
    """Compute every output of `call`, with a numpy kernel when one is registered, else with
    onnx's ReferenceEvaluator. Raises UnsupportedError when neither can (the node stays).

    A kernel returns NotImplemented to hand an input it does not cover (a dtype, an attribute
    value) to the reference evaluator."""
    fn = find_kernel(call.domain, call.op_type, call.opset)
    if fn is None:
        from graphopt.evaluator.reference import evaluate_with_reference

        return evaluate_with_reference(call)
    try:
        with np.errstate(all="ignore"):  # overflow/NaN follow the runtime's arithmetic silently
            result = fn(call)
    except UnsupportedError:
        raise
    except (ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError) as err:
        raise UnsupportedError(f"cannot evaluate {call.describe()}: {err}") from None
    if result is NotImplemented:  # the kernel does not cover these dtypes or attributes
        from graphopt.evaluator.reference import evaluate_with_reference

        return evaluate_with_reference(call)
    arrays = [result] if isinstance(result, (np.ndarray, np.generic)) else list(result)
    return [np.asarray(a) for a in arrays]
