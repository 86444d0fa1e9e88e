"""Dataflow constraints, mapper determinism and infeasibility reasons."""
from __future__ import annotations

import math

import pytest

from graphopt.errors import NPUConfigError
from graphopt.npu import Layer, Mapper, Scheduler, get_dataflow
from graphopt.npu.dataflows import DATAFLOWS
from graphopt.npu.mapping import COL, RF, ROW
from graphopt.npu.workload import DIMS

from npu_helpers import make_arch

CONV = Layer("conv", "Conv", "mac", sizes=(1, 2, 16, 8, 6, 6, 3, 3))


@pytest.mark.parametrize("name", sorted(DATAFLOWS))
def test_each_dataflow_respects_its_constraints(name):
    arch = make_arch(4, 4, glb_kb=32, rf=(32, 16, 16))
    df = get_dataflow(name)
    result = Mapper(arch, name, "energy").map(CONV)
    assert result.ok, result.reasons
    m = result.mapping
    assert m.rf_keep == df.rf_keep and m.stationary == df.stationary
    for level, allowed in ((ROW, df.row_dims), (COL, df.col_dims), (RF, df.rf_dims)):
        used = {d for d, f in zip(DIMS, m.factors[level]) if f > 1}
        assert used <= set(allowed), (level, used)
    assert math.prod(m.factors[ROW]) <= 4 and math.prod(m.factors[COL]) <= 4
    if not df.rf_keep:
        assert all(f == 1 for f in m.factors[RF])


def test_row_stationary_puts_filter_rows_on_pe_rows():
    arch = make_arch(3, 6, glb_kb=32, rf=(32, 16, 16))
    m = Mapper(arch, "rs").map(CONV).mapping
    assert m.factor("row", "R") == 3 and m.factor("col", "P") == 6


def test_systolic_arrays_take_the_im2col_gemm(systolic4x4):
    result = Mapper(systolic4x4, "ws", "latency").map(CONV)
    assert result.layer.sizes == (1, 2 * 36, 16, 8 * 9, 1, 1, 1, 1)
    assert result.layer.im2col > 1
    with pytest.raises(NPUConfigError, match="needs a spatial"):
        Mapper(systolic4x4, "rs").map(CONV)


def test_unknown_names_are_config_errors(spatial2x2):
    with pytest.raises(NPUConfigError, match="unknown dataflow 'xyz'"):
        Mapper(spatial2x2, "xyz")
    with pytest.raises(NPUConfigError, match="unknown objective"):
        Mapper(spatial2x2, "ws", "speed")


def test_mapper_is_deterministic():
    arch = make_arch(4, 4, glb_kb=16, rf=(32, 16, 16))
    runs = [Mapper(arch, "rs", "edp").map(CONV) for _ in range(2)]
    assert runs[0].mapping == runs[1].mapping
    assert runs[0].evaluation.total_energy == runs[1].evaluation.total_energy
    assert runs[0].evaluated == runs[1].evaluated


@pytest.mark.parametrize("objective", ["energy", "latency", "edp"])
def test_objectives_pick_their_optimum(objective):
    arch = make_arch(4, 4, glb_kb=16, rf=(32, 16, 16))
    best = Mapper(arch, "ws", objective).map(CONV).evaluation
    for other in ("energy", "latency", "edp"):
        ev = Mapper(arch, "ws", other).map(CONV).evaluation
        if objective == "energy":
            assert best.total_energy <= ev.total_energy + 1e-9
        elif objective == "latency":
            assert best.cycles <= ev.cycles


def test_no_mapping_is_a_result_with_counted_reasons():
    tiny = make_arch(2, 2, glb_kb=0.01, rf=(4, 4, 4))
    result = Mapper(tiny, "rs").map(CONV)
    assert not result.ok
    assert result.reasons.get("glb capacity", 0) > 0
    message = result.failure_message(tiny)
    assert "conv" in message and "global_buffer.size_kb" in message


def test_scheduler_names_the_layer_that_cannot_map():
    tiny = make_arch(2, 2, glb_kb=0.01, rf=(4, 4, 4))
    layer = Layer("block3/conv", "Conv", "mac", sizes=CONV.sizes)
    with pytest.raises(NPUConfigError, match="Conv layer 'block3/conv' has no mapping"):
        Scheduler(tiny, "rs").run_layers([layer])


def test_architecture_files_accept_every_dataflow():
    from graphopt.npu import arch as arch_module

    assert set(arch_module.DATAFLOWS) == set(DATAFLOWS)
