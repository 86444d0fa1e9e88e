"""`emit_c(model, out_dir, ...)`: an ONNX model as a self-contained C99 bundle for a board.

    emit_c("digits_cnn.onnx", "out/", target="cortex-m4", prefix="digits", max_ram=65536)

The model goes through the backend's own pipeline (optimize, specialize, lower, generate with
the target as data), so the bundle runs the same kernels the host backend runs. Everything
that can fail is checked in memory before the first file is written: unsupported ops and
dtypes (named by node), tensors too large for the target's index type, and the memory budget.
The sample input is random (seeded) unless given; the expected outputs come from onnxruntime
on the model as loaded (before graphopt's optimizations), so the example checks the whole chain.

Quantized models (graphopt's `Value.quant` annotations, or QDQ files through absorb-qdq) run
on the backend's integer kernels, lowered exactly as `backend.compile` lowers them; their
expected outputs are the host C backend's (portable build) and the example requires the same
bits on every target (see graphopt/embedded/quantized.py for integer inputs/outputs).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

import graphopt
from graphopt import onnx_io
from graphopt.backend.api import ModelLike
from graphopt.backend.build import CSRC_DIR
from graphopt.backend.c import cdtypes
from graphopt.backend.c.config import HEADER_NAME, config_header
from graphopt.backend.c.codegen import GeneratedCode, generate
from graphopt.backend.c.registry import const_inputs, has_emitter
from graphopt.backend.int8.lowering import absorb_qdq_nodes, lower_int8
from graphopt.backend.lowering import fuse_epilogues
from graphopt.backend.planner import get_planner
from graphopt.backend.specialize import specialize, value_inputs
from graphopt.embedded import baremetal, bundle, readme
from graphopt.embedded.csource import (identifier, in_comment, is_identifier, unique_identifiers,
                                       word_count)
from graphopt.embedded.footprint import Footprint, predict
from graphopt.embedded.quantized import (PortQuant, annotate_integer_io, cancel_requantize,
                                         exact_outputs, is_int8)
from graphopt.embedded.targets import BundleTarget, get_bundle_target
from graphopt.errors import BadInputError, UnsupportedError
from graphopt.inputs import check_inputs
from graphopt.ir.graph import Graph
from graphopt.numerics import random_inputs, run_onnxruntime, tolerance_for

log = logging.getLogger(__name__)

# A csrc function definition: a line starting with a return type and `graphopt_name(`.
_CSRC_DEFINITION = re.compile(r"^[A-Za-z_][\w \t*]*\b(graphopt_\w+)\s*\(", re.MULTILINE)


class BudgetError(BadInputError):
    """The bundle does not fit the --max-ram / --max-flash budget (nothing was written)."""


@dataclass(frozen=True)
class Bundle:
    """What emit_c wrote: the directory, its files and the predicted footprint."""

    directory: Path
    files: tuple[str, ...]
    footprint: Footprint
    prefix: str
    target: str
    libm: tuple[str, ...]


def emit_c(model: ModelLike, out_dir: "str | os.PathLike", target: "str | BundleTarget" = "host",
           prefix: str | None = None, *, max_ram: int | None = None,
           max_flash: int | None = None, optimize: bool = True, level: int = 2,
           inputs: Mapping[str, np.ndarray] | None = None,
           dims: Mapping[str, int] | None = None) -> Bundle:
    """Write the C99 bundle of `model` for `target` into `out_dir` (see the module docstring).

    prefix: C name prefix of the API and file names (default: the model file's stem, else
    "model"). max_ram / max_flash: budgets in bytes; exceeding one raises BudgetError naming
    the biggest contributors, before anything is written. inputs: the sample input of the
    example (default: seeded random values). dims: values of symbolic dims (default 1).
    """
    board = get_bundle_target(target)
    name = _prefix(model, prefix)
    graph = graphopt.load(model)
    if graph is model:  # a Graph passed in: the pipeline below must not change the caller's
        graph = graph.copy()
    reference = onnx_io.export_model(graph)  # the model as given: what the example checks
    port_quant = annotate_integer_io(graph)
    graph = absorb_qdq_nodes(graph)  # QDQ files: Q/DQ pairs -> Value.quant, as compile() does
    if optimize:
        from graphopt.optimizer import optimize as run_pipeline

        graph = run_pipeline(graph, level=level).graph
    code = _generate(graph, board, name, dims or {})
    _check_index_range(code, board)
    sample = _sample(graph, inputs, dims)
    int8 = is_int8(code.program)
    expected = _host_int8_outputs(graph, sample, dims) if int8 else \
        [np.asarray(a) for a in run_onnxruntime(reference, sample)]
    text = _bundle_text(graph, board, name, code, sample, expected, port_quant, int8)
    # The model's own C (its header rendered with a placeholder footprint, same size): what
    # the footprint measures and what calls libm.
    model_files = {f"{name}.c": bundle.model_source(text),
                   f"{name}.h": bundle.header(text, _PLACEHOLDER), **text.csrc}
    footprint = predict(code, model_files, 4 * word_count(code.weights.nbytes), board)
    _check_budget(footprint, max_ram, max_flash)
    if footprint.heap:
        log.warning("the %s bundle's run calls malloc (in %s): that heap is not in its RAM "
                    "figure", board.name, ", ".join(footprint.heap))
    files = {**model_files, f"{name}.h": bundle.header(text, footprint),
             f"{name}_weights.c": bundle.weights_source(text),
             "example_main.c": bundle.example_source(text),
             "Makefile": bundle.makefile(text, [n for n in text.csrc if n.endswith(".c")]),
             "mps2.ld": baremetal.LINKER_SCRIPT, "startup_mps2.c": baremetal.STARTUP,
             "footprint.txt": footprint.table() + "\n"}
    files["README.md"] = readme.render(text, footprint, sorted(files))
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, content in files.items():
        (directory / file_name).write_text(content)
    log.info("wrote %s bundle %s to %s: flash %d B, RAM %d B", board.name, name, directory,
             footprint.flash, footprint.ram)
    return Bundle(directory, tuple(sorted(files)), footprint, name, board.name,
                  tuple(bundle.libm_used(model_files)))


_PLACEHOLDER = Footprint("", "estimated", 0, 0, 0, 0, 0, 0, (), (), ())


def _prefix(model: ModelLike, prefix: str | None) -> str:
    if prefix is not None:
        if not is_identifier(prefix):
            raise BadInputError(f"--prefix '{prefix}' is not a C identifier (letters, digits, "
                                "'_', not starting with a digit)")
        return prefix
    if isinstance(model, (str, os.PathLike)):
        return identifier(Path(model).stem.replace("-", "_").lower(), "model")
    return "model"


def _generate(graph: Graph, board: BundleTarget, name: str,
              dims: Mapping[str, int]) -> GeneratedCode:
    """The backend's C for the graph at its default shapes; refusals become one line."""
    for value in graph.inputs:
        if value.type is None or value.type.shape is None:
            raise UnsupportedError(f"graph input '{value.name}' has no tensor type of known rank; "
                                   "a bundle needs typed, shaped inputs")
    for value in graph.outputs:
        if value.type is None:
            raise UnsupportedError(f"graph output '{value.name}' is not a tensor; a bundle "
                                   "returns tensors only")
    held = value_inputs(graph, const_inputs, has_emitter)
    if held:
        names = ", ".join(f"'{graph.inputs[i].name}'" for i in held)
        raise UnsupportedError(f"input(s) {names} are read as op parameters (shapes, axes...); "
                               "a bundle needs them as constants: make them initializers")
    shapes = {v.name: tuple(d if isinstance(d, int) else int(dims.get(d or "", 1))
                            for d in v.type.shape) for v in graph.inputs}
    try:
        program = specialize(graph, shapes, has_emitter)
        lower_int8(program, graph)  # Value.quant-annotated groups -> integer steps
        cancel_requantize(program)  # DequantizeLinear -> QuantizeLinear left at integer ports
        fuse_epilogues(program)
        return generate(program, board.codegen, get_planner("greedy"), prefix=f"{name}_")
    except UnsupportedError as err:
        first, *rest = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UnsupportedError(f"{first.rstrip(':')}: {'; '.join(rest)}" if rest else first) \
            from None


