"""The default pipelines, as data: read top to bottom to know what -O N does.

Names refer to registered passes; a pass named here but not registered is an error at build time,
so a missing built-in cannot be silently skipped.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

from graphopt.errors import BadInputError
from graphopt.pass_api import PassCall, PassInfo, get_pass, parse_pass_spec, registered_passes
from graphopt.pass_manager import FixedPoint, Step, pass_calls

log = logging.getLogger(__name__)

FOLD = ("remove-identity", "fold-constants", "eliminate-dead-code")
CLEANUP = FOLD + ("cse",)
# Local simplifications: exporter and version-converter idioms undone, constant operands merged.
SIMPLIFY = ("simplify-softmax-flatten", "simplify-affine-into-bn", "simplify-constant-chain",
            "simplify-flatten-matmul-add")
ALGEBRAIC = ("sink-transposes", "fuse-transpose-reshape", "fuse-matmul-add", "fuse-bn-into-conv",
             "fuse-pad-into-conv", "fuse-scale-into-conv")
RECOGNIZE = ("fuse-layernorm", "fuse-gelu")

# In -O2/-O3, cse closes each round, after the fusions: merging constants that are equal only by
# coincidence (generated weights) would share one weight between several Convs, which blocks
# folding their BatchNormalizations; once the fusions are done, cse merges what is still equal.
PRESETS: dict[int, tuple[tuple[str, ...] | str, ...]] = {
    0: (),
    1: (CLEANUP,),
    2: (FOLD + SIMPLIFY + ALGEBRAIC + ("cse",), "group-epilogues"),
    3: (FOLD + SIMPLIFY + ALGEBRAIC + RECOGNIZE + ("cse",), "group-epilogues"),
}


def _call(name: str) -> PassCall:
    return PassCall(get_pass(name))


def preset_pipeline(level: int, extra: Sequence[PassInfo] = ()) -> list[Step]:
    """The -O `level` pipeline, with plugin passes (`extra`) whose level <= `level` placed after
    the pass they name in `after`, or at the end of the fixed-point group.

    A tuple in a preset is a fixed-point group; a lone name is one pass run once after it (an
    analysis such as group-epilogues). Plugins join the fixed-point group only."""
    if level not in PRESETS:
        raise BadInputError(f"-O{level} is not a level; use -O0 to -O3")
    steps: list[Step] = []
    for group in PRESETS[level]:
        if isinstance(group, str):
            steps.append(_call(group))
            continue
        names = list(group)
        for plugin in (p for p in extra if 0 < p.level <= level):
            anchor = next((a for a in plugin.after if a in names), None)
            names.insert(names.index(anchor) + 1 if anchor else len(names), plugin.name)
        steps.append(FixedPoint(tuple(_call(n) for n in names)))
    if not steps and extra:
        steps = [_call(p.name) for p in extra if 0 < p.level <= level]
    return steps


def non_builtin_passes() -> list[PassInfo]:
    return [p for p in registered_passes().values() if p.origin != "builtin"]


_GROUP = "fixed-point("


def parse_pipeline(spec: str) -> list[Step]:
    """Parse a pass list as `--passes` takes it: `a,b{opt=1}` plus the `fixed-point(a,b)` groups
    graphopt prints for its presets, so any pipeline graphopt shows can be pasted back."""
    steps: list[Step] = []
    rest = spec.strip()
    while rest:
        start = rest.find(_GROUP)
        head = rest if start < 0 else rest[:start]
        if head.strip():
            steps += parse_pass_spec(head)
        if start < 0:
            break
        end = rest.find(")", start)
        if end < 0:
            raise BadInputError(f"pass list: '{_GROUP}' at {rest[start:]!r} is never closed")
        steps.append(FixedPoint(tuple(parse_pass_spec(rest[start + len(_GROUP):end]))))
        rest = rest[end + 1:].strip()
        if rest and not rest.startswith(","):
            raise BadInputError(f"pass list: expected ',' after ')' at {rest!r}")
        rest = rest[1:].strip()
    return steps


def without_passes(steps: Sequence[Step], skip: Iterable[str]) -> list[Step]:
    """`steps` minus every call of the passes named in `skip` (inside fixed-point groups too).

    An unregistered name is a BadInputError (a typo must not silently keep the pass); a
    registered pass that is not in `steps` is logged as a warning. Groups left empty vanish.
    """
    names = set(skip)
    for name in names:
        get_pass(name)
    present = {call.name for call in pass_calls(steps)}
    for name in sorted(names - present):
        log.warning("--skip-passes: '%s' is not in this pipeline; nothing to skip", name)
    return _drop(steps, names) if names else list(steps)


def _drop(steps: Sequence[Step], names: set[str]) -> list[Step]:
    kept: list[Step] = []
    for step in steps:
        if isinstance(step, FixedPoint):
            inner = _drop(step.steps, names)
            if inner:
                kept.append(FixedPoint(tuple(inner), step.max_iterations))
        elif step.name not in names:
            kept.append(step)
    return kept


def levels_including(name: str) -> list[int]:
    """The -O levels whose preset pipeline runs pass `name` (plugins placed as in -O N)."""
    extra = non_builtin_passes()
    return [level for level in sorted(PRESETS)
            if any(call.name == name for call in pass_calls(preset_pipeline(level, extra)))]
