"""`graphopt optimize | passes | inspect`: summaries, verification, and one-line errors."""
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graphopt.cli import main
from graphopt.pass_api import unregister_pass
from graphopt.testing import parse_model

MODEL = '''<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8] x) => (float[1, 8] y) { a = Identity(x) b = Relu(a) y = Add(b, b) }'''


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(parse_model(MODEL), path)
    return path


def invoke(*args):
    """(exit code, stdout, stderr) of an in-process CLI run."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code, stderr, expected_code, fragment):
    assert code == expected_code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), stderr
    assert fragment in lines[0]
    assert "Traceback" not in stderr


def test_optimize_writes_model_and_summary(model_path, tmp_path):
    out = tmp_path / "out.onnx"
    code, output, _ = invoke("optimize", model_path, "-o", out, "--passes",
                             "eliminate-dead-code", "--verify")
    assert code == 0, output
    onnx.checker.check_model(onnx.load(out))
    assert "verified against onnxruntime" in output
    assert "nodes" in output and "eliminate-dead-code" in output and "file size" in output


@pytest.mark.parametrize("content, fragment", [
    (None, "no such file"),
    (b"definitely not protobuf", "not a readable ONNX model"),
    ("truncate", "not a readable ONNX model"),
])
def test_bad_files_fail_cleanly_without_output(tmp_path, model_path, content, fragment):
    path = tmp_path / "bad.onnx"
    if content == "truncate":
        path.write_bytes(model_path.read_bytes()[:40])
    elif content is not None:
        path.write_bytes(content)
    out = tmp_path / "out.onnx"
    code, _, err = invoke("optimize", path, "-o", out)
    assert_one_line_error(code, err, 2, fragment)
    assert not out.exists()


def test_plugin_that_raises_is_one_line(model_path, tmp_path):
    plugin = tmp_path / "p.py"
    plugin.write_text("import nonexistent_module_xyz\n")
    code, _, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "--plugin", plugin)
    assert_one_line_error(code, err, 2, "ModuleNotFoundError")
    assert not (tmp_path / "o.onnx").exists()


def test_pass_raising_at_run_time_names_the_pass(model_path, tmp_path):
    plugin = tmp_path / "p.py"
    plugin.write_text("from graphopt import register_pass\n"
                      "@register_pass('t-explode', level=0)\n"
                      "def explode(graph):\n    '''Fails.'''\n    raise KeyError('x')\n")
    try:
        code, _, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "--plugin",
                              plugin, "--passes", "t-explode")
        assert_one_line_error(code, err, 1, "pass 't-explode'")
        assert not (tmp_path / "o.onnx").exists()
    finally:
        unregister_pass("t-explode")


WRONG_PASS = '''
from graphopt import register_pass

@register_pass("t-wrong", level=0)
def wrong(graph):
    """Turns Add into Sub: changes the numbers on purpose."""
    for node in graph.nodes:
        if node.op_type == "Add":
            node.op_type = "Sub"
            return True
    return False
'''


def test_verify_and_bisect_point_at_the_pass(model_path, tmp_path):
    plugin = tmp_path / "w.py"
    plugin.write_text(WRONG_PASS)
    out = tmp_path / "o.onnx"
    try:
        code, _, err = invoke("optimize", model_path, "-o", out, "--plugin", plugin,
                              "--passes", "eliminate-dead-code,t-wrong", "--verify")
        assert_one_line_error(code, err, 4, "--bisect")
        code, _, err = invoke("optimize", model_path, "-o", out, "--plugin", plugin,
                              "--passes", "eliminate-dead-code,t-wrong", "--bisect")
        assert_one_line_error(code, err, 4, "pass 't-wrong' changed the outputs")
        assert not out.exists()
    finally:
        unregister_pass("t-wrong")


def test_unknown_domain_ops_are_listed_and_kept(tmp_path):
    model = parse_model('''<ir_version: 8, opset_import: ["" : 17, "com.acme" : 1]>
        g (float[2] x) => (float[2] y) { t = com.acme.Frob(x) y = Relu(t) }''')
    path, out = tmp_path / "c.onnx", tmp_path / "o.onnx"
    onnx.save_model(model, path)
    code, output, err = invoke("optimize", path, "-o", out, "--passes", "eliminate-dead-code")
    assert code == 0, err
    assert "passed through untouched: com.acme::Frob" in output.splitlines()[1]
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Frob", "Relu"]


def test_output_path_equal_to_input_is_refused(model_path):
    code, _, err = invoke("optimize", model_path, "-o", model_path)
    assert_one_line_error(code, err, 2, "is an input of this command")


def test_passes_and_inspect_commands(model_path):
    code, output, _ = invoke("passes")
    assert code == 0 and "eliminate-dead-code" in output
    code, output, _ = invoke("inspect", model_path)
    assert code == 0 and "Relu" in output and "input  %x: f32[1x8]" in output


def test_explain_fusions_reports_rules_and_misses(tmp_path):
    from graphopt.examples import make_example_model

    path, out = tmp_path / "ex.onnx", tmp_path / "o.onnx"
    onnx.save_model(make_example_model(), path)
    code, output, err = invoke("optimize", path, "-o", out, "-O2", "--explain-fusions", "--verify")
    assert code == 0, err
    assert "outputs match" in output
    table = output[output.index("rule "):]
    assert "bn-into-conv" in table and "rewritten" in table


def test_make_example_then_optimize_shrinks_it(tmp_path):
    path, out = tmp_path / "ex.onnx", tmp_path / "o.onnx"
    assert invoke("make-example", path)[0] == 0
    code, output, err = invoke("optimize", path, "-o", out, "--verify")
    assert code == 0, err
    optimized = onnx.load(out)
    ops = [n.op_type for n in optimized.graph.node]
    assert "BatchNormalization" not in ops and "Shape" not in ops and "Identity" not in ops
    assert len(ops) < len(onnx.load(path).graph.node)


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((1, 3), np.float32), "dim 1 is 3, expected 8"),
    (np.zeros((1, 8), np.float64), "has dtype float64"),
])
def test_wrong_inputs_file_is_one_line(model_path, tmp_path, array, fragment):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=array)
    code, _, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "--verify",
                          "--inputs", inputs)
    assert_one_line_error(code, err, 2, fragment)
    assert not (tmp_path / "o.onnx").exists()
