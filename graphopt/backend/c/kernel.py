"""What an op emitter works with: one `Kernel` per step, its operands and shared tables.

An op emitter writes the body of one C function, `static int k<N>_<Op>(...)`. It asks the
kernel for parameter names (`k.arg(operand)`), pre-packed constants (`k.packed(...)`), scratch
memory (`k.scratch(nbytes)`) and file-scope helpers (`k.add_helper(...)`); the kernel turns
those requests into the function signature and the call in the entry function.

Parameters are named as in the ONNX operator schema (X, W, B, Y...). Pointers are `restrict`
unless the memory plan makes two of them share a buffer (in-place elementwise ops).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

import numpy as np
import onnx

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import CEmitter, contiguous_strides
from graphopt.backend.c.target import Target
from graphopt.backend.planner import align
from graphopt.backend.program import EpilogueOp, Step, Tensor
from graphopt.errors import UnsupportedError


@dataclass(eq=False)
class Operand:
    """A step's input or output as the emitter sees it (or a constant an emitter derives)."""

    tensor: Tensor
    name: str  # C parameter name (schema name, e.g. "X")
    is_output: bool
    used: bool = True  # outputs: False when nobody reads it (optional outputs may be skipped)
    view_shape: tuple[int, ...] | None = None  # same bytes seen with another shape

    def view(self, shape: tuple[int, ...]) -> "Operand":
        """The same buffer (same C parameter) seen with `shape` (same element count)."""
        return Operand(self.tensor, self.name, self.is_output, self.used, tuple(shape))

    @property
    def dtype(self):  # noqa: ANN201 - DType
        return self.tensor.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.view_shape if self.view_shape is not None else self.tensor.shape

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self.tensor.size

    @property
    def const(self) -> np.ndarray | None:
        return self.tensor.const

    @property
    def ctype(self) -> str:
        return cdtypes.ctype(self.tensor.dtype)

    @property
    def strides(self) -> list[int]:
        return contiguous_strides(self.shape)


