"""Architecture files: presets load with the documented numbers; bad files fail naming the field."""
from __future__ import annotations

import json

import pytest

from graphopt.errors import NPUConfigError
from graphopt.npu import arch_from_dict, load_arch, preset_names
from graphopt.npu.energy_tables import mac_energy_pj, sram_energy_64b_pj


def test_eyeriss_preset_matches_the_chip():
    arch = load_arch("eyeriss")
    assert arch.pe_array.num_pes == 168
    assert (arch.register_files.weights, arch.register_files.inputs,
            arch.register_files.outputs) == (224, 12, 24)
    assert arch.global_buffer.size_bytes == 108 * 1024
    assert arch.bits == 16 and arch.clock_mhz == 200 and arch.dataflow == "rs"


def test_all_presets_load():
    names = preset_names()
    assert {"eyeriss", "tpu-32x32", "tpu-128x128", "edge-int8"} <= set(names)
    for name in names:
        assert load_arch(name).pe_array.num_pes > 0
    assert load_arch("tpu-128x128").pe_array.kind == "systolic"


def test_normalized_energies_are_relative_to_one_mac():
    arch = load_arch("eyeriss")
    e = arch.energy_pj
    assert [round(e[k] / e["mac"], 6) for k in ("rf", "noc", "glb", "dram")] == [1, 2, 6, 200]


def test_horowitz_figures():
    assert mac_energy_pj("int8") == pytest.approx(0.23)
    assert mac_energy_pj("fp16") == pytest.approx(1.5)
    assert mac_energy_pj("fp32") == pytest.approx(4.6)
    assert sram_energy_64b_pj(8 * 1024) == pytest.approx(10.0)
    assert sram_energy_64b_pj(32 * 1024) == pytest.approx(20.0)
    assert sram_energy_64b_pj(1024 * 1024) == pytest.approx(100.0)
    arch = load_arch("edge-int8")
    assert arch.energy_pj["dram"] == pytest.approx(1300.0 * 8 / 64)   # per int8 word


def test_energy_override_and_datatype_switch():
    data = json.loads(json.dumps(_minimal()))
    data["energy"] = {"table": "horowitz45", "dram": 50.0}
    arch = arch_from_dict(data)
    assert arch.energy_pj["dram"] == 50.0
    assert arch.with_datatype("fp32").energy_pj["mac"] == pytest.approx(4.6)


def _minimal():
    return {"name": "m", "clock_mhz": 100, "datatype": "int8",
            "pe_array": {"rows": 2, "cols": 2}, "register_files": {"weights": 1, "inputs": 1,
                                                                   "outputs": 1},
            "global_buffer": {"size_kb": 1}, "dram": {"bandwidth_gbps": 1}}


@pytest.mark.parametrize("path,value,message", [
    (("pe_array", "rows"), None, "'pe_array.rows' is missing"),
    (("pe_array", "cols"), -3, "'pe_array.cols' must be positive"),
    (("register_files", "inputs"), -1, "'register_files.inputs' must not be negative"),
    (("global_buffer", "size_kb"), "big", "'global_buffer.size_kb' must be float"),
    (("datatype",), "int4", "'datatype' must be one of"),
    (("pe_array", "colz"), 3, "'pe_array.colz' is not a known field"),
    (("dataflow",), "xs", "'dataflow' must be one of"),
])
def test_bad_fields_are_named(path, value, message):
    data = _minimal()
    table = data
    for key in path[:-1]:
        table = table[key]
    if value is None:
        del table[path[-1]]
    else:
        table[path[-1]] = value
    with pytest.raises(NPUConfigError, match=message.replace("(", r"\(")):
        arch_from_dict(data, "bad.toml")


def test_files_and_unknown_presets(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(_minimal()))
    assert load_arch(path).name == "m"
    broken = tmp_path / "b.toml"
    broken.write_text("name = \n")
    with pytest.raises(NPUConfigError, match="not valid"):
        load_arch(broken)
    with pytest.raises(NPUConfigError, match="neither a file nor a preset"):
        load_arch("no-such-npu")
