"""Bad calibration data: one clear line, exit code 2, nothing written (and never unpickled)."""
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graphopt.cli import main
from graphopt.errors import BadInputError
from graphopt.ir.graph import Graph
from graphopt.onnx_io import load
from graphopt.quantization.data import DataSpec, SampleSet
from quant_helpers import conv_net, conv_samples, save_npz


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "conv.onnx"
    onnx.save_model(conv_net(), path)
    return path


def _quantize(model_path, calib, *extra):
    out = model_path.with_name("out.onnx")
    result = CliRunner().invoke(main, ["quantize", str(model_path), "-o", str(out), "--calib",
                                       str(calib), "-q", *extra])
    return result, out


def _assert_bad(result, out, fragment):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("graphopt: error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert not out.exists()


def _object_npz(path):
    np.savez(path, x=np.array([{"evil": 1}, None], dtype=object))
    return path


BAD_FILES = {
    "missing input": (lambda p: save_npz(p, y=conv_samples(2)), "name no model input"),
    "extra input": (lambda p: save_npz(p, x=conv_samples(2), z=conv_samples(2)), "'z'"),
    "wrong shape": (lambda p: save_npz(p, x=np.zeros((2, 1, 3, 9, 8), np.float32)),
                    "dim 2 is 9, expected 8"),
    "wrong rank": (lambda p: save_npz(p, x=np.zeros((2, 8), np.float32)), "needs rank"),
    "wrong dtype": (lambda p: save_npz(p, x=conv_samples(2).astype(np.float64)), "dtype float64"),
    "empty file": (lambda p: save_npz(p), "holds no arrays"),
    "zero samples": (lambda p: save_npz(p, x=np.zeros((0, 1, 3, 8, 8), np.float32)),
                     "0 samples"),
    "nan": (lambda p: save_npz(p, x=np.where(conv_samples(3) > 2, np.nan, conv_samples(3))),
            "NaN/Inf"),
    "inf": (lambda p: save_npz(p, x=np.full((2, 1, 3, 8, 8), np.inf, np.float32)), "NaN/Inf"),
    "pickled objects": (_object_npz, "never unpickles"),
    "not an npz": (lambda p: p.write_bytes(b"not a zip file") and p, "not a readable .npz"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_calibration_file_is_one_line_exit_2(tmp_path, model_path, case):
    make, fragment = BAD_FILES[case]
    calib = tmp_path / "calib.npz"
    make(calib)
    _assert_bad(*_quantize(model_path, calib), fragment)


def test_missing_file_and_bad_mapping(tmp_path, model_path):
    _assert_bad(*_quantize(model_path, tmp_path / "nope.npz"), "no such file")
    calib = save_npz(tmp_path / "c.npz", images=conv_samples(2))
    _assert_bad(*_quantize(model_path, f"{calib}:images=nope"), "names input 'nope'")
    _assert_bad(*_quantize(model_path, f"{calib}:pics=x"), "no array 'pics'")


def test_pickled_arrays_are_never_unpickled(tmp_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    graph = load(conv_net())
    with pytest.raises(BadInputError, match="never unpickles"):
        SampleSet(str(_object_npz(tmp_path / "o.npz")), graph.inputs)


def test_mapping_spec_and_sample_axis(tmp_path):
    graph: Graph = load(conv_net())
    # rank r+1: one full input per sample; rank r with a batch dim: batch-1 slices
    full = save_npz(tmp_path / "a.npz", pics=conv_samples(3), other=np.zeros(2))
    batch = save_npz(tmp_path / "b.npz", x=conv_samples(4)[:, 0])
    assert DataSpec.parse(f"{full}:pics=x").mapping == (("pics", "x"),)
    first = SampleSet(f"{full}:pics=x", graph.inputs)
    second = SampleSet(str(batch), graph.inputs)
    assert len(first) == 3 and len(second) == 4
    assert all(s["x"].shape == (1, 3, 8, 8) for s in list(first) + list(second))


def test_folder_of_files_streams_in_name_order(tmp_path):
    graph = load(conv_net())
    folder = tmp_path / "calib"
    folder.mkdir()
    data = conv_samples(5)
    save_npz(folder / "b.npz", x=data[2:])
    save_npz(folder / "a.npz", x=data[:2])
    samples = SampleSet(str(folder), graph.inputs)
    assert len(samples) == 5
    np.testing.assert_array_equal(np.stack([s["x"] for s in samples]), data)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no .npz files"):
        SampleSet(str(empty), graph.inputs)


def test_different_sample_counts_are_refused(tmp_path):
    from quant_helpers import mlp

    two_inputs = load(mlp())
    with pytest.raises(BadInputError, match="different sample counts"):
        SampleSet(str(save_npz(tmp_path / "m.npz", x=np.zeros((3, 1, 16), np.float32),
                               labels=np.zeros(2))), two_inputs.inputs, labels="labels")


def test_max_drop_needs_eval_data_and_static_needs_calib(tmp_path, model_path):
    calib = save_npz(tmp_path / "c.npz", x=conv_samples(2))
    _assert_bad(*_quantize(model_path, calib, "--max-drop", "1"), "--max-drop needs --eval")
    out = model_path.with_name("out.onnx")
    result = CliRunner().invoke(main, ["quantize", str(model_path), "-o", str(out), "-q"])
    _assert_bad(result, out, "needs --calib")


def test_progress_off_a_terminal_goes_to_the_progress_log(caplog, monkeypatch):
    import logging

    from graphopt import progress as project_progress
    from graphopt.progress import track

    clock = iter(range(0, 100, 5))
    monkeypatch.setattr(project_progress.time, "perf_counter", lambda: float(next(clock)))
    with caplog.at_level(logging.INFO, logger="graphopt.progress"):
        assert list(track(range(3), 3, "calibrating", True)) == [0, 1, 2]
    assert "calibrating 3/3" in caplog.text
    assert list(track(range(3), 3, "calibrating", False)) == [0, 1, 2]
