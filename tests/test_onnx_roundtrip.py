"""Import -> export with no passes is lossless: checker-clean and identical onnxruntime outputs."""
import os

import numpy as np
import onnx
import onnx.helper as oh
import onnx.parser
import pytest

from graphopt import onnx_io
from graphopt.errors import BadInputError, UnsupportedError
from graphopt.numerics import random_inputs, run_onnxruntime
from graphopt.testing import light_models_dir, parse_model, sample_models_dir

LIGHT = light_models_dir()
SHARED = sample_models_dir()


def roundtrip_equal(model: onnx.ModelProto) -> None:
    graph = onnx_io.load(model)
    graph.verify()
    exported = onnx_io.export_model(graph)
    onnx.checker.check_model(exported)
    feeds = random_inputs(graph, seed=1)
    for want, got in zip(run_onnxruntime(model, feeds), run_onnxruntime(exported, feeds)):
        np.testing.assert_array_equal(want, got)


@pytest.mark.parametrize("path", sorted(LIGHT.glob("*.onnx")), ids=lambda p: p.stem)
def test_light_models_roundtrip(path):
    roundtrip_equal(onnx.load(path))


@pytest.mark.parametrize("name", ["mlp.onnx", "digits_cnn.onnx", "mobilenet_v2_raw.onnx"])
def test_shared_models_roundtrip(name):
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    roundtrip_equal(onnx_io.read_model(path))


def test_constant_nodes_become_initializers():
    model = parse_model('''<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) { c = Constant<value_floats=[1.0, 2.0]>() y = Add(x, c) }''')
    graph = onnx_io.load(model)
    assert [n.op_type for n in graph.nodes] == ["Add"]
    np.testing.assert_array_equal(graph.nodes[0].const_input(1), [1.0, 2.0])
    roundtrip_equal(model)


def test_symbolic_dims_and_metadata_survive():
    model = parse_model('''<ir_version: 8, opset_import: ["" : 17], producer_name: "me",
        metadata_props: ["k": "v"]> g (float[N, 3] x) => (float[N, 3] y) { y = Relu(x) }''')
    graph = onnx_io.load(model)
    assert graph.inputs[0].shape == ("N", 3)
    out = onnx_io.export_model(graph)
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert out.producer_name == "me" and out.metadata_props[0].value == "v"


def test_control_flow_bodies_kept_with_outer_reads():
    then_body = oh.make_graph([oh.make_node("Add", ["x", "bias"], ["t"])], "then", [],
                              [oh.make_tensor_value_info("t", onnx.TensorProto.FLOAT, [2])])
    else_body = oh.make_graph([oh.make_node("Sub", ["x", "bias"], ["e"])], "else", [],
                              [oh.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [2])])
    nodes = [oh.make_node("Relu", ["x0"], ["x"]),
             oh.make_node("If", ["cond"], ["y"], then_branch=then_body, else_branch=else_body)]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x0", onnx.TensorProto.FLOAT, [2]),
                                   oh.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
                      [onnx.numpy_helper.from_array(np.array([1, 2], np.float32), "bias")])
    model = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    graph = onnx_io.load(model)
    if_node = graph.nodes[1]
    assert {v.name for v in if_node.implicit_inputs} == {"x", "bias"}
    roundtrip_equal(model)


def test_custom_domain_ops_pass_through():
    model = parse_model('''<ir_version: 8, opset_import: ["" : 17, "com.acme" : 1]>
        g (float[2] x) => (float[2] y) { t = com.acme.Frob<k=3>(x) y = Relu(t) }''')
    graph = onnx_io.load(model)
    exported = onnx_io.export_model(graph)
    node = exported.graph.node[0]
    assert (node.domain, node.op_type, node.attribute[0].i) == ("com.acme", "Frob", 3)


def test_old_opset_is_upgraded():
    model = parse_model('''<ir_version: 7, opset_import: ["" : 11]>
        g (float[2, 3] x) => (float[2, 3] y) { y = Softmax<axis=1>(x) }''')
    graph = onnx_io.load(model)
    assert graph.opset == 13
    roundtrip_equal(model)


def test_newer_opset_than_onnx_knows_is_refused():
    model = parse_model('''<ir_version: 8, opset_import: ["" : 17]> g (float[2] x) => (float[2] y)
        { y = Relu(x) }''')
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    with pytest.raises(UnsupportedError, match="opset"):
        onnx_io.load(model)


def test_external_data_outside_folder_is_refused(tmp_path):
    model = onnx.parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]> g (float[1024] x) => (float[1024] y)
        { y = Add(x, w) }''')
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(1024, np.float32), "w"))
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save_model(model, inner / "m.onnx", save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    (tmp_path / "secret.bin").write_bytes((inner / "w.bin").read_bytes())
    tampered = onnx.load(inner / "m.onnx", load_external_data=False)
    for tensor in tampered.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    onnx.save_model(tampered, inner / "m.onnx")
    with pytest.raises(BadInputError, match="outside the model's folder"):
        onnx_io.read_model(inner / "m.onnx")


def test_external_data_save_path_roundtrips(tmp_path, monkeypatch):
    """The > 2 GB code path (weights in <name>.data), exercised with a tiny threshold."""
    from graphopt.onnx_io import exporter

    monkeypatch.setattr(exporter, "EXTERNAL_DATA_THRESHOLD", 1000)
    model = onnx.parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]> g (float[4096] x) => (float[4096] y)
        { y = Add(x, w) }''')
    model.graph.initializer.append(onnx.numpy_helper.from_array(
        np.arange(4096, dtype=np.float32), "w"))
    out = tmp_path / "out.onnx"
    onnx_io.save(onnx_io.load(model), out)
    assert (tmp_path / "out.onnx.data").stat().st_size >= 4096 * 4
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", "out.onnx.data"]
    reloaded = onnx_io.read_model(out)
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(reloaded.graph.initializer[0]),
                                  np.arange(4096, dtype=np.float32))
