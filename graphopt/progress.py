"""Progress of long jobs (`--bisect` checks, `graphopt bench` timings, calibration).

The library only logs, on the `graphopt.progress` logger at INFO; the CLI calls
`show_progress()` so those lines reach stderr while other INFO logs stay hidden. A step is logged
when the job has been running for `after_seconds` or the step itself is expected to take that
long, so quick runs stay silent and a long one says what it is doing. `track(items, ...)` wraps a loop:
a bar on a terminal (tqdm when installed, else a counter redrawn in place), these lines elsewhere.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

log = logging.getLogger("graphopt.progress")

T = TypeVar("T")


class Progress:
    """Steps of one job: `step(label)` when a step starts, `done()` at the end."""

    def __init__(self, job: str, total: int | None = None, after_seconds: float = 3.0):
        self.job, self.total, self.after_seconds = job, total, after_seconds
        self.start = time.perf_counter()
        self.count = 0
        self.shown = False

    def step(self, label: str, expected_seconds: float = 0.0) -> None:
        """Count a step starting; log it when the job has run, or the step is expected to run,
        long enough to be worth a line."""
        self.count += 1
        elapsed = time.perf_counter() - self.start
        if max(elapsed, expected_seconds) < self.after_seconds:
            return
        self.shown = True
        of = f"/{self.total}" if self.total else ""
        log.info("%s %d%s: %s (%.0f s so far)", self.job, self.count, of, label, elapsed)

    def done(self) -> None:
        """Log the end of the job when any step was shown."""
        if self.shown:
            log.info("%s: %d steps in %.1f s", self.job, self.count,
                     time.perf_counter() - self.start)


def show_progress(enabled: bool = True) -> None:
    """Let progress lines through to the handlers the CLI installed (stderr), or hold them back."""
    log.setLevel(logging.INFO if enabled else logging.WARNING)


def track(items: Iterable[T], total: int, label: str, enabled: bool) -> Iterator[T]:
    """Yield `items`, reporting `label  n/total` on stderr when `enabled`."""
    if not enabled:
        yield from items
    elif not sys.stderr.isatty():
        yield from _lines(items, total, label)
    else:
        try:
            from tqdm import tqdm
        except ImportError:
            yield from _counter(items, total, label)
        else:
            yield from tqdm(items, total=total, desc=label, file=sys.stderr, leave=False)


def _lines(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    job = Progress(label, total)
    for item in items:
        job.step(f"item {job.count + 1}")
        yield item
    job.done()


def _counter(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    last = 0.0
    done = 0
    width = 30
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last > 0.2 or done == total:
            last = now
            filled = width * done // max(total, 1)
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{done}/{total}")
            sys.stderr.flush()
    sys.stderr.write("\r" + " " * (len(label) + width + 24) + "\r")
    sys.stderr.flush()
