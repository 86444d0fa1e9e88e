"""The ONNX backend node tests (onnx.backend.test.case.node) run against the C backend.

Each node test case is one small model (usually a single node; `*_expanded` cases hold the
node's function body) with input data and the expected outputs. `run_cases` compiles the cases
in batches with `compile_many` (one C compiler run per batch, optimize=False so the op itself is
exercised), runs each on its inputs, and classifies it:

* pass: every output has the expected dtype and shape, and its values match (floats within
  rtol/atol, NaN where NaN is expected; everything else exactly);
* fail: wrong numbers, a wrong shape or dtype, or any error other than a refusal;
* unsupported: the backend refused the case at compile time (UnsupportedError), a message
  naming the op and why. This is the only acceptable way not to run a case.

The op a case tests is the op of its single node (for `*_expanded` cases, of the case it
expands). tests/backend/test_onnx_node_tests.py checks the outcomes against a checked-in
expectation file; benchmarks/backend_node_tests.py prints the per-op table.
"""
from __future__ import annotations

import functools
import logging
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.backend.api import compile_many
from graphopt.backend.c import cdtypes
from graphopt.errors import GraphoptError, UnsupportedError
from graphopt.ir.types import DType

log = logging.getLogger(__name__)

RTOL = ATOL = 1e-4  # fp32 tolerance against the expected outputs (the onnx files use 1e-3/1e-7)
STATUSES = ("pass", "fail", "unsupported")


@dataclass(frozen=True)
class NodeCase:
    """One node test: `op` is the op under test ("domain::Op" outside the default domain)."""

    name: str
    op: str
    model: onnx.ModelProto
    inputs: tuple
    outputs: tuple

    def unsupported_dtypes(self) -> set[str]:
        """Element types of the case's inputs/outputs that the C backend does not handle."""
        found = set()
        for value in (*self.model.graph.input, *self.model.graph.output):
            elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
            if elem and not cdtypes.is_supported(DType(elem)):
                found.add(DType(elem).name)
        return found


@dataclass(frozen=True)
class Outcome:
    case: str
    op: str
    target: str
    status: str  # one of STATUSES
    detail: str = ""  # why it failed or was refused
    folded: bool = False  # passed with every output computed at compile time (no C ran)


@functools.lru_cache(maxsize=1)
def node_cases() -> tuple[NodeCase, ...]:
    """Every node test case shipped with the installed onnx package, in name order."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        collected = collect_testcases(None)
    ops = {c.name: _op_name(c.model.graph.node[0]) for c in collected
           if "_expanded" not in c.name and len(c.model.graph.node) == 1}
    cases = []
    for c in sorted(collected, key=lambda c: c.name):
        base = re.sub(r"_expanded(_ver\d+)?$", "", c.name)
        op = ops.get(base) or ops.get(c.name) or _op_name(c.model.graph.node[0])
        inputs, outputs = c.data_sets[0] if c.data_sets else ((), ())
        cases.append(NodeCase(c.name, op, c.model, tuple(map(_as_array, inputs)),
                              tuple(map(_as_array, outputs))))
    return tuple(cases)


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _as_array(value: object) -> object:
    """Test data as numpy arrays (TensorProto and numpy scalars converted; others kept)."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    return value  # sequences, optionals: refused by the backend before they are read


def run_cases(cases: Sequence[NodeCase], target: str, cache_dir: "str | Path | None" = None,
              batch_size: int = 64, rtol: float = RTOL, atol: float = ATOL) -> list[Outcome]:
    """Compile and run `cases` for `target` in batches of `batch_size`; one Outcome per case."""
    outcomes = []
    for start in range(0, len(cases), batch_size):
        outcomes += _run_batch(cases[start:start + batch_size], target, cache_dir, rtol, atol)
    return outcomes


def _run_batch(cases: Sequence[NodeCase], target: str, cache_dir: "str | Path | None",
               rtol: float, atol: float) -> list[Outcome]:
    try:
        compiled = _compile(cases, target, cache_dir)
    except Exception:  # an emitter bug raising a Python error: find the case at fault
        if len(cases) == 1:
            raise
        log.warning("a batch of %d node tests raised; compiling them one by one", len(cases))
        return [o for case in cases for o in _run_batch([case], target, cache_dir, rtol, atol)]
    return [_outcome(case, result, target, rtol, atol) for case, result in zip(cases, compiled)]


def _compile(cases: Sequence[NodeCase], target: str,
             cache_dir: "str | Path | None") -> list[object]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return list(compile_many([c.model for c in cases], [list(c.inputs) for c in cases],
                                     optimize=False, target=target, cache_dir=cache_dir))
        except Exception as err:
            if len(cases) == 1:  # a Python error is this case's failure
                return [err]
            raise


def _outcome(case: NodeCase, compiled: object, target: str, rtol: float,
             atol: float) -> Outcome:
    def result(status: str, detail: str = "", folded: bool = False) -> Outcome:
        return Outcome(case.name, case.op, target, status, detail, folded)

    if isinstance(compiled, UnsupportedError):
        return result("unsupported", str(compiled))
    if isinstance(compiled, Exception):
        kind = "" if isinstance(compiled, GraphoptError) else f"{type(compiled).__name__}: "
        return result("fail", f"compile: {kind}{compiled}")
    try:
        with np.errstate(all="ignore"):
            got = compiled.run(list(case.inputs))
    except Exception as err:  # noqa: BLE001 - any run-time error is this case's failure
        return result("fail", f"run: {type(err).__name__}: {err}")
    problems = [p for p in (compare(g, w, rtol, atol) for g, w in zip(got, case.outputs)) if p]
    if len(got) != len(case.outputs):
        problems.append(f"{len(got)} outputs, expected {len(case.outputs)}")
    if problems:
        return result("fail", "; ".join(problems))
    return result("pass", folded=not any(program.steps for program in compiled.programs()))


def compare(got: np.ndarray, want: object, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """Why `got` does not match the expected output `want`, or None when it does."""
    want = np.asarray(want)
    if got.dtype != want.dtype:
        return f"dtype {got.dtype}, expected {want.dtype}"
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if want.dtype.kind in "fc":
        with np.errstate(all="ignore"):
            close = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        if close.all():
            return None
        bad = np.argwhere(~close)
        at = tuple(int(i) for i in bad[0])
        return (f"{len(bad)} of {want.size} values differ beyond rtol={rtol} atol={atol}; "
                f"first at {at}: {got[at]!r} vs {want[at]!r}")
    if np.array_equal(got, want):
        return None
    return f"{int((got != want).sum())} of {want.size} values differ"


def table(outcomes: Iterable[Outcome]) -> dict[str, Counter]:
    """op -> Counter of statuses (plus "folded": passes where no C ran, see Outcome)."""
    rows: dict[str, Counter] = {}
    for o in outcomes:
        row = rows.setdefault(o.op, Counter())
        row[o.status] += 1
        row["folded"] += o.folded
    return dict(sorted(rows.items()))


def model_op_types(paths: Iterable["str | Path"]) -> set[str]:
    """Op types used by the models at `paths` (default domain unqualified, Constant dropped:
    the importer turns Constant nodes into initializers)."""
    found = set()
    for path in paths:
        model = onnx.load(str(path), load_external_data=False)
        found |= {_op_name(n) for n in model.graph.node}
    return found - {"Constant"}
