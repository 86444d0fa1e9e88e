"""`graphopt npu`: schedule an optimized model on a modeled accelerator and report the result."""
from __future__ import annotations

import click

from graphopt.cli_checks import LazyChoice, check_distinct, check_output_file, given
from graphopt.cli_errors import handle_errors
from graphopt.errors import BadInputError


def _dataflows() -> list[str]:
    from graphopt.npu.dataflows import DATAFLOWS

    return sorted(DATAFLOWS)


def _objectives() -> tuple[str, ...]:
    from graphopt.npu.mapper import OBJECTIVES

    return OBJECTIVES


def _datatypes() -> list[str]:
    from graphopt.npu.energy_tables import DATATYPE_BITS

    return sorted(DATATYPE_BITS)


def _run(model: str, arch: str, dataflow: str | None, objective: str, batch: int,
         datatype: str | None, level: int, passes: str | None, json_path: str | None,
         trace_path: str | None, plot_path: str | None, show_all: bool) -> None:
    outputs = {"--json": json_path, "--trace": trace_path, "--plot": plot_path}
    for option, path in outputs.items():
        if path is not None:
            check_output_file(path, option, inputs=[model, arch])
    check_distinct(outputs)
    if passes is not None and given("level"):
        raise BadInputError(f"-O{level} and --passes both given: --passes is the whole pipeline; "
                            "use one")
    from graphopt.npu import report as render
    from graphopt.npu.entry import run_npu

    result = run_npu(model, arch, dataflow, objective, batch, datatype, level, passes)
    click.echo(render.format_table(result, show_all=show_all))
    if json_path:
        render.write_json(result, json_path)
    if trace_path:
        render.write_trace(result, trace_path)
    if plot_path:
        render.write_plot(result, plot_path)


@click.command("npu")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--arch", "arch", default="eyeriss", show_default=True,
              help="Preset name (eyeriss, tpu-32x32, tpu-128x128, edge-int8) or a .toml/.json "
                   "architecture file.")
@click.option("--dataflow", type=LazyChoice(_dataflows, case_sensitive=False),
              default=None, help="Dataflow; default: the architecture's own.")
@click.option("--objective", type=LazyChoice(_objectives), default="energy", show_default=True,
              help="What the mapper minimizes per layer.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--datatype", type=LazyChoice(_datatypes), default=None,
              help="Override the architecture's word type (energies follow it).")
@click.option("-O", "level", type=click.IntRange(0, 3), default=2, show_default=True,
              help="Optimization level run before scheduling.")
@click.option("--passes", default=None, help="Explicit pass list instead of -O.")
@click.option("--json", "json_path", type=click.Path(), default=None,
              help="Write the per-layer report as JSON.")
@click.option("--trace", "trace_path", type=click.Path(), default=None,
              help="Write a Chrome/Perfetto trace of the schedule.")
@click.option("--plot", "plot_path", type=click.Path(), default=None,
              help="Write a PNG: energy by level per layer and a roofline (needs matplotlib).")
@click.option("--all", "show_all", is_flag=True, help="List free and constant layers too.")
def npu_command(**options: object) -> None:
    """Map and schedule MODEL (after the -O passes) onto a modeled NPU: per-layer mapping,
    cycles, utilization, accesses and energy per memory level, and totals."""
    handle_errors(_run)(**options)
