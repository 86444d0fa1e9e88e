"""Benchmark scripts stay runnable: each one's core function on a tiny onnx.helper model.

Peers (onnxsim, onnxslim) are exercised when installed; when not, their cells must read "n/a".
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
# Worker processes are spawned and re-import the script by module name, so import it as a module
# from a sys.path entry (spawn passes sys.path on to the children).
sys.path.insert(0, str(BENCH_DIR))
ovp = pytest.importorskip("optimize_vs_peers")


def _tiny_model_with_dead_branch(path: Path) -> Path:
    """y = Relu(x @ W) plus a Neg of x nobody reads: dead-code elimination leaves 2 of 3 nodes."""
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])
    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3), np.float32), "W")
    nodes = [oh.make_node("MatMul", ["x", "W"], ["h"]), oh.make_node("Relu", ["h"], ["y"]),
             oh.make_node("Neg", ["x"], ["unused"])]
    graph = oh.make_graph(nodes, "tiny", [x], [y], initializer=[w])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, path)
    return path


def _installed(tool: str) -> bool:
    return importlib.util.find_spec(tool) is not None


def test_optimize_vs_peers_core_on_tiny_model(tmp_path: Path) -> None:
    model = _tiny_model_with_dead_branch(tmp_path / "tiny.onnx")
    settings = ovp.Settings(passes="eliminate-dead-code", repeats=2, timeout_s=120)
    report = ovp.run_benchmark([model], settings)

    (result,) = report["models"]
    assert result["nodes_in"] == 3 and result["runs"] == 2
    go = result["tools"]["graphopt"]
    assert go["status"] == "ok", go["error"]
    assert go["nodes_out"] == 2 and go["match"] == "yes"
    assert len(go["times_s"]) == 2 and go["median_s"] > 0
    for peer in ovp.PEERS:
        cell = result["tools"][peer]
        if not _installed(peer):
            assert (cell["status"], cell["match"]) == ("n/a", "n/a")
            continue
        assert cell["status"] == "ok", cell["error"]
        assert cell["nodes_out"] == 2 and cell["match"] == "yes"
    any_peer = any(_installed(p) for p in ovp.PEERS)
    assert result["not_more_than_peers"] is (True if any_peer else None)
    assert report["graphopt_failures"] == []

    json.dumps(report)  # the report is what the script writes as JSON
    table = ovp.render(report)
    assert "tiny" in table and "graphopt: OK on every model" in table


def test_optimize_vs_peers_reports_graphopt_failure_and_exits_nonzero(tmp_path: Path) -> None:
    """A graphopt failure is a row in the table and a non-zero exit, never a crash of the run."""
    model = _tiny_model_with_dead_branch(tmp_path / "tiny.onnx")
    out = tmp_path / "out.json"
    code = ovp.main(["--models", str(model), "--passes", "no-such-pass", "--tools", "graphopt",
                     "--repeat", "1", "--json", str(out)])
    assert code == 1
    report = json.loads(out.read_text())
    go = report["models"][0]["tools"]["graphopt"]
    assert go["status"] == "error" and "no-such-pass" in go["error"]
    assert report["models"][0]["tools"]["onnxsim"]["status"] == "n/a"  # not selected
    assert report["graphopt_failures"]


def test_count_nodes_includes_subgraphs() -> None:
    cond = oh.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])
    out = oh.make_tensor_value_info("o", onnx.TensorProto.FLOAT, [1])
    branch = oh.make_graph([oh.make_node("Constant", [], ["o"], value_floats=[1.0])], "b", [], [out])
    graph = oh.make_graph([oh.make_node("If", ["c"], ["o"], then_branch=branch, else_branch=branch)],
                          "g", [cond], [out])
    assert ovp.count_nodes(graph) == 3
