"""Op facts as data: named sets of (domain, op_type) keys that passes and emitters query.

Passes ask `is_a(node, COMMUTATIVE)` instead of comparing op-type strings all over the code.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

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


def is_a(node: "Node", family: frozenset[OpKey]) -> bool:
    return node.key in family


def is_random(node: "Node") -> bool:
    """Whether two runs (or two copies) of `node` may give different outputs: NONDETERMINISTIC
    ops, and RANDOM_IN_TRAINING ops unless training_mode is absent or a constant false."""
    if node.key in NONDETERMINISTIC:
        return True
    if node.key in RANDOM_IN_TRAINING:
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
