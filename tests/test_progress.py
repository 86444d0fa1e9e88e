"""Progress lines of long jobs (graphopt.progress): silent when quick, one line per long step."""
import logging
import time

import pytest

from graphopt.backend.bench import median_ms
from graphopt.progress import Progress


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="graphopt.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "graphopt.progress"]


def test_quick_job_is_silent(lines):
    job = Progress("job", after_seconds=60)
    job.step("first")
    job.done()
    assert lines() == []


def test_long_job_logs_each_step_and_the_end(lines):
    job = Progress("bisect", total=3, after_seconds=0)
    job.step("checking after 'cse'")
    job.done()
    assert lines()[0].startswith("bisect 1/3: checking after 'cse'")
    assert lines()[1].startswith("bisect: 1 steps in ")


def test_a_step_expected_to_be_long_is_announced_at_once(lines):
    job = Progress("bench", after_seconds=10)
    job.step("short")
    job.step("long", expected_seconds=12)
    assert lines() == ["bench 2: long (0 s so far)"]


def test_benchmark_timing_announces_itself_from_the_warm_up(lines):
    job = Progress("bench", after_seconds=0.05)
    median_ms(lambda: time.sleep(0.02), repeat=4, warmup=1, progress=job, label="graphopt")
    assert len(lines()) == 1 and lines()[0].startswith("bench 1: graphopt: 4 runs of ~")
    median_ms(lambda: None, repeat=4, warmup=1, progress=Progress("bench", after_seconds=0.05),
              label="onnxruntime")
    assert len(lines()) == 1  # a fast engine in a fresh job needs no line
