"""The `graphopt` command line. Library errors become one line on stderr and a non-zero exit."""
from __future__ import annotations

import time
from typing import Sequence

import click

from graphopt.cli_checks import (check_dims, check_output_dir, check_output_file, given,
                                 parse_dims, warn_ignored)
from graphopt.cli_errors import configure_logging, handle_errors
from graphopt.errors import BadInputError

# Heavy modules (onnx, numpy, the passes) are imported inside the commands, so that
# `graphopt --help` and usage errors answer at once.


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Verbose logs and tracebacks.")
@click.version_option(package_name="graphopt")
def main(debug: bool) -> None:
    """graphopt: optimize ONNX models, compile them to C, schedule them on a modeled NPU."""
    from graphopt.progress import show_progress

    configure_logging(debug)
    show_progress()  # long steps (--bisect checks, bench timings) say what they are doing


def load_plugins(plugins: Sequence[str]) -> list[str]:
    from graphopt.pass_api import load_plugin_file

    names: list[str] = []
    for plugin in plugins:
        names += load_plugin_file(plugin)
    return names


@main.command("passes")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="Python file registering passes.")
@handle_errors
def passes_command(plugins: tuple[str, ...]) -> None:
    """List registered passes: one-line doc, the -O levels that run each, and options in the
    form --passes accepts (name{option=value})."""
    from graphopt.pass_api import registered_passes
    from graphopt.pipelines import levels_including

    load_plugins(plugins)
    for info in registered_passes().values():
        levels = levels_including(info.name)
        where = " ".join(f"-O{n}" for n in levels) if levels else "in no -O preset"
        origin = "" if info.origin == "builtin" else f", {info.origin}"
        click.echo(f"{info.name:28s} {info.summary}  [{where}{origin}]")
        if info.options:
            options = ",".join(f"{k}={d!r}" for k, (_, d) in info.options.items())
            click.echo(f"{'':28s}   options: {info.name}{{{options}}}")


@main.command("inspect")
@click.argument("model", type=click.Path())
@handle_errors
def inspect_command(model: str) -> None:
    """Summarize a model: ops, parameters, FLOPs, memory, unknown ops."""
    from graphopt import onnx_io
    from graphopt.analysis import has_symbolic_dims, human, human_bytes, model_stats

    graph = onnx_io.load(model)
    stats = model_stats(graph)
    click.echo(f"{model}: opset {graph.opset}, {stats.nodes} nodes, "
               f"{human(stats.parameters)} parameters ({human_bytes(stats.parameter_bytes)}), "
               f"{human(stats.flops, 'FLOP')}, activations {human_bytes(stats.activation_bytes)}"
               + (" (symbolic dims counted as 1)" if has_symbolic_dims(graph) else ""))
    for value in graph.inputs:
        click.echo(f"  input  %{value.name}: {value.type}")
    for value in graph.outputs:
        click.echo(f"  output %{value.name}: {value.type}")
    for op, count in stats.op_counts.items():
        click.echo(f"  {op:24s} {count}")
    if stats.unknown_ops:
        click.echo(f"  ops graphopt does not know (kept as is): {', '.join(stats.unknown_ops)}")


@main.command("optimize")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the result.")
@click.option("-O", "level", type=click.IntRange(0, 3), default=2, show_default=True,
              help="Preset pipeline level.")
@click.option("--passes", help="Explicit pipeline instead of -O, e.g. 'fold-constants,cse,"
                               "fuse-bn-into-conv' (any form `graphopt passes` prints).")
@click.option("--skip-passes", "skip",
              help="Passes to drop from the pipeline, e.g. 'cse,fuse-gelu'.")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(),
              help="Python file registering extra passes (repeatable).")
@click.option("--verify", is_flag=True, help="Compare onnxruntime outputs before/after.")
@click.option("--bisect", is_flag=True, help="Check outputs after every pass; name the first that changes them.")
@click.option("--inputs", type=click.Path(), help=".npz of inputs for --verify/--bisect (default: random).")
@click.option("--dim", "dims", multiple=True,
              help="Size of a symbolic input dim for --verify/--bisect random inputs: name=value.")
