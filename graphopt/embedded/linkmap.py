"""Read a GNU ld map file (`-Wl,-Map=...`): bytes each object puts in flash and in RAM.

Used to check the footprint predicted at emit time against what the linker placed:
.text/.rodata (and .ARM.* tables) are flash, .data is flash (its load image) and RAM,
.bss and COMMON are RAM.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

# An input section: name (possibly wrapped onto its own line), address, size, object file.
_INPUT_SECTION = re.compile(r"^ (\.[\w.$-]+|COMMON)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)$",
                            re.MULTILINE)


@dataclass
class Placement:
    flash: int = 0
    ram: int = 0


def contributions(map_text: str) -> dict[str, Placement]:
    """Per object file name (basename; archive members as 'lib.a(member.o)'): flash and RAM."""
    start = map_text.find("Linker script and memory map")
    text = map_text[start:] if start >= 0 else map_text
    result: dict[str, Placement] = {}
    for name, _, size, origin in _INPUT_SECTION.findall(text):
        placed = result.setdefault(PurePath(origin).name, Placement())
        nbytes = int(size, 16)
        if name.startswith((".bss", ".sbss")) or name == "COMMON":
            placed.ram += nbytes
        elif name.startswith((".data", ".sdata")):
            placed.flash += nbytes
            placed.ram += nbytes
        elif name.startswith((".text", ".rodata", ".ARM.ex", ".isr_vector")):
            placed.flash += nbytes
    return result
