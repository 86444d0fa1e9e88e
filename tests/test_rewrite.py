"""graphopt.rewrite: pattern matching, the apply_rules driver and the FusionLog."""
import numpy as np
import pytest

import graphopt
from graphopt.errors import PassError
from graphopt.rewrite import (Const, FusionLog, FusionRecord, OneOf, Op, Opt, RewriteRefused, Rule,
                              Var, apply_rules, fusion_log)
from graphopt.rewrite.pattern import Trace, match_root
from graphopt.testing import assert_same_outputs, parse_model

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'


def graph_of(body: str):
    return graphopt.load(parse_model(HEADER + body))


def node_for(graph, output: str):
    return next(n for n in graph.nodes if n.outputs[0].name == output)


def matches(pattern, graph, output: str, commute: bool = True):
    return list(match_root(pattern, node_for(graph, output), Trace(commute)))


def failure(pattern, graph, output: str) -> str:
    trace = Trace()
    assert not list(match_root(pattern, node_for(graph, output), trace))
    return trace.reason


# --- matching ---------------------------------------------------------------------------------
SQUARES = graph_of("""g (float[3] a, float[3] b) => (float[3] y, float[3] z) {
        y = Mul(a, a)
        z = Mul(a, b)
    }""")


def test_a_name_used_twice_binds_one_value():
    x = Var("x")
    assert len(matches(Op("Mul", x, x), SQUARES, "y")) == 2  # both commuted orders
    assert failure(Op("Mul", x, x), SQUARES, "z") == "input 1 of Mul is not the same value as 'x'"


CONST_ADD = graph_of("""g (float[3] a) => (float[3] y) <float[1] c = {0.5}> {
        r = Relu(a)
        y = Add(c, r)
    }""")


def test_commutative_inputs_are_tried_in_both_orders():
    pattern = Op("Add", Op("Relu", Var("x")), Const("c"))
    (found,) = matches(pattern, CONST_ADD, "y")
    assert found.values["x"].name == "a" and found.values["c"].name == "c"
    assert matches(pattern, CONST_ADD, "y", commute=False) == []


def test_const_value_must_match():
    assert matches(Op("Add", Const(value=0.5), Var("r")), CONST_ADD, "y")
    assert failure(Op("Add", Const(value=2.0), Op("Relu", Var("x"))), CONST_ADD, "y") == \
        "input 0 of Add is the constant [0.5], not 2"


def test_one_of_tries_alternatives():
    pattern = Op("Add", OneOf(Op("Sigmoid", Var("x")), Op("Relu", Var("x"))), Const("c"))
    assert len(matches(pattern, CONST_ADD, "y")) == 1


CONVS = graph_of("""g (float[1,2,4,4] x, float[2,2,1,1] w, float[2] b)
        => (float[1,2,4,4] y, float[1,2,4,4] z) {
        y = Conv(x, w, b)
        z = Conv(x, w)
    }""")


def test_optional_input_binds_none_when_omitted():
    pattern = Op("Conv", Var("x"), Var("w"), Opt(Var("b")))
    assert matches(pattern, CONVS, "y")[0].values["b"].name == "b"
    assert matches(pattern, CONVS, "z")[0].values["b"] is None


def test_extra_inputs_need_an_ellipsis():
    assert failure(Op("Conv", Var("x"), Var("w")), CONVS, "y") == \
        "Conv has 3 inputs, the pattern 2"
    assert matches(Op("Conv", Var("x"), ...), CONVS, "y")


def test_a_reused_op_pattern_must_match_one_node():
    graph = graph_of("""g (float[3] a) => (float[3] y, float[3] z) {
            r1 = Relu(a)
            r2 = Relu(a)
            y = Add(r1, r1)
            z = Add(r1, r2)
        }""")
    relu = Op("Relu", Var("x"))
    assert matches(Op("Add", relu, relu), graph, "y")
    assert failure(Op("Add", relu, relu), graph, "z") == \
        "input 1 of Add is a different Relu than the pattern requires"


# --- the driver -------------------------------------------------------------------------------
def _neg_pair_to_x() -> Rule:
    return Rule("neg-neg", Op("Neg", Op("Neg", Var("x"))), lambda rw, m: m["x"])


def _relu_sigmoid_to_hardsigmoid(**kwargs) -> Rule:
    def replace(rw, m):
        return rw.make_node("HardSigmoid", [m["x"]]).outputs[0]

    return Rule("relu-sigmoid", Op("Sigmoid", Op("Relu", Var("x"))), replace, **kwargs)


def test_rewrite_keeps_names_and_stamps_origin():
    model = parse_model(HEADER + """g (float[3] a) => (float[3] y) {
            r = Relu(a)
            s = Sigmoid(r)
            y = Neg(s)
        }""")
    graph = graphopt.load(model)
    result = apply_rules(graph, [_relu_sigmoid_to_hardsigmoid()], pass_name="demo")
    assert result.changed and result.stats["relu-sigmoid.rewritten"] == 1
    assert [n.op_type for n in graph.nodes] == ["HardSigmoid", "Neg"]
    assert graph.nodes[0].origin == "relu-sigmoid"
    assert graph.nodes[0].outputs[0].name == "s"
    graph.verify()


