"""The ONNX backend node tests on graphopt's C backend: passed / failed / unsupported per op.

Compiles every node test case of the installed onnx package (graphopt.backend.conformance) for
the native and the portable target, runs it on its inputs and compares with its expected
outputs (fp32 rtol/atol 1e-4). Prints one row per op under test; `*` marks the ops the sample
and light models use. `folded` counts passes where no C ran (every output was computed at
compile time from constants, e.g. Shape, or a ConstantOfShape of a value input).

    python benchmarks/backend_node_tests.py                       # both targets, every op
    python benchmarks/backend_node_tests.py --ops Conv Resize --details
    python benchmarks/backend_node_tests.py --write-expectations  # refresh the test's file

--write-expectations rewrites tests/backend/node_test_expectations.json from this run; it
refuses when a case fails or when the two targets disagree.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import onnx

from graphopt.backend import conformance
from graphopt.testing import light_models_dir, sample_models_dir

ROOT = Path(__file__).resolve().parents[1]
EXPECTATIONS = ROOT / "tests" / "backend" / "node_test_expectations.json"
TARGETS = ("native", "portable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--ops", nargs="+", help="only these ops under test")
    parser.add_argument("--details", action="store_true", help="print every failure and refusal")
    parser.add_argument("--cache-dir", help="build cache (default: a fresh temporary directory)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--write-expectations", action="store_true")
    args = parser.parse_args(argv)

    cases = [c for c in conformance.node_cases() if not args.ops or c.op in args.ops]
    model_ops = _model_ops()
    outcomes: dict[str, list[conformance.Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="graphopt-node-tests-") as fresh:
        for target in args.targets:
            started = time.perf_counter()
            outcomes[target] = conformance.run_cases(cases, target, args.cache_dir or fresh,
                                                     args.batch_size)
            print(f"{target}: {len(cases)} cases in {time.perf_counter() - started:.1f}s",
                  file=sys.stderr)
    print(render(outcomes, model_ops))
    if args.details:
        print(details(outcomes))
    if args.write_expectations:
        return write_expectations(outcomes, model_ops, len(cases))
    return 1 if any(o.status == "fail" for rows in outcomes.values() for o in rows) else 0


def _model_ops() -> set[str]:
    paths = sorted(light_models_dir().glob("*.onnx")) + sorted(sample_models_dir().glob("*.onnx"))
    return conformance.model_op_types(paths)


def render(outcomes: dict[str, list[conformance.Outcome]], model_ops: set[str]) -> str:
    """The per-op table (pass/fail/unsupported per target) and totals, as markdown."""
    tables = {t: conformance.table(rows) for t, rows in outcomes.items()}
    ops = sorted({op for table in tables.values() for op in table})
    header = "| op | cases | " + " | ".join(f"{t} pass/fail/unsup" for t in tables) + " | folded |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for op in ops:
        cells = []
        for table in tables.values():
            row = table.get(op, Counter())
            cells.append(f"{row['pass']}/{row['fail']}/{row['unsupported']}")
        first = next(iter(tables.values())).get(op, Counter())
        total = first["pass"] + first["fail"] + first["unsupported"]
        mark = " *" if op in model_ops else ""
        lines.append(f"| {op}{mark} | {total} | {' | '.join(cells)} | {first['folded']} |")
    lines.append("")
    for target, rows in outcomes.items():
        counts = Counter(o.status for o in rows)
        model_rows = [o for o in rows if o.op in model_ops]
        model_counts = Counter(o.status for o in model_rows)
        lines.append(f"{target}: {len(rows)} cases: {counts['pass']} pass, {counts['fail']} fail, "
                     f"{counts['unsupported']} unsupported ({sum(o.folded for o in rows)} passes "
                     f"folded at compile time); ops used by the models: {len(model_rows)} cases, "
                     f"{model_counts['pass']} pass, {model_counts['fail']} fail, "
                     f"{model_counts['unsupported']} unsupported")
    return "\n".join(lines)


def details(outcomes: dict[str, list[conformance.Outcome]]) -> str:
    lines = []
    for target, rows in outcomes.items():
        for o in rows:
            if o.status != "pass":
                lines.append(f"{target} {o.status} {o.case} ({o.op}): "
                             f"{' '.join(o.detail.split())[:300]}")
    return "\n".join(lines)


def write_expectations(outcomes: dict[str, list[conformance.Outcome]], model_ops: set[str],
                       count: int) -> int:
    """Rewrite the test's expectation file from a complete, failure-free, consistent run."""
    if count != len(conformance.node_cases()) or set(outcomes) != set(TARGETS):
        print("--write-expectations needs every case (no --ops) and both targets",
              file=sys.stderr)
        return 2
    statuses: dict[str, set[str]] = {}
    for rows in outcomes.values():
        for o in rows:
            statuses.setdefault(o.case, set()).add(o.status)
    bad = sorted(name for name, found in statuses.items() if found != {"pass"}
                 and found != {"unsupported"})
    if bad:
        print(f"not written: {len(bad)} case(s) fail or differ between targets: "
              f"{', '.join(bad[:10])}", file=sys.stderr)
        return 1
    previous = json.loads(EXPECTATIONS.read_text()) if EXPECTATIONS.is_file() else {}
    data = {
        "onnx_version": onnx.__version__,
        "model_ops": sorted(model_ops),
        "model_op_exceptions": previous.get("model_op_exceptions", {}),
        "cases": {name: found.pop() for name, found in sorted(statuses.items())},
    }
    EXPECTATIONS.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {EXPECTATIONS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
