"""CPU backend: compile a model to C, build it with cffi, run it from Python.

    from graphopt.backend import compile
    model = compile("model.onnx")            # optimize, specialize, emit C, build (cached)
    outputs = model.run({"input": x})        # like onnxruntime.InferenceSession.run

See docs/BACKEND.md for the pipeline, how to add an op, the memory planner and the cache.
"""
from graphopt.backend.api import CompiledModel, CompileOptions, compile, compile_many  # noqa: A004
from graphopt.backend.c.target import NATIVE, PORTABLE, Target
from graphopt.backend.runtime import Report

__all__ = ["compile", "compile_many", "CompiledModel", "CompileOptions", "Report", "Target",
           "NATIVE", "PORTABLE"]