@dataclass
class WeightTable:
    """Constant data passed to the compiled code in one aligned blob.

    Entries are keyed by (tensor, packing tag) so a constant used twice in the same layout is
    stored once; `transform` produces a packed layout (e.g. a transposed Gemm weight).
    """

    alignment: int
    arrays: list[np.ndarray] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    _keys: dict[tuple[int, str], int] = field(default_factory=dict)
    _top: int = 0

    def add(self, tensor: Tensor, tag: str = "",
            transform: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
        """Index of the (possibly transformed) copy of `tensor`'s data; adds it if new."""
        key = (id(tensor), tag)
        if key not in self._keys:
            data = tensor.const if transform is None else transform(tensor.const)
            data = np.ascontiguousarray(data)
            self._keys[key] = len(self.arrays)
            self.arrays.append(data)
            self.offsets.append(self._top)
            self._top += align(max(data.nbytes, 1), self.alignment)
        return self._keys[key]

    @property
    def nbytes(self) -> int:
        return self._top

    def blob(self) -> np.ndarray:
        """The bytes of every entry at its offset (uint8, to be placed on an aligned address)."""
        out = np.zeros(max(self._top, 1), dtype=np.uint8)
        for array, offset in zip(self.arrays, self.offsets):
            raw = array.view(np.uint8).reshape(-1)
            out[offset:offset + raw.size] = raw
        return out


@dataclass(frozen=True)
class Param:
    """One parameter of a kernel function and where its pointer comes from at the call."""

    name: str
    ctype: str
    const: bool
    source: Any  # Tensor (activation/input/output), ("weight", index) or ("scratch",)
    order: int  # position in the signature: the operand's schema position, scratch last


class Kernel:
    """The emission context of one step (see the module docstring)."""

    def __init__(self, step: Step, index: int, target: Target, weights: WeightTable,
                 shares: Callable[[Tensor, Tensor], bool], used: Callable[[Tensor], bool],
                 prefix: str = ""):
        self.step = step
        self.index = index
        self.prefix = prefix
        self.node = step.node
        self.target = target
        self.em = CEmitter(target, level=1)
        self.epilogue: list[EpilogueOp] = list(step.epilogue)
        self._weights = weights
        self.helpers: list[str] = []
        self._shares = shares
        names_in, names_out = _param_names(step)
        self.inputs: list[Operand | None] = [
            None if t is None else Operand(t, n, False) for t, n in zip(step.inputs, names_in)]
        self.outputs: list[Operand] = [Operand(t, n, True, used(t))
                                       for t, n in zip(step.outputs, names_out)]
        self._params: list[Param] = []
        self._scratch_bytes = 0

    # --- facts ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.prefix}k{self.index}_{_identifier(self.node.op_type)}"

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def input(self, i: int) -> Operand | None:
        return self.inputs[i] if i < len(self.inputs) else None

    @property
    def params(self) -> list[Param]:
        """The function's parameters in signature order (schema order, then scratch)."""
        return sorted(self._params, key=lambda p: p.order)

    @property
    def scratch_bytes(self) -> int:
        return self._scratch_bytes

    def unsupported(self, reason: str) -> NoReturn:
        """Refuse the step at compile time, naming the op, its dtypes and shapes."""
        raise UnsupportedError(f"{self.step.describe()}: {reason}")

    # --- requests that shape the signature -----------------------------------------------------
    def arg(self, operand: Operand) -> str:
        """The C parameter through which the function reads/writes `operand`."""
        for p in self._params:
            if p.source is operand.tensor:
                return p.name
        self._params.append(Param(operand.name, operand.ctype, not operand.is_output,
                                 operand.tensor, self._position(operand.tensor)))
        return operand.name

    def packed(self, operand: Operand, tag: str, transform: Callable[[np.ndarray], np.ndarray],
               dtype_ctype: str | None = None) -> str:
        """A parameter holding `transform(operand.const)`, packed once at compile time."""
        if operand.const is None:
            raise ValueError(f"{operand.name} is not a constant")
        index = self._weights.add(operand.tensor, tag, transform)
        name = f"{operand.name}_{tag}"
        if all(p.name != name for p in self._params):
            self._params.append(Param(name, dtype_ctype or operand.ctype, True, ("weight", index),
                                     self._position(operand.tensor)))
        return name

    def scratch(self, nbytes: int) -> str:
        """A `char*` expression for `nbytes` of scratch memory private to this step."""
        if all(p.source != ("scratch",) for p in self._params):
            self._params.append(Param("scratch", "char", False, ("scratch",), 1 << 20))
        offset = self._scratch_bytes
        self._scratch_bytes += align(max(int(nbytes), 1), self.target.alignment)
        return f"(scratch + {offset})" if offset else "scratch"

    def _position(self, tensor: Tensor) -> int:
        operands = [*self.inputs, *self.outputs]
        for i, op in enumerate(operands):
            if op is not None and op.tensor is tensor:
                return i
        return len(operands)  # epilogue operands and derived constants follow

    def add_helper(self, code: str) -> None:
        """File-scope C (helper functions, epilogue callbacks) emitted before the kernels."""
        self.helpers.append(code)

    def unique(self, hint: str) -> str:
        """A file-scope identifier owned by this kernel."""
        return f"{self.name}_{hint}"

    # --- rendering -----------------------------------------------------------------------------
    def header(self) -> str:
        """A comment naming the step, its operands and attributes."""
        lines = [f"/* {self.step.describe().replace('*/', '* /')}"]
        if self.node.attrs:
            attrs = " ".join(f"{k}={_short(v)}" for k, v in sorted(self.node.attrs.items()))
            lines.append(f"   attributes: {attrs.replace('*/', '* /')}")
        if self.epilogue:
            lines.append("   epilogue: " + ", ".join(e.op_type for e in self.epilogue))
        return "\n".join(lines) + " */\n"

    def function(self) -> str:
        """The helpers and the C function (without the header comment)."""
        sig = ", ".join(self._param_decl(p) for p in self.params) or "void"
        return "".join(h + "\n" for h in self.helpers) + \
            f"static int {self.name}({sig}) {{\n" + self.em.text() + "    return 0;\n}\n"

    def _param_decl(self, p: Param) -> str:
        aliased = isinstance(p.source, Tensor) and any(
            isinstance(q.source, Tensor) and q is not p and self._shares(p.source, q.source)
            for q in self.params)
        restrict = "" if aliased or not self.target.restrict else f" {self.target.restrict}"
        const = "const " if p.const else ""
        return f"{const}{p.ctype}*{restrict} {p.name}"


# Kernel parameters are named after the op schema with this prefix, which no emitter uses for
# its locals: a parameter called `mean` (BatchNormalization) becomes `p_mean`, so an emitter's
# `double mean` can never shadow an input, whatever names emitters pick for their locals.
PARAM_PREFIX = "p_"


def _param_names(step: Step) -> tuple[list[str], list[str]]:
    """Schema names of inputs and outputs (variadic ones numbered), prefixed with PARAM_PREFIX
    and made unique."""
    node = step.node
    formal_in: list[Any] = []
    formal_out: list[Any] = []
    try:
        version = 1 << 30 if node.domain else (node.graph.opset if node.graph else 1 << 30)
        schema = onnx.defs.get_schema(node.op_type, version, node.domain)
        formal_in, formal_out = list(schema.inputs), list(schema.outputs)
    except Exception:  # no schema (custom domain): positional names
        pass
    ins = _expand(formal_in, len(step.inputs), "in")
    outs = _expand(formal_out, len(step.outputs), "out")
    taken: set[str] = set()
    result = []
    for name in ins + outs:
        name = PARAM_PREFIX + name
        base, n = name, 1
        while name in taken:
            name = f"{base}_{n}"
            n += 1
        taken.add(name)
        result.append(name)
    return result[:len(ins)], result[len(ins):]


def _expand(formal: list[Any], count: int, fallback: str) -> list[str]:
    names = []
    for i in range(count):
        if i < len(formal):
            param = formal[i]
            variadic = param.option == onnx.defs.OpSchema.FormalParameterOption.Variadic
            names.append(_identifier(param.name) + (str(i) if variadic else ""))
        elif formal and formal[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
            names.append(_identifier(formal[-1].name) + str(i))
        else:
            names.append(f"{fallback}{i}")
    return names


def _identifier(text: str) -> str:
    text = re.sub(r"\W", "_", text)
    return text if text and not text[0].isdigit() else f"_{text}"


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"tensor{list(value.shape)}"
    if isinstance(value, onnx.GraphProto):
        return "graph"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."
