"""Embedded C: a model as a self-contained C99 bundle for microcontrollers and Linux boards.

`emit_c(model, out_dir, target=...)` writes NAME.h/NAME.c/NAME_weights.c, the csrc kernels
they call, a Makefile, README.md and example_main.c (a self-check against onnxruntime), after
checking the model is supported and fits the RAM/flash budget. See docs/EMBEDDED.md.

Names are imported on first use (PEP 562), so `graphopt.embedded.targets` stays light for
the command line's option parsing.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"emit_c": "graphopt.embedded.emit", "Bundle": "graphopt.embedded.emit",
         "BudgetError": "graphopt.embedded.emit", "BundleTarget": "graphopt.embedded.targets",
         "BUNDLE_TARGETS": "graphopt.embedded.targets"}


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whatever the named attribute is
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphopt.embedded' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = list(_LAZY)
