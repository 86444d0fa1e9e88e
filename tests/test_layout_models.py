"""-O2 with sink-transposes never adds a Transpose to a real model (the small shared and onnx light
models; the large ones are checked by hand, counts in the issue 15 notes), and the layout CLI
flags: --explain-layout, --io-layout."""
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from graphopt.cli import main
from graphopt.optimizer import optimize
from graphopt.testing import light_models_dir, sample_models_dir

sys.path.insert(0, str(Path(__file__).parent / "passes"))
from _layout_models import tf_style_model  # noqa: E402

SMALL = [light_models_dir() / f"light_{n}.onnx" for n in ("squeezenet", "shufflenet")] + [
    sample_models_dir() / f"{n}.onnx" for n in ("digits_cnn", "mlp", "mobilenet_v2")]


def _transposes(nodes) -> int:
    return sum(n.op_type == "Transpose" for n in nodes)


@pytest.mark.parametrize("path", SMALL, ids=lambda p: p.stem)
def test_o2_adds_no_transpose(path):
    if not path.exists():
        pytest.skip(f"{path} not available")
    model = onnx.load(str(path))
    graph = optimize(model, level=2).graph
    assert _transposes(graph.nodes) <= _transposes(model.graph.node)


@pytest.fixture
def tf_model(tmp_path):
    path = tmp_path / "tf.onnx"
    onnx.save(tf_style_model(), str(path))
    return path


def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_explain_layout_reports_chains_and_totals(tf_model, tmp_path):
    code, out, err = _invoke("optimize", tf_model, "-o", tmp_path / "o.onnx", "--explain-layout",
                             "--verify")
    assert code == 0, err
    assert "layout: Transposes 8 -> 1" in out
    assert out.count("Conv '") == 4


def test_io_layout_nchw_writes_an_nchw_interface(tf_model, tmp_path):
    out_path = tmp_path / "o.onnx"
    code, _, err = _invoke("optimize", tf_model, "-o", out_path, "--io-layout", "nchw")
    assert code == 0, err
    written = onnx.load(str(out_path))
    assert _transposes(written.graph.node) == 0
    dims = [d.dim_value for d in written.graph.input[0].type.tensor_type.shape.dim]
    assert written.graph.input[0].name == "x" and dims == [1, 3, 8, 8]


def test_io_layout_with_verify_is_one_line_error(tf_model, tmp_path):
    code, _, err = _invoke("optimize", tf_model, "-o", tmp_path / "o.onnx", "--io-layout", "nhwc",
                           "--verify")
    assert code == 2
    assert "--io-layout nhwc" in err and len(err.strip().splitlines()) == 1


def test_explain_layout_says_when_nothing_moved(tmp_path):
    path = sample_models_dir() / "mlp.onnx"
    if not path.exists():
        pytest.skip(f"{path} not available")
    code, out, err = _invoke("optimize", path, "-o", tmp_path / "o.onnx", "--explain-layout")
    assert code == 0, err
    assert "layout: no Transpose moved (0 Transposes, 0 B)" in out
