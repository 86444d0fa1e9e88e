"""Memory planning: planners never overlap live buffers, greedy beats linear, storage sharing."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import make_model
from graphopt.backend.planner import (Buffer, GreedyPlanner, LinearPlanner, MemoryPlan, draw_plan,
                                      find_overlaps)


def _random_buffers(rng: np.random.Generator, count: int) -> list[Buffer]:
    buffers = []
    for i in range(count):
        first = int(rng.integers(0, 30))
        buffers.append(Buffer(f"b{i}", int(rng.integers(1, 5000)), first,
                              first + int(rng.integers(0, 6))))
    return buffers


@pytest.mark.parametrize("seed", range(20))
def test_plans_never_overlap_and_greedy_is_smaller(seed):
    rng = np.random.default_rng(seed)
    buffers = _random_buffers(rng, int(rng.integers(1, 60)))
    greedy, linear = GreedyPlanner().plan(buffers), LinearPlanner().plan(buffers)
    assert find_overlaps(greedy) == [] and find_overlaps(linear) == []
    assert all(o % 64 == 0 for o in greedy.offsets)
    assert greedy.arena_size <= linear.arena_size == linear.total_size
    peak = max(sum(-(-b.size // 64) * 64 for b in buffers if b.first <= t <= b.last)
               for t in range(40))
    assert greedy.arena_size >= peak  # no plan can beat the peak of live bytes


def test_best_fit_reuses_the_tightest_gap():
    buffers = [Buffer("big", 1000, 0, 1), Buffer("small", 100, 0, 5), Buffer("late", 900, 2, 3),
               Buffer("tiny", 64, 4, 4)]
    plan = GreedyPlanner().plan(buffers)
    # big (1024 aligned) at 0, small above it; late reuses big's bytes once big is dead
    assert plan.offset("big") == 0 and plan.offset("small") == 1024 and plan.offset("late") == 0
    assert plan.offset("tiny") == 0 and plan.arena_size == 1152


def test_overlap_checker_finds_conflicts():
    buffers = (Buffer("a", 128, 0, 2), Buffer("b", 128, 1, 3), Buffer("c", 10, 5, 6))
    bad = MemoryPlan(buffers, (0, 64, 0), 192, 64)
    conflicts = find_overlaps(bad)
    assert [(x.name, y.name) for x, y in conflicts] == [("a", "b")]
    misaligned = MemoryPlan(buffers[:1], (8,), 192, 64)
    assert find_overlaps(misaligned) == [(buffers[0], buffers[0])]


def test_draw_plan():
    plan = GreedyPlanner().plan([Buffer("a", 128, 0, 1), Buffer("b", 64, 1, 2)])
    assert draw_plan(plan, width=6) == (
        "arena 192 bytes, 2 buffers, 1 column = 32 bytes\n"
        "   0 |AAAA..|\n"
        "   1 |AAAABB|\n"
        "   2 |....BB|")


def test_compiled_plan_shares_memory_and_aliases_views():
    from graphopt.backend import compile as compile_model

    nodes = [helper.make_node("MatMul", ["x", "w"], ["h1"]),
             helper.make_node("Reshape", ["h1", "shape"], ["h1r"]),
             helper.make_node("Sigmoid", ["h1r"], ["h2"]),
             helper.make_node("Reshape", ["h2", "back"], ["h2r"]),
             helper.make_node("MatMul", ["h2r", "w"], ["h3"]),
             helper.make_node("Tanh", ["h3"], ["h4"]),
             helper.make_node("MatMul", ["h4", "w"], ["y"])]
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    model = make_model(nodes, {"x": (TP.FLOAT, [32, 64])}, ["y"],
                       {"w": w, "shape": np.array([-1], np.int64),
                        "back": np.array([32, 64], np.int64)})
    compiled = compile_model(model, optimize=False, fuse_epilogues=False)
    executable = next(iter(compiled._executables.values()))
    plan = executable.code.plan
    assert find_overlaps(plan) == []
    report = compiled.report
    assert report.views == 2 and report.inplace == 2  # Reshapes are views; Sigmoid/Tanh in place
    scratch = [b for b in plan.buffers if b.name.startswith("scratch:")]
    assert len(scratch) == 3 and len(plan.buffers) == 5  # 2 activations + one GEMM scratch per MatMul
    # at most two activations are live at once, plus the running MatMul's packing scratch
    assert report.arena_bytes == 2 * 32 * 64 * 4 + max(-(-b.size // 64) * 64 for b in scratch)
    assert report.activation_bytes == 6 * 32 * 64 * 4 + sum(-(-b.size // 64) * 64 for b in scratch)
    linear = compile_model(model, optimize=False, fuse_epilogues=False, planner="linear")
    assert linear.report.arena_bytes > report.arena_bytes
