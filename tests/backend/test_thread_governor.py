"""The thread-count governor: stays on the requested count on a quiet machine, drops to one
thread when contention makes the requested count slower, comes back when it ends, and backs
off its retries while one thread keeps winning. Simulated latencies on a fake clock; the last
test runs a compiled model under it and checks its outputs against onnxruntime."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import graphopt.backend as gb
from graphopt.backend.thread_governor import GovernorSettings, ThreadGovernor


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(governor: ThreadGovernor, clock: FakeClock, latency: Callable[[int, float], float],
          runs: int = 10**7, until: float = float("inf")) -> list[int]:
    """Simulated calls, `runs` of them or until the clock reaches `until`; latency(threads,
    now) is each call's time. Returns the thread count of every call."""
    counts = []
    while len(counts) < runs and clock.now < until:
        count = governor.threads()
        seconds = latency(count, clock.now)
        clock.now += seconds
        governor.record(seconds)
        counts.append(count)
    return counts


def make(requested: int | None = 2, adaptive: bool = True) -> tuple[ThreadGovernor, FakeClock]:
    clock = FakeClock()
    return ThreadGovernor(lambda: requested, adaptive, GovernorSettings(), clock), clock


def test_quiet_machine_never_leaves_the_requested_count() -> None:
    governor, clock = make()
    rng = np.random.default_rng(0)
    counts = drive(governor, clock, lambda n, t: (20e-6 if n == 2 else 35e-6)
                   * (1 + 0.2 * rng.random()), 5000)
    settings = GovernorSettings()  # one thread is tried once, after the first block
    ones = counts.count(1)
    assert settings.probe_runs <= ones <= settings.probe_seconds / 35e-6 + 1
    assert counts[counts.index(1):][:ones] == [1] * ones, "one probe, then never again"
    assert governor.runs[1] == ones and governor.runs[2] > 5000 - ones - 8  # whole blocks


def test_a_core_slow_to_wake_does_not_decide_the_probe() -> None:
    """After sitting idle, the second core runs slow for a millisecond or so: a probe of two
    threads compares only its later runs, so a wrong early move to one thread is undone."""
    governor, clock = make()
    woke = [0.0]  # when two threads last started after one

    def latency(threads: int, now: float) -> float:
        if threads == 1:
            woke[0] = -1.0
            return 41e-6
        if woke[0] < 0:
            woke[0] = now
        return 40e-6 if now - woke[0] < 1.2e-3 else 21e-6

    counts = drive(governor, clock, latency, until=3.0)
    assert counts[-2000:].count(2) > 0.95 * 2000


def test_a_program_that_starts_under_load_moves_to_one_thread() -> None:
    governor, clock = make()
    counts = drive(governor, clock, lambda n, t: 1.1e-3 if n == 2 else 42e-6, 1000)
    assert counts[-900:] == [1] * 900


def test_contention_switches_to_one_thread_and_back_when_it_ends() -> None:
    governor, clock = make()
    busy = (1.0, 3.0)  # seconds of the fake clock during which another process holds a core

    def latency(threads: int, now: float) -> float:
        contended = busy[0] <= now < busy[1]
        if threads == 1:
            return 45e-6 if contended else 35e-6
        return 1.1e-3 if contended else 21e-6

    before = drive(governor, clock, latency, until=busy[0])
    during = drive(governor, clock, latency, until=busy[1])
    after = drive(governor, clock, latency, until=busy[1] + GovernorSettings().max_recheck_seconds)
    assert 0 < before.count(1) < 0.01 * len(before)  # the one early comparison
    assert during.count(1) > 0.95 * len(during), "contention must move the runs to 1 thread"
    assert after[-1000:] == [2] * 1000, "the requested count must come back once it ends"