def _check_index_range(code: GeneratedCode, board: BundleTarget) -> None:
    """Refuse tensors, arena or weights larger than the target's index type can address."""
    limit = board.index_max
    for step in code.program.steps:
        for tensor in (*step.inputs, *step.outputs):
            if tensor is not None and tensor.nbytes > limit:
                raise UnsupportedError(
                    f"{step.node.describe()}: tensor {tensor.describe()} has {tensor.nbytes} "
                    f"bytes, more than {board.name}'s {board.codegen.index_type} indices reach")
    for what, size in (("arena", code.arena_bytes), ("weights", code.weights.nbytes)):
        if size > limit:
            raise UnsupportedError(f"the {what} needs {size} bytes, more than {board.name}'s "
                                   f"{board.codegen.index_type} indices reach")


def _sample(graph: Graph, inputs: Mapping[str, np.ndarray] | None,
            dims: Mapping[str, int] | None) -> dict[str, np.ndarray]:
    if inputs is None:
        return random_inputs(graph, seed=0, dims=dims)
    arrays = check_inputs(graph.inputs, dict(inputs))
    return {v.name: a for v, a in zip(graph.inputs, arrays)}


def _host_int8_outputs(graph: Graph, sample: Mapping[str, np.ndarray],
                       dims: Mapping[str, int] | None) -> list[np.ndarray]:
    """What the host C backend computes for the sample (portable C99 build of the same
    lowered program): an INT8 bundle must give these bits on every target."""
    from graphopt.backend import compile as compile_model

    compiled = compile_model(graph, optimize=False, target="portable", dims=dims)
    return [np.asarray(a) for a in compiled.run(dict(sample))]


