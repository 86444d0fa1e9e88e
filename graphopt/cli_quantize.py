"""`graphopt quantize`: INT8 quantization of a model, with an accuracy report."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

from graphopt.cli_checks import check_output_file
from graphopt.cli_errors import handle_errors
from graphopt.errors import BadInputError, UnsupportedError

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph

DATA_HELP = ("an .npz (or a folder of them) with samples along axis 0, keyed by input name or "
             "mapped as PATH:ARRAY=INPUT,...")


@click.command("quantize")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the QDQ model.")
@click.option("--calib", help=f"Calibration data: {DATA_HELP}.")
@click.option("--method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True, help="How activation ranges are picked from the histograms.")
@click.option("--percentile", type=float, default=99.99, show_default=True,
              help="Quantile kept by --method percentile.")
@click.option("--per-channel", is_flag=True, help="Per-output-channel weight scales.")
@click.option("--exclude", "exclude", multiple=True,
              help="Node names or op types to keep in float (repeatable or comma-separated).")
@click.option("--activation-type", type=click.Choice(["u8", "s8"]), default="u8", show_default=True)
@click.option("--reduce-range/--full-range", default=None,
              help="7-bit weights (default for static: exact on x86 without VNNI, where "
                   "vpmaddubsw saturates) or 8-bit (default for --dynamic).")
@click.option("--dynamic", is_flag=True,
              help="Dynamic quantization of MatMuls (no calibration; activations at run time).")
@click.option("--eval", "eval_data", help=f"Evaluation data for the report and --max-drop: {DATA_HELP}.")
@click.option("--eval-labels", help="Array of class labels in the evaluation data (accuracy).")
@click.option("--eval-samples", type=click.IntRange(min=1), default=64, show_default=True,
              help="Evaluation samples used (kept in memory with their float outputs).")
@click.option("--sensitivity", is_flag=True,
              help="Rank layers by their effect on the outputs (one onnxruntime run per layer).")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Quality budget in points: most sensitive layers go back to float until it holds.")
@click.option("-q", "--quiet", is_flag=True, help="No report and no progress bar.")
@handle_errors
def quantize_command(model: str, output: str, calib: str | None, method: str, percentile: float,
                     per_channel: bool, exclude: tuple[str, ...], activation_type: str,
                     reduce_range: bool | None, dynamic: bool, eval_data: str | None,
                     eval_labels: str | None, eval_samples: int, sensitivity: bool,
                     max_drop: float | None,
                     quiet: bool) -> None:
    """Quantize MODEL to INT8 and write standard QDQ ONNX to OUTPUT."""
    from graphopt.quantization.api import quantize

    check_output_file(output, "-o", inputs=[model])  # before any work (graphopt.cli_checks)
    if calib is None and not dynamic:
        raise BadInputError("static quantization needs --calib DATA (or use --dynamic)")
    names = [n.strip() for item in exclude for n in item.split(",") if n.strip()]
    graph = _load_runnable(model, needs_runtime=not dynamic or eval_data is not None or sensitivity)
    result = quantize(graph, calib, eval=eval_data, output=output, method=method,
                      percentile=percentile, per_channel=per_channel, exclude=names,
                      activation_type=activation_type, reduce_range=reduce_range,
                      dynamic=dynamic, max_drop=max_drop, eval_labels=eval_labels,
                      eval_samples=eval_samples, sensitivity=sensitivity,
                      show_progress=not quiet)
    if not quiet:
        for line in result.report.lines():
            click.echo(line)
        click.echo(f"wrote {output}")


ORT_DOMAINS = ("com.microsoft", "com.ms.")  # onnxruntime's own (contrib) ops: it runs them


def _load_runnable(model: str, needs_runtime: bool) -> Graph:
    """`model` imported; when calibration or evaluation will run it in onnxruntime, ops of
    custom domains (no onnxruntime kernel) are refused here, one line, before any work."""
    import graphopt
    from graphopt.analysis import unknown_ops

    graph = graphopt.load(model)
    if needs_runtime:
        local = {(f.domain, f.name) for f in graph.info.functions}
        custom = [op for op in unknown_ops(graph) if "::" in op
                  and tuple(op.split("::", 1)) not in local and not op.startswith(ORT_DOMAINS)]
        if custom:
            raise UnsupportedError(f"{model}: calibration and evaluation run the model in "
                                   f"onnxruntime, which has no kernel for {', '.join(custom)}")
    return graph
