"""The one table of scalar C expressions for elementwise ops.

Each entry gives a C template per type class (float, integer, bool). Placeholders: {a} {b} {c}
the operands, {T} the C type the op computes in, {f} the <math.h> suffix ("f" for float, "" for
double), and {name} for attributes (formatted as literals of T when the default is a float).
Elementwise kernels, fused chains and Conv/Gemm epilogues all render ops through `render`, one
temporary per op, so a chain is a composition of table entries, never a hand-written kernel.

exp, erf and tanh of float render as csrc/graphopt_math.h's graphopt_expf/erff/tanhf: branch-free
inline functions (max error stated there, below 5e-7) that let the C compiler vectorize the loops
calling them, where a libm call keeps them scalar; double keeps libm (graphopt_exp is exp).

The template semantics follow the ONNX operator spec (and onnxruntime where the spec is silent,
e.g. integer Div truncates and Round is round-half-to-even via nearbyint).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import CEmitter
from graphopt.ir.types import DType


@dataclass(frozen=True)
class ScalarOp:
    """C templates of one elementwise op.

    result: "same" (the type T), "bool" (comparisons, IsNaN) or "any" (Cast: the output's type).
    type_operand: the operand whose dtype is T (Where: 1, the first data operand).
    defaults: literals for omitted optional operands: "finite_lowest"/"finite_highest" are the
        type's finite range (Clip without bounds clamps infinities to it, as onnxruntime does).
    variadic: applied pairwise left to right over any number of operands (Sum, Max, Min...).
    """

    float: str | None
    int: str | None = None
    bool: str | None = None
    arity: int = 1
    attrs: dict[str, Any] = field(default_factory=dict)
    result: str = "same"
    type_operand: int = 0
    defaults: dict[int, str] = field(default_factory=dict)
    variadic: bool = False

    def template(self, dtype: DType) -> str | None:
        if dtype in cdtypes.FLOATS:
            return self.float
        if dtype == DType.BOOL:
            return self.bool
        return self.int


def _op(float_: str | None, int_: str | None = None, bool_: str | None = None,
        **kw: Any) -> ScalarOp:
    return ScalarOp(float_, int_, bool_, **kw)


_SAME = "{a}"
_RELU = "({a} < 0 ? 0 : {a})"  # NaN passes through, as in onnxruntime
_CLIP = "(({a} < {b} ? {b} : {a}) > {c} ? {c} : ({a} < {b} ? {b} : {a}))"
_BITS = "(int)(sizeof({T}) * 8)"
_SIGN = "({a} > 0 ? ({T})1 : ({a} < 0 ? ({T})-1 : {a}))"  # Sign(NaN) is NaN

SCALAR_OPS: dict[str, ScalarOp] = {
    # unary math
    "Identity": _op(_SAME, _SAME, _SAME),
    "Abs": _op("fabs{f}({a})", "({a} < 0 ? -{a} : {a})"),
    "Neg": _op("(-{a})", "(-{a})"),
    "Exp": _op("graphopt_exp{f}({a})"),
    "Log": _op("log{f}({a})"),
    "Sqrt": _op("sqrt{f}({a})"),
    "Reciprocal": _op("(({T})1 / {a})"),
    "Relu": _op(_RELU, _RELU),
    "Sigmoid": _op("(({T})1 / (({T})1 + graphopt_exp{f}(-{a})))"),
    "Tanh": _op("graphopt_tanh{f}({a})"),
    "Erf": _op("graphopt_erf{f}({a})"),
    "Floor": _op("floor{f}({a})"),
    "Ceil": _op("ceil{f}({a})"),
    "Round": _op("nearbyint{f}({a})"),
    "Sign": _op(_SIGN, _SIGN),
    "Sin": _op("sin{f}({a})"), "Cos": _op("cos{f}({a})"), "Tan": _op("tan{f}({a})"),
    "Asin": _op("asin{f}({a})"), "Acos": _op("acos{f}({a})"), "Atan": _op("atan{f}({a})"),
    "Sinh": _op("sinh{f}({a})"), "Cosh": _op("cosh{f}({a})"), "Asinh": _op("asinh{f}({a})"),
    "Acosh": _op("acosh{f}({a})"), "Atanh": _op("atanh{f}({a})"),
    "Softplus": _op("({a} > 0 ? {a} + log1p{f}(graphopt_exp{f}(-{a})) : "
                    "log1p{f}(graphopt_exp{f}({a})))"),
    "Softsign": _op("({a} / (({T})1 + fabs{f}({a})))"),
    "Elu": _op("({a} < 0 ? {alpha} * (graphopt_exp{f}({a}) - ({T})1) : {a})",
               attrs={"alpha": 1.0}),
    "Selu": _op("({gamma} * ({a} > 0 ? {a} : {alpha} * (graphopt_exp{f}({a}) - ({T})1)))",
                attrs={"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "LeakyRelu": _op("({a} < 0 ? {alpha} * {a} : {a})", attrs={"alpha": 0.01}),
    "HardSigmoid": _op("({alpha} * {a} + {beta} < 0 ? ({T})0 : ({alpha} * {a} + {beta} > 1 ? "
                       "({T})1 : {alpha} * {a} + {beta}))", attrs={"alpha": 0.2, "beta": 0.5}),
    "HardSwish": _op("({a} * fmax{f}(({T})0, fmin{f}(({T})1, {a} / ({T})6 + ({T})0.5)))"),
    "Celu": _op("({a} < 0 ? {alpha} * (graphopt_exp{f}({a} / {alpha}) - ({T})1) : {a})",
                attrs={"alpha": 1.0}),
    "ThresholdedRelu": _op("({a} > {alpha} ? {a} : ({T})0)", attrs={"alpha": 1.0}),
    "Gelu": _op("(({T})0.5 * {a} * (({T})1 + "
                "graphopt_erf{f}({a} * ({T})0.7071067811865475244)))"),
    "Gelu:tanh": _op("(({T})0.5 * {a} * (({T})1 + graphopt_tanh{f}(({T})0.7978845608028654 * "
                     "({a} + ({T})0.044715 * {a} * {a} * {a}))))"),
    "Shrink": _op("({a} < -{lambd} ? {a} + {bias} : ({a} > {lambd} ? {a} - {bias} : ({T})0))",
                  attrs={"lambd": 0.5, "bias": 0.0}),
    "Swish": _op("({a} / (({T})1 + graphopt_exp{f}(-{alpha} * {a})))", attrs={"alpha": 1.0}),
    "Mish": _op("({a} * graphopt_tanh{f}({a} > 0 ? {a} + log1p{f}(graphopt_exp{f}(-{a})) : "
                "log1p{f}(graphopt_exp{f}({a}))))"),
    "IsNaN": _op("isnan({a})", result="bool"),
    "IsInf": _op("(isinf({a}) && ({a} > 0 ? {detect_positive} : {detect_negative}))",
                 attrs={"detect_positive": 1, "detect_negative": 1}, result="bool"),
    "Not": _op(None, None, "(!{a})"),
    "BitwiseNot": _op(None, "({T})(~{a})"),
    "Cast": _op(_SAME, _SAME, _SAME, result="any"),
    "CastLike": _op(_SAME, _SAME, _SAME, result="any"),  # the second input only gives the type
    # min first, then max: when min > max every value becomes max, as the spec says
    "Clip": _op(_CLIP, _CLIP, arity=3, defaults={1: "finite_lowest", 2: "finite_highest"}),
    # binary arithmetic
    "Add": _op("({a} + {b})", "({a} + {b})", arity=2),
    "Sub": _op("({a} - {b})", "({a} - {b})", arity=2),
    "Mul": _op("({a} * {b})", "({a} * {b})", arity=2),
    "Div": _op("({a} / {b})", "({a} / {b})", arity=2),
    "Pow": _op("pow{f}({a}, ({T}){b})", "({T})pow((double){a}, (double){b})", arity=2),
    # fmod=0: the result takes the divisor's sign (Python's %)
    "Mod": _op("(fmod{f}({a}, {b}) != 0 && ((fmod{f}({a}, {b}) < 0) != ({b} < 0)) ? "
               "fmod{f}({a}, {b}) + {b} : fmod{f}({a}, {b}))",
               "({a} % {b} != 0 && (({a} % {b} < 0) != ({b} < 0)) ? "
               "{a} % {b} + {b} : {a} % {b})", arity=2),
    "Mod:fmod": _op("fmod{f}({a}, {b})", "({a} % {b})", arity=2),
    "PRelu": _op("({a} < 0 ? {b} * {a} : {a})", "({a} < 0 ? {b} * {a} : {a})", arity=2),
    "Max": _op("({a} >= {b} ? {a} : {b})", "({a} >= {b} ? {a} : {b})", variadic=True),
    "Min": _op("({a} <= {b} ? {a} : {b})", "({a} <= {b} ? {a} : {b})", variadic=True),
    "Sum": _op("({a} + {b})", "({a} + {b})", variadic=True),
    "Mean": _op("({a} + {b})", variadic=True),
    # shifts by a negative amount or by the width or more saturate (0, or -1 for negative >>)
    "BitShift:LEFT": _op(None, f"({{b}} < 0 || {{b}} >= {_BITS} ? ({{T}})0 : "
                               "({T})((uint64_t){a} << {b}))", arity=2),
    "BitShift:RIGHT": _op(None, f"({{b}} < 0 || {{b}} >= {_BITS} ? ({{a}} < 0 ? ({{T}})-1 : "
                                "({T})0) : ({T})({a} >> {b}))", arity=2),
    "BitwiseAnd": _op(None, "({T})({a} & {b})", arity=2),
    "BitwiseOr": _op(None, "({T})({a} | {b})", arity=2),
    "BitwiseXor": _op(None, "({T})({a} ^ {b})", arity=2),
    # comparisons and logic
    "Equal": _op("({a} == {b})", "({a} == {b})", "({a} == {b})", arity=2, result="bool"),
    "Less": _op("({a} < {b})", "({a} < {b})", arity=2, result="bool"),
    "Greater": _op("({a} > {b})", "({a} > {b})", arity=2, result="bool"),
    "LessOrEqual": _op("({a} <= {b})", "({a} <= {b})", arity=2, result="bool"),
    "GreaterOrEqual": _op("({a} >= {b})", "({a} >= {b})", arity=2, result="bool"),
    "And": _op(None, None, "({a} && {b})", arity=2),
    "Or": _op(None, None, "({a} || {b})", arity=2),
    "Xor": _op(None, None, "({a} != {b})", arity=2),
    "Where": _op("({a} ? {b} : {c})", "({a} ? {b} : {c})", "({a} ? {b} : {c})", arity=3,
                 type_operand=1),
}

# Attribute-selected variants: op_type -> attrs -> table key.
_VARIANTS: dict[str, Callable[[dict], str]] = {
    "Gelu": lambda attrs: "Gelu:tanh" if attrs.get("approximate", "none") == "tanh" else "Gelu",
    "Mod": lambda attrs: "Mod:fmod" if attrs.get("fmod", 0) else "Mod",
    "BitShift": lambda attrs: f"BitShift:{attrs.get('direction', '')}",
}


def table_key(op_type: str, attrs: dict) -> str | None:
    """The SCALAR_OPS key for a node's op and attributes, or None if it has no entry."""
    key = _VARIANTS[op_type](attrs) if op_type in _VARIANTS else op_type
    return key if key in SCALAR_OPS else None


def compute_dtype(op_type: str, attrs: dict, dtypes: Sequence[DType | None]) -> DType:
    """T: the dtype the op computes in, taken from its type operand."""
    entry = SCALAR_OPS[table_key(op_type, attrs) or op_type]
    dtype = dtypes[entry.type_operand] if entry.type_operand < len(dtypes) else None
    return dtype if dtype is not None else next(d for d in dtypes if d is not None)


def support_problem(op_type: str, attrs: dict, dtypes: Sequence[DType | None]) -> str | None:
    """Why the table cannot render this op for these operand dtypes, or None if it can."""
    key = table_key(op_type, attrs)
    if key is None:
        return f"no scalar expression for {op_type} with attributes {attrs}"
    dtype = compute_dtype(op_type, attrs, dtypes)
    if SCALAR_OPS[key].template(dtype) is None:
        return f"{op_type} is not defined for {dtype.name} in the C backend"
    return None


def render(em: CEmitter, op_type: str, attrs: dict, args: Sequence[tuple[str, DType] | None],
           out_dtype: DType | None = None) -> tuple[str, DType]:
    """Emit `const T tN = <expr>;` for one op applied to `args` (C expression, dtype) pairs.

    Returns the temporary and its dtype. Missing optional operands take the entry's default;
    variadic ops fold pairwise. `out_dtype` is the result type of result="any" ops (Cast).
    """
    key = table_key(op_type, attrs)
    if key is None:
        raise KeyError(op_type)
    entry = SCALAR_OPS[key]
    dtype = compute_dtype(op_type, attrs, [None if a is None else a[1] for a in args])
    template = entry.template(dtype)
    assert template is not None, support_problem(op_type, attrs, [a and a[1] for a in args])
    values = {**entry.attrs, **{k: v for k, v in attrs.items() if k in entry.attrs}}
    fields = {name: (cdtypes.literal(v, dtype) if isinstance(entry.attrs[name], float)
                     else str(int(v))) for name, v in values.items()}
    fields.update(T=cdtypes.ctype(dtype), f=cdtypes.math_suffix(dtype))
    padded = list(args) + [None] * max(entry.arity - len(args), 0)  # trailing optionals omitted
    operands = [_operand(a, i, entry, dtype) for i, a in enumerate(padded)]
    if entry.variadic:
        expr = operands[0]
        for other in operands[1:]:
            expr = template.format(a=expr, b=other, **fields)
        if op_type == "Mean":
            expr = f"({expr} / {cdtypes.literal(len(operands), dtype)})"
    else:
        names = dict(zip("abc", operands))
        expr = template.format(**names, **fields)
    result_dtype = {"same": dtype, "bool": DType.BOOL}.get(entry.result, out_dtype or dtype)
    if result_dtype == DType.BOOL and entry.result == "any" and dtype != DType.BOOL:
        expr = f"({expr} != 0)"
    name = em.temp("v")
    em.line(f"const {cdtypes.ctype(result_dtype)} {name} = {expr};")
    return name, result_dtype


def _operand(arg: tuple[str, DType] | None, index: int, entry: ScalarOp, dtype: DType) -> str:
    if arg is not None:
        return arg[0]
    default = entry.defaults.get(index)
    if default == "finite_lowest":
        return cdtypes.lowest(dtype, finite=True)
    if default == "finite_highest":
        return cdtypes.highest(dtype, finite=True)
    raise KeyError(f"operand {index} is required")
