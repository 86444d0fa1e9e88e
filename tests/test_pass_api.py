"""The public pass API: registration, specs with options, plugins, entry points, the manager."""
import sys
import textwrap

import pytest

from graphopt import Graph, PassResult, register_pass
from graphopt.errors import BadInputError, PassError
from graphopt.pass_api import (load_entry_point_passes, load_plugin_file, parse_pass_spec,
                               registered_passes, unregister_pass)
from graphopt.pass_manager import FixedPoint, PassManager
from graphopt.testing import parse_model
from graphopt import onnx_io

MODEL = '''<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x) => (float[4] y) { a = Relu(x) b = Neg(a) y = Neg(b) }'''


@pytest.fixture
def graph() -> Graph:
    return onnx_io.load(parse_model(MODEL))


@pytest.fixture
def temp_pass():
    names = []

    def make(name, fn, **kw):
        register_pass(name, **kw)(fn)
        names.append(name)
        return fn
    yield make
    for name in names:
        unregister_pass(name)


def test_spec_with_options_is_parsed_and_typed(temp_pass):
    def scaled(graph, *, factor: float = 1.0, enabled: bool = True):
        """Does nothing."""
        return False
    temp_pass("t-scaled", scaled)
    [call] = parse_pass_spec("t-scaled{factor=2.5,enabled=false}")
    assert dict(call.options) == {"factor": 2.5, "enabled": False}
    assert str(call) == "t-scaled{factor=2.5,enabled=False}"


@pytest.mark.parametrize("spec, message", [("nope", "unknown pass"),
                                           ("eliminate-dead-code{x=1}", "no option"),
                                           ("eliminate-dead-code,,", "cannot parse")])
def test_bad_specs_are_clear(spec, message):
    with pytest.raises(BadInputError, match=message):
        parse_pass_spec(spec)


def test_fixed_point_repeats_until_no_change(graph, temp_pass):
    calls = []

    def drop_one_neg(g):
        """Removes one double negation per call."""
        calls.append(1)
        for node in g.nodes:
            src = node.input(0).producer
            if node.op_type == "Neg" and src is not None and src.op_type == "Neg":
                g.replace_all_uses_with(node.outputs[0], src.input(0))
                g.remove([node, src])
                return True
        return False
    temp_pass("t-negneg", drop_one_neg)
    manager = PassManager([FixedPoint(tuple(parse_pass_spec("t-negneg")))])
    assert manager.run(graph)
    assert [n.op_type for n in graph.nodes] == ["Relu"] and len(calls) == 2
    assert graph.outputs[0].name == "y"


def test_pass_error_names_the_pass_and_history(graph, temp_pass):
    temp_pass("t-ok", lambda g: False)

    def boom(g):
        """Raises."""
        raise ValueError("kaput")
    temp_pass("t-boom", boom)
    with pytest.raises(PassError, match=r"pass 't-boom' \(builtin\) raised ValueError: kaput "
                                        r"\(after t-ok\)"):
        PassManager(parse_pass_spec("t-ok,t-boom")).run(graph)


def test_requires_is_checked_before_running(graph, temp_pass):
    temp_pass("t-first", lambda g: False)
    temp_pass("t-second", lambda g: False, requires="t-first")
    with pytest.raises(PassError, match="requires t-first"):
        PassManager(parse_pass_spec("t-second")).run(graph)
    PassManager(parse_pass_spec("t-first,t-second")).run(graph)


def test_pass_result_stats_are_recorded(graph, temp_pass):
    temp_pass("t-stats", lambda g: PassResult(False, {"tried": 3}))
    manager = PassManager(parse_pass_spec("t-stats"))
    manager.run(graph)
    assert manager.records[0].stats == {"tried": 3}


PLUGIN = '''
from graphopt import register_pass

@register_pass("plugin-relu-to-abs", level=1, after="eliminate-dead-code")
def relu_to_abs(graph):
    """Rewrites Relu into Abs (a test plugin; changes the numbers on purpose)."""
    changed = False
    for node in graph.nodes:
        if node.op_type == "Relu":
            node.op_type = "Abs"
            changed = True
    return changed
'''


def test_plugin_file_registers_and_runs_in_the_pipeline(tmp_path, graph):
    from graphopt.optimizer import optimize

    plugin = tmp_path / "myplugin.py"
    plugin.write_text(PLUGIN)
    try:
        assert load_plugin_file(plugin) == ["plugin-relu-to-abs"]
        assert registered_passes()["plugin-relu-to-abs"].origin == f"plugin:{plugin}"
        result = optimize(graph, level=1)
        assert "plugin-relu-to-abs" in [r.name for r in result.manager.records]
        assert graph.op_counts()["Abs"] == 1
        assert "plugin-relu-to-abs" not in str(optimize(onnx_io.load(parse_model(MODEL)),
                                                        level=0).steps)
    finally:
        unregister_pass("plugin-relu-to-abs")


def test_plugin_that_raises_on_load_is_one_clear_error(tmp_path):
    plugin = tmp_path / "bad.py"
    plugin.write_text("raise RuntimeError('broken plugin')\n")
    with pytest.raises(BadInputError, match="bad.py failed to load: RuntimeError: broken plugin"):
        load_plugin_file(plugin)


def test_entry_point_passes_are_loaded(tmp_path, monkeypatch, graph):
    """A real installed-distribution layout on sys.path, found by importlib.metadata."""
    from graphopt.optimizer import optimize

    (tmp_path / "acme_passes.py").write_text(PLUGIN.replace("plugin-relu-to-abs", "acme-relu-to-abs"))
    dist = tmp_path / "acme_passes-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-passes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[graphopt.passes]\nacme = acme_passes\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_entry_point_passes() == ["acme-relu-to-abs"]
        assert registered_passes()["acme-relu-to-abs"].origin == "entry-point:acme"
        result = optimize(graph, level=2)
        assert "acme-relu-to-abs" in [r.name for r in result.manager.records]
    finally:
        unregister_pass("acme-relu-to-abs")
        sys.modules.pop("acme_passes", None)
