"""graphopt: a compiler-style optimizer for ONNX models.

Public API (one import):

    import graphopt
    graph = graphopt.load("model.onnx")              # ONNX -> IR Graph
    result = graphopt.optimize(graph, level=2)       # run the -O2 pipeline on a copy
    graphopt.save(result.graph, "model.opt.onnx")    # IR Graph -> checked ONNX file
    model = graphopt.compile("model.onnx")           # C backend; model.run({"input": x})
    report = graphopt.run_npu("model.onnx")          # schedule on a modeled NPU (eyeriss)

    Graph, Node, Value, TensorType, DType      the IR
    register_pass, PassResult                  writing passes (built-ins use the same API)
    GraphoptError                              base of every error graphopt raises on purpose

Heavy dependencies (onnx, numpy) are imported on first use, not by `import graphopt`, so the
command line answers `graphopt --help` without paying for them.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Iterable

from graphopt.errors import GraphoptError

if TYPE_CHECKING:
    import onnx

    from graphopt.backend.api import CompiledModel
    from graphopt.ir import DType, Graph, Node, TensorType, Value
    from graphopt.npu.arch import Arch
    from graphopt.npu.scheduler import ScheduleReport
    from graphopt.optimizer import OptimizeResult
    from graphopt.pass_api import PassResult, register_pass
    from graphopt.pass_manager import Instrument

__version__ = "0.1.0"

# Names re-exported from submodules, imported when first read (PEP 562).
_LAZY = {
    "Graph": "graphopt.ir", "Node": "graphopt.ir", "Value": "graphopt.ir",
    "TensorType": "graphopt.ir", "DType": "graphopt.ir",
    "register_pass": "graphopt.pass_api", "PassResult": "graphopt.pass_api",
    "emit_c": "graphopt.embedded.emit",  # C99 bundle for a board (docs/EMBEDDED.md)
    "quantize": "graphopt.quantization.api",  # INT8 QDQ (docs/QUANTIZATION.md)
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load(model: "str | os.PathLike | onnx.ModelProto | Graph",
         fold_input_initializers: bool = False) -> "Graph":
    """Import an ONNX model (a path, a ModelProto, or a Graph returned as is) into graphopt's IR.

    Raises BadInputError for missing, truncated or invalid files, before any data is read, and
    for models that can never run (shapes that do not fit their ops, axes out of range...).
    Initializers that are also graph inputs (IR >= 4) stay overridable inputs, never folded,
    unless `fold_input_initializers`.
    """
    from graphopt.onnx_io import load as _load

    return _load(model, fold_input_initializers)


def save(graph: "Graph", path: "str | os.PathLike") -> "onnx.ModelProto":
    """Export `graph` to standard ONNX and write it to `path`; returns the written ModelProto.

    The file is checked with onnx.checker and moved into place only when complete (models past
    2 GB get their weights in `<path>.data`).
    """
    from graphopt.onnx_io import save as _save

    return _save(graph, path)


def optimize(model: "str | os.PathLike | onnx.ModelProto | Graph", level: int = 2,
             passes: str | None = None, *, skip: Iterable[str] = (),
             instruments: "Iterable[Instrument]" = (), verify_ir: bool = True
             ) -> "OptimizeResult":
    """Run the -O `level` preset (or the explicit pass list `passes`) on `model`.

    A Graph argument is copied, never changed: the optimized graph is `result.graph`, next to
    the pass manager's records (`result.manager.summary()`). `skip` drops passes by name from
    the pipeline. Same behaviour as `graphopt optimize`, without writing a file.
    """
    from graphopt.optimizer import optimize as _optimize

    return _optimize(model, level=level, passes=passes, skip=skip, instruments=instruments,
                     verify_ir=verify_ir)


def compile(model: "str | os.PathLike | onnx.ModelProto | Graph",  # noqa: A001
            optimize: bool = True, level: int = 2, target: str = "native",
            **options: Any) -> "CompiledModel":
    """Compile `model` to C with the backend and load it: `compile(m).run({"input": x})`.

    A Graph argument is never changed. `options` are those of graphopt.backend.compile
    (passes, cache_dir, threads, planner, fuse_epilogues, dims).
    """
    from graphopt.backend.api import compile as _compile

    return _compile(model, optimize=optimize, level=level, target=target, **options)


def run_npu(model: "str | os.PathLike | onnx.ModelProto | Graph", arch: "Arch | str" = "eyeriss",
            dataflow: str | None = None, objective: str = "energy", batch: int = 1,
            datatype: str | None = None, level: int = 2, passes: str | None = None
            ) -> "ScheduleReport":
    """Optimize `model` and schedule it on a modeled NPU (`arch`: a preset name, a .toml/.json
    file or an Arch); the report holds per-layer mappings, cycles and energy (`to_dict()`).

    Named run_npu, not npu: `graphopt.npu` is the NPU package (Arch, Scheduler...), and a
    function of that name would be replaced by the package as soon as it is imported."""
    from graphopt.npu.entry import run_npu as _run_npu

    return _run_npu(model, arch, dataflow, objective, batch, datatype, level, passes)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Graph", "Node", "Value", "TensorType", "DType", "register_pass", "PassResult",
           "GraphoptError", "load", "save", "optimize", "compile", "run_npu"]
