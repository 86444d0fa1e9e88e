"""One exception hierarchy for graphopt.

Library code raises these; only the CLI turns them into a single line on stderr and an exit code.
Messages name the node, the value, the pass and, where possible, the fix.
"""
from __future__ import annotations


class GraphoptError(Exception):
    """Base class of every error graphopt raises on purpose."""

    exit_code = 1


class BadInputError(GraphoptError):
    """The user's file, inputs or options are unusable (missing, corrupt, wrong shape or dtype)."""

    exit_code = 2


class UnsupportedError(GraphoptError):
    """A construct graphopt does not handle (an op, an opset, a dtype) in the requested consumer."""

    exit_code = 3


class IRError(GraphoptError):
    """The IR violates an invariant (broken use-def chain, cycle, missing type)."""


class PassError(GraphoptError):
    """A pass raised, or its preconditions do not hold. Names the pass and the ones before it."""


class VerificationError(GraphoptError):
    """Optimized outputs differ from the reference beyond tolerance."""

    exit_code = 4


class CodegenError(GraphoptError):
    """The C backend could not emit or compile the model."""


class NPUConfigError(GraphoptError):
    """An accelerator description is invalid or no mapping fits it."""

    exit_code = 2