@click.option("--dump-ir", type=click.Path(), help="Write the IR after each changing pass into this folder.")
@click.option("--explain-fusions", is_flag=True, help="Say which fusions ran and why candidates did not.")
@click.option("--explain-layout", is_flag=True, help="Per conv chain, Transposes removed/inserted.")
@click.option("--io-layout", type=click.Choice(["keep", "nchw", "nhwc"]), default="keep",
              show_default=True, help="Layout of the rank-4 inputs/outputs (names never change).")
@click.option("--fold-input-initializers", is_flag=True,
              help="Treat initializers that are also graph inputs as constants (they stop being "
                   "inputs).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@handle_errors
def optimize_command(model: str, output: str, level: int, passes: str | None, skip: str | None,
                     plugins: tuple[str, ...], verify: bool, bisect: bool, inputs: str | None,
                     dims: tuple[str, ...], dump_ir: str | None, explain_fusions: bool,
                     fold_input_initializers: bool, quiet: bool, explain_layout: bool,
                     io_layout: str) -> None:
    """Optimize MODEL and write a standard ONNX model to OUTPUT."""
    from graphopt import onnx_io
    from graphopt.layout import io_layout_steps, layout_report
    from graphopt.optimize_report import OptimizeRun

    check_output_file(output, "-o", inputs=[model])
    if dump_ir:
        check_output_dir(dump_ir, "--dump-ir")
    if passes is not None and given("level"):
        raise BadInputError(f"-O{level} and --passes both given: --passes is the whole pipeline; "
                            "use one (--skip-passes drops passes from a preset)")
    sizes = parse_dims(dims)
    checking = verify or bisect
    if inputs and not checking:
        warn_ignored("--inputs", "only --verify and --bisect read inputs")
    if sizes and not checking:
        warn_ignored("--dim", "it sizes the random inputs of --verify and --bisect")
    elif sizes and inputs:
        warn_ignored("--dim", "the shapes come from the --inputs file")
    load_plugins(plugins)
    run = OptimizeRun(model, level=level, passes=passes, inputs=inputs, dims=sizes,
                      dump_ir=dump_ir, skip=_names(skip),
                      fold_input_initializers=fold_input_initializers)
    check_dims(sizes, run.graph.inputs)
    run.steps[:0] = io_layout_steps(io_layout, checking)
    echo = (lambda *a, **k: None) if quiet else click.echo
    for line in run.preamble():
        echo(line)
    if checking:
        run.reference()  # onnxruntime must run the input model: known before any pass runs
    run.optimize(check_each_pass=bisect)
    exported = run.export()
    if checking:
        for line in run.verify_outputs(exported):
            echo(line)
    start = time.perf_counter()
    onnx_io.save_model(exported, output)
    run.save_seconds = time.perf_counter() - start
    for line in run.summary(output):
        echo(line)
    if explain_fusions:
        for line in run.fusion_explanations():
            echo(line)
    for line in layout_report(run.graph) if explain_layout else ():
        echo(line)


def _names(items: str | None) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']."""
    return [name.strip() for name in (items or "").split(",") if name.strip()]


@main.command("make-example")
@click.argument("output", type=click.Path())
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@handle_errors
def make_example_command(output: str, force: bool) -> None:
    """Write a small example CNN (exporter-style, unoptimized) to OUTPUT."""
    check_output_file(output, "OUTPUT", overwrite=force)
    from graphopt.examples import make_example_model
    from graphopt.onnx_io import save_model

    save_model(make_example_model(), output)
    click.echo(f"wrote {output}")


def _add_consumer_commands() -> None:
    """Commands of the consumers (C backend, embedded bundle, quantizer, NPU model), each defined
    in its own module; those modules import this one's `main` never, so there is no cycle."""
    from graphopt.cli_backend import bench_command, run_command
    from graphopt.cli_embedded import emit_c_command
    from graphopt.cli_npu import npu_command
    from graphopt.cli_quantize import quantize_command

    for command in (run_command, bench_command, emit_c_command, quantize_command, npu_command):
        main.add_command(command)


_add_consumer_commands()

if __name__ == "__main__":
    main()
