"""Fusion groups are one IR fact: found once, stamped by group-epilogues, read by every consumer."""
import numpy as np
import onnx
from onnx import TensorProto, helper

from graphopt import load, optimize
from graphopt.ir.fusion import find_fusion_groups, fusion_groups
from graphopt.npu.workload import build_layers

F = TensorProto.FLOAT


def _block(residual_from_later: bool = False, relu_is_output: bool = False) -> onnx.ModelProto:
    """x -> Conv -> BatchNormalization -> Relu -> Add(x) -> y (a ResNet basic-block tail)."""
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor("w", F, [4, 4, 3, 3], rng.standard_normal(144).tolist()),
             *(helper.make_tensor(n, F, [4], v) for n, v in
               [("s", [1.0, 2.0, 0.5, 1.5]), ("b", [0.1] * 4), ("m", [0.0] * 4),
                ("v", [1.0] * 4)])]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"])]
    other = "x"
    if residual_from_later:  # the residual is computed after the conv: not ready for its tiles
        nodes.append(helper.make_node("Sigmoid", ["x"], ["late"]))
        other = "late"
    nodes.append(helper.make_node("Add", ["r", other], ["y"]))
    outputs = [helper.make_tensor_value_info("y", F, [1, 4, 6, 6])]
    if relu_is_output:
        outputs.append(helper.make_tensor_value_info("r", F, [1, 4, 6, 6]))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", F, [1, 4, 6, 6])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_bn_relu_add_is_one_group_after_O2():
    graph = optimize(_block(), level=2).graph
    groups = fusion_groups(graph)
    assert [g.describe() for g in groups] == ["Conv -> Relu -> Add"]
    assert groups[0].output.name == "y"


def test_npu_reads_the_same_group():
    graph = optimize(_block(), level=2).graph
    (group,) = fusion_groups(graph)
    layers = build_layers(graph)
    assert [layer.op_type for layer in layers] == ["Conv"]  # Relu and Add run inside it
    conv = layers[0]
    assert conv.kind == "mac" and conv.outputs == (("y", 144),)
    assert ("x", 144) in conv.inputs  # the residual operand is read by the fused layer
    assert conv.vector_ops == 2 * 144  # one op per element each for Relu and Add
    assert conv.name == (group.anchor.name or "Conv")


def test_group_stops_where_fusing_would_change_the_result():
    late = optimize(_block(residual_from_later=True), level=2).graph
    assert [g.describe() for g in fusion_groups(late)] == ["Conv -> Relu"]
    # A graph output must be written: the group ends at the node that produces it.
    exposed = optimize(_block(relu_is_output=True), level=2).graph
    assert [g.describe() for g in fusion_groups(exposed)] == ["Conv -> Relu"]


def test_a_filter_cuts_the_group_and_stale_groups_are_ignored():
    graph = load(_block())
    only_relu = find_fusion_groups(graph, accepts=lambda node, chain: node.op_type != "Add")
    assert all("Add" not in g.describe() for g in only_relu)
    graph = optimize(_block(), level=2).graph
    (group,) = fusion_groups(graph)
    relu = group.epilogue[0]
    graph.replace_all_uses_with(relu.outputs[0], group.anchor.outputs[0])
    graph.remove(relu)
    assert fusion_groups(graph) == []  # a member is gone: consumers no longer see the group


def test_export_records_membership_and_copy_keeps_groups():
    graph = optimize(_block(), level=2).graph
    from graphopt.onnx_io import export_model

    model = export_model(graph)
    stamped = [n.op_type for n in model.graph.node
               if any(p.key == "graphopt.fusion" for p in n.metadata_props)]
    assert stamped == ["Conv", "Relu", "Add"]
    twin = graph.copy()
    assert [g.describe() for g in fusion_groups(twin)] == ["Conv -> Relu -> Add"]
    assert fusion_groups(twin)[0].anchor is not fusion_groups(graph)[0].anchor


def test_backend_and_npu_read_the_same_group():
    """The C backend runs the IR group as one kernel; the NPU charges it as one layer."""
    from graphopt.backend import compile as compile_model
    from graphopt.numerics import random_inputs, run_onnxruntime
    from graphopt.testing import assert_outputs_match

    model = _block()
    graph = optimize(model, level=2).graph
    (group,) = fusion_groups(graph)
    compiled = compile_model(graph, optimize=False)
    (program,) = compiled.programs()
    (step,) = [s for s in program.steps if s.op_type == "Conv"]
    assert [op.op_type for op in step.epilogue] == [n.op_type for n in group.epilogue]
    assert len(program.steps) == 1
    npu_layers = build_layers(graph)
    assert [layer.op_type for layer in npu_layers] == [step.op_type]
    feeds = random_inputs(graph)
    assert_outputs_match(["y"], run_onnxruntime(model, feeds), compiled.run(feeds))
