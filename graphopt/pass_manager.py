"""PassManager: runs a pipeline (passes and fixed-point groups) under a set of instruments.

Instruments hook `should_run`, `before_pass`, `after_pass` and `checkpoint` (after each top-level
step and each round of a fixed-point group), so timing, IR verification,
numerical checks against onnxruntime, IR dumps and bisection are separate objects, not flags.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

from graphopt.errors import GraphoptError, PassError
from graphopt.ir.graph import Graph
from graphopt.pass_api import PassCall, PassResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FixedPoint:
    """Repeat `steps` until none changes the graph, at most `max_iterations` times."""

    steps: tuple["Step", ...]
    max_iterations: int = 8

    def __str__(self) -> str:
        return "fixed-point(" + ",".join(map(str, self.steps)) + ")"


Step = Union[PassCall, FixedPoint]


@dataclass
class PassRecord:
    """One execution of one pass: what the summary table shows."""

    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool
    stats: dict[str, int] = field(default_factory=dict)


class Instrument:
    """Base class: override any hook. `should_run` returning False skips the pass."""

    def should_run(self, call: PassCall, graph: Graph) -> bool:
        return True

    def before_pass(self, call: PassCall, graph: Graph) -> None:
        pass

    def after_pass(self, call: PassCall, graph: Graph, record: PassRecord) -> None:
        pass

    def checkpoint(self, graph: Graph) -> None:
        """Called after each top-level step and after each round of a fixed-point group."""


class VerifyIR(Instrument):
    """Run graph.verify() once the graph changed, blaming the pass that broke an invariant (a
    pass reporting no change must not have changed anything: the fixed-point groups rely on
    that too).

    each_pass=True verifies after every changing pass. By default the check runs at each
    checkpoint instead: after a top-level pass (the same blame) and once per fixed-point round,
    whose changing passes are then all named. A round changes the graph in several passes and
    a full check costs as much as a cheap pass, so this keeps the guarantee (no invalid graph
    leaves a round, or the pipeline) at a fraction of the cost.
    """

    def __init__(self, each_pass: bool = False):
        self.each_pass = each_pass
        self.pending: list[str] = []  # changing passes since the last check

    def after_pass(self, call: PassCall, graph: Graph, record: PassRecord) -> None:
        if record.changed:
            self.pending.append(call.name)
            if self.each_pass:
                self.checkpoint(graph)

    def checkpoint(self, graph: Graph) -> None:
        if not self.pending:
            return
        names, self.pending = list(dict.fromkeys(self.pending)), []
        try:
            graph.verify()
        except GraphoptError as err:
            if len(names) == 1:
                raise PassError(f"pass '{names[0]}' left an invalid graph: {err}") from None
            listed = ", ".join(f"'{n}'" for n in names)
            raise PassError(f"one of the passes {listed} (one fixed-point round) left an invalid "
                            f"graph: {err}\n(--dump-ir checks after every pass and names it)"
                            ) from None


class DumpIR(Instrument):
    """Write the IR text after each pass that changed it, as NNN_passname.txt in `folder`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def after_pass(self, call: PassCall, graph: Graph, record: PassRecord) -> None:
        if record.changed:
            self.count += 1
            (self.folder / f"{self.count:03d}_{call.name}.txt").write_text(str(graph) + "\n")


class PassManager:
    """Runs steps in order. Errors inside a pass are re-raised naming it and the passes before it."""

    def __init__(self, steps: Sequence[Step], instruments: Iterable[Instrument] = ()):
        self.steps = tuple(steps)
        self.instruments = list(instruments)
        self.records: list[PassRecord] = []

    def run(self, graph: Graph) -> bool:
        self.check_requirements()
        changed = False
        for step in self.steps:
            changed |= self._run_step(step, graph)
            self._checkpoint(graph)
        return changed

    def _checkpoint(self, graph: Graph) -> None:
        for inst in self.instruments:
            inst.checkpoint(graph)

    def check_requirements(self) -> None:
        seen: set[str] = set()
        for call in pass_calls(self.steps):
            missing = [r for r in call.info.requires if r not in seen]
            if missing:
                raise PassError(f"pass '{call.name}' requires {', '.join(missing)} to run before it")
            seen.add(call.name)

    def _run_step(self, step: Step, graph: Graph) -> bool:
        if isinstance(step, FixedPoint):
            return self._run_fixed_point(step, graph)
        return self._run_pass(step, graph)

    def _run_fixed_point(self, group: FixedPoint, graph: Graph) -> bool:
        """Rounds over the steps until every step in a row has left the graph unchanged.

        The group stops as soon as that holds, which can be inside a round: the steps after
        the last change already ran on the final graph, so running them again (passes are
        deterministic, and one reporting no change changed nothing) would change nothing."""
        any_change = False
        unchanged = 0  # consecutive steps that changed nothing
        for _ in range(group.max_iterations):
            for step in group.steps:
                if unchanged == len(group.steps):
                    break
                if self._run_step(step, graph):
                    any_change, unchanged = True, 0
                else:
                    unchanged += 1
            self._checkpoint(graph)
            if unchanged == len(group.steps):
                return any_change
        log.info("%s stopped after %d iterations without converging", group, group.max_iterations)
        return any_change

    def _run_pass(self, call: PassCall, graph: Graph) -> bool:
        if not all(inst.should_run(call, graph) for inst in self.instruments):
            return False
        for inst in self.instruments:
            inst.before_pass(call, graph)
        before = len(graph.nodes)
        start = time.perf_counter()
        try:
            result: PassResult = call.info.run(graph, **dict(call.options))
        except GraphoptError as err:
            raise PassError(f"pass '{call.name}' failed: {err}{self._history()}") from err
        except Exception as err:
            raise PassError(f"pass '{call.name}' ({call.info.origin}) raised "
                            f"{type(err).__name__}: {err}{self._history()}") from err
        record = PassRecord(call.name, time.perf_counter() - start, before, len(graph.nodes),
                            result.changed, dict(result.stats))
        self.records.append(record)
        for inst in self.instruments:
            inst.after_pass(call, graph, record)
        return result.changed

    def _history(self) -> str:
        if not self.records:
            return " (it was the first pass)"
        ran = [r.name for r in self.records[-6:]]
        return f" (after {', '.join(ran)})"

    def summary(self) -> list[dict]:
        """Per pass name: runs, total seconds, node delta, rewrites; in first-run order."""
        table: dict[str, dict] = {}
        for r in self.records:
            row = table.setdefault(r.name, {"pass": r.name, "runs": 0, "seconds": 0.0,
                                            "node_delta": 0, "changed": 0})
            row["runs"] += 1
            row["seconds"] += r.seconds
            row["node_delta"] += r.nodes_after - r.nodes_before
            row["changed"] += int(r.changed)
        return list(table.values())


def pass_calls(steps: Iterable[Step]) -> Iterable[PassCall]:
    """Every pass call in `steps`, fixed-point groups opened, in order."""
    for step in steps:
        if isinstance(step, FixedPoint):
            yield from pass_calls(step.steps)
        else:
            yield step
