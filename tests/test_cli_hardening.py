"""User mistakes get one line and exit 2 before any work; ignored options are reported; numbers in
summaries are comparable; the public API is one light import."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import graphopt
from graphopt.cli import main
from graphopt.testing import parse_model

MODEL = '''<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8] x) => (float[N, 8] y) { a = Identity(x) b = Relu(a) y = Add(b, b) }'''
CUSTOM = '''<ir_version: 8, opset_import: ["" : 17, "com.acme" : 1]>
g (float[2] x) => (float[2] y) { t = com.acme.Frob(x) y = Relu(t) }'''
CONV = ("""<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 2, 6, 6] x) => (float[1, 4, 6, 6] y) <float[4, 2, 3, 3] w = {%s}>
{ c = Conv <pads = [1, 1, 1, 1]> (x, w) y = Relu(c) }""" % ", ".join(["0.25", "-0.5"] * 36))


def save(tmp_path, text, name="m.onnx"):
    path = tmp_path / name
    onnx.save_model(parse_model(text), path)
    return path


@pytest.fixture
def model_path(tmp_path):
    return save(tmp_path, MODEL)


def invoke(*args):
    """(exit code, stdout, stderr) of an in-process CLI run."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_error_line(code, stderr, fragment, expected_code=2):
    assert code == expected_code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), stderr
    assert fragment in lines[0], lines[0]
    assert "internal error" not in stderr and "Traceback" not in stderr


# --- user mistakes: exit 2, one line, nothing written -----------------------------------------
def test_verify_with_an_op_onnxruntime_cannot_run(tmp_path):
    path, out = save(tmp_path, CUSTOM), tmp_path / "o.onnx"
    for flag in ("--verify", "--bisect"):
        code, stdout, err = invoke("optimize", path, "-o", out, flag)
        one_error_line(code, err, "cannot verify: onnxruntime does not run the input model")
        assert "com.acme::Frob" in err and "pass " not in stdout  # refused before any pass
        assert not out.exists()


def test_output_naming_a_directory(model_path, tmp_path):
    (tmp_path / "folder").mkdir()
    code, stdout, err = invoke("optimize", model_path, "-o", tmp_path / "folder")
    one_error_line(code, err, "is a directory")
    assert stdout == ""  # refused before the model is even read


def test_output_equal_to_input_and_missing_folder(model_path, tmp_path):
    one_error_line(*invoke("optimize", model_path, "-o", model_path)[::2], "is an input")
    code, _, err = invoke("optimize", model_path, "-o", tmp_path / "nowhere" / "o.onnx")
    one_error_line(code, err, "folder")
    code, _, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "--dump-ir",
                          model_path)
    one_error_line(code, err, "is a file, not a folder")


def test_run_output_into_a_missing_folder_fails_before_compiling(model_path, tmp_path):
    code, stdout, err = invoke("run", model_path, "--output", tmp_path / "no" / "out.npz")
    one_error_line(code, err, "folder")
    assert "kernels" not in stdout  # nothing was compiled


def test_emit_c_checks_its_output_folder_before_reading_the_model(tmp_path):
    (tmp_path / "file").write_text("")
    # the model does not exist either: the -o error proves the folder is checked first
    code, stdout, err = invoke("emit-c", tmp_path / "missing.onnx", "-o", tmp_path / "file" / "b")
    one_error_line(code, err, "-o ")
    assert "cannot create it under" in err and stdout == ""