def test_retries_cost_a_bounded_share_while_one_thread_keeps_winning() -> None:
    """While N stays slow, it is retried at least every max_recheck_seconds, and the retries
    (each at least probe_seconds of slow runs) cost at most ~1/probe_cost of the time."""
    settings = GovernorSettings()
    for slow in (1e-3, 20e-3):  # a small model's starved run, a large one's
        governor, clock = make()
        tries: list[float] = []
        spent = [0.0]

        def latency(threads: int, now: float) -> float:
            seconds = 40e-6 if threads == 1 else (20e-6 if now < 0.01 else slow)
            if threads == 2 and governor.current == 1:
                tries.append(now)
                spent[0] += seconds
            return seconds

        drive(governor, clock, latency, until=60.0)
        starts = [t for i, t in enumerate(tries) if i == 0 or t - tries[i - 1] > 0.1]
        gaps = np.diff(starts)
        assert len(gaps) >= 10 and gaps.max() <= settings.max_recheck_seconds + 0.2, gaps
        assert spent[0] / 60.0 < 1.5 / settings.probe_cost


def test_a_mild_persistent_slowdown_is_not_probed_every_block() -> None:
    governor, clock = make()
    slow = lambda n, t: 20e-6 if t < 0.01 else (30e-6 if n == 2 else 40e-6)  # noqa: E731
    counts = drive(governor, clock, slow, 200000)
    assert counts.count(1) < 0.01 * len(counts)
    assert counts[-1] == 2


def test_one_thread_not_adaptive_or_default_count_is_left_alone() -> None:
    for requested, adaptive in ((1, True), (None, True), (2, False)):
        governor, clock = make(requested, adaptive)
        counts = drive(governor, clock, lambda n, t: 1e-3 if t > 0.01 else 1e-5, 2000)
        assert set(counts) == {requested}
        assert not governor.runs


def test_a_new_requested_count_starts_over() -> None:
    requested = [2]
    clock = FakeClock()
    governor = ThreadGovernor(lambda: requested[0], True, GovernorSettings(), clock)
    drive(governor, clock, lambda n, t: 40e-6 if n == 1 else (20e-6 if t < 0.01 else 1e-3),
          3000)
    assert governor.current == 1
    requested[0] = 3
    assert governor.threads() == 3 and governor.current == 3


def test_compiled_model_under_the_governor_matches_onnxruntime() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 256])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((4, 256)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    compiled = gb.compile(model, threads=2)
    out = np.empty_like(expected)
    for i in range(100):
        result = compiled.run({"x": x}, outputs=[out] if i % 2 else None)[0]
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    # runs are counted by whole blocks and finished probes (a probe lasts 3 ms at least)
    assert GovernorSettings().block <= sum(compiled.thread_runs().values()) <= 100
    fixed = gb.compile(model, threads=2, adaptive_threads=False)
    fixed.run({"x": x})
    assert fixed.thread_runs() == {}


def _threaded_model() -> tuple[object, dict[str, np.ndarray]]:
    """Conv (Winograd-sized), depthwise, pointwise and a GEMM, each large enough to run on two
    threads."""
    rng = np.random.default_rng(2)

    def const(name: str, *shape: int) -> object:
        return numpy_helper.from_array((0.1 * rng.standard_normal(shape)).astype(np.float32),
                                       name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=64),
             helper.make_node("Conv", ["c2", "w3"], ["c3"]),
             helper.make_node("Flatten", ["c3"], ["f"]),
             helper.make_node("Gemm", ["f", "w4"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "threaded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        [const("w1", 64, 32, 3, 3), const("b1", 64), const("w2", 64, 1, 3, 3),
         const("w3", 32, 64, 1, 1), const("w4", 256, 32 * 28 * 28)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {"x": rng.standard_normal((1, 32, 28, 28)).astype(np.float32)}


def test_outputs_do_not_depend_on_the_thread_count() -> None:
    """What lets the governor switch counts between runs: one program gives the same bits on
    one thread and on two (kernels split work, never a reduction), and matches onnxruntime."""
    model, feeds = _threaded_model()
    expected = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    compiled = gb.compile(model, threads=2, adaptive_threads=False)
    executable, arrays = compiled.executable(feeds)
    executable.set_threads(1)
    one = executable.run(arrays)[0]
    executable.set_threads(2)
    two = executable.run(arrays)[0]
    assert np.array_equal(one, two)
    np.testing.assert_allclose(two, expected, rtol=1e-4, atol=1e-4)
