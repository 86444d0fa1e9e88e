"""CLI commands of the C backend: `graphopt run` and `graphopt bench`.

graphopt/cli.py adds them to the main group (`main.add_command(run_command)` ...). Errors go
through graphopt.cli_errors.handle_errors, like every other command: one line on stderr, an
exit code.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from graphopt.cli_checks import LazyChoice, check_dims, check_output_file, parse_dims, warn_ignored
from graphopt.cli_errors import handle_errors

if TYPE_CHECKING:  # numpy is imported inside the commands: `graphopt --help` stays fast
    import numpy as np


def _compile_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by run and bench (compilation, layout choice and its report)."""
    decorators = [
        click.argument("model", type=click.Path(dir_okay=False, path_type=Path)),
        click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="An .npz with one array per model input (default: random inputs)."),
        click.option("-O", "--level", type=click.IntRange(0, 3), default=2, show_default=True,
                     help="graphopt optimization level applied before code generation."),
        click.option("--no-optimize", is_flag=True, help="Compile the model as it is."),
        click.option("--target", type=LazyChoice(_host_targets), default="native",
                     show_default=True, help="A host target of the C backend's target table "
                     "(native: this CPU + OpenMP; portable: plain C99)."),
        click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
                     help="Size of a symbolic input dim for random inputs (default 1)."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where built modules are cached (default $GRAPHOPT_CACHE_DIR or "
                          "~/.cache/graphopt)."),
        click.option("--layout", type=LazyChoice(_layout_modes), default="auto",
                     show_default=True, help="Activation layouts: auto (blocked NCHWc where the "
                     "cost model says it pays), nchw (never blocked) or blocked (every conv "
                     "with a blocked kernel)."),
        click.option("--explain-layout", is_flag=True, help="Print the layout choice per conv: "
                     "the layout, its kernel cost per layout, the conversions and their bytes."),
    ]
    for decorate in reversed(decorators):
        fn = decorate(fn)
    return fn


def _host_targets() -> list[str]:
    from graphopt.backend.c.target import TARGETS

    return list(TARGETS)


def _layout_modes() -> tuple[str, ...]:
    from graphopt.backend.layouts import LAYOUT_MODES

    return LAYOUT_MODES


def _layout_lines(compiled: Any, layout: str, explain: bool) -> list[str]:
    """The layout section of the compile summary (the full choice with `explain`)."""
    from graphopt.backend.layouts import layout_choice
    from graphopt.layout.choice_report import format_choice, summarize_choice

    from graphopt.layout.report import layout_report

    choice = layout_choice(compiled.programs()[0])
    # the Transposes optimize's layout passes removed and inserted, per conv chain
    removed = list(layout_report(compiled.graph)) if explain else []
    if choice is None:
        return [f"layout: every tensor NCHW (--layout {layout})"] + removed
    lines = list(summarize_choice(choice))
    return lines + removed + list(format_choice(choice)) if explain else lines


def _prepare(model: Path, inputs_path: Path | None, level: int, no_optimize: bool, target: str,
             dims: tuple[str, ...], cache_dir: Path | None, layout: str = "auto",
             threads: int | None = None) -> tuple:
    from graphopt.backend import compile as compile_model
    from graphopt.numerics import load_inputs, random_inputs

    sizes = parse_dims(dims)
    if sizes and inputs_path is not None:
        warn_ignored("--dim", "the shapes come from the --inputs file")
    compiled = compile_model(model, optimize=not no_optimize, level=level, target=target,
                             cache_dir=cache_dir, threads=threads, dims=sizes, layout=layout)
    check_dims(sizes, compiled.graph.inputs)
    if inputs_path is not None:
        feeds = load_inputs(inputs_path, compiled.graph)
    else:
        feeds = random_inputs(compiled.graph, seed=0, dims=sizes)
    return compiled, feeds


@click.command("run")
@_compile_options
@click.option("--output", "output_path", type=click.Path(path_type=Path),
              help="Save the outputs to this .npz (keys are output names).")