@pytest.mark.parametrize("args", [["--calib", "data.npz"], ["--dynamic", "--eval", "data.npz"]])
def test_quantize_refuses_custom_ops_onnxruntime_cannot_run(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    path, out = save(tmp_path, CUSTOM), tmp_path / "q.onnx"
    np.savez(tmp_path / "data.npz", x=np.ones((4, 2), np.float32))
    code, _, err = invoke("quantize", path, "-o", out, "-q", *args)
    one_error_line(code, err, "no kernel for com.acme::Frob", expected_code=3)
    assert not out.exists()


def test_make_example_needs_force_to_overwrite(tmp_path):
    path = tmp_path / "ex.onnx"
    assert invoke("make-example", path)[0] == 0
    before = path.read_bytes()
    code, _, err = invoke("make-example", path)
    one_error_line(code, err, "pass --force")
    assert invoke("make-example", path, "--force")[0] == 0
    assert path.read_bytes() == before


@pytest.mark.parametrize("args, fragment", [
    (["--json", "{tmp}/missing/r.json"], "does not exist"),
    (["--trace", "{tmp}"], "is a directory"),
    (["--json", "{tmp}/r.json", "--trace", "{tmp}/r.json"], "both name"),
    (["-O1", "--passes", "eliminate-dead-code"], "-O1 and --passes"),
])
def test_npu_arguments_are_checked_first(tmp_path, args, fragment):
    path = save(tmp_path, CONV)
    code, stdout, err = invoke("npu", path, *[a.format(tmp=tmp_path) for a in args])
    one_error_line(code, err, fragment)
    assert stdout == ""


def test_debug_shows_the_plugins_own_traceback(model_path, tmp_path):
    plugin = tmp_path / "boom.py"
    plugin.write_text("def helper():\n    raise ValueError('plugin bug')\nhelper()\n")
    code, _, err = invoke("--debug", "optimize", model_path, "-o", tmp_path / "o.onnx",
                          "--plugin", plugin)
    assert code == 2
    assert "Traceback" in err and f'File "{plugin}", line 2, in helper' in err
    assert err.strip().splitlines()[-1].startswith("graphopt: error: plugin:")


# --- options that would be ignored ---------------------------------------------------------------
def test_optimize_level_with_passes_is_refused(model_path, tmp_path):
    code, _, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "-O3", "--passes",
                          "cse")
    one_error_line(code, err, "-O3 and --passes both given")


def test_inputs_and_dim_without_verify_warn(model_path, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.ones((2, 8), np.float32))
    code, _, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "-q",
                          "--inputs", tmp_path / "in.npz", "--dim", "N=2")
    assert code == 0, err
    assert "--inputs is ignored" in err and "--dim is ignored" in err


@pytest.mark.parametrize("dim, fragment", [("Q=2", "no input has a dim named 'Q'"),
                                           ("N=0", "positive integer"),
                                           ("N", "positive integer")])
def test_bad_dims_are_refused(model_path, tmp_path, dim, fragment):
    code, _, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "--verify",
                          "--dim", dim)
    one_error_line(code, err, fragment)
    assert not (tmp_path / "o.onnx").exists()


def test_extra_npz_arrays_are_named_in_a_warning(model_path, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.ones((2, 8), np.float32), labels=np.zeros(2))
    code, stdout, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "--verify",
                               "--inputs", tmp_path / "in.npz")
    assert code == 0, err
    assert "ignoring arrays that are not model inputs: labels" in err
    assert "outputs match" in stdout


def test_skip_passes_drops_them_from_the_preset(model_path, tmp_path):
    code, stdout, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "-O1",
                               "--skip-passes", "remove-identity, cse")
    assert code == 0, err
    pipeline = next(line for line in stdout.splitlines() if line.startswith("pipeline"))
    assert "remove-identity" not in pipeline and "cse" not in pipeline
    assert "fold-constants" in pipeline
    assert [n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node] == \
        ["Identity", "Relu", "Add"]
    code, _, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx", "--skip-passes",
                          "no-such-pass")
    one_error_line(code, err, "unknown pass 'no-such-pass'")


# --- honest numbers ------------------------------------------------------------------------------
def test_flops_before_use_the_dims_the_optimizer_resolved():
    from graphopt.analysis import model_stats, with_dims_of

    text = '''<ir_version: 8, opset_import: ["" : 17]>
        g (float[{n}, 16] x) => (float[{n}, 4] y) <float[16, 4] w = {{{w}}}>
        {{ y = MatMul(x, w) }}'''
    weights = ", ".join(["0.5"] * 64)
    before = graphopt.load(parse_model(text.format(n="unk__1", w=weights)))
    after = graphopt.load(parse_model(text.format(n=8, w=weights)))
    assert model_stats(before).flops == 2 * 16 * 4  # the symbol counts as 1
    resolved = with_dims_of(before, after)
    assert model_stats(resolved).flops == model_stats(after).flops == 8 * 2 * 16 * 4
    assert before.inputs[0].type.shape == ("unk__1", 16)  # the original graph is untouched


