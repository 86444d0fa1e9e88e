"""The C emitter: scaffolding (emitter, expression table, kernels, registry) and op families."""
from graphopt.backend.c.codegen import GeneratedCode, generate
from graphopt.backend.c.registry import register_op, registered_ops
from graphopt.backend.c.target import NATIVE, PORTABLE, Target, get_target

__all__ = ["GeneratedCode", "generate", "register_op", "registered_ops", "Target", "NATIVE",
           "PORTABLE", "get_target"]
