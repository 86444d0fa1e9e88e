"""Layout choice by cost (graphopt.layout.select): decisions follow the declared kernel costs and
the bytes conversions move; the solver is exact for two layouts and never worse than all-NCHW."""
import dataclasses
import itertools
import sys
from pathlib import Path

import pytest

from graphopt import onnx_io
from graphopt.layout.choice_report import format_choice
from graphopt.layout.kernels import NCHW, KernelDecl, KernelTable, Target, default_kernels
from graphopt.layout.select import build_problem, choose, choose_layouts, solve

sys.path.insert(0, str(Path(__file__).parent / "passes"))
from _fuse_testlib import build  # noqa: E402

BLOCKED = "NCHW8c"


def _graph(body: str, x: str, y: str, weights: str):
    """The IR of `body` with input x, output y and the weights (random) declared in `weights`."""
    names = [w.split()[-1] for w in weights.split(",")]
    return onnx_io.load(build(f"g (float{x} x, {weights}) => (float{y} y) {{ {body} }}",
                              weights=names))


def _table(flops_per_byte: float, decls=None) -> KernelTable:
    target = Target(vector_width=8, flops_per_byte=flops_per_byte)
    decls = decls or [KernelDecl("Conv", NCHW, 0.4), KernelDecl("Conv", BLOCKED, 0.8)] + [
        KernelDecl("elementwise", layout, 1.0, compute_bound=False)
        for layout in (NCHW, BLOCKED)]
    return KernelTable(decls, target)


def _labels_by_op(graph, choice):
    return {node.name: choice.labels[f"node:{node.name}"] for node in graph.nodes}


def _chain():
    return _graph("""a = Conv <pads=[1,1,1,1]> (x, w1)
                     r = Relu(a)
                     y = Conv <pads=[1,1,1,1]> (r, w2)""", "[1,16,32,32]", "[1,16,32,32]",
                  "float[16,16,3,3] w1, float[16,16,3,3] w2")


def test_blocked_chain_pays_for_its_two_boundary_conversions():
    graph = _chain()
    choice = choose_layouts(graph, _table(flops_per_byte=4))
    assert set(_labels_by_op(graph, choice).values()) == {BLOCKED}  # the Relu follows the Convs
    assert sorted((c.value, c.src, c.dst) for c in choice.conversions) == [
        ("x", NCHW, BLOCKED), ("y", BLOCKED, NCHW)]
    assert sum(c.bytes for c in choice.conversions) == 2 * 16 * 32 * 32 * 4
    assert choice.cost < choice.baseline
    # the report's unit: one chain, its two boundary conversions, a and r passed inside it
    [chain] = choice.chains
    assert chain.layout == BLOCKED and len(chain.convs) == 2 and chain.others == ("Relu",)
    assert {c.value for c in chain.inserted} == {"x", "y"} and chain.read_as_is == ()
    assert chain.inner_values == 2 and chain.inner_bytes == 2 * 16 * 32 * 32 * 4
    assert chain.net_saving == pytest.approx(choice.baseline - choice.cost)
    text = "\n".join(format_choice(choice))
    assert f"chain 1: {BLOCKED}, 2 conv(s) + Relu; kernels save" in text
    assert "2 value(s) pass inside" in text


def _small_conv():
    return _graph("y = Conv (x, w)", "[1,16,8,8]", "[1,16,8,8]", "float[16,16,1,1] w")


def test_blocked_layout_refused_when_conversions_cost_more_than_it_saves():
    graph = _small_conv()
    table = _table(flops_per_byte=16)
    # kernel: 2*16*16*64 FLOPs / 16 = 2 KiB-eq of work; NCHW at 0.4 costs 5 KiB-eq, blocked
    # at 0.8 2.5 KiB-eq: it saves 2.5 KiB-eq, but converting x and y moves 2 x 4 KiB.
    choice = choose_layouts(graph, table)
    assert set(_labels_by_op(graph, choice).values()) == {NCHW}
    assert choice.conversions == [] and choice.cost == choice.baseline
    decision = choice.decisions[0]
    assert decision.alternative == BLOCKED and decision.conversion_bytes == 8192
    lines = list(format_choice(choice))
    assert any("kept NCHW: NCHW8c would save 2.50 KiB-eq" in line and "8.00 KiB of conversions"
               in line for line in lines), lines