def _bundle_text(graph: Graph, board: BundleTarget, name: str, code: GeneratedCode,
                 sample: Mapping[str, np.ndarray], expected: list[np.ndarray],
                 port_quant: Mapping[str, PortQuant], int8: bool) -> bundle.BundleText:
    program = code.program
    taken = {"arena", "inputs", "outputs", "weights", name}
    in_names = unique_identifiers([t.name for t in program.inputs], taken)
    out_names = unique_identifiers([t.name for t in program.outputs], taken)
    ports_in = tuple(bundle.Port(c, c.upper(), t, cdtypes.ctype(t.dtype), port_quant.get(t.name))
                     for c, t in zip(in_names, program.inputs))
    ports_out = tuple(bundle.Port(c, c.upper(), t, cdtypes.ctype(t.dtype),
                                  port_quant.get(t.name))
                      for c, t in zip(out_names, program.outputs))
    for port, want in zip(ports_out, expected):
        if tuple(want.shape) != port.tensor.shape:
            raise UnsupportedError(f"output '{port.tensor.name}': the reference gives shape "
                                   f"{tuple(want.shape)}, the program {port.tensor.shape}")
    tolerance = tolerance_for(np.dtype(np.float32))
    # INT8: outputs of integer arithmetic must equal the host C backend's bit for bit.
    exact = exact_outputs(program) if int8 else [False] * len(program.outputs)
    tolerances = tuple((0.0, 0.0) if e else (tolerance.rtol, tolerance.atol) for e in exact)
    rms = tuple(float(np.sqrt(np.mean(np.square(w.astype(np.float64))))) if w.size else 0.0
                for w in expected)
    csrc = kernel_sources(code.body, board)
    title = " ".join(in_comment(graph.info.graph_name or name).split())  # for comments
    return bundle.BundleText(name, title, board, code, ports_in,
                             ports_out, tuple(np.asarray(sample[t.name]) for t in program.inputs),
                             tuple(expected), rms, tolerances, csrc,
                             "the host C backend (INT8)" if int8 else "onnxruntime")


def kernel_sources(body: str, board: BundleTarget) -> dict[str, str]:
    """The csrc files a bundle needs: every header, the target's generated config header, and
    each kernel source defining a function that `body` (or another needed source) calls."""
    files = {p.name: p.read_text() for p in sorted(CSRC_DIR.glob("*.h"))}
    files[HEADER_NAME] = config_header(board.codegen, board.cc)
    sources = {p.name: p.read_text() for p in sorted(CSRC_DIR.glob("*.c"))}
    needed, text = set(), body
    while True:
        more = {name for name, src in sources.items() if name not in needed
                and any(re.search(rf"\b{f}\s*\(", text)
                        for f in _CSRC_DEFINITION.findall(src))}
        if not more:
            break
        needed |= more
        text += "".join(sources[name] for name in more)
    files.update((name, sources[name]) for name in sorted(needed))
    return files


def _check_budget(footprint: Footprint, max_ram: int | None, max_flash: int | None) -> None:
    problems = []
    if max_ram is not None and footprint.ram > max_ram:
        problems.append(f"needs {footprint.ram} B of RAM > --max-ram {max_ram}: "
                        f"{footprint.ram_reason()}")
    if max_flash is not None and footprint.flash > max_flash:
        problems.append(f"needs {footprint.flash} B of flash > --max-flash {max_flash}: "
                        f"{footprint.flash_reason()}")
    if problems:
        raise BudgetError(f"the {footprint.target} bundle does not fit; nothing written: "
                          + "; ".join(problems))
