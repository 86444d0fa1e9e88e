"""`graphopt npu` end to end on a small model: table, JSON report and a trace that parses."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from graphopt.cli_npu import npu_command
from graphopt.npu.reference_models import alexnet_227

import onnx


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("npu") / "alexnet.onnx"
    onnx.save(alexnet_227(), path)
    return path


def test_cli_writes_json_and_trace(model_path, tmp_path):
    report, trace = tmp_path / "r.json", tmp_path / "t.json"
    result = CliRunner().invoke(npu_command, [str(model_path), "--arch", "eyeriss", "--batch", "2",
                                              "--objective", "latency", "--json", str(report),
                                              "--trace", str(trace), "--passes",
                                              "eliminate-dead-code"])
    assert result.exit_code == 0, result.output
    assert "conv1" in result.output and "TOPS/W" in result.output
    data = json.loads(report.read_text())
    assert data["arch"] == "eyeriss" and data["batch"] == 2 and data["dataflow"] == "rs"
    convs = [layer for layer in data["layers"] if layer["op_type"] == "Conv"]
    assert sum(layer["macs"] for layer in convs) == 2 * 665_784_864
    assert set(convs[0]["energy_pj"]) >= {"mac", "rf", "noc", "glb", "dram"}
    assert convs[0]["mapping"]["loops"]["row"] == {"R": 11}
    assert data["totals"]["energy_j"] > 0 and data["totals"]["latency_s"] > 0
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["name"] for e in spans} >= {"conv1", "conv5"}
    assert all(e["dur"] > 0 and e["ts"] >= 0 for e in spans)


def test_cli_reports_bad_architecture_in_one_line(model_path, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nclock_mhz = 100\ndatatype = "int8"\n[pe_array]\nrows = -1\n')
    result = CliRunner().invoke(npu_command, [str(model_path), "--arch", str(bad)])
    assert result.exit_code == 2
    assert "field 'pe_array.rows' must be positive" in result.output


def test_cli_plot_writes_a_png(model_path, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "npu.png"
    result = CliRunner().invoke(npu_command, [str(model_path), "--arch", "eyeriss", "--passes",
                                              "eliminate-dead-code", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (14 * 110, 5 * 110)      # figsize (14, 5) at 110 dpi
    assert len(data) > 20_000                          # two panels with content, not blank
    assert not list(tmp_path.glob(".npu.png.*"))       # no temporary file left behind