def test_a_fixed_cost_per_conversion_refuses_a_gain_larger_than_the_bytes():
    # the conv saves 10 KiB-eq blocked and its two conversions move 8 KiB (it goes blocked);
    # a backend's kernel call per conversion (1.5 KiB-eq each) makes them cost 11 KiB-eq
    graph = _small_conv()
    problem = build_problem(graph, _table(flops_per_byte=4))
    assert set(solve(problem).values()) == {NCHW, BLOCKED}
    problem.edges = [dataclasses.replace(e, fixed=1536.0) for e in problem.edges]
    choice = choose(problem)
    assert set(choice.labels.values()) == {NCHW} and choice.conversions == []
    [decision] = choice.decisions
    assert decision.alternative == BLOCKED and decision.conversion_bytes == 8192 + 2 * 1536


def test_same_conv_goes_blocked_when_compute_dominates():
    graph = _small_conv()
    choice = choose_layouts(graph, _table(flops_per_byte=1))  # 4x the work: saves 10 KiB-eq
    assert set(_labels_by_op(graph, choice).values()) == {BLOCKED}
    assert len(choice.conversions) == 2


def test_large_kernel_conv_refuses_blocked_while_its_neighbour_takes_it():
    graph = _graph("""a = Conv <pads=[1,1,1,1]> (x, w1)
                      y = Conv <pads=[3,3,3,3]> (a, w2)""", "[1,64,28,28]", "[1,64,28,28]",
                   "float[64,64,3,3] w1, float[64,64,7,7] w2")
    target = Target(vector_width=8, flops_per_byte=4)
    choice = choose_layouts(graph, KernelTable(default_kernels(target), target))
    labels = [choice.labels[f"node:{n.name}"] for n in graph.nodes]
    assert labels[0] == BLOCKED and labels[1] != BLOCKED
    large = choice.decisions[1].kernel_costs
    assert large[BLOCKED] > large[labels[1]]


def test_depthwise_conv_prefers_nhwc():
    graph = _graph("y = Conv <group=32, pads=[1,1,1,1]> (x, w)", "[1,32,56,56]", "[1,32,56,56]",
                   "float[32,1,3,3] w")
    target = Target(vector_width=8, flops_per_byte=0.05)
    choice = choose_layouts(graph, KernelTable(default_kernels(target), target))
    assert choice.decisions[0].layout in ("NHWC", BLOCKED)
    costs = choice.decisions[0].kernel_costs
    assert costs["NHWC"] < costs[NCHW]


def _residual():
    return _graph("""a = Conv <pads=[1,1,1,1]> (x, w1)
                     r = Relu(a)
                     b = Conv <pads=[1,1,1,1]> (r, w2)
                     s = Add(r, b)
                     y = Flatten(s)""", "[1,8,8,8]", "[1,512]",
                  "float[8,8,3,3] w1, float[8,8,3,3] w2")


@pytest.mark.parametrize("flops_per_byte", [0.25, 1, 2, 4, 8, 64])
def test_two_layout_choice_is_the_exact_optimum(flops_per_byte):
    graph = _residual()
    problem = build_problem(graph, _table(flops_per_byte))
    labels = solve(problem)
    free = [s for s, costs in problem.unary.items() if costs[BLOCKED] != float("inf")]
    fixed = {s: NCHW for s in problem.unary if s not in free}
    best = min(problem.energy({**fixed, **dict(zip(free, combo))})
               for combo in itertools.product((NCHW, BLOCKED), repeat=len(free)))
    assert problem.energy(labels) == pytest.approx(best)
    assert problem.energy(labels) <= problem.energy({s: NCHW for s in problem.unary})


def test_flatten_without_a_blocked_kernel_stays_nchw():
    graph = _residual()
    choice = choose_layouts(graph, _table(flops_per_byte=0.25))
    flatten = next(n for n in graph.nodes if n.op_type == "Flatten")
    assert choice.labels[f"node:{flatten.name}"] == NCHW
    assert any(c.dst == NCHW and c.value == "s" for c in choice.conversions)
