"""Chen, Emer, Sze (ISCA 2016) dataflow comparison: RS has the lowest energy per MAC on the
AlexNet CONV layers at 256 PEs and equal storage area; WS, OS_A/B/C and NLR are 1.4x-2.5x worse."""
from __future__ import annotations

import pytest

from graphopt.npu import Scheduler
from graphopt.npu.arch import RegisterFiles
from graphopt.npu.entry import optimized_graph
from graphopt.npu.reference_models import alexnet_227, chen2016_arch, equal_area_glb_kb


@pytest.fixture(scope="module")
def energy_per_mac():
    graph = optimized_graph(alexnet_227(), passes="eliminate-dead-code")
    result = {}
    for dataflow in ("rs", "ws", "os_a", "os", "os_c", "nlr"):
        arch = chen2016_arch(dataflow)
        convs = [lr for lr in Scheduler(arch, dataflow, "energy").run(graph, batch=16).layers
                 if lr.op_type == "Conv"]
        result[dataflow] = sum(lr.total_energy for lr in convs) / sum(lr.macs for lr in convs)
    return result


def test_row_stationary_is_cheapest_and_the_others_within_the_papers_range(energy_per_mac):
    rs = energy_per_mac["rs"]
    ratios = {k: v / rs for k, v in energy_per_mac.items() if k != "rs"}
    assert all(1.4 <= r <= 2.5 for r in ratios.values()), ratios


def test_equal_area_split():
    assert equal_area_glb_kb(RegisterFiles(256, 0, 0)) == 128            # the baseline
    assert equal_area_glb_kb(RegisterFiles(0, 0, 0)) == 128 + 256 * 512 * 2 / 1024
    assert chen2016_arch("nlr").global_buffer.size_kb == 384
    assert chen2016_arch("rs").register_files.streamed_reads
