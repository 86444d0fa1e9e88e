"""graphopt: a compiler-style optimizer for ONNX models.

Public API:
    Graph, Node, Value, TensorType, DType      the IR
    register_pass, PassResult                  writing passes (built-ins use the same API)
    load, save                                 ONNX <-> IR
    optimize                                   run a pipeline on a model
"""
from graphopt.errors import GraphoptError
from graphopt.ir import DType, Graph, Node, TensorType, Value
from graphopt.pass_api import PassResult, register_pass

__version__ = "0.1.0"


def load(model):  # noqa: ANN001, ANN201 - thin re-export, typed in graphopt.onnx_io
    from graphopt.onnx_io import load as _load

    return _load(model)


def save(graph, path):  # noqa: ANN001, ANN201
    from graphopt.onnx_io import save as _save

    return _save(graph, path)


def optimize(model, level: int = 2, passes: str | None = None, **kwargs):  # noqa: ANN001, ANN201
    from graphopt.optimizer import optimize as _optimize

    return _optimize(model, level=level, passes=passes, **kwargs)


__all__ = ["Graph", "Node", "Value", "TensorType", "DType", "register_pass", "PassResult",
           "GraphoptError", "load", "save", "optimize"]
