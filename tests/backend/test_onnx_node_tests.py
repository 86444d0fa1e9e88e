"""The ONNX backend node tests (onnx.backend.test.case.node.collect_testcases) on the C backend.

Every case runs for the native (vectorized, -O3 -march=native) and the portable (scalar C99)
targets against its expected outputs (fp32 rtol/atol 1e-4, see graphopt.backend.conformance),
and is held to tests/backend/node_test_expectations.json:

* "pass" cases must pass: wrong numbers, a crash or a refusal fails the test (a regression);
* "unsupported" cases must be refused at compile time (shown as xfail with the refusal); if
  one passes, the test fails so the expectation gets updated (`python
  benchmarks/backend_node_tests.py --write-expectations`), and wrong numbers fail it as always;
* an op used by the sample and light models may be refused only for an element type the C
  backend does not handle (fp16, fp8, int4, strings...) or a listed exception with its reason.

Cases are compiled in chunks (one compiler run per chunk and target, via compile_many) when a
test of the chunk first needs them; results are kept for the other tests of the chunk.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from graphopt.backend import conformance
from graphopt.testing import light_models_dir, sample_models_dir

EXPECTATIONS_PATH = Path(__file__).with_name("node_test_expectations.json")
EXPECTATIONS = json.loads(EXPECTATIONS_PATH.read_text())
CASES = conformance.node_cases()
INDEX = {case.name: i for i, case in enumerate(CASES)}
CHUNK = 64  # cases per compiled module
TARGETS = ("native", "portable")
MODEL_OPS = frozenset(EXPECTATIONS["model_ops"])
_RESULTS: dict[tuple[str, int], dict[str, conformance.Outcome]] = {}


def _outcome(target: str, case: conformance.NodeCase) -> conformance.Outcome:
    chunk = INDEX[case.name] // CHUNK
    if (target, chunk) not in _RESULTS:
        cases = CASES[chunk * CHUNK:(chunk + 1) * CHUNK]
        _RESULTS[target, chunk] = {o.case: o for o in conformance.run_cases(cases, target,
                                                                          batch_size=CHUNK)}
    return _RESULTS[target, chunk][case.name]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("target", TARGETS)
def test_node_case(target: str, case: conformance.NodeCase) -> None:
    outcome = _outcome(target, case)
    expected = EXPECTATIONS["cases"].get(case.name)
    if outcome.status == "fail":
        pytest.fail(f"{case.name} ({case.op}, {target}): {outcome.detail}")
    if outcome.status == "pass":
        if expected == "unsupported":
            pytest.fail(f"{case.name} ({case.op}) now passes on {target}: set it to \"pass\" in "
                        f"{EXPECTATIONS_PATH.name} (benchmarks/backend_node_tests.py "
                        "--write-expectations)")
        return
    if expected == "pass":
        pytest.fail(f"regression: {case.name} ({case.op}) passed before and is now refused on "
                    f"{target}: {outcome.detail}")
    if case.op in MODEL_OPS:
        reason = _allowed_refusal(case)
        if reason is None:
            pytest.fail(f"{case.op} is used by the models, so every node test of it must pass "
                        f"for the element types the backend supports; {case.name} was refused: "
                        f"{outcome.detail}")
    pytest.xfail(outcome.detail)


def _allowed_refusal(case: conformance.NodeCase) -> str | None:
    """Why a node test of a model op may be refused, or None when it may not."""
    dtypes = case.unsupported_dtypes()
    if dtypes:
        return f"element type(s) {', '.join(sorted(dtypes))} not handled by the C backend"
    return EXPECTATIONS["model_op_exceptions"].get(case.name)


def test_expectations_cover_every_case() -> None:
    """The expectation file lists exactly the cases of the onnx version it was written for."""
    if EXPECTATIONS["onnx_version"] != onnx.__version__:
        pytest.skip(f"expectations were written with onnx {EXPECTATIONS['onnx_version']}, "
                    f"onnx {onnx.__version__} is installed")
    names = set(INDEX)
    listed = set(EXPECTATIONS["cases"])
    missing, stale = sorted(names - listed), sorted(listed - names)
    assert not missing and not stale, f"missing: {missing[:10]}, not collected: {stale[:10]}"
    assert set(EXPECTATIONS["cases"].values()) <= {"pass", "unsupported"}


def test_model_ops_are_the_ops_of_the_models() -> None:
    """model_ops in the expectation file is derived from the models (when they are present)."""
    paths = sorted(light_models_dir().glob("*.onnx"))
    shared = sorted(sample_models_dir().glob("*.onnx"))
    if not shared:
        pytest.skip(f"sample models missing in {sample_models_dir()}")
    assert MODEL_OPS == conformance.model_op_types(paths + shared)


def test_exceptions_name_model_op_cases() -> None:
    by_name = {c.name: c for c in CASES}
    for name, reason in EXPECTATIONS["model_op_exceptions"].items():
        assert name in by_name and by_name[name].op in MODEL_OPS and reason
