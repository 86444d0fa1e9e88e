"""An optimized model records its pipeline, so consumers do not optimize it a second time."""
from click.testing import CliRunner

from graphopt import optimize
from graphopt.cli import main
from graphopt.optimizer import PIPELINE_KEY


def test_optimized_model_is_not_optimized_again(tmp_path):
    runner = CliRunner()
    example, out = tmp_path / "example.onnx", tmp_path / "out.onnx"
    assert runner.invoke(main, ["make-example", str(example)]).exit_code == 0
    assert runner.invoke(main, ["optimize", str(example), "-o", str(out)]).exit_code == 0
    first = optimize(example)
    assert not first.skipped and first.graph.info.metadata_props[PIPELINE_KEY].endswith(
        ", group-epilogues")
    again = optimize(out)  # what compile(), the NPU and emit-c do with an optimized model
    assert again.skipped and len(again.graph.nodes) == len(first.graph.nodes)
    other_level = optimize(out, level=1)  # another pipeline still runs
    assert not other_level.skipped
