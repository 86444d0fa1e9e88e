"""The importer's node-by-node opset upgrade matches onnx's version converter."""
import numpy as np
import onnx
import pytest

from graphopt import onnx_io
from graphopt.ir.graph import Graph
from graphopt.onnx_io import importer
from graphopt.onnx_io.opset_upgrade import upgrade_plan
from graphopt.testing import assert_same_outputs, light_models_dir, parse_model


def _import_both(model: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch) -> tuple[Graph, Graph]:
    """(through onnx's converter, node by node); the model must take the node-by-node path."""
    assert upgrade_plan(model, model.opset_import[0].version, importer.MIN_OPSET)
    native = onnx_io.load(model)
    with monkeypatch.context() as patch:
        patch.setattr(importer, "upgrade_plan", lambda *args: False)
        converted = onnx_io.load(model)
    return converted, native


def _signature(graph: Graph, known: set[str]) -> list[tuple]:
    """Per node: op, attributes, inputs and outputs (constants by value, values the model names
    by name: the names of values an upgrade adds are the upgrader's own), output types."""
    def read(value):
        if value is None or value.const is not None:
            return None if value is None else (value.const.dtype.str, value.const.tolist())
        return value.name if value.name in known else "new"

    return [(n.op_type, sorted(n.attrs.items()), [read(v) for v in n.inputs],
             [(read(v), v.type) for v in n.outputs]) for n in graph.nodes]


def _assert_same_upgrade(model: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch) -> Graph:
    converted, native = _import_both(model, monkeypatch)
    assert native.opset == converted.opset == importer.MIN_OPSET
    known = {name for node in model.graph.node for name in node.output}
    assert _signature(native, known) == _signature(converted, known)
    assert [v.name for v in native.outputs] == [v.name for v in model.graph.output]
    assert_same_outputs(model, native)
    return native


@pytest.mark.parametrize("path", [light_models_dir() / f"light_{name}.onnx"
                                  for name in ("squeezenet", "bvlc_alexnet", "inception_v2")],
                         ids=lambda p: p.stem)
def test_light_models_upgrade_like_the_converter(path, monkeypatch):
    # squeezenet: Softmax over 4-D (Flatten path), Dropout; alexnet: Dropout's mask type,
    # Softmax on the last axis; inception_v2: Unsqueeze axes, BatchNormalization.
    _assert_same_upgrade(onnx.load(path), monkeypatch)


@pytest.mark.parametrize("body, opset, out", [
    ("y = Unsqueeze<axes=[0, 3]>(x)", 11, "[1, 2, 3, 1, 4]"),
    ("u = Unsqueeze<axes=[1]>(x)\n y = Squeeze<axes=[1]>(u)", 12, "[2, 3, 4]"),
    ("y = ReduceSum<axes=[-1], keepdims=0>(x)", 12, "[2, 3]"),
    ("y = ReduceSum<keepdims=1>(x)", 12, "[1, 1, 1]"),
    ("y = Dropout<ratio=0.25>(x)", 9, "[2, 3, 4]"),
    ("y = Dropout(x)", 11, "[2, 3, 4]"),
    ("y = Softmax(x)", 11, "[2, 3, 4]"),
    ("y = LogSoftmax<axis=-1>(x)", 12, "[2, 3, 4]"),
    ("r = Relu(x)\n y = Softmax<axis=1>(r)", 9, "[2, 3, 4]"),
])
def test_adapters_match_the_converter(body, opset, out, monkeypatch):
    model = parse_model(f'''<ir_version: 6, opset_import: ["" : {opset}]>
        g (float[2, 3, 4] x) => (float{out} y) {{ {body} }}''')
    _assert_same_upgrade(model, monkeypatch)


def test_softmax_of_a_graph_output_keeps_the_output_name(monkeypatch):
    model = parse_model('''<ir_version: 6, opset_import: ["" : 11]>
        g (float[2, 3, 4] x) => (float[2, 3, 4] y, float[2, 3, 4] z) {
            y = Softmax<axis=1>(x)
            z = Relu(y) }''')
    graph = _assert_same_upgrade(model, monkeypatch)
    assert [n.op_type for n in graph.nodes] == ["Shape", "Flatten", "Softmax", "Reshape", "Relu"]
    assert graph.outputs[0].producer.op_type == "Reshape"
    assert graph.outputs[0].type.shape == (2, 3, 4)


def test_ops_without_an_adapter_go_through_the_converter(monkeypatch):
    # Pad-2 keeps `pads` as an attribute; Pad-11 reads it as an input (a converter adapter).
    model = parse_model('''<ir_version: 6, opset_import: ["" : 10]>
        g (float[2, 3] x) => (float[2, 5] y) { y = Pad<pads=[0, 1, 0, 1]>(x) }''')
    assert not upgrade_plan(model, 10, importer.MIN_OPSET)
    graph = onnx_io.load(model)
    assert graph.opset == importer.MIN_OPSET
    assert graph.nodes[-1].op_type == "Pad" and "pads" not in graph.nodes[-1].attrs
    assert_same_outputs(model, graph)


def test_subgraphs_go_through_the_converter():
    model = parse_model('''<ir_version: 6, opset_import: ["" : 11]>
        g (bool c, float[2] x) => (float[2] y) {
            y = If(c) <then_branch = t () => (float[2] a) { a = Relu(x) },
                       else_branch = e () => (float[2] b) { b = Neg(x) }> }''')
    assert not upgrade_plan(model, 11, importer.MIN_OPSET)
    graph = onnx_io.load(model)
    assert graph.opset == importer.MIN_OPSET
    assert_same_outputs(model, graph, feeds={"c": np.array(True), "x": np.ones(2, np.float32)})