def test_fixed_point_over_a_chain():
    model = parse_model(HEADER + """g (float[3] a) => (float[3] y) {
            n1 = Neg(a)
            n2 = Neg(n1)
            n3 = Neg(n2)
            n4 = Neg(n3)
            y = Relu(n4)
        }""")
    graph = graphopt.load(model)
    assert apply_rules(graph, [_neg_pair_to_x()]).stats["neg-neg.rewritten"] == 2
    assert [n.op_type for n in graph.nodes] == ["Relu"]
    assert_same_outputs(model, graph)


SHARED = """g (float[3] a) => (float[3] y, float[3] z) {
        r = Relu(a)
        y = Sigmoid(r)
        z = Tanh(r)
    }"""


def test_intermediate_with_other_readers_blocks_the_rewrite():
    graph = graph_of(SHARED)
    assert not apply_rules(graph, [_relu_sigmoid_to_hardsigmoid()], pass_name="demo").changed
    (record,) = fusion_log(graph).failures()
    assert record.outcome == "no-match" and record.depth == 2
    assert record.reason == "the inner Relu's output is also read outside the pattern (by Tanh)"


def test_allow_shared_keeps_the_shared_node():
    model = parse_model(HEADER + SHARED)
    graph = graphopt.load(model)
    assert apply_rules(graph, [_relu_sigmoid_to_hardsigmoid(allow_shared=True)]).changed
    assert [n.op_type for n in graph.nodes] == ["Relu", "HardSigmoid", "Tanh"]


def test_intermediate_graph_output_blocks_the_rewrite():
    graph = graph_of("""g (float[3] a) => (float[3] y, float[3] r) {
            r = Relu(a)
            y = Sigmoid(r)
        }""")
    assert not apply_rules(graph, [_relu_sigmoid_to_hardsigmoid()]).changed
    assert fusion_log(graph).failures()[0].reason == "the inner Relu's output is a graph output"


def test_check_failure_is_recorded_as_rejected():
    graph = graph_of("g (float[3] a) => (float[3] y) { r = Relu(a) y = Sigmoid(r) }")
    rule = _relu_sigmoid_to_hardsigmoid(check=lambda m: "HardSigmoid is not the same function")
    result = apply_rules(graph, [rule], pass_name="demo")
    assert not result.changed
    assert result.stats == {"relu-sigmoid.tried": 1, "relu-sigmoid.matched": 1,
                            "relu-sigmoid.rewritten": 0}
    (record,) = fusion_log(graph).records
    assert (record.pass_name, record.outcome, record.reason) == \
        ("demo", "rejected", "HardSigmoid is not the same function")


def test_refusal_after_creating_nodes_leaves_the_graph_unchanged():
    graph = graph_of("g (float[3] a) => (float[3] y) { r = Relu(a) y = Sigmoid(r) }")

    def replace(rw, m):
        rw.make_node("Neg", [rw.constant(np.ones(3, np.float32))])
        raise RewriteRefused("changed my mind")

    before = (str(graph), sorted(graph.initializers))
    rule = Rule("refuses", Op("Sigmoid", Op("Relu", Var("x"))), replace)
    assert not apply_rules(graph, [rule]).changed
    assert (str(graph), sorted(graph.initializers)) == before
    assert fusion_log(graph).records[0].reason == "changed my mind"
    graph.verify()


def test_secondary_output_still_read_blocks_the_rewrite():
    graph = graph_of("""g (float[4] a) => (float[2] y, float[2] z) {
            s1, s2 = Split(a)
            y = Relu(s1)
            z = Relu(s2)
        }""")
    rule = Rule("split-first", Op("Split", Var("x"), ...), lambda rw, m: m["x"])
    assert not apply_rules(graph, [rule]).changed
    assert "output %s2 is read but the replacement does not produce it" in \
        fusion_log(graph).records[0].reason


def test_rules_that_never_settle_raise():
    graph = graph_of("g (float[3] a) => (float[3] y) { r = Relu(a) y = Neg(r) }")

    def replace(rw, m):
        return rw.make_node("Relu", [m["x"]]).outputs[0]

    with pytest.raises(PassError, match="still rewrite after 5 sweeps"):
        apply_rules(graph, [Rule("relu-again", Op("Relu", Var("x")), replace)], max_sweeps=5)


def test_rule_root_must_be_an_op():
    with pytest.raises(TypeError, match="must be an Op or a OneOf of Ops"):
        Rule("bad", Var("x"), lambda rw, m: m["x"])


# --- the log ----------------------------------------------------------------------------------
def test_latest_outcome_per_candidate_wins_and_format_groups_reasons():
    log = FusionLog()
    log.add(FusionRecord("p", "r", "n1", "Add", "no-match", "input 1 of Add is Mul", depth=2))
    log.add(FusionRecord("p", "r", "n2", "Add", "no-match", "input 1 of Add is Mul", depth=2))
    log.add(FusionRecord("p", "r", "n3", "Add", "no-match", "input 0 of Add is Relu", depth=1))
    log.add(FusionRecord("p", "r", "n3", "Add", "rewritten", depth=3, created=("g1",)))
    assert [(s.tried, s.matched, s.rewritten) for s in log.stats()] == [(3, 1, 1)]
    text = log.format()
    assert "r: 2 x input 1 of Add is Mul [n1, n2]" in text
    assert "Relu" not in text


def test_each_graph_has_its_own_log():
    first, second = graph_of(SHARED), graph_of(SHARED)
    apply_rules(first, [_relu_sigmoid_to_hardsigmoid()])
    assert fusion_log(first).records and not fusion_log(second).records
