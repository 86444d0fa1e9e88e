"""The `graphopt` command line. Library errors become one line on stderr and a non-zero exit."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import click

from graphopt.cli_errors import handle_errors
from graphopt.errors import BadInputError
from graphopt.ir.graph import Graph


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Verbose logs and tracebacks.")
@click.version_option(package_name="graphopt")
def main(debug: bool) -> None:
    """graphopt: optimize ONNX models, compile them to C, schedule them on a modeled NPU."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="graphopt: %(levelname)s: %(message)s")


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
    """List registered passes with their one-line docs and options."""
    from graphopt.pass_api import registered_passes

    load_plugins(plugins)
    for info in registered_passes().values():
        options = ", ".join(f"{k}={d!r}" for k, (_, d) in info.options.items())
        origin = "" if info.origin == "builtin" else f"  [{info.origin}]"
        click.echo(f"{info.name:28s} {info.summary}{origin}")
        if options:
            click.echo(f"{'':28s}   options: {options}")


@main.command("inspect")
@click.argument("model", type=click.Path())
@handle_errors
def inspect_command(model: str) -> None:
    """Summarize a model: ops, parameters, FLOPs, memory, unknown ops."""
    from graphopt import onnx_io
    from graphopt.analysis import human, model_stats

    graph = onnx_io.load(model)
    stats = model_stats(graph)
    click.echo(f"{model}: opset {graph.opset}, {stats.nodes} nodes, "
               f"{human(stats.parameters)} parameters ({human(stats.parameter_bytes, 'B')}), "
               f"{human(stats.flops, 'FLOP')}, activations {human(stats.activation_bytes, 'B')}"
               + (" (symbolic dims counted as 1)" if _has_symbolic_dims(graph) else ""))
    for value in graph.inputs:
        click.echo(f"  input  %{value.name}: {value.type}")
    for value in graph.outputs:
        click.echo(f"  output %{value.name}: {value.type}")
    for op, count in stats.op_counts.items():
        click.echo(f"  {op:24s} {count}")
    if stats.unknown_ops:
        click.echo(f"  ops graphopt does not know (kept as is): {', '.join(stats.unknown_ops)}")


def _has_symbolic_dims(graph: Graph) -> bool:
    return any(isinstance(d, str) for v in graph.values() if v.type is not None and v.type.shape
               for d in v.type.shape)


@main.command("optimize")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the result.")
@click.option("-O", "level", type=click.IntRange(0, 3), default=2, show_default=True,
              help="Preset pipeline level.")
@click.option("--passes", help="Explicit pipeline, e.g. 'fold-constants,cse,fuse-bn-into-conv'.")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(),
              help="Python file registering extra passes (repeatable).")
@click.option("--verify", is_flag=True, help="Compare onnxruntime outputs before/after.")
@click.option("--bisect", is_flag=True, help="Check outputs after every pass; name the first that changes them.")
@click.option("--inputs", type=click.Path(), help=".npz of inputs for --verify/--bisect (default: random).")
@click.option("--dim", "dims", multiple=True, help="Size of a symbolic dim for random inputs: name=value.")
@click.option("--dump-ir", type=click.Path(), help="Write the IR after each changing pass into this folder.")
@click.option("--explain-fusions", is_flag=True, help="Say which fusions ran and why candidates did not.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@handle_errors
def optimize_command(model: str, output: str, level: int, passes: str | None,
                     plugins: tuple[str, ...], verify: bool, bisect: bool, inputs: str | None,
                     dims: tuple[str, ...], dump_ir: str | None, explain_fusions: bool,
                     quiet: bool) -> None:
    """Optimize MODEL and write a standard ONNX model to OUTPUT."""
    from graphopt import onnx_io
    from graphopt.optimize_report import OptimizeRun

    if Path(output).resolve() == Path(model).resolve():
        raise BadInputError("the output path is the input model; choose another -o")
    load_plugins(plugins)
    run = OptimizeRun(model, level=level, passes=passes, inputs=inputs,
                      dims=_parse_dims(dims), dump_ir=dump_ir)
    echo = (lambda *a, **k: None) if quiet else click.echo
    for line in run.preamble():
        echo(line)
    run.optimize(check_each_pass=bisect)
    exported = run.export()
    if verify or bisect:
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


@main.command("make-example")
@click.argument("output", type=click.Path())
@handle_errors
def make_example_command(output: str) -> None:
    """Write a small example CNN (exporter-style, unoptimized) to OUTPUT."""
    from graphopt.examples import make_example_model
    from graphopt.onnx_io import save_model

    save_model(make_example_model(), output)
    click.echo(f"wrote {output}")


def _parse_dims(items: Sequence[str]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise BadInputError(f"--dim takes name=positive integer, got {item!r}")
        dims[name] = int(value)
    return dims


def _add_consumer_commands() -> None:
    """Commands of the NPU model and the C backend, defined in their own modules."""
    from graphopt.cli_npu import npu_command

    main.add_command(npu_command)
    try:
        from graphopt.cli_backend import bench_command, run_command
    except ModuleNotFoundError as err:  # the backend's CLI module is not built yet
        if err.name != "graphopt.cli_backend":
            raise
        return
    main.add_command(run_command)
    main.add_command(bench_command)


_add_consumer_commands()

if __name__ == "__main__":
    main()
