"""Run-time choice between the requested thread count and one thread, from measured latency.

graphopt's kernels split each parallel loop between the threads of an OpenMP team, and every
parallel region ends at a join where the caller waits for each thread of the team. When another
process keeps a core busy, a worker may wait a whole scheduler slice (about a millisecond on the
2-core guests), and every region of a run can pay that: with one spinning process beside it,
mlp at 2 threads ran 26x slower than at 1 (benchmarks/governor_ab.py --busy 1, Zen 4 guest).

So a CompiledModel asked for N > 1 threads runs each program under a governor: it times the C
call of every run, and when the last runs at N threads are much slower than the best it has
seen at N (contention), it tries a few runs at 1 thread and keeps whichever count was faster.
After the first runs it tries one thread once (the program may start under load, when the best
seen at N is already slow). On 1 thread it tries N again now and then, waiting at least 20
times what the last try took (so trying costs at most ~5%), and goes back as soon as N is
faster: on these guests a core can be starved for a while and then come back. Outputs do not
depend on the thread count (kernels split work, never a reduction), so switching changes
latency only. `CompileOptions.adaptive_threads=False` keeps N fixed.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class GovernorSettings:
    block: int = 8  # runs whose median stands for a thread count's current latency
    probe_runs: int = 5  # runs of the other count when trying it, at least
    # and at least this long: a core that sat idle starts slow (clock ramp, wake-up) before it
    # reaches its speed; only the probe's later half is compared
    probe_seconds: float = 0.003
    slowdown: float = 1.5  # block median over the best block median that means contention
    margin: float = 0.9  # the other count must be at least this much faster to switch to it
    # wait before trying again: at least this, and at least `probe_cost` times what the
    # failed probe took (so probing costs at most ~5% of the time), at most max_recheck
    recheck_seconds: float = 0.25
    probe_cost: float = 20.0
    max_recheck_seconds: float = 4.0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


class ThreadGovernor:
    """Thread count for each run of one program: `threads()` before the run, `record(seconds)`
    with the C call's time after it. `requested` gives the count asked for (read every run:
    CompiledModel.set_threads may change it); None or <= 1 runs that count unchanged."""

    def __init__(self, requested: Callable[[], int | None], adaptive: bool = True,
                 settings: GovernorSettings = GovernorSettings(),
                 clock: Callable[[], float] = time.monotonic):
        self._requested_fn = requested
        self._adaptive = adaptive
        self._settings = settings
        self._clock = clock
        self.runs: Counter[int] = Counter()  # governed runs per thread count (whole blocks)
        self._count: int | None = None  # the count threads() gave for the run being timed
        self._reset(requested())

    def _reset(self, requested: int | None) -> None:
        self.requested = requested
        self.current = requested
        self._governed = self._adaptive and requested is not None and requested > 1
        self._block: list[float] = []
        self._best = math.inf  # best block median at the requested count
        self._last_median = math.inf  # current count's latest block median
        self._probing = False  # a probe of the other count is running
        self._probe: list[float] = []
        self._probe_seconds = 0.0
        self._wait = self._settings.recheck_seconds
        self._next_try = 0.0
        self._compared = False  # one thread tried at least once (a run may start under load)

    def threads(self) -> int | None:
        requested = self._requested_fn()
        if requested != self.requested:
            self._reset(requested)
        self._count = (1 if self.current != 1 else self.requested) if self._probing \
            else self.current
        return self._count

    def record(self, seconds: float) -> None:
        if not self._governed:
            return
        if self._probing:
            self._probe.append(seconds)
            self._probe_seconds += seconds
            if len(self._probe) >= self._settings.probe_runs and \
                    self._probe_seconds >= self._settings.probe_seconds:
                self._probing = False
                self.runs[self._count or 0] += len(self._probe)
                self._decide()
            return
        block = self._block
        block.append(seconds)
        if len(block) < self._settings.block:
            return
        self.runs[self.current or 0] += len(block)
        self._last_median = _median(block)
        block.clear()
        if self.current == self.requested:
            self._best = min(self._best, self._last_median)
            calm = self._compared and self._last_median <= self._settings.slowdown * self._best
            if calm:
                self._wait = self._settings.recheck_seconds
        else:
            calm = False  # on one thread: the requested count is worth retrying now and then
        if not calm and self._clock() >= self._next_try:
            self._probing, self._probe, self._probe_seconds = True, [], 0.0

    def _decide(self) -> None:
        """After a probe: switch if the other count was clearly faster, and schedule the next
        try (sooner after a switch, later after each probe that changed nothing)."""
        tried = _median(self._probe[len(self._probe) // 2:])  # once the cores are up to speed
        other = 1 if self.current != 1 else self.requested
        self._compared = True
        if tried < self._settings.margin * self._last_median:
            self.current = other
            self._wait = self._settings.recheck_seconds
            if other == self.requested:
                self._best = min(self._best, tried)
        else:
            self._wait = min(max(self._settings.recheck_seconds,
                                 self._settings.probe_cost * self._probe_seconds),
                             self._settings.max_recheck_seconds)
        self._next_try = self._clock() + self._wait
        self._block.clear()