def test_one_byte_format_everywhere():
    from graphopt.analysis import human, human_bytes

    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 3 << 20, 5 << 30)] == \
        ["0 B", "1023 B", "1.00 KiB", "1.50 KiB", "3.00 MiB", "5.00 GiB"]
    assert [human(n) for n in (950, 47_530, 2_880_000_000)] == ["950", "47.53K", "2.88G"]


def test_optimize_summary_sizes_and_symbolic_note(model_path, tmp_path):
    code, stdout, err = invoke("optimize", model_path, "-o", tmp_path / "o.onnx")
    assert code == 0, err
    size_line = next(line for line in stdout.splitlines() if line.startswith("file size"))
    assert size_line.split()[-1] == "B"
    assert "(FLOPs count each symbolic dim as 1, before and after alike)" in stdout


def test_npu_energies_share_one_unit(tmp_path):
    path = save(tmp_path, CONV)
    code, stdout, err = invoke("npu", path, "--passes", "eliminate-dead-code")
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].endswith(")") and "(energies in " in lines[0]
    energy = next(line for line in lines if line.startswith("energy "))
    units = [tok for tok in energy.replace("(", " ").replace(")", " ").replace(",", " ").split()
             if tok.endswith("J")]
    assert len(set(units)) == 1, energy


def test_passes_lists_whole_docs_and_levels():
    from graphopt.pass_api import registered_passes

    code, stdout, _ = invoke("passes")
    assert code == 0
    info = registered_passes()["fuse-bn-into-conv"]
    line = next(line for line in stdout.splitlines() if line.startswith("fuse-bn-into-conv "))
    assert info.summary in line and "[-O2 -O3]" in line
    assert info.summary.endswith("+ beta.")  # the whole first paragraph, not its first line
    cse = next(line for line in stdout.splitlines() if line.startswith("cse "))
    assert cse.endswith("[-O1 -O2 -O3]")


# --- public API --------------------------------------------------------------------------------
def test_import_graphopt_is_light_and_complete():
    code = ("import sys, graphopt\n"
            "heavy = [m for m in ('onnx', 'numpy', 'onnxruntime') if m in sys.modules]\n"
            "import graphopt.cli\n"
            "heavy += [m for m in ('onnx', 'numpy') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    for name in ("load", "save", "optimize", "compile", "run_npu"):
        fn = getattr(graphopt, name)
        assert fn.__doc__ and fn.__annotations__.get("return"), name
    assert graphopt.Graph.__name__ == "Graph" and callable(graphopt.register_pass)


def test_readme_snippet_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path / "cache"))
    exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "example.opt.onnx").is_file()


def test_optimize_and_compile_leave_the_callers_graph_alone(tmp_path):
    graph = graphopt.load(parse_model(MODEL))
    before = str(graph)
    result = graphopt.optimize(graph, level=2)
    assert "Identity" not in result.graph.op_counts() and str(graph) == before
    compiled = graphopt.compile(graph, optimize=False, target="portable",
                                cache_dir=tmp_path / "cache")
    x = np.ones((1, 8), np.float32)
    np.testing.assert_array_equal(compiled.run({"x": x})[0], 2 * x)
    assert str(graph) == before and compiled.graph is not graph


def test_npu_report_json_round_trip(tmp_path):
    path = save(tmp_path, CONV)
    report = graphopt.run_npu(path, "eyeriss", passes="eliminate-dead-code")
    code, _, err = invoke("npu", path, "--passes", "eliminate-dead-code", "--json",
                          tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["totals"]["macs"] == \
        report.to_dict()["totals"]["macs"]
