"""`graphopt emit-c`: write a model as a self-contained C99 bundle for a board.

graphopt/cli.py adds the command to the main group. Errors go through
graphopt.cli_errors.handle_errors: one line on stderr and the error's exit code (2 bad input
or over budget, 3 unsupported op/dtype); nothing is written when the emit fails.
"""
from __future__ import annotations

from pathlib import Path

import click

from graphopt.cli_checks import LazyChoice, check_output_dir, parse_dims
from graphopt.cli_errors import handle_errors


def _bundle_targets() -> list[str]:
    from graphopt.embedded.targets import BUNDLE_TARGETS  # imports onnx: not at `--help`

    return list(BUNDLE_TARGETS)


@click.command("emit-c")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Directory of the bundle.")
@click.option("--target", type=LazyChoice(_bundle_targets), default="host",
              show_default=True, help="Board family the bundle is built for.")
@click.option("--prefix", default=None,
              help="C name prefix of the API and files (default: the model file's stem).")
@click.option("--max-ram", type=click.IntRange(min=0), default=None, metavar="BYTES",
              help="Fail (writing nothing) if arena + static data + stack exceed BYTES.")
@click.option("--max-flash", type=click.IntRange(min=0), default=None, metavar="BYTES",
              help="Fail (writing nothing) if code + weights + data exceed BYTES.")
@click.option("-O", "--level", type=click.IntRange(0, 3), default=2, show_default=True,
              help="graphopt optimization level applied before code generation.")
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False, path_type=Path),
              help="An .npz holding the example's sample input (default: seeded random).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of a symbolic input dim (default 1).")
@handle_errors
def emit_c_command(model: Path, out_dir: Path, target: str, prefix: str | None,
                   max_ram: int | None, max_flash: int | None, level: int,
                   inputs_path: Path | None, dims: tuple[str, ...]) -> None:
    """Write MODEL as C99 (NAME.h, NAME.c, NAME_weights.c, kernels, Makefile, README.md,
    example_main.c) into OUTPUT, and print its flash/RAM footprint and per-layer table.
    A quantized MODEL (QDQ, e.g. from `graphopt quantize`) gives an INT8 bundle."""
    check_output_dir(out_dir, "-o")  # before any work: a bad folder fails in a second
    dim_values = parse_dims(dims)
    from graphopt import onnx_io
    from graphopt.embedded.emit import emit_c
    from graphopt.numerics import load_inputs

    sample = None
    if inputs_path is not None:
        sample = load_inputs(inputs_path, onnx_io.load(str(model)))
    bundle = emit_c(model, out_dir, target=target, prefix=prefix, max_ram=max_ram,
                    max_flash=max_flash, level=level, inputs=sample, dims=dim_values)
    click.echo(bundle.footprint.table())
    click.echo(f"wrote {len(bundle.files)} files to {bundle.directory} "
               f"(libm: {', '.join(bundle.libm) or 'none'}); check: make -C {bundle.directory} run")
