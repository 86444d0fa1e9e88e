"""A model past protobuf's 2 GB limit goes through `graphopt optimize --verify` and comes out with
its weights in external data (the weights are written straight to disk, never into one proto).

Kept light: the input's weights are a sparse file (one non-zero row per tensor, the rest a hole,
so writing it costs no disk time), and graphopt holds the weights about twice at the peak (the
imported graph and the exported proto; the reference run maps the input file): ~5.5 GB of RSS
for the 2.2 GB model."""
import numpy as np
import onnx
import onnx.helper as oh
from click.testing import CliRunner

from graphopt.cli import main
from graphopt.numerics import run_onnxruntime

ROWS, COLS = 270_000, 1024  # two float32 tensors of 1.1 GB each: 2.2 GB in all, past 2 GiB
ROW = 7  # the one non-zero row of each weight
FILLS = {"W1": 0.5, "W2": 0.25}


def write_big_model(folder):
    """big.onnx + big.onnx.data: y = x + W1[row] + W2[row], with an Identity for -O1 to remove."""
    data = folder / "big.onnx.data"
    nbytes = ROWS * COLS * 4
    refs = []
    with open(data, "wb") as f:
        for i, (name, fill) in enumerate(FILLS.items()):
            f.seek(i * nbytes + ROW * COLS * 4)
            f.write(np.full(COLS, fill, np.float32).tobytes())
            tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT,
                                      data_location=onnx.TensorProto.EXTERNAL)
            tensor.dims.extend([ROWS, COLS])
            for key, value in (("location", data.name), ("offset", str(i * nbytes)),
                               ("length", str(nbytes))):
                tensor.external_data.add(key=key, value=value)
            refs.append(tensor)
        f.truncate(len(FILLS) * nbytes)
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
    x = np.arange(COLS, dtype=np.float32).reshape(1, COLS)
    feeds = tmp_path / "inputs.npz"
    np.savez(feeds, x=x, row=np.array([ROW]))  # the non-zero row, so --verify compares weights
    out = tmp_path / "out" / "big_opt.onnx"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "-O1", "--verify",
                                       "--inputs", str(feeds)])
    assert result.exit_code == 0, result.stderr
    assert "outputs match" in result.stdout
    data = out.with_name("big_opt.onnx.data")
    assert data.stat().st_size >= 2 * ROWS * COLS * 4
    model = onnx.load(out, load_external_data=False)
    assert [n.op_type for n in model.graph.node].count("Identity") == 0
    # The written .data holds the weights: onnxruntime maps it and gathers row ROW of each.
    (y,) = run_onnxruntime(out, {"x": x, "row": np.array([ROW])})
    np.testing.assert_array_equal(y, x + np.float32(sum(FILLS.values())))
    (y,) = run_onnxruntime(out, {"x": x, "row": np.array([ROW + 1])})
    np.testing.assert_array_equal(y, x)
