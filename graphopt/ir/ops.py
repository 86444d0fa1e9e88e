"""Op facts as data: named sets of (domain, op_type) keys that passes and emitters query.

Passes ask `is_a(node, COMMUTATIVE)` instead of comparing op-type strings all over the code.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

import onnx

if TYPE_CHECKING:
    from graphopt.ir.graph import Node

OpKey = tuple[str, str]


def _ops(*names: str, domain: str = "") -> frozenset[OpKey]:
    return frozenset((domain, n) for n in names)


UNARY = _ops("Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Relu", "Sigmoid", "Tanh", "Erf",
             "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh",
             "Cosh", "Asinh", "Acosh", "Atanh", "Softplus", "Softsign", "Not", "Elu", "Selu",
             "LeakyRelu", "HardSigmoid", "HardSwish", "Celu", "Gelu", "Mish", "ThresholdedRelu",
             "IsNaN", "IsInf", "Clip", "Cast", "BitwiseNot")
BINARY = _ops("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "PRelu", "Equal", "Less",
              "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitShift",
              "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Sum", "Mean")
ELEMENTWISE = UNARY | BINARY | _ops("Where")
COMMUTATIVE = _ops("Add", "Mul", "Max", "Min", "Equal", "And", "Or", "Xor", "Sum", "Mean",
                   "BitwiseAnd", "BitwiseOr", "BitwiseXor")
ACTIVATIONS = _ops("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish",
                   "Elu", "Selu", "Celu", "Gelu", "Softplus", "Mish")
# Ops whose output depends only on input shapes/types, never on input data.
SHAPE_ONLY = _ops("Shape", "Size")
# Ops that only move or reinterpret data.
DATA_MOVEMENT = _ops("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split",
                     "Slice", "Gather", "Expand", "Pad", "Tile", "Identity", "DepthToSpace",
                     "SpaceToDepth")
# Ops that only reinterpret the shape of their first input (element order unchanged).
RESHAPE_LIKE = _ops("Reshape", "Flatten", "Squeeze", "Unsqueeze")
# Ops whose semantics depend on the memory layout of their operands (NCHW axes).
LAYOUT_SENSITIVE = _ops("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
                        "GlobalMaxPool", "BatchNormalization", "InstanceNormalization", "LRN",
                        "Resize", "DepthToSpace", "SpaceToDepth")
# Outputs differ between runs or carry state: never fold, deduplicate or move them.
NONDETERMINISTIC = _ops("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                        "Multinomial", "Bernoulli")
CONTROL_FLOW = _ops("If", "Loop", "Scan")
# Random only in training mode (Dropout draws its mask when its training_mode input is true).
RANDOM_IN_TRAINING = _ops("Dropout")
# Ops that normalize along one axis (opset >= 13; before, over all dims from the axis on).
SOFTMAX_LIKE = _ops("Softmax", "LogSoftmax", "Hardmax")
REDUCTIONS = _ops("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                  "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
# Two-input arithmetic whose constant operand acts as a parameter (a bias, a scale).
ARITHMETIC = _ops("Add", "Sub", "Mul", "Div")
# Ops that pass a tensor on with the same elements, only reshaped, permuted or converted (a weight
# stored transposed or in another dtype passes through one on its way to its op).
VALUE_CARRIERS = RESHAPE_LIKE | _ops("Transpose", "Cast", "Identity")
# Inputs that hold an op's learned parameters (weights, biases, normalization statistics), by
# position: their shape is fixed by the op, never a broadcast of something smaller.
PARAMETER_INPUTS: dict[OpKey, tuple[int, ...]] = {
    ("", "Conv"): (1, 2), ("", "ConvTranspose"): (1, 2), ("", "Gemm"): (1, 2),
    ("", "MatMul"): (1,), ("", "BatchNormalization"): (1, 2, 3, 4),
    ("", "InstanceNormalization"): (1, 2), ("", "LayerNormalization"): (1, 2),
    ("", "GroupNormalization"): (1, 2), ("", "PRelu"): (1,), ("", "Gather"): (0,),
    ("", "LSTM"): (1, 2, 3), ("", "GRU"): (1, 2, 3), ("", "RNN"): (1, 2, 3),
}


_Rule = TypeVar("_Rule", bound=Callable)


def op_rule_decorator(table: dict[OpKey, _Rule]) -> Callable[..., Callable[[_Rule], _Rule]]:
    """A decorator factory filling `table`: `@rule("Add", "Sub", domain="")` registers the decorated
    function under each (domain, op_type). One shape for every per-op fact table."""
    def rule(*op_types: str, domain: str = "") -> Callable[[_Rule], _Rule]:
        def decorate(fn: _Rule) -> _Rule:
            for op_type in op_types:
                table[(domain, op_type)] = fn
            return fn
        return decorate
    return rule


def is_a(node: "Node", family: frozenset[OpKey]) -> bool:
    return node.key in family


def is_random(node: "Node") -> bool:
    """Whether two runs (or two copies) of `node` may give different outputs: NONDETERMINISTIC
    ops, and RANDOM_IN_TRAINING ops unless training_mode is absent or a constant false."""
    key = node.key
    if key in NONDETERMINISTIC:
        return True
    if key in RANDOM_IN_TRAINING:
        training = node.input(2)
        return training is not None and (training.const is None or bool(training.const))
    return False


def is_known(domain: str, op_type: str, opset: int | None = None) -> bool:
    """Whether onnx defines this op (standard or ai.onnx.ml domains); custom domains are unknown."""
    try:
        if opset is None:
            return onnx.defs.has(op_type, domain)
        onnx.defs.get_schema(op_type, opset, domain)
        return True
    except Exception:
        return False
