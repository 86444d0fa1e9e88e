"""Evaluator facts on tiny layers, checked by hand arithmetic."""
from __future__ import annotations

import pytest

from graphopt.npu import Layer, Mapper, evaluate
from graphopt.npu.dataflows import get_dataflow, loop_order
from graphopt.npu.evaluator import tile_size
from graphopt.npu.mapping import Mapping
from graphopt.npu.workload import DIMS

from npu_helpers import make_arch


def gemm(rows: int, cols: int, k: int) -> Layer:
    return Layer("g", "MatMul", "mac", sizes=(1, rows, cols, k, 1, 1, 1, 1))


def factors(**levels: dict[str, int]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(levels.get(level, {}).get(d, 1) for d in DIMS)
                 for level in ("rf", "row", "col", "glb", "dram"))


def ws_mapping(f) -> Mapping:
    df = get_dataflow("ws")
    order = loop_order(("weights", "inputs", "outputs"))
    return Mapping(f, order, order, order, df.rf_keep, df.stationary, "ws")


def test_sliding_window_input_tile():
    layer = Layer("c", "Conv", "mac", sizes=(1, 1, 1, 2, 3, 4, 3, 3), stride=(1, 2))
    ext = list(layer.sizes)
    # rows (3-1)*1 + 3 = 5, columns (4-1)*2 + 3 = 9, two channels
    assert tile_size("inputs", ext, layer) == 2 * 5 * 9
    assert tile_size("weights", ext, layer) == 2 * 9
    assert tile_size("outputs", ext, layer) == 12


def test_weight_stationary_counts_on_a_2x2_array(spatial2x2):
    """N=2 rows streamed past a 2x2 array holding the 2x2 weight matrix."""
    layer = gemm(rows=2, cols=2, k=2)
    m = ws_mapping(factors(row={"C": 2}, col={"M": 2}, glb={"N": 2}))
    ev = evaluate(spatial2x2, layer, m)
    assert ev.ok and ev.macs == 8 and ev.compute_cycles == 2
    acc = ev.accesses
    # weights: one fill of one word per PE, read by each of the 8 MACs
    assert acc["noc"]["weights"] == 4 and acc["rf"]["weights"] == 8 + 4
    # inputs stream: every MAC moves one word; the parent serves 2 distinct words per step
    assert acc["noc"]["inputs"] == 8
    # psums: 8 moved, reduced over the 2 rows: 2 written per step, no re-reads
    assert acc["noc"]["outputs"] == 8
    # glb: 4 weight + 4 input + 4 psum words to the array, plus 12 words filled from/to DRAM
    assert sum(acc["glb"].values()) == 12 + 12
    assert acc["dram"] == {"weights": 4, "inputs": 4, "outputs": 4}
    e = spatial2x2.energy_pj
    expected = (8 * e["mac"] + 12 * e["rf"] + 20 * e["noc"] + 24 * e["glb"] + 12 * e["dram"])
    assert ev.total_energy == pytest.approx(expected)


def test_partial_sum_refetch_when_reduction_is_outside(spatial2x2):
    """K=4 over two rows with the K fold outside the row loop at the DRAM level: the second K
    fold re-reads the 4 psums it accumulates into; inside the GLB they would stay put."""
    layer = gemm(rows=2, cols=2, k=4)
    outside = ws_mapping(factors(row={"C": 2}, col={"M": 2}, dram={"C": 2, "N": 2}))
    ev = evaluate(spatial2x2, layer, outside)
    assert ev.accesses["dram"]["outputs"] == 8 + 4        # 8 written back, 4 read back
    assert ev.compute_cycles == 4
    inside = ws_mapping(factors(row={"C": 2}, col={"M": 2}, glb={"N": 2}, dram={"C": 2}))
    assert evaluate(spatial2x2, layer, inside).accesses["dram"]["outputs"] == 4


@pytest.mark.parametrize("dataflow,cycles", [
    # SCALE-Sim per fold: ws/is T + 2*rows + cols - 2, os T + rows + cols - 2
    ("ws", 4 * (10 + 2 * 4 + 4 - 2)),    # folds ceil(6/4)*ceil(5/4), T = 10 pixels
    ("os", 6 * (6 + 4 + 4 - 2)),         # folds ceil(10/4)*ceil(5/4), T = K = 6
    ("is", 6 * (5 + 2 * 4 + 4 - 2)),     # folds ceil(6/4)*ceil(10/4), T = M = 5
])
def test_systolic_fold_cycles(systolic4x4, dataflow, cycles):
    result = Mapper(systolic4x4, dataflow, "latency").map(gemm(rows=10, cols=5, k=6))
    assert result.ok
    assert result.evaluation.compute_cycles == cycles


