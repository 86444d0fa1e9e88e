"""graphopt's IR: one graph that every consumer (ONNX export, C backend, NPU) reads."""
from graphopt.ir.graph import Graph, ModelInfo, Node, Use, Value
from graphopt.ir.types import Dim, DType, QuantParams, TensorType

__all__ = ["Graph", "Node", "Value", "Use", "ModelInfo", "TensorType", "DType", "Dim", "QuantParams"]
