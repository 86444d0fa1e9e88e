"""Checks of command-line arguments that run before any work: output paths, --dim, ignored options.

Every command that writes a file checks its output paths first, so a typo in a folder name
fails in a second with one line instead of after minutes of optimizing or compiling. Options
a command would not read are reported (a warning) instead of being dropped silently.

Light on purpose (no onnx, no numpy): `graphopt --help` imports it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import click
from click.core import ParameterSource

from graphopt.errors import BadInputError

if TYPE_CHECKING:
    from graphopt.ir.graph import Value

log = logging.getLogger("graphopt")


class LazyChoice(click.Choice):
    """A click.Choice whose choices are read on first use. Choices that live in modules importing
    numpy or onnx (NPU dataflows, bundle targets) would otherwise make every command, even
    `graphopt --help`, pay for those imports."""

    def __init__(self, load: Callable[[], Iterable[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._loaded: tuple[str, ...] | None = None
        self.case_sensitive = case_sensitive

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._load())
        return self._loaded


def check_output_file(path: "str | os.PathLike", option: str, *, overwrite: bool = True,
                      inputs: Iterable["str | os.PathLike | None"] = ()) -> Path:
    """`path` as a file the command may write: not a directory, not one of `inputs`, in an
    existing writable folder, and (with overwrite=False) not an existing file."""
    target = Path(path)
    if target.is_dir():
        raise BadInputError(f"{option} {target}: is a directory; name a file inside it")
    for source in inputs:
        if source is not None and Path(source).exists() and _same_file(target, Path(source)):
            raise BadInputError(f"{option} {target}: is an input of this command; choose "
                                "another output path")
    folder = target.parent
    if not folder.is_dir():
        raise BadInputError(f"{option} {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInputError(f"{option} {target}: folder {folder} is not writable")
    if target.exists() and not overwrite:
        raise BadInputError(f"{option} {target}: file exists; pass --force to overwrite it")
    return target


def check_output_dir(path: "str | os.PathLike", option: str) -> Path:
    """`path` as a folder the command may create or fill: not a file, under a writable folder."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise BadInputError(f"{option} {target}: is a file, not a folder")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"{option} {target}: cannot create it under {existing}")
    return target


def check_distinct(paths: Mapping[str, "str | os.PathLike | None"]) -> None:
    """Refuse two output options naming the same file (the second would overwrite the first)."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise BadInputError(f"{seen[key]} and {option} both name {path}; use two files")
        seen[key] = option


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and os.path.samefile(a, b))
    except OSError:
        return False


# --- --dim ------------------------------------------------------------------------------------
def parse_dims(items: Sequence[str]) -> dict[str, int]:
    """`--dim name=size` items as {name: size}; size must be a positive integer (0 would make
    empty inputs that check nothing)."""
    dims: dict[str, int] = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) <= 0:
            raise BadInputError(f"--dim takes name=positive integer, got {item!r}")
        dims[name] = int(value)
    return dims


def check_dims(dims: Mapping[str, int], inputs: Sequence["Value"]) -> None:
    """Refuse a --dim naming no symbolic dim of the model's inputs (a typo would be ignored)."""
    symbols = sorted({d for v in inputs if v.type is not None and v.type.shape
                      for d in v.type.shape if isinstance(d, str)})
    unknown = [name for name in dims if name not in symbols]
    if unknown:
        have = ("the inputs' symbolic dims: " + ", ".join(symbols)) if symbols \
            else "the inputs have no symbolic dims"
        raise BadInputError(f"--dim {unknown[0]}: no input has a dim named {unknown[0]!r} "
                            f"({have})")


# --- options given but not read ----------------------------------------------------------------
def given(name: str) -> bool:
    """Whether the current command's parameter `name` was set on the command line."""
    source = click.get_current_context().get_parameter_source(name)
    return source is not None and source not in (ParameterSource.DEFAULT,
                                                   ParameterSource.DEFAULT_MAP)


def warn_ignored(option: str, reason: str) -> None:
    """One warning line on stderr for an option the command will not use."""
    log.warning("%s is ignored: %s", option, reason)
