"""The public pass API: registration, specs with options, plugins, entry points, the manager."""
import sys

import pytest

from graphopt import Graph, PassResult, register_pass
from graphopt.errors import BadInputError, PassError
from graphopt.pass_api import (load_entry_point_passes, load_plugin_file, parse_pass_spec,
                               registered_passes, unregister_pass)
from graphopt.pass_manager import FixedPoint, PassManager, VerifyIR
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


def test_fixed_point_stops_once_every_step_saw_the_final_graph(graph, temp_pass):
    """t-once changes the graph in round 1 only; t-never ran after that change in round 1, so
    round 2 stops right after t-once finds nothing (t-never would see the same graph)."""
    ran = []

    def once(g):
        """Changes the graph on its first call only."""
        ran.append("once")
        return ran.count("once") == 1
    temp_pass("t-once", once)
    temp_pass("t-never", lambda g: ran.append("never") or False)
    manager = PassManager([FixedPoint(tuple(parse_pass_spec("t-once,t-never")))])
    assert manager.run(graph)
    assert ran == ["once", "never", "once"]


def test_pass_error_names_the_pass_and_history(graph, temp_pass):
    temp_pass("t-ok", lambda g: False)

    def boom(g):
        """Raises."""
        raise ValueError("kaput")
    temp_pass("t-boom", boom)
    with pytest.raises(PassError, match=r"pass 't-boom' \(python:[\w.]*test_pass_api\) raised "
                                        r"ValueError: kaput "
                                        r"\(after t-ok\)"):
        PassManager(parse_pass_spec("t-ok,t-boom")).run(graph)


def _break_order(g):
    """Reverses the node list: no longer topologically sorted."""
    g.nodes.reverse()
    return True


@pytest.mark.parametrize("each_pass, blamed", [
    (True, r"pass 't-break' left an invalid graph"),
    (False, r"one of the passes 't-touch', 't-break' \(one fixed-point round\)")])
def test_verify_ir_blames_the_pass_or_the_round(graph, temp_pass, each_pass, blamed):
    temp_pass("t-touch", lambda g: True)  # claims a change, so the round's check names it
    temp_pass("t-break", _break_order)
    group = FixedPoint(tuple(parse_pass_spec("t-touch,t-break")))
    manager = PassManager([group], [VerifyIR(each_pass=each_pass)])
    with pytest.raises(PassError, match=blamed + ".*used before it is defined"):
        manager.run(graph)


def test_verify_ir_checks_a_top_level_pass_right_after_it(graph, temp_pass):
    ran = []
    temp_pass("t-break", _break_order)
    temp_pass("t-after", lambda g: ran.append(1) or False)
    manager = PassManager(parse_pass_spec("t-break,t-after"), [VerifyIR()])
    with pytest.raises(PassError, match="pass 't-break' left an invalid graph"):
        manager.run(graph)
    assert not ran


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
        assert result.graph.op_counts()["Abs"] == 1
        assert "Abs" not in graph.op_counts()  # optimize works on a copy of a Graph argument
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


def test_pass_registered_from_python_joins_the_presets_like_a_plugin(temp_pass):
    """No --plugin, no entry point: user code calls register_pass, then optimize(level=N)."""
    from graphopt.optimizer import optimize
    from graphopt.pipelines import levels_including

    def relu_to_abs(graph):
        """Rewrites Relu into Abs."""
        changed = False
        for node in graph.nodes:
            if node.op_type == "Relu":
                node.op_type, changed = "Abs", True
        return changed
    temp_pass("t-python-relu-to-abs", relu_to_abs, level=2, after="fold-constants")
    info = registered_passes()["t-python-relu-to-abs"]
    assert info.origin.startswith("python:") and info.origin.endswith("test_pass_api")
    assert levels_including(info.name) == [2, 3]
    model = parse_model(MODEL)
    assert "Abs" in optimize(model, level=2).graph.op_counts()
    assert "Abs" not in optimize(model, level=1).graph.op_counts()
    pipeline = str(optimize(model, level=3).steps[0])
    assert "fold-constants,t-python-relu-to-abs," in pipeline


def test_every_printed_pipeline_and_option_form_parses_back(temp_pass):
    """--passes accepts what the optimize preamble and `graphopt passes` print."""
    from graphopt.optimizer import build_pipeline
    from graphopt.pipelines import parse_pipeline

    def opts(graph, *, flag: bool = True, ratio: float = 0.5, label: str = "a b",
             limit: int | None = None):
        """Has one option of each kind."""
        return False
    temp_pass("t-opts", opts, level=0)
    for level in range(4):
        steps = build_pipeline(level)
        assert parse_pipeline(", ".join(map(str, steps))) == steps
    info = registered_passes()["t-opts"]
    printed = "t-opts{" + ",".join(f"{k}={d!r}" for k, (_, d) in info.options.items()) + "}"
    assert printed == "t-opts{flag=True,ratio=0.5,label='a b',limit=None}"
    [call] = parse_pass_spec(printed)
    assert dict(call.options) == {"flag": True, "ratio": 0.5, "label": "a b", "limit": None}
    [call] = parse_pass_spec(str(parse_pass_spec("t-opts{limit=7,ratio=2,label=x}")[0]))
    assert dict(call.options) == {"limit": 7, "ratio": 2.0, "label": "x"}
    [group] = parse_pipeline("fixed-point(t-opts{flag=False},cse)")
    assert isinstance(group, FixedPoint) and [str(s) for s in group.steps] == \
        ["t-opts{flag=False}", "cse"]
    for bad, message in (("fixed-point(cse", "never closed"), ("fixed-point(cse) cse", "','"),
                         ("t-opts{limit=x}", "takes a int")):
        with pytest.raises(BadInputError, match=message):
            parse_pipeline(bad)


def test_skip_drops_passes_inside_groups_and_checks_names():
    from graphopt.optimizer import build_pipeline

    steps = build_pipeline(1, skip=["cse", "remove-identity"])
    assert str(steps[0]) == "fixed-point(fold-constants,eliminate-dead-code)"
    assert build_pipeline(0, passes="cse", skip=["cse"]) == []
    with pytest.raises(BadInputError, match="unknown pass 'nope'"):
        build_pipeline(1, skip=["nope"])


def test_summary_is_the_whole_first_paragraph(temp_pass):
    def wrapped(graph):
        """First sentence that the source wraps
        onto a second line, with A/
        B kept together.

        Details that are not the summary."""
        return False
    temp_pass("t-wrapped", wrapped, level=0)
    assert registered_passes()["t-wrapped"].summary == \
        "First sentence that the source wraps onto a second line, with A/B kept together."