@click.option("--verify", is_flag=True, help="Also run onnxruntime and compare the outputs.")
@click.option("--threads", type=int, help="OpenMP threads (default: all cores).")
@handle_errors
def run_command(model: Path, inputs_path: Path | None, level: int, no_optimize: bool,
                target: str, dims: tuple[str, ...], cache_dir: Path | None, layout: str,
                explain_layout: bool, output_path: Path | None, verify: bool,
                threads: int | None) -> None:
    """Compile MODEL to C, run it once and print its outputs."""
    from graphopt.backend.bench import format_report

    if output_path is not None:
        check_output_file(output_path, "--output", inputs=[model, inputs_path])
    compiled, feeds = _prepare(model, inputs_path, level, no_optimize, target, dims, cache_dir,
                               layout, threads)
    outputs = compiled.run(feeds)
    click.echo(format_report(model.name, compiled.report))
    click.echo("\n".join(_layout_lines(compiled, layout, explain_layout)))
    for name, array in zip(compiled.output_names, outputs):
        click.echo(f"{name}: {array.dtype}{list(array.shape)} {_summary(array)}")
    if output_path is not None:
        _save_npz(output_path, dict(zip(compiled.output_names, outputs)))
        click.echo(f"wrote {output_path}")
    if verify:
        _verify(model, feeds, compiled.output_names, outputs)


def _summary(array: np.ndarray) -> str:
    import numpy as np

    if array.size == 0:
        return "(empty)"
    flat = array.reshape(-1)
    head = np.array2string(flat[:6], precision=4, separator=", ")
    if array.dtype.kind in "fiu":
        return f"min {flat.min():.4g} max {flat.max():.4g} first {head}"
    return f"first {head}"


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a partial file never appears under the final name."""
    import numpy as np

    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _verify(model: Path, feeds: dict, names: list[str], outputs: list[np.ndarray]) -> None:
    import onnx

    from graphopt.numerics import check_outputs, run_onnxruntime

    reference = run_onnxruntime(onnx.load(str(model)), feeds)
    result = check_outputs(names, reference, outputs, "outputs differ from onnxruntime")
    click.echo(f"matches onnxruntime ({result.describe()})")


@click.command("bench")
@_compile_options
@click.option("--threads", "thread_counts", multiple=True, type=int, default=(1,),
              show_default=True, help="Thread count(s) to compare at (repeatable).")
@click.option("--repeat", type=int, default=20, show_default=True, help="Timed runs per engine.")
@click.option("--layers", type=click.IntRange(min=1), is_flag=False, flag_value=10,
              metavar="[N]", help="Also print the N slowest layers (default 10) per thread "
              "count, timed by a separately cached build with a timer around every kernel.")
@handle_errors
def bench_command(model: Path, inputs_path: Path | None, level: int, no_optimize: bool,
                  target: str, dims: tuple[str, ...], cache_dir: Path | None, layout: str,
                  explain_layout: bool, thread_counts: tuple[int, ...], repeat: int,
                  layers: int | None) -> None:
    """Median latency of MODEL compiled by graphopt vs onnxruntime, at the same thread count."""
    from graphopt.backend.bench import (compare_latency, format_layers, format_report,
                                        run_overhead)

    compiled, feeds = _prepare(model, inputs_path, level, no_optimize, target, dims, cache_dir,
                               layout)
    click.echo(format_report(model.name, compiled.report))
    click.echo("\n".join(_layout_lines(compiled, layout, explain_layout)))
    click.echo(f"{'threads':>7}  {'graphopt ms':>11}  {'onnxruntime ms':>14}  {'speedup':>7}")
    for threads in thread_counts:
        timing = compare_latency(compiled, model, feeds, threads, repeat)
        governed = f"  ({100 * timing.one_thread_share:.0f}% of graphopt's runs on 1 thread: " \
            f"{threads} were slower under other load)" if timing.one_thread_share else ""
        click.echo(f"{threads:>7}  {timing.graphopt_ms:>11.3f}  {timing.onnxruntime_ms:>14.3f}  "
                   f"{timing.speedup:>6.2f}x{governed}")
    overhead = run_overhead(compiled, feeds)
    click.echo(f"per call: {overhead.python_us:.1f} us of Python around the C (run "
               f"{overhead.run_us:.1f} us, bare C entry {overhead.entry_us:.1f} us, "
               f"{thread_counts[-1]} thread{'s' if thread_counts[-1] > 1 else ''})")
    for threads in thread_counts if layers else ():
        compiled.set_threads(threads)
        times = compiled.layer_times(feeds, repeat)
        click.echo(f"\nslowest layers at {threads} thread{'s' if threads > 1 else ''} "
                   f"(median of {repeat} runs):")
        click.echo(format_layers(times, layers))