def test_spatial_array_cycles_are_temporal_iterations(spatial2x2):
    layer = gemm(rows=3, cols=4, k=2)
    m = ws_mapping(factors(row={"C": 2}, col={"M": 2}, glb={"N": 3}, dram={"M": 2}))
    ev = evaluate(spatial2x2, layer, m)
    assert ev.compute_cycles == 6 and ev.padded_macs == 24 == ev.macs
    assert ev.utilization(4) == pytest.approx(24 / (ev.cycles * 4))


def test_partial_folds_pad_cycles_not_energy(spatial2x2):
    layer = gemm(rows=1, cols=3, k=2)          # 3 columns over 2 PE columns: 2 folds
    m = ws_mapping(factors(row={"C": 2}, col={"M": 2}, dram={"M": 2}))
    ev = evaluate(spatial2x2, layer, m)
    assert ev.padded_macs == 8 and ev.macs == 6
    assert ev.energy["mac"] == pytest.approx(6 * spatial2x2.energy_pj["mac"])
    # the idle PE of the second fold reads no weight: 6 reads + 2 fills x 4 PEs written
    assert ev.accesses["rf"]["weights"] == 6 + 8


def test_strided_windows_with_gaps():
    layer = Layer("c", "Conv", "mac", sizes=(1, 1, 1, 1, 3, 3, 11, 11), stride=(4, 4))
    # one filter row of a stride-4 conv touches rows 0, 4, 8: 3 rows, not the 9-row span
    assert tile_size("inputs", [1, 1, 1, 1, 3, 3, 1, 1], layer) == 3 * 3
    # the whole 11-row filter covers the span (3-1)*4 + 11 = 19 rows
    assert tile_size("inputs", [1, 1, 1, 1, 3, 1, 11, 1], layer) == 19


def test_streamed_operands_read_the_register_file():
    """Eyeriss framework: a MAC reads even an operand without RF reuse from the RF (d = 1)."""
    layer = gemm(rows=2, cols=2, k=2)
    m = ws_mapping(factors(row={"C": 2}, col={"M": 2}, glb={"N": 2}))
    plain = evaluate(make_arch(), layer, m).accesses["rf"]
    assert plain["inputs"] == 0 and plain["outputs"] == 0
    rf = evaluate(make_arch(rf={"weights": 16, "inputs": 0, "outputs": 0,
                                "streamed_reads": True}), layer, m).accesses["rf"]
    assert rf["inputs"] == 8 and rf["weights"] == plain["weights"]
    assert rf["outputs"] == 0            # a streamed psum accumulates as it passes
    nlr = get_dataflow("nlr")
    bare = make_arch(rf={"weights": 0, "inputs": 0, "outputs": 0, "streamed_reads": True})
    m_nlr = Mapping(m.factors, m.glb_order, m.dram_order, m.rf_order, nlr.rf_keep, None, "nlr")
    assert sum(evaluate(bare, layer, m_nlr).accesses["rf"].values()) == 0   # no RF at all


def test_neighbour_forwarding_serves_the_sliding_window_once():
    """os_a: 2x2 output pixels on the array, the 3x3 filter taps stepped inside the PE."""
    layer = Layer("c", "Conv", "mac", sizes=(1, 1, 1, 1, 4, 4, 3, 3))
    df = get_dataflow("os_a")
    f = factors(rf={"R": 3, "S": 3}, row={"P": 2}, col={"Q": 2}, glb={"P": 2, "Q": 2})
    order = df.rf_order()
    arch = make_arch()
    evs = {fw: evaluate(arch, layer, Mapping(f, order, order, order, df.rf_keep, "outputs",
                                             "os_a", fw)) for fw in (False, True)}
    # without forwarding: 4 distinct words for each of the 36 steps; with it: one 4x4 window
    # per glb step (4 steps)
    assert evs[True].accesses["glb"]["inputs"] - evs[False].accesses["glb"]["inputs"] \
        == 4 * 16 - 36 * 4
    assert evs[True].accesses["noc"]["inputs"] == evs[False].accesses["noc"]["inputs"] == 144


def test_capacity_failures_have_reasons(spatial2x2):
    layer = gemm(rows=2, cols=2, k=64)
    rf_heavy = ws_mapping(factors(rf={"C": 32}, row={"C": 2}, col={"M": 2}, glb={"N": 2}))
    assert evaluate(spatial2x2, layer, rf_heavy).reason == "rf capacity (weights)"
    too_wide = ws_mapping(factors(row={"C": 4}, col={"M": 2}, glb={"N": 2, "C": 16}))
    assert evaluate(spatial2x2, layer, too_wide).reason == "spatial fan-out"
    short = ws_mapping(factors(row={"C": 2}, col={"M": 2}))
    assert evaluate(spatial2x2, layer, short).reason == "coverage"
