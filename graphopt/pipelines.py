"""The default pipelines, as data: read top to bottom to know what -O N does.

Names refer to registered passes; a pass named here but not registered is an error at build time,
so a missing built-in cannot be silently skipped.
"""
from __future__ import annotations

from typing import Sequence

from graphopt.errors import BadInputError
from graphopt.pass_api import PassCall, PassInfo, get_pass, registered_passes
from graphopt.pass_manager import FixedPoint, Step

FOLD = ("remove-identity", "fold-constants", "eliminate-dead-code")
CLEANUP = FOLD + ("cse",)
# Local simplifications: exporter and version-converter idioms undone, constant operands merged.
SIMPLIFY = ("simplify-softmax-flatten", "simplify-affine-into-bn", "simplify-constant-chain",
            "simplify-flatten-matmul-add")
ALGEBRAIC = ("fuse-transpose-reshape", "fuse-matmul-add", "fuse-bn-into-conv", "fuse-pad-into-conv",
             "fuse-scale-into-conv")
RECOGNIZE = ("fuse-layernorm", "fuse-gelu")

# In -O2/-O3, cse closes each round, after the fusions: merging constants that are equal only by
# coincidence (generated weights) would share one weight between several Convs, which blocks
# folding their BatchNormalizations; once the fusions are done, cse merges what is still equal.
PRESETS: dict[int, tuple[tuple[str, ...] | str, ...]] = {
    0: (),
    1: (CLEANUP,),
    2: (FOLD + SIMPLIFY + ALGEBRAIC + ("cse",),),
    3: (FOLD + SIMPLIFY + ALGEBRAIC + RECOGNIZE + ("cse",),),
}


def _call(name: str) -> PassCall:
    return PassCall(get_pass(name))


def preset_pipeline(level: int, extra: Sequence[PassInfo] = ()) -> list[Step]:
    """The -O `level` pipeline, with plugin passes (`extra`) whose level <= `level` placed after
    the pass they name in `after`, or at the end of the fixed-point group."""
    if level not in PRESETS:
        raise BadInputError(f"-O{level} is not a level; use -O0 to -O3")
    steps: list[Step] = []
    for group in PRESETS[level]:
        names = [group] if isinstance(group, str) else list(group)
        for plugin in (p for p in extra if 0 < p.level <= level):
            anchor = next((a for a in plugin.after if a in names), None)
            names.insert(names.index(anchor) + 1 if anchor else len(names), plugin.name)
        steps.append(FixedPoint(tuple(_call(n) for n in names)))
    if not steps and extra:
        steps = [_call(p.name) for p in extra if 0 < p.level <= level]
    return steps


def non_builtin_passes() -> list[PassInfo]:
    return [p for p in registered_passes().values() if p.origin != "builtin"]
