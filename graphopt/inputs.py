"""Checking user-supplied inputs against a model's declared inputs, before anything runs.

Shared by `--inputs` (verification in onnxruntime) and the C backend's CompiledModel.run, so both
reject a wrong name, dtype or shape with the same one-line message.
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

import numpy as np

from graphopt.errors import BadInputError
from graphopt.ir.graph import Value

Inputs = Union[Mapping[str, np.ndarray], Sequence[np.ndarray], np.ndarray]


def describe_inputs(declared: Sequence[Value]) -> str:
    return ", ".join(f"'{v.name}' {v.type}" + (" (has a default)" if v.default is not None else "")
                     for v in declared)


def check_inputs(declared: Sequence[Value], inputs: Inputs) -> list[np.ndarray]:
    """The inputs as C-contiguous arrays in model order; BadInputError naming the first mismatch.

    Accepts a dict by name, a list in model order, or a single array for a one-input model. A
    symbolic dim must take the same size wherever it appears. An input with a default (an
    initializer also listed as input) may be left out: its default is used.
    """
    names = [v.name for v in declared]
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if not isinstance(inputs, Mapping):
        inputs = list(inputs)
        if len(inputs) < len(declared) and all(v.default is not None
                                                for v in declared[len(inputs):]):
            inputs = dict(zip(names, inputs))  # the trailing inputs take their defaults
    if isinstance(inputs, Mapping):
        unknown = [n for n in inputs if n not in names]
        missing = [v.name for v in declared if v.name not in inputs and v.default is None]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
            if missing:
                parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
            raise BadInputError(f"{'; '.join(parts)}; the model's inputs are "
                                f"{describe_inputs(declared)}")
        values = [inputs[v.name] if v.name in inputs else v.default for v in declared]
    else:
        values = list(inputs)
        if len(values) != len(declared):
            required = sum(v.default is None for v in declared)
            counts = (f"{len(declared)}" if required == len(declared)
                      else f"{required} to {len(declared)}")
            raise BadInputError(f"got {len(values)} input array(s); the model takes "
                                f"{counts}: {describe_inputs(declared)}")
    arrays = []
    bound: dict[str, tuple[int, str]] = {}
    for value, array in zip(declared, values):
        array = np.asarray(array)
        if value.type is not None:
            expected = value.type.dtype.numpy
            if array.dtype != expected:
                raise BadInputError(f"input '{value.name}' has dtype {array.dtype}; the model "
                                    f"expects {expected} (convert with .astype(np.{expected}))")
            check_shape(value, array.shape, bound)
        arrays.append(array if array.flags.c_contiguous else np.ascontiguousarray(array))
    return arrays


def check_shape(value: Value, shape: tuple[int, ...], bound: dict[str, tuple[int, str]]) -> None:
    """Raise BadInputError when `shape` does not fit the declared (possibly symbolic) shape."""
    declared = value.type.shape if value.type is not None else None
    if declared is None:
        return
    problem = None
    if len(shape) != len(declared):
        problem = f"rank {len(shape)}, expected {len(declared)}"
    else:
        for axis, (got, want) in enumerate(zip(shape, declared)):
            if isinstance(want, int) and got != want:
                problem = f"dim {axis} is {got}, expected {want}"
            elif isinstance(want, str) and want:
                seen = bound.setdefault(want, (got, value.name))
                if seen[0] != got:
                    problem = (f"dim {axis} ('{want}') is {got} but input '{seen[1]}' "
                               f"set '{want}' to {seen[0]}")
            if problem:
                break
    if problem:
        raise BadInputError(f"input '{value.name}' has shape {tuple(shape)}: {problem} "
                            f"(declared {value.type})")
