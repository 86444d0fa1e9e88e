"""A model past protobuf's 2 GB limit goes through `graphopt optimize --verify` and comes out with
its weights in external data (the weights are written straight to disk, never into one proto)."""
import numpy as np
import onnx
import onnx.helper as oh
from click.testing import CliRunner

from graphopt.cli import main

ROWS, COLS = 270_000, 1024  # two float32 tensors of 1.1 GB each: 2.2 GB in all


def write_big_model(folder):
    data = folder / "big.onnx.data"
    refs = []
    with open(data, "wb") as f:
        for name, fill in (("W1", 0.5), ("W2", 0.25)):
            offset = f.tell()
            block = np.full((ROWS // 10, COLS), fill, np.float32)
            for _ in range(10):
                block.tofile(f)
            tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT,
                                      data_location=onnx.TensorProto.EXTERNAL)
            tensor.dims.extend([ROWS, COLS])
            for key, value in (("location", data.name), ("offset", str(offset)),
                               ("length", str(ROWS * COLS * 4))):
                tensor.external_data.add(key=key, value=value)
            refs.append(tensor)
    nodes = [oh.make_node("Gather", ["W1", "row"], ["r1"], axis=0),
             oh.make_node("Gather", ["W2", "row"], ["r2"], axis=0),
             oh.make_node("Add", ["x", "r1"], ["s"]),
             oh.make_node("Identity", ["s"], ["t"]),
             oh.make_node("Add", ["t", "r2"], ["y"])]
    inputs = [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, COLS]),
              oh.make_tensor_value_info("row", onnx.TensorProto.INT64, [1])]
    graph = oh.make_graph(nodes, "big", inputs,
                          [oh.make_tensor_value_info("y", 1, [1, COLS])], refs)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.save_model(model, folder / "big.onnx")
    return folder / "big.onnx"


def test_over_2gb_model_optimizes_verifies_and_saves(tmp_path):
    src = write_big_model(tmp_path)
    out = tmp_path / "out" / "big_opt.onnx"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "-O1", "--verify"])
    assert result.exit_code == 0, result.stderr
    assert "outputs match" in result.stdout
    data = out.with_name("big_opt.onnx.data")
    assert data.stat().st_size >= 2 * ROWS * COLS * 4
    model = onnx.load(out, load_external_data=False)
    assert [n.op_type for n in model.graph.node].count("Identity") == 0
